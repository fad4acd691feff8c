# cmake -DFIRST=<command> -DSECOND=<command> -P same_first_line.cmake
# Passes if both commands succeed and print the same first line.
cmake_minimum_required(VERSION 3.25)
foreach(which FIRST SECOND)
  execute_process(COMMAND ${${which}} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 240)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${${which}} failed (${rc}):\n${out}\n${err}")
  endif()
  string(REGEX MATCH "^[^\n]*" line_${which} "${out}")
endforeach()
message(STATUS "first:  ${line_FIRST}\nsecond: ${line_SECOND}")
if(NOT line_FIRST STREQUAL line_SECOND OR line_FIRST STREQUAL "")
  message(FATAL_ERROR "the first lines differ")
endif()
