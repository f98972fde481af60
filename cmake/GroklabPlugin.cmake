# groklab_add_plugin(NAME SOURCES src...)
#
# Builds a groklab plugin: a MODULE library with hidden visibility that links
# the one shared framework library (and through it LibTorch). Works in the
# groklab tree and out of tree after find_package(groklab).
#   OUTPUT_DIRECTORY dir  where the .so goes (default: the built-in plugin dir
#                         in the groklab tree, else the current binary dir)
#   NO_INSTALL            do not install it with the built-in plugins
function(groklab_add_plugin name)
  cmake_parse_arguments(ARG "NO_INSTALL" "OUTPUT_DIRECTORY" "SOURCES" ${ARGN})
  if(NOT ARG_SOURCES)
    message(FATAL_ERROR "groklab_add_plugin(${name}): no SOURCES given")
  endif()
  add_library(${name} MODULE ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE groklab::groklab)
  target_compile_features(${name} PRIVATE cxx_std_17)
  set_target_properties(${name} PROPERTIES
    PREFIX "lib"
    CXX_VISIBILITY_PRESET hidden
    VISIBILITY_INLINES_HIDDEN ON)
  if(COMMAND groklab_warnings)
    groklab_warnings(${name})
    groklab_use_pch(${name})
  else()
    target_compile_options(${name} PRIVATE -Wall -Wextra)
  endif()
  target_link_options(${name} PRIVATE -Wl,--no-undefined)
  if(ARG_OUTPUT_DIRECTORY)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${ARG_OUTPUT_DIRECTORY})
  elseif(DEFINED GROKLAB_PLUGIN_OUTPUT_DIR)
    set_target_properties(${name} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${GROKLAB_PLUGIN_OUTPUT_DIR})
  endif()
  if(DEFINED GROKLAB_INSTALL_PLUGINDIR AND NOT ARG_NO_INSTALL)
    install(TARGETS ${name} LIBRARY DESTINATION ${GROKLAB_INSTALL_PLUGINDIR})
  endif()
endfunction()
