// groklab ledger [--ledger DIR] verify [--head H] | head | list | show ENTRY | repair
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include "commands.h"
#include "common.h"
#include "groklab/ledger/ledger.h"

namespace groklab::cli {
namespace {

namespace gl = groklab::ledger;

// Exit statuses: 1 = the ledger failed verification, 2 = the command could not run.
constexpr int kVerifyFailed = 1;
constexpr int kError = 2;

struct LedgerArgs {
  std::string dir;   // --ledger
  std::string head;  // verify --head
  std::string entry; // show ENTRY
};

[[noreturn]] void fail(const std::string& message, int code = kError) {
  std::fprintf(stderr, "groklab: %s\n", message.c_str());
  throw Exit{code};
}

// Opens the ledger; its warnings go to stderr as "groklab: warning: …" unless QUIET.
gl::Ledger open_ledger(const LedgerArgs& args, bool quiet = false) {
  gl::LedgerOptions options;
  options.warn = [quiet](const std::string& m) {
    if (!quiet) std::fprintf(stderr, "groklab: warning: %s\n", m.c_str());
  };
  return gl::Ledger::open(ledger_dir(args.dir), options);
}

// Runs a command body, turning ledger errors into "groklab: …" and exit status 2.
template <typename Fn>
void guarded(Fn fn) {
  try {
    fn();
  } catch (const gl::LedgerError& e) {
    fail(e.what());
  } catch (const std::invalid_argument& e) {
    fail(e.what());
  }
}

// A JSON scalar as plain text (strings without quotes); "" for containers.
std::string scalar_text(const nlohmann::json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number() || v.is_boolean()) return v.dump();
  return "";
}

void cmd_verify(const LedgerArgs& args) {
  guarded([&] {
    gl::Ledger ledger = open_ledger(args);
    gl::VerifyResult r = ledger.verify(args.head);
    if (r.ok) {
      std::printf("%s\n", r.summary().c_str());
      return;
    }
    std::string msg = "ledger " + ledger.dir() + " failed verification: " + r.summary();
    if (r.problem && r.problem->line > 0) {
      msg += "\n  (" + std::to_string(r.entries) + (r.entries == 1 ? " entry" : " entries") +
             " before it " + (r.entries == 1 ? "is" : "are") + " intact";
      msg += r.head.empty() ? std::string(")") : ", up to " + r.head + ")";
    }
    fail(msg, kVerifyFailed);
  });
}

void cmd_head(const LedgerArgs& args) {
  guarded([&] {
    gl::Ledger ledger = open_ledger(args);
    std::string head = ledger.head();
    if (head.empty()) fail("ledger " + ledger.dir() + " is empty: it has no head yet");
    std::printf("%s\n", head.c_str());
  });
}

void cmd_list(const LedgerArgs& args) {
  guarded([&] {
    gl::Ledger ledger = open_ledger(args);
    // Fields worth a glance when present, in this order.
    static const char* summary_keys[] = {"status", "run",  "name", "manifest", "seed",
                                         "step",   "replay_of", "resumes", "message"};
    ledger.for_each_entry([&](const gl::Entry& e) {
      const auto& j = e.json;
      std::string line = e.id.substr(0, 12);
      auto field = [&](const char* key) {
        auto it = j.find(key);
        return it == j.end() ? std::string() : scalar_text(*it);
      };
      std::string time = field("time");
      std::string kind = field("kind");
      line += "  " + (time.empty() ? std::string("-") : time);
      line += "  " + (kind.empty() ? std::string("-") : kind);
      for (const char* key : summary_keys) {
        std::string v = field(key);
        if (v.empty()) continue;
        if (v.size() > 40) v = v.substr(0, 37) + "...";
        line += std::string("  ") + key + "=" + v;
      }
      if (auto objs = j.find("objects"); objs != j.end() && !objs->empty())
        line += "  objects=" + std::to_string(objs->size());
      std::printf("%s\n", line.c_str());
      return true;
    });
  });
}

void cmd_show(const LedgerArgs& args) {
  guarded([&] {
    gl::Ledger ledger = open_ledger(args);
    gl::Entry e = ledger.get(args.entry);
    std::printf("%s\n", e.json.dump(2).c_str());
  });
}

void cmd_repair(const LedgerArgs& args) {
  guarded([&] {
    gl::Ledger ledger = open_ledger(args, /*quiet=*/true);  // the line below says it
    if (auto kept = ledger.repair()) {
      std::printf("moved a torn last line aside to %s\n", kept->c_str());
    } else {
      std::printf("nothing to repair: the last line is complete\n");
    }
  });
}

}  // namespace

void add_ledger_command(CLI::App& app) {
  auto args = std::make_shared<LedgerArgs>();
  CLI::App* ledger = app.add_subcommand("ledger", "Inspect and verify the ledger (entries and objects)");
  ledger->require_subcommand(1);
  ledger->fallthrough();  // --ledger may also follow the subcommand
  ledger->add_option("--ledger", args->dir,
                     "Ledger directory (default: $GROKLAB_LEDGER, else ./groklab-ledger)");
  ledger->footer("Exit status: 0 ok, 1 the ledger failed verification, 2 error.");

  CLI::App* verify = ledger->add_subcommand(
      "verify", "Check the whole hash chain and every referenced object; name the first bad entry");
  verify->add_option("--head", args->head,
                     "Also prove the ledger still extends this earlier head (an id or unique prefix)");
  verify->callback([args] { cmd_verify(*args); });

  ledger->add_subcommand("head", "Print the id of the last entry")->callback([args] { cmd_head(*args); });

  ledger->add_subcommand("list", "One line per entry: short id, time, kind, summary fields")
      ->callback([args] { cmd_list(*args); });

  CLI::App* show = ledger->add_subcommand("show", "Print one entry as indented JSON");
  show->add_option("ENTRY", args->entry, "Entry id, unique prefix (at least 4 hex digits) or HEAD")
      ->required();
  show->callback([args] { cmd_show(*args); });

  ledger->add_subcommand("repair", "Move a torn last line (from a crash) aside, as the next append would")
      ->callback([args] { cmd_repair(*args); });
}

}  // namespace groklab::cli
