#!/usr/bin/python3
"""edgepin-lb against HAProxy (mode tcp), side by side in one run.

    /usr/bin/python3 tests/bench/bench_lb.py --build-dir build --out /tmp/bench.json
    /usr/bin/python3 tests/bench/bench_lb.py --build-dir build --smoke   # ~10 s, ctest bench_smoke

One topology serves both balancers, on loopback: three plain-TCP backends
(edgepin-bench-server: ECHO, SOURCE, STATS) and three TLS backends
(edgepin-test-backend --mode tls, ECDSA P-256, expecting PROXY v2). Each
balancer has three frontends with the same roles:
  tcp      plain relay to the plain backends, no PROXY header;
  tcp_pp2  the same with a PROXY v2 header to the backend;
  tls      ClientHello inspection and the SSL session-ID stick table
           (HAProxy: the recipe of docs/stickiness.md), PROXY v2 to the TLS
           backends.
Same thread count, round robin, timeouts, retries, maxconn and one TCP
health check per node every 2 s in both (see write_config of each).

Each measurement runs for both balancers, alternating, --reps times; the
table shows medians and the Edgepin/HAProxy ratio, the JSON file (--out)
every raw number. Nothing here asserts a speed: the checks are about
correctness (every byte relayed and verified, counts that add up), and a
failed check makes the run exit 1 after the table and JSON are written.
--smoke shrinks every size and duration so the whole run takes seconds.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import benchlib as b

t = b.t

ROLES = ("tcp", "tcp_pp2", "tls")
NODES = 3
SNI = "bench.edgepin.test"

# What both balancers are configured with; the two write_config methods
# translate these into each product's syntax.
TIMEOUTS_MS = {"connect": 5000, "client": 50000, "server": 50000, "tunnel": 3600000, "queue": 5000}
RETRIES = 3
MAXCONN = 8192
CHECK = {"interval_ms": 2000, "timeout_ms": 1000, "rise": 2, "fall": 3}
INSPECT_TIMEOUT_MS = 5000
STICK_SIZE = 100000
STICK_EXPIRE_S = 1800


# ----------------------------------------------------------------- topology

class Topology:
    """The backends both balancers share."""

    def __init__(self, workdir, server_bin):
        self.workdir = workdir
        self.server_bin = server_bin
        self.plain = []  # edgepin_testlib.Proc, port
        self.tls = []    # edgepin_testlib.Backend

    def start(self):
        pki = t.make_pki(os.path.join(self.workdir, "pki"), names=("backend",), key_type="ec")
        for i in range(1, NODES + 1):
            name = "node%d" % i
            proc = t.Proc([self.server_bin, "--listen", "127.0.0.1:0", "--name", name,
                           "--max-conns", "8192"], "bench-server-" + name, self.workdir)
            port = int(proc.wait_for_stdout_line("listening ", timeout=15).split()[1])
            self.plain.append((proc, port))
            # The test backend's thread per connection is fine here: a TLS
            # handshake costs far more than starting a thread. --proxy v2
            # refuses a connection without the header, so every completed
            # handshake also proves the balancer sent one.
            self.tls.append(t.start_backend(self.workdir, name, mode="tls", cert=pki.nodes["backend"],
                                            proxy="v2", extra_args=["--max-conns", "2048"]))

    def nodes(self):
        """[(name, plain_port, tls_port)] in node order."""
        return [("node%d" % i, plain[1], tls.port)
                for i, (plain, tls) in enumerate(zip(self.plain, self.tls), start=1)]

    def stats(self):
        """STATS of every plain backend, asked directly: [{counter: int,
        'proxy_dst_ports': {port: count}}]."""
        out = []
        for proc, port in self.plain:
            with t.tcp_connect("127.0.0.1", port, timeout=10) as s:
                line = t.exchange(s, b"STATS\n", half_close=False, timeout=10).data.decode().strip()
            fields = dict(kv.split("=", 1) for kv in line.split(" "))
            parsed = {k: int(v) for k, v in fields.items() if k not in ("name", "proxy_dst_ports")}
            parsed["name"] = fields["name"]
            ports = {}
            if fields["proxy_dst_ports"] != "-":
                for item in fields["proxy_dst_ports"].split(","):
                    port_s, count = item.split(":")
                    ports[int(port_s)] = int(count)
            parsed["proxy_dst_ports"] = ports
            out.append(parsed)
        return out

    def stop(self):
        """Stops every backend. Returns {name: exit status}."""
        status = {}
        for proc, _ in self.plain:
            status[proc.name] = proc.stop()
        for backend in self.tls:
            status[backend.proc.name] = backend.proc.stop()
        return status


def stats_delta(before, after):
    """Per-backend differences of the counters, and of PROXY headers per
    destination port."""
    out = []
    for x, y in zip(before, after):
        d = {k: y[k] - x[k] for k in y if isinstance(y[k], int)}
        d["name"] = y["name"]
        d["proxy_dst_ports"] = {p: c - x["proxy_dst_ports"].get(p, 0) for p, c in y["proxy_dst_ports"].items()
                                if c - x["proxy_dst_ports"].get(p, 0)}
        out.append(d)
    return out


# --------------------------------------------------------------- contenders

class EdgepinLb(b.Contender):
    key = "edgepin"
    label = "Edgepin"

    def __init__(self, workdir, topology, binary, threads, access_log):
        super().__init__(os.path.join(workdir, "edgepin"))
        os.makedirs(self.workdir, exist_ok=True)
        self.topology = topology
        self.binary = binary
        self.threads = threads
        self.access_log = access_log

    def write_config(self):
        conf = os.path.join(self.workdir, "conf")
        os.makedirs(conf, exist_ok=True)
        nodes = [{"name": name, "tag": i, "address": "127.0.0.1", "http_port": plain, "tls_port": tls,
                  "peer_port": t.free_port(), "weight": 100}
                 for i, (name, plain, tls) in enumerate(self.topology.nodes(), start=1)]
        cluster = {"cluster": {"name": "bench", "affinity": {"mode": "none"}}, "nodes": nodes}

        def frontend(role, mode, server_port, proxy):
            fe = {"name": role, "mode": mode, "bind": ["127.0.0.1:%d" % self.ports[role]],
                  "server_port": server_port, "proxy_protocol": proxy}
            if mode == "tls":
                fe["inspect"] = {"timeout_ms": INSPECT_TIMEOUT_MS, "on_failure": "balance"}
            return fe

        lb = {"threads": self.threads,
              "frontends": [frontend("tcp", "tcp", "http", "none"),
                            frontend("tcp_pp2", "tcp", "http", "v2"),
                            frontend("tls", "tls", "tls", "v2")],
              "balance": {"algorithm": "roundrobin"},
              "stick_table": {"size": STICK_SIZE, "expire_s": STICK_EXPIRE_S},
              "retries": RETRIES, "redispatch": True,
              "timeouts": {k + "_ms": v for k, v in TIMEOUTS_MS.items()},
              "maxconn": MAXCONN,
              "health_check": dict(CHECK, type="tcp", port="http"),
              # edgepin-lb (at this commit) writes its per-connection line
              # at level info whatever access_log says; "warning" keeps it
              # quiet like a HAProxy without `log`, and still shows server
              # state changes.
              "log": {"level": "info" if self.access_log else "warning", "access_log": self.access_log}}
        with open(os.path.join(conf, "cluster.json"), "w") as f:
            json.dump(cluster, f, indent=1)
        with open(os.path.join(conf, "lb.json"), "w") as f:
            json.dump(lb, f, indent=1)
        return conf

    def start(self):
        self.ports = {role: t.free_port() for role in ROLES}
        conf = self.write_config()
        self.proc = t.Proc([self.binary, "--config-dir", conf], "edgepin-lb", self.workdir)
        for port in self.ports.values():
            t.wait_for_port("127.0.0.1", port, timeout=15, proc=self.proc)

    def version(self):
        r = subprocess.run([self.binary, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=10)
        return r.stdout.decode("utf-8", "replace").strip().splitlines()[0] if r.stdout else "?"


class Haproxy(b.Contender):
    key = "haproxy"
    label = "HAProxy"

    def __init__(self, workdir, topology, binary, threads, access_log):
        super().__init__(os.path.join(workdir, "haproxy"))
        os.makedirs(self.workdir, exist_ok=True)
        self.topology = topology
        self.binary = binary
        self.threads = threads
        self.access_log = access_log

    def write_config(self):
        def ms(v):
            return "%dms" % v

        check = "check inter %s rise %d fall %d" % (ms(CHECK["interval_ms"]), CHECK["rise"], CHECK["fall"])
        lines = [
            "global",
            "    nbthread %d" % self.threads,
            "    maxconn %d" % MAXCONN,
        ]
        if self.access_log:
            lines.append("    log stderr format raw local0 info")
        lines += [
            "",
            "defaults",
            "    mode tcp",
            "    maxconn %d" % MAXCONN,
            "    timeout connect %s" % ms(TIMEOUTS_MS["connect"]),
            "    timeout client %s" % ms(TIMEOUTS_MS["client"]),
            "    timeout server %s" % ms(TIMEOUTS_MS["server"]),
            "    timeout tunnel %s" % ms(TIMEOUTS_MS["tunnel"]),
            "    timeout queue %s" % ms(TIMEOUTS_MS["queue"]),
            "    timeout check %s" % ms(CHECK["timeout_ms"]),
            "    retries %d" % RETRIES,
            "    option redispatch",
        ]
        if self.access_log:
            lines += ["    log global", "    option tcplog"]
        for role in ROLES:
            lines += ["", "frontend %s" % role,
                      "    bind 127.0.0.1:%d" % self.ports[role],
                      "    default_backend be_%s" % role]
        # be_tcp checks each node once; the other backends track it, as
        # edgepin-lb keeps one health state per node.
        lines += ["", "backend be_tcp", "    balance roundrobin"]
        for name, plain, _ in self.topology.nodes():
            lines.append("    server %s 127.0.0.1:%d %s" % (name, plain, check))
        lines += ["", "backend be_tcp_pp2", "    balance roundrobin"]
        for name, plain, _ in self.topology.nodes():
            lines.append("    server %s 127.0.0.1:%d send-proxy-v2 track be_tcp/%s" % (name, plain, name))
        # The SSL session-ID recipe (docs/stickiness.md), with tcp-response
        # inspect-delay, without which store-response stores nothing.
        lines += ["", "backend be_tls",
                  "    balance roundrobin",
                  "    stick-table type binary len 32 size %d expire %ds" % (STICK_SIZE, STICK_EXPIRE_S),
                  "    acl clienthello req_ssl_hello_type 1",
                  "    acl serverhello rep_ssl_hello_type 2",
                  "    tcp-request inspect-delay %s" % ms(INSPECT_TIMEOUT_MS),
                  "    tcp-request content accept if clienthello",
                  "    tcp-response inspect-delay %s" % ms(INSPECT_TIMEOUT_MS),
                  "    tcp-response content accept if serverhello",
                  "    stick on payload_lv(43,1) if clienthello",
                  "    stick store-response payload_lv(43,1) if serverhello"]
        for name, _, tls in self.topology.nodes():
            lines.append("    server %s 127.0.0.1:%d send-proxy-v2 track be_tcp/%s" % (name, tls, name))
        path = os.path.join(self.workdir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self):
        self.ports = {role: t.free_port() for role in ROLES}
        cfg = self.write_config()
        check = subprocess.run([self.binary, "-c", "-q", "-f", cfg], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30)
        if check.returncode != 0:
            raise RuntimeError("haproxy -c rejects %s:\n%s" % (cfg, check.stdout.decode("utf-8", "replace")))
        # -db: foreground, one process (no master-worker), so the PID we
        # sample is the one doing the work.
        self.proc = t.Proc([self.binary, "-db", "-f", cfg], "haproxy", self.workdir)
        for port in self.ports.values():
            t.wait_for_port("127.0.0.1", port, timeout=15, proc=self.proc)

    def version(self):
        r = subprocess.run([self.binary, "-v"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=10)
        return r.stdout.decode("utf-8", "replace").strip().splitlines()[0] if r.stdout else "?"


def wait_relaying(contender, timeout=30):
    """Waits until every frontend of `contender` relays end to end: an echo
    through tcp and tcp_pp2, a TLS handshake through tls (health checks may
    hold servers down for a few seconds after start)."""
    def echo_ok(port):
        try:
            with t.tcp_connect("127.0.0.1", port, timeout=2) as s:
                return t.exchange(s, b"ECHO\nping", half_close=True, timeout=2).data == b"ping"
        except (OSError, TimeoutError):
            return False

    def tls_ok(port):
        try:
            with t.tls_connect("127.0.0.1", port, sni=SNI, timeout=2):
                return True
        except (OSError, TimeoutError):
            return False

    for role in ROLES:
        probe = tls_ok if role == "tls" else echo_ok
        b.wait_until(lambda: probe(contender.ports[role]), timeout,
                     "%s to relay through its %s frontend" % (contender.label, role), step=0.2)


# ------------------------------------------------------------- measurements

class Bench:
    """The measurements, each returning one result dict per run."""

    def __init__(self, args, workdir, topology, client_bin, checks):
        self.args = args
        self.workdir = workdir
        self.topology = topology
        self.client = client_bin
        self.checks = checks
        self.runs = 0
        # contender key -> VmRSS (KiB) right after start: the baseline of
        # the memory per held connection.
        self.start_rss_kib = {}

    def _client(self, contender, mode, args, timeout):
        self.runs += 1
        return b.run_client(self.client, mode, args, self.workdir,
                            "client-%s-%s-%d" % (mode, contender.key, self.runs), timeout)

    def _check_clean(self, what, contender, result):
        self.checks.check(result["failed"] == 0, "%s via %s: no connection failed (%s)"
                          % (what, contender.label, result["failures"]))
        # The client exits 1 only when a connection failed; 1 without a
        # failure is a sanitizer report (or another abnormal end).
        self.checks.check(result["exit"] == (1 if result["failed"] else 0),
                          "%s via %s: the client exited %d" % (what, contender.label, result["exit"]))

    def rss(self, contender, _rep):
        s = contender.sample()
        self.start_rss_kib.setdefault(contender.key, s.rss_kib)
        return {"rss_mib": s.rss_kib / 1024.0, "summary": "%.1f MiB" % (s.rss_kib / 1024.0)}

    def conn_rate(self, role):
        def run(contender, _rep):
            a = self.args
            port = contender.ports[role]
            stats0 = self.topology.stats()
            cpu0 = contender.sample().cpu_s
            r = self._client(contender, "rate", [
                "--connect", "127.0.0.1:%d" % port, "--concurrency", a.concurrency,
                "--duration-ms", int(a.duration * 1000), "--payload", a.payload,
                "--conn-timeout-ms", a.conn_timeout_ms], timeout=a.duration + a.conn_timeout_ms / 1000 + 30)
            cpu = contender.sample().cpu_s - cpu0
            delta = stats_delta(stats0, self.topology.stats())
            n = r["connections"]
            echo = [d["echo"] for d in delta]
            proxied = sum(d["proxy_dst_ports"].get(port, 0) for d in delta)
            what = "conn_rate %s" % role
            self._check_clean(what, contender, r)
            self.checks.check(n > 0, "%s via %s: connections completed (%d)" % (what, contender.label, n))
            self.checks.check(sum(echo) == n, "%s via %s: backends saw exactly the %d connections (%s)"
                              % (what, contender.label, n, echo))
            self.checks.check(all(e > 0 for e in echo), "%s via %s: every backend got connections (%s)"
                              % (what, contender.label, echo))
            expect_proxied = n if role == "tcp_pp2" else 0
            self.checks.check(proxied == expect_proxied and sum(d["proxy_errors"] for d in delta) == 0,
                              "%s via %s: %d PROXY v2 headers for the frontend's address (got %d)"
                              % (what, contender.label, expect_proxied, proxied))
            r.update({"cpu_s": cpu, "cpu_us_per_conn": cpu * 1e6 / n if n else None,
                      "backend_echo": echo, "backend_proxy_headers": proxied,
                      "summary": "%.0f conn/s, %.1f us CPU/conn, p99 %.2f ms"
                                 % (r["rate"], cpu * 1e6 / n if n else 0, r["latency_p99_us"] / 1000)})
            return r
        return run

    def tls_rate(self, contender, _rep):
        a = self.args
        cpu0 = contender.sample().cpu_s
        r = self._client(contender, "tls", [
            "--connect", "127.0.0.1:%d" % contender.ports["tls"], "--concurrency", a.tls_concurrency,
            "--duration-ms", int(a.duration * 1000), "--conn-timeout-ms", a.conn_timeout_ms,
            "--tls-version", a.tls_version, "--sni", SNI], timeout=a.duration + a.conn_timeout_ms / 1000 + 30)
        cpu = contender.sample().cpu_s - cpu0
        n = r["handshakes"]
        self._check_clean("tls_handshakes", contender, r)
        self.checks.check(n > 0 and r["failures"]["resumed"] == 0,
                          "tls_handshakes via %s: %d full handshakes (TLS %s), none resumed"
                          % (contender.label, n, r["version"]))
        r.update({"cpu_s": cpu, "cpu_us_per_handshake": cpu * 1e6 / n if n else None,
                  "summary": "%.0f handshakes/s, %.1f us CPU each" % (r["rate"], cpu * 1e6 / n if n else 0)})
        return r

    def stream(self, streams, bytes_per_stream):
        def run(contender, _rep):
            stats0 = self.topology.stats()
            cpu0 = contender.sample().cpu_s
            r = self._client(contender, "stream", [
                "--connect", "127.0.0.1:%d" % contender.ports["tcp"], "--streams", streams,
                "--bytes", bytes_per_stream, "--timeout-ms", int(self.args.stream_timeout * 1000)],
                timeout=self.args.stream_timeout + 30)
            cpu = contender.sample().cpu_s - cpu0
            delta = stats_delta(stats0, self.topology.stats())
            total = streams * bytes_per_stream
            what = "stream %dx%d" % (streams, bytes_per_stream)
            self._check_clean(what, contender, r)
            self.checks.check(r["bytes"] == total, "%s via %s: client received and verified %d of %d bytes"
                              % (what, contender.label, r["bytes"], total))
            self.checks.check(sum(d["source"] for d in delta) == streams
                              and sum(d["bytes_out"] for d in delta) == total,
                              "%s via %s: backends sent exactly %d streams, %d bytes"
                              % (what, contender.label, streams, total))
            gib = r["bytes"] / b.GIB
            r.update({"cpu_s": cpu, "cpu_s_per_gib": cpu / gib if gib else None,
                      "summary": "%.2f Gbit/s, %.2f CPU s/GiB" % (r["gbit_per_s"], cpu / gib if gib else 0)})
            return r
        return run

    def hold(self, contender, _rep):
        n = self.args.hold
        # The previous repetition's connections close asynchronously: wait
        # until the backends have let them go, so neither the balancer's
        # memory nor the backends' count still includes them.
        b.wait_until(lambda: sum(s["active"] for s in self.topology.stats()) < NODES * 2, 60,
                     "the backends to close the previous connections", step=0.2)
        before = contender.sample().rss_kib
        # Memory freed by an earlier repetition is reused by the next one,
        # so the growth is measured from the RSS right after start.
        baseline = self.start_rss_kib.get(contender.key, before)
        stats0 = self.topology.stats()
        self.runs += 1
        with b.HoldClient(self.client, contender.ports["tcp"], n, self.workdir,
                          "client-hold-%s-%d" % (contender.key, self.runs)) as hc:
            ready = hc.wait_ready()
            # Let the balancer settle (lazy timers, buffers released after
            # the first exchange) before reading its memory.
            time.sleep(0.5)
            held = contender.sample().rss_kib
            active = sum(s["active"] for s in self.topology.stats())
            final = hc.release()
        self._check_clean("hold %d" % n, contender, final)
        self.checks.check(ready["ready"] == n,
                          "hold %d via %s: all connections established and held (%s)"
                          % (n, contender.label, final))
        # The backends hold one end of every relayed connection (health
        # checks may add a few).
        opened = active - sum(s["active"] for s in stats0)
        self.checks.check(opened >= n, "hold %d via %s: backends held %d relayed connections"
                          % (n, contender.label, opened))
        per_conn = (held - baseline) / n
        return {"rss_before_mib": before / 1024.0, "rss_start_mib": baseline / 1024.0, "rss_mib": held / 1024.0,
                "kib_per_conn": per_conn, "connections": n, "client": final,
                "summary": "%.1f MiB with %d idle (%.1f KiB/conn over the start)" % (held / 1024.0, n, per_conn)}


# --------------------------------------------------------------------- main

def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build-dir", default="build", help="CMake build directory (default: build)")
    p.add_argument("--out", help="write every raw number as JSON to this file")
    p.add_argument("--smoke", action="store_true",
                   help="tiny durations and sizes; fail if a balancer relays anything wrong")
    p.add_argument("--reps", type=int, help="repetitions per measurement and balancer (default 3)")
    p.add_argument("--threads", type=int, default=1, help="worker threads of both balancers (default 1)")
    p.add_argument("--duration", type=float, help="seconds per rate run (default 5)")
    p.add_argument("--concurrency", type=int, help="rate: connections in flight (default 32)")
    p.add_argument("--payload", type=int, default=64, help="rate: bytes echoed per connection (default 64)")
    p.add_argument("--tls-concurrency", type=int, help="TLS handshakes in flight (default 16)")
    p.add_argument("--tls-version", choices=("1.2", "1.3"), default="1.3")
    p.add_argument("--stream-bytes", type=int, help="bytes of the single stream (default 1 GiB)")
    p.add_argument("--parallel-streams", type=int, default=16, help="streams of the parallel run (default 16)")
    p.add_argument("--parallel-bytes", type=int, help="total bytes of the parallel run (default 1 GiB)")
    p.add_argument("--hold", type=int, help="idle connections held for the memory reading (default 1000)")
    p.add_argument("--access-log", action="store_true",
                   help="both balancers log one line per connection (default: neither does)")
    p.add_argument("--only", help="comma-separated measurements to run (default: all): "
                   "conn_rate_tcp,conn_rate_pp2,tls_handshakes,stream_1,stream_parallel,hold")
    p.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    p.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    a = p.parse_args(argv)
    smoke = a.smoke
    defaults = {"reps": 1 if smoke else 3, "duration": 0.3 if smoke else 5.0,
                "concurrency": 8 if smoke else 32, "tls_concurrency": 4 if smoke else 16,
                "stream_bytes": 16 * b.MIB if smoke else b.GIB,
                "parallel_bytes": 16 * b.MIB if smoke else b.GIB,
                "hold": 50 if smoke else 1000}
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    # Generous per-connection deadline: a timeout is a stall, never "slow".
    a.conn_timeout_ms = 30000 if smoke else 10000
    a.stream_timeout = 300.0
    if a.reps < 1 or a.threads < 1 or a.parallel_streams < 1:
        p.error("--reps, --threads and --parallel-streams must be at least 1")
    return a


MEASUREMENTS = ("conn_rate_tcp", "conn_rate_pp2", "tls_handshakes", "stream_1", "stream_parallel", "hold")


def main(argv):
    args = parse_args(argv)
    only = set(args.only.split(",")) if args.only else set(MEASUREMENTS)
    unknown = only - set(MEASUREMENTS)
    if unknown:
        print("unknown measurement(s): %s" % ", ".join(sorted(unknown)), file=sys.stderr)
        return 2
    build = os.path.abspath(args.build_dir)
    lb_bin = b.find_binary("EDGEPIN_LB", build, "lb/edgepin-lb")
    b.find_binary("EDGEPIN_TEST_BACKEND", build, "tests/edgepin-test-backend")
    b.find_binary("EDGEPIN_TEST_PKI", build, "tests/edgepin-test-pki")
    client_bin = b.find_binary("EDGEPIN_BENCH_CLIENT", build, "tests/edgepin-bench-client")
    server_bin = b.find_binary("EDGEPIN_BENCH_SERVER", build, "tests/edgepin-bench-server")
    if not os.access(args.haproxy, os.X_OK):
        print("haproxy not found (%s): install Debian's haproxy or pass --haproxy" % args.haproxy, file=sys.stderr)
        return 2
    b.raise_fd_limit()

    def log(msg):
        print(msg, flush=True)

    workdir = tempfile.mkdtemp(prefix="edgepin-bench-")
    checks = b.Checks()
    topology = Topology(workdir, server_bin)
    contenders = [EdgepinLb(workdir, topology, lb_bin, args.threads, args.access_log),
                  Haproxy(workdir, topology, args.haproxy, args.threads, args.access_log)]
    meta = b.host_meta(build)
    # The commit says what the tree was; a binary may be older than it.
    meta["binaries"] = {os.path.basename(p): {"path": p, "built": time.strftime(
        "%Y-%m-%dT%H:%M:%S%z", time.localtime(os.path.getmtime(p)))}
        for p in (lb_bin, client_bin, server_bin, os.environ["EDGEPIN_TEST_BACKEND"])}
    meta.update({"smoke": args.smoke, "threads": args.threads, "reps": args.reps,
                 "args": {k: v for k, v in vars(args).items()}})
    report = b.Report(contenders, meta)
    started = time.monotonic()
    try:
        log("work directory: %s" % workdir)
        topology.start()
        for c in contenders:
            c.start()
        for c in contenders:
            wait_relaying(c)
        bench = Bench(args, workdir, topology, client_bin, checks)
        a = args

        def section(name, description, metrics, measure):
            log("%s: %s" % (name, description))
            report.add(name, description, metrics, b.alternate(contenders, a.reps, measure, log))

        # Memory first, before any load has grown a pool or a buffer.
        section("rss_idle_start", "VmRSS right after start, no connection yet",
                [b.Metric("rss_mib", "MiB", "lower")], lambda c, rep: bench.rss(c, rep))
        # Then idle connections, while the heap is still the start-up one.
        if "hold" in only:
            section("hold", "VmRSS with %d idle relayed connections" % a.hold,
                    [b.Metric("rss_mib", "MiB", "lower"), b.Metric("kib_per_conn", "KiB/conn", "lower")],
                    bench.hold)
        # A short unmeasured run warms both up (page faults, lazy
        # allocations) so the first measured repetition is not the odd one.
        for c in contenders:
            b.run_client(client_bin, "rate", ["--connect", "127.0.0.1:%d" % c.ports["tcp"], "--concurrency", 8,
                                              "--duration-ms", 300], workdir, "warmup-" + c.key, 60)
        rate_metrics = [b.Metric("rate", "conn/s", "higher", "%.0f"),
                        b.Metric("cpu_us_per_conn", "us CPU/conn", "lower"),
                        b.Metric("latency_p50_us", "us", "lower", "%.0f"),
                        b.Metric("latency_p99_us", "us", "lower", "%.0f")]
        if "conn_rate_tcp" in only:
            section("conn_rate_tcp", "new connections/s: connect, echo %d bytes, close; %d in flight"
                    % (a.payload, a.concurrency), rate_metrics, bench.conn_rate("tcp"))
        if "conn_rate_pp2" in only:
            section("conn_rate_pp2", "the same with a PROXY v2 header to the backend",
                    rate_metrics, bench.conn_rate("tcp_pp2"))
        if "tls_handshakes" in only:
            section("tls_handshakes", "full TLS %s handshakes/s through ClientHello inspection and the "
                    "stick table; %d in flight" % (a.tls_version, a.tls_concurrency),
                    [b.Metric("rate", "handshakes/s", "higher", "%.0f"),
                     b.Metric("cpu_us_per_handshake", "us CPU/handshake", "lower"),
                     b.Metric("latency_p99_us", "us", "lower", "%.0f")], bench.tls_rate)
        stream_metrics = [b.Metric("gbit_per_s", "Gbit/s", "higher", "%.2f"),
                          b.Metric("cpu_s_per_gib", "CPU s/GiB", "lower", "%.3f")]
        if "stream_1" in only:
            section("stream_1", "one stream of %d bytes (backend to client)" % a.stream_bytes,
                    stream_metrics, bench.stream(1, a.stream_bytes))
        if "stream_parallel" in only:
            per = a.parallel_bytes // a.parallel_streams
            section("stream_parallel", "%d streams of %d bytes at once" % (a.parallel_streams, per),
                    stream_metrics, bench.stream(a.parallel_streams, per))
        section("rss_idle_end", "VmRSS once every connection has closed",
                [b.Metric("rss_mib", "MiB", "lower")], lambda c, rep: bench.rss(c, rep))
    finally:
        statuses = {}
        for c in contenders:
            statuses[c.key] = c.stop()
        statuses.update(topology.stop())
        if args.keep:
            log("kept %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    # A clean SIGTERM exit of what we built (HAProxy's own status is its
    # business).
    for name in ["edgepin"] + ["bench-server-node%d" % i for i in range(1, NODES + 1)]:
        checks.check(statuses.get(name) == 0, "%s exited 0 on SIGTERM (got %s)" % (name, statuses.get(name)))

    meta["loadavg_end"] = os.getloadavg()
    meta["wall_s"] = round(time.monotonic() - started, 1)
    print()
    print("threads=%d reps=%d (median shown) load average %.1f -> %.1f, %d CPUs%s"
          % (args.threads, args.reps, meta["loadavg_start"][0], meta["loadavg_end"][0], meta["cpus"],
             "  [SMOKE: sizes too small to mean anything]" if args.smoke else ""))
    print(report.table())
    if args.out:
        report.write_json(args.out, checks)
        print("raw results: %s" % args.out)
    failed = checks.failures()
    print("checks: %d passed, %d failed" % (len(checks.items) - len(failed), len(failed)))
    for f in failed:
        print("  FAILED: %s" % f)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
