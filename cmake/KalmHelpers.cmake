# Shared CMake helpers: one way to declare a tool, a test, a torch target.

function(kalm_git_revision out_var)
  execute_process(COMMAND git rev-parse --short=12 HEAD
                  WORKING_DIRECTORY ${CMAKE_SOURCE_DIR}
                  OUTPUT_VARIABLE rev OUTPUT_STRIP_TRAILING_WHITESPACE
                  ERROR_QUIET RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0 OR rev STREQUAL "")
    set(rev "unknown")
  endif()
  set(${out_var} ${rev} PARENT_SCOPE)
endfunction()

# Warnings for our own code only (LibTorch headers are included as SYSTEM).
function(kalm_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  # GCC 12 at -O3 in C++20 warns "-Wrestrict" inside std::string's own code
  # (GCC bug 105329, fixed in 13): noise that would bury real warnings.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(${target} PRIVATE -Wno-restrict)
  endif()
endfunction()

# A target that uses LibTorch: links it and reuses the one precompiled header.
function(kalm_use_torch target)
  target_link_libraries(${target} PUBLIC ${TORCH_LIBRARIES})
  target_include_directories(${target} SYSTEM PUBLIC ${TORCH_INCLUDE_DIRS})
  if(KALM_USE_PCH AND NOT target STREQUAL "kalm_torch_pch")
    target_precompile_headers(${target} REUSE_FROM kalm_torch_pch)
  endif()
endfunction()

# kalm_add_tool(kalm-embed LIBS kalm_core)
function(kalm_add_tool name)
  cmake_parse_arguments(ARG "" "" "LIBS" ${ARGN})
  add_executable(${name} ${CMAKE_CURRENT_SOURCE_DIR}/${name}.cpp)
  target_link_libraries(${name} PRIVATE ${ARG_LIBS})
  kalm_set_warnings(${name})
  if(KALM_USE_PCH)
    target_precompile_headers(${name} REUSE_FROM kalm_torch_pch)
  endif()
  install(TARGETS ${name} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endfunction()

# kalm_add_test(unit_io SOURCES a.cpp b.cpp LIBS kalm_base LABELS unit [TORCH])
# Every doctest binary is one ctest entry carrying the given labels.
function(kalm_add_test name)
  cmake_parse_arguments(ARG "TORCH" "TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES} ${CMAKE_SOURCE_DIR}/tests/unit/doctest_main.cpp)
  target_link_libraries(${name} PRIVATE ${ARG_LIBS})
  target_compile_definitions(${name} PRIVATE
    DOCTEST_CONFIG_NO_SHORT_MACRO_NAMES
    KALM_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
    KALM_FIXTURES_DIR="${CMAKE_SOURCE_DIR}/tests/fixtures")
  target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/unit)
  kalm_set_warnings(${name})
  if(ARG_TORCH AND KALM_USE_PCH)
    target_precompile_headers(${name} REUSE_FROM kalm_torch_pch)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 600)
  endif()
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT})
endfunction()
