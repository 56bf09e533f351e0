"""edgepin-node-proxy up to a ready client connection, as a real process:
TLS 1.2/1.3 termination, resumption seen in the stats, PROXY v2 from
trusted and untrusted sources, garbage instead of a PROXY header, an
sslscan of the TLS listener, and the health endpoint following the
upstream's state.

Each test gets its own config directory: conf/ copied, its PKI made by
deploy/make-pki.sh (once per run, then copied), node1's ports set to free
ones, in front of a small HTTP/1.1 upstream on loopback that echoes the
request it received as JSON.

Run through ctest (EDGEPIN_NODE_PROXY is set there), or:
    EDGEPIN_NODE_PROXY=build/node-proxy/edgepin-node-proxy \
        /usr/bin/python3 -m unittest -v test_node_proxy_tls
"""

import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time
import unittest

import edgepin_testlib as lib

REPO = lib.REPO
NODE = "node1"
NODE_ADDRESS = "127.0.0.11"  # node1's address in conf/cluster.json
NODE_TAG = 1
TRUSTED = "127.0.0.1"        # the test's own source address, trusted as the "lb"
UNTRUSTED = "127.0.0.2"      # a source the listeners do not trust
STEP = 0.05                  # polling step, seconds

TEMPLATE = lib.ConfTemplate("edgepin-np-conf-")  # conf/ with its PKI, made once per run
setUpModule, tearDownModule = TEMPLATE.make, TEMPLATE.cleanup


class NodeProxyTlsTest(lib.EdgepinTestCase):
    """Starts node1's node-proxy with PROXY v2 required on both listeners
    (trusted: 127.0.0.1 only) unless a test says otherwise."""

    def make_config(self, proxy_protocol="v2", upstream_port=None):
        conf = TEMPLATE.copy_to(os.path.join(self.tmp, "conf"))
        self.tls_port = lib.free_port(NODE_ADDRESS)
        self.http_port = lib.free_port(NODE_ADDRESS)
        self.upstream_port = upstream_port or lib.free_port(NODE_ADDRESS)
        lib.place_node(conf, NODE, NODE_ADDRESS, self.tls_port, self.http_port, self.upstream_port)
        np = lib.read_json(os.path.join(conf, "node-proxy.json"))
        np["threads"] = 2
        for listener in np["listeners"]:
            listener["proxy_protocol"] = proxy_protocol
            if proxy_protocol == "none":
                listener.pop("trusted_proxies", None)
            else:
                listener["trusted_proxies"] = [TRUSTED + "/32"]
        np["health"].update({"check_interval_ms": 200, "check_timeout_ms": 150, "rise": 1, "fall": 1})
        np["stats"]["allow"] = ["127.0.0.0/8"]
        lib.write_json(os.path.join(conf, "node-proxy.json"), np)
        return conf

    def start_upstream(self):
        # JSON: the tests read the headers the node-proxy forwarded.
        return lib.start_echo_upstream(self, NODE_ADDRESS, self.upstream_port, fmt="json")

    def start_node_proxy(self, conf):
        proc = self.spawn([lib.binary("EDGEPIN_NODE_PROXY"), "--config-dir", conf, "--node", NODE],
                          "node-proxy")
        proc.wait_for_stderr("workers; listeners:", timeout=15)
        self.node_proxy = proc
        return proc

    def setup_node(self, proxy_protocol="v2", upstream=True, wait_up=True):
        conf = self.make_config(proxy_protocol)
        if upstream:
            self.upstream = self.start_upstream()
        self.start_node_proxy(conf)
        if upstream and wait_up:
            self.node_proxy.wait_for_stderr("is UP", timeout=10)

    # --------------------------------------------------------- clients

    def header_for(self, client=("203.0.113.7", 50123), public=("198.51.100.1", 443)):
        return lib.proxy_v2(client, public)

    def https(self, path="/", proxy_header=None, source=TRUSTED, tls_max=None, no_ticket=False,
              session=None, sni=NODE, headers=None):
        """One request over a new TLS connection, with `headers` (a dict)
        besides Connection: close. Returns (status, body bytes, ssl socket
        facts)."""
        raw = lib.tcp_connect(NODE_ADDRESS, self.tls_port, source=(source, 0), timeout=10)
        try:
            if proxy_header:
                raw.sendall(proxy_header)
            ctx = lib.client_context(tls_max=tls_max, no_ticket=no_ticket)
            s = ctx.wrap_socket(raw, server_hostname=sni, session=session)
        except BaseException:
            raw.close()
            raise
        with s:
            facts = {"version": s.version(), "reused": s.session_reused,
                     "alpn": s.selected_alpn_protocol()}
            conn = http.client.HTTPConnection(NODE, timeout=10)
            conn.sock = s
            conn.request("GET", path, headers=dict(headers or {}, Connection="close"))
            resp = conn.getresponse()
            # Taken before the body is read: reading it to the end closes
            # the socket. A TLS 1.3 ticket arrived before the response.
            facts["session"] = s.session
            body = resp.read()
            conn.close()
        return resp.status, body, facts

    def http(self, path, proxy_header=None, source=TRUSTED):
        """One request over the plain listener. Returns (status, body)."""
        s = lib.tcp_connect(NODE_ADDRESS, self.http_port, source=(source, 0), timeout=10)
        with s:
            if proxy_header:
                s.sendall(proxy_header)
            conn = http.client.HTTPConnection(NODE, timeout=10)
            conn.sock = s
            conn.request("GET", path, headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
        return resp.status, body

    def stats(self, proxy=True):
        header = lib.proxy_v2((TRUSTED, 40000), (NODE_ADDRESS, self.http_port)) if proxy else None
        status, body = self.http("/_edgepin/stats?json", proxy_header=header)
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def wait_stats(self, predicate, what, timeout=5.0, proxy=True):
        """Polls the stats until predicate(stats) holds; returns them."""
        deadline = time.monotonic() + timeout
        stats = self.stats(proxy)
        while not predicate(stats) and time.monotonic() < deadline:
            time.sleep(STEP)
            stats = self.stats(proxy)
        self.assertTrue(predicate(stats), "%s; stats: %s" % (what, json.dumps(stats, indent=1)))
        return stats

    # ----------------------------------------------------------- tests

    def test_tls12_and_tls13_with_trusted_proxy_v2(self):
        self.setup_node()
        for tls in ("1.2", "1.3"):
            with self.subTest(tls=tls):
                status, body, facts = self.https("/who", proxy_header=self.header_for(), tls_max=tls)
                self.assertEqual(status, 200, body)
                self.assertEqual(facts["version"], "TLSv" + tls)
                self.assertEqual(facts["alpn"], None)  # the client offered none
                echo = json.loads(body)
                self.assertEqual(echo["path"], "/who")
                # The client address and public port come from the PROXY header.
                self.assertEqual(echo["headers"].get("x-forwarded-for"), "203.0.113.7")
                self.assertEqual(echo["headers"].get("x-forwarded-port"), "443")
                self.assertEqual(echo["headers"].get("x-forwarded-proto"), "https")
        # A LOCAL header (the lb's own check) is accepted: the peer is the client.
        status, body, _ = self.https("/local", proxy_header=lib.proxy_v2(local=True))
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["headers"].get("x-forwarded-for"), TRUSTED)
        # ALPN: http/1.1 is chosen when offered beside h2.
        raw = lib.tcp_connect(NODE_ADDRESS, self.tls_port, source=(TRUSTED, 0), timeout=10)
        raw.sendall(self.header_for())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2", "http/1.1"])
        with ctx.wrap_socket(raw, server_hostname=NODE) as s:
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1")

    # Issue 12 point 7: a backend that maps "_" to "-" in field names (CGI
    # variables, some servlet filters) would read X_Forwarded_For as the
    # proxy's X-Forwarded-For. The node-proxy drops such fields by default,
    # as nginx does ("underscores_in_headers off").
    UNDERSCORE_FIELDS = {"X_Forwarded_For": "6.6.6.6", "x_forwarded_proto": "http",
                         "X_Real_IP": "6.6.6.6", "Transfer_Encoding": "chunked",
                         "Content_Length": "5", "My_Header": "kept?"}

    def test_underscore_field_names_never_reach_the_upstream(self):
        self.setup_node()
        status, body, _ = self.https("/u", proxy_header=self.header_for(),
                                     headers=self.UNDERSCORE_FIELDS)
        self.assertEqual(status, 200, body)
        echo = json.loads(body)
        self.assertEqual([n for n in echo["header_names"] if "_" in n], [], echo)
        self.assertNotIn(b"6.6.6.6", body)
        self.assertEqual(echo["headers"]["x-forwarded-for"], "203.0.113.7")
        self.assertEqual(echo["headers"]["x-forwarded-proto"], "https")
        self.assertEqual(echo["path"], "/u")

    def test_underscore_field_names_pass_when_configured(self):
        conf = self.make_config()
        path = os.path.join(conf, "node-proxy.json")
        np = lib.read_json(path)
        np["headers"]["underscore_fields"] = "pass"
        lib.write_json(path, np)
        self.upstream = self.start_upstream()
        self.start_node_proxy(conf)
        self.node_proxy.wait_for_stderr("is UP", timeout=10)
        status, body, _ = self.https("/u", proxy_header=self.header_for(),
                                     headers=self.UNDERSCORE_FIELDS)
        self.assertEqual(status, 200, body)
        echo = json.loads(body)
        self.assertEqual(sorted(n for n in echo["header_names"] if "_" in n),
                         sorted(self.UNDERSCORE_FIELDS), echo)
        # Passed as ordinary fields: the proxy's own values are unchanged
        # (a backend that does not map "_" to "-" is not misled).
        self.assertEqual(echo["headers"]["x-forwarded-for"], "203.0.113.7")
        self.assertEqual(echo["headers"]["my_header"], "kept?")

    def test_resumption_is_tagged_and_counted(self):
        self.setup_node()
        cases = [("1.2", False), ("1.2", True), ("1.3", False)]
        for tls, no_ticket in cases:
            with self.subTest(tls=tls, no_ticket=no_ticket):
                status, _, first = self.https(proxy_header=self.header_for(), tls_max=tls, no_ticket=no_ticket)
                self.assertEqual(status, 200)
                self.assertFalse(first["reused"])
                session = first["session"]
                if no_ticket:
                    # TLS 1.2 by session ID: the server chose the ID, with our tag.
                    decoded = lib.decode_session_id(session.id)
                    self.assertIsNotNone(decoded, session.id.hex())
                    self.assertEqual(decoded.tag, NODE_TAG)
                else:
                    self.assertTrue(session.has_ticket)
                status, _, second = self.https(proxy_header=self.header_for(), tls_max=tls,
                                               no_ticket=no_ticket, session=session)
                self.assertEqual(status, 200)
                self.assertTrue(second["reused"], "not resumed: TLS %s no_ticket=%s" % (tls, no_ticket))
        stats = self.wait_stats(lambda s: s["tls"]["handshakes_resumed"] >= len(cases),
                                "resumed handshakes counted")
        self.assertEqual(stats["tls"]["handshakes_resumed"], len(cases))
        self.assertEqual(stats["tls"]["handshakes_full"], len(cases))
        self.assertEqual(stats["node"], NODE)
        self.assertEqual(stats["tag"], NODE_TAG)
        self.assertTrue(stats["tls"]["tickets"])
        self.assertGreaterEqual(stats["tls"]["ticket_key_epoch"], 1)
        # The HTML page carries the same numbers for people.
        status, html = self.http("/_edgepin/stats",
                                 proxy_header=lib.proxy_v2((TRUSTED, 40001), (NODE_ADDRESS, self.http_port)))
        self.assertEqual(status, 200)
        self.assertIn(b"<th>resumed handshakes</th><td>%d</td>" % len(cases), html)

    def test_untrusted_proxy_source_is_refused(self):
        self.setup_node()
        for port, tls in ((self.tls_port, True), (self.http_port, False)):
            with self.subTest(tls=tls):
                s = lib.tcp_connect(NODE_ADDRESS, port, source=(UNTRUSTED, 0), timeout=10)
                with s:
                    # A well-formed header does not help an untrusted source.
                    try:
                        s.sendall(self.header_for())
                        data = s.recv(1024)
                    except (ConnectionResetError, BrokenPipeError):
                        data = b""
                    self.assertEqual(data, b"")  # closed without a byte
        self.node_proxy.wait_for_stderr("from %s" % UNTRUSTED, timeout=5)
        err = self.node_proxy.stderr_text()
        self.assertRegex(err, r"connection from 127\.0\.0\.2:\d+ refused: not a trusted PROXY source")
        stats = self.wait_stats(lambda s: s["connections"]["refused_untrusted"] >= 2, "refusals counted")
        self.assertEqual(stats["connections"]["refused_untrusted"], 2)
        # The same request from the trusted source is served.
        status, _, _ = self.https(proxy_header=self.header_for())
        self.assertEqual(status, 200)

    def test_garbage_instead_of_proxy_header(self):
        self.setup_node()
        # A connection in progress: PROXY header and TLS handshake done,
        # request not sent yet.
        raw = lib.tcp_connect(NODE_ADDRESS, self.tls_port, source=(TRUSTED, 0), timeout=10)
        raw.sendall(self.header_for())
        ctx = lib.client_context()
        good = ctx.wrap_socket(raw, server_hostname=NODE)
        try:
            # Meanwhile a trusted source sends HTTP where the header belongs.
            bad = lib.tcp_connect(NODE_ADDRESS, self.tls_port, source=(TRUSTED, 0), timeout=10)
            with bad:
                bad.sendall(b"GET / HTTP/1.1\r\nHost: node1\r\n\r\n")
                try:
                    data = bad.recv(1024)
                except ConnectionResetError:
                    data = b""
                self.assertEqual(data, b"")
            self.node_proxy.wait_for_stderr("proxy_header_invalid", timeout=5)
            self.assertRegex(self.node_proxy.stderr_text(),
                             r"listener https: connection from 127\.0\.0\.1:\d+ closed: "
                             r"proxy_header_invalid: \S+ at byte \d+")
            # The first connection is unaffected.
            conn = http.client.HTTPConnection(NODE, timeout=10)
            conn.sock = good
            conn.request("GET", "/still-fine", headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            self.assertEqual(resp.status, 200, body)
            self.assertEqual(json.loads(body)["path"], "/still-fine")
        finally:
            good.close()
        stats = self.wait_stats(lambda s: s["connections"]["proxy_header_errors"] >= 1, "error counted")
        self.assertEqual(stats["connections"]["proxy_header_errors"], 1)

    def test_sslscan_finds_no_old_protocol_or_weak_cipher(self):
        # sslscan cannot send a PROXY header: a listener without one.
        self.setup_node(proxy_protocol="none")
        result = subprocess.run(["sslscan", "--no-colour", "%s:%d" % (NODE_ADDRESS, self.tls_port)],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=180)
        out = result.stdout.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 0, out)
        protocols = dict(re.findall(r"^(SSLv2|SSLv3|TLSv1\.[0-3])\s+(enabled|disabled)\s*$", out, re.M))
        self.assertEqual(protocols, {"SSLv2": "disabled", "SSLv3": "disabled", "TLSv1.0": "disabled",
                                     "TLSv1.1": "disabled", "TLSv1.2": "enabled", "TLSv1.3": "enabled"}, out)
        self.assertIn("Session renegotiation not supported", out)
        for line in out.splitlines():
            if "heartbleed" in line:
                self.assertIn("not vulnerable", line)
        ciphers = re.findall(r"^(?:Preferred|Accepted)\s+(TLSv1\.[23])\s+(\d+) bits\s+(\S+)", out, re.M)
        self.assertTrue(ciphers, "sslscan listed no accepted cipher:\n" + out)
        for version, bits, name in ciphers:
            with self.subTest(cipher=name):
                self.assertGreaterEqual(int(bits), 128, out)
                if version == "TLSv1.3":
                    self.assertTrue(name.startswith("TLS_"), name)
                else:
                    # Forward secret and AEAD only: no RSA key exchange, no
                    # CBC/RC4/3DES/NULL/export/anonymous suites.
                    self.assertRegex(name, r"^(ECDHE|DHE)-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$")

    def test_default_groups_are_elliptic_curves_only(self):
        # The shipped node-proxy.json names no groups: this is the default
        # (config::kDefaultGroups), not a setting of the test.
        self.assertNotIn("groups", lib.read_json(os.path.join(REPO, "conf", "node-proxy.json"))["tls"])
        # s_client cannot send a PROXY header: a listener without one.
        self.setup_node(proxy_protocol="none")
        # TLS 1.3: a client that offers one group gets that group or no
        # handshake. The finite-field groups OpenSSL 3 accepts by default
        # are refused (no key share the server accepts), and so is a curve
        # outside the list.
        x25519 = r"Server Temp Key: X25519, 253 bits"
        p256 = r"Server Temp Key: ECDH, prime256v1, 256 bits"
        p384 = r"Server Temp Key: ECDH, secp384r1, 384 bits"
        cases = [("1.3", "X25519", x25519), ("1.3", "P-256", p256), ("1.3", "P-384", p384),
                 ("1.3", "ffdhe2048", None), ("1.3", "ffdhe3072", None), ("1.3", "P-521", None),
                 # TLS 1.2: the client's curves also bound the server's ECDSA
                 # key (RFC 8422 5.1), so P-256 (the certificate's curve) is
                 # always offered; the key exchange takes the server's first
                 # choice, and never finite-field DH.
                 ("1.2", "X25519:P-256", x25519), ("1.2", "ffdhe2048:P-256", p256)]
        errors_before = self.stats(proxy=False)["tls"]["handshake_errors"]
        refused = 0
        for tls, groups, temp_key in cases:
            with self.subTest(tls=tls, groups=groups):
                result = subprocess.run(
                    ["openssl", "s_client", "-connect", "%s:%d" % (NODE_ADDRESS, self.tls_port),
                     "-servername", NODE, "-groups", groups, "-tls" + tls.replace(".", "_")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    timeout=30)
                out = result.stdout.decode("utf-8", "replace")
                if temp_key:
                    self.assertEqual(result.returncode, 0, out)
                    self.assertIn("New, TLSv%s, Cipher is " % tls, out)
                    self.assertRegex(out, temp_key)
                else:
                    refused += 1
                    self.assertNotEqual(result.returncode, 0, out)
                    self.assertIn("alert handshake failure", out)
                    self.assertNotIn("Server Temp Key", out)
        # Each refusal was the server's: counted as a failed handshake.
        self.wait_stats(lambda s: s["tls"]["handshake_errors"] >= errors_before + refused,
                        "refused handshakes counted", proxy=False)

    def test_health_follows_the_upstream(self):
        self.setup_node(upstream=False)
        header = lambda: lib.proxy_v2((TRUSTED, 40002), (NODE_ADDRESS, self.http_port))

        def wait_health(expected, timeout=10.0):
            deadline = time.monotonic() + timeout
            status, body = self.http("/_edgepin/health", proxy_header=header())
            while status != expected and time.monotonic() < deadline:
                time.sleep(STEP)
                status, body = self.http("/_edgepin/health", proxy_header=header())
            self.assertEqual(status, expected, body)
            return body

        body = wait_health(503)
        self.assertIn(b"tomcat", body.lower())
        # Requests get an error answer, not a hang.
        status, _ = self.http("/app", proxy_header=header())
        self.assertIn(status, (502, 503))
        self.upstream = self.start_upstream()
        wait_health(200)
        self.node_proxy.wait_for_stderr("is UP", timeout=5)
        self.assertEqual(self.stats()["tomcat"]["up"], True)
        self.upstream.stop()
        wait_health(503)
        self.node_proxy.wait_for_stderr("is DOWN", timeout=5)
        self.assertEqual(self.stats()["tomcat"]["up"], False)

    def test_max_connections(self):
        conf = self.make_config()
        np = lib.read_json(os.path.join(conf, "node-proxy.json"))
        np["limits"]["max_connections"] = 2
        lib.write_json(os.path.join(conf, "node-proxy.json"), np)
        self.upstream = self.start_upstream()
        self.start_node_proxy(conf)
        held = []
        try:
            for _ in range(2):
                raw = lib.tcp_connect(NODE_ADDRESS, self.tls_port, source=(TRUSTED, 0), timeout=10)
                raw.sendall(self.header_for())
                held.append(lib.client_context().wrap_socket(raw, server_hostname=NODE))
            # The third is closed at once, without a byte.
            extra = lib.tcp_connect(NODE_ADDRESS, self.tls_port, source=(TRUSTED, 0), timeout=10)
            with extra:
                try:
                    data = extra.recv(1024)
                except ConnectionResetError:
                    data = b""
                self.assertEqual(data, b"")
            self.node_proxy.wait_for_stderr("max_connections 2 reached", timeout=5)
        finally:
            for s in held:
                s.close()
        # Capacity comes back as the held connections end.
        deadline = time.monotonic() + 10
        while True:
            try:
                status, _, _ = self.https(proxy_header=self.header_for())
                break
            except (ConnectionError, ssl.SSLError, socket.timeout):
                if time.monotonic() > deadline:
                    raise
                time.sleep(STEP)
        self.assertEqual(status, 200)
        stats = self.stats()
        self.assertGreaterEqual(stats["connections"]["refused_limit"], 1)

    def test_sigterm_closes_idle_keepalive_connections_at_once(self):
        self.setup_node()
        raw = lib.tcp_connect(NODE_ADDRESS, self.tls_port, source=(TRUSTED, 0), timeout=10)
        raw.sendall(self.header_for())
        s = lib.client_context().wrap_socket(raw, server_hostname=NODE)
        with s:
            conn = http.client.HTTPConnection(NODE, timeout=10)
            conn.sock = s
            conn.request("GET", "/keep")
            resp = conn.getresponse()
            resp.read()
            self.assertEqual(resp.status, 200)
            self.assertFalse(resp.will_close)  # the connection stays open, idle
            started = time.monotonic()
            self.node_proxy.signal(signal.SIGTERM)
            # The idle connection is closed by the node-proxy, well before
            # the grace period (10 s) would end it.
            try:
                data = s.recv(1024)
            except (ConnectionResetError, ssl.SSLError):
                data = b""
            self.assertEqual(data, b"")
        self.node_proxy.popen.wait(timeout=10)
        self.assertLess(time.monotonic() - started, 5.0)
        self.assertEqual(self.node_proxy.returncode, 0, self.node_proxy.describe())

    def test_sigterm_stops_cleanly_and_sighup_reloads(self):
        self.setup_node()
        self.node_proxy.signal(signal.SIGHUP)
        self.node_proxy.wait_for_stderr("reload ok", timeout=5)
        status, _, _ = self.https(proxy_header=self.header_for())
        self.assertEqual(status, 200)
        rc = self.node_proxy.stop(timeout=15)
        self.assertEqual(rc, 0, self.node_proxy.describe())
        self.assertIn("stopped", self.node_proxy.stderr_text())


if __name__ == "__main__":
    unittest.main()
