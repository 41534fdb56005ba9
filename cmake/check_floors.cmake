# The floors of DESIGN.md, checked file by file: each target's headers and sources
# (alexnet/include/alexnet/<floor>/, alexnet/src/<floor>/) include only their own floor
# and the floors below it, so that linking a lower target never needs a higher one's
# headers (a consumer of alexnet::alexnet alone compiles without OpenCV).
#
#   cmake -DROOT=<source dir> -P cmake/check_floors.cmake      (CTest runs it: floors.check)
#
# Fails naming every include that reaches up, with its file and line.
cmake_minimum_required(VERSION 3.18)
if(NOT ROOT)
  message(FATAL_ERROR "check_floors: pass -DROOT=<source dir>")
endif()

# Floor -> the floors its files may include.
set(allowed_network network)
set(allowed_data network data)
set(allowed_train network data train)
set(allowed_interop network interop)
set(floors network data train interop)

set(violations "")
set(checked 0)
foreach(floor IN LISTS floors)
  file(GLOB_RECURSE files
    "${ROOT}/alexnet/include/alexnet/${floor}/*.h"
    "${ROOT}/alexnet/src/${floor}/*.h" "${ROOT}/alexnet/src/${floor}/*.cpp")
  # The umbrella header of the floor (alexnet/include/alexnet/<floor>.h) belongs to it.
  if(EXISTS "${ROOT}/alexnet/include/alexnet/${floor}.h")
    list(APPEND files "${ROOT}/alexnet/include/alexnet/${floor}.h")
  endif()
  if(NOT files)
    string(APPEND violations "  no files for the ${floor} floor: has the layout moved?\n")
  endif()
  foreach(file IN LISTS files)
    math(EXPR checked "${checked} + 1")
    file(STRINGS "${file}" lines REGEX "^[ \t]*#[ \t]*include")
    foreach(line IN LISTS lines)
      # <alexnet/FLOOR/...> (public) or "FLOOR/..." (a target's internal headers).
      if(line MATCHES "<alexnet/([a-z_]+)/" OR line MATCHES "\"([a-z_]+)/[a-z_]+\\.h\"")
        set(target_floor "${CMAKE_MATCH_1}")
        if(NOT target_floor IN_LIST floors)
          continue()
        endif()
        if(NOT target_floor IN_LIST allowed_${floor})
          file(RELATIVE_PATH rel "${ROOT}" "${file}")
          string(STRIP "${line}" line)
          string(APPEND violations "  ${rel} (${floor}) includes the ${target_floor} floor: ${line}\n")
        endif()
      elseif(line MATCHES "<alexnet/(data|train|interop)\\.h>")
        set(target_floor "${CMAKE_MATCH_1}")
        if(NOT target_floor IN_LIST allowed_${floor})
          file(RELATIVE_PATH rel "${ROOT}" "${file}")
          string(APPEND violations "  ${rel} (${floor}) includes <alexnet/${target_floor}.h>\n")
        endif()
      endif()
    endforeach()
  endforeach()
endforeach()

if(violations)
  message(FATAL_ERROR "check_floors: includes that reach up a floor (DESIGN.md):\n${violations}")
endif()
message(STATUS "check_floors: ${checked} files, every include within its floor or below")
