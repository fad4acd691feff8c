# cmake -DMODE=<top_level|subproject> -DMPROC_SOURCE_DIR=... -DWORK_DIR=... -DGENERATOR=... -DCXX=...
#       -P run_install_only.cmake
# mproc configured only to be installed or consumed looks for nothing but
# what the library itself needs: Threads, and MPI for the optional mproc::mpi
# when it is the top-level project (MPROC_MPI). No test, benchmark or docs
# dependency (Catch2, Google Benchmark, oneTBB, Boost, OpenMP, Python,
# Doxygen) is probed. Reads CMake's trace of the configure step.
#   top_level   mproc's tree with -DMPROC_BUILD_TESTS/BENCH/EXAMPLES=OFF, then
#               installed: allowed Threads, MPI
#   subproject  tests/package/consumer including mproc with add_subdirectory:
#               allowed Threads
cmake_minimum_required(VERSION 3.25)

foreach(var MODE MPROC_SOURCE_DIR WORK_DIR GENERATOR CXX)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_install_only.cmake: ${var} is not set")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(trace "${WORK_DIR}/trace.txt")
set(common -G "${GENERATOR}" -DCMAKE_CXX_COMPILER=${CXX} --trace-expand "--trace-redirect=${trace}")
if(MODE STREQUAL "top_level")
  set(allowed Threads MPI)
  run("${CMAKE_COMMAND}" -S "${MPROC_SOURCE_DIR}" -B "${WORK_DIR}/build" ${common}
      -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_BENCH=OFF -DMPROC_BUILD_EXAMPLES=OFF)
elseif(MODE STREQUAL "subproject")
  set(allowed Threads)
  run("${CMAKE_COMMAND}" -S "${MPROC_SOURCE_DIR}/tests/package/consumer" -B "${WORK_DIR}/build" ${common}
      -DCONSUMER_MODE=add_subdirectory -DMPROC_SOURCE_DIR=${MPROC_SOURCE_DIR})
else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()

# Every find_package() that mproc's own CMake files called.
file(STRINGS "${trace}" calls REGEX "^${MPROC_SOURCE_DIR}/[^(]*\\([0-9]+\\): *find_package\\(")
set(found "")
foreach(call IN LISTS calls)
  if(call MATCHES "/tests/package/consumer/")
    continue()
  endif()
  string(REGEX MATCH "find_package\\( *([A-Za-z0-9_]+)" _ "${call}")
  list(APPEND found "${CMAKE_MATCH_1}")
  if(NOT CMAKE_MATCH_1 IN_LIST allowed)
    message(FATAL_ERROR "configuring mproc (${MODE}) looked for ${CMAKE_MATCH_1}: ${call}")
  endif()
endforeach()
list(REMOVE_DUPLICATES found)

# And no trace of them in the cache either (a package found through a
# module that the trace filter would miss).
file(STRINGS "${WORK_DIR}/build/CMakeCache.txt" cached
     REGEX "^(Catch2_DIR|benchmark_DIR|TBB_DIR|Boost_DIR|Boost_INCLUDE_DIR|OpenMP_CXX_FLAGS|Python3?_EXECUTABLE|DOXYGEN_EXECUTABLE)[:=]")
if(cached)
  message(FATAL_ERROR "configuring mproc (${MODE}) probed a test/bench/docs dependency: ${cached}")
endif()

if(MODE STREQUAL "top_level")
  run("${CMAKE_COMMAND}" --install "${WORK_DIR}/build" --prefix "${WORK_DIR}/prefix")
  if(NOT EXISTS "${WORK_DIR}/prefix/share/cmake/mproc/mprocConfig.cmake")
    message(FATAL_ERROR "the install-only configuration installed no mprocConfig.cmake")
  endif()
endif()
message(STATUS "install only (${MODE}): looked for ${found} and nothing else")
