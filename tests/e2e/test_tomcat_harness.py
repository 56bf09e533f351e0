"""End-to-end checks of the Tomcat harness (tomcat.py) and the demo app.

Every other end-to-end test stands on these facts: two real Tomcat 10
instances on their own loopback addresses keep per-session counters, show
their node names, apply RemoteIpValve to what a proxy on 127.0.0.1 sends,
tag sessions with their jvmRoute, move 50 MB each way intact, and stop
without leaving a process or a bound port behind, even when the test that
started them fails or dies.

Run: cd tests/e2e && /usr/bin/python3 -m unittest -v test_tomcat_harness
"""

import hashlib
import http.client
import http.cookiejar
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tomcat import (  # noqa: E402
    CATALINA_SH, MAKE_INSTANCE, TomcatError, TomcatInstance, catalina_pids,
    direct_opener, free_port, listening_addresses, parse_kv, pattern_chunks,
    pattern_sha256, port_is_free)

MIB = 1024 * 1024
BIG = 50 * MIB
PATTERN_CHECK_BYTES = 4096
IO_TIMEOUT = 120.0
# A proxy on the same host as Tomcat, as the node-proxy will be.
PROXY_SOURCE = "127.0.0.1"


def request(instance, method, path, headers=None, body=None, encode_chunked=False):
    """One request on a new connection from PROXY_SOURCE.
    Returns (status, response headers, body bytes)."""
    conn = http.client.HTTPConnection(instance.address, instance.port, timeout=IO_TIMEOUT,
                                      source_address=(PROXY_SOURCE, 0))
    try:
        conn.request(method, path, body=body, headers=headers or {},
                     encode_chunked=encode_chunked)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def get_kv(instance, path, headers=None):
    status, headers_in, body = request(instance, "GET", path, headers)
    return status, headers_in, parse_kv(body.decode())


def session_cookie(headers):
    """Returns the JSESSIONID value from Set-Cookie headers, or None."""
    for value in headers.get_all("Set-Cookie") or []:
        name, _, rest = value.partition("=")
        if name.strip() == "JSESSIONID":
            return rest.split(";", 1)[0]
    return None


def start_all(instances):
    """create() and start() the instances in parallel (startup is mostly
    single-threaded CPU work; two of them use both cores). Re-raises the
    first failure after stopping every instance."""
    errors = []

    def run(instance):
        try:
            instance.create()
            instance.start()
        except BaseException as e:  # reported below, in the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for instance in instances:
            instance.stop()
        raise errors[0]


def report(instance):
    print(f"\n  {instance.name} on {instance.address}:{instance.port}: ready in "
          f"{instance.startup_seconds:.2f} s, RSS {instance.rss_kib() // 1024} MiB",
          file=sys.stderr)


class TestTwoTomcats(unittest.TestCase):
    """Two instances side by side, as the lb tests run them."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="edgepin-tomcat-")
        cls.addClassCleanup(cls.tmp.cleanup)
        cls.routed = TomcatInstance(cls.tmp.name, "tomcat21", "127.0.0.21", jvm_route="route21")
        cls.plain = TomcatInstance(cls.tmp.name, "tomcat22", "127.0.0.22")
        cls.both = (cls.routed, cls.plain)
        for instance in cls.both:
            cls.addClassCleanup(instance.stop)
        start_all(cls.both)
        for instance in cls.both:
            report(instance)

    def test_counter_is_per_session_and_node_name_is_right(self):
        for instance in self.both:
            with self.subTest(instance=instance.name):
                jar = http.cookiejar.CookieJar()
                opener = direct_opener(jar)
                seen = []
                for _ in range(2):
                    with opener.open(instance.url("/index.jsp"), timeout=IO_TIMEOUT) as r:
                        self.assertEqual(r.status, 200)
                        seen.append(parse_kv(r.read().decode()))
                self.assertEqual([kv["counter"] for kv in seen], ["1", "2"])
                self.assertEqual([kv["session_new"] for kv in seen], ["true", "false"])
                self.assertEqual(seen[0]["session_id"], seen[1]["session_id"])
                for kv in seen:
                    self.assertEqual(kv["node"], instance.name)
                    self.assertEqual(kv["local_addr"], instance.address)
                    self.assertEqual(kv["local_port"], str(instance.port))

                # Another client (no cookie) gets its own session from 1.
                with direct_opener(http.cookiejar.CookieJar()).open(
                        instance.url("/index.jsp"), timeout=IO_TIMEOUT) as r:
                    other = parse_kv(r.read().decode())
                self.assertEqual(other["counter"], "1")
                self.assertNotEqual(other["session_id"], seen[0]["session_id"])

    def test_each_jvm_listens_only_on_its_http_address(self):
        # No AJP connector, no shutdown port, no other address.
        for instance in self.both:
            with self.subTest(instance=instance.name):
                self.assertEqual(listening_addresses(instance.pid),
                                 {(instance.address, instance.port)})

    def test_without_forwarded_headers_tomcat_sees_the_proxy(self):
        status, headers, kv = get_kv(self.plain, "/index.jsp")
        self.assertEqual(status, 200)
        self.assertEqual(kv["remote_addr"], PROXY_SOURCE)
        self.assertEqual(kv["scheme"], "http")
        self.assertEqual(kv["secure"], "false")
        self.assertEqual(kv["server_port"], str(self.plain.port))
        self.assertNotIn("Secure", headers["Set-Cookie"])

    def test_remote_ip_valve_applies_forwarded_headers_from_loopback(self):
        for instance in self.both:
            with self.subTest(instance=instance.name):
                status, headers, kv = get_kv(instance, "/index.jsp", {
                    "X-Forwarded-For": "203.0.113.7",
                    "X-Forwarded-Proto": "https",
                    "X-Forwarded-Port": "443",
                })
                self.assertEqual(status, 200)
                self.assertEqual(kv["remote_addr"], "203.0.113.7")
                self.assertEqual(kv["scheme"], "https")
                self.assertEqual(kv["secure"], "true")
                self.assertEqual(kv["server_port"], "443")
                # The valve consumed the whole X-Forwarded-For chain.
                self.assertEqual(kv["x_forwarded_for"], "")
                # Tomcat marks the session cookie Secure for a request it
                # believes is HTTPS: the affinity tests rely on this.
                self.assertIn("Secure", headers["Set-Cookie"])

    def test_remote_ip_valve_trusts_only_loopback_proxies(self):
        # 127.0.0.5 is a trusted hop and is skipped; 10.0.0.1 is not (Tomcat's
        # default list would trust it), so it is the client, and the hop
        # before it stays in the header.
        _, _, kv = get_kv(self.plain, "/index.jsp",
                          {"X-Forwarded-For": "198.51.100.1, 127.0.0.5"})
        self.assertEqual(kv["remote_addr"], "198.51.100.1")
        _, _, kv = get_kv(self.plain, "/index.jsp",
                          {"X-Forwarded-For": "198.51.100.1, 10.0.0.1"})
        self.assertEqual(kv["remote_addr"], "10.0.0.1")
        self.assertEqual(kv["x_forwarded_for"], "198.51.100.1")

    def test_jvm_route_suffix_only_when_set(self):
        _, headers, kv = get_kv(self.routed, "/index.jsp")
        cookie = session_cookie(headers)
        self.assertIsNotNone(cookie)
        self.assertTrue(cookie.endswith(".route21"), cookie)
        self.assertEqual(kv["session_id"], cookie)

        _, headers, kv = get_kv(self.plain, "/index.jsp")
        cookie = session_cookie(headers)
        self.assertIsNotNone(cookie)
        self.assertNotIn(".", cookie)
        self.assertEqual(kv["session_id"], cookie)

    def test_upload_50_mib_with_content_length(self):
        data = os.urandom(BIG)
        status, _, body = request(self.routed, "POST", "/upload.jsp", body=data,
                                  headers={"Content-Type": "application/octet-stream"})
        self.assertEqual(status, 200, body[:200])
        kv = parse_kv(body.decode())
        self.assertEqual(kv["bytes"], str(BIG))
        self.assertEqual(kv["sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual(kv["content_length"], str(BIG))
        self.assertEqual(kv["node"], self.routed.name)

    def test_upload_50_mib_chunked(self):
        seed = "upload-chunked"
        status, _, body = request(self.plain, "POST", "/upload.jsp",
                                  body=pattern_chunks(BIG, seed), encode_chunked=True,
                                  headers={"Content-Type": "application/octet-stream",
                                           "Transfer-Encoding": "chunked"})
        self.assertEqual(status, 200, body[:200])
        kv = parse_kv(body.decode())
        self.assertEqual(kv["bytes"], str(BIG))
        self.assertEqual(kv["sha256"], pattern_sha256(BIG, seed))
        self.assertEqual(kv["transfer_encoding"], "chunked")
        self.assertEqual(kv["content_length"], "")

    def test_download_50_mib_matches_python_generator(self):
        seed = "download-50"
        conn = http.client.HTTPConnection(self.routed.address, self.routed.port,
                                          timeout=IO_TIMEOUT)
        try:
            conn.request("GET", f"/download.jsp?bytes={BIG}&seed={seed}")
            response = conn.getresponse()
            self.assertEqual(response.status, 200)
            self.assertEqual(response.headers["Content-Length"], str(BIG))
            h = hashlib.sha256()
            received = 0
            while chunk := response.read(1024 * 1024):
                h.update(chunk)
                received += len(chunk)
        finally:
            conn.close()
        self.assertEqual(received, BIG)
        self.assertEqual(h.hexdigest(), pattern_sha256(BIG, seed))
        # The seed matters: another seed gives another stream.
        self.assertNotEqual(pattern_sha256(PATTERN_CHECK_BYTES, seed),
                            pattern_sha256(PATTERN_CHECK_BYTES, seed + "x"))

    def test_download_chunked_odd_size_and_head(self):
        size = 3 * 65536 + 1234  # ends inside a block
        status, headers, body = request(self.plain, "GET",
                                        f"/download.jsp?bytes={size}&seed=odd&chunked=1")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Transfer-Encoding"], "chunked")
        self.assertIsNone(headers["Content-Length"])
        self.assertEqual(body, b"".join(pattern_chunks(size, "odd")))

        status, headers, body = request(self.plain, "HEAD", f"/download.jsp?bytes={size}")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Length"], str(size))
        self.assertEqual(body, b"")

        status, _, body = request(self.plain, "GET", "/download.jsp?bytes=-1")
        self.assertEqual(status, 400, body)

    def test_headers_page_shows_what_arrived(self):
        status, _, body = request(self.plain, "GET", "/headers.jsp",
                                  {"X-Edgepin-Probe": "probe-42"})
        self.assertEqual(status, 200)
        lines = [line.lower() for line in body.decode().splitlines()]
        self.assertIn("x-edgepin-probe: probe-42", lines)
        self.assertIn(f"host: {self.plain.address}:{self.plain.port}", lines)

    def test_slow_page_waits(self):
        began = time.monotonic()
        status, _, body = request(self.routed, "GET", "/slow.jsp?ms=300")
        elapsed = time.monotonic() - began
        self.assertEqual(status, 200)
        self.assertEqual(parse_kv(body.decode())["slept_ms"], "300")
        self.assertGreaterEqual(elapsed, 0.3)

    def test_health_page_creates_no_session(self):
        status, headers, body = request(self.routed, "GET", "/health.jsp")
        self.assertEqual(status, 200)
        self.assertEqual(parse_kv(body.decode()),
                         {"status": "ok", "node": self.routed.name})
        self.assertIsNone(headers["Set-Cookie"])


class TestLifecycle(unittest.TestCase):
    """Stopping, restarting and failing leave nothing behind."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="edgepin-tomcat-")
        self.addCleanup(self.tmp.cleanup)

    def assert_gone(self, instance, pid):
        self.assertFalse(instance.is_running())
        self.assertIsNone(instance.pid)
        self.assertTrue(port_is_free(instance.address, instance.port))
        self.assertEqual(catalina_pids(instance.base), [])
        self.assertFalse(os.path.exists(f"/proc/{pid}"), f"pid {pid} still exists")
        self.assertFalse(instance.pid_file.exists())

    def test_stop_restart_and_exception_in_with_block(self):
        instance = TomcatInstance(self.tmp.name, "tomcat-life", "127.0.0.21")
        self.addCleanup(instance.stop)

        class Boom(Exception):
            pass

        with self.assertRaises(Boom):
            with instance:
                report(instance)
                first_pid = instance.pid
                self.assertEqual(catalina_pids(instance.base), [first_pid])
                self.assertEqual(instance.pid_file.read_text().strip(), str(first_pid))
                self.assertFalse(port_is_free(instance.address, instance.port))
                jar = http.cookiejar.CookieJar()
                opener = direct_opener(jar)
                for expected in ("1", "2"):
                    with opener.open(instance.url("/index.jsp"), timeout=IO_TIMEOUT) as r:
                        self.assertEqual(parse_kv(r.read().decode())["counter"], expected)

                port = instance.port
                instance.stop()
                self.assert_gone(instance, first_pid)

                # Same port again; sessions are not persisted across restarts.
                instance.start()
                second_pid = instance.pid
                self.assertEqual(instance.port, port)
                self.assertNotEqual(second_pid, first_pid)
                with opener.open(instance.url("/index.jsp"), timeout=IO_TIMEOUT) as r:
                    kv = parse_kv(r.read().decode())
                self.assertEqual(kv["counter"], "1")
                self.assertEqual(kv["session_new"], "true")
                raise Boom()
        self.assert_gone(instance, second_pid)

    def test_start_failure_is_reported_and_cleaned_up(self):
        address = "127.0.0.23"
        with socket.socket() as squatter:
            squatter.bind((address, 0))
            squatter.listen()
            port = squatter.getsockname()[1]
            instance = TomcatInstance(self.tmp.name, "tomcat-busy", address, port=port)
            self.addCleanup(instance.stop)
            began = time.monotonic()
            with self.assertRaises(TomcatError) as caught:
                instance.start()
            elapsed = time.monotonic() - began
        message = str(caught.exception)
        self.assertTrue("BindException" in message or "Address already in use" in message,
                        message[-2000:])
        # Fails fast (EXIT_ON_INIT_FAILURE), not at the 60 s start timeout.
        self.assertLess(elapsed, 45.0)
        self.assertFalse(instance.is_running())
        self.assertEqual(catalina_pids(instance.base), [])

    def test_tomcat_dies_with_the_test_process(self):
        # A test process killed with SIGKILL runs no cleanup at all: the
        # watchdog in Tomcat's process group must stop the JVM.
        base = os.path.join(self.tmp.name, "orphan-parent")
        script = (
            "import sys, time\n"
            f"sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
            "from tomcat import TomcatInstance\n"
            f"t = TomcatInstance({base!r}, 'tomcat-orphan', '127.0.0.22')\n"
            "t.start()\n"
            "print(t.pid, t.port, flush=True)\n"
            "time.sleep(600)\n")
        parent = subprocess.Popen(["/usr/bin/python3", "-c", script], stdout=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL)
        self.addCleanup(parent.stdout.close)
        self.addCleanup(parent.wait)
        self.addCleanup(parent.kill)
        line = parent.stdout.readline().decode().split()
        self.assertEqual(len(line), 2, "the child did not start Tomcat")
        jvm_pid, port = int(line[0]), int(line[1])
        self.assertEqual(catalina_pids(os.path.join(base, "tomcat-orphan")), [jvm_pid])

        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 15
        while os.path.exists(f"/proc/{jvm_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse(os.path.exists(f"/proc/{jvm_pid}"), "JVM outlived its test process")
        self.assertEqual(catalina_pids(os.path.join(base, "tomcat-orphan")), [])
        deadline = time.monotonic() + 10
        while not port_is_free("127.0.0.22", port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertTrue(port_is_free("127.0.0.22", port))


class TestHelpers(unittest.TestCase):
    """The pure helpers, checked against independent computations."""

    def test_pattern_matches_its_definition(self):
        # Recomputes block 1 byte by byte from the definition in download.jsp.
        seed = b"def"
        base = b"".join(hashlib.sha256(seed + b"base" + j.to_bytes(8, "big")).digest()
                        for j in range(2048))
        mask = hashlib.sha256(seed + b"block" + (1).to_bytes(8, "big")).digest()
        block1 = bytes(base[k] ^ mask[k % 32] for k in range(65536))
        stream = b"".join(pattern_chunks(2 * 65536 + 10, "def"))
        self.assertEqual(len(stream), 2 * 65536 + 10)
        self.assertEqual(stream[65536:131072], block1)
        self.assertNotEqual(stream[:65536], block1)
        self.assertEqual(b"".join(pattern_chunks(0, "def")), b"")

    def test_free_port_is_bindable(self):
        port = free_port("127.0.0.21")
        self.assertTrue(1 <= port <= 65535)
        self.assertTrue(port_is_free("127.0.0.21", port))

    def test_tools_are_installed(self):
        self.assertTrue(os.access(CATALINA_SH, os.X_OK), f"{CATALINA_SH}: apt-get install tomcat10")
        self.assertTrue(os.access(MAKE_INSTANCE, os.X_OK), MAKE_INSTANCE)


if __name__ == "__main__":
    unittest.main(verbosity=2)
