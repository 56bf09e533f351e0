"""L7 affinity and the peer link with three real edgepin-node-proxies.

node1..node3 run on 127.0.0.11..13 (their addresses in conf/cluster.json),
each in front of a small HTTP/1.1 backend on its own address that says who
it is and, like Tomcat, starts a session (Set-Cookie: JSESSIONID) for a
request whose JSESSIONID it does not know. Every test gets a config
directory made from conf/ (PKI by deploy/make-pki.sh, once per run, then
copied) with free ports, PROXY v2 required from 127.0.0.1 (the test plays
the lb and names the client 203.0.113.7), and fast peer checks.

What is proven here: the affinity cookie is issued when a session starts;
a request owned by another node is relayed over the mutually
authenticated peer link and its owner's backend sees the true client
address, proto and port and the relay marker; forged cookies; jvmroute
mode; the owner going down; one hop at most; refused peer certificates;
large, chunked and pipelined requests across the relay; the plain HTTP
listener; and the stats counters.

Run through ctest (EDGEPIN_NODE_PROXY is set there), or:
    EDGEPIN_NODE_PROXY=build/node-proxy/edgepin-node-proxy \\
        /usr/bin/python3 -m unittest -v test_node_proxy_affinity
"""

import base64
import hashlib
import http.client
import json
import os
import socket
import ssl
import time
import unittest

import edgepin_testlib as lib

NODES = ("node1", "node2", "node3")
ADDRESS = {"node1": "127.0.0.11", "node2": "127.0.0.12", "node3": "127.0.0.13"}
TAG = {"node1": 1, "node2": 2, "node3": 3}
LB = "127.0.0.1"                       # the test's source: trusted for PROXY v2
CLIENT = ("203.0.113.7", 50123)        # the client the "lb" names
COOKIE = "EDGEPIN_NODE"
STEP = 0.05
TIMEOUT = 15.0

TEMPLATE = lib.ConfTemplate("edgepin-aff-conf-")  # conf/ with its PKI, made once per run
_foreign = None    # a CA that is not the cluster's, with a "node2" certificate


def setUpModule():
    global _foreign
    TEMPLATE.make()
    _foreign = lib.make_pki(os.path.join(TEMPLATE.dir, "foreign"), names=("node2",))


tearDownModule = TEMPLATE.cleanup


def cookie_tag(value):
    """The node tag inside an affinity cookie value (affinity.h layout:
    version, tag (2 bytes), issued_at, mac; base64url)."""
    raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    assert raw[0] == 1 and len(raw) == 23, raw
    return int.from_bytes(raw[1:3], "big")


def set_cookies(resp):
    """{name: value} of the response's Set-Cookie fields."""
    out = {}
    for k, v in resp.getheaders():
        if k.lower() == "set-cookie":
            name, _, rest = v.partition("=")
            out[name.strip()] = rest.split(";")[0].strip()
    return out


def set_cookie_line(resp, name):
    for k, v in resp.getheaders():
        if k.lower() == "set-cookie" and v.startswith(name + "="):
            return v
    return None


class RawResponse:
    """A response read by read_response: status, getheaders()."""
    def __init__(self, status, headers):
        self.status = status
        self._headers = headers

    def getheaders(self):
        return self._headers


def read_response(f):
    """Reads one Content-Length response from the buffered file `f` without
    reading past it (pipelined responses follow). Returns a Reply."""
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("closed before a response")
    status = int(status_line.split(b" ", 2)[1])
    headers = []
    length = 0
    for _ in range(200):
        line = f.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers.append((k.strip(), v.strip()))
        if k.strip().lower() == "content-length":
            length = int(v)
    body = f.read(length)
    return Reply(RawResponse(status, headers), body)


class Reply:
    def __init__(self, resp, body):
        self.status = resp.status
        self.resp = resp
        self.raw = body
        self.cookies = set_cookies(resp)
        try:
            self.json = json.loads(body)
        except ValueError:
            self.json = {}

    @property
    def backend(self):
        return self.json.get("backend")

    @property
    def headers(self):
        return self.json.get("headers", {})


class AffinityTest(lib.EdgepinTestCase):

    # ------------------------------------------------------------ cluster

    def start_cluster(self, mode="cookie", nodes=NODES, peer_check_ms=500, wait_for=None):
        """Config for all three nodes; backends and node-proxies for `nodes`,
        started in that order. Waits until every node of `wait_for` (all by
        default) sees every other started one UP."""
        self.conf = os.path.join(self.tmp, "conf")
        TEMPLATE.copy_to(self.conf)
        cluster = lib.read_json(os.path.join(self.conf, "cluster.json"))
        cluster["cluster"]["affinity"]["mode"] = mode
        self.ports = {}
        for n in cluster["nodes"]:
            a = n["address"]
            self.assertEqual(a, ADDRESS[n["name"]])
            p = {"tls": lib.free_port(a), "http": lib.free_port(a), "peer": lib.free_port(a),
                 "backend": lib.free_port(a)}
            n["tls_port"], n["http_port"], n["peer_port"] = p["tls"], p["http"], p["peer"]
            n["upstream"] = "%s:%d" % (a, p["backend"])
            self.ports[n["name"]] = p
        lib.write_json(os.path.join(self.conf, "cluster.json"), cluster)
        np = lib.read_json(os.path.join(self.conf, "node-proxy.json"))
        np["threads"] = 2
        for listener in np["listeners"]:
            listener["proxy_protocol"] = "v2"
            listener["trusted_proxies"] = [LB + "/32"]
        # Checks are quick but tolerate one slow answer on a busy machine.
        np["health"].update({"check_interval_ms": 500, "check_timeout_ms": 500, "rise": 1, "fall": 2})
        np["peer"].update({"check_interval_ms": peer_check_ms, "check_timeout_ms": 500, "rise": 1, "fall": 2,
                           "connect_timeout_ms": 2000})
        np["stats"]["allow"] = ["127.0.0.0/8"]
        np["log"]["access_log"] = True
        lib.write_json(os.path.join(self.conf, "node-proxy.json"), np)
        self.procs = {}
        self.backends = {}
        for name in nodes:
            self.backends[name] = lib.start_http_backend(
                self, ADDRESS[name], self.ports[name]["backend"], name=name,
                jvm_route=mode == "jvmroute", timeout=TIMEOUT)
            self.start_node(name)
        for name in wait_for or nodes:
            self.wait_peers(name, {n: True for n in nodes if n != name})

    def start_node(self, name):
        proc = self.spawn([lib.binary("EDGEPIN_NODE_PROXY"), "--config-dir", self.conf, "--node", name],
                          "node-proxy-" + name + "-%d" % len(self._procs))
        proc.wait_for_stderr("workers; listeners:", timeout=TIMEOUT)
        self.procs[name] = proc
        return proc

    def wait_peers(self, name, expected, timeout=TIMEOUT):
        """Polls `name`'s stats until its peers' health is as `expected`."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats(name)
            state = {p["name"]: p["up"] for p in stats["peer_link"]["peers"]}
            if all(state.get(k) == v for k, v in expected.items()) and stats["tomcat"]["up"]:
                return stats
            if time.monotonic() > deadline:
                self.fail("%s: peers %r, wanted %r\n%s" % (name, state, expected, self.dump_procs()))
            time.sleep(STEP)

    # ------------------------------------------------------------ clients

    def connect(self, name, listener="tls", client=CLIENT):
        """A connection to `name`'s client listener, with the PROXY v2
        header an lb would send (public port 443 or 80)."""
        public = 443 if listener == "tls" else 80
        raw = lib.tcp_connect(ADDRESS[name], self.ports[name][listener], source=(LB, 0), timeout=TIMEOUT)
        raw.sendall(lib.proxy_v2(client, ("198.51.100.1", public)))
        if listener != "tls":
            return raw
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            return ctx.wrap_socket(raw, server_hostname="app.example")
        except BaseException:
            raw.close()
            raise

    def request(self, name, path="/", cookies=None, listener="tls", method="GET", body=None, headers=None):
        """One request on a new connection. Returns a Reply."""
        sock = self.connect(name, listener)
        with sock:
            conn = http.client.HTTPConnection(ADDRESS[name], timeout=TIMEOUT)
            conn.sock = sock
            h = {"Connection": "close"}
            if cookies:
                h["Cookie"] = "; ".join("%s=%s" % kv for kv in cookies.items())
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
        return Reply(resp, data)

    def stats(self, name):
        sock = lib.tcp_connect(ADDRESS[name], self.ports[name]["http"], source=(LB, 0), timeout=TIMEOUT)
        with sock:
            sock.sendall(lib.proxy_v2((LB, 40000), (ADDRESS[name], 80)))
            conn = http.client.HTTPConnection(ADDRESS[name], timeout=TIMEOUT)
            conn.sock = sock
            conn.request("GET", "/_edgepin/stats?json", headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
        self.assertEqual(resp.status, 200, body)
        return json.loads(body)

    def outcomes(self, name):
        return self.stats(name)["affinity"]["outcomes"]

    def session_on(self, name, listener="tls"):
        """Starts a session on `name`: returns the cookies a browser keeps."""
        r = self.request(name, "/login", listener=listener)
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.backend, name)
        return r.cookies

    def peer_context(self, cert=None, key=None, ca=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(ca or os.path.join(self.conf, "pki", "ca.crt"))
        if cert:
            ctx.load_cert_chain(cert, key)
        return ctx

    def peer_attempt(self, target, ctx):
        """A GET of the health path over `target`'s peer port with `ctx`.
        Returns the status, or the exception that refused the connection."""
        raw = socket.create_connection((ADDRESS[target], self.ports[target]["peer"]), timeout=TIMEOUT)
        try:
            s = ctx.wrap_socket(raw, server_hostname=target)
            with s:
                s.sendall(b"GET /_edgepin/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = s.recv(4096)
                if not data:
                    return ConnectionResetError("closed without a response")
                return int(data.split(b" ", 2)[1])
        except (ssl.SSLError, OSError) as e:
            return e
        finally:
            raw.close()

    # ------------------------------------------------------------- tests

    def test_cookie_issued_relay_and_client_facts(self):
        self.start_cluster()
        # A new user on node2: its backend starts a session, node2 adds the
        # affinity cookie naming itself, with the configured attributes
        # (Secure: the client connection is TLS and secure is "auto").
        r = self.request("node2", "/start")
        self.assertEqual(r.backend, "node2")
        self.assertIn("JSESSIONID", r.cookies)
        self.assertEqual(cookie_tag(r.cookies[COOKIE]), TAG["node2"])
        line = set_cookie_line(r.resp, COOKIE)
        for attr in ("Path=/", "Secure", "HttpOnly", "SameSite=Lax"):
            self.assertIn(attr, line)
        cookies = r.cookies

        # The same browser lands on node1: relayed to node2's backend, which
        # sees the true client, https, port 443 and the relay marker.
        r = self.request("node1", "/again", cookies=cookies,
                         headers={"X-Forwarded-For": "6.6.6.6", "X-Edgepin-Relayed": "evil"})
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.backend, "node2")
        h = r.headers
        self.assertEqual(h["x-forwarded-for"], CLIENT[0])
        self.assertEqual(h["x-forwarded-proto"], "https")
        self.assertEqual(h["x-forwarded-port"], "443")
        self.assertEqual(h["x-edgepin-relayed"], "node1")
        self.assertEqual(h["host"], ADDRESS["node1"])
        # Same session: no new session, no new cookie.
        self.assertIsNone(r.json["new_session"])
        self.assertNotIn(COOKIE, r.cookies)

        # A client's own relay marker never reaches a backend.
        r = self.request("node1", "/fresh", headers={"X-Edgepin-Relayed": "node3"})
        self.assertEqual(r.backend, "node1")
        self.assertNotIn("x-edgepin-relayed", r.headers)
        self.assertEqual(r.headers["x-forwarded-for"], CLIENT[0])

        n1, n2 = self.stats("node1"), self.stats("node2")
        self.assertEqual(n1["affinity"]["outcomes"]["relayed_out"], 1)
        self.assertEqual(n1["affinity"]["outcomes"]["no_cookie"], 1)
        self.assertEqual(n1["affinity"]["cookies_issued"], 1)
        self.assertEqual(n2["affinity"]["outcomes"]["relayed_in"], 1)
        self.assertEqual(n2["affinity"]["outcomes"]["no_cookie"], 1)
        self.assertEqual(n2["affinity"]["cookies_issued"], 1)
        self.assertGreaterEqual(n2["peer_link"]["connections_accepted"], 1)
        self.assertEqual(n2["peer_link"]["connections_refused"], 0)
        self.assertGreaterEqual(n1["peer_link"]["connects"], 1)
        # The relay shows in the access logs of both ends.
        self.procs["node1"].wait_for_stderr("affinity=relayed_out", timeout=5)
        self.procs["node2"].wait_for_stderr("relayed_from=node1", timeout=5)

    def test_own_cookie_is_local_and_forged_cookie_is_bad_mac(self):
        self.start_cluster()
        cookies = self.session_on("node1")
        r = self.request("node1", cookies=cookies)
        self.assertEqual(r.backend, "node1")
        self.assertNotIn(COOKIE, r.cookies)

        # node2's tag with a wrong MAC: one changed character.
        genuine = self.session_on("node2")[COOKIE]
        c = "A" if genuine[10] != "A" else "B"
        tampered = genuine[:10] + c + genuine[11:]
        for forged in (tampered, "garbage", ""):
            r = self.request("node1", "/forged", cookies={COOKIE: forged})
            self.assertEqual(r.backend, "node1", forged)
            # A new session started here: the cookie now names node1.
            self.assertEqual(cookie_tag(r.cookies[COOKIE]), TAG["node1"])
        out = self.outcomes("node1")
        self.assertEqual(out["bad_mac"], 3)
        self.assertEqual(out["local"], 1)
        self.assertEqual(out["relayed_out"], 0)

    def test_jvmroute_mode(self):
        self.start_cluster(mode="jvmroute")
        r = self.request("node3", "/login")
        self.assertEqual(r.backend, "node3")
        self.assertTrue(r.cookies["JSESSIONID"].endswith(".node3"))
        self.assertNotIn(COOKIE, r.cookies)  # jvmroute mode writes no cookie
        r2 = self.request("node1", "/cart", cookies={"JSESSIONID": r.cookies["JSESSIONID"]})
        self.assertEqual(r2.backend, "node3")
        self.assertIsNone(r2.json["new_session"])
        self.assertEqual(r2.headers["x-edgepin-relayed"], "node1")
        r3 = self.request("node1", "/x", cookies={"JSESSIONID": "abc.nosuchnode"})
        self.assertEqual(r3.backend, "node1")
        out = self.outcomes("node1")
        self.assertEqual(out["relayed_out"], 1)
        self.assertEqual(out["unknown_owner"], 1)
        self.assertEqual(self.outcomes("node3")["relayed_in"], 1)

    def test_owner_down_served_locally_and_cookie_moves(self):
        self.start_cluster()
        cookies = self.session_on("node2")
        self.assertEqual(self.request("node1", cookies=cookies).backend, "node2")
        self.procs["node2"].stop()
        self.wait_peers("node1", {"node2": False})
        self.procs["node1"].wait_for_stderr("peer node2 at", timeout=5)
        r = self.request("node1", "/after", cookies=cookies)
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.backend, "node1")
        # node1's backend did not know the session: a new one, and the
        # affinity cookie moves to node1.
        self.assertIsNotNone(r.json["new_session"])
        self.assertEqual(cookie_tag(r.cookies[COOKIE]), TAG["node1"])
        r = self.request("node1", "/next", cookies=r.cookies)
        self.assertEqual(r.backend, "node1")
        self.assertNotIn(COOKIE, r.cookies)
        out = self.outcomes("node1")
        self.assertEqual(out["owner_down"], 1)
        self.assertEqual(out["relayed_out"], 1)
        self.assertEqual(out["local"], 1)
        self.assertIn("is DOWN", self.procs["node1"].stderr_text())

        # node2 back: node1 relays to it again.
        self.start_node("node2")
        self.wait_peers("node1", {"node2": True})
        genuine = self.session_on("node2")
        self.assertEqual(self.request("node1", cookies=genuine).backend, "node2")

    def test_relay_fallback_before_health_notices(self):
        # Peer checks a minute apart: node1 still believes node3 is up when
        # node3's node-proxy is gone, finds out from the refused connect,
        # and serves the request itself instead of failing it.
        # node1 starts last, so its first check finds both peers up.
        self.start_cluster(nodes=("node2", "node3", "node1"), peer_check_ms=60000, wait_for=("node1",))
        cookies = self.session_on("node3")
        self.procs["node3"].stop()
        self.assertTrue(self.stats("node1")["peer_link"]["peers"][1]["up"])
        r = self.request("node1", "/now", cookies=cookies)
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.backend, "node1")
        self.assertEqual(cookie_tag(r.cookies[COOKIE]), TAG["node1"])
        s = self.stats("node1")
        self.assertEqual(s["affinity"]["outcomes"]["owner_down"], 1)
        self.assertEqual(s["affinity"]["outcomes"]["relayed_out"], 0)
        self.assertEqual(s["affinity"]["relay_fallbacks"], 1)
        self.assertEqual(s["peer_link"]["connect_errors"], 1)
        self.assertIn("request served locally", self.procs["node1"].stderr_text())

    def test_one_hop_on_the_peer_port(self):
        self.start_cluster()
        node3_cookie = self.session_on("node3")
        # node2's genuine peer identity talks to node1's peer port with a
        # request that node3 owns: node1 serves it itself.
        pki = os.path.join(self.conf, "pki", "peer")
        ctx = self.peer_context(os.path.join(pki, "node2.crt"), os.path.join(pki, "node2.key"))
        raw = socket.create_connection((ADDRESS["node1"], self.ports["node1"]["peer"]), timeout=TIMEOUT)
        with ctx.wrap_socket(raw, server_hostname="node1") as s:
            conn = http.client.HTTPConnection("node1", timeout=TIMEOUT)
            conn.sock = s
            conn.request("GET", "/hop", headers={
                "Cookie": "%s=%s" % (COOKIE, node3_cookie[COOKIE]),
                "X-Forwarded-For": "198.51.100.77", "X-Forwarded-Proto": "http", "X-Forwarded-Port": "80",
                "X-Edgepin-Relayed": "node2"})
            resp = conn.getresponse()
            r = Reply(resp, resp.read())
            conn.close()
        self.assertEqual(r.status, 200, r.raw)
        self.assertEqual(r.backend, "node1")
        # Trusted on the peer link: the relaying node's client facts, and
        # the marker names the node the certificate proves.
        self.assertEqual(r.headers["x-forwarded-for"], "198.51.100.77")
        self.assertEqual(r.headers["x-forwarded-proto"], "http")
        self.assertEqual(r.headers["x-forwarded-port"], "80")
        self.assertEqual(r.headers["x-edgepin-relayed"], "node2")
        # Never a cookie on a relayed request.
        self.assertNotIn(COOKIE, r.cookies)
        out = self.outcomes("node1")
        self.assertEqual(out["relayed_in"], 1)
        self.assertEqual(out["relayed_out"], 0)
        self.assertEqual(self.outcomes("node3")["relayed_in"], 0)

    def test_peer_port_refuses_foreign_and_missing_certificates(self):
        self.start_cluster()
        before = self.stats("node1")["peer_link"]
        # Another CA's certificate for "node2"; no certificate; a cluster
        # CA certificate that names no node.
        foreign = self.peer_context(_foreign.nodes["node2"].cert, _foreign.nodes["node2"].key)
        nocert = self.peer_context()
        pki = os.path.join(self.conf, "pki")
        leaf = lib.issue_cert(self.tmp, "intruder", os.path.join(pki, "ca.crt"),
                              os.path.join(pki, "ca.key"), dns_names=("intruder",),
                              client_auth=True, serial=77, days=2)
        cert, key = leaf.cert, leaf.key
        intruder = self.peer_context(cert, key)
        for ctx in (foreign, nocert, intruder):
            result = self.peer_attempt("node1", ctx)
            self.assertIsInstance(result, Exception, "peer port accepted a client it must refuse")
        pki = os.path.join(self.conf, "pki", "peer")
        good = self.peer_context(os.path.join(pki, "node3.crt"), os.path.join(pki, "node3.key"))
        self.assertEqual(self.peer_attempt("node1", good), 200)
        deadline = time.monotonic() + 5
        while True:
            after = self.stats("node1")["peer_link"]
            if after["connections_refused"] - before["connections_refused"] >= 3 or time.monotonic() > deadline:
                break
            time.sleep(STEP)
        self.assertEqual(after["connections_refused"] - before["connections_refused"], 3)
        err = self.procs["node1"].stderr_text()
        self.assertIn("peer link refused", err)
        self.assertIn("client certificate names no node of the cluster", err)

    def test_bodies_across_the_relay(self):
        self.start_cluster()
        cookies = self.session_on("node2")
        big = os.urandom(3 * 1024 * 1024 + 17)
        r = self.request("node1", "/upload", cookies=cookies, method="POST", body=big,
                         headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(r.backend, "node2")
        self.assertEqual(r.json["body_len"], len(big))
        self.assertEqual(r.json["body_sha256"], hashlib.sha256(big).hexdigest())

        # A chunked upload, written in uneven chunks.
        parts = [os.urandom(n) for n in (1, 70000, 3, 200000, 65536)]
        payload = b"".join(parts)
        sock = self.connect("node1")
        with sock:
            head = ("POST /chunked HTTP/1.1\r\nHost: app.example\r\nCookie: %s\r\n"
                    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                    % "; ".join("%s=%s" % kv for kv in cookies.items())).encode()
            sock.sendall(head)
            for p in parts:
                sock.sendall(b"%x\r\n" % len(p) + p + b"\r\n")
            sock.sendall(b"0\r\n\r\n")
            with sock.makefile("rb") as f:
                r = read_response(f)
        self.assertEqual(r.backend, "node2")
        self.assertEqual(r.json["body_len"], len(payload))
        self.assertEqual(r.json["body_sha256"], hashlib.sha256(payload).hexdigest())
        self.assertEqual(r.headers.get("transfer-encoding"), "chunked")

    def test_pipelined_requests_keep_order_across_the_relay(self):
        self.start_cluster()
        cookies = self.session_on("node2")
        cookie = "; ".join("%s=%s" % kv for kv in cookies.items())
        sock = self.connect("node1")
        with sock:
            batch = b""
            for i in range(6):
                # Alternate: relayed (cookie) and local (no cookie).
                c = "Cookie: %s\r\n" % cookie if i % 2 == 0 else ""
                body = b"x" * i
                batch += ("POST /p%d HTTP/1.1\r\nHost: app.example\r\n%sContent-Length: %d\r\n\r\n"
                          % (i, c, len(body))).encode() + body
            sock.sendall(batch)
            with sock.makefile("rb") as f:
                replies = [read_response(f) for _ in range(6)]
        for i, r in enumerate(replies):
            self.assertEqual(r.json["path"], "/p%d" % i)
            self.assertEqual(r.json["body_len"], i)
            self.assertEqual(r.backend, "node2" if i % 2 == 0 else "node1")
        out = self.outcomes("node1")
        self.assertEqual(out["relayed_out"], 3)
        self.assertEqual(out["no_cookie"], 3)
        self.assertEqual(self.outcomes("node2")["relayed_in"], 3)

    def test_plain_http_listener_relays_too(self):
        self.start_cluster()
        r = self.request("node3", "/start", listener="http")
        self.assertEqual(r.backend, "node3")
        line = set_cookie_line(r.resp, COOKIE)
        self.assertNotIn("Secure", line)  # secure "auto": not over plain HTTP
        r = self.request("node1", "/plain", cookies=r.cookies, listener="http")
        self.assertEqual(r.backend, "node3")
        self.assertEqual(r.headers["x-forwarded-proto"], "http")
        self.assertEqual(r.headers["x-forwarded-port"], "80")
        self.assertEqual(r.headers["x-forwarded-for"], CLIENT[0])
        self.assertEqual(r.headers["x-edgepin-relayed"], "node1")
        self.assertEqual(self.outcomes("node1")["relayed_out"], 1)
        self.assertEqual(self.outcomes("node3")["relayed_in"], 1)


if __name__ == "__main__":
    unittest.main()
