# cmake -DMODE=<find_package|add_subdirectory|without_mpi> -DMPIEXEC=<mpiexec;flags...> ...
#       -P run_consumer_mpi.cmake
# Builds tests/package/consumer_mpi against mproc's component mpi and runs
# it with mpiexec (2 ranks):
#   find_package      mproc installed from this build; find_package(... COMPONENTS mpi)
#   add_subdirectory  mproc's source tree; links mproc::mpi
#   without_mpi       mproc configured with MPI hidden (CMAKE_DISABLE_FIND_PACKAGE_MPI)
#                     and installed: that works, find_package(mproc) finds it, the
#                     component mpi is reported absent (REQUIRED: a clear failure)
cmake_minimum_required(VERSION 3.25)

foreach(var MODE MPROC_SOURCE_DIR MPROC_BINARY_DIR WORK_DIR GENERATOR CXX EXPECTED_VERSION MPIEXEC)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer_mpi.cmake: ${var} is not set")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 600)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "failed (${rc}): ${cmd}\n${out}\n${err}")
  endif()
  set(last_output "${out}" PARENT_SCOPE)
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")
set(prefix "${WORK_DIR}/prefix")
set(consumer "${MPROC_SOURCE_DIR}/tests/package/consumer_mpi")
set(common -G "${GENERATOR}" -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release
           -DMPROC_SOURCE_DIR=${MPROC_SOURCE_DIR} -DEXPECTED_VERSION=${EXPECTED_VERSION})

if(MODE STREQUAL "without_mpi")
  run("${CMAKE_COMMAND}" -S "${MPROC_SOURCE_DIR}" -B "${WORK_DIR}/mproc" -G "${GENERATOR}"
      -DCMAKE_DISABLE_FIND_PACKAGE_MPI=ON -DMPROC_BUILD_TESTS=OFF -DMPROC_BUILD_BENCH=OFF -DMPROC_BUILD_EXAMPLES=OFF)
  if(NOT last_output MATCHES "MPI not found")
    message(FATAL_ERROR "configuring without MPI did not say so:\n${last_output}")
  endif()
  run("${CMAKE_COMMAND}" --install "${WORK_DIR}/mproc" --prefix "${prefix}")
  if(EXISTS "${prefix}/share/cmake/mproc/mprocMpiTargets.cmake")
    message(FATAL_ERROR "an install without MPI must not export mproc::mpi")
  endif()
  # OPTIONAL_COMPONENTS: mproc is found, the component is not.
  run("${CMAKE_COMMAND}" -S "${consumer}" -B "${WORK_DIR}/optional" ${common}
      -DCONSUMER_MODE=find_package_optional "-DCMAKE_PREFIX_PATH=${prefix}")
  if(NOT last_output MATCHES "consumer: mproc found, component mpi absent")
    message(FATAL_ERROR "the optional component was not reported absent:\n${last_output}")
  endif()
  # REQUIRED COMPONENTS mpi: configuring fails and says why.
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${consumer}" -B "${WORK_DIR}/required" ${common}
                          -DCONSUMER_MODE=find_package "-DCMAKE_PREFIX_PATH=${prefix}"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT "${out}${err}" MATCHES "installed from a build without MPI")
    message(FATAL_ERROR "a required but absent component mpi must fail clearly (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "without MPI: mproc installs; component mpi reported absent")
  return()
endif()

if(MODE STREQUAL "find_package")
  run("${CMAKE_COMMAND}" --install "${MPROC_BINARY_DIR}" --prefix "${prefix}")
  if(NOT EXISTS "${prefix}/share/cmake/mproc/mprocMpiTargets.cmake" OR NOT EXISTS "${prefix}/include/mproc/mpi.hpp")
    message(FATAL_ERROR "the install lacks the component mpi")
  endif()
  run("${CMAKE_COMMAND}" -S "${consumer}" -B "${WORK_DIR}/build" ${common}
      -DCONSUMER_MODE=find_package "-DCMAKE_PREFIX_PATH=${prefix}")
elseif(MODE STREQUAL "add_subdirectory")
  run("${CMAKE_COMMAND}" -S "${consumer}" -B "${WORK_DIR}/build" ${common} -DCONSUMER_MODE=add_subdirectory)
else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
run(${MPIEXEC} "${WORK_DIR}/build/consumer_mpi")
if(NOT last_output MATCHES "mproc ${EXPECTED_VERSION} mpi ok")
  message(FATAL_ERROR "consumer printed:\n${last_output}")
endif()
message(STATUS "consumer_mpi via ${MODE}: ${last_output}")
