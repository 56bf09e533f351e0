"""Self-test of edgepin-test-backend and of edgepin_testlib, against the real
binary on loopback: the lb's integration tests rely on both.

What it proves:
- a tagged TLS backend issues resumption data whose node tag the lb can
  read (decoded here with a Python mirror of common/wire/node_tag.h): TLS 1.3 PSK
  identities and TLS 1.2 tickets start with a tagged key name, TLS 1.2
  session IDs are tagged session IDs; the clients really resume; an
  untagged backend's resumption data carries no tag;
- a PROXY header is required when configured, parsed (v1, v2, IPv4, IPv6,
  authority TLV), and a missing or malformed one closes the connection
  without an answer;
- 20 MB through SINK, SOURCE and ECHO arrive intact (sha256 on both sides),
  over TCP and TLS;
- the backend exits 0 on SIGTERM (also with a connection open), which under
  ASan means no leak.
"""

import os
import socket
import tempfile
import time
import unittest

from edgepin_testlib import (
    EdgepinTestCase,
    RecordingRelay,
    crc32c,
    crc64xz,
    decode_key_name,
    decode_session_id,
    decode_ticket,
    exchange,
    make_pki,
    parse_client_hello,
    proxy_v1,
    proxy_v2,
    sha256_of_chunks,
    source_sha256,
    tcp_connect,
    tcp_who,
    tls_connect,
    tls_who,
)

TAG = 4242
TWENTY_MB = 20 * 1000 * 1000


def setUpModule():
    global PKI_DIR, PKI
    PKI_DIR = tempfile.TemporaryDirectory(prefix="edgepin-it-pki-")
    PKI = make_pki(PKI_DIR.name, names=("b1",))


def tearDownModule():
    PKI_DIR.cleanup()


def pseudo_random_chunks(total, seed):
    # Client-side payload: deterministic, incompressible, cheap.
    import hashlib
    block = hashlib.shake_128(b"client-payload:" + seed).digest(1 << 20)
    left = total
    while left > 0:
        n = min(len(block), left)
        yield block[:n]
        left -= n


class NodeTagMirrorTest(unittest.TestCase):
    def test_crc_check_values(self):
        # The catalogued check values pin the polynomials, as in node_tag.cpp.
        self.assertEqual(crc32c(b"123456789"), 0xE3069283)
        self.assertEqual(crc64xz(b"123456789"), 0x995DC9BBDF1939FA)

    def test_decoders_refuse_foreign_data(self):
        self.assertIsNone(decode_session_id(b""))
        self.assertIsNone(decode_session_id(bytes(32)))
        self.assertIsNone(decode_key_name(os.urandom(16)[:15]))
        self.assertIsNone(decode_ticket(b"\xe9\x12" + bytes(30)))


class TaggedTlsTest(EdgepinTestCase):
    def start(self, **kwargs):
        return self.start_backend("b1", mode="tls", cert=PKI.nodes["b1"], tag=TAG, **kwargs)

    def resume_through_relay(self, backend, **client):
        """Two connections through a recording relay, the second resuming
        the first one's session. Returns (first reply, second reply, first
        session, second ClientHello)."""
        with RecordingRelay(backend.host, backend.port) as relay:
            first, session = tls_who(relay.host, relay.port, sni="b1.test", cafile=PKI.ca_cert, **client)
            second, _ = tls_who(relay.host, relay.port, session=session, sni="b1.test",
                                cafile=PKI.ca_cert, **client)
            hello = parse_client_hello(relay.client_bytes(1))
        return first, second, session, hello

    def test_tls13_psk_identity_carries_the_tag_and_resumes(self):
        backend = self.start()
        first, second, _, hello = self.resume_through_relay(backend)
        self.assertEqual(first["name"], "b1")
        self.assertEqual(first["version"], "TLSv1.3")
        self.assertEqual(first["resumed"], "0")
        self.assertEqual(first["authority"], "b1.test")
        self.assertEqual(second["resumed"], "1")
        self.assertTrue(second.client_resumed)
        self.assertEqual(len(hello.psk_identities), 1)
        tag = decode_ticket(hello.psk_identities[0])
        self.assertIsNotNone(tag, hello.psk_identities[0].hex())
        self.assertEqual(tag.tag, TAG)
        self.assertEqual(tag.epoch, 1)
        # The TLS 1.3 legacy_session_id is random: it must not look tagged.
        self.assertIsNone(decode_session_id(hello.session_id))

    def test_tls12_ticket_carries_the_tag_and_resumes(self):
        backend = self.start()
        first, second, _, hello = self.resume_through_relay(backend, tls_max="1.2")
        self.assertEqual(first["version"], "TLSv1.2")
        self.assertEqual(first["resumed"], "0")
        self.assertEqual(second["resumed"], "1")
        self.assertEqual(second["version"], "TLSv1.2")
        self.assertTrue(hello.ticket)
        self.assertEqual(decode_ticket(hello.ticket).tag, TAG)
        # The client's own session ID beside the ticket is not ours: the lb
        # must let the ticket win.
        self.assertIsNone(decode_session_id(hello.session_id))

    def test_tls12_session_id_carries_the_tag_and_resumes(self):
        backend = self.start()
        first, second, session, hello = self.resume_through_relay(backend, tls_max="1.2", no_ticket=True)
        self.assertEqual(first["resumed"], "0")
        self.assertEqual(second["resumed"], "1")
        self.assertEqual(decode_session_id(session.id).tag, TAG)
        self.assertEqual(hello.session_id, session.id)
        self.assertEqual(decode_session_id(hello.session_id).tag, TAG)
        self.assertFalse(hello.ticket)

    def test_tls_max_12_negotiates_12(self):
        backend = self.start(tls_max="1.2")
        reply, _ = tls_who(backend.host, backend.port)
        self.assertEqual(reply["version"], "TLSv1.2")

    def test_no_tickets_no_cache_never_resumes(self):
        backend = self.start(no_tickets=True, no_cache=True)
        for tls_max in ("1.2", "1.3"):
            first, session = tls_who(backend.host, backend.port, tls_max=tls_max)
            second, _ = tls_who(backend.host, backend.port, tls_max=tls_max, session=session)
            self.assertEqual((first["resumed"], second["resumed"]), ("0", "0"), tls_max)

    def test_untagged_backend_resumes_without_tags(self):
        backend = self.start_backend("plain", mode="tls", cert=PKI.nodes["b1"])
        with RecordingRelay(backend.host, backend.port) as relay:
            _, s13 = tls_who(relay.host, relay.port)
            r13, _ = tls_who(relay.host, relay.port, session=s13)
            _, s12 = tls_who(relay.host, relay.port, tls_max="1.2", no_ticket=True)
            r12, _ = tls_who(relay.host, relay.port, tls_max="1.2", no_ticket=True, session=s12)
            hello13 = parse_client_hello(relay.client_bytes(1))
            hello12 = parse_client_hello(relay.client_bytes(3))
        self.assertEqual((r13["resumed"], r12["resumed"]), ("1", "1"))
        self.assertIsNone(decode_ticket(hello13.psk_identities[0]))
        self.assertIsNone(decode_session_id(hello12.session_id))


class ProxyHeaderTest(EdgepinTestCase):
    def test_v2_required_and_parsed(self):
        backend = self.start_backend("p2", mode="tcp", proxy="v2")
        header = proxy_v2(("192.0.2.10", 51000), ("198.51.100.7", 443), authority="app.example")
        reply = tcp_who(backend.host, backend.port, proxy_header=header)
        self.assertEqual(reply["proxy_src"], "192.0.2.10:51000")
        self.assertEqual(reply["proxy_dst"], "198.51.100.7:443")
        self.assertEqual(reply["authority"], "app.example")
        self.assertEqual(reply["proxy_authority"], "app.example")
        self.assertEqual(reply["version"], "-")

        v6 = proxy_v2(("2001:db8::1", 40000), ("2001:db8::2", 8443))
        reply = tcp_who(backend.host, backend.port, proxy_header=v6)
        self.assertEqual(reply["proxy_src"], "[2001:db8::1]:40000")
        self.assertEqual(reply["proxy_dst"], "[2001:db8::2]:8443")
        self.assertEqual(reply["authority"], "-")

        local = tcp_who(backend.host, backend.port, proxy_header=proxy_v2(local=True))
        self.assertEqual((local["proxy_src"], local["proxy_dst"]), ("-", "-"))

    def assert_refused(self, backend, data, reason):
        with tcp_connect(backend.host, backend.port, timeout=10) as s:
            result = exchange(s, data, half_close=True, timeout=10)
        self.assertEqual(result.nbytes, 0, "answered %r" % result.data)
        backend.proc.wait_for_stderr(reason)

    def test_missing_or_bad_v2_header_is_refused(self):
        backend = self.start_backend("p2", mode="tcp", proxy="v2")
        self.assert_refused(backend, b"WHO\n", "result=proxy_bad_signature")
        self.assert_refused(backend, proxy_v1(("192.0.2.1", 1), ("192.0.2.2", 2)) + b"WHO\n",
                            "result=proxy_version_not_accepted")
        good = proxy_v2(("192.0.2.1", 1000), ("192.0.2.2", 443), authority="x")
        # The authority TLV claims 200 bytes past the header's end.
        overrun = bytearray(good)
        overrun[-3:-1] = (200).to_bytes(2, "big")
        self.assert_refused(backend, bytes(overrun) + b"WHO\n", "result=proxy_v2_tlv_value_overrun")
        # The header ends before the client closes: truncated.
        self.assert_refused(backend, good[:20], "result=proxy: eof after 20 bytes")
        # The backend still serves a good client afterwards.
        self.assertEqual(tcp_who(backend.host, backend.port, proxy_header=good)["proxy_src"], "192.0.2.1:1000")

    def test_any_accepts_v1_and_v2(self):
        backend = self.start_backend("pa", mode="tcp", proxy="any")
        v1 = tcp_who(backend.host, backend.port, proxy_header=proxy_v1(("203.0.113.5", 1234), ("203.0.113.6", 80)))
        self.assertEqual(v1["proxy_src"], "203.0.113.5:1234")
        self.assertEqual(v1["proxy_dst"], "203.0.113.6:80")
        v2 = tcp_who(backend.host, backend.port, proxy_header=proxy_v2(("203.0.113.7", 1), ("203.0.113.8", 2)))
        self.assertEqual(v2["proxy_src"], "203.0.113.7:1")

    def test_v2_before_tls(self):
        backend = self.start_backend("pt", mode="tls", cert=PKI.nodes["b1"], tag=TAG, proxy="v2")
        header = proxy_v2(("192.0.2.44", 5555), ("192.0.2.45", 443), authority="front.example")
        reply, session = tls_who(backend.host, backend.port, sni="b1.test", proxy_header=header)
        self.assertEqual(reply["proxy_src"], "192.0.2.44:5555")
        self.assertEqual(reply["authority"], "b1.test")  # TLS mode: the SNI it received
        self.assertEqual(reply["proxy_authority"], "front.example")
        again, _ = tls_who(backend.host, backend.port, sni="b1.test", proxy_header=header, session=session)
        self.assertEqual(again["resumed"], "1")


class BulkDataTest(EdgepinTestCase):
    def connect(self, backend):
        if backend.name.startswith("tls"):
            return tls_connect(backend.host, backend.port, timeout=60)
        return tcp_connect(backend.host, backend.port, timeout=60)

    def backends(self):
        return [self.start_backend("tcp", mode="tcp"),
                self.start_backend("tls", mode="tls", cert=PKI.nodes["b1"], tag=TAG)]

    def test_sink_20mb(self):
        expected, n = sha256_of_chunks(pseudo_random_chunks(TWENTY_MB, b"sink"))
        for backend in self.backends():
            with self.subTest(backend=backend.name), self.connect(backend) as s:
                payload = [b"SINK\n"]
                payload.extend(pseudo_random_chunks(TWENTY_MB, b"sink"))
                result = exchange(s, payload, half_close=True, timeout=60)
                self.assertEqual(result.data.decode(), "sha256=%s bytes=%d\n" % (expected, n))

    def test_source_20mb(self):
        expected = source_sha256(TWENTY_MB, "seed-1")
        for backend in self.backends():
            with self.subTest(backend=backend.name), self.connect(backend) as s:
                result = exchange(s, b"SOURCE %d seed-1\n" % TWENTY_MB, half_close=True,
                                  timeout=60, keep_data=False)
                self.assertEqual(result.nbytes, TWENTY_MB)
                self.assertEqual(result.sha256, expected)
        # A different seed gives different bytes.
        self.assertNotEqual(source_sha256(1000, "seed-2"), source_sha256(1000, "seed-1"))

    def test_echo_20mb_full_duplex(self):
        expected, n = sha256_of_chunks(pseudo_random_chunks(TWENTY_MB, b"echo"))
        for backend in self.backends():
            with self.subTest(backend=backend.name), self.connect(backend) as s:
                payload = [b"ECHO\n"]
                payload.extend(pseudo_random_chunks(TWENTY_MB, b"echo"))
                result = exchange(s, payload, half_close=True, timeout=60, keep_data=False)
                self.assertEqual((result.sha256, result.nbytes), (expected, n))

    def test_bad_commands(self):
        backend = self.start_backend("tcp", mode="tcp")
        for line in (b"HELLO\n", b"SOURCE x y\n", b"SOURCE 10 bad/seed\n", b"SINK extra\n"):
            with self.subTest(line=line), tcp_connect(backend.host, backend.port) as s:
                result = exchange(s, line, half_close=False, timeout=10)
                self.assertTrue(result.data.startswith(b"error "), result.data)
        with tcp_connect(backend.host, backend.port) as s:
            result = exchange(s, b"X" * 5000, half_close=False, timeout=10)
            self.assertEqual(result.nbytes, 0)
        backend.proc.wait_for_stderr("result=command line too long")


class LifecycleTest(EdgepinTestCase):
    def test_sigterm_with_an_open_connection_exits_cleanly(self):
        backend = self.start_backend("life", mode="tls", cert=PKI.nodes["b1"], tag=TAG)
        with tls_connect(backend.host, backend.port) as idle:
            started = time.monotonic()
            rc = backend.proc.stop(timeout=10)
            self.assertEqual(rc, 0, backend.proc.describe())
            self.assertLess(time.monotonic() - started, 5)
            self.assertIn("result=stopped", backend.proc.stderr_text())
            idle.settimeout(5)
            try:
                self.assertEqual(idle.recv(100), b"")
            except (ConnectionResetError, OSError):
                pass

    def test_bad_options_exit_2(self):
        from edgepin_testlib import binary
        import subprocess
        for argv in (["--listen", "nonsense"], ["--listen", "127.0.0.1:0", "--mode", "tls"],
                     ["--listen", "127.0.0.1:0", "--tag", "0", "--mode", "tls"]):
            with self.subTest(argv=argv):
                r = subprocess.run([binary("EDGEPIN_TEST_BACKEND")] + argv, capture_output=True, timeout=30)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn(b"edgepin-test-backend:", r.stderr)

    def test_idle_timeout_closes(self):
        backend = self.start_backend("idle", mode="tcp", idle_timeout_ms=300)
        with socket.create_connection((backend.host, backend.port), timeout=10) as s:
            self.assertEqual(s.recv(10), b"")
        backend.proc.wait_for_stderr("result=idle_timeout")


if __name__ == "__main__":
    unittest.main()
