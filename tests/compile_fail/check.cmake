# cmake -DSOURCE=<file.cpp> -DCXX=<compiler> -DINCLUDE=<dir> -P check.cmake
# Compiles SOURCE (syntax only) and passes if it FAILS with every message its
# `// expect-error: <text>` lines name: mproc turns misuse into clear
# compile-time errors, and this keeps them clear.
cmake_minimum_required(VERSION 3.25)
file(STRINGS "${SOURCE}" expected REGEX "^// expect-error: ")
if(NOT expected)
  message(FATAL_ERROR "${SOURCE} has no '// expect-error:' line")
endif()
execute_process(
  COMMAND "${CXX}" -std=c++20 -fsyntax-only -I "${INCLUDE}" "${SOURCE}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
foreach(line IN LISTS expected)
  string(REGEX REPLACE "^// expect-error: " "" text "${line}")
  string(FIND "${err}${out}" "${text}" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "the compiler's error lacks \"${text}\":\n${err}")
  endif()
endforeach()
message(STATUS "fails to compile, as it should")
