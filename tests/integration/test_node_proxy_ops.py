"""edgepin-node-proxy's operator interfaces, as a real process:

- the metrics listener (node-proxy.json "metrics"): /metrics parses as
  Prometheus text (strictly) and its counters follow real traffic; the
  stats page in HTML and JSON on the same listener; no PROXY header
  needed; bad methods and paths refused; a taken port stops the start
  with a clear error;
- the admin socket (node-proxy.json "admin_socket"): its permissions come
  from the config; every command (help, show info, show stat, show
  sessions, each in text and JSON; set node state ready|drain) and the
  errors; drain makes the health endpoint answer 503 while an open
  connection and new ones are still served.

Each test gets its own config directory: conf/ copied with its PKI made
once by deploy/make-pki.sh, node1's ports set to free ones, in front of a
small HTTP/1.1 upstream on loopback.

Run through ctest (EDGEPIN_NODE_PROXY is set there), or:
    EDGEPIN_NODE_PROXY=build/node-proxy/edgepin-node-proxy \\
        /usr/bin/python3 -m unittest -v test_node_proxy_ops
"""

import http.client
import json
import math
import os
import socket
import stat
import sys
import time
import unittest

import edgepin_testlib as lib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers"))
from prometheus_text import PrometheusError, parse_prometheus, sample  # noqa: E402

NODE = "node1"
NODE_ADDRESS = "127.0.0.11"  # node1's address in conf/cluster.json
TRUSTED = "127.0.0.1"        # the test's source address, trusted as the "lb"
THREADS = 2
TIMEOUT = 10.0
STEP = 0.05

TEMPLATE = lib.ConfTemplate("edgepin-np-ops-conf-")  # conf/ with its PKI, made once per run
setUpModule, tearDownModule = TEMPLATE.make, TEMPLATE.cleanup


class NodeProxyOpsTest(lib.EdgepinTestCase):

    def setUp(self):
        super().setUp()
        conf = TEMPLATE.copy_to(os.path.join(self.tmp, "conf"))
        self.conf = conf
        self.tls_port = lib.free_port(NODE_ADDRESS)
        self.http_port = lib.free_port(NODE_ADDRESS)
        self.metrics_port = lib.free_port(NODE_ADDRESS)
        self.upstream_port = lib.free_port(NODE_ADDRESS)
        self.admin_path = os.path.join(self.tmp, "run", "node1.sock")
        os.mkdir(os.path.join(self.tmp, "run"))
        lib.place_node(conf, NODE, NODE_ADDRESS, self.tls_port, self.http_port, self.upstream_port)
        np = lib.read_json(os.path.join(conf, "node-proxy.json"))
        np["threads"] = THREADS
        for listener in np["listeners"]:
            listener["trusted_proxies"] = [TRUSTED + "/32"]
        np["health"].update({"check_interval_ms": 200, "check_timeout_ms": 150, "rise": 1, "fall": 1})
        np["metrics"] = {"port": self.metrics_port}
        np["admin_socket"] = {"path": os.path.join(self.tmp, "run", "{node}.sock"), "mode": "0640"}
        lib.write_json(os.path.join(conf, "node-proxy.json"), np)

    def start(self, wait_up=True):
        lib.start_echo_upstream(self, NODE_ADDRESS, self.upstream_port, timeout=TIMEOUT)
        self.node_proxy = self.spawn([lib.binary("EDGEPIN_NODE_PROXY"), "--config-dir", self.conf,
                                      "--node", NODE], "node-proxy")
        self.node_proxy.wait_for_stderr("admin socket on", timeout=15)
        if wait_up:
            self.node_proxy.wait_for_stderr("is UP", timeout=TIMEOUT)

    # ------------------------------------------------------------ clients

    def metrics_get(self, path, method="GET"):
        conn = http.client.HTTPConnection(NODE_ADDRESS, self.metrics_port, timeout=TIMEOUT)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type", ""), r.read().decode()
        finally:
            conn.close()

    def metrics(self):
        status, ctype, body = self.metrics_get("/metrics")
        self.assertEqual(status, 200, body)
        self.assertEqual(ctype, "text/plain; version=0.0.4; charset=utf-8")
        return parse_prometheus(body)

    def open_http(self):
        """A keep-alive connection to the plain listener, after a PROXY v2
        header from the trusted "lb"."""
        s = lib.tcp_connect(NODE_ADDRESS, self.http_port, source=(TRUSTED, 0), timeout=TIMEOUT)
        s.sendall(lib.proxy_v2(("203.0.113.9", 40000), (NODE_ADDRESS, self.http_port)))
        conn = http.client.HTTPConnection(NODE_ADDRESS, self.http_port, timeout=TIMEOUT)
        conn.sock = s
        return conn

    def get(self, conn, path, close=False):
        conn.request("GET", path, headers={"Connection": "close"} if close else {})
        r = conn.getresponse()
        return r.status, r.read().decode()

    def request(self, path):
        conn = self.open_http()
        try:
            return self.get(conn, path, close=True)
        finally:
            conn.close()

    def admin(self, line):
        """One command's answer without its last newline (the checks below
        compare whole one-line answers)."""
        return lib.admin_command(self.admin_path, line, TIMEOUT).removesuffix("\n")

    # ------------------------------------------------------------ metrics

    def test_metrics_parse_and_follow_traffic(self):
        self.start()
        before = self.metrics()
        info = before["edgepin_node_info"]["samples"]
        self.assertEqual(len(info), 1)
        self.assertEqual(info[0][1]["node"], NODE)
        self.assertEqual(info[0][1]["tag"], "1")
        self.assertEqual(info[0][1]["cluster"], "demo")
        self.assertEqual(sample(before, "edgepin_node_workers"), THREADS)
        self.assertEqual(sample(before, "edgepin_node_tomcat_up"), 1)
        self.assertEqual(sample(before, "edgepin_node_draining"), 0)
        # Conventions: every family typed and described, counters (only
        # they) named *_total, gauges never.
        for name, fam in before.items():
            self.assertTrue(name.startswith("edgepin_node_"), name)
            self.assertIsNotNone(fam["help"], name)
            self.assertTrue(fam["typed"], name)
            self.assertEqual(fam["type"] == "counter", name.endswith("_total"), name)
        # Every outcome has its sample, also at zero.
        ends = {s[1]["end"] for s in before["edgepin_node_request_ends_total"]["samples"]}
        self.assertIn("complete", ends)
        self.assertIn("bad_request", ends)
        errors = {s[1]["error"] for s in before["edgepin_node_request_errors_total"]["samples"]}
        self.assertNotIn("none", errors)
        self.assertGreater(len(errors), 10)

        for i in range(3):
            status, body = self.request("/app/%d" % i)
            self.assertEqual(status, 200, body)
            self.assertEqual(body, "path=/app/%d\n" % i)
        # A malformed request is refused and counted by its parser error.
        s = lib.tcp_connect(NODE_ADDRESS, self.http_port, source=(TRUSTED, 0), timeout=TIMEOUT)
        with s:
            s.sendall(lib.proxy_v2(("203.0.113.9", 40001), (NODE_ADDRESS, self.http_port)))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n")
            reply = s.recv(4096)
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply)

        after = self.metrics()
        def delta(name, **labels):
            return sample(after, name, **labels) - sample(before, name, **labels)
        self.assertGreaterEqual(delta("edgepin_node_requests_total"), 3)
        self.assertGreaterEqual(delta("edgepin_node_responses_total", **{"class": "2xx"}), 3)
        self.assertGreaterEqual(delta("edgepin_node_responses_total", **{"class": "4xx"}), 1)
        self.assertGreaterEqual(delta("edgepin_node_request_ends_total", end="complete"), 3)
        self.assertGreaterEqual(delta("edgepin_node_request_ends_total", end="bad_request"), 1)
        self.assertEqual(sum(v for _, _, v in after["edgepin_node_request_errors_total"]["samples"])
                         - sum(v for _, _, v in before["edgepin_node_request_errors_total"]["samples"]), 1)
        self.assertGreaterEqual(delta("edgepin_node_connections_total"), 4)
        self.assertGreaterEqual(delta("edgepin_node_upstream_connects_total")
                                + delta("edgepin_node_upstream_reuses_total"), 3)
        self.assertGreater(delta("edgepin_node_received_bytes_total"), 0)
        self.assertGreater(delta("edgepin_node_sent_bytes_total"), 0)
        # The TLS gauges are there (a TLS listener exists).
        self.assertGreaterEqual(sample(after, "edgepin_node_tls_ticket_keys"), 1)

    def test_metrics_listener_pages_and_errors(self):
        self.start()
        status, ctype, body = self.metrics_get("/stats;json")
        self.assertEqual(status, 200)
        self.assertEqual(ctype, "application/json")
        doc = json.loads(body)
        self.assertEqual(doc["node"], NODE)
        self.assertTrue(doc["tomcat"]["up"])
        status, ctype, body = self.metrics_get("/")
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/html"), ctype)
        self.assertIn("edgepin node-proxy: node1", body)
        status, _, body = self.metrics_get("/metrics", method="HEAD")
        self.assertEqual((status, body), (200, ""))
        self.assertEqual(self.metrics_get("/nope")[0], 404)
        self.assertEqual(self.metrics_get("/metrics", method="POST")[0], 405)
        # Garbage gets a 400, not a hang or a crash, and the listener lives on.
        s = lib.tcp_connect(NODE_ADDRESS, self.metrics_port, timeout=TIMEOUT)
        with s:
            s.sendall(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
            self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 400"))
        self.metrics()

    def test_metrics_port_taken_is_a_clear_error(self):
        blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(blocker.close)
        blocker.bind((NODE_ADDRESS, self.metrics_port))
        blocker.listen(1)
        lib.start_echo_upstream(self, NODE_ADDRESS, self.upstream_port, timeout=TIMEOUT)
        proc = self.spawn([lib.binary("EDGEPIN_NODE_PROXY"), "--config-dir", self.conf, "--node", NODE],
                          "node-proxy", expect_clean_exit=False)
        deadline = time.monotonic() + 15
        while proc.running() and time.monotonic() < deadline:
            time.sleep(STEP)
        self.assertEqual(proc.returncode, 1, proc.describe())
        self.assertIn("metrics: bind %s:%d: Address already in use" % (NODE_ADDRESS, self.metrics_port),
                      proc.stderr_text())
        self.assertFalse(os.path.exists(self.admin_path), "admin socket left behind")

    # ------------------------------------------------------- admin socket

    def test_admin_socket_permissions(self):
        self.start()
        st = os.stat(self.admin_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        self.node_proxy.stop()
        self.assertFalse(os.path.exists(self.admin_path), "the socket file outlived the process")

    def test_admin_help_and_errors(self):
        self.start()
        help_text = self.admin("help")
        for cmd in ("show info", "show stat", "show sessions", "set node state ready|drain", "quit"):
            self.assertIn(cmd, help_text)
        self.assertEqual(self.admin("bogus"), "error: unknown command 'bogus'; try 'help'")
        self.assertEqual(self.admin("show info xml"), "error: unknown option 'xml' (only 'json')")
        self.assertEqual(self.admin("show nothing"), "error: unknown command 'show nothing'; try 'help'")
        self.assertEqual(self.admin("set node state maint"),
                         "error: unknown state 'maint' (expected ready or drain)")
        self.assertEqual(self.admin("set node drain"), "error: usage: set node state ready|drain")
        self.assertEqual(self.admin("show\x01 info"), "error: unknown command 'show? info'; try 'help'")
        # Several commands on one connection, answered in order; quit closes.
        c = lib.AdminClient(self.admin_path)
        try:
            self.assertEqual(c.command(""), "")
            self.assertIn("Node: node1", c.command("show info"))
            self.assertTrue(c.command("show sessions").startswith("# sessions: "))
            c.sock.sendall(b"quit\n")
            self.assertEqual(c.sock.recv(100), b"")
        finally:
            c.close()

    def test_admin_show_info(self):
        self.start()
        info = lib.info_fields(self.admin("show info"))
        self.assertEqual(info["Name"], "edgepin-node-proxy")
        self.assertEqual(info["Node"], NODE)
        self.assertEqual(info["Tag"], "1")
        self.assertEqual(info["Cluster"], "demo")
        self.assertEqual(info["Pid"], str(self.node_proxy.pid))
        self.assertEqual(info["Workers"], str(THREADS))
        self.assertEqual(info["State"], "ready")
        self.assertEqual(info["Tomcat"], "%s:%d" % (NODE_ADDRESS, self.upstream_port))
        self.assertEqual(info["TomcatUp"], "1")
        self.assertGreaterEqual(int(info["Uptime_sec"]), 0)
        self.request("/x")
        j = json.loads(self.admin("show info json"))
        self.assertEqual(j["node"], NODE)
        self.assertEqual(j["pid"], self.node_proxy.pid)
        self.assertEqual(j["state"], "ready")
        self.assertIs(j["tomcat_up"], True)
        self.assertGreaterEqual(j["requests_total"], 1)
        self.assertGreaterEqual(j["connections_total"], 1)

    def test_admin_show_stat(self):
        self.start()
        self.request("/y")
        j = json.loads(self.admin("show stat json"))
        page = json.loads(self.metrics_get("/stats;json")[2])
        # The same document as the stats page (uptime may have ticked).
        self.assertEqual(set(j), set(page))
        self.assertEqual(j["node"], NODE)
        self.assertGreaterEqual(j["requests"]["total"], 1)
        lines = lib.info_fields(self.admin("show stat"))
        self.assertEqual(lines["node"], NODE)
        self.assertEqual(lines["tomcat.up"], "true")
        self.assertGreaterEqual(int(lines["requests.total"]), 1)
        self.assertIn("requests.responses.2xx", lines)
        self.assertIn("tls.handshakes_full", lines)

    def test_admin_show_sessions(self):
        self.start()
        conns = [self.open_http() for _ in range(3)]
        try:
            for conn in conns:  # served, and kept open (keep-alive)
                self.assertEqual(self.get(conn, "/keep")[0], 200)
            # A fourth connection stops in the middle of a request body.
            busy = self.open_http()
            conns.append(busy)
            busy.sock.sendall(b"POST /partial?x=1 HTTP/1.1\r\nHost: node1\r\n"
                              b"Content-Length: 100\r\n\r\n0123456789")
            deadline = time.monotonic() + TIMEOUT
            while True:
                j = json.loads(self.admin("show sessions json"))
                if any(c["request"] != "-" for c in j["list"]) or time.monotonic() > deadline:
                    break
                time.sleep(STEP)
            self.assertEqual(j["state"], "ready")
            self.assertEqual(j["unanswered_workers"], [])
            self.assertEqual(len(j["workers"]), THREADS)
            self.assertEqual([w["worker"] for w in j["workers"]], list(range(THREADS)))
            self.assertEqual(sum(w["sessions"] for w in j["workers"]), j["current"])
            self.assertEqual(j["current"], 4)
            self.assertEqual(len(j["list"]), 4)
            for c in j["list"]:
                # Each connection with what the PROXY header said about it.
                self.assertEqual(c["listener"], "http")
                self.assertEqual(c["client"], "203.0.113.9:40000")
                self.assertEqual(c["tls"], "-")
                self.assertEqual(c["peer_node"], "-")
                self.assertIn(c["worker"], range(THREADS))
                self.assertGreaterEqual(c["age_ms"], 0)
            idle = [c for c in j["list"] if c["request"] == "-"]
            self.assertEqual(len(idle), 3)
            for c in idle:
                self.assertEqual((c["state"], c["requests"], c["destination"]), ("reading_head", 1, "-"))
            [active] = [c for c in j["list"] if c["request"] != "-"]
            self.assertEqual(active["request"], "POST /partial?x=1")
            self.assertEqual(active["requests"], 0)
            self.assertIn(active["state"], ("buffering_body", "connecting", "proxying"))
            text = self.admin("show sessions")
            self.assertRegex(text, r"^# sessions: 4 \(state ready\)\n"
                                   r"worker 0: \d+ \(0 in handshake\)\nworker 1: \d+ \(0 in handshake\)\n"
                                   r"# list\n")
            lines = text.split("# list\n", 1)[1].splitlines()
            self.assertEqual(len(lines), 4)
            self.assertEqual(sum("request=POST /partial?x=1 " in l for l in lines), 1)
            for l in lines:
                self.assertRegex(l, r"^worker=\d listener=http client=203\.0\.113\.9:40000 tls=- resumed=false ")
        finally:
            for conn in conns:
                conn.close()
        # Closed connections leave the count.
        deadline = time.monotonic() + TIMEOUT
        while json.loads(self.admin("show sessions json"))["current"] > 0 and time.monotonic() < deadline:
            time.sleep(STEP)
        self.assertEqual(json.loads(self.admin("show sessions json"))["current"], 0)

    def test_admin_drain_and_ready(self):
        self.start()
        kept = self.open_http()
        self.addCleanup(kept.close)
        self.assertEqual(self.get(kept, "/before"), (200, "path=/before\n"))
        self.assertEqual(self.request("/_edgepin/health")[0], 200)

        self.assertEqual(self.admin("set node state drain"), "node: state drain (was ready)")
        self.node_proxy.wait_for_stderr("node set to drain (was ready) by the admin socket", timeout=TIMEOUT)
        # Health says 503, so the lb sends no new clients here ...
        self.assertEqual(self.request("/_edgepin/health"), (503, "DOWN: draining\n"))
        # ... while the open connection keeps being served, and so is
        # anyone the lb still sends (a client bound to this node).
        self.assertEqual(self.get(kept, "/during"), (200, "path=/during\n"))
        self.assertEqual(self.request("/new"), (200, "path=/new\n"))
        self.assertEqual(lib.info_fields(self.admin("show info"))["State"], "drain")
        self.assertEqual(json.loads(self.admin("show sessions json"))["state"], "drain")
        self.assertEqual(sample(self.metrics(), "edgepin_node_draining"), 1)
        self.assertIs(json.loads(self.metrics_get("/stats;json")[2])["draining"], True)
        # Idempotent, and says so.
        self.assertEqual(self.admin("set node state drain"), "node: state drain (was drain)")

        self.assertEqual(self.admin("set node state ready"), "node: state ready (was drain)")
        self.assertEqual(self.request("/_edgepin/health")[0], 200)
        self.assertEqual(self.get(kept, "/after"), (200, "path=/after\n"))
        self.assertEqual(sample(self.metrics(), "edgepin_node_draining"), 0)


class PrometheusParserTest(unittest.TestCase):
    """The test parser refuses what it must, so that 'it parses' means
    something."""

    GOOD = ('# HELP a_total Things.\n# TYPE a_total counter\na_total{x="1"} 3\na_total{x="2\\"\\n\\\\"} 4\n'
            '# TYPE b gauge\nb NaN\nb{y="z"} -1.5e3 1700000000\n')

    def test_good(self):
        f = parse_prometheus(self.GOOD)
        self.assertEqual(f["a_total"]["type"], "counter")
        self.assertEqual(f["a_total"]["help"], "Things.")
        self.assertEqual(sample(f, "a_total", x='2"\n\\'), 4)
        self.assertTrue(math.isnan(sample(f, "b")))
        self.assertEqual(sample(f, "b", y="z"), -1500)

    def test_bad(self):
        bad = [
            self.GOOD[:-1],                                              # no final newline
            "# TYPE a_total counter\na_total -1\n",                      # negative counter
            "# TYPE a gauge\na 1\n# TYPE a gauge\n",                      # second TYPE
            "# TYPE a gauge\na 1\n# HELP a late\n",                       # HELP after samples
            "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 2\n",  # split family
            "# TYPE a gauge\na 1\na 2\n",                                 # duplicate
            "# TYPE a gauge\na{x=\"\\t\"} 1\n",                           # bad escape
            "# TYPE a gauge\na{__x=\"1\"} 1\n",                           # reserved label
            "# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                     # label twice
            "# TYPE a gauge\na 1.2.3\n",                                  # bad value
            "# TYPE a gauge\na{x=\"1\" 1\n",                              # unterminated labels
            "# TYPE a gauge\n1a 1\n",                                     # bad name
            "# TYPE a thing\na 1\n",                                      # bad type
            "# TYPE a gauge\na1\n",                                       # no space before value
        ]
        for text in bad:
            with self.subTest(text=text):
                with self.assertRaises(PrometheusError):
                    parse_prometheus(text)


if __name__ == "__main__":
    unittest.main()
