#!/usr/bin/env bash
# clang-tidy (Debian 14) with the repository's .clang-tidy over every
# production source (common/, lb/, node-proxy/), using the build tree's
# compile_commands.json; every enabled check is an error. First proves on
# a planted use-after-move that the configuration is read and that a
# finding fails, so a broken tool or config cannot pass silently.
# usage: check_tidy.sh SOURCE_DIR BUILD_DIR   (EDGEPIN_JOBS: parallel runs)
set -euo pipefail
root=${1:?usage: check_tidy.sh SOURCE_DIR BUILD_DIR}
build=${2:?usage: check_tidy.sh SOURCE_DIR BUILD_DIR}
jobs=${EDGEPIN_JOBS:-$(nproc)}
tool=$(command -v clang-tidy-14 || command -v clang-tidy)
config="$root/.clang-tidy"
[ -f "$build/compile_commands.json" ] || { echo "check_tidy: no $build/compile_commands.json"; exit 1; }

probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
cat >"$probe/probe.cpp" <<'CPP'
#include <string>
#include <utility>
std::size_t probe(std::string s) {
  std::string t = std::move(s);
  return s.size() + t.size();
}
CPP
if "$tool" --quiet --config-file="$config" "$probe/probe.cpp" -- -std=c++20 >"$probe/out" 2>&1; then
  cat "$probe/out"
  echo "check_tidy: a use after move passed: the configuration is not in effect"
  exit 1
fi
grep -q "bugprone-use-after-move" "$probe/out" || { cat "$probe/out"; echo "check_tidy: probe failed for another reason"; exit 1; }

cd "$root"
mapfile -t files < <(find common lb node-proxy -type f -name '*.cpp' | sort)
[ ${#files[@]} -gt 30 ] || { echo "check_tidy: only ${#files[@]} files found"; exit 1; }
# GCC-only warning flags in the compile commands are not clang-tidy's concern.
status=0
printf '%s\n' "${files[@]}" | xargs -P "$jobs" -n 4 "$tool" --quiet --config-file="$config" \
  -p "$build" --extra-arg=-Wno-unknown-warning-option >"$probe/tidy.out" 2>&1 || status=$?
grep -v -E '^[0-9]+ warnings? (and [0-9]+ errors? )?generated\.$|^Suppressed [0-9]+ warnings|^Use -header-filter|^Found compiler error' \
  "$probe/tidy.out" | head -200 || true
[ $status -eq 0 ] || { echo "check_tidy: findings above (fix them; NOLINT only with a reason)"; exit 1; }
echo "check_tidy: ${#files[@]} files clean"
