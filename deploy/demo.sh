#!/usr/bin/env bash
# deploy/demo.sh: the whole Edgepin stack on this machine, in the foreground.
#
#   three Tomcat 10 instances   127.0.0.11-13:8080, the demo app (node name
#                               and a session counter), RemoteIpValve
#   three edgepin-node-proxies  on the same addresses: TLS 8443, HTTP 8081,
#                               peer link 9443, metrics 9180
#   one edgepin-lb              HTTPS 127.0.0.1:443, HTTP 127.0.0.1:80,
#                               stats http://127.0.0.1:8888/
#
# On a fresh Debian 12 machine, as root: installs what is missing
# (deploy/install-deps.sh), builds the two binaries in build-demo/, copies
# conf/ to a temporary directory, makes a throwaway CA with node and peer
# certificates there (deploy/make-pki.sh; the repository's conf/ is not
# touched), starts everything, prints what runs and a curl loop to try, then
# one summary line a second. Ctrl-C or SIGTERM stops everything it started
# and removes the temporary directory; so does any failure, after showing
# the relevant log tails. Running it again works.
#
# The copy of conf/ is used as it is, plus what the demo needs to watch it:
# a metrics listener on each node (node-proxy.json "metrics") and admin
# sockets in the temporary directory (node-proxy.json and lb.json
# "admin_socket"). The summary reads the lb's stats JSON and the
# node-proxies' /metrics.
#
# Environment:
#   EDGEPIN_DEMO_BUILD_DIR  use the binaries already built in this CMake
#                           build directory: no install-deps, no build
#   EDGEPIN_DEMO_SECONDS    stop by itself after N seconds (default: never)
#   EDGEPIN_DEMO_KEEP=1     keep the temporary directory (logs) at the end
#   EDGEPIN_DEMO_TIMEOUT    seconds to wait for each component (default 240)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prog=demo
lb_admin_mode=0600
metrics_port=9180
timeout=${EDGEPIN_DEMO_TIMEOUT:-240}
run_for=${EDGEPIN_DEMO_SECONDS:-}

say() { echo "$prog: $*"; }
die_early() { echo "$prog: $*" >&2; exit 1; }

[[ $timeout =~ ^[1-9][0-9]{0,4}$ ]] || die_early "EDGEPIN_DEMO_TIMEOUT must be a number of seconds"
[ -z "$run_for" ] || [[ $run_for =~ ^[0-9]{1,7}$ ]] || die_early "EDGEPIN_DEMO_SECONDS must be a number of seconds"
[ "$(id -u)" -eq 0 ] || die_early "run me as root (ports 80 and 443, apt-get)"

if [ -n "${EDGEPIN_DEMO_BUILD_DIR:-}" ]; then
  build=$(cd "$EDGEPIN_DEMO_BUILD_DIR" 2>/dev/null && pwd) || die_early "EDGEPIN_DEMO_BUILD_DIR=$EDGEPIN_DEMO_BUILD_DIR is not a directory"
  do_build=0
else
  build="$root/build-demo"
  do_build=1
fi
lb_bin="$build/lb/edgepin-lb"
np_bin="$build/node-proxy/edgepin-node-proxy"

# ----------------------------------------------------------------- cleanup
# Every process we start gets a process group of its own (setsid), so that
# stopping it stops its children too (catalina.sh's JVM). They are stopped
# in reverse order: the lb first (no new clients), then the node-proxies,
# then Tomcat.
state=""
summary_pid=""
names=()
pids=()
logs=()
stopping=0

group_alive() { kill -0 -- "-$1" 2>/dev/null; }

stop_all() {
  local rc=$?
  [ "$stopping" = 1 ] && return
  stopping=1
  trap '' INT TERM  # a second Ctrl-C must not cut the cleanup short
  if [ -n "$summary_pid" ]; then
    kill -TERM "$summary_pid" 2>/dev/null || true
    wait "$summary_pid" 2>/dev/null || true
  fi
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping everything it started"
    local i t
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
      group_alive "${pids[$i]}" || continue
      kill -TERM -- "-${pids[$i]}" 2>/dev/null || true
      # Each one gets 15 s (the daemons' grace period is 10 s).
      for ((t = 0; t < 150; t++)); do group_alive "${pids[$i]}" || break; sleep 0.1; done
      if group_alive "${pids[$i]}"; then
        say "${names[$i]} did not stop in 15 s: killing it"
        kill -KILL -- "-${pids[$i]}" 2>/dev/null || true
      fi
    done
    # Reap them (they are our children) so that no zombie is left either.
    wait 2>/dev/null || true
  fi
  if [ -n "$state" ] && [ -d "$state" ]; then
    if [ "${EDGEPIN_DEMO_KEEP:-0}" = 1 ]; then
      say "logs and state kept in $state"
    else
      rm -rf -- "$state"
    fi
  fi
  [ ${#pids[@]} -gt 0 ] && say "stopped"
  exit "$rc"
}
trap stop_all EXIT
# Asked to stop: a clean stop is a success.
trap 'exit 0' INT TERM

# The last lines of every log, for a failure's diagnosis.
show_logs() {
  local i
  for i in "${!logs[@]}"; do
    [ -s "${logs[$i]}" ] || continue
    echo "----- ${names[$i]}: last lines of ${logs[$i]}" >&2
    tail -n 15 -- "${logs[$i]}" >&2
  done
}

fail() {
  echo "$prog: error: $*" >&2
  show_logs
  exit 1
}

# start NAME COMMAND...: runs COMMAND in its own session, logging to
# $state/logs/NAME.log.
start() {
  local name=$1
  shift
  local log="$state/logs/$name.log"
  setsid "$@" >"$log" 2>&1 </dev/null &
  names+=("$name")
  pids+=("$!")
  logs+=("$log")
}

pid_of() {
  local i
  for i in "${!names[@]}"; do [ "${names[$i]}" = "$1" ] && { echo "${pids[$i]}"; return; }; done
}

# wait_for NAME SECONDS COMMAND...: until COMMAND succeeds; fails early when
# NAME's process has ended, or when SECONDS pass.
wait_for() {
  local name=$1 seconds=$2
  shift 2
  local pid deadline=$((SECONDS + seconds))
  pid=$(pid_of "$name")
  while ! "$@" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || fail "$name exited during startup"
    [ "$SECONDS" -lt "$deadline" ] || fail "$name was not ready within ${seconds}s"
    sleep 0.5
  done
}

# ------------------------------------------------------- dependencies, build
if [ "$do_build" = 1 ]; then
  say "installing what is missing (deploy/install-deps.sh)"
  "$root/deploy/install-deps.sh"
fi
for tool in curl openssl python3 setsid; do
  command -v "$tool" >/dev/null || die_early "$tool not found: run deploy/install-deps.sh"
done
[ -x /usr/share/tomcat10/bin/catalina.sh ] || die_early "Tomcat 10 not found: run deploy/install-deps.sh"

state=$(mktemp -d /tmp/edgepin-demo.XXXXXX)
chmod 755 "$state"  # Tomcat and the daemons only need to traverse it
mkdir -p "$state/logs" "$state/run" "$state/conf"

# ---------------------------------------------------------- configuration
conf="$state/conf"
cp -- "$root"/conf/cluster.json "$root"/conf/lb.json "$root"/conf/node-proxy.json "$conf/"
python3 - "$conf" "$state/run" "$metrics_port" "$lb_admin_mode" <<'PY'
import json, os, sys
conf, run, metrics_port, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def edit(name, change):
    path = os.path.join(conf, name)
    with open(path) as f:
        doc = json.load(f)
    change(doc)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
def node_proxy(doc):
    doc["metrics"] = {"port": metrics_port}
    doc["admin_socket"] = {"path": os.path.join(run, "{node}.sock"), "mode": mode}
def lb(doc):
    doc["admin_socket"] = {"path": os.path.join(run, "lb.sock"), "mode": mode}
edit("node-proxy.json", node_proxy)
edit("lb.json", lb)
PY

# Nodes from cluster.json: "name address tls http peer upstream_address upstream_port".
mapfile -t node_lines < <(python3 - "$conf/cluster.json" <<'PY'
import json, sys
for n in json.load(open(sys.argv[1]))["nodes"]:
    host, port = n["upstream"].rsplit(":", 1)
    print(n["name"], n["address"], n["tls_port"], n["http_port"], n["peer_port"], host, port)
PY
)
[ ${#node_lines[@]} -gt 0 ] || fail "no nodes in conf/cluster.json"
# The lb's listeners from lb.json: "host:port" each.
mapfile -t lb_binds < <(python3 - "$conf/lb.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for f in doc["frontends"]:
    for b in f["bind"]:
        print(b)
if "stats" in doc:
    print(doc["stats"]["bind"])
PY
)

python3 -c 'import json,sys; sys.exit(0 if "stats" in json.load(open(sys.argv[1])) else 1)' "$conf/lb.json" ||
  fail "lb.json has no \"stats\" listener; the demo reads it"
stats_bind=${lb_binds[-1]}

# A taken port is a clear error before anything starts. Each address is
# bound the way the daemons bind it (SO_REUSEADDR), so a port held only by
# connections in TIME_WAIT (the previous run) counts as free.
wanted=("${lb_binds[@]}")
for line in "${node_lines[@]}"; do
  read -r name addr tls http peer up_host up_port <<<"$line"
  wanted+=("$addr:$tls" "$addr:$http" "$addr:$peer" "$addr:$metrics_port" "$up_host:$up_port")
done
if ! busy=$(python3 - "${wanted[@]}" <<'PY'
import socket, sys
busy = []
for spec in sys.argv[1:]:
    host, port = spec.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, int(port)))
    except OSError as e:
        busy.append("%s (%s)" % (spec, e.strerror))
    finally:
        s.close()
print("\n".join(busy))
sys.exit(1 if busy else 0)
PY
); then
  echo "$prog: error: these addresses are in use by another process:" >&2
  echo "$busy" | sed 's/^/  /' >&2
  echo "$prog: stop it (another demo still running?) and try again" >&2
  exit 1
fi

if [ "$do_build" = 1 ]; then
  say "building edgepin-lb and edgepin-node-proxy in $build (a few minutes the first time)"
  if ! { cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEDGEPIN_TESTS=OFF &&
         cmake --build "$build" -j "$(nproc)" --target edgepin-lb edgepin-node-proxy; } >"$state/logs/build.log" 2>&1; then
    tail -n 30 "$state/logs/build.log" >&2
    fail "the build failed (the last lines of its log are above)"
  fi
fi
[ -x "$lb_bin" ] && [ -x "$np_bin" ] || fail "no binaries in $build (lb/edgepin-lb, node-proxy/edgepin-node-proxy)"

say "making a throwaway CA and certificates in $conf (deploy/make-pki.sh)"
"$root/deploy/make-pki.sh" "$conf" >"$state/logs/make-pki.log" 2>&1 || { cat "$state/logs/make-pki.log" >&2; fail "make-pki.sh failed"; }
"$lb_bin" --config-dir "$conf" --check >/dev/null 2>"$state/logs/check.log" || { cat "$state/logs/check.log" >&2; fail "lb.json does not validate"; }
for line in "${node_lines[@]}"; do
  read -r name _ <<<"$line"
  "$np_bin" --config-dir "$conf" --node "$name" --check >/dev/null 2>"$state/logs/check.log" ||
    { cat "$state/logs/check.log" >&2; fail "node-proxy.json does not validate for $name"; }
done

# ------------------------------------------------------------------ start
say "starting ${#node_lines[@]} Tomcat 10 instances (the JVMs take a while)"
for line in "${node_lines[@]}"; do
  read -r name addr tls http peer up_host up_port <<<"$line"
  "$root/deploy/tomcat/make-instance.sh" "$state/tomcat-$name" "$name" "$up_host" "$up_port" -1 \
    >"$state/logs/make-instance-$name.log" 2>&1 ||
    { cat "$state/logs/make-instance-$name.log" >&2; fail "could not make the Tomcat instance for $name"; }
  start "tomcat-$name" env CATALINA_HOME=/usr/share/tomcat10 CATALINA_BASE="$state/tomcat-$name" \
    /usr/share/tomcat10/bin/catalina.sh run
done
for line in "${node_lines[@]}"; do
  read -r name addr tls http peer up_host up_port <<<"$line"
  wait_for "tomcat-$name" "$timeout" curl -sf --max-time 5 "http://$up_host:$up_port/health.jsp"
done

say "starting ${#node_lines[@]} node-proxies"
for line in "${node_lines[@]}"; do
  read -r name _ <<<"$line"
  start "node-proxy-$name" "$np_bin" --config-dir "$conf" --node "$name"
done
# Ready when its own check says Tomcat is up (its health endpoint then
# answers 200, which is what the lb checks) and its peer link reaches every
# other node (until then a request for another node's session would be
# served here, not relayed to its owner).
for line in "${node_lines[@]}"; do
  read -r name addr _ <<<"$line"
  wait_for "node-proxy-$name" "$timeout" \
    bash -c "curl -sf --max-time 5 http://$addr:$metrics_port/metrics >'$state/metrics-$name' &&
             grep -qx 'edgepin_node_tomcat_up 1' '$state/metrics-$name' &&
             ! grep -q '^edgepin_node_peer_up{.* 0\$' '$state/metrics-$name'"
  rm -f -- "$state/metrics-$name"
done

say "starting the lb"
start lb "$lb_bin" --config-dir "$conf"

# Ready when its health checks have marked every node up and a request
# through it gets the demo app.
wait_for lb "$timeout" bash -c "curl -sf --max-time 5 'http://$stats_bind/stats;json' |
  python3 -c 'import json,sys; s=json.load(sys.stdin)[\"servers\"]; sys.exit(0 if s and all(v[\"healthy\"] for v in s) else 1)'"
wait_for lb "$timeout" curl -skf --max-time 5 https://127.0.0.1/health.jsp

# ------------------------------------------------------------------ running
{
  echo
  echo "Edgepin demo is running (state and logs in $state):"
  echo "  edgepin-lb          https://127.0.0.1/   http://127.0.0.1/   stats http://$stats_bind/ (JSON: /stats;json, Prometheus: /metrics)"
  echo "                      pid $(pid_of lb), admin socket $state/run/lb.sock"
  for line in "${node_lines[@]}"; do
    read -r name addr tls http peer up_host up_port <<<"$line"
    printf '  %-19s %s: TLS %s, HTTP %s, peer %s, metrics http://%s:%s/metrics; pid %s, admin socket %s\n' \
      "node-proxy $name" "$addr" "$tls" "$http" "$peer" "$addr" "$metrics_port" "$(pid_of "node-proxy-$name")" \
      "$state/run/$name.sock"
  done
  for line in "${node_lines[@]}"; do
    read -r name addr tls http peer up_host up_port <<<"$line"
    printf '  %-19s http://%s:%s/ (pid %s)\n' "Tomcat $name" "$up_host" "$up_port" "$(pid_of "tomcat-$name")"
  done
  cat <<EOT

Try it: ten requests, each on a new connection and in a new curl process,
with cookies kept like a browser keeps them; the node stays the same and
the session counter goes up:

  rm -f /tmp/edgepin-jar; for i in \$(seq 1 10); do curl -sk -b /tmp/edgepin-jar -c /tmp/edgepin-jar https://127.0.0.1/ | grep -E '^(node|counter)=' | paste -sd' '; done

Without the cookie jar every request is a new user, spread over the nodes:

  for i in \$(seq 1 6); do curl -sk https://127.0.0.1/ | grep '^node='; done

Admin sockets (show info, show stat, show sessions, set server NAME state
drain on the lb, set node state drain on a node-proxy; "help" lists all):

  python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(sys.argv[2].encode()+b"\n"); s.shutdown(socket.SHUT_WR); print(b"".join(iter(lambda: s.recv(65536), b"")).decode(), end="")' $state/run/lb.sock 'show stat'

Ctrl-C stops everything.

EOT
}

# One line a second, from one long-running Python process: the lb's open
# and total client connections, then per node its state in the lb, the
# client connections the lb sent it and the requests it proxied (its own
# health and stats answers left out). It also watches that every process
# we started is alive, and ends after EDGEPIN_DEMO_SECONDS if given.
cat >"$state/summary.py" <<'PY'
import json, os, signal, sys, time, urllib.request

stats_bind, metrics_port, run_for = sys.argv[1], sys.argv[2], int(sys.argv[3] or 0)
procs = [a.split("=", 1) for a in sys.argv[4].split(",")]   # name=pid
nodes = [a.split("=", 1) for a in sys.argv[5].split(",")]   # name=address
signal.signal(signal.SIGINT, lambda *_: sys.exit(130))     # Ctrl-C: no traceback
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

def get(url):
    with urllib.request.urlopen(url, timeout=0.8) as r:
        return r.read().decode()

def node_requests(address):
    values = {}
    for line in get("http://%s:%s/metrics" % (address, metrics_port)).splitlines():
        name, _, value = line.partition(" ")
        if name in ("edgepin_node_requests_total", "edgepin_node_local_responses_total"):
            values[name] = int(float(value))
    return values["edgepin_node_requests_total"] - values["edgepin_node_local_responses_total"]

def line():
    parts = [time.strftime("%H:%M:%S")]
    try:
        lb = json.loads(get("http://%s/stats;json" % stats_bind))
        t = lb["totals"]
        parts.append("lb: %d open, %d total" % (t["current_connections"], t["connections_total"]))
        servers = {s["name"]: s for s in lb["servers"]}
    except Exception as e:  # a slow lb must not end the demo
        parts.append("lb: stats unavailable (%s)" % e)
        servers = {}
    for name, address in nodes:
        s = servers.get(name)
        lb_part = "%s, %d conns" % (s["state"], s["connections_total"]) if s else "?"
        try:
            np_part = "%d reqs" % node_requests(address)
        except Exception:
            np_part = "metrics unavailable"
        parts.append("%s: %s, %s" % (name, lb_part, np_part))
    return " | ".join(parts)

start = time.monotonic()
tick = 0
while True:
    print(line(), flush=True)
    for name, pid in procs:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            print("demo: %s (pid %s) exited" % (name, pid), file=sys.stderr, flush=True)
            sys.exit(3)
    if run_for and time.monotonic() - start >= run_for:
        sys.exit(0)
    # The next whole second after start; a slow round skips, never bunches.
    tick = max(tick + 1, int(time.monotonic() - start) + 1)
    time.sleep(max(0.0, start + tick - time.monotonic()))
PY
node_specs=()
for line in "${node_lines[@]}"; do
  read -r name addr _ <<<"$line"
  node_specs+=("$name=$addr")
done
proc_specs=()
for i in "${!pids[@]}"; do proc_specs+=("${names[$i]}=${pids[$i]}"); done

python3 "$state/summary.py" "$stats_bind" "$metrics_port" "$run_for" \
  "$(IFS=,; echo "${proc_specs[*]}")" "$(IFS=,; echo "${node_specs[*]}")" &
summary_pid=$!
# A signal interrupts this wait at once (and its trap stops everything).
if wait "$summary_pid"; then
  summary_pid=""
  say "$run_for seconds are up"
  exit 0
else
  rc=$?
  summary_pid=""
  [ "$rc" = 3 ] && fail "a process of the demo exited"
  fail "the summary ended with status $rc"
fi
