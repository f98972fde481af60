// Helpers shared by the test files.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "groklab/manifest.h"

namespace groklab::test {

// Returns Composer options that read manifests from memory (path -> text).
inline ComposerOptions in_memory(std::map<std::string, std::string> files) {
  ComposerOptions o;
  o.reader = [files = std::move(files)](const std::string& path, std::string& contents,
                                        std::string& error) {
    auto it = files.find(path);
    if (it == files.end()) {
      error = "no such file";
      return false;
    }
    contents = it->second;
    return true;
  };
  return o;
}

// Returns a factory that builds nothing: for components that are only composed, never run.
template <class T>
std::function<std::shared_ptr<T>(const Params&)> none() {
  return [](const Params&) { return std::shared_ptr<T>(); };
}

}  // namespace groklab::test
