#!/usr/bin/env bash
# Builds the manifest fuzz target with clang and runs it for a fixed time.
#   tests/fuzz/run_fuzz.sh BUILD_DIR [SECONDS] [CLANGXX]
# Seeds: every tests/manifests/**/*.toml plus a few multi-part inputs; new
# corpus entries go to BUILD_DIR/corpus (never into the source tree). Exits
# non-zero on a crash, a sanitizer report, a leak or a timeout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$1"
seconds="${2:-30}"
cxx="${3:-clang++}"

generator="Unix Makefiles"
command -v ninja >/dev/null 2>&1 && generator="Ninja"
cmake -S "$here" -B "$build" -G "$generator" -DCMAKE_CXX_COMPILER="$cxx" >/dev/null
cmake --build "$build" -- -j2 >/dev/null

seeds="$build/seeds"
rm -rf "$seeds"
mkdir -p "$seeds" "$build/corpus"
find "$here/../manifests" -name '*.toml' -print0 | while IFS= read -r -d '' f; do
  cp "$f" "$seeds/$(echo "$f" | sed 's|.*/manifests/||; s|/|_|g')"
done
# Multi-part seeds: main, a.toml, b.toml, then overrides (NUL-separated).
printf 'include = ["a.toml"]\n[run]\nseed = 1\n\0[task]\nplugin = "test_copy"\n[architecture]\nplugin = "test_linear"\n[optimizer]\nplugin = "test_sgd"\n\0\0optimizer.lr=0.5\0run.seed=1,2,3' >"$seeds/multi_include"
printf 'include = ["a.toml", "b.toml"]\n\0include = ["b.toml"]\n\0include = ["a.toml"]\n' >"$seeds/multi_cycle"
printf '[task]\nplugin = "modular_arithmetic"\n[architecture]\nplugin = "edge"\nname = "x"\nscales = [1, 2.5]\neps = 1e-8\n[optimizer]\nplugin = "adamw"\n[[metrics]]\nplugin = "accuracy"\n[sweep]\n"task.operation" = ["add", "mul"]\n\0\0\0metrics.0.split=train\0architecture.dims=[1,2,3]' >"$seeds/multi_edge"

"$build/fuzz_manifest" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
  -dict="$here/manifest.dict" -artifact_prefix="$build/" -print_final_stats=1 "$build/corpus" "$seeds"
