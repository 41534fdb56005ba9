# c10d's NCCL process group, when LibTorch has CUDA and NCCL. ProcessGroupNCCL.hpp
# compiles only under USE_C10D_NCCL and needs nccl.h, which a pip-installed PyTorch
# keeps in site-packages/nvidia/nccl (with only libnccl.so.2): the NCCL that PyTorch
# itself loads is looked for first, its header's version must equal the version
# PyTorch reports, and the process group must compile and link. Each is tried at
# configure time, not assumed, and the configure log says which failed.
#
# alexnet_use_nccl(TARGET) compiles TARGET with ALEXNET_WITH_NCCL and links NCCL when all
# of that holds; otherwise it says why not and leaves TARGET as it is.
option(ALEXNET_NCCL "Use c10d's NCCL process group when LibTorch has CUDA and NCCL" ON)
set(ALEXNET_TORCH_NCCL_VERSION "" CACHE STRING
  "NCCL version PyTorch links (torch.cuda.nccl.version(), as 2.27.3); empty: asked of python3 when it has torch")

function(alexnet_use_nccl target)
  if(ALEXNET_NCCL AND TORCH_CUDA_LIBRARIES)
    get_filename_component(alexnet_site "${Torch_DIR}/../../../.." ABSOLUTE)
    # Pip's NCCL first (what `import torch` loads), then NCCL_ROOT / NCCL_HOME and the system.
    find_path(ALEXNET_NCCL_INCLUDE_DIR nccl.h PATHS "${alexnet_site}/nvidia/nccl/include" NO_DEFAULT_PATH)
    find_path(ALEXNET_NCCL_INCLUDE_DIR nccl.h HINTS ENV NCCL_ROOT ENV NCCL_HOME PATH_SUFFIXES include)
    find_library(ALEXNET_NCCL_LIBRARY NAMES nccl libnccl.so.2 PATHS "${alexnet_site}/nvidia/nccl/lib" NO_DEFAULT_PATH)
    find_library(ALEXNET_NCCL_LIBRARY NAMES nccl libnccl.so.2
      HINTS ENV NCCL_ROOT ENV NCCL_HOME PATH_SUFFIXES lib lib64)
    set(alexnet_nccl_off "")
    if(NOT ALEXNET_NCCL_INCLUDE_DIR OR NOT ALEXNET_NCCL_LIBRARY)
      set(alexnet_nccl_off "no nccl.h / libnccl (${ALEXNET_NCCL_INCLUDE_DIR}, ${ALEXNET_NCCL_LIBRARY}); set NCCL_ROOT")
    else()
      file(STRINGS "${ALEXNET_NCCL_INCLUDE_DIR}/nccl.h" nccl_defines REGEX "^#define NCCL_(MAJOR|MINOR|PATCH) ")
      set(nccl_header_version "")
      foreach(part IN ITEMS MAJOR MINOR PATCH)
        string(REGEX MATCH "NCCL_${part} +([0-9]+)" _ "${nccl_defines}")
        list(APPEND nccl_header_version "${CMAKE_MATCH_1}")
      endforeach()
      string(REPLACE ";" "." nccl_header_version "${nccl_header_version}")
      set(torch_nccl_version "${ALEXNET_TORCH_NCCL_VERSION}")
      if(NOT torch_nccl_version)
        find_program(ALEXNET_PYTHON NAMES python3 python)
        if(ALEXNET_PYTHON)
          # Only the python whose torch is this LibTorch speaks for it.
          execute_process(COMMAND "${ALEXNET_PYTHON}" -c [[
import os, sys, torch
here = os.path.realpath(os.path.join(torch.utils.cmake_prefix_path, "Torch"))
if here != os.path.realpath(sys.argv[1]): sys.exit(1)
v = torch.cuda.nccl.version()
if isinstance(v, int): v = (v // 10000, v // 100 % 100, v % 100) if v >= 10000 else (v // 1000, v // 100 % 10, v % 100)
print(".".join(str(x) for x in v))
]] "${Torch_DIR}" OUTPUT_VARIABLE torch_nccl_version RESULT_VARIABLE status
            OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
          if(NOT status EQUAL 0)
            set(torch_nccl_version "")
          endif()
        endif()
      endif()
      if(torch_nccl_version AND NOT torch_nccl_version VERSION_EQUAL nccl_header_version)
        set(alexnet_nccl_off "nccl.h in ${ALEXNET_NCCL_INCLUDE_DIR} is ${nccl_header_version}, but PyTorch's NCCL is "
                             "${torch_nccl_version}; set NCCL_ROOT to PyTorch's or ALEXNET_TORCH_NCCL_VERSION")
      endif()
    endif()
    if(NOT alexnet_nccl_off)
      include(CheckCXXSourceCompiles)
      set(CMAKE_REQUIRED_LIBRARIES torch ${ALEXNET_NCCL_LIBRARY})
      # CUDA's own headers, in case LibTorch's targets do not carry them (TorchConfig
      # finds CUDAToolkit for a CUDA build).
      set(CMAKE_REQUIRED_INCLUDES ${ALEXNET_NCCL_INCLUDE_DIR} ${CUDAToolkit_INCLUDE_DIRS})
      set(CMAKE_REQUIRED_DEFINITIONS -DUSE_C10D_NCCL)
      set(CMAKE_REQUIRED_FLAGS -std=c++${ALEXNET_CXX_STANDARD})
      check_cxx_source_compiles([[
  #include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
  #include <c10/cuda/CUDAFunctions.h>
  void make(const c10::intrusive_ptr<c10d::Store>& store) {
    auto options = c10d::ProcessGroupNCCL::Options::create();
    options->timeout = std::chrono::milliseconds(1000);
    c10::make_intrusive<c10d::ProcessGroupNCCL>(store, 0, 1, options);
  }
  int main(int argc, char**) {
    if (argc > 9) make({});
    return static_cast<int>(c10::cuda::device_count()) < 0;
  }]] ALEXNET_HAVE_NCCL_PG)
      unset(CMAKE_REQUIRED_LIBRARIES)
      unset(CMAKE_REQUIRED_INCLUDES)
      unset(CMAKE_REQUIRED_DEFINITIONS)
      unset(CMAKE_REQUIRED_FLAGS)
      if(NOT ALEXNET_HAVE_NCCL_PG)
        set(alexnet_nccl_off "ProcessGroupNCCL.hpp did not compile and link (CMakeFiles/CMakeError.log says why)")
      endif()
    endif()
    if(NOT alexnet_nccl_off)
      target_compile_definitions(${target} PRIVATE ALEXNET_WITH_NCCL USE_C10D_NCCL)
      target_include_directories(${target} PRIVATE ${ALEXNET_NCCL_INCLUDE_DIR} ${CUDAToolkit_INCLUDE_DIRS})
      target_link_libraries(${target} PRIVATE ${ALEXNET_NCCL_LIBRARY})
      message(STATUS "alexnet: NCCL process group on (NCCL ${nccl_header_version}, nccl.h in ${ALEXNET_NCCL_INCLUDE_DIR}; "
                     "PyTorch's: ${torch_nccl_version})")
    else()
      message(STATUS "alexnet: NCCL process group off (${alexnet_nccl_off})")
    endif()
  endif()
endfunction()
