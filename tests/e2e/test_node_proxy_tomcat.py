"""End-to-end proof of issue 4: edgepin-node-proxy in front of one real
Tomcat 10, as on a production node.

One Tomcat (tests/e2e/tomcat.py, the demo app of deploy/tomcat/ with
RemoteIpValve) and one edgepin-node-proxy (node1 of conf/, PKI from
deploy/make-pki.sh, free ports on loopback) run for the whole class. The
node-proxy has three listeners:
  https     TLS, no PROXY header: clients connect directly (curl, Python ssl)
  https-lb  TLS behind the lb: PROXY v2 required, trusted from LB_SOURCE only
  http      plain HTTP, no PROXY header
Tomcat echoes what it received (index.jsp: getRemoteAddr, getScheme,
isSecure, getServerPort; headers.jsp: every header), so each assertion
reads Tomcat's own view of the request.

Client source addresses are chosen so that what Tomcat reports can only
have come from one place: direct clients bind CLIENT_A / CLIENT_B, which
no other component uses; a PROXY header names a TEST-NET address.

The tests are numbered: they share the two processes, and the last one
stops and restarts Tomcat. Each test waits for a healthy node first.

Run through ctest (it sets EDGEPIN_NODE_PROXY), or:
    cd tests/e2e && EDGEPIN_NODE_PROXY=.../edgepin-node-proxy \\
        /usr/bin/python3 -m unittest -v test_node_proxy_tomcat
"""

import hashlib
import http.client
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import edgepin_testlib as lib  # noqa: E402
from tomcat import BULK_JAVA_OPTS, TomcatInstance, parse_kv, pattern_chunks  # noqa: E402

NODE = "node1"
NODE_ADDRESS = "127.0.0.11"   # node1's address in conf/cluster.json; Tomcat listens there too
CLIENT_A = "127.0.0.31"       # direct clients' source addresses (used by nothing else)
CLIENT_B = "127.0.0.32"
LB_SOURCE = "127.0.0.1"       # the "lb": the only trusted PROXY source
UNTRUSTED = "127.0.0.2"       # a source that may not send PROXY headers
PUBLIC_TLS_PORT = 443
PUBLIC_HTTP_PORT = 80
# Tomcat's think time beyond which the node-proxy answers 504. Long enough
# that a busy 2-core machine never trips it by accident (the slowest
# legitimate wait here is a 400 ms slow.jsp), short enough to keep the test
# quick.
RESPONSE_TIMEOUT_MS = 2000
SLOW_MS = 5000                # slow.jsp's sleep in the 504 test: well beyond it
# Connecting to Tomcat. A stopped Tomcat refuses at once, so its error
# answers must come long before this: FAST_ERROR_S proves no timer ran out
# (the margin is for a busy machine's TLS handshakes).
CONNECT_TIMEOUT_MS = 5000
FAST_ERROR_S = 2.5
IO_TIMEOUT = 60.0             # any single socket wait
HEALTH_TIMEOUT = 20.0         # health to reach the expected state
STEP = 0.05

BULK_BYTES = 1 << 30          # 1 GiB each way
BULK_SEED = "issue4-bulk"
RSS_SAMPLE_INTERVAL = 0.1
# The node-proxy's RSS may grow by at most this much while 1 GiB passes
# each way. A streaming proxy holds per transfer only what its watermarks
# allow (node-proxy/client_codec.h, exchange.h): 64 KiB queued towards each side
# before it stops reading the other, a 64 KiB body pre-buffer, a response
# head of at most 32 KiB, OpenSSL's record buffers (about 2 x 17 KiB) and
# libevent's read chunks: well under 1 MiB for the one client and one
# Tomcat connection in flight. Measured growth: under 0.5 MiB, from a cold
# start as well as after the other tests. The bound adds allocator slack
# (glibc gives each worker thread an arena that grows in steps and keeps
# some freed memory): 8 MiB is far above what the buffers hold and below
# what buffering even 1 % of one transfer (10 MiB) would take.
RSS_GROWTH_BOUND_KIB = 8 * 1024

FORGED = {
    # Every forwarding header a client might forge, with values that would
    # be visible in Tomcat's view if any of them got through.
    "X-Forwarded-For": "198.51.100.66, 127.0.0.99",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-Port": "8443",
    "X-Forwarded-Host": "evil.example",
    "X-Forwarded-SSL": "forged-off",
    "X-Forwarded-Protocol": "forged-http",
    "Forwarded": "for=198.51.100.66;proto=http;host=evil.example",
    "X-Real-IP": "198.51.100.66",
    # The peer link's own fields: only a node-proxy writes them.
    "X-Edgepin-Relayed": "forged-node2",
    "X-Edgepin-Sni": "evil.example",
}
# Strings that appear in Tomcat's view only if a forged header got through
# (the forged ports and protos are checked by exact value instead).
FORGED_MARKERS = ("198.51.100.66", "127.0.0.99", "evil.example", "forged")


# ------------------------------------------------------------------ helpers

def proc_status_kib(pid):
    """VmRSS and VmHWM of `pid` in KiB, from /proc/PID/status."""
    values = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def header_lines(body):
    """headers.jsp's answer as a list of (lower-case name, value)."""
    pairs = []
    for line in body.decode("utf-8").splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            pairs.append((name.lower(), value))
    return pairs


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (lower-case name, value)
        self.body = body

    def header(self, name):
        values = self.all(name)
        return values[-1] if values else None

    def all(self, name):
        return [v for n, v in self.headers if n == name.lower()]


def read_response(f, method="GET"):
    """Reads one HTTP/1.1 response from the buffered binary file `f`,
    leaving whatever follows (the next pipelined response) in the buffer.
    Understands Content-Length, chunked and close-delimited bodies."""
    line = f.readline(65536)
    if not line:
        raise ConnectionError("connection closed before a response")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise ValueError("not a status line: %r" % line)
    status = int(parts[1])
    headers = []
    for _ in range(200):
        line = f.readline(65536)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    else:
        raise ValueError("more than 200 header lines")
    r = Response(status, headers, b"")
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return r
    if (r.header("transfer-encoding") or "").lower() == "chunked":
        chunks = []
        while True:
            size = int(f.readline(1024).split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass
                break
            data = f.read(size)
            if len(data) != size:
                raise ConnectionError("chunk cut short")
            chunks.append(data)
            f.readline(16)
        r.body = b"".join(chunks)
    elif r.header("content-length") is not None:
        n = int(r.header("content-length"))
        r.body = f.read(n)
        if len(r.body) != n:
            raise ConnectionError("body cut short: %d of %d bytes" % (len(r.body), n))
    else:
        r.body = f.read()
    return r


class RssSampler:
    """Samples a process's VmRSS in a thread until stopped; keeps the peak."""

    def __init__(self, pid):
        self.pid = pid
        self.peak_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                rss = proc_status_kib(self.pid)["VmRSS"]
            except OSError:  # the process is gone: the test will say so
                return
            self.peak_kib = max(self.peak_kib, rss)
            self.samples += 1
            self._stop.wait(RSS_SAMPLE_INTERVAL)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)
        return False


# --------------------------------------------------------------------- test

class NodeProxyInFrontOfTomcat(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory(prefix="edgepin-e2e-np-")
        cls.addClassCleanup(cls._tmp.cleanup)
        tmp = cls._tmp.name

        conf = lib.conf_with_pki(os.path.join(tmp, "conf"))
        cls.ca_file = os.path.join(conf, "pki", "ca.crt")

        # Tomcat first: the node-proxy's upstream is its port. C2 compiler
        # on (BULK_JAVA_OPTS): the gigabyte transfers hash in Tomcat.
        cls.tomcat = TomcatInstance(os.path.join(tmp, "tomcat"), NODE, NODE_ADDRESS,
                                    java_opts=BULK_JAVA_OPTS)
        cls.addClassCleanup(cls.tomcat.stop)
        cls.tomcat.start()

        cls.tls_port = lib.free_port(NODE_ADDRESS)
        cls.lb_port = lib.free_port(NODE_ADDRESS)
        cls.http_port = lib.free_port(NODE_ADDRESS)
        lib.place_node(conf, NODE, NODE_ADDRESS, cls.tls_port, cls.http_port, cls.tomcat.port)
        np = lib.read_json(os.path.join(conf, "node-proxy.json"))
        np["threads"] = 2
        np["listeners"] = [
            {"name": "https", "tls": True, "port": "tls", "proxy_protocol": "none",
             "public_port": PUBLIC_TLS_PORT},
            {"name": "https-lb", "tls": True, "port": cls.lb_port, "proxy_protocol": "v2",
             "trusted_proxies": [LB_SOURCE + "/32"], "public_port": PUBLIC_TLS_PORT},
            {"name": "http", "tls": False, "port": "http", "proxy_protocol": "none",
             "public_port": PUBLIC_HTTP_PORT},
        ]
        np["upstream"]["response_timeout_ms"] = RESPONSE_TIMEOUT_MS
        np["upstream"]["connect_timeout_ms"] = CONNECT_TIMEOUT_MS
        # health.jsp creates no session (the default "/" would make one per
        # check). fall 2: a check that a busy machine delays once does not
        # mark Tomcat down in the middle of the bulk transfers.
        np["health"].update({"check_path": "/health.jsp", "check_interval_ms": 500,
                             "check_timeout_ms": 500, "rise": 1, "fall": 2})
        np["stats"]["allow"] = ["127.0.0.0/8"]
        lib.write_json(os.path.join(conf, "node-proxy.json"), np)

        cls.node_proxy = lib.Proc([lib.binary("EDGEPIN_NODE_PROXY"), "--config-dir", conf,
                                   "--node", NODE], "node-proxy", tmp)
        cls.addClassCleanup(cls.node_proxy.stop)
        cls.node_proxy.wait_for_stderr("workers; listeners:", timeout=15)
        cls.node_proxy.wait_for_stderr("is UP", timeout=HEALTH_TIMEOUT)

    @classmethod
    def tearDownClass(cls):
        # A clean exit on SIGTERM is part of the contract (and where a
        # sanitizer would report); Tomcat stops in the class cleanups.
        rc = cls.node_proxy.stop(timeout=15)
        if rc != 0:
            raise AssertionError("node-proxy did not exit cleanly:\n" + cls.node_proxy.describe())

    def setUp(self):
        self.assertTrue(self.node_proxy.running(), self.node_proxy.describe())
        self.wait_health(200)

    # ----------------------------------------------------------- clients

    def tls_context(self, tls=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca_file)  # and the name: node1 is in the SAN
        if tls:
            version = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[tls]
            ctx.minimum_version = ctx.maximum_version = version
        return ctx

    def connect(self, listener="https", source=CLIENT_A, tls=None, proxy_header=None):
        """A connected client socket on one of the node-proxy's listeners
        (TLS verified against the cluster CA for node1)."""
        port = {"https": self.tls_port, "https-lb": self.lb_port, "http": self.http_port}[listener]
        raw = lib.tcp_connect(NODE_ADDRESS, port, timeout=IO_TIMEOUT, source=(source, 0))
        try:
            if proxy_header:
                raw.sendall(proxy_header)
            if listener == "http":
                return raw
            return self.tls_context(tls).wrap_socket(raw, server_hostname=NODE)
        except BaseException:
            raw.close()
            raise

    def request(self, method, path, listener="https", source=CLIENT_A, tls=None, headers=None,
                proxy_header=None):
        """One request on a new connection. Returns (Response, TLS version
        or None)."""
        with self.connect(listener, source, tls, proxy_header) as s:
            version = s.version() if isinstance(s, ssl.SSLSocket) else None
            head = "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n" % (method, path, NODE)
            for name, value in (headers or {}).items():
                head += "%s: %s\r\n" % (name, value)
            s.sendall((head + "\r\n").encode("latin-1"))
            with s.makefile("rb") as f:
                return read_response(f, method), version

    def kv(self, path="/index.jsp", **kwargs):
        r, version = self.request("GET", path, **kwargs)
        self.assertEqual(r.status, 200, r.body[:300])
        return parse_kv(r.body.decode()), version

    def lb_header(self, client=("203.0.113.7", 50123), public=("198.51.100.1", PUBLIC_TLS_PORT)):
        return lib.proxy_v2(client, public)

    def health(self):
        r, _ = self.request("GET", "/_edgepin/health", listener="http")
        return r

    def wait_health(self, status, timeout=HEALTH_TIMEOUT):
        deadline = time.monotonic() + timeout
        r = self.health()
        while r.status != status and time.monotonic() < deadline:
            time.sleep(STEP)
            r = self.health()
        self.assertEqual(r.status, status, "health: %r\n%s" % (r.body, self.node_proxy.describe()))
        return r

    def stats(self):
        r, _ = self.request("GET", "/_edgepin/stats?json", listener="http")
        self.assertEqual(r.status, 200, r.body)
        return json.loads(r.body)

    def curl(self, urls, source=CLIENT_B, tls=None, headers=None):
        """Runs one curl for `urls` (paths on the https listener), verified
        against the cluster CA. Returns (bodies joined, curl's -v output)."""
        argv = ["curl", "-sS", "-v", "--noproxy", "*", "--max-time", str(int(IO_TIMEOUT)),
                "--cacert", self.ca_file, "--interface", source,
                "--resolve", "%s:%d:%s" % (NODE, self.tls_port, NODE_ADDRESS),
                "-w", "\n@@ http_code=%{http_code} num_connects=%{num_connects}\n"]
        if tls == "1.2":
            argv += ["--tlsv1.2", "--tls-max", "1.2"]
        elif tls == "1.3":
            argv += ["--tlsv1.3"]
        for name, value in (headers or {}).items():
            argv += ["-H", "%s: %s" % (name, value)]
        argv += ["https://%s:%d%s" % (NODE, self.tls_port, u) for u in urls]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=IO_TIMEOUT + 10)
        err = done.stderr.decode("utf-8", "replace")
        self.assertEqual(done.returncode, 0, err)
        return done.stdout.decode("utf-8", "replace"), err

    def assert_real_tls_client(self, kv, client_ip, port=PUBLIC_TLS_PORT):
        """Tomcat's view (index.jsp after RemoteIpValve) of a request that
        came over TLS from client_ip."""
        self.assertEqual(ipaddress.ip_address(kv["remote_addr"]), ipaddress.ip_address(client_ip), kv)
        self.assertEqual(kv["scheme"], "https", kv)
        self.assertEqual(kv["secure"], "true", kv)
        self.assertEqual(kv["server_port"], str(port), kv)
        # The valve consumed the node-proxy's single X-Forwarded-For entry.
        self.assertEqual(kv["x_forwarded_for"], "", kv)
        self.assertEqual(kv["x_forwarded_proto"], "https", kv)
        self.assertEqual(kv["x_forwarded_port"], str(port), kv)
        self.assertEqual(kv["node"], NODE, kv)
        # Tomcat's own connection came from the node-proxy, on its address.
        self.assertEqual(kv["local_addr"], NODE_ADDRESS, kv)
        self.assertEqual(kv["local_port"], str(self.tomcat.port), kv)

    # ------------------------------------------------------------- tests

    def test_10_health_answers_on_every_listener(self):
        for listener, source, header in (("https", CLIENT_A, None),
                                          ("https-lb", LB_SOURCE, self.lb_header()),
                                          ("http", CLIENT_B, None)):
            with self.subTest(listener=listener):
                r, _ = self.request("GET", "/_edgepin/health", listener=listener, source=source,
                                    proxy_header=header)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.body, b"UP\n")
                self.assertTrue(r.header("content-type").startswith("text/plain"))
        self.assertTrue(self.stats()["tomcat"]["up"])

    def test_20_python_ssl_tls12_and_tls13_tomcat_sees_the_client(self):
        for tls in ("1.2", "1.3"):
            with self.subTest(tls=tls):
                r, version = self.request("GET", "/index.jsp", tls=tls, source=CLIENT_A)
                self.assertEqual(version, "TLSv" + tls)
                self.assertEqual(r.status, 200, r.body)
                kv = parse_kv(r.body.decode())
                self.assert_real_tls_client(kv, CLIENT_A)
                # Tomcat believed the request was HTTPS: its session cookie is Secure.
                cookies = [c for c in r.all("set-cookie") if c.startswith("JSESSIONID=")]
                self.assertEqual(len(cookies), 1, r.headers)
                self.assertIn("Secure", cookies[0])
        # Over plain HTTP the same Tomcat sees http, port 80, not secure.
        kv, _ = self.kv(listener="http", source=CLIENT_B)
        self.assertEqual(kv["remote_addr"], CLIENT_B)
        self.assertEqual(kv["scheme"], "http")
        self.assertEqual(kv["secure"], "false")
        self.assertEqual(kv["server_port"], str(PUBLIC_HTTP_PORT))

    def test_21_curl_tls12_and_tls13_tomcat_sees_the_client(self):
        for tls in ("1.2", "1.3"):
            with self.subTest(tls=tls):
                out, err = self.curl(["/index.jsp"], source=CLIENT_B, tls=tls)
                self.assertRegex(err, r"SSL connection using TLSv%s" % re.escape(tls))
                self.assertIn("ALPN: server accepted http/1.1", err)
                self.assertIn("@@ http_code=200 ", out)
                self.assert_real_tls_client(parse_kv(out), CLIENT_B)

    def test_30_forged_forwarding_headers_never_reach_tomcat(self):
        probe = {"X-Client-Probe": "probe-30"}  # an ordinary header: passes
        cases = [("python https", lambda h: self.request("GET", "/headers.jsp", headers=h)[0]),
                 ("python http", lambda h: self.request("GET", "/headers.jsp", listener="http",
                                                        source=CLIENT_B, headers=h)[0])]
        lower = {k.lower(): v for k, v in FORGED.items()}
        upper = {k.upper(): v for k, v in FORGED.items()}
        for name, send in cases:
            for variant in (FORGED, lower, upper):
                with self.subTest(client=name, case=next(iter(variant))):
                    r = send(dict(variant, **probe))
                    self.assertEqual(r.status, 200, r.body)
                    got = header_lines(r.body)
                    self.assertIn(("x-client-probe", "probe-30"), got)
                    text = r.body.decode()
                    for marker in FORGED_MARKERS:
                        self.assertNotIn(marker, text)
                    names = [n for n, _ in got]
                    for absent in ("forwarded", "x-real-ip", "x-forwarded-host",
                                   "x-edgepin-relayed", "x-edgepin-sni"):
                        self.assertNotIn(absent, names)
                    tls = name.endswith("https")
                    proto = "https" if tls else "http"
                    # Exactly the node-proxy's own values, once each.
                    self.assertEqual([v for n, v in got if n == "x-forwarded-proto"], [proto])
                    self.assertEqual([v for n, v in got if n == "x-forwarded-protocol"], [proto])
                    self.assertEqual([v for n, v in got if n == "x-forwarded-port"],
                                     [str(PUBLIC_TLS_PORT if tls else PUBLIC_HTTP_PORT)])
                    self.assertEqual([v for n, v in got if n == "x-forwarded-ssl"], ["on"] if tls else [])
        # Tomcat's view with forged headers: the socket's client, not the forger's claims.
        kv, _ = self.kv(headers=FORGED)
        self.assert_real_tls_client(kv, CLIENT_A)
        # Same through curl.
        out, _ = self.curl(["/index.jsp"], source=CLIENT_B, headers=FORGED)
        self.assert_real_tls_client(parse_kv(out), CLIENT_B)
        out, _ = self.curl(["/headers.jsp"], source=CLIENT_B, headers=FORGED)
        for marker in FORGED_MARKERS:
            self.assertNotIn(marker, out.split("\n@@")[0])

    def test_40_proxy_v2_from_the_trusted_lb_sets_the_client(self):
        for tls in ("1.2", "1.3"):
            with self.subTest(tls=tls):
                kv, version = self.kv(listener="https-lb", source=LB_SOURCE, tls=tls,
                                      proxy_header=self.lb_header(), headers=FORGED)
                self.assertEqual(version, "TLSv" + tls)
                self.assert_real_tls_client(kv, "203.0.113.7")
        # The public port is the PROXY header's destination port.
        kv, _ = self.kv(listener="https-lb", source=LB_SOURCE,
                        proxy_header=self.lb_header(public=("198.51.100.1", 4443)))
        self.assert_real_tls_client(kv, "203.0.113.7", port=4443)
        # IPv6 clients too.
        kv, _ = self.kv(listener="https-lb", source=LB_SOURCE,
                        proxy_header=self.lb_header(("2001:db8::7", 50124), ("2001:db8::1", 443)))
        self.assert_real_tls_client(kv, "2001:db8::7")
        # A LOCAL header (the lb's own health check) carries no client: the
        # peer is the client.
        kv, _ = self.kv(listener="https-lb", source=LB_SOURCE, proxy_header=lib.proxy_v2(local=True))
        self.assert_real_tls_client(kv, LB_SOURCE)

    def test_41_proxy_header_from_an_untrusted_source_is_refused(self):
        before = self.stats()["connections"]["refused_untrusted"]
        with lib.tcp_connect(NODE_ADDRESS, self.lb_port, timeout=IO_TIMEOUT,
                             source=(UNTRUSTED, 0)) as s:
            # A well-formed header, then a ClientHello: neither helps.
            try:
                s.sendall(self.lb_header(client=("203.0.113.99", 1)))
                data = s.recv(1024)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            self.assertEqual(data, b"")  # closed without a byte
        self.node_proxy.wait_for_stderr("from %s:" % UNTRUSTED, timeout=10)
        self.assertRegex(self.node_proxy.stderr_text(),
                         r"connection from 127\.0\.0\.2:\d+ refused: not a trusted PROXY source")
        deadline = time.monotonic() + 10
        while self.stats()["connections"]["refused_untrusted"] < before + 1 and time.monotonic() < deadline:
            time.sleep(STEP)
        self.assertEqual(self.stats()["connections"]["refused_untrusted"], before + 1)
        # A PROXY header on the direct listener, which expects none, is not
        # TLS: the handshake fails and nothing reaches Tomcat.
        raw = lib.tcp_connect(NODE_ADDRESS, self.tls_port, timeout=IO_TIMEOUT, source=(UNTRUSTED, 0))
        with raw:
            raw.sendall(self.lb_header(client=("203.0.113.99", 2)))
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                self.tls_context().wrap_socket(raw, server_hostname=NODE).close()
        with open(self.tomcat.access_log, errors="replace") as f:
            self.assertNotIn("203.0.113.99", f.read())

    def test_50_keep_alive_many_requests_on_one_connection(self):
        reuses_before = self.stats()["upstream"]["reuses"]
        with self.connect(tls="1.3") as s, s.makefile("rb") as f:
            session_id = None
            for i in range(1, 6):
                cookie = "Cookie: JSESSIONID=%s\r\n" % session_id if session_id else ""
                s.sendall(("GET /index.jsp HTTP/1.1\r\nHost: node1\r\n%s\r\n" % cookie).encode())
                r = read_response(f)
                self.assertEqual(r.status, 200, r.body)
                self.assertIsNone(r.header("connection"))  # not closing
                kv = parse_kv(r.body.decode())
                self.assertEqual(kv["counter"], str(i))  # one Tomcat session throughout
                session_id = kv["session_id"]
                self.assert_real_tls_client(kv, CLIENT_A)
        # The node-proxy kept its connection to Tomcat too.
        self.assertGreaterEqual(self.stats()["upstream"]["reuses"], reuses_before + 4)
        # curl: two URLs, one connection (the second needed no connect).
        out, _ = self.curl(["/index.jsp", "/health.jsp"])
        self.assertEqual(re.findall(r"@@ http_code=(\d+) num_connects=(\d+)", out),
                         [("200", "1"), ("200", "0")])

    def test_51_pipelined_requests_are_answered_in_order(self):
        requests = [
            ("GET", "/slow.jsp?ms=400", {}),           # the slowest first: the rest wait for it
            ("GET", "/headers.jsp", {"X-Seq": "1"}),
            ("HEAD", "/download.jsp?bytes=5", {}),
            ("GET", "/download.jsp?bytes=100000&seed=pipe", {}),
            ("GET", "/_edgepin/health", {}),            # answered by the node-proxy itself
            ("POST", "/upload.jsp", {"Content-Length": "5"}),
            ("GET", "/headers.jsp", {"X-Seq": "2", "Connection": "close"}),
        ]
        wire = b""
        for method, path, headers in requests:
            wire += ("%s %s HTTP/1.1\r\nHost: node1\r\n" % (method, path)).encode()
            wire += b"".join(("%s: %s\r\n" % kv).encode() for kv in headers.items()) + b"\r\n"
            if method == "POST":
                wire += b"hello"
        with self.connect(tls="1.2") as s, s.makefile("rb") as f:
            s.sendall(wire)  # all at once, before any answer
            got = [read_response(f, method) for method, _, _ in requests]
            self.assertEqual(f.read(), b"")  # then closed, as the last one asked
        self.assertEqual([r.status for r in got], [200] * len(requests))
        self.assertEqual(parse_kv(got[0].body.decode())["slept_ms"], "400")
        self.assertIn(("x-seq", "1"), header_lines(got[1].body))
        self.assertEqual((got[2].header("content-length"), got[2].body), ("5", b""))
        self.assertEqual(got[3].body, b"".join(pattern_chunks(100000, "pipe")))
        self.assertEqual(got[4].body, b"UP\n")
        self.assertEqual(parse_kv(got[5].body.decode())["sha256"], hashlib.sha256(b"hello").hexdigest())
        self.assertIn(("x-seq", "2"), header_lines(got[6].body))

    def test_55_chunked_bodies_both_ways(self):
        size = 3 * 65536 + 777
        with self.connect() as s, s.makefile("rb") as f:
            s.sendall(b"POST /upload.jsp HTTP/1.1\r\nHost: node1\r\nTransfer-Encoding: chunked\r\n\r\n")
            for chunk in pattern_chunks(size, "chunked-up"):
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
            r = read_response(f)
            self.assertEqual(r.status, 200, r.body)
            kv = parse_kv(r.body.decode())
            self.assertEqual(kv["bytes"], str(size))
            self.assertEqual(kv["transfer_encoding"], "chunked")
            self.assertEqual(kv["sha256"],
                             hashlib.sha256(b"".join(pattern_chunks(size, "chunked-up"))).hexdigest())
            s.sendall(b"GET /download.jsp?bytes=%d&seed=chunked-down&chunked=1 HTTP/1.1\r\n"
                      b"Host: node1\r\n\r\n" % size)
            r = read_response(f)
            self.assertEqual(r.status, 200)
            self.assertEqual(r.header("transfer-encoding"), "chunked")
            self.assertEqual(r.body, b"".join(pattern_chunks(size, "chunked-down")))

    def test_60_slow_tomcat_gets_504_and_the_connection_lives_on(self):
        with self.connect() as s, s.makefile("rb") as f:
            began = time.monotonic()
            s.sendall(b"GET /slow.jsp?ms=%d HTTP/1.1\r\nHost: node1\r\n\r\n" % SLOW_MS)
            r = read_response(f)
            elapsed = time.monotonic() - began
            self.assertEqual(r.status, 504, r.body)
            self.assertLess(len(r.body), 512)  # a short body
            self.assertGreaterEqual(elapsed, RESPONSE_TIMEOUT_MS / 1000.0 - 0.05)
            self.assertLess(elapsed, SLOW_MS / 1000.0)  # not Tomcat's answer, late
            # The request was read whole: the connection serves the next one.
            s.sendall(b"GET /health.jsp HTTP/1.1\r\nHost: node1\r\n\r\n")
            r = read_response(f)
            self.assertEqual(r.status, 200)
            self.assertEqual(parse_kv(r.body.decode())["status"], "ok")
        self.node_proxy.wait_for_stderr("status=504", timeout=10)
        self.assertRegex(self.node_proxy.stderr_text(),
                         r"client=127\.0\.0\.31:\d+ .*path=/slow\.jsp\?ms=%d status=504" % SLOW_MS)

        # A response that starts and then stalls cannot become a 504: the
        # node-proxy cuts the connection, and the client sees a truncated
        # body, never a complete one.
        with self.connect() as s, s.makefile("rb") as f:
            began = time.monotonic()
            s.sendall(b"GET /slow.jsp?ms=%d&flush=1 HTTP/1.1\r\nHost: node1\r\n\r\n" % SLOW_MS)
            with self.assertRaises((ConnectionError, ValueError, ssl.SSLError)):
                read_response(f)
            self.assertLess(time.monotonic() - began, SLOW_MS / 1000.0)

    def test_70_one_gigabyte_up_and_down_with_bounded_memory(self):
        pid = self.node_proxy.pid
        before = proc_status_kib(pid)
        expected = hashlib.sha256()

        def body():
            for chunk in pattern_chunks(BULK_BYTES, BULK_SEED):
                expected.update(chunk)
                yield chunk

        with RssSampler(pid) as sampler:
            began = time.monotonic()
            with self.connect() as s:
                conn = http.client.HTTPConnection(NODE, timeout=IO_TIMEOUT)
                conn.sock = s
                conn.request("POST", "/upload.jsp", body=body(),
                             headers={"Content-Length": str(BULK_BYTES),
                                      "Content-Type": "application/octet-stream"})
                r = conn.getresponse()
                up = parse_kv(r.read().decode())
                self.assertEqual(r.status, 200, up)
                upload_s = time.monotonic() - began

                began = time.monotonic()
                conn.request("GET", "/download.jsp?bytes=%d&seed=%s" % (BULK_BYTES, BULK_SEED))
                r = conn.getresponse()
                self.assertEqual(r.status, 200)
                self.assertEqual(r.headers["Content-Length"], str(BULK_BYTES))
                got = hashlib.sha256()
                received = 0
                while chunk := r.read(1 << 20):
                    got.update(chunk)
                    received += len(chunk)
                download_s = time.monotonic() - began
                conn.close()
        after = proc_status_kib(pid)
        print("\n1 GiB upload %.1f s, download %.1f s; node-proxy RSS before %d KiB, peak sampled "
              "%d KiB (%d samples), after %d KiB; VmHWM %d -> %d KiB"
              % (upload_s, download_s, before["VmRSS"], sampler.peak_kib, sampler.samples,
                 after["VmRSS"], before["VmHWM"], after["VmHWM"]), file=sys.stderr)

        self.assertEqual(up["bytes"], str(BULK_BYTES))
        self.assertEqual(up["content_length"], str(BULK_BYTES))
        self.assertEqual(up["sha256"], expected.hexdigest())  # what Tomcat hashed = what was sent
        self.assertEqual(received, BULK_BYTES)
        self.assertEqual(got.hexdigest(), expected.hexdigest())  # download.jsp's stream, intact
        self.assertGreater(sampler.samples, 10)
        if os.environ.get("EDGEPIN_SANITIZER"):
            # ASan's quarantine and shadow memory grow the RSS by hundreds
            # of MiB whatever the proxy buffers; tests/run.sh asserts the
            # bound in its uninstrumented "fast" stage (this test runs there
            # too) and only the bytes here.
            return
        self.assertLess(sampler.peak_kib - before["VmRSS"], RSS_GROWTH_BOUND_KIB)
        self.assertLess(after["VmHWM"] - before["VmHWM"], RSS_GROWTH_BOUND_KIB)
        self.assertLess(after["VmRSS"] - before["VmRSS"], RSS_GROWTH_BOUND_KIB)

    def test_80_tomcat_stopped_then_started_again(self):
        kv, _ = self.kv()
        self.assertEqual(kv["node"], NODE)
        connect_errors_before = self.stats()["upstream"]["connect_errors"]
        self.tomcat.stop()

        # At once, before the health check noticed: an error answer, fast
        # (a refused connect, a dead pooled connection retried), no hang.
        began = time.monotonic()
        r, _ = self.request("GET", "/index.jsp")
        self.assertIn(r.status, (502, 503), r.body)
        self.assertLess(time.monotonic() - began, FAST_ERROR_S)
        self.assertLess(len(r.body), 512)

        # Health follows within fall x interval; then requests get 503
        # (documented: 503 when the health checker says the upstream is down).
        r = self.wait_health(503)
        self.assertIn(b"tomcat", r.body.lower())
        self.node_proxy.wait_for_stderr("is DOWN", timeout=10)
        self.assertFalse(self.stats()["tomcat"]["up"])
        for listener, source, header in (("https", CLIENT_A, None),
                                         ("https-lb", LB_SOURCE, self.lb_header()),
                                         ("http", CLIENT_B, None)):
            with self.subTest(listener=listener):
                began = time.monotonic()
                r, _ = self.request("GET", "/index.jsp", listener=listener, source=source,
                                    proxy_header=header)
                self.assertEqual(r.status, 503, r.body)
                self.assertLess(time.monotonic() - began, FAST_ERROR_S)
        self.assertGreater(self.stats()["upstream"]["connect_errors"], connect_errors_before)

        # The same Tomcat (same port) again: health 200, requests 200.
        self.tomcat.start()
        self.wait_health(200)
        kv, _ = self.kv()
        self.assert_real_tls_client(kv, CLIENT_A)
        self.assertTrue(self.stats()["tomcat"]["up"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
