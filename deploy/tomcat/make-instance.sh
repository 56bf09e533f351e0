#!/usr/bin/env bash
# make-instance.sh DIR NAME ADDRESS PORT SHUTDOWN_PORT [JVMROUTE]
#
# Creates a private Tomcat 10 instance (CATALINA_BASE) in DIR for Edgepin's
# tests and demo, with Debian's tomcat10-instance-create:
#   - one HTTP/1.1 connector on ADDRESS:PORT and nothing else (no AJP, no TLS)
#   - the shutdown port SHUTDOWN_PORT on ADDRESS, or -1 to disable it (then
#     stop the JVM with SIGTERM, as tests/e2e/tomcat.py does)
#   - RemoteIpValve trusting 127.0.0.0/8 and ::1 (X-Forwarded-For/-Proto/-Port)
#   - jvmRoute=JVMROUTE on the Engine when given
#   - the demo application (deploy/tomcat/ROOT) as the ROOT context
#   - bin/setenv.sh with -Dedgepin.node=NAME and a small, fast-starting JVM
# DIR is deleted and made again on every run (so a second run gives the
# same result), but only if an earlier run of this script made it and no
# Tomcat is running from it.
#
# Start it in the foreground:
#   CATALINA_HOME=/usr/share/tomcat10 CATALINA_BASE=DIR \
#     /usr/share/tomcat10/bin/catalina.sh run
# It logs to stdout/stderr and to DIR/logs/ (access.log, catalina.*.log).
# Extra JVM options: JAVA_OPTS / CATALINA_OPTS in the environment are added
# after this instance's own, so they win (e.g. CATALINA_OPTS=-Xmx512m).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
prog=$(basename "$0")
marker=.edgepin-tomcat-instance

die() { echo "$prog: $*" >&2; exit 1; }

if [ $# -lt 5 ] || [ $# -gt 6 ]; then
  sed -n '2p' "$0" | sed 's/^# /usage: /' >&2
  exit 2
fi
dir=$1 name=$2 address=$3 port=$4 shutdown_port=$5 jvm_route=${6:-}

# Strict here because NAME ends up in a shell-evaluated JAVA_OPTS; the
# Python configurator checks everything again, ADDRESS included.
[[ $name =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] || die "bad node name '$name'"
[[ $port =~ ^[0-9]{1,5}$ ]] || die "bad HTTP port '$port'"
[[ $shutdown_port =~ ^(-1|[0-9]{1,5})$ ]] || die "bad shutdown port '$shutdown_port'"
[ -z "$jvm_route" ] || [[ $jvm_route =~ ^[A-Za-z0-9_-]{1,64}$ ]] || die "bad jvmRoute '$jvm_route'"
[ -d "$here/ROOT" ] || die "demo application $here/ROOT is missing"
command -v tomcat10-instance-create >/dev/null || die "tomcat10-instance-create not found (apt-get install tomcat10-user)"
[ -x /usr/share/tomcat10/bin/catalina.sh ] || die "/usr/share/tomcat10 not found (apt-get install tomcat10)"

# Everything is checked before anything is deleted or made.
/usr/bin/python3 "$here/configure-instance.py" --check-only --base "$dir" --name "$name" \
  --address "$address" --port "$port" --shutdown-port "$shutdown_port" \
  --jvm-route "$jvm_route"
[[ $dir != *$'\n'* ]] || die "DIR must not contain a newline"

mkdir -p "$(dirname "$dir")"
abs_dir=$(cd "$(dirname "$dir")" && pwd)/$(basename "$dir")

# The PIDs of processes whose command line has the argument
# -Dcatalina.base=DIR (grep -z: arguments are NUL-separated). The pattern
# comes from a file so that grep's own command line does not match it.
running_from() {
  grep -lzxF -f <(printf -- '-Dcatalina.base=%s\n' "$1") /proc/[0-9]*/cmdline 2>/dev/null \
    | sed 's|^/proc/\([0-9]*\)/cmdline$|\1|' || true
}

if [ -e "$abs_dir" ] || [ -L "$abs_dir" ]; then
  [ -f "$abs_dir/$marker" ] || die "$abs_dir exists and was not made by $prog; not deleting it"
  pids=$(running_from "$abs_dir")
  [ -z "$pids" ] || die "Tomcat is running from $abs_dir (pid ${pids//$'\n'/ }); stop it first"
  rm -rf -- "$abs_dir"
fi

# tomcat10-instance-create refuses -1 and asks for ENTER when a port looks
# busy (stdin from /dev/null answers that); both ports are rewritten below.
placeholder_shutdown=$shutdown_port
if [ "$shutdown_port" = -1 ] || [ "$shutdown_port" = "$port" ]; then
  placeholder_shutdown=$(( port == 65535 ? 65534 : port + 1 ))
fi
if ! out=$(tomcat10-instance-create -p "$port" -c "$placeholder_shutdown" "$abs_dir" </dev/null 2>&1) \
   || [ ! -f "$abs_dir/conf/server.xml" ]; then
  echo "$out" >&2
  die "tomcat10-instance-create failed for $abs_dir"
fi
echo "edgepin demo Tomcat instance, node $name; made by deploy/tomcat/$prog" > "$abs_dir/$marker"

/usr/bin/python3 "$here/configure-instance.py" --base "$abs_dir" --name "$name" \
  --address "$address" --port "$port" --shutdown-port "$shutdown_port" \
  --jvm-route "$jvm_route"

# The demo application is the only one (the skeleton has no ROOT, manager or
# docs apps; remove whatever is there in case a later Debian adds one).
rm -rf -- "$abs_dir/webapps"
mkdir -p "$abs_dir/webapps"
cp -r -- "$here/ROOT" "$abs_dir/webapps/ROOT"

# JVM options, chosen for many small instances on a 2-core CI machine:
#   -Xmx128m -Xss512k     the demo app needs little heap or stack
#   -XX:+UseSerialGC      one GC thread, the smallest footprint
#   -XX:TieredStopAtLevel=1  C1 only: far less CPU at startup, less memory;
#                         bulk transfers run slower (README.md: override it
#                         with CATALINA_OPTS=-XX:TieredStopAtLevel=4)
#   -XX:-UsePerfData      no hsperfdata file mapped in /tmp
#   -Xshare:auto          the JDK's class-data sharing archive (the default,
#                         stated so that nobody turns it off by accident)
#   java.security.egd     session ids never wait for the entropy pool
#   EXIT_ON_INIT_FAILURE  exit at once when the port cannot be bound, instead
#                         of running on without a connector
cat > "$abs_dir/bin/setenv.sh" <<EOF
#!/bin/sh
# Written by deploy/tomcat/$prog for node $name; remade on every run.
CATALINA_HOME=/usr/share/tomcat10
. /usr/libexec/tomcat10/tomcat-locate-java.sh
JAVA_OPTS="-Djava.awt.headless=true -Dedgepin.node=$name \${JAVA_OPTS:-}"
CATALINA_OPTS="-Xmx128m -Xss512k -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Xshare:auto -Djava.security.egd=file:/dev/./urandom -Dorg.apache.catalina.startup.EXIT_ON_INIT_FAILURE=true \${CATALINA_OPTS:-}"
EOF
chmod 755 "$abs_dir/bin/setenv.sh"

# Debian's tomcat10-instance-create writes start/stop scripts that run
# Tomcat in the background; Edgepin runs it in the foreground only.
rm -f -- "$abs_dir/bin/startup.sh" "$abs_dir/bin/shutdown.sh"

echo "$prog: instance $name in $abs_dir: http://$address:$port/ (shutdown port $shutdown_port${jvm_route:+, jvmRoute $jvm_route})"
