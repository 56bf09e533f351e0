"""Whole stacks over real Tomcat 10 instances, for Edgepin's end-to-end tests.

Standard library only; run with /usr/bin/python3. ctest sets EDGEPIN_LB and
EDGEPIN_NODE_PROXY to the built binaries.

    tomcats = start_tomcats(tmp, NODE_NAMES, NODE_ADDRESSES)   # in parallel
    with EdgepinStack(tmp, tomcats) as stack:                   # 3 node-proxies + lb
        host, port = stack.https_endpoint()                       # the lb's TLS frontend
        stack.restart_lb()                                        # same ports, empty state
        second = stack.start_second_lb()                          # other ports, same nodes
        stack.stop_tomcat("node2"); stack.start_tomcat("node2")
    with HaproxyRecipe(tmp, tomcats, stack.conf) as recipe:      # the classic recipe
        ...

The layout, one "host" per node on its own loopback address:

    client ─▶ edgepin-lb (127.0.0.1: https tls frontend, http tcp frontend,
              PROXY v2 to the nodes)
              ─▶ edgepin-node-proxy nodeN (ADDRESS: tls, http, peer ports)
                 ─▶ Tomcat nodeN (ADDRESS: its own port)

The configuration directory is generated from the repository's conf/ (the
shipped examples, so the test runs what an operator starts from) with every
port replaced by a free one, one worker thread per process, fast health
checks (so a stopped Tomcat is noticed within about a second), and the PKI
of deploy/make-pki.sh.

HaproxyRecipe is the comparison of docs/stickiness.md ("Why the HAProxy
recipe is not enough"): a TCP-mode haproxy sticking on the TLS 1.2 session ID
(`stick on payload_lv(43,1)` / `stick store-response`) in front of one
haproxy TLS terminator per node, on the same Tomcats.

Every process is started here and stopped by its PID in stop(), which also
runs when start() fails midway; the context managers call it on any exit.
"""

import concurrent.futures
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "integration"))

import edgepin_testlib as lib  # noqa: E402  (Proc, ports, binaries, JSON files)
from tomcat import TomcatInstance  # noqa: E402

read_json = lib.read_json  # the tests on this stack read its config files too

REPO_ROOT = HERE.parents[1]
CONF_DIR = REPO_ROOT / "conf"
MAKE_PKI = REPO_ROOT / "deploy" / "make-pki.sh"

# Addresses of their own, not the demo's 127.0.0.11-13, so that a demo or
# another test on this machine cannot collide with ours.
NODE_NAMES = ("node1", "node2", "node3")
NODE_ADDRESSES = ("127.0.5.11", "127.0.5.12", "127.0.5.13")
# Where the balancers listen: the node certificates name 127.0.0.1.
LB_ADDRESS = "127.0.0.1"

# Fast checks: a stopped Tomcat is noticed by its node-proxy within
# fall x interval (0.4 s) and by the lb and the peers another 0.4 s later.
CHECK_INTERVAL_MS = 200
CHECK_TIMEOUT_MS = 150
CHECK_RISE = 2
CHECK_FALL = 2

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HAPROXY = "/usr/sbin/haproxy"


class StackError(RuntimeError):
    """A component of a stack did not start or stop as it should."""


def start_tomcats(base_dir, names=NODE_NAMES, addresses=NODE_ADDRESSES):
    """Creates and starts one TomcatInstance per (name, address), in parallel
    (a JVM's startup is mostly single-threaded waiting and JIT work, so two
    cores start three instances in little more than the time of one).
    Returns them in order. If any fails, the ones that started are stopped
    and the first error is raised."""
    tomcats = [TomcatInstance(base_dir, name, address) for name, address in zip(names, addresses)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(tomcats)) as pool:
        futures = [pool.submit(t.start) for t in tomcats]
        errors = [f.exception() for f in futures]
    failed = [e for e in errors if e is not None]
    if failed:
        stop_all(tomcats)
        raise failed[0]
    return tomcats


def stop_all(things):
    """Stops each of `things` (anything with stop()), all of them even if
    some raise; returns the error messages."""
    errors = []
    for thing in things:
        try:
            thing.stop()
        except Exception as e:  # keep stopping the others
            errors.append(f"{thing!r}: {e}")
    return errors


class Node:
    """One "host": its address, the Tomcat there and the node-proxy ports."""

    def __init__(self, name, tag, tomcat):
        self.name = name
        self.tag = tag
        self.tomcat = tomcat
        self.address = tomcat.address
        self.tls_port = lib.free_port(self.address)
        self.http_port = lib.free_port(self.address)
        self.peer_port = lib.free_port(self.address)
        self.proc = None  # the node-proxy's Proc while it runs

    def __repr__(self):
        return f"Node({self.name}, tag {self.tag}, {self.address})"


class Balancer:
    """One running balancer (edgepin-lb or a haproxy) and its endpoints."""

    def __init__(self, name, https_port, http_port, proc=None, conf=None):
        self.name = name
        self.https_port = https_port
        self.http_port = http_port
        self.proc = proc
        self.conf = conf

    def __repr__(self):
        return f"Balancer({self.name}, https {self.https_port}, http {self.http_port})"

    def stop(self):
        if self.proc is not None:
            self.proc.stop(timeout=STOP_TIMEOUT)


def _wait_proc_port(proc, host, port):
    lib.wait_for_port(host, port, timeout=START_TIMEOUT, proc=proc)


# ----------------------------------------------------------------- Edgepin

class _TwoTierStack:
    """What both stacks share: a main balancer plus extra ones, tier-two
    processes of the stack's own, and use as a context manager (start() on
    entry, stop() on exit). A subclass sets self.lb and self.extra_lbs and
    implements start() and _stop_tier_two()."""

    def _stop_tier_two(self):
        """Stops the stack's tier-two processes; returns the errors."""
        raise NotImplementedError

    def stop(self):
        """Stops every balancer and tier-two process this stack started (by
        PID). Raises StackError naming what could not be stopped."""
        errors = stop_all(self.extra_lbs + ([self.lb] if self.lb else []))
        errors += self._stop_tier_two()
        self.extra_lbs = []
        if errors:
            raise StackError("; ".join(errors))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    @staticmethod
    def _listening_balancer(proc, https_port, http_port, conf=None):
        """A Balancer for the started `proc` once both its ports accept; if
        they do not in time, stops it and raises."""
        lb = Balancer(proc.name, https_port, http_port, proc, conf)
        try:
            _wait_proc_port(proc, LB_ADDRESS, https_port)
            _wait_proc_port(proc, LB_ADDRESS, http_port)
        except BaseException:
            proc.stop(timeout=STOP_TIMEOUT)
            raise
        return lb


class EdgepinStack(_TwoTierStack):
    """edgepin-lb and one edgepin-node-proxy per Tomcat of `tomcats` (which
    the caller started and keeps: stop() leaves them running, stop_tomcat()
    and start_tomcat() act on them). Node i gets tag i + 1."""

    def __init__(self, workdir, tomcats, cluster_name="e2e"):
        self.workdir = Path(workdir) / "edgepin"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "conf"
        self.cluster_name = cluster_name
        self.nodes = [Node(t.name, i + 1, t) for i, t in enumerate(tomcats)]
        self.lb = None          # the main balancer (restart_lb keeps its ports)
        self.extra_lbs = []     # started by start_second_lb
        self._lb_starts = 0     # log file names of successive lb processes

    # -- lifecycle

    def start(self):
        """Writes the configuration and the PKI, starts the node-proxies and
        the lb, and returns once every node-proxy sees its Tomcat up and the
        lb listens. On failure, stops what it started and raises."""
        try:
            self._write_config()
            for node in self.nodes:
                self._start_node_proxy(node)
            self.lb = self._start_lb(self.conf, lib.free_port(LB_ADDRESS), lib.free_port(LB_ADDRESS))
        except BaseException:
            self.stop()
            raise
        return self

    def _stop_tier_two(self):
        errors = stop_all([n.proc for n in self.nodes if n.proc is not None])
        for node in self.nodes:
            node.proc = None
        return errors

    # -- balancers

    def https_endpoint(self, lb=None):
        """(host, port) of the TLS frontend of `lb` (default: the main lb)."""
        return LB_ADDRESS, (lb or self.lb).https_port

    def http_endpoint(self, lb=None):
        """(host, port) of the plain HTTP frontend of `lb`."""
        return LB_ADDRESS, (lb or self.lb).http_port

    def https_url(self, path="/", lb=None):
        return "https://%s:%d%s" % (*self.https_endpoint(lb), path)

    def http_url(self, path="/", lb=None):
        return "http://%s:%d%s" % (*self.http_endpoint(lb), path)

    def stop_lb(self):
        """Stops the main lb (its ports are kept for start_lb)."""
        self.lb.stop()

    def start_lb(self):
        """Starts the main lb again on its ports, with a fresh process: an
        empty stick table and no memory of the clients."""
        old = self.lb
        self.lb = self._start_lb(old.conf, old.https_port, old.http_port)

    def restart_lb(self):
        self.stop_lb()
        self.start_lb()

    def start_second_lb(self):
        """Starts another edgepin-lb on other ports, in front of the same
        nodes, with a configuration directory of its own (same cluster.json).
        Returns its Balancer; stop() stops it."""
        conf = self.workdir / ("conf-lb%d" % (len(self.extra_lbs) + 2))
        conf.mkdir(exist_ok=True)
        shutil.copy(self.conf / "cluster.json", conf / "cluster.json")
        lb = self._start_lb(conf, lib.free_port(LB_ADDRESS), lib.free_port(LB_ADDRESS))
        self.extra_lbs.append(lb)
        return lb

    # -- nodes

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def node_by_tag(self, tag):
        return next((n for n in self.nodes if n.tag == tag), None)

    def stop_tomcat(self, name):
        """Stops node `name`'s Tomcat (SIGTERM, a clean shutdown: its
        sessions are gone, as after a crash of a legacy app server)."""
        self.node(name).tomcat.stop()

    def start_tomcat(self, name):
        """Starts node `name`'s Tomcat again on the same address and port and
        waits until its node-proxy has seen it up."""
        node = self.node(name)
        seen = node.proc.stderr_text().count("is UP")
        node.tomcat.start()
        deadline = time.monotonic() + START_TIMEOUT
        while node.proc.stderr_text().count("is UP") <= seen:
            if time.monotonic() > deadline:
                raise StackError(f"{name}: node-proxy did not see its Tomcat up again\n"
                                 + node.proc.describe())
            time.sleep(0.05)

    def wait_node_seen_up(self, name, since, timeout=START_TIMEOUT):
        """Waits until every running lb and every other node-proxy has logged
        node `name` UP more often than `since` (a dict from
        up_sightings()), i.e. its health checks pass again. Raises
        StackError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            now = self.up_sightings(name)
            late = [who for who, count in now.items() if count <= since.get(who, 0)]
            if not late:
                return
            if time.monotonic() > deadline:
                raise StackError(f"{name} not seen up again by {late}\n" + self.logs())
            time.sleep(0.05)

    def up_sightings(self, name):
        """How often each running lb ("server NAME is UP") and each other
        node-proxy ("peer NAME at ... is UP") has logged node `name` up."""
        counts = {}
        for lb in ([self.lb] if self.lb else []) + self.extra_lbs:
            if lb.proc.running():
                counts[lb.name] = lb.proc.stderr_text().count(f"server {name} is UP")
        for node in self.nodes:
            if node.name != name and node.proc is not None:
                text = node.proc.stderr_text()
                counts[node.name] = sum(1 for line in text.splitlines()
                                        if f"peer {name} at " in line and " is UP" in line)
        return counts

    @property
    def ca_file(self):
        """The cluster CA: it signs every node's server certificate."""
        return str(self.conf / "pki" / "ca.crt")

    def logs(self, tail_lines=30):
        """The stderr tails of every process, for a failure message."""
        procs = [n.proc for n in self.nodes if n.proc is not None]
        procs += [lb.proc for lb in ([self.lb] if self.lb else []) + self.extra_lbs if lb.proc]
        return "\n".join(p.describe(tail_lines) for p in procs)

    # -- internals

    def _write_config(self):
        if self.conf.exists():
            shutil.rmtree(self.conf)
        self.conf.mkdir(parents=True)
        cluster = lib.read_json(CONF_DIR / "cluster.json")
        cluster["cluster"]["name"] = self.cluster_name
        template = cluster["nodes"][0]
        nodes = []
        for node in self.nodes:
            entry = dict(template)
            entry.update({"name": node.name, "tag": node.tag, "address": node.address,
                          "tls_port": node.tls_port, "http_port": node.http_port,
                          "peer_port": node.peer_port, "weight": 100,
                          "upstream": "%s:%d" % (node.tomcat.address, node.tomcat.port)})
            nodes.append(entry)
        cluster["nodes"] = nodes
        lib.write_json(self.conf / "cluster.json", cluster)

        np = lib.read_json(CONF_DIR / "node-proxy.json")
        np["threads"] = 1
        # health.jsp starts no session: a check every 200 ms must not fill
        # Tomcat's session store (the shipped "/" is the demo page).
        np["health"].update({"check_path": "/health.jsp", "check_interval_ms": CHECK_INTERVAL_MS,
                             "check_timeout_ms": CHECK_TIMEOUT_MS, "rise": CHECK_RISE,
                             "fall": CHECK_FALL})
        np.setdefault("peer", {}).update({"check_interval_ms": CHECK_INTERVAL_MS,
                                          "check_timeout_ms": CHECK_TIMEOUT_MS,
                                          "rise": CHECK_RISE, "fall": CHECK_FALL})
        np.pop("admin_socket", None)
        lib.write_json(self.conf / "node-proxy.json", np)

        done = subprocess.run([str(MAKE_PKI), str(self.conf)], stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if done.returncode != 0:
            raise StackError("make-pki.sh failed:\n" + done.stdout.decode(errors="replace"))

    def _lb_json(self, https_port, http_port):
        lb = lib.read_json(CONF_DIR / "lb.json")
        lb["threads"] = 1
        for fe in lb["frontends"]:
            port = https_port if fe["mode"] == "tls" else http_port
            fe["bind"] = ["%s:%d" % (LB_ADDRESS, port)]
        lb["health_check"].update({"interval_ms": CHECK_INTERVAL_MS, "timeout_ms": CHECK_TIMEOUT_MS,
                                   "rise": CHECK_RISE, "fall": CHECK_FALL})
        lb["stats"] = {"bind": "%s:%d" % (LB_ADDRESS, lib.free_port(LB_ADDRESS))}
        lb.pop("admin_socket", None)
        return lb

    def _start_lb(self, conf, https_port, http_port):
        lib.write_json(Path(conf) / "lb.json", self._lb_json(https_port, http_port))
        self._lb_starts += 1
        proc = lib.Proc([lib.binary("EDGEPIN_LB"), "--config-dir", conf],
                        "lb-%d" % self._lb_starts, str(self.workdir))
        return self._listening_balancer(proc, https_port, http_port, conf)

    def _start_node_proxy(self, node):
        node.proc = lib.Proc([lib.binary("EDGEPIN_NODE_PROXY"), "--config-dir", self.conf,
                              "--node", node.name], "node-proxy-" + node.name, str(self.workdir))
        node.proc.wait_for_stderr("workers; listeners:", timeout=START_TIMEOUT)
        node.proc.wait_for_stderr("is UP", timeout=START_TIMEOUT)
        for port in (node.tls_port, node.http_port):
            _wait_proc_port(node.proc, node.address, port)


# ------------------------------------------------------ the HAProxy recipe

def _haproxy_globals():
    # One thread each: seven haproxy processes share two cores with the rest.
    return ["global", "  nbthread 1", "",
            "defaults", "  timeout connect 5s", "  timeout client 30s",
            "  timeout server 30s", ""]


class HaproxyRecipe(_TwoTierStack):
    """The classic recipe (docs/stickiness.md) on the same Tomcats: per node, a haproxy
    terminating TLS (mode http, session cache and tickets at haproxy's
    defaults, X-Forwarded-For/-Proto/-Port to the node's Tomcat), and in
    front a TCP-mode haproxy that sticks on the TLS 1.2 session ID and has
    a plain TCP frontend for HTTP. Both tiers pass the client address on
    with PROXY v2, as Edgepin does. `pki_conf` is an Edgepin configuration
    directory whose pki/nodes/<node>.pem (certificate + key) the terminators
    use, so clients trust both stacks through one CA."""

    def __init__(self, workdir, tomcats, pki_conf):
        self.workdir = Path(workdir) / "haproxy"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki_conf = Path(pki_conf)
        self.tomcats = list(tomcats)
        self.terminators = []   # Procs
        self.term_ports = {t.name: (lib.free_port(t.address), lib.free_port(t.address))
                           for t in self.tomcats}
        self.lb = None
        self.extra_lbs = []
        self._lb_starts = 0

    def start(self):
        try:
            for t in self.tomcats:
                self._start_terminator(t)
            self.lb = self._start_lb(lib.free_port(LB_ADDRESS), lib.free_port(LB_ADDRESS))
        except BaseException:
            self.stop()
            raise
        return self

    def _stop_tier_two(self):
        errors = stop_all(self.terminators)
        self.terminators = []
        return errors

    @property
    def ca_file(self):
        return str(self.pki_conf / "pki" / "ca.crt")

    def https_endpoint(self, lb=None):
        return LB_ADDRESS, (lb or self.lb).https_port

    def http_endpoint(self, lb=None):
        return LB_ADDRESS, (lb or self.lb).http_port

    def stop_lb(self):
        self.lb.stop()

    def start_lb(self):
        old = self.lb
        self.lb = self._start_lb(old.https_port, old.http_port)

    def restart_lb(self):
        """A new process: its stick table starts empty, as after a reload
        without peers or a restart."""
        self.stop_lb()
        self.start_lb()

    def start_second_lb(self):
        """Another front haproxy on other ports, with a stick table of its
        own (no `peers` section: the recipe has none)."""
        lb = self._start_lb(lib.free_port(LB_ADDRESS), lib.free_port(LB_ADDRESS))
        self.extra_lbs.append(lb)
        return lb

    def logs(self, tail_lines=30):
        procs = list(self.terminators)
        procs += [lb.proc for lb in ([self.lb] if self.lb else []) + self.extra_lbs if lb.proc]
        return "\n".join(p.describe(tail_lines) for p in procs)

    def _run(self, cfg_lines, name):
        cfg = self.workdir / (name + ".cfg")
        cfg.write_text("\n".join(cfg_lines) + "\n")
        check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if check.returncode != 0:
            raise StackError(f"haproxy -c rejects {cfg}:\n" + check.stdout.decode(errors="replace"))
        return lib.Proc([HAPROXY, "-db", "-f", str(cfg)], name, str(self.workdir))

    def _start_terminator(self, tomcat):
        tls_port, http_port = self.term_ports[tomcat.name]
        pem = self.pki_conf / "pki" / "nodes" / (tomcat.name + ".pem")
        lines = _haproxy_globals() + [
            "frontend terminate",
            "  mode http",
            f"  bind {tomcat.address}:{tls_port} ssl crt {pem} alpn http/1.1 accept-proxy",
            f"  bind {tomcat.address}:{http_port} accept-proxy",
            # The client address comes from the PROXY header (accept-proxy).
            "  option forwardfor",
            "  http-request set-header X-Forwarded-Proto https if { ssl_fc }",
            "  http-request set-header X-Forwarded-Proto http if !{ ssl_fc }",
            "  http-request set-header X-Forwarded-Port 443 if { ssl_fc }",
            "  http-request set-header X-Forwarded-Port 80 if !{ ssl_fc }",
            "  default_backend tomcat",
            "",
            "backend tomcat",
            "  mode http",
            f"  server {tomcat.name} {tomcat.address}:{tomcat.port}",
        ]
        proc = self._run(lines, "terminator-" + tomcat.name)
        self.terminators.append(proc)
        _wait_proc_port(proc, tomcat.address, tls_port)
        _wait_proc_port(proc, tomcat.address, http_port)

    def _start_lb(self, https_port, http_port):
        servers_tls = [f"  server {t.name} {t.address}:{self.term_ports[t.name][0]} send-proxy-v2"
                       for t in self.tomcats]
        servers_http = [f"  server {t.name} {t.address}:{self.term_ports[t.name][1]} send-proxy-v2"
                        for t in self.tomcats]
        lines = _haproxy_globals() + [
            "frontend https",
            "  mode tcp",
            f"  bind {LB_ADDRESS}:{https_port}",
            "  default_backend tls_nodes",
            "",
            "backend tls_nodes",
            "  mode tcp",
            "  balance roundrobin",
            # A TLS 1.2 session ID is at most 32 bytes.
            "  stick-table type binary len 32 size 30k expire 30m",
            "  acl clienthello req.ssl_hello_type 1",
            "  acl serverhello res.ssl_hello_type 2",
            "  tcp-request inspect-delay 5s",
            "  tcp-request content accept if clienthello",
            # Without an inspect delay haproxy 2.6 evaluates the response
            # rules at once and stores nothing.
            "  tcp-response inspect-delay 5s",
            "  tcp-response content accept if serverhello",
            # Offset 43: record header (5) + handshake header (4) + version
            # (2) + random (32); the session ID's length byte is there.
            "  stick on payload_lv(43,1) if clienthello",
            "  stick store-response payload_lv(43,1) if serverhello",
        ] + servers_tls + [
            "",
            "frontend http",
            "  mode tcp",
            f"  bind {LB_ADDRESS}:{http_port}",
            "  default_backend http_nodes",
            "",
            "backend http_nodes",
            "  mode tcp",
            "  balance roundrobin",
        ] + servers_http
        self._lb_starts += 1
        proc = self._run(lines, "haproxy-lb-%d" % self._lb_starts)
        return self._listening_balancer(proc, https_port, http_port)
