#!/usr/bin/env bash
# The whole Edgepin test suite, from a clean clone, as root on Debian 12
# (.ci/run runs exactly this). Each stage builds what it needs and runs the
# tests that matter for that build; any failure stops the run non-zero.
#
#   deps      deploy/install-deps.sh (installs only what is missing)
#   build     RelWithDebInfo, everything, -Werror (EDGEPIN_WERROR=ON)
#   fast      ctest -L 'unit|fuzz|bench|packaging|check' in that build: unit
#             tests, fuzz corpus replay, benchmark smoke, cmake --install +
#             cpack, clang-format / clang-tidy / layering checks
#   types     Release, MinSizeRel and Debug builds of the two binaries with
#             -Werror: what a packager's first command does
#   asan      Debug + ASan + UBSan, everything: unit, fuzz replay,
#             integration and end-to-end (real Tomcat) tests. A sanitizer
#             report from any process (the binaries the Python tests start
#             included) fails the stage: reports go to files that are
#             checked after ctest, not to a stderr nobody reads.
#   tsan      RelWithDebInfo + ThreadSanitizer (EDGEPIN_TSAN=ON), the
#             binaries and test tools only: the integration tests labelled
#             "threaded" (several workers, stats across workers, SIGHUP
#             reload and SIGTERM drain under load), reports checked likewise
#   fuzz      clang + libFuzzer, each target EDGEPIN_FUZZ_SECONDS on a copy
#             of its corpus (tests/fuzz/README.md: growing the corpus)
#
# Why this split: the integration and e2e tests dominate the time, so they
# run once, in the build where they catch the most (ASan+UBSan); the normal
# build only runs what is cheap or needs an optimised, uninstrumented build
# (bench, packaging). Every run prints each stage's time at the end; the
# budget is 45 min on 2 cores. Measured 2026-12-08 on the 2-core team
# machine while five other engineers built and tested (load 3-11, so these
# are upper bounds; ccache partly warm for the first two lines only):
#   build   RelWithDebInfo, all targets          6:53
#   fast    unit+fuzz+bench+packaging ~2:00, check_format 0:03,
#           check_layering 0:01, check_tidy 22:38 at -j1 nice 10 under
#           load 11 (~75 files, ~5 s CPU each: ~3-4 min at -j2 idle)
#   types   Release 3:18 (-j2), MinSizeRel ~5:00 (-j1), Debug (-O0) less
#   asan    build, everything, cold 15:55; 7 integration tests 1:21 (clean);
#           e2e: not timed under ASan (e2e_node_proxy_tomcat ~1:30 and
#           e2e_demo several minutes in the normal build)
#   tsan    build, 6 targets 3:47; 7 threaded tests 2:14 (1:25 for 4)
#   fuzz    clang build of the wire library and 4 targets ~1:00, + 4 x 30 s
# On 2 idle cores the whole run is estimated at 35-45 min, most of it the
# asan stage (builds and e2e); a full run was not timed before the first
# landing. If it runs over, EDGEPIN_FUZZ_SECONDS and the types stage are
# the knobs to turn, never the asan stage.
#
# Environment knobs:
#   EDGEPIN_JOBS          parallel build/test jobs (default: CPU count)
#   EDGEPIN_FUZZ_SECONDS  seconds per fuzz target (default 30, 0 skips)
#   EDGEPIN_STAGES        stages to run (default: all of the above, in order)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
jobs=${EDGEPIN_JOBS:-$(nproc)}
fuzz_seconds=${EDGEPIN_FUZZ_SECONDS:-30}
stages=${EDGEPIN_STAGES:-"deps build fast types asan tsan fuzz"}

timings=""
stage_start=0
step() { printf '\n=== %s ===\n' "$*"; }
begin() {
  stage_start=$SECONDS
  step "$*"
}
end() {
  local took=$((SECONDS - stage_start))
  timings+=$(printf '%-6s %3d:%02d' "$1" $((took / 60)) $((took % 60)))$'\n'
}
wanted() { [[ " $stages " == *" $1 "* ]]; }

configure() {  # configure BUILD_DIR CMAKE_ARGS...
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -DEDGEPIN_WERROR=ON "$@" >/dev/null
}

# Runs ctest in BUILD_DIR with the sanitizer runtime options NAME_OPTIONS
# pointing every report into a fresh directory; fails if ctest fails or if
# any process wrote a report (a child that aborted on a finding may have
# been killed by its test without the test noticing).
sanitized_ctest() {  # sanitized_ctest BUILD_DIR CTEST_ARGS...
  local dir=$1
  shift
  local reports="$dir/sanitizer-reports"
  rm -rf "$reports"
  mkdir -p "$reports"
  local status=0
  EDGEPIN_SANITIZER=$(basename "$dir") \
  ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$reports/asan" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan" \
  TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:log_path=$reports/tsan:suppressions=$root/tests/tsan.supp" \
    ctest --test-dir "$dir" --output-on-failure -j "$jobs" "$@" || status=$?
  if [ -n "$(ls -A "$reports")" ]; then
    for f in "$reports"/*; do
      echo "--- sanitizer report $f"
      head -80 "$f"
    done
    echo "sanitizer reports above: FAILED"
    return 1
  fi
  return $status
}

if wanted deps; then
  begin "dependencies"
  "$root/deploy/install-deps.sh"
  end deps
fi

if wanted build; then
  begin "build (RelWithDebInfo, -Werror)"
  configure "$root/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo
  cmake --build "$root/build" -j "$jobs"
  end build
fi

if wanted fast; then
  begin "unit, fuzz replay, bench smoke, packaging, static checks"
  ctest --test-dir "$root/build" --output-on-failure -j "$jobs" -L 'unit|fuzz|bench|packaging|check'
  # The one e2e test whose memory bound needs an uninstrumented build (1 GiB
  # each way through the node-proxy, RSS growth < 8 MiB); ~1:30.
  ctest --test-dir "$root/build" --output-on-failure -R '^e2e_node_proxy_tomcat$'
  end fast
fi

if wanted types; then
  # The packager's command: every CMake build type builds with -Werror (the
  # optimisers of -O3 and -Os warn about code -O2 does not). The two
  # binaries are enough; the tests build in the stages above.
  for type in Release MinSizeRel Debug; do
    begin "build type $type (edgepin-lb, edgepin-node-proxy)"
    configure "$root/build-$type" -DCMAKE_BUILD_TYPE=$type -DEDGEPIN_TESTS=OFF
    cmake --build "$root/build-$type" -j "$jobs" --target edgepin-lb edgepin-node-proxy
    end "$type"
  done
fi

if wanted asan; then
  begin "build (Debug, ASan + UBSan)"
  configure "$root/build-asan" -DCMAKE_BUILD_TYPE=Debug -DEDGEPIN_SANITIZE=ON
  cmake --build "$root/build-asan" -j "$jobs"
  step "unit, fuzz replay, integration and e2e under ASan + UBSan"
  sanitized_ctest "$root/build-asan" -L 'unit|fuzz|integration|e2e'
  end asan
fi

if wanted tsan; then
  begin "build (RelWithDebInfo, ThreadSanitizer): binaries and test tools"
  configure "$root/build-tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGEPIN_TSAN=ON
  cmake --build "$root/build-tsan" -j "$jobs" --target edgepin-lb edgepin-node-proxy \
    edgepin-test-backend edgepin-test-pki edgepin-bench-client edgepin-bench-server
  step "threaded integration tests under ThreadSanitizer"
  # TSan slows the binaries 5-15x; a test that asserts a 300 ms timeout can
  # miss it on a loaded machine (seen: test_lb's tunnel timeout). One retry
  # of a failed test, here only: a race is caught by its report file, which
  # fails the stage whatever the retry says.
  sanitized_ctest "$root/build-tsan" -L threaded --repeat until-pass:2
  end tsan
fi

if wanted fuzz && [ "$fuzz_seconds" != 0 ]; then
  begin "libFuzzer (clang), ${fuzz_seconds}s per target"
  CXX=clang++ configure "$root/build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGEPIN_FUZZ=ON
  targets=$(cd "$root/tests/fuzz/corpus" && ls)
  cmake --build "$root/build-fuzz" -j "$jobs" --target $(for t in $targets; do echo "fuzz_$t"; done)
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
  end fuzz
fi

step "all tests passed; stage times (m:ss)"
printf '%s' "$timings"
printf 'total  %3d:%02d\n' $((SECONDS / 60)) $((SECONDS % 60))
