// Helpers shared by the test files.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "groklab/host.h"
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

// What a command printed (stdout+stderr) and its exit status (-1: it did not exit).
struct CommandResult {
  int status = -1;
  std::string out;
};

// Runs a shell command; returns its exit status and stdout+stderr.
inline CommandResult run_shell(const std::string& cmd) {
  CommandResult r;
  const int rc = run_command(cmd, r.out);
  r.status = rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return r;
}

// Runs the groklab executable under test with ARGS; env (e.g.
// "GROKLAB_PLUGIN_PATH=dir ") is put in front of the command.
inline CommandResult run_groklab(const std::string& args, const std::string& env = "") {
  return run_shell(env + GROKLAB_BINARY + " " + args);
}

// A fresh directory under the system temp dir, unique to the process and the
// tag (and to each instance), removed with everything in it at the end.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag = "tmp") {
    static int n = 0;
    path = std::filesystem::temp_directory_path() /
           ("groklab-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    std::filesystem::remove_all(path);
    std::filesystem::create_directories(path);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// A host with the test plugins of tests/plugins/good loaded (once per process;
// never destroyed: plugins are never unloaded).
inline PluginHost& test_host() {
  static PluginHost* host = [] {
    auto* h = new PluginHost();
    h->load_directory(std::string(GROKLAB_TEST_PLUGIN_DIR) + "/good");
    return h;
  }();
  return *host;
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
