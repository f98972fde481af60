// groklab ledger [--ledger DIR] verify [--head H] | head | list [filters] [--runs] |
//   show ENTRY | diff A B | query … | export … | audit | repair
// The query commands print what ledger_query.h formats from groklab/audit.h.
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "commands.h"
#include "common.h"
#include "groklab/audit.h"
#include "groklab/host.h"
#include "groklab/ledger/ledger.h"
#include "groklab/runs.h"
#include "ledger_query.h"

namespace groklab::cli {
namespace {

namespace gl = groklab::ledger;

// Exit statuses: 1 = the ledger failed verification, 2 = the command could not run,
// 3 = the filters selected no run.
constexpr int kVerifyFailed = 1;
constexpr int kError = 2;
constexpr int kEmpty = 3;

struct LedgerArgs {
  std::string dir;   // --ledger
  std::string head;  // verify --head
  std::string entry; // show ENTRY
  bool json = false; // show --json
  std::string a, b;  // diff A B
  SelectionArgs select;  // list/query/export filters
  bool runs = false;     // list --runs
  std::string group_by, metric, at = "final", agg = "count,mean,std,min,max", frac;  // query
  std::string format;    // query: table|csv|json; export: csv|jsonl
  std::string output;    // export -o
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
  } catch (const EmptySelection& e) {
    fail(e.what(), kEmpty);
  } catch (const std::runtime_error& e) {  // audit::SelectionError, a missing run or object
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
    std::set<std::string> keep;  // with filters: the entries of the selected runs
    if (args.runs || args.select.any()) {
      auto runs = selected_runs(ledger, args.select);
      if (args.runs) {
        for (const auto& r : runs) std::printf("%s\n", run_line(r).c_str());
        return;
      }
      for (const auto& r : runs) {
        const auto& rec = r.record;
        keep.insert(rec.start.id);
        if (rec.result) keep.insert(rec.result->id);
        for (const auto* list : {&rec.checkpoints, &rec.resumes, &rec.replays})
          for (const auto& e : *list) keep.insert(e.id);
      }
    }
    // Fields worth a glance when present, in this order.
    static const char* summary_keys[] = {"status", "run",  "name", "manifest", "seed",
                                         "step",   "replay_of", "resumes", "message"};
    ledger.for_each_entry([&](const gl::Entry& e) {
      if (!keep.empty() && !keep.count(e.id)) return true;
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
        // A long path keeps its tail: the file name is what tells runs apart.
        if (v.size() > 40)
          v = std::strcmp(key, "manifest") == 0 ? "..." + v.substr(v.size() - 37) : v.substr(0, 37) + "...";
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
    if (!args.json && e.json.value("kind", "") == "run") {
      auto runs = audit::list_runs(ledger);
      if (const audit::RunInfo* r = run_of(runs, e.id)) {
        std::printf("%s", show_run(ledger, *r, runs).c_str());
        return;
      }
    }
    std::printf("%s\n", e.json.dump(2).c_str());
    // A sweep entry (or any entry runs name as their sweep): its children.
    auto runs = audit::list_runs(ledger);
    std::string children;
    for (const auto& r : runs)
      if (r.sweep == e.id) children += "  " + run_line(r) + "\n";
    if (!children.empty()) std::printf("\nsweep children:\n%s", children.c_str());
  });
}

// The run an entry (id, prefix or HEAD) belongs to.
const audit::RunInfo& find_run(const gl::Ledger& ledger, const std::vector<audit::RunInfo>& runs,
                               const std::string& entry) {
  const std::string id = ledger.resolve(entry);
  const audit::RunInfo* r = run_of(runs, id);
  if (r == nullptr) fail("entry " + id.substr(0, 12) + " does not belong to a run");
  return *r;
}

void cmd_diff(const LedgerArgs& args) {
  guarded([&] {
    gl::Ledger ledger = open_ledger(args);
    auto runs = audit::list_runs(ledger);
    const audit::RunInfo& a = find_run(ledger, runs, args.a);
    const audit::RunInfo& b = find_run(ledger, runs, args.b);
    std::printf("%s", diff_runs(ledger, a, b).c_str());
  });
}

// Splits "a,b,c" (empty parts dropped).
std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : s + ",") {
    if (c != ',') {
      cur += c;
    } else if (!cur.empty()) {
      out.push_back(cur);
      cur.clear();
    }
  }
  return out;
}

void cmd_query(const LedgerArgs& args) {
  guarded([&] {
    audit::QuerySpec spec;
    spec.group_by = split_commas(args.group_by);
    spec.metric = audit::parse_metric(args.metric);
    spec.at = audit::parse_at(args.at);
    if (!args.frac.empty()) spec.frac = audit::parse_condition(args.frac);
    static const std::set<std::string> known = {"runs", "count", "mean", "std", "min", "max"};
    std::vector<std::string> aggs = split_commas(args.agg);
    for (const auto& a : aggs)
      if (!known.count(a)) fail("--agg: unknown aggregate '" + a + "' (expected runs, count, mean, std, min, max)");
    gl::Ledger ledger = open_ledger(args);
    auto runs = selected_runs(ledger, args.select);
    auto rows = audit::query(ledger, runs, spec);
    std::size_t with_value = 0;
    for (const auto& r : rows) with_value += r.count + r.frac_count;
    if (with_value == 0)
      fail("none of the " + std::to_string(runs.size()) + " selected runs has a value of " + spec.metric.text() +
               " at " + spec.at.text() + (spec.frac ? " (nor meets " + spec.frac->text() + ")" : std::string()),
           kEmpty);
    std::printf("%s", format_query(spec, rows, aggs, args.format.empty() ? "table" : args.format).c_str());
  });
}

void cmd_export(const LedgerArgs& args) {
  guarded([&] {
    gl::Ledger ledger = open_ledger(args);
    auto runs = selected_runs(ledger, args.select);
    std::FILE* out = stdout;
    if (!args.output.empty() && args.output != "-") {
      out = std::fopen(args.output.c_str(), "w");
      if (out == nullptr) fail("cannot write " + args.output);
    }
    std::size_t n = write_export(ledger, runs, args.format.empty() ? "csv" : args.format, out);
    if (out != stdout && std::fclose(out) != 0) fail("cannot write " + args.output);
    if (n == 0) fail("the " + std::to_string(runs.size()) + " selected runs have no evaluated metrics", kEmpty);
  });
}

void cmd_audit(const LedgerArgs& args) {
  guarded([&] {
    gl::Ledger ledger = open_ledger(args);
    PluginHost host;
    load_plugins(host);
    audit::AuditReport report = audit::audit_ledger(ledger, environment(host, 1));
    auto runs = report.verify.ok ? audit::list_runs(ledger) : std::vector<audit::RunInfo>{};
    std::printf("%s", format_audit(report, runs).c_str());
    if (!report.verify.ok) fail("ledger " + ledger.dir() + " failed verification", kVerifyFailed);
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
  ledger->footer("Exit status: 0 ok, 1 the ledger failed verification, 2 error, 3 no run matched the filters.");

  CLI::App* verify = ledger->add_subcommand(
      "verify", "Check the whole hash chain and every referenced object; name the first bad entry");
  verify->add_option("--head", args->head,
                     "Also prove the ledger still extends this earlier head (an id or unique prefix)");
  verify->callback([args] { cmd_verify(*args); });

  ledger->add_subcommand("head", "Print the id of the last entry")->callback([args] { cmd_head(*args); });

  CLI::App* list = ledger->add_subcommand(
      "list", "One line per entry (short id, time, kind, summary fields); filters keep the entries of matching runs");
  add_selection_options(list, args->select);
  list->add_flag("--runs", args->runs,
                 "One line per run: id, time, status, task/architecture/optimizer, steps, final metrics");
  list->callback([args] { cmd_list(*args); });

  CLI::App* show = ledger->add_subcommand(
      "show", "Show a run (config, seeds, environment, plugins, results, replays, sweep children) or an entry");
  show->add_option("ENTRY", args->entry, "Entry id, unique prefix (at least 4 hex digits) or HEAD")
      ->required();
  show->add_flag("--json", args->json, "Print the entry itself as indented JSON, even for a run");
  show->callback([args] { cmd_show(*args); });

  CLI::App* diff = ledger->add_subcommand(
      "diff", "Differences of two runs: config by key path, environment, results (final metrics, first "
              "step where each metric series differs)");
  diff->add_option("A", args->a, "A run (any of its entries: id, prefix or HEAD)")->required();
  diff->add_option("B", args->b, "Another run")->required();
  diff->callback([args] { cmd_diff(*args); });

  CLI::App* query = ledger->add_subcommand(
      "query", "Group runs by config keys and aggregate a metric taken at a step");
  query->add_option("--group-by", args->group_by, "Config key paths to group by, comma-separated "
                                                  "(e.g. architecture.depth); none: one group");
  query->add_option("--metric", args->metric,
                    "A metric (test_accuracy), first_step(METRIC OP X): the first evaluated step where it holds, "
                    "e.g. first_step(test_accuracy>=0.995), or at_best(METRIC, KEY): METRIC where KEY is best, "
                    "e.g. at_best(test_accuracy, val_accuracy)")
      ->required();
  query->add_option("--at", args->at, "Where to take the metric: final (default), best (max; min for a loss) or a step");
  query->add_option("--agg", args->agg, "Aggregates, comma-separated: runs,count,mean,std,min,max "
                                        "(default count,mean,std,min,max)");
  query->add_option("--frac", args->frac,
                    "Also the fraction of runs meeting METRIC OP X at the same step, e.g. 'test_accuracy>=0.8'");
  query->add_option("--format", args->format, "table (default), csv or json")
      ->check(CLI::IsMember({"table", "csv", "json"}));
  add_selection_options(query, args->select);
  query->callback([args] { cmd_query(*args); });

  CLI::App* exp = ledger->add_subcommand(
      "export", "Tidy rows (entry, config keys…, step, metric, value) of the selected runs' metric series");
  exp->add_option("--format", args->format, "csv (default) or jsonl")->check(CLI::IsMember({"csv", "jsonl"}));
  exp->add_option("-o,--output", args->output, "Write to this file (default: stdout)");
  add_selection_options(exp, args->select);
  exp->callback([args] { cmd_export(*args); });

  ledger->add_subcommand("audit", "Verify the chain and objects, then list runs never replayed, runs whose "
                                  "replay diverged, and runs built with other binaries than the installed ones")
      ->callback([args] { cmd_audit(*args); });

  ledger->add_subcommand("repair", "Move a torn last line (from a crash) aside, as the next append would")
      ->callback([args] { cmd_repair(*args); });
}

}  // namespace groklab::cli
