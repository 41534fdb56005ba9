# Finds LibTorch once, and what a CUDA LibTorch needs before it is found.
#
# A CUDA build of LibTorch (PyTorch's pip wheels) enables CMake's CUDA language while
# it is found, which needs nvcc: look where CUDA installs usually put it, including
# pip's nvidia/cuda_nvcc next to the wheel, and say which one (or that none was
# found) before find_package(Torch) can fail on it.
if(CMAKE_CUDA_COMPILER OR DEFINED ENV{CUDACXX})
  message(STATUS "alexnet: nvcc: ${CMAKE_CUDA_COMPILER}$ENV{CUDACXX}")
else()
  set(alexnet_nvcc_hints)
  foreach(root IN ITEMS "$ENV{CUDA_HOME}" "$ENV{CUDA_PATH}" /usr/local/cuda)
    if(root)
      list(APPEND alexnet_nvcc_hints "${root}/bin")
    endif()
  endforeach()
  # site-packages/torch/share/cmake (the wheel's cmake_prefix_path) -> site-packages/nvidia
  foreach(prefix IN LISTS CMAKE_PREFIX_PATH Torch_DIR)
    get_filename_component(site "${prefix}/../../.." ABSOLUTE)
    list(APPEND alexnet_nvcc_hints "${site}/nvidia/cuda_nvcc/bin" "${site}/../nvidia/cuda_nvcc/bin")
  endforeach()
  find_program(ALEXNET_NVCC nvcc HINTS ${alexnet_nvcc_hints})
  if(ALEXNET_NVCC)
    set(CMAKE_CUDA_COMPILER "${ALEXNET_NVCC}" CACHE FILEPATH "nvcc, for a CUDA LibTorch")
    get_filename_component(alexnet_cuda_root "${ALEXNET_NVCC}/../.." ABSOLUTE)
    if(NOT CUDAToolkit_ROOT)
      set(CUDAToolkit_ROOT "${alexnet_cuda_root}")
    endif()
    message(STATUS "alexnet: nvcc: ${ALEXNET_NVCC}")
  else()
    message(STATUS "alexnet: nvcc: none in PATH, CUDA_HOME, CUDA_PATH, /usr/local/cuda/bin or pip's "
                   "nvidia/cuda_nvcc (only a CPU LibTorch can be used; for a CUDA one set CUDA_HOME)")
  endif()
endif()

# find_package(Torch) fails when it runs twice in one build: look once.
if(NOT TARGET torch)
  find_package(Torch REQUIRED)
  # Imported targets are visible only below the directory that found them; a project
  # that adds this one with add_subdirectory must see them to link alexnet::alexnet.
  if(NOT ALEXNET_TOP_LEVEL)
    get_directory_property(torch_targets IMPORTED_TARGETS)
    set_target_properties(${torch_targets} PROPERTIES IMPORTED_GLOBAL TRUE)
  endif()
endif()

# LibTorch after 2.11 refuses C++17; 1.13 (Debian's) and up to 2.11 take it.
if(Torch_VERSION AND Torch_VERSION VERSION_GREATER_EQUAL 2.12)
  set(ALEXNET_CXX_STANDARD 20)
else()
  set(ALEXNET_CXX_STANDARD 17)
endif()
message(STATUS "alexnet: LibTorch ${Torch_VERSION}, C++${ALEXNET_CXX_STANDARD}")
