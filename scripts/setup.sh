#!/usr/bin/env bash
# Installs the Debian 12 packages groklab needs to build, test and run.
# Idempotent and quiet: does nothing (and prints nothing) when all are present.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev libopenblas0-openmp
  libboost-dev libboost-filesystem-dev
  libtomlplusplus-dev libxxhash-dev catch2 libspdlog-dev libfmt-dev
  libcli11-dev nlohmann-json3-dev
  clang libclang-rt-14-dev
  python3-torch
  chromium  # tests/test_report.cpp renders the HTML report in it (headless)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "groklab setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
