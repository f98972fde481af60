// Helpers shared by the test files.
#pragma once

#include <array>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "groklab/manifest.h"

namespace groklab::test {

// Runs a shell command; returns its wait status (0: exited 0) and appends
// stdout+stderr to out.
inline int run_command(const std::string& cmd, std::string& out) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (p == nullptr) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  return ::pclose(p);
}

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
