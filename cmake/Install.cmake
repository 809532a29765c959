# `cmake --install build [--prefix P]`: the tools, the runtime library
# (libstlm.a, libstlm.so), the C header and the two ways to find them:
# a CMake package (P/lib/cmake/STLM, find_package(STLM)) and pkg-config
# (P/lib/pkgconfig/stlm.pc). Both are relocatable. docs/embedding.md.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The tools: stlm-run runs the stlm-compile beside it, which runs the
# stlm-kernelgen beside it. They keep their link path (MLIR and LLVM from
# /usr/lib/llvm-19) as their run path.
set(STLM_TOOLS stlm-compile stlm-run stlm-kernelgen stlm-opt)
set_target_properties(${STLM_TOOLS} PROPERTIES
  INSTALL_RPATH_USE_LINK_PATH ON)
install(TARGETS ${STLM_TOOLS} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS stlm stlm-static
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(FILES runtime/include/stlm/stlm.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/stlm)

set(STLM_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/STLM)
# How far up the prefix is from the package and from the .pc file.
file(RELATIVE_PATH STLM_CONFIG_TO_PREFIX /x/${STLM_CMAKE_DIR} /x)
file(RELATIVE_PATH STLM_PC_TO_PREFIX /x/${CMAKE_INSTALL_LIBDIR}/pkgconfig /x)
string(REGEX REPLACE "/$" "" STLM_CONFIG_TO_PREFIX "${STLM_CONFIG_TO_PREFIX}")
string(REGEX REPLACE "/$" "" STLM_PC_TO_PREFIX "${STLM_PC_TO_PREFIX}")
configure_package_config_file(cmake/STLMConfig.cmake.in
  ${PROJECT_BINARY_DIR}/cmake/STLMConfig.cmake
  INSTALL_DESTINATION ${STLM_CMAKE_DIR} NO_SET_AND_CHECK_MACRO)
write_basic_package_version_file(
  ${PROJECT_BINARY_DIR}/cmake/STLMConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/cmake/STLMConfig.cmake
  ${PROJECT_BINARY_DIR}/cmake/STLMConfigVersion.cmake
  DESTINATION ${STLM_CMAKE_DIR})
configure_file(cmake/stlm.pc.in ${PROJECT_BINARY_DIR}/cmake/stlm.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/cmake/stlm.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
