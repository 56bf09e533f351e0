"""edgepin-lb against real TLS backends (edgepin-test-backend) on loopback.

Each test writes a config directory (cluster.json + lb.json) for the
backends it started, runs the real edgepin-lb binary, talks to it with
Python's ssl module and `openssl s_client`, and reads the lb's one log line
per connection. Run through ctest (it sets EDGEPIN_LB and
EDGEPIN_TEST_BACKEND).
"""

import collections
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import threading
import time
import unittest

import edgepin_testlib as t

LOG_LINE = re.compile(r"\bconn (.*)$")


def conn_lines(proc, routed_only=True):
    """The lb's per-connection log lines, as dicts of their key=value fields.
    routed_only drops connections that closed before being routed (such as
    wait_for_port's probe)."""
    out = []
    for line in proc.stderr_text().splitlines():
        m = LOG_LINE.search(line)
        if m:
            fields = dict(kv.split("=", 1) for kv in m.group(1).split(" ") if "=" in kv)
            if not routed_only or fields["route"] != "-":
                out.append(fields)
    return out


def lines_when(proc, count, timeout=5):
    """conn_lines() once there are at least `count` (the lb logs a
    connection when both sides have closed, just after the client saw the
    end)."""
    return wait_for(lambda: len(conn_lines(proc)) >= count and conn_lines(proc), timeout,
                    "%d connection log lines" % count)


def client_lines_when(proc, count, timeout=5):
    """The log lines of connections whose client sent bytes (which leaves
    out wait_for_port's probe, even on a tcp frontend that routes it), once
    there are exactly `count`."""
    def ready():
        lines = [l for l in conn_lines(proc) if l["bytes_in"] != "0"]
        return lines if len(lines) == count else None
    return wait_for(ready, timeout, "%d log lines of clients that sent bytes" % count)


def wait_for(predicate, timeout, what, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError("timed out after %.1fs waiting for %s" % (timeout, what))


class LbTestCase(t.EdgepinTestCase):
    """Starts TLS or TCP backends and an lb in front of them."""

    def setUp(self):
        super().setUp()
        self.pki = t.make_pki(os.path.join(self.tmp, "pki"), names=("backend",), key_type="ec")
        self.backends = []

    def add_backends(self, count, mode="tls", tags=True, proxy="v2", weights=None, **kwargs):
        for i in range(count):
            name = "node%d" % (len(self.backends) + 1)
            b = self.start_backend(name, mode=mode, proxy=proxy,
                                   cert=self.pki.nodes["backend"] if mode == "tls" else None,
                                   tag=(len(self.backends) + 1) if (tags and mode == "tls") else None,
                                   **kwargs)
            weight = weights[i] if weights else 100
            self.backends.append((b, weight))
        return [b for b, _ in self.backends]

    def write_config(self, mode="tls", proxy="v2", threads=1, lb_overrides=None, frontend_overrides=None):
        conf = os.path.join(self.tmp, "conf")
        os.makedirs(conf, exist_ok=True)
        nodes = []
        for i, (b, weight) in enumerate(self.backends, start=1):
            port_key = "tls_port" if mode == "tls" else "http_port"
            other_key = "http_port" if mode == "tls" else "tls_port"
            nodes.append({"name": b.name, "tag": i, "address": "127.0.0.1",
                          port_key: b.port, other_key: t.free_port(), "peer_port": t.free_port(),
                          "weight": weight})
        cluster = {"cluster": {"name": "it", "affinity": {"mode": "none"}}, "nodes": nodes}
        self.lb_port = getattr(self, "lb_port", None) or t.free_port()
        frontend = {"name": "fe", "mode": mode, "bind": ["127.0.0.1:%d" % self.lb_port],
                    "server_port": "tls" if mode == "tls" else "http", "proxy_protocol": proxy}
        if mode == "tls":
            frontend["inspect"] = {"timeout_ms": 1000, "on_failure": "balance"}
        frontend.update(frontend_overrides or {})
        lb = {"threads": threads, "frontends": [frontend],
              "health_check": {"type": "tcp", "port": "tls" if mode == "tls" else "http",
                               "interval_ms": 200, "timeout_ms": 200, "rise": 2, "fall": 2},
              "log": {"level": "info"}}
        for k, v in (lb_overrides or {}).items():
            lb[k] = v
        with open(os.path.join(conf, "cluster.json"), "w") as f:
            json.dump(cluster, f, indent=1)
        with open(os.path.join(conf, "lb.json"), "w") as f:
            json.dump(lb, f, indent=1)
        return conf

    def start_lb(self, conf, name="lb"):
        proc = self.spawn([t.binary("EDGEPIN_LB"), "--config-dir", conf], name)
        t.wait_for_port("127.0.0.1", self.lb_port, timeout=15, proc=proc)
        return proc

    def kill_backend(self, backend):
        """SIGKILLs a backend (a crash, not a clean stop)."""
        backend.proc.kill()
        self._procs = [(p, clean) for p, clean in self._procs if p is not backend.proc]

    def lb_who(self, **kwargs):
        return t.tls_who("127.0.0.1", self.lb_port, **kwargs)


class Balancing(LbTestCase):
    def test_round_robin_spreads_new_sessions_evenly(self):
        self.add_backends(3)
        lb = self.start_lb(self.write_config())
        names = [self.lb_who()[0]["name"] for _ in range(30)]
        counts = collections.Counter(names)
        self.assertEqual(counts, {"node1": 10, "node2": 10, "node3": 10}, names)
        # Strict turns: every window of three saw each backend once.
        for i in range(0, 30, 3):
            self.assertEqual(len(set(names[i:i + 3])), 3, names)
        self.assertTrue(all(l["route"] == "balance" for l in lines_when(lb, 30)))

    def test_weights_shape_the_spread(self):
        self.add_backends(2, weights=[50, 150])
        self.start_lb(self.write_config())
        counts = collections.Counter(self.lb_who()[0]["name"] for _ in range(40))
        self.assertEqual(counts, {"node1": 10, "node2": 30})

    def test_ipv6_frontend(self):
        self.add_backends(2)
        conf = self.write_config()
        port6 = t.free_port("::1")
        self.start_lb(self.write_config(frontend_overrides={
            "bind": ["127.0.0.1:%d" % self.lb_port, "[::1]:%d" % port6]}))
        reply, _ = t.tls_who("::1", port6)
        # The backend learns the IPv6 client from the PROXY v2 header.
        self.assertTrue(reply["proxy_src"].startswith("[::1]:"), reply)
        self.assertTrue(reply["proxy_dst"] == "[::1]:%d" % port6, reply)
        del conf


class Stickiness(LbTestCase):
    def s_client(self, *args):
        """`openssl s_client` through the lb sending WHO; returns the reply fields."""
        cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.lb_port, "-quiet"] + list(args)
        r = subprocess.run(cmd, input=b"WHO\n", stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        line = [l for l in r.stdout.decode().splitlines() if l.startswith("name=")]
        self.assertTrue(line, "no WHO reply: %r %r" % (r.stdout, r.stderr[-500:]))
        return t.parse_who(line[0])

    def test_tls12_session_id_resumption_sticks_via_table_like_haproxy(self):
        # Untagged backends: only the stick table (HAProxy's recipe) can help.
        self.add_backends(3, tags=False)
        lb = self.start_lb(self.write_config())
        sess = os.path.join(self.tmp, "sess.pem")
        first = self.s_client("-tls1_2", "-no_ticket", "-sess_out", sess)
        results = [self.s_client("-tls1_2", "-no_ticket", "-sess_in", sess) for _ in range(20)]
        self.assertEqual([r["name"] for r in results], [first["name"]] * 20)
        self.assertEqual([r["resumed"] for r in results], ["1"] * 20)
        routes = [l["route"] for l in lines_when(lb, 21)]
        self.assertEqual(routes[1:], ["stick"] * 20)

    def test_tls12_ticket_resumption_sticks_via_table_for_untagged_backends(self):
        self.add_backends(3, tags=False)
        self.start_lb(self.write_config())
        first, sess = self.lb_who(tls_max="1.2")
        for _ in range(10):
            reply, _ = self.lb_who(tls_max="1.2", session=sess)
            self.assertEqual(reply["name"], first["name"])
            self.assertEqual(reply["resumed"], "1")

    def check_tagged(self, tls_max, no_ticket, expect_source):
        self.add_backends(3, tags=True)
        conf = self.write_config()
        lb = self.start_lb(conf)
        first, sess = self.lb_who(tls_max=tls_max, no_ticket=no_ticket)
        for i in range(10):
            if i == 5:
                # A restarted lb has an empty stick table: the tag still routes.
                lb.stop()
                lb = self.start_lb(conf, name="lb-restarted")
            reply, new_sess = self.lb_who(tls_max=tls_max, no_ticket=no_ticket, session=sess)
            self.assertEqual(reply["name"], first["name"], "resumption %d went elsewhere" % i)
            self.assertEqual(reply["resumed"], "1")
            sess = new_sess
        lines = lines_when(lb, 5)
        for l in lines:
            self.assertEqual(l["route"], "tag", l)
            self.assertEqual(l["tag_from"], expect_source, l)

    def test_tagged_tls13_psk_routes_by_tag_across_lb_restart(self):
        self.check_tagged("1.3", False, "psk")

    def test_tagged_tls12_ticket_routes_by_tag_across_lb_restart(self):
        self.check_tagged("1.2", False, "ticket")

    def test_tagged_tls12_session_id_routes_by_tag_across_lb_restart(self):
        self.check_tagged("1.2", True, "session_id")

    def test_tls13_session_id_echo_is_not_learned(self):
        self.add_backends(3, tags=False, no_tickets=True)
        lb = self.start_lb(self.write_config())
        # TLS 1.3 without tickets: nothing to resume; the random
        # legacy_session_id echo must not create table hits.
        for _ in range(9):
            self.lb_who(tls_max="1.3")
        self.assertEqual(set(l["route"] for l in lines_when(lb, 9)), {"balance"})


class Health(LbTestCase):
    def test_killed_backend_goes_down_clients_move_and_it_comes_back(self):
        backends = self.add_backends(3)
        lb = self.start_lb(self.write_config())
        victim = backends[1]
        first, sess = None, None
        # A session bound (by tag) to the victim.
        for _ in range(3):
            reply, s = self.lb_who(tls_max="1.3")
            if reply["name"] == victim.name:
                first, sess = reply, s
        self.assertIsNotNone(sess)
        self.kill_backend(victim)
        lb.wait_for_stderr("server %s is DOWN" % victim.name, timeout=5)
        # fall 2 x interval 200 ms: the lb knows well within a second; its
        # tagged client is served elsewhere without error.
        reply, _ = self.lb_who(tls_max="1.3", session=sess)
        self.assertNotEqual(reply["name"], victim.name)
        names = {self.lb_who()[0]["name"] for _ in range(6)}
        self.assertNotIn(victim.name, names)
        # It comes back on the same port after rise successful checks.
        self.start_backend(victim.name, mode="tls", proxy="v2", port=victim.port,
                           cert=self.pki.nodes["backend"], tag=2)
        lb.wait_for_stderr("server %s is UP" % victim.name, timeout=5)
        names = [self.lb_who()[0]["name"] for _ in range(6)]
        self.assertIn(victim.name, names)

    def test_all_servers_down_closes_with_a_log_line(self):
        backends = self.add_backends(2)
        lb = self.start_lb(self.write_config())
        for b in backends:
            self.kill_backend(b)
        lb.wait_for_stderr("server node1 is DOWN", timeout=5)
        lb.wait_for_stderr("server node2 is DOWN", timeout=5)
        with self.assertRaises((ConnectionError, OSError)):
            self.lb_who()
        wait_for(lambda: any(l["end"] == "no_server" for l in conn_lines(lb)), 5, "a no_server log line")

    def test_refused_connect_is_retried_then_redispatched(self):
        backends = self.add_backends(2)
        # Checks far apart: the lb still believes node1 is up when it is gone.
        lb = self.start_lb(self.write_config(lb_overrides={
            "health_check": {"type": "tcp", "interval_ms": 60000, "timeout_ms": 1000}}))
        self.kill_backend(backends[0])
        names = [self.lb_who()[0]["name"] for _ in range(4)]
        self.assertEqual(names, ["node2"] * 4)
        redispatched = [l for l in lines_when(lb, 4) if l["route"] == "redispatch"]
        self.assertGreaterEqual(len(redispatched), 1)
        self.assertEqual(redispatched[0]["attempts"], "4")  # 3 retries, the last elsewhere


class HealthCheckTypes(LbTestCase):
    def test_tls_hello_check_sees_a_modern_server_go_and_come_back(self):
        backends = self.add_backends(2)
        lb = self.start_lb(self.write_config(lb_overrides={
            "health_check": {"type": "tls-hello", "port": "tls", "proxy_protocol": "v2",
                             "interval_ms": 200, "timeout_ms": 200, "rise": 2, "fall": 2}}))
        # A TLS 1.2/1.3 server answers the check's ClientHello: nobody goes down.
        time.sleep(1.0)
        self.assertNotIn("is DOWN", lb.stderr_text())
        self.kill_backend(backends[0])
        lb.wait_for_stderr("server node1 is DOWN (tls-hello check", timeout=5)
        self.start_backend("node1", mode="tls", proxy="v2", port=backends[0].port,
                           cert=self.pki.nodes["backend"], tag=1)
        lb.wait_for_stderr("server node1 is UP", timeout=5)

    def test_http_check_follows_the_status_code(self):
        # The test backend, in-process: its health answer changes below.
        server = t.HttpBackend("127.0.0.1", 0, health_path="/_edgepin/health").start()
        self.addCleanup(server.stop)
        self.add_backends(1, mode="tcp")
        conf = self.write_config(mode="tcp", lb_overrides={
            "health_check": {"type": "http", "port": server.port, "path": "/_edgepin/health",
                             "interval_ms": 200, "timeout_ms": 200, "rise": 2, "fall": 2}})
        lb = self.start_lb(conf)
        time.sleep(0.8)
        self.assertNotIn("is DOWN", lb.stderr_text())
        self.assertEqual(t.tcp_who("127.0.0.1", self.lb_port)["name"], "node1")
        server.health_status = 503
        lb.wait_for_stderr("server node1 is DOWN (http check: bad_status 503", timeout=5)
        with self.assertRaises((ConnectionError, OSError)):
            t.tcp_who("127.0.0.1", self.lb_port)
        server.health_status = 302  # 3xx counts as up, like HAProxy
        lb.wait_for_stderr("server node1 is UP", timeout=5)
        self.assertEqual(t.tcp_who("127.0.0.1", self.lb_port)["name"], "node1")


class ProxyProtocol(LbTestCase):
    def test_backend_receives_client_address_and_sni(self):
        self.add_backends(1)
        self.start_lb(self.write_config())
        with t.tls_connect("127.0.0.1", self.lb_port, sni="app.example.com") as s:
            local = s.getsockname()
            reply = t.parse_who(t.exchange(s, b"WHO\n", half_close=False).data)
        self.assertEqual(reply["proxy_src"], "%s:%d" % local)
        self.assertEqual(reply["proxy_dst"], "127.0.0.1:%d" % self.lb_port)
        self.assertEqual(reply["authority"], "app.example.com")

    def test_proxy_v1_option(self):
        self.add_backends(1, proxy="v1")
        self.start_lb(self.write_config(proxy="v1"))
        with t.tls_connect("127.0.0.1", self.lb_port) as s:
            local = s.getsockname()
            reply = t.parse_who(t.exchange(s, b"WHO\n", half_close=False).data)
        self.assertEqual(reply["proxy_src"], "%s:%d" % local)


class Relay(LbTestCase):
    def test_100_mb_each_way_byte_exact(self):
        self.add_backends(1, mode="tcp")
        self.start_lb(self.write_config(mode="tcp"))
        size = 100 * 1024 * 1024
        # Upload: the backend hashes what it got.
        block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
        payload = (block for _ in range(size // len(block)))
        with t.tcp_connect("127.0.0.1", self.lb_port) as s:
            s.sendall(b"SINK\n")
            res = t.exchange(s, payload, half_close=True, timeout=60)
        expect = hashlib.sha256()
        for _ in range(size // len(block)):
            expect.update(block)
        self.assertEqual(res.data.decode().split(), ["sha256=" + expect.hexdigest(), "bytes=%d" % size])
        # Download: the backend's deterministic SOURCE stream.
        with t.tcp_connect("127.0.0.1", self.lb_port) as s:
            s.sendall(b"SOURCE %d 7\n" % size)
            res = t.exchange(s, b"", half_close=False, timeout=60, keep_data=False)
        self.assertEqual(res.nbytes, size)
        self.assertEqual(res.sha256, t.source_sha256(size, "7"))

    def test_many_connections_at_once_echo_byte_exact(self):
        self.add_backends(2, mode="tcp")
        self.start_lb(self.write_config(mode="tcp", threads=2))
        errors = []

        def one(i):
            data = hashlib.sha256(b"%d" % i).digest() * (4 * 1024 * 1024 // 32)  # 4 MiB
            try:
                with t.tcp_connect("127.0.0.1", self.lb_port) as s:
                    s.sendall(b"ECHO\n")
                    res = t.exchange(s, data, half_close=True, timeout=60, keep_data=False)
                if res.sha256 != hashlib.sha256(data).hexdigest():
                    errors.append("conn %d: hash mismatch (%d bytes)" % (i, res.nbytes))
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("conn %d: %r" % (i, e))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
        self.assertEqual(errors, [])


class BadInput(LbTestCase):
    def test_garbage_truncated_and_slow_senders_do_not_disturb_others(self):
        self.add_backends(2)
        lb = self.start_lb(self.write_config(frontend_overrides={
            "inspect": {"timeout_ms": 1000, "on_failure": "reject"}}))
        garbage = t.tcp_connect("127.0.0.1", self.lb_port)
        garbage.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        truncated = t.tcp_connect("127.0.0.1", self.lb_port)
        truncated.sendall(bytes.fromhex("16030100c8010000c40303"))  # hello cut short
        slow = t.tcp_connect("127.0.0.1", self.lb_port)
        slow_stop = threading.Event()

        def drip():
            hello = bytes.fromhex("16030100c8010000c40303") + bytes(40)
            for b in hello:
                if slow_stop.wait(0.2):
                    return
                try:
                    slow.send(bytes([b]))
                except OSError:
                    return

        dripper = threading.Thread(target=drip)
        dripper.start()
        # Meanwhile, normal clients are served at once.
        for _ in range(5):
            self.assertIn(self.lb_who()[0]["name"], ("node1", "node2"))
        # Each bad connection is closed: garbage at once, the others at the
        # inspect deadline.
        for sock in (garbage, truncated, slow):
            sock.settimeout(5)
            self.assertEqual(sock.recv(100), b"")
            sock.close()
        slow_stop.set()
        dripper.join()
        ends = collections.Counter(l["end"] for l in conn_lines(lb, routed_only=False))
        self.assertEqual(ends["inspect_error"], 1, ends)
        self.assertEqual(ends["inspect_timeout"], 2, ends)
        bad = [l for l in conn_lines(lb, routed_only=False) if l["end"] == "inspect_error"][0]
        self.assertTrue(bad["inspect"].startswith("not_handshake_record@"), bad)

    def test_non_tls_bytes_are_balanced_when_the_policy_says_so(self):
        self.add_backends(1, mode="tcp")
        lb = self.start_lb(self.write_config(mode="tcp", frontend_overrides={
            "mode": "tls", "inspect": {"timeout_ms": 1000, "on_failure": "balance"}}))
        reply = t.tcp_who("127.0.0.1", self.lb_port)
        self.assertEqual(reply["name"], "node1")
        # The lb logs once both sides have closed, just after the reply.
        line = wait_for(lambda: conn_lines(lb), 5, "the connection's log line")[-1]
        self.assertEqual(line["route"], "balance")
        self.assertTrue(line["inspect"].startswith("not_handshake_record"), line)


class Limits(LbTestCase):
    def timed_close(self, sock, timeout=10):
        """Waits for the lb to close `sock` (EOF); returns the seconds that
        took. Fails if bytes arrive instead."""
        sock.settimeout(timeout)
        started = time.monotonic()
        self.assertEqual(sock.recv(100), b"")
        took = time.monotonic() - started
        sock.close()
        return took

    def the_line(self, lb, end):
        return wait_for(lambda: [l for l in conn_lines(lb) if l["end"] == end], 5, "an end=%s line" % end)[0]

    def test_silent_client_gets_the_client_timeout(self):
        self.add_backends(1, mode="tcp")
        lb = self.start_lb(self.write_config(mode="tcp", lb_overrides={
            "timeouts": {"client_ms": 400, "server_ms": 5000, "tunnel_ms": 10000}}))
        # Connected to the backend, which waits for a command: the client
        # is the one expected to speak.
        took = self.timed_close(t.tcp_connect("127.0.0.1", self.lb_port))
        self.assertGreaterEqual(took, 0.35)
        self.assertLess(took, 4)
        line = self.the_line(lb, "client_timeout")
        self.assertEqual(line["server"], "node1")
        self.assertEqual(line["bytes_in"], "0")

    def test_silent_server_gets_the_server_timeout(self):
        self.add_backends(1, mode="tcp")
        lb = self.start_lb(self.write_config(mode="tcp", lb_overrides={
            "timeouts": {"client_ms": 5000, "server_ms": 400, "tunnel_ms": 10000}}))
        s = t.tcp_connect("127.0.0.1", self.lb_port)
        s.sendall(b"ECHO\n")  # the backend now echoes, so it says nothing yet
        took = self.timed_close(s)
        self.assertGreaterEqual(took, 0.35)
        self.assertLess(took, 4)
        line = self.the_line(lb, "server_timeout")
        self.assertEqual((line["bytes_in"], line["bytes_out"]), ("5", "0"))

    def test_tunnel_timeout_replaces_client_and_server_timeouts(self):
        self.add_backends(1, mode="tcp")
        lb = self.start_lb(self.write_config(mode="tcp", lb_overrides={
            "timeouts": {"client_ms": 300, "server_ms": 300, "tunnel_ms": 1500}}))
        s = t.tcp_connect("127.0.0.1", self.lb_port)
        s.sendall(b"ECHO\nhello")
        s.settimeout(5)
        self.assertEqual(s.recv(100), b"hello")
        # Bytes went both ways: only 1.5 s of silence on both sides ends
        # it, not the 300 ms client or server timeout.
        took = self.timed_close(s)
        self.assertGreaterEqual(took, 1.4)
        self.assertLess(took, 5)
        line = self.the_line(lb, "tunnel_timeout")
        self.assertEqual(line["server"], "node1")
        self.assertEqual((line["bytes_in"], line["bytes_out"]), ("10", "5"))

    def test_without_tunnel_timeout_the_client_timeout_applies_after_the_answer(self):
        self.add_backends(1, mode="tcp")
        lb = self.start_lb(self.write_config(mode="tcp", lb_overrides={
            "timeouts": {"client_ms": 400, "server_ms": 5000, "tunnel_ms": 0}}))
        s = t.tcp_connect("127.0.0.1", self.lb_port)
        s.sendall(b"ECHO\nhello")
        s.settimeout(5)
        self.assertEqual(s.recv(100), b"hello")
        # The server spoke last: the client is expected to go on.
        took = self.timed_close(s)
        self.assertGreaterEqual(took, 0.35)
        self.assertLess(took, 4)
        self.the_line(lb, "client_timeout")

    def test_half_closed_client_gets_the_client_timeout_once_the_server_closed(self):
        # Issue 12: the node answers and closes its side; a client that keeps
        # its own side open must not hold the connection for the tunnel
        # timeout (10 s here), only for the client timeout.
        self.add_backends(1, mode="tcp")
        lb = self.start_lb(self.write_config(mode="tcp", lb_overrides={
            "timeouts": {"client_ms": 400, "server_ms": 5000, "tunnel_ms": 10000}}))
        s = t.tcp_connect("127.0.0.1", self.lb_port)
        s.sendall(b"WHO\n")  # the backend answers one line, then shuts its side
        s.settimeout(5)
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break  # the server's close, passed on by the lb
            answer += chunk
        closed_by_server = time.monotonic()
        self.assertTrue(answer.startswith(b"name=node1 "), answer)
        # The client stays silent with its side open; the lb closes it.
        line = wait_for(lambda: [l for l in conn_lines(lb) if l["end"] != "closed"], 5,
                        "the lb to close the half-closed client")[0]
        took = time.monotonic() - closed_by_server
        s.close()
        self.assertEqual(line["end"], "client_timeout")
        self.assertEqual(line["bytes_in"], "4")
        self.assertLess(took, 4)
        self.assertGreaterEqual(int(line["duration_ms"]), 350)

    def test_global_maxconn_leaves_excess_clients_in_the_backlog(self):
        self.add_backends(1, mode="tcp")
        stats_port = t.free_port()
        # Two workers: the limit is shared over their SO_REUSEPORT listeners.
        lb = self.start_lb(self.write_config(mode="tcp", threads=2, lb_overrides={
            "maxconn": 2, "stats": {"bind": "127.0.0.1:%d" % stats_port}}))

        def stats():
            conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=5)
            try:
                conn.request("GET", "/stats;json")
                return json.loads(conn.getresponse().read())["totals"]
            finally:
                conn.close()

        # The stats listener starts after the frontends.
        t.wait_for_port("127.0.0.1", stats_port, timeout=10, proc=lb)
        # wait_for_port's probes held a slot for a moment.
        wait_for(lambda: stats()["current_connections"] == 0, 5, "the probe's session to end")
        relayed = []
        for i in range(2):
            s = t.tcp_connect("127.0.0.1", self.lb_port)
            s.sendall(b"ECHO\nping%d" % i)
            s.settimeout(5)
            self.assertEqual(s.recv(100), b"ping%d" % i)
            relayed.append(s)
        # The third completes its TCP handshake in the kernel, but the lb
        # does not serve it: no WHO reply while two are open.
        third = t.tcp_connect("127.0.0.1", self.lb_port)
        third.sendall(b"WHO\n")
        third.settimeout(1.0)
        with self.assertRaises(socket.timeout):
            third.recv(100)
        totals = stats()
        self.assertEqual(totals["current_connections"], 2, totals)
        self.assertEqual(totals["maxconn"], 2, totals)
        self.assertGreaterEqual(totals["maxconn_pauses"], 1, totals)
        lb.wait_for_stderr("maxconn 2 reached", timeout=5)
        # One leaves: the waiting client is served, with what it sent before.
        t.shutdown_write(relayed[0])
        relayed[0].settimeout(5)
        self.assertEqual(relayed[0].recv(100), b"")
        relayed[0].close()
        third.settimeout(5)
        reply = t.parse_who(third.recv(4096).decode())
        self.assertEqual(reply["name"], "node1")
        third.close()
        t.shutdown_write(relayed[1])
        relayed[1].settimeout(5)
        self.assertEqual(relayed[1].recv(100), b"")
        relayed[1].close()
        # Nobody was refused: every client ended closed, none with an error.
        lines = client_lines_when(lb, 3)
        self.assertEqual(collections.Counter(l["end"] for l in lines), {"closed": 3}, lines)
        wait_for(lambda: stats()["current_connections"] == 0, 5, "every session to end")
        self.assertEqual(stats()["connections_total"], 4)

    def test_connect_timeout_retries_then_redispatches(self):
        # node1's address never answers a SYN: a listener with backlog 0
        # whose one queue slot is taken and that never accepts; Linux drops
        # SYNs to a full accept queue.
        blackhole = socket.socket()
        self.addCleanup(blackhole.close)
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        address = blackhole.getsockname()
        for _ in range(2):
            filler = socket.socket()
            self.addCleanup(filler.close)
            filler.setblocking(False)
            filler.connect_ex(address)
        time.sleep(0.1)
        probe = socket.socket()
        self.addCleanup(probe.close)
        probe.settimeout(0.5)
        with self.assertRaises(socket.timeout, msg="the blackhole answered a SYN"):
            probe.connect(address)

        class Blackhole:
            name = "node1"
            port = address[1]

        self.backends.append((Blackhole(), 100))
        self.add_backends(1, mode="tcp")  # node2
        lb = self.start_lb(self.write_config(mode="tcp", lb_overrides={
            "retries": 2, "redispatch": True, "timeouts": {"connect_ms": 300},
            "health_check": {"enabled": False}}))
        # wait_for_port's probe was routed too (a tcp frontend routes at
        # once), maybe to node1: let it end before counting.
        wait_for(lambda: conn_lines(lb), 5, "the probe's log line")
        # Round robin sends every other client to node1: each is tried
        # three times there (300 ms each), the last time on another server.
        names = [t.tcp_who("127.0.0.1", self.lb_port)["name"] for _ in range(4)]
        self.assertEqual(names, ["node2"] * 4)
        clients = client_lines_when(lb, 4)
        redispatched = [l for l in clients if l["route"] == "redispatch"]
        self.assertGreaterEqual(len(redispatched), 1, clients)
        for line in redispatched:
            self.assertEqual((line["server"], line["attempts"], line["end"]), ("node2", "3", "closed"), line)
            self.assertEqual(line["connect_error"], "timeout", line)
            self.assertGreaterEqual(int(line["duration_ms"]), 550, line)
        for line in clients:
            if line["route"] != "redispatch":
                self.assertEqual((line["server"], line["attempts"]), ("node2", "1"), line)
                self.assertNotIn("connect_error", line)

    def test_access_log_off_keeps_only_failures(self):
        self.add_backends(1, mode="tcp")
        lb = self.start_lb(self.write_config(mode="tcp", lb_overrides={
            "log": {"level": "info", "access_log": False}, "timeouts": {"server_ms": 300}}))
        for _ in range(3):
            self.assertEqual(t.tcp_who("127.0.0.1", self.lb_port)["name"], "node1")
        s = t.tcp_connect("127.0.0.1", self.lb_port)
        s.sendall(b"ECHO\n")
        self.timed_close(s)
        # The failure has its line, as a warning; the clean ones have none.
        line = self.the_line(lb, "server_timeout")
        self.assertEqual(line["server"], "node1")
        everything = conn_lines(lb, routed_only=False)
        self.assertNotIn("closed", [l["end"] for l in everything], everything)
        # (wait_for_port's probe sent nothing; only a failure could log it.)
        self.assertEqual([l["end"] for l in everything if l["bytes_in"] != "0"], ["server_timeout"], everything)
        logged = [l for l in lb.stderr_text().splitlines() if LOG_LINE.search(l)]
        self.assertTrue(all(" warning: conn " in l for l in logged), logged)

    def test_server_maxconn_queues_then_times_out(self):
        self.add_backends(1, mode="tcp")
        lb = self.start_lb(self.write_config(mode="tcp", lb_overrides={
            "server_maxconn": 1, "queue_size": 1, "timeouts": {"queue_ms": 1000}}))
        hold = t.tcp_connect("127.0.0.1", self.lb_port)
        hold.sendall(b"ECHO\n")
        time.sleep(0.3)
        queued = t.tcp_connect("127.0.0.1", self.lb_port)
        time.sleep(0.2)
        # The queue holds one: a third client is refused at once.
        third = t.tcp_connect("127.0.0.1", self.lb_port)
        third.settimeout(5)
        self.assertEqual(third.recv(10), b"")
        # The queued one gets its slot as soon as the first one leaves.
        t.shutdown_write(hold)
        hold.settimeout(5)
        while hold.recv(4096):
            pass
        hold.close()
        queued.sendall(b"WHO\n")
        queued.settimeout(5)
        self.assertTrue(queued.recv(4096).startswith(b"name=node1"))
        queued.close()
        third.close()
        # A client that waits longer than the queue timeout is closed.
        hold = t.tcp_connect("127.0.0.1", self.lb_port)
        hold.sendall(b"ECHO\n")
        time.sleep(0.3)
        late = t.tcp_connect("127.0.0.1", self.lb_port)
        late.settimeout(5)
        self.assertEqual(late.recv(10), b"")
        late.close()
        hold.close()
        ends = collections.Counter(l["end"] for l in conn_lines(lb))
        self.assertEqual(ends["queue_full"], 1, ends)
        self.assertEqual(ends["queue_timeout"], 1, ends)


if __name__ == "__main__":
    unittest.main()
