#!/usr/bin/env bash
# The whole Edgepin test suite, from a clean clone, as root on Debian 12:
#   1. installs missing dependencies (deploy/install-deps.sh)
#   2. builds and runs every test through ctest (unit, fuzz corpus replay,
#      integration, end-to-end with real Tomcat)
#   3. builds again with ASan+UBSan and reruns the unit tests and fuzz corpora
#   4. builds the libFuzzer targets with clang and runs each for a bounded time
# Exits non-zero on any failure. Environment knobs:
#   EDGEPIN_JOBS          parallel build/test jobs (default: CPU count)
#   EDGEPIN_FUZZ_SECONDS  seconds per fuzz target (default 20, 0 skips)
#   EDGEPIN_SKIP_ASAN=1   skip the sanitizer pass (local iteration only)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${EDGEPIN_JOBS:-$(nproc)}
fuzz_seconds=${EDGEPIN_FUZZ_SECONDS:-20}

step() { printf '\n=== %s ===\n' "$*"; }

step "dependencies"
"$root/deploy/install-deps.sh"

step "build (RelWithDebInfo)"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$root/build" -j "$jobs"

step "tests"
ctest --test-dir "$root/build" --output-on-failure -j "$jobs"

if [ "${EDGEPIN_SKIP_ASAN:-0}" != 1 ]; then
  step "build (ASan + UBSan)"
  cmake -S "$root" -B "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DEDGEPIN_SANITIZE=ON >/dev/null
  cmake --build "$root/build-asan" -j "$jobs"
  step "tests under ASan + UBSan"
  # Unit tests and the fuzz corpora run under the sanitizers; the
  # integration and end-to-end tests run once, in the normal build.
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir "$root/build-asan" --output-on-failure -j "$jobs" -L 'unit|fuzz'
fi

if [ "$fuzz_seconds" != 0 ]; then
  step "libFuzzer (clang), ${fuzz_seconds}s per target"
  CXX=clang++ cmake -S "$root" -B "$root/build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DEDGEPIN_FUZZ=ON -DEDGEPIN_TESTS=ON >/dev/null
  targets=$(cd "$root/tests/fuzz/corpus" && ls)
  for t in $targets; do cmake --build "$root/build-fuzz" -j "$jobs" --target "fuzz_$t"; done
  for t in $targets; do
    # Work on a copy: new inputs the fuzzer finds must not dirty the tree.
    work=$(mktemp -d)
    cp -r "$root/tests/fuzz/corpus/$t/." "$work/"
    bin=$(find "$root/build-fuzz" -name "fuzz_$t" -type f -perm -u+x | head -1)
    echo "fuzz_$t: ${fuzz_seconds}s"
    # -max_len keeps the 64 KiB TooLarge seeds from slowing every mutation.
    if ! "$bin" -max_total_time="$fuzz_seconds" -max_len=16384 -print_final_stats=0 "$work" >"$work.log" 2>&1; then
      tail -50 "$work.log"
      echo "fuzz_$t: FAILED (crash input saved in the log above)"
      exit 1
    fi
    tail -1 "$work.log"
    rm -rf "$work" "$work.log"
  done
fi

step "all tests passed"
