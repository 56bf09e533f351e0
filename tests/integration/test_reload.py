"""Reload (SIGHUP), stop (SIGTERM) and log formats of both binaries, as
real processes on loopback.

- lb: a bounded TLS client loop through the lb to edgepin-test-backend
  while the lb is SIGHUP'd every 2 s with a changed server weight: no
  request fails or is cut short, and the spread follows the weights of the
  phase each request started in; an invalid config is refused with the
  loader's own message while the old one keeps serving; servers added and
  removed (an established connection through a removed server lives on);
  the stick table survives a reload; SIGTERM drains within the grace
  period, refuses new clients, exits 0, and closes what outlives the grace;
  JSON log lines.
- node-proxy: the same client loop while its certificate is renewed and
  the process SIGHUP'd every 2 s: every new handshake after a reload shows
  the new certificate's serial, sessions from before the reloads still
  resume, nothing fails.
- node-proxy cluster changes (real node-proxies with the peer link, from
  test_node_proxy_affinity): a node added to cluster.json is relayed to at
  once after a SIGHUP; a removed node's cookie becomes unknown_owner and is
  served locally while a request relayed to it before the reload still
  completes; a new upstream address takes new requests while one in flight
  to the old backend completes.

Run through ctest (it sets EDGEPIN_LB, EDGEPIN_NODE_PROXY and
EDGEPIN_TEST_BACKEND).
"""

import collections
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
import unittest

import edgepin_testlib as t
import test_lb as lbt
import test_node_proxy_affinity as aff
import test_node_proxy_tls as npt

RELOAD_EVERY = 2.0   # seconds between SIGHUPs
LOAD_SECONDS = 20.0  # how long each load runs
LOAD_MAX = 4000      # and at most this many requests
SOURCE_BYTES = 65536
SOURCE_SEED = "7"


def setUpModule():
    # The node-proxy tests need conf/ with a PKI (made once, in a temp dir).
    npt.setUpModule()
    aff.setUpModule()


def tearDownModule():
    npt.tearDownModule()
    aff.tearDownModule()


def write_json_atomic(path, doc):
    """Replaces a config file in one step: a reload never reads half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


class Load(threading.Thread):
    """Calls fn() in a loop for at most `seconds` and `max_count` calls.
    results: [(start, end monotonic time, value)]; failures: [(start, repr)]."""

    def __init__(self, fn, seconds=LOAD_SECONDS, max_count=LOAD_MAX):
        super().__init__(daemon=True)
        self.fn = fn
        self.seconds = seconds
        self.max_count = max_count
        self.results = []
        self.failures = []
        self.stop_flag = threading.Event()

    def run(self):
        end = time.monotonic() + self.seconds
        for i in range(self.max_count):
            if time.monotonic() >= end or self.stop_flag.is_set():
                return
            started = time.monotonic()
            try:
                value = self.fn(i)
                self.results.append((started, time.monotonic(), value))
            except Exception as e:  # noqa: BLE001 - every failure is recorded and asserted on
                self.failures.append((started, repr(e)))


def count_in(proc, text):
    return proc.stderr_text().count(text)


def wait_count(proc, text, count, timeout=10.0):
    """Waits until `text` appears `count` times in proc's stderr; returns
    the monotonic time at which it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_in(proc, text) >= count:
            return time.monotonic()
        if not proc.running():
            raise RuntimeError("%s exited\n%s" % (proc.name, proc.describe()))
        time.sleep(0.02)
    raise TimeoutError("%r seen %d times, not %d\n%s" % (text, count_in(proc, text), count, proc.describe()))


def phases_of(results, applied, sent):
    """Splits load results by reload phase: phase k holds requests that
    started after reload k was applied (k = 0: the start) and ended before
    SIGHUP k+1 was sent. Requests that overlap a reload are ambiguous and
    left out (on a busy machine a request started just before a SIGHUP may
    handshake after the reload)."""
    phases = collections.defaultdict(list)
    bounds = [(0.0, sent[0] if sent else float("inf"))]
    for k in range(len(applied)):
        bounds.append((applied[k], sent[k + 1] if k + 1 < len(sent) else float("inf")))
    for started, ended, value in results:
        for k, (lo, hi) in enumerate(bounds):
            if lo <= started and ended < hi:
                phases[k].append(value)
                break
    return phases


class LbReload(lbt.LbTestCase):
    def set_weights(self, conf, weights):
        path = os.path.join(conf, "cluster.json")
        cluster = read_json(path)
        for n, w in zip(cluster["nodes"], weights):
            n["weight"] = w
        write_json_atomic(path, cluster)

    def lb_request(self, i):
        """One request on a new TLS connection through the lb: WHO, or every
        fourth time SOURCE (64 KiB, checked byte for byte)."""
        if i % 4 == 3:
            with t.tls_connect("127.0.0.1", self.lb_port, timeout=10) as s:
                r = t.exchange(s, b"SOURCE %d %s\n" % (SOURCE_BYTES, SOURCE_SEED.encode()), half_close=False,
                               timeout=10, keep_data=False)
            if r.nbytes != SOURCE_BYTES or r.sha256 != t.source_sha256(SOURCE_BYTES, SOURCE_SEED):
                raise AssertionError("SOURCE cut short or corrupted: %d bytes, reset=%s" % (r.nbytes, r.reset))
            return "source"
        return t.tls_who("127.0.0.1", self.lb_port, timeout=10)[0]["name"]

    def reload_and_wait(self, lb, expect_ok_count):
        sent = time.monotonic()
        lb.signal(signal.SIGHUP)
        applied = wait_count(lb, "reload ok", expect_ok_count)
        return sent, applied

    def test_a_weight_changes_under_load_lose_nothing_and_take_effect(self):
        self.add_backends(2, weights=[250, 1])
        conf = self.write_config(threads=2)
        lb = self.start_lb(conf)
        load = Load(self.lb_request)
        load.start()
        sent, applied = [], []
        heavy = []  # which node the phase's weights favour, by phase
        heavy.append("node1")
        for k in range(1, int(LOAD_SECONDS / RELOAD_EVERY)):
            time.sleep(RELOAD_EVERY)
            favour_first = k % 2 == 0
            self.set_weights(conf, [250, 1] if favour_first else [1, 250])
            s, a = self.reload_and_wait(lb, k)
            sent.append(s)
            applied.append(a)
            heavy.append("node1" if favour_first else "node2")
        load.join(timeout=LOAD_SECONDS + 60)
        self.assertFalse(load.is_alive())
        self.assertEqual(load.failures, [], "failed requests under reloads")
        self.assertGreater(len(load.results), 100, "too few requests to judge")
        self.assertNotIn("reload failed", lb.stderr_text())
        self.assertIn("server node1 weight", lb.stderr_text())
        # The spread follows the weights of each phase.
        share = collections.defaultdict(lambda: collections.Counter())
        for k, values in phases_of(load.results, applied, sent).items():
            for v in values:
                if v != "source":
                    share[heavy[k]][v == heavy[k]] += 1
        for node in ("node1", "node2"):
            c = share[node]
            total = c[True] + c[False]
            self.assertGreaterEqual(total, 20, "phases favouring %s saw %d requests" % (node, total))
            self.assertGreater(c[True] / total, 0.9, "phases favouring %s: %s" % (node, dict(c)))
        # No connection ended badly on the lb's side either.
        ends = collections.Counter(l["end"] for l in lbt.conn_lines(lb))
        self.assertEqual(set(ends) - {"closed"}, set(), ends)

    def test_c_invalid_config_is_refused_with_the_loaders_message(self):
        self.add_backends(2, weights=[100, 0])
        conf = self.write_config()
        lb = self.start_lb(conf)
        path = os.path.join(conf, "lb.json")
        good = read_json(path)
        bad = dict(good)
        bad["balance"] = {"algorithm": "fastest"}
        write_json_atomic(path, bad)
        check = subprocess.run([t.binary("EDGEPIN_LB"), "--check", "--config-dir", conf],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertNotEqual(check.returncode, 0)
        message = check.stderr.decode().strip().splitlines()[-1]
        self.assertTrue(message.startswith("edgepin-lb: "), message)
        message = message[len("edgepin-lb: "):]
        lb.signal(signal.SIGHUP)
        err = lb.wait_for_stderr("reload failed", timeout=10)
        line = [l for l in err.splitlines() if "reload failed" in l][0]
        self.assertIn("reload failed: " + message + "; keeping the running config", line)
        # The old config still serves, weights included (node2 has weight 0).
        names = [t.tls_who("127.0.0.1", self.lb_port)[0]["name"] for _ in range(10)]
        self.assertEqual(names, ["node1"] * 10)
        # A fixed config applies again.
        good_weights = read_json(os.path.join(conf, "cluster.json"))
        write_json_atomic(path, good)
        self.set_weights(conf, [0, 100])
        lb.signal(signal.SIGHUP)
        wait_count(lb, "reload ok", 1)
        names = [t.tls_who("127.0.0.1", self.lb_port)[0]["name"] for _ in range(10)]
        self.assertEqual(names, ["node2"] * 10, good_weights)

    def test_d_servers_added_and_removed(self):
        self.add_backends(2)
        conf = self.write_config()
        path = os.path.join(conf, "cluster.json")
        full = read_json(path)
        only = lambda name: dict(full, nodes=[n for n in full["nodes"] if n["name"] == name])  # noqa: E731
        write_json_atomic(path, only("node1"))
        lb = self.start_lb(conf)
        # An established connection through node1 (the only server).
        echo = self.open_echo()
        self.addCleanup(echo.close)
        write_json_atomic(path, only("node2"))
        lb.signal(signal.SIGHUP)
        wait_count(lb, "reload ok", 1)
        self.assertIn("server node1 removed", lb.stderr_text())
        self.assertIn("server node2 added", lb.stderr_text())
        # New connections: only the added server.
        names = [t.tls_who("127.0.0.1", self.lb_port)[0]["name"] for _ in range(10)]
        self.assertEqual(names, ["node2"] * 10)
        # The connection through the removed server still works both ways.
        payload = os.urandom(100000)
        echo.sendall(payload)
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < len(payload) and time.monotonic() < deadline:
            got += echo.recv(65536)
        self.assertEqual(got, payload)
        echo.close()
        lines = lbt.lines_when(lb, 11)
        node1 = [l for l in lines if l.get("server") == "node1"]
        self.assertEqual(len(node1), 1, lines)
        self.assertEqual(node1[0]["end"], "closed", node1)
        # And back: node1 re-added gets new clients again.
        write_json_atomic(path, full)
        lb.signal(signal.SIGHUP)
        wait_count(lb, "reload ok", 2)
        names = collections.Counter(t.tls_who("127.0.0.1", self.lb_port)[0]["name"] for _ in range(10))
        self.assertEqual(names, {"node1": 5, "node2": 5})

    def test_e_stick_table_survives_reload(self):
        # Untagged backends: only the stick table keeps a resuming client.
        self.add_backends(3, tags=False)
        conf = self.write_config()
        lb = self.start_lb(conf)
        first, sess = t.tls_who("127.0.0.1", self.lb_port, tls_max="1.2", no_ticket=True)
        owner = first["name"]
        # Make the owner the least likely pick for the balancer.
        weights = [1 if "node%d" % i == owner else 250 for i in (1, 2, 3)]
        self.set_weights(conf, weights)
        lb.signal(signal.SIGHUP)
        wait_count(lb, "reload ok", 1)
        for _ in range(5):
            reply, _ = t.tls_who("127.0.0.1", self.lb_port, session=sess, tls_max="1.2", no_ticket=True)
            self.assertEqual(reply["name"], owner)
            self.assertTrue(reply.client_resumed)
        routes = [l["route"] for l in lbt.lines_when(lb, 6)]
        self.assertEqual(routes[1:], ["stick"] * 5)

    def start_with_grace(self, grace_ms, threads=1):
        self.add_backends(1)
        conf = self.write_config(threads=threads, lb_overrides={"shutdown_grace_ms": grace_ms})
        return self.start_lb(conf)

    def open_echo(self):
        s = t.tls_connect("127.0.0.1", self.lb_port, timeout=10)
        s.sendall(b"ECHO\nhello")
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < 5 and time.monotonic() < deadline:
            got += s.recv(64)
        self.assertEqual(got, b"hello")
        return s

    def refused(self):
        try:
            socket.create_connection(("127.0.0.1", self.lb_port), timeout=2).close()
            return False
        except ConnectionRefusedError:
            return True

    def test_f_sigterm_drains_then_exits_0(self):
        lb = self.start_with_grace(8000, threads=2)
        s = self.open_echo()
        lb.signal(signal.SIGTERM)
        lb.wait_for_stderr("stopping", timeout=5)
        lbt.wait_for(self.refused, 3, "new connections refused after SIGTERM")
        # The established connection goes on.
        s.sendall(b"still here")
        got = b""
        deadline = time.monotonic() + 5
        while len(got) < 10 and time.monotonic() < deadline:
            got += s.recv(64)
        self.assertEqual(got, b"still here")
        self.assertTrue(lb.running())
        closed_at = time.monotonic()
        s.close()
        lb.popen.wait(timeout=10)
        self.assertEqual(lb.returncode, 0, lb.describe())
        # It left as soon as the last connection did, not at the grace end.
        self.assertLess(time.monotonic() - closed_at, 4.0)
        self.assertNotIn("grace period over", lb.stderr_text())

    def test_f_connection_outliving_the_grace_is_closed_at_its_end(self):
        lb = self.start_with_grace(1500)
        s = self.open_echo()
        started = time.monotonic()
        lb.signal(signal.SIGTERM)
        s.settimeout(10)
        try:
            data = s.recv(64)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        elapsed = time.monotonic() - started
        self.assertEqual(data, b"")
        self.assertGreater(elapsed, 1.2)
        self.assertLess(elapsed, 5.0)
        lb.popen.wait(timeout=10)
        self.assertEqual(lb.returncode, 0, lb.describe())
        self.assertIn("grace period over", lb.stderr_text())
        s.close()

    def test_f_second_sigterm_ends_the_grace_at_once(self):
        lb = self.start_with_grace(60000)
        s = self.open_echo()
        lb.signal(signal.SIGTERM)
        lb.wait_for_stderr("stopping", timeout=5)
        time.sleep(0.3)
        self.assertTrue(lb.running())
        started = time.monotonic()
        lb.signal(signal.SIGTERM)
        lb.popen.wait(timeout=10)
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertEqual(lb.returncode, 0, lb.describe())
        self.assertIn("second SIGTERM", lb.stderr_text())
        s.close()

    def test_g_json_log_lines(self):
        self.add_backends(1)
        conf = self.write_config(lb_overrides={"log": {"level": "info", "format": "json"}})
        lb = self.start_lb(conf)
        for _ in range(3):
            t.tls_who("127.0.0.1", self.lb_port)
        lb.signal(signal.SIGHUP)
        wait_count(lb, "reload ok", 1)
        lb.stop()
        lines = lb.stderr_text().splitlines()
        self.assertGreater(len(lines), 5)
        records = [json.loads(l) for l in lines]  # every line is one JSON object
        for r in records:
            self.assertEqual(set(r), {"time", "program", "level", "msg"}, r)
            self.assertEqual(r["program"], "edgepin-lb")
            self.assertIn(r["level"], ("debug", "info", "warning", "error"))
        msgs = [r["msg"] for r in records]
        conns = [m for m in msgs if m.startswith("conn ")]
        self.assertGreaterEqual(len(conns), 3)
        # The same key=value fields as the text format.
        fields = dict(w.split("=", 1) for w in conns[-1][len("conn "):].split(" ") if "=" in w)
        for key in ("client", "frontend", "server", "route", "end"):
            self.assertIn(key, fields, conns[-1])
        self.assertTrue(any(m.startswith("reload ok: ") for m in msgs), msgs)
        self.assertIn("stopped", msgs)

    def test_g_syslog_target(self):
        """log.target syslog: the real lb, in a private mount namespace whose
        /dev/log is a datagram socket of this test (the host's /dev is not
        touched), sends its lines there with its ident and pid."""
        self.add_backends(1)
        conf = self.write_config(lb_overrides={"log": {"level": "info", "format": "json", "target": "syslog",
                                                       "facility": "local4"}})
        path = os.path.join(self.tmp, "devlog")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(10)
        script = ('mount -t tmpfs -o size=64k tmpfs /dev && : > /dev/log && mount --bind "$1" /dev/log && '
                  'shift && exec "$@"')
        lb = self.spawn(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", path,
                         t.binary("EDGEPIN_LB"), "--config-dir", conf], "lb-syslog")
        t.wait_for_port("127.0.0.1", self.lb_port, timeout=15, proc=lb)
        t.tls_who("127.0.0.1", self.lb_port)
        lb.signal(signal.SIGHUP)
        records = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(r["msg"].startswith("reload ok") for r in records):
            datagram = sock.recv(65536).decode()
            # <PRI>TIMESTAMP IDENT[PID]: BODY
            self.assertTrue(datagram.startswith("<"), datagram)
            pri = int(datagram[1:datagram.index(">")])
            self.assertEqual(pri >> 3, 20, datagram)  # local4
            tag = "edgepin-lb[%d]: " % lb.pid
            self.assertIn(tag, datagram)
            records.append(json.loads(datagram[datagram.index(tag) + len(tag):]))
        msgs = [r["msg"] for r in records]
        self.assertTrue(any(m.startswith("started ") for m in msgs), msgs)
        self.assertTrue(any(m.startswith("conn ") for m in msgs), msgs)
        self.assertTrue(any(m.startswith("reload ok") for m in msgs), msgs)
        # Nothing on stderr once the target is syslog.
        self.assertEqual(lb.stderr_text(), "")
        self.assertEqual(lb.stop(), 0, lb.describe())


class NodeProxyReload(t.EdgepinTestCase):
    """node1's node-proxy in front of a small HTTP upstream, its
    certificate renewed and the process SIGHUP'd every 2 s under load."""

    make_config = npt.NodeProxyTlsTest.make_config
    start_upstream = npt.NodeProxyTlsTest.start_upstream
    start_node_proxy = npt.NodeProxyTlsTest.start_node_proxy
    setup_node = npt.NodeProxyTlsTest.setup_node
    header_for = npt.NodeProxyTlsTest.header_for

    def new_certificate(self, conf, index):
        """A bundle (certificate then key) for node1 signed by the cluster CA,
        with a fresh serial. Returns (pem bytes, serial as upper-case hex)."""
        pki = os.path.join(conf, "pki")
        serial = "%X" % (0x5E1A10AD00000000 + index)
        leaf = t.issue_cert(os.path.join(self.tmp, "renew%d" % index), "node1",
                            os.path.join(pki, "ca.crt"), os.path.join(pki, "ca.key"),
                            dns_names=("localhost", "node1"),
                            ip_addresses=(npt.NODE_ADDRESS, "127.0.0.1"),
                            serial="0x" + serial, days=2)
        with open(leaf.cert, "rb") as c, open(leaf.key, "rb") as k:
            return c.read() + k.read(), serial

    def install(self, conf, pem):
        path = os.path.join(conf, "pki", "nodes", "node1.pem")
        tmp = path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(tmp, path)

    def request(self, conf, session=None):
        """One GET on a new TLS connection (full handshake unless `session`).
        Returns (serial of the certificate the server sent, reused)."""
        raw = t.tcp_connect(npt.NODE_ADDRESS, self.tls_port, source=(npt.TRUSTED, 0), timeout=10)
        try:
            raw.sendall(self.header_for())
            ctx = t.client_context(cafile=os.path.join(conf, "pki", "ca.crt"))
            s = ctx.wrap_socket(raw, server_hostname=npt.NODE, session=session)
        except BaseException:
            raw.close()
            raise
        with s:
            serial = s.getpeercert().get("serialNumber")
            conn = http.client.HTTPConnection(npt.NODE, timeout=10)
            conn.sock = s
            conn.request("GET", "/reload-test", headers={"Connection": "close"})
            resp = conn.getresponse()
            new_session = s.session
            reused = s.session_reused
            body = resp.read()
            conn.close()
        if resp.status != 200 or json.loads(body)["path"] != "/reload-test":
            raise AssertionError("bad response %d %r" % (resp.status, body[:200]))
        return serial, reused, new_session

    def test_b_certificate_renewed_every_two_seconds_under_load(self):
        self.setup_node()
        conf = os.path.join(self.tmp, "conf")
        reloads = int(LOAD_SECONDS / RELOAD_EVERY) - 1
        certs = [self.new_certificate(conf, i) for i in range(1, reloads + 1)]
        first_serial, _, session = self.request(conf)
        load = Load(lambda i: self.request(conf)[0])
        load.start()
        sent, applied = [], []
        for k, (pem, serial) in enumerate(certs, start=1):
            time.sleep(RELOAD_EVERY)
            self.install(conf, pem)
            s = time.monotonic()
            self.node_proxy.signal(signal.SIGHUP)
            a = wait_count(self.node_proxy, "reload ok", k)
            sent.append(s)
            applied.append(a)
        load.join(timeout=LOAD_SECONDS + 60)
        self.assertFalse(load.is_alive())
        self.assertEqual(load.failures, [], "failed requests under reloads")
        self.assertGreater(len(load.results), 50, "too few requests to judge")
        self.assertNotIn("reload failed", self.node_proxy.stderr_text())
        # Every handshake after reload k shows certificate k.
        expected = [first_serial] + [serial for _, serial in certs]
        checked = 0
        for k, serials in phases_of(load.results, applied, sent).items():
            for serial in serials:
                self.assertEqual(serial, expected[k], "phase %d" % k)
                checked += 1
        self.assertGreater(checked, 50)
        # A session from before every reload still resumes (same ticket keys).
        _, reused, _ = self.request(conf, session=session)
        self.assertTrue(reused, "a session from before the reloads did not resume")

    def test_b_invalid_certificate_keeps_the_old_one(self):
        self.setup_node()
        conf = os.path.join(self.tmp, "conf")
        before, _, _ = self.request(conf)
        self.install(conf, b"-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        self.node_proxy.signal(signal.SIGHUP)
        err = self.node_proxy.wait_for_stderr("reload failed", timeout=10)
        self.assertIn("keeping the running config", err)
        after, _, _ = self.request(conf)
        self.assertEqual(after, before)


class NodeProxyClusterReload(t.EdgepinTestCase):
    """Peers and upstream changed by a SIGHUP: applied to new requests at
    once, requests in flight finish where they started. The cluster
    helpers are test_node_proxy_affinity's (borrowed, not inherited, so
    that its tests do not run twice)."""

    start_cluster = aff.AffinityTest.start_cluster
    start_node = aff.AffinityTest.start_node
    wait_peers = aff.AffinityTest.wait_peers
    connect = aff.AffinityTest.connect
    request = aff.AffinityTest.request
    stats = aff.AffinityTest.stats
    outcomes = aff.AffinityTest.outcomes
    session_on = aff.AffinityTest.session_on

    BIG = 200 * 1024  # a body larger than the node-proxy's pre-buffer (64 KiB)

    def setUp(self):
        super().setUp()
        # The config directory with free ports for all three nodes; nothing
        # started yet (each test starts what it needs).
        self.start_cluster(nodes=())
        self.cluster_path = os.path.join(self.conf, "cluster.json")
        self.full_cluster = read_json(self.cluster_path)

    def start_backend(self, name, label, port):
        return t.start_http_backend(self, aff.ADDRESS[name], port, name=label, timeout=aff.TIMEOUT)

    def write_cluster(self, names, upstreams=None):
        doc = json.loads(json.dumps(self.full_cluster))
        doc["nodes"] = [n for n in doc["nodes"] if n["name"] in names]
        for n in doc["nodes"]:
            if upstreams and n["name"] in upstreams:
                n["upstream"] = upstreams[n["name"]]
        write_json_atomic(self.cluster_path, doc)

    def reload(self, name, count=1):
        """SIGHUPs `name` and returns its reload line."""
        proc = self.procs[name]
        proc.signal(signal.SIGHUP)
        wait_count(proc, "reload ok", count, timeout=aff.TIMEOUT)
        lines = [l for l in proc.stderr_text().splitlines() if "reload ok" in l]
        self.assertNotIn("reload failed", proc.stderr_text())
        return lines[count - 1]

    def start_big_request(self, name, cookies):
        """A POST whose body is only partly sent (more than the pre-buffer,
        so the request is routed and on its way upstream). Returns the
        socket; finish_big_request sends the rest and reads the reply."""
        sock = self.connect(name)
        head = ("POST /slow HTTP/1.1\r\nHost: app.example\r\nContent-Length: %d\r\nConnection: close\r\n"
                "Cookie: %s\r\n\r\n" % (self.BIG, "; ".join("%s=%s" % kv for kv in cookies.items())))
        sock.sendall(head.encode() + b"x" * (self.BIG // 2))
        return sock

    def finish_big_request(self, sock):
        with sock:
            sock.sendall(b"x" * (self.BIG - self.BIG // 2))
            reply = aff.read_response(sock.makefile("rb"))
        self.assertEqual(reply.status, 200, reply.raw[:300])
        self.assertEqual(reply.json["body_len"], self.BIG)
        return reply

    def test_h_added_node_is_relayed_to_at_once(self):
        for name in aff.NODES:
            self.start_backend(name, name, self.ports[name]["backend"])
        self.write_cluster(("node1", "node2"))
        self.start_node("node1")
        self.start_node("node2")
        self.wait_peers("node1", {"node2": True})
        # node3 joins: it starts with the new cluster.json, node1 is SIGHUP'd.
        self.write_cluster(aff.NODES)
        self.start_node("node3")
        line = self.reload("node1")
        self.assertIn("peer node3 added", line)
        self.assertNotIn("restart to apply", line)
        # node2's link was kept: it stays UP through the reload.
        self.assertTrue({p["name"]: p["up"] for p in self.stats("node1")["peer_link"]["peers"]}["node2"])
        self.wait_peers("node1", {"node2": True, "node3": True})
        cookies = self.session_on("node3")
        self.assertEqual(aff.cookie_tag(cookies[aff.COOKIE]), 3)
        before = self.outcomes("node1").get("relayed_out", 0)
        r = self.request("node1", "/after-add", cookies=cookies)
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.backend, "node3")
        self.assertEqual(r.headers.get("x-edgepin-relayed"), "node1")
        self.assertEqual(self.outcomes("node1")["relayed_out"], before + 1)
        # The other way: node1's peer listener now accepts node3's
        # certificate, so node3 sees node1 UP and relays node1's sessions.
        self.wait_peers("node3", {"node1": True})
        mine = self.session_on("node1")
        r = self.request("node3", "/from-new-node", cookies=mine)
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.backend, "node1")
        self.assertEqual(r.headers.get("x-edgepin-relayed"), "node3")

    def test_h_removed_node_is_unknown_and_in_flight_relay_completes(self):
        for name in aff.NODES:
            self.start_backend(name, name, self.ports[name]["backend"])
        self.write_cluster(aff.NODES)
        for name in aff.NODES:
            self.start_node(name)
        self.wait_peers("node1", {"node2": True, "node3": True})
        cookies = self.session_on("node2")
        in_flight = self.start_big_request("node1", cookies)
        self.write_cluster(("node1", "node3"))
        line = self.reload("node1")
        self.assertIn("peer node2 removed", line)
        self.assertNotIn("restart to apply", line)
        # New requests: node2's cookie names no node of the cluster any more.
        before = self.outcomes("node1").get("unknown_owner", 0)
        r = self.request("node1", "/after-remove", cookies=cookies)
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.backend, "node1")
        self.assertEqual(self.outcomes("node1")["unknown_owner"], before + 1)
        self.assertEqual(aff.cookie_tag(r.cookies[aff.COOKIE]), 1)
        # The request relayed before the reload ends on node2, whole.
        reply = self.finish_big_request(in_flight)
        self.assertEqual(reply.backend, "node2")
        self.assertEqual([p["name"] for p in self.stats("node1")["peer_link"]["peers"]], ["node3"])

    def test_h_new_upstream_takes_new_requests_old_one_finishes(self):
        new_port = t.free_port(aff.ADDRESS["node1"])
        self.start_backend("node1", "node1", self.ports["node1"]["backend"])
        self.start_backend("node1", "node1-new", new_port)
        self.write_cluster(aff.NODES)
        self.start_node("node1")
        self.wait_peers("node1", {})
        self.assertEqual(self.request("node1", "/before").backend, "node1")
        in_flight = self.start_big_request("node1", {})
        new_upstream = "%s:%d" % (aff.ADDRESS["node1"], new_port)
        self.write_cluster(aff.NODES, upstreams={"node1": new_upstream})
        line = self.reload("node1")
        self.assertIn("upstream address", line)
        self.assertIn(new_upstream, line)
        self.assertNotIn("restart to apply", line)
        for i in range(3):
            r = self.request("node1", "/after-%d" % i)
            self.assertEqual(r.status, 200, r.raw)
            self.assertEqual(r.backend, "node1-new")
        self.assertEqual(self.finish_big_request(in_flight).backend, "node1")
        self.assertEqual(self.stats("node1")["tomcat"]["address"], new_upstream)
        # The health check follows the new address and kept its verdict.
        self.assertTrue(self.stats("node1")["tomcat"]["up"])

    # ------------------------------------------------ SIGTERM and the grace

    def start_with_grace(self, grace_ms):
        """node1 alone, with `grace_ms` as its shutdown grace period."""
        np_path = os.path.join(self.conf, "node-proxy.json")
        doc = read_json(np_path)
        doc["shutdown_grace_ms"] = grace_ms
        write_json_atomic(np_path, doc)
        self.start_backend("node1", "node1", self.ports["node1"]["backend"])
        self.write_cluster(aff.NODES)
        proc = self.start_node("node1")
        self.wait_peers("node1", {})
        return proc

    def assert_refused(self, name):
        """New clients are refused once the listeners are closed."""
        deadline = time.monotonic() + aff.TIMEOUT
        while True:
            try:
                self.connect(name, listener="http").close()
            except ConnectionRefusedError:
                return
            except ConnectionResetError:
                # The connect landed in the listener's backlog just as the
                # listener closed: the kernel resets it. Not an accept by
                # the proxy; the next attempt finds the port closed.
                pass
            if time.monotonic() > deadline:
                self.fail("%s still accepts new connections after SIGTERM" % name)
            time.sleep(0.05)

    def test_i_sigterm_lets_a_request_in_flight_finish_then_exits_0(self):
        proc = self.start_with_grace(20000)
        in_flight = self.start_big_request("node1", {})
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        self.assert_refused("node1")
        self.assertTrue(proc.running(), "exited with a request in flight")
        # The request finishes normally inside the grace period...
        self.assertEqual(self.finish_big_request(in_flight).backend, "node1")
        # ...and the process leaves as soon as its last connection is gone,
        # long before the 20 s grace ends.
        proc.popen.wait(timeout=10)
        self.assertEqual(proc.returncode, 0, proc.describe())
        self.assertLess(time.monotonic() - started, 10)

    def test_i_request_outliving_the_grace_is_closed_at_its_end(self):
        grace = 1.5
        proc = self.start_with_grace(int(grace * 1000))
        stuck = self.start_big_request("node1", {})  # never finished
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        self.assert_refused("node1")
        proc.popen.wait(timeout=grace + 10)
        elapsed = time.monotonic() - started
        self.assertEqual(proc.returncode, 0, proc.describe())
        self.assertGreaterEqual(elapsed, grace - 0.1, "closed before the grace period ended")
        self.assertLess(elapsed, grace + 5)
        # The stuck client's connection was closed, not left hanging.
        with stuck:
            stuck.settimeout(aff.TIMEOUT)
            try:
                rest = stuck.recv(65536)
            except ConnectionResetError:
                rest = b""
        self.assertNotIn(b"HTTP/1.1 200", rest)


if __name__ == "__main__":
    unittest.main()
