# Builds and runs tests/consumer against this build: MODE is find_package (after
# `cmake --install` into a scratch prefix) or add_subdirectory.
file(REMOVE_RECURSE "${WORK_DIR}")
set(args -S "${SOURCE_DIR}/tests/consumer" -B "${WORK_DIR}/build" -G "${GENERATOR}"
  -DCMAKE_BUILD_TYPE=Release -DALEXNET_CONSUMER_MODE=${MODE})
if(MODE STREQUAL "find_package")
  execute_process(COMMAND ${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix"
    OUTPUT_QUIET COMMAND_ERROR_IS_FATAL ANY)
  list(APPEND args "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
else()
  list(APPEND args "-DALEXNET_SOURCE_DIR=${SOURCE_DIR}")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} ${args} OUTPUT_QUIET COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND ${CMAKE_COMMAND} --build "${WORK_DIR}/build" OUTPUT_QUIET COMMAND_ERROR_IS_FATAL ANY)
execute_process(COMMAND "${WORK_DIR}/build/consumer" OUTPUT_VARIABLE out COMMAND_ERROR_IS_FATAL ANY)
if(NOT out MATCHES "probabilities \\[2, 10\\]")
  message(FATAL_ERROR "consumer printed: ${out}")
endif()
message(STATUS "consumer (${MODE}): ${out}")
if(MODE STREQUAL "find_package")
  execute_process(COMMAND "${WORK_DIR}/build/consumer_train" "${WORK_DIR}/scratch" OUTPUT_VARIABLE out
    COMMAND_ERROR_IS_FATAL ANY)
  if(NOT out MATCHES "resumed to epoch 2" OR NOT out MATCHES "bitwise equal to an uninterrupted run")
    message(FATAL_ERROR "consumer_train printed: ${out}")
  endif()
  message(STATUS "consumer_train: ${out}")
endif()
