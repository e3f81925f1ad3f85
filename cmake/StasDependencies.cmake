# Finds every third-party dependency once and exposes imported targets / STAS_HAVE_* flags.

find_program(CCACHE_PROGRAM ccache)
if(CCACHE_PROGRAM AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER "${CCACHE_PROGRAM}")
endif()

find_package(Torch REQUIRED)
# TorchConfig adds its flags to CMAKE_CXX_FLAGS; keep them but never let -Werror creep in.
find_package(Threads REQUIRED)
find_package(nlohmann_json 3 REQUIRED)
find_package(PkgConfig REQUIRED)

# CLI11 is header-only; Debian ships a CMake config, other systems may only have the header.
find_package(CLI11 QUIET CONFIG)
if(NOT TARGET CLI11::CLI11)
  find_path(CLI11_INCLUDE_DIR CLI/CLI.hpp REQUIRED)
  add_library(CLI11::CLI11 INTERFACE IMPORTED)
  set_target_properties(CLI11::CLI11 PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${CLI11_INCLUDE_DIR}")
endif()

find_package(Boost 1.70 REQUIRED)  # Asio and Beast are header-only



find_package(MPI REQUIRED COMPONENTS CXX)
set(STAS_HAVE_MPI ON)

# Turns an AUTO/ON/OFF option plus a "found" flag into a boolean, failing when ON cannot be honoured.
function(stas_resolve_option option found out)
  if("${${option}}" STREQUAL "OFF")
    set(${out} OFF PARENT_SCOPE)
  elseif(${found})
    set(${out} ON PARENT_SCOPE)
  elseif("${${option}}" STREQUAL "ON")
    message(FATAL_ERROR "${option}=ON but the dependency was not found")
  else()
    set(${out} OFF PARENT_SCOPE)
  endif()
endfunction()

# CUDA: present when the LibTorch found links torch_cuda.
set(_torch_has_cuda OFF)
if(TARGET torch_cuda OR "${TORCH_LIBRARIES}" MATCHES "torch_cuda")
  set(_torch_has_cuda ON)
endif()
stas_resolve_option(STAS_WITH_CUDA _torch_has_cuda STAS_HAVE_CUDA)

# NCCL: link the libnccl that libtorch_cuda itself loads (pip wheels ship one beside torch), so that a
# single NCCL lives in the process; fall back to a system NCCL.
set(_nccl_found OFF)
if(STAS_HAVE_CUDA)
  find_package(CUDAToolkit QUIET)
  get_filename_component(_torch_root "${Torch_DIR}/../../.." ABSOLUTE)
  find_path(NCCL_INCLUDE_DIR nccl.h
            HINTS "${_torch_root}/../nvidia/nccl/include" ENV NCCL_HOME PATH_SUFFIXES include)
  find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2
               HINTS "${_torch_root}/../nvidia/nccl/lib" ENV NCCL_HOME PATH_SUFFIXES lib lib64)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    set(_nccl_found ON)
  endif()
endif()
stas_resolve_option(STAS_WITH_NCCL _nccl_found STAS_HAVE_NCCL)
if(STAS_HAVE_NCCL)
  add_library(stas_nccl INTERFACE IMPORTED)
  set_target_properties(stas_nccl PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${NCCL_INCLUDE_DIR}"
                                             INTERFACE_LINK_LIBRARIES "${NCCL_LIBRARY}")
  message(STATUS "stas: NCCL ${NCCL_LIBRARY}")
endif()

# Redis client.
find_path(HIREDIS_INCLUDE_DIR hiredis/hiredis.h)
find_library(HIREDIS_LIBRARY hiredis)
set(_hiredis_found OFF)
if(HIREDIS_INCLUDE_DIR AND HIREDIS_LIBRARY)
  set(_hiredis_found ON)
endif()
stas_resolve_option(STAS_WITH_REDIS _hiredis_found STAS_HAVE_REDIS)
if(STAS_HAVE_REDIS)
  add_library(stas_hiredis INTERFACE IMPORTED)
  set_target_properties(stas_hiredis PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${HIREDIS_INCLUDE_DIR}"
                                                INTERFACE_LINK_LIBRARIES "${HIREDIS_LIBRARY}")
endif()

# FFmpeg.
pkg_check_modules(FFMPEG QUIET IMPORTED_TARGET libavcodec libavformat libavutil libswscale)
stas_resolve_option(STAS_WITH_FFMPEG FFMPEG_FOUND STAS_HAVE_FFMPEG)

if(STAS_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# Precompiled headers. Parsing ATen/ATen.h is most of the work of compiling any file here, so it is
# precompiled once and every target reuses it (REUSE_FROM) rather than each library building its
# own and each executable parsing it again per file. GCC takes a PCH only where -fPIC/-fPIE and the
# macros the header uses match, hence one for the static libraries (-fPIC) and one for executables
# (-fPIE); the tests have their own with GoogleTest in it (tests/CMakeLists.txt). CMake adds
# -Winvalid-pch, so a PCH that GCC ever rejects shows up as a warning.
function(stas_add_pch name)
  cmake_parse_arguments(ARG "EXECUTABLE" "" "HEADERS;DEPS" ${ARGN})
  set(_src "${CMAKE_CURRENT_BINARY_DIR}/${name}.cc")
  if(NOT EXISTS "${_src}")
    file(WRITE "${_src}" "// Empty: the target exists to build the precompiled header ${name}.\n")
  endif()
  add_library(${name} OBJECT "${_src}")
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
  target_precompile_headers(${name} PRIVATE ${ARG_HEADERS})
  target_compile_options(${name} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  if(ARG_EXECUTABLE)
    set_target_properties(${name} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
    target_compile_options(${name} PRIVATE ${CMAKE_CXX_COMPILE_OPTIONS_PIE})
  endif()
endfunction()
# ATen, and nlohmann::json that common/json.h brings into most files.
set(STAS_PCH_HEADERS <ATen/ATen.h> <nlohmann/json.hpp>)
set(STAS_PCH_DEPS ${TORCH_LIBRARIES} nlohmann_json::nlohmann_json)
stas_add_pch(stas_pch_library HEADERS ${STAS_PCH_HEADERS} DEPS ${STAS_PCH_DEPS})
stas_add_pch(stas_pch_program EXECUTABLE HEADERS ${STAS_PCH_HEADERS} DEPS ${STAS_PCH_DEPS})

# One static library per top-level folder, from every *.cc under it (minus feature-gated and fuzz
# sources). DEPS are linked PUBLIC, which is what keeps the dependency arrows pointing down.
function(stas_library name)
  cmake_parse_arguments(ARG "" "" "DEPS" ${ARGN})
  file(GLOB_RECURSE _srcs CONFIGURE_DEPENDS "${CMAKE_CURRENT_SOURCE_DIR}/*.cc")
  list(FILTER _srcs EXCLUDE REGEX "_fuzz\\.cc$")
  # Sources named *_nccl.cc, *_cuda.cc, *_redis.cc, *_ffmpeg.cc build only with that feature.
  foreach(_feature NCCL CUDA REDIS FFMPEG)
    string(TOLOWER ${_feature} _suffix)
    if(NOT STAS_HAVE_${_feature})
      list(FILTER _srcs EXCLUDE REGEX "_${_suffix}\\.cc$")
    endif()
  endforeach()
  if(NOT _srcs)
    # A folder whose code is still headers only: an interface target keeps the arrows in place.
    add_library(${name} INTERFACE)
    target_include_directories(${name} INTERFACE "${PROJECT_SOURCE_DIR}")
    target_link_libraries(${name} INTERFACE ${ARG_DEPS})
    return()
  endif()
  add_library(${name} STATIC ${_srcs})
  target_include_directories(${name} PUBLIC "${PROJECT_SOURCE_DIR}")
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  target_precompile_headers(${name} REUSE_FROM stas_pch_library)
  target_compile_options(${name} PRIVATE -Wall -Wextra -Wno-unused-parameter)
  target_compile_definitions(${name} PUBLIC
    STAS_HAVE_CUDA=$<BOOL:${STAS_HAVE_CUDA}> STAS_HAVE_NCCL=$<BOOL:${STAS_HAVE_NCCL}>
    STAS_HAVE_REDIS=$<BOOL:${STAS_HAVE_REDIS}> STAS_HAVE_FFMPEG=$<BOOL:${STAS_HAVE_FFMPEG}>)
endfunction()
