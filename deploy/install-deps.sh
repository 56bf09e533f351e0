#!/usr/bin/env bash
# Installs every build and test dependency of Edgepin on Debian 12.
# Idempotent: installs only what is missing and says what it installs.
# Run as root. Used by tests/run.sh and deploy/demo.sh.
set -euo pipefail

PACKAGES=(
  # build
  build-essential g++ cmake pkg-config git dpkg-dev
  libssl-dev libevent-dev nlohmann-json3-dev catch2
  # libFuzzer build
  clang libclang-rt-14-dev
  # source checks in ctest (check_format, check_tidy)
  clang-format clang-tidy
  # test and demo tools
  ca-certificates curl openssl python3 iproute2 procps psmisc
  tomcat10 tomcat10-user haproxy wrk sslscan
  # benchmarks (tests/bench): iperf3 through the balancers, nginx as a contender
  iperf3 nginx-light libnginx-mod-stream
  # HA tests (tests/ha): VRRP pairs in network namespaces, the lbs' track
  # script (curl), systemd-analyze for the units
  keepalived systemd
)

if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: must run as root (apt-get install)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# The Debian tomcat10, haproxy and keepalived packages start system-wide
# services that would hold ports 8080/80 (or run VRRP) and get in the way of
# the tests and the demo, which start their own instances. policy-rc.d stops
# any service start during this install; it is removed again on exit.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  created_policy=1
fi
cleanup() { [ "$created_policy" = 1 ] && rm -f "$policy"; }
trap cleanup EXIT

# Package lists may be missing or stale on a fresh machine.
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

# A service that did start anyway (policy-rc.d ignored) is stopped, so that
# nothing we did not start listens on our ports.
for svc in tomcat10 haproxy keepalived nginx; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl disable --now "$svc" >/dev/null 2>&1 || true
  fi
done
echo "install-deps: done"
