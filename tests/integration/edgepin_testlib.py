"""Shared helpers for Edgepin's integration tests (stdlib only).

Run the tests with /usr/bin/python3; ctest sets the paths of the built
binaries in the environment:
    EDGEPIN_LB, EDGEPIN_NODE_PROXY, EDGEPIN_TEST_BACKEND, EDGEPIN_TEST_PKI

What is here:
- processes: Proc (a child with stdout/stderr in files, stopped by PID with
  SIGTERM then SIGKILL), EdgepinTestCase (a unittest base class that gives
  each test a temporary directory and stops every process it started, even
  when the test fails);
- ports: free_port(), wait_for_port();
- PKI: make_pki(), issue_cert() with edgepin-test-pki (the unit tests' TestPki);
- configs: read_json(), write_json(), place_node(), ConfTemplate (the repository's conf/
  with its PKI by deploy/make-pki.sh, made once per module, copied per test);
- the HTTP test backend (tests/helpers/http_backend.py): start_http_backend(),
  start_echo_upstream();
- the admin socket: AdminClient, admin_command(), admin_accepts(),
  info_fields();
- the test backend: start_backend(), tls_who(), tcp_who();
- clients: tcp_connect(), tls_connect(), exchange() (full duplex, half-close,
  streaming hash), RecordingRelay (records what clients send);
- wire formats mirrored from common/: PROXY v1/v2 headers, the node tag
  layout of common/wire/node_tag.h (decode_session_id, decode_key_name,
  decode_ticket), a ClientHello reader, and the SOURCE byte generator of
  tests/helpers/backend_server.cpp.

Every wait has a timeout; nothing here retries forever.
"""

import atexit
import collections
import hashlib
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

DEFAULT_TIMEOUT = 30.0
LOOPBACK = "127.0.0.1"


# ----------------------------------------------------------------- binaries

def binary(env_name):
    """The path of a built binary, from the environment variable ctest sets
    (EDGEPIN_LB, EDGEPIN_NODE_PROXY, EDGEPIN_TEST_BACKEND). Raises
    RuntimeError if it is unset or not executable."""
    path = os.environ.get(env_name)
    if not path:
        raise RuntimeError("%s is not set: run this test through ctest, or export "
                           "%s=/path/to/the/binary" % (env_name, env_name))
    if not os.access(path, os.X_OK):
        raise RuntimeError("%s=%s is not an executable file" % (env_name, path))
    return path


# -------------------------------------------------------------------- ports

def free_port(host=LOOPBACK):
    """A TCP port that was free a moment ago (bind to port 0, then release).
    Another process may take it before you bind it: prefer servers that bind
    port 0 themselves and report their port (start_backend does)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host, port, timeout=10.0, proc=None):
    """Waits until a TCP connect to host:port succeeds. Raises TimeoutError
    after `timeout` seconds, or RuntimeError at once if `proc` (a Proc) has
    exited meanwhile."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.running():
            raise RuntimeError("%s exited while waiting for %s:%d\n%s"
                               % (proc.name, host, port, proc.describe()))
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError as e:
            last_error = e
            time.sleep(0.05)
    raise TimeoutError("nothing listens on %s:%d after %.1fs (%s)" % (host, port, timeout, last_error))


# ---------------------------------------------------------------- processes

_live_procs = set()
_live_lock = threading.Lock()


def _stop_leftovers():
    # Last resort at interpreter exit: no child may outlive the test run.
    with _live_lock:
        procs = list(_live_procs)
    for p in procs:
        p.stop(timeout=2.0)


atexit.register(_stop_leftovers)


class Proc:
    """A child process whose stdout and stderr go to files in `workdir`
    (never a pipe that could fill up and block it). Stop it with stop(), or
    use it as a context manager; it is stopped by its PID only."""

    def __init__(self, argv, name, workdir, env=None):
        self.argv = [str(a) for a in argv]
        self.name = name
        self.stdout_path = os.path.join(workdir, name + ".stdout")
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=err, env=full_env, close_fds=True)
        with _live_lock:
            _live_procs.add(self)

    @property
    def pid(self):
        return self.popen.pid

    @property
    def returncode(self):
        return self.popen.returncode

    def running(self):
        return self.popen.poll() is None

    def stdout_text(self):
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stderr_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def describe(self, tail_lines=40):
        """One block for a failure message: command, status, stderr tail."""
        status = "running" if self.running() else "exit %s" % self.popen.returncode
        tail = "\n".join(self.stderr_text().splitlines()[-tail_lines:])
        return "%s (pid %d, %s): %s\n--- stderr tail ---\n%s" % (
            self.name, self.pid, status, " ".join(self.argv), tail)

    def wait_for_stdout_line(self, prefix, timeout=10.0):
        """Returns the first stdout line starting with `prefix`. Raises
        RuntimeError if the process exits first, TimeoutError after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.stdout_text().splitlines(keepends=True):
                if line.startswith(prefix) and line.endswith("\n"):
                    return line.rstrip("\n")
            if not self.running():
                raise RuntimeError("%s exited before printing %r\n%s" % (self.name, prefix, self.describe()))
            time.sleep(0.02)
        raise TimeoutError("%s printed no %r line in %.1fs\n%s" % (self.name, prefix, timeout, self.describe()))

    def wait_for_stderr(self, text, timeout=10.0):
        """Waits until `text` appears in stderr; returns the whole stderr.
        Raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            err = self.stderr_text()
            if text in err:
                return err
            time.sleep(0.02)
        raise TimeoutError("%r not in %s's stderr after %.1fs\n%s" % (text, self.name, timeout, self.describe()))

    def signal(self, sig):
        """Sends `sig` to the child's PID; False if it has already exited."""
        if not self.running():
            return False
        os.kill(self.pid, sig)
        return True

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL if it has not exited after `timeout`
        seconds. Returns the exit status (negative: killed by that signal)."""
        if self.running():
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.popen.wait()
        with _live_lock:
            _live_procs.discard(self)
        return self.popen.returncode

    def kill(self):
        """SIGKILL by PID and reap."""
        if self.running():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()
        with _live_lock:
            _live_procs.discard(self)
        return self.popen.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


class EdgepinTestCase(unittest.TestCase):
    """A TestCase with a fresh temporary directory (self.tmp) and a list of
    processes that are stopped after the test whatever happens. A process
    started with expect_clean_exit=True that does not exit 0 on SIGTERM
    fails the test (this is where an ASan/LSan report shows up)."""

    def setUp(self):
        super().setUp()
        self._tmpdir = tempfile.TemporaryDirectory(prefix="edgepin-it-")
        self.tmp = self._tmpdir.name
        self._procs = []
        self.addCleanup(self._tmpdir.cleanup)
        # Cleanups run last-in first-out: processes stop before the
        # directory holding their files goes away.
        self.addCleanup(self._stop_procs)

    def spawn(self, argv, name, env=None, expect_clean_exit=True):
        proc = Proc(argv, name, self.tmp, env=env)
        self._procs.append((proc, expect_clean_exit))
        return proc

    def start_backend(self, name, **kwargs):
        """start_backend() in this test's directory, stopped after the test."""
        backend = start_backend(self.tmp, name, **kwargs)
        self._procs.append((backend.proc, True))
        return backend

    def _stop_procs(self):
        failures = []
        for proc, expect_clean in reversed(self._procs):
            rc = proc.stop()
            if expect_clean and rc != 0:
                failures.append(proc.describe())
        self._procs = []
        if failures:
            self.fail("process(es) did not exit cleanly on SIGTERM:\n" + "\n\n".join(failures))

    def dump_procs(self):
        """Every process's description, for a failure message."""
        return "\n\n".join(p.describe() for p, _ in self._procs)


# ---------------------------------------------------------------------- PKI

Pki = collections.namedtuple("Pki", "dir ca_cert ca_key nodes")
NodeCert = collections.namedtuple("NodeCert", "name cert key chain")


def _test_pki(args):
    """Runs edgepin-test-pki (EDGEPIN_TEST_PKI: tests/helpers/test_pki.h on
    the command line, the one test PKI generator). Raises RuntimeError with
    its message on failure."""
    result = subprocess.run([binary("EDGEPIN_TEST_PKI")] + [str(a) for a in args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, timeout=60)
    if result.returncode != 0:
        raise RuntimeError("edgepin-test-pki %s failed (%d): %s" % (
            " ".join(str(a) for a in args), result.returncode,
            result.stderr.decode("utf-8", "replace")))


def _check_key_type(key_type):
    if key_type not in ("ec", "rsa"):
        raise ValueError("key_type must be 'ec' or 'rsa'")


def issue_cert(directory, name, ca_cert, ca_key, cn=None, dns_names=(), ip_addresses=(),
               client_auth=False, server_auth=True, serial=None, days=30, key_type="ec"):
    """Issues one leaf signed by an existing CA (ca_cert, ca_key: PEM files,
    for example the cluster CA deploy/make-pki.sh made): CN=cn (default
    name), subjectAltName from dns_names and ip_addresses, extendedKeyUsage
    serverAuth and/or clientAuth. Writes NAME.pem, NAME.key (0600) and
    NAME-chain.pem into `directory`. `serial`: an int or a "0x..." string.
    Returns a NodeCert. Raises RuntimeError on failure."""
    _check_key_type(key_type)
    args = ["issue", directory, name, "--ca-cert", ca_cert, "--ca-key", ca_key,
            "--cn", cn or name, "--key-type", key_type, "--days", days]
    args += [a for d in dns_names for a in ("--dns", d)]
    args += [a for ip in ip_addresses for a in ("--ip", ip)]
    if client_auth:
        args.append("--client-auth")
    if not server_auth:
        args.append("--no-server-auth")
    if serial is not None:
        args += ["--serial", serial]
    _test_pki(args)
    return NodeCert(name, os.path.join(directory, name + ".pem"),
                    os.path.join(directory, name + ".key"),
                    os.path.join(directory, name + "-chain.pem"))


def make_pki(directory, names=("node1", "node2", "node3"), dns_names=("localhost",),
             ip_addresses=("127.0.0.1",), key_type="ec", days=30):
    """Makes a CA and, for each name, a certificate signed by it, with
    edgepin-test-pki. Each certificate has CN=name and subjectAltName
    DNS:name, the dns_names and the ip_addresses, and both serverAuth and
    clientAuth usages (so it also serves a peer link). Writes ca.pem, ca.key,
    NAME.pem, NAME.key (mode 0600) and NAME-chain.pem (leaf then CA) into
    `directory`. Returns a Pki. Raises RuntimeError on failure."""
    _check_key_type(key_type)
    _test_pki(["new-ca", directory, "--key-type", key_type])
    ca_cert = os.path.join(directory, "ca.pem")
    ca_key = os.path.join(directory, "ca.key")
    nodes = {}
    for serial, name in enumerate(names, start=2):
        nodes[name] = issue_cert(directory, name, ca_cert, ca_key,
                                 dns_names=[name] + [d for d in dns_names if d != name],
                                 ip_addresses=ip_addresses, client_auth=True, serial=serial,
                                 days=days, key_type=key_type)
    return Pki(directory, ca_cert, ca_key, nodes)


# ------------------------------------------------------------------ configs

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def read_json(path):
    with open(path) as f:
        return json.load(f)


def write_json(path, doc):
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")


def conf_with_pki(conf):
    """Copies the repository's conf/ to the new directory `conf` and makes
    its PKI there with deploy/make-pki.sh. Returns conf."""
    shutil.copytree(os.path.join(REPO, "conf"), conf)
    subprocess.run(["bash", os.path.join(REPO, "deploy", "make-pki.sh"), conf], check=True,
                   stdout=subprocess.DEVNULL, timeout=120)
    return conf


def place_node(conf, name, address, tls_port, http_port, upstream_port):
    """Sets node `name`'s ports in conf/cluster.json (its peer port: a free
    one) and its upstream to address:upstream_port. Raises ValueError if
    the node is not there or not at `address` (the tests bind there)."""
    path = os.path.join(conf, "cluster.json")
    cluster = read_json(path)
    for n in cluster["nodes"]:
        if n["name"] == name:
            if n["address"] != address:
                raise ValueError("%s: node %s is at %s, not %s" % (path, name, n["address"], address))
            n["tls_port"] = tls_port
            n["http_port"] = http_port
            n["peer_port"] = free_port(address)
            n["upstream"] = "%s:%d" % (address, upstream_port)
            write_json(path, cluster)
            return
    raise ValueError("%s: no node %s" % (path, name))


class ConfTemplate:
    """conf/ with its PKI, made once per test module (make-pki.sh takes
    seconds) in a temporary directory and copied into each test's own
    directory. A module declares one and hands make/cleanup to unittest:
        TEMPLATE = lib.ConfTemplate("edgepin-x-conf-")
        setUpModule, tearDownModule = TEMPLATE.make, TEMPLATE.cleanup
    """

    def __init__(self, prefix):
        self.prefix = prefix
        self._tmp = None

    def make(self):
        self._tmp = tempfile.TemporaryDirectory(prefix=self.prefix)
        conf_with_pki(os.path.join(self._tmp.name, "conf"))

    @property
    def dir(self):
        """The template's own directory (conf/ is in it); make() first."""
        if self._tmp is None:
            raise RuntimeError("ConfTemplate.make() has not run")
        return self._tmp.name

    def copy_to(self, dest):
        """A fresh copy of the template's conf/ at `dest` (which must not
        exist). Returns dest."""
        shutil.copytree(os.path.join(self.dir, "conf"), dest)
        return dest

    def cleanup(self):
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


# ---------------------------------------------------------------- upstreams

# The one HTTP/1.1 test backend is tests/helpers/http_backend.py (see its
# docstring: it answers with what it received, as JSON or "path=<path>\n",
# makes JSESSIONIDs, optionally with a jvmRoute, and can serve a health path).
_HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers")
HTTP_BACKEND = os.path.join(_HELPERS, "http_backend.py")
sys.path.insert(0, _HELPERS)
from http_backend import HttpBackend  # noqa: E402,F401  (in-process use: t.HttpBackend)


def start_http_backend(test, host, port, name="backend", fmt="json", jvm_route=False,
                       timeout=10.0, label=None):
    """Starts tests/helpers/http_backend.py on host:port (0: any) through
    test.spawn (an EdgepinTestCase stops it) and waits until it listens.
    Returns the Proc; its port is in proc.port."""
    argv = ["/usr/bin/python3", HTTP_BACKEND, "--name", name, "--host", host, "--port", str(port),
            "--format", fmt]
    if jvm_route:
        argv.append("--jvm-route")
    proc = test.spawn(argv, label or "backend-" + name)
    line = proc.wait_for_stdout_line("listening", timeout=timeout)
    proc.port = int(line.split()[1])
    return proc


def start_echo_upstream(test, host, port, fmt="text", timeout=10.0):
    """The test backend as a node-proxy's upstream on host:port, answering
    "path=<path>\n" (fmt "text") or JSON (fmt "json")."""
    return start_http_backend(test, host, port, name="upstream", fmt=fmt, timeout=timeout,
                              label="upstream")


# ------------------------------------------------------------ admin socket

class AdminClient:
    """One connection to an admin socket (edgepin-lb or edgepin-node-proxy):
    a command line out, an answer back. An answer is its lines, each ending
    in a newline, without the empty line that ends it ("" for an empty
    answer)."""

    def __init__(self, path, timeout=10.0):
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def read_answer(self):
        deadline = time.monotonic() + self.timeout
        while True:
            if self.buf.startswith(b"\n"):  # an empty answer
                self.buf = self.buf[1:]
                return ""
            end = self.buf.find(b"\n\n")
            if end >= 0:
                answer, self.buf = self.buf[:end + 1], self.buf[end + 2:]
                return answer.decode()
            if time.monotonic() > deadline:
                raise AssertionError("no complete answer within %.1f s: %r" % (self.timeout, self.buf))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("admin socket closed; unread: %r" % self.buf)
            self.buf += chunk

    def command(self, line):
        self.send(line.encode() + b"\n")
        return self.read_answer()

    def closed_by_server(self):
        """True once the server has closed. A Unix socket closed with unread
        input (what the server refused to read) reports ECONNRESET after the
        data it sent: that is a close too."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def admin_command(path, line, timeout=10.0):
    """One command on a fresh admin socket connection; its answer as
    AdminClient.command returns it."""
    with AdminClient(path, timeout) as c:
        return c.command(line)


def admin_accepts(path):
    """True once a Unix stream connect to `path` succeeds."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(2)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def info_fields(text):
    """{field: value} of a "Field: value" per line answer (show info)."""
    return dict(line.split(": ", 1) for line in text.splitlines())


# ------------------------------------------------------------- test backend

Backend = collections.namedtuple("Backend", "name host port proc")


def start_backend(workdir, name, mode="tls", host=LOOPBACK, port=0, cert=None, key=None,
                  tag=None, proxy="none", tls_max=None, no_tickets=False, no_cache=False,
                  idle_timeout_ms=None, extra_args=(), env=None, timeout=15.0):
    """Starts edgepin-test-backend (EDGEPIN_TEST_BACKEND) listening on
    host:port (port 0: any; the port it bound is read from its stdout).
    `cert`/`key` are files, or a NodeCert as `cert`. Returns a Backend
    once it listens. Raises RuntimeError if it exits, TimeoutError if it
    does not report its port in time. The caller stops backend.proc."""
    argv = [binary("EDGEPIN_TEST_BACKEND"), "--listen", _host_port(host, port),
            "--name", name, "--mode", mode, "--proxy", proxy]
    if isinstance(cert, NodeCert):
        cert, key = cert.chain, cert.key
    if mode == "tls":
        if not cert or not key:
            raise ValueError("a tls backend needs cert and key")
        argv += ["--cert", cert, "--key", key]
    if tag is not None:
        argv += ["--tag", str(tag)]
    if tls_max is not None:
        argv += ["--tls-max", str(tls_max)]
    if no_tickets:
        argv.append("--no-tickets")
    if no_cache:
        argv.append("--no-cache")
    if idle_timeout_ms is not None:
        argv += ["--idle-timeout-ms", str(idle_timeout_ms)]
    argv += list(extra_args)
    proc = Proc(argv, "backend-" + name, workdir, env=env)
    try:
        line = proc.wait_for_stdout_line("listening ", timeout=timeout)
        bound = int(line.split()[1])
    except BaseException:
        proc.stop()
        raise
    return Backend(name, host, bound, proc)


def _host_port(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def parse_who(line):
    """'name=b1 resumed=1 ...' -> {'name': 'b1', 'resumed': '1', ...}.
    Raises ValueError for anything else."""
    text = line.decode("utf-8") if isinstance(line, (bytes, bytearray)) else line
    text = text.rstrip("\r\n")
    if not text or "\n" in text:
        raise ValueError("not one WHO line: %r" % text)
    fields = {}
    for word in text.split(" "):
        k, sep, v = word.partition("=")
        if not sep or not k:
            raise ValueError("bad WHO field %r in %r" % (word, text))
        fields[k] = v
    if "name" not in fields:
        raise ValueError("WHO reply without a name: %r" % text)
    return fields


class WhoReply(dict):
    """The WHO fields, plus what the client saw: client_version ('TLSv1.3')
    and client_resumed (bool) for TLS connections."""
    client_version = None
    client_resumed = None


def tcp_who(host, port, proxy_header=None, timeout=DEFAULT_TIMEOUT):
    """Sends WHO over plain TCP (after `proxy_header`, if given). Returns a
    WhoReply. Raises ConnectionError if the server closed without a reply."""
    with tcp_connect(host, port, timeout=timeout) as s:
        if proxy_header:
            s.sendall(proxy_header)
        result = exchange(s, b"WHO\n", half_close=False, timeout=timeout)
    if not result.data:
        raise ConnectionError("no WHO reply from %s:%d (reset=%s)" % (host, port, result.reset))
    return WhoReply(parse_who(result.data))


def tls_who(host, port, session=None, tls_max=None, no_ticket=False, sni=None,
            proxy_header=None, cafile=None, timeout=DEFAULT_TIMEOUT):
    """Connects with TLS (resuming `session` if given), sends WHO and reads
    the reply until the server closes. Returns (WhoReply, ssl.SSLSession):
    pass the session back to resume. Sessions are tied to the client
    context, which is cached per (tls_max, no_ticket, cafile), so resume
    with the same settings. Raises ConnectionError if there is no reply,
    ssl.SSLError if the handshake fails."""
    with tls_connect(host, port, session=session, tls_max=tls_max, no_ticket=no_ticket, sni=sni,
                     proxy_header=proxy_header, cafile=cafile, timeout=timeout) as s:
        result = exchange(s, b"WHO\n", half_close=False, timeout=timeout)
        # A TLS 1.3 ticket arrives after the handshake; the reply comes after
        # it, so by now the session holds the ticket.
        new_session = s.session
        version = s.version()
        resumed = s.session_reused
    if not result.data:
        raise ConnectionError("no WHO reply from %s:%d (reset=%s)" % (host, port, result.reset))
    reply = WhoReply(parse_who(result.data))
    reply.client_version = version
    reply.client_resumed = resumed
    return reply, new_session


# ------------------------------------------------------------------ clients

_client_contexts = {}
_client_contexts_lock = threading.Lock()
_TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client_context(tls_max=None, no_ticket=False, cafile=None, tls_min=None):
    """A cached client SSLContext. tls_max/tls_min: '1.2', '1.3' or None.
    no_ticket: ssl.OP_NO_TICKET (a TLS 1.2 client then resumes by session
    ID). cafile: verify the server's chain against it (never its name);
    without it the certificate is not checked."""
    key = (str(tls_max) if tls_max else None, bool(no_ticket), cafile, str(tls_min) if tls_min else None)
    with _client_contexts_lock:
        ctx = _client_contexts.get(key)
        if ctx is None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            if cafile:
                ctx.load_verify_locations(cafile)
                ctx.verify_mode = ssl.CERT_REQUIRED
            else:
                ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = _TLS_VERSIONS[key[3]] if key[3] else ssl.TLSVersion.TLSv1_2
            if key[0]:
                ctx.maximum_version = _TLS_VERSIONS[key[0]]
            if no_ticket:
                ctx.options |= ssl.OP_NO_TICKET
            _client_contexts[key] = ctx
        return ctx


def tcp_connect(host, port, timeout=DEFAULT_TIMEOUT, source=None):
    """A connected TCP socket (`source`: (ip, port) to bind first)."""
    return socket.create_connection((host, port), timeout=timeout, source_address=source)


def tls_connect(host, port, session=None, tls_max=None, no_ticket=False, sni=None,
                proxy_header=None, cafile=None, timeout=DEFAULT_TIMEOUT, source=None):
    """A TLS client socket after its handshake. `proxy_header` bytes are sent
    in clear before the ClientHello; `sni` None sends no server_name."""
    raw = tcp_connect(host, port, timeout=timeout, source=source)
    try:
        if proxy_header:
            raw.sendall(proxy_header)
        ctx = client_context(tls_max=tls_max, no_ticket=no_ticket, cafile=cafile)
        return ctx.wrap_socket(raw, server_hostname=sni, session=session)
    except BaseException:
        raw.close()
        raise


def shutdown_write(sock):
    """Half-closes `sock` (TCP FIN). For an ssl.SSLSocket this calls the
    plain socket's shutdown: SSLSocket.shutdown() would discard the TLS
    state, and Python cannot send close_notify and keep reading. The
    backend treats a bare FIN as the end of the client's data."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)
    except OSError:
        pass


ExchangeResult = collections.namedtuple("ExchangeResult", "data nbytes sha256 reset")

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _chunked(payload, size=64 * 1024):
    if payload is None:
        return
    if isinstance(payload, (bytes, bytearray, memoryview)):
        view = memoryview(payload)
        for i in range(0, len(view), size):
            yield view[i:i + size]
        return
    for chunk in payload:
        if chunk:
            yield memoryview(chunk)


def exchange(sock, payload=b"", half_close=True, timeout=DEFAULT_TIMEOUT, keep_data=True,
             max_bytes=1 << 40):
    """Sends `payload` (bytes, or an iterable of byte chunks) while reading
    whatever the peer sends, until the peer closes. With half_close the
    write side is shut once the payload is sent (see shutdown_write).
    Works for plain and TLS sockets; never blocks on one direction while the
    other one is stuck, so a large ECHO does not deadlock. `timeout` bounds
    each wait without progress. Returns ExchangeResult(data or None when
    not keep_data, nbytes, sha256 hex of what was received, reset: the peer
    reset the connection). Raises TimeoutError, or ValueError past
    max_bytes."""
    chunks = _chunked(payload)
    pending = next(chunks, None)
    write_done = pending is None
    if write_done and half_close:
        shutdown_write(sock)
    digest = hashlib.sha256()
    parts = []
    nbytes = 0
    reset = False
    sock.setblocking(False)
    try:
        while True:
            progress = False
            if not write_done:
                try:
                    sent = sock.send(pending)
                except _WOULD_BLOCK:
                    sent = 0
                except (BrokenPipeError, ConnectionResetError):
                    reset = True
                    write_done = True
                    sent = 0
                if sent:
                    progress = True
                    pending = pending[sent:]
                    if not len(pending):
                        pending = next(chunks, None)
                        if pending is None:
                            write_done = True
                            if half_close:
                                shutdown_write(sock)
            try:
                data = sock.recv(256 * 1024)
            except _WOULD_BLOCK:
                data = None
            except ConnectionResetError:
                reset = True
                break
            if data == b"":
                break
            if data:
                progress = True
                nbytes += len(data)
                if nbytes > max_bytes:
                    raise ValueError("peer sent more than %d bytes" % max_bytes)
                digest.update(data)
                if keep_data:
                    parts.append(data)
            if not progress:
                wlist = [sock] if not write_done else []
                r, w, _ = select.select([sock], wlist, [], timeout)
                if not r and not w:
                    raise TimeoutError("no progress for %.1fs (received %d bytes)" % (timeout, nbytes))
    finally:
        try:
            sock.setblocking(True)
            sock.settimeout(timeout)
        except OSError:
            pass
    return ExchangeResult(b"".join(parts) if keep_data else None, nbytes, digest.hexdigest(), reset)


class RecordingRelay:
    """A TCP relay on 127.0.0.1:0 to target_host:target_port that records
    the first `record_limit` bytes each client sends (enough for a
    ClientHello), in accept order. The lb sees exactly these bytes; tests
    read the resumption data a client really sends with it. Use as a
    context manager or call close()."""

    def __init__(self, target_host, target_port, record_limit=64 * 1024, timeout=DEFAULT_TIMEOUT):
        self.target = (target_host, target_port)
        self.record_limit = record_limit
        self.timeout = timeout
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.host = LOOPBACK
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._records = []
        self._threads = []
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                index = len(self._records)
                self._records.append(bytearray())
            t = threading.Thread(target=self._relay, args=(client, index), daemon=True)
            with self._lock:
                self._threads.append(t)
            t.start()

    def _relay(self, client, index):
        client.settimeout(self.timeout)
        try:
            server = socket.create_connection(self.target, timeout=self.timeout)
        except OSError:
            client.close()
            return
        open_dirs = {client: server, server: client}
        last = time.monotonic()
        try:
            while open_dirs and not self._stop.is_set():
                r, _, _ = select.select(list(open_dirs), [], [], 0.1)
                if not r:
                    if time.monotonic() - last > self.timeout:
                        return
                    continue
                last = time.monotonic()
                for src in r:
                    dst = open_dirs.get(src)
                    if dst is None:
                        continue
                    try:
                        data = src.recv(64 * 1024)
                    except OSError:
                        data = b""
                    if not data:
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        del open_dirs[src]
                        continue
                    if src is client:
                        with self._lock:
                            rec = self._records[index]
                            room = self.record_limit - len(rec)
                            if room > 0:
                                rec.extend(data[:room])
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            client.close()
            server.close()

    def client_bytes(self, index, timeout=10.0, min_bytes=1):
        """The bytes client number `index` (0-based) sent, once at least
        `min_bytes` arrived. Raises TimeoutError."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if index < len(self._records) and len(self._records[index]) >= min_bytes:
                    return bytes(self._records[index])
            time.sleep(0.01)
        raise TimeoutError("relay: no bytes from client %d" % index)

    def connections(self):
        with self._lock:
            return len(self._records)

    def close(self):
        self._stop.set()
        self._accept_thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# -------------------------------------------------------------- PROXY header

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02


def proxy_v1(src, dst):
    """'PROXY TCP4|TCP6 src dst sport dport\\r\\n' for (ip, port) pairs."""
    family = "TCP6" if ipaddress.ip_address(src[0]).version == 6 else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (family, src[0], dst[0], src[1], dst[1])).encode("ascii")


def proxy_v2(src=None, dst=None, authority=None, tlvs=(), local=False):
    """A PROXY v2 header: PROXY command with TCP over IPv4/IPv6 from `src` to
    `dst` ((ip, port) pairs), or LOCAL; optional authority (SNI) TLV and raw
    (type, bytes) TLVs."""
    tlv_bytes = b""
    all_tlvs = list(tlvs)
    if authority is not None:
        all_tlvs.insert(0, (PP2_TYPE_AUTHORITY, authority.encode("ascii")))
    for t, value in all_tlvs:
        tlv_bytes += struct.pack("!BH", t, len(value)) + value
    if local:
        ver_cmd, family, addresses = 0x20, 0x00, b""
    else:
        s_ip, d_ip = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
        if s_ip.version != d_ip.version:
            raise ValueError("source and destination families differ")
        ver_cmd = 0x21
        family = 0x11 if s_ip.version == 4 else 0x21
        addresses = s_ip.packed + d_ip.packed + struct.pack("!HH", src[1], dst[1])
    body = addresses + tlv_bytes
    return PROXY_V2_SIGNATURE + bytes([ver_cmd, family]) + struct.pack("!H", len(body)) + body


# ----------------------------------------------- node tags (common/wire/node_tag.h)

NodeTag = collections.namedtuple("NodeTag", "tag epoch")

NODETAG_MAGIC = 0xE9
NODETAG_VERSION = 1
NODETAG_KIND_SESSION_ID = 1
NODETAG_KIND_KEY_NAME = 2
SESSION_ID_SIZE = 32
KEY_NAME_SIZE = 16


def _crc_reflected(data, poly, width):
    mask = (1 << width) - 1
    crc = mask
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
    return crc ^ mask


def crc32c(data):
    """CRC-32C (Castagnoli), as common/wire/node_tag.cpp computes it."""
    return _crc_reflected(data, 0x82F63B78, 32)


def crc64xz(data):
    """CRC-64/XZ, as common/wire/node_tag.cpp computes it."""
    return _crc_reflected(data, 0xC96C5795D7870F42, 64)


def _nodetag_header(b, kind):
    if b[0] != NODETAG_MAGIC or b[1] != (NODETAG_VERSION << 4 | kind):
        return None
    tag = int.from_bytes(b[2:4], "big")
    if tag == 0:
        return None
    return NodeTag(tag, int.from_bytes(b[4:8], "big"))


def decode_session_id(session_id):
    """NodeTag(tag, epoch) if `session_id` is a 32-byte tagged session ID
    (magic, format 1/1, tag != 0, CRC-64/XZ of bytes 0..23 at 24..31), else
    None."""
    b = bytes(session_id or b"")
    if len(b) != SESSION_ID_SIZE:
        return None
    head = _nodetag_header(b, NODETAG_KIND_SESSION_ID)
    if head is None or int.from_bytes(b[24:32], "big") != crc64xz(b[:24]):
        return None
    return head


def decode_key_name(key_name):
    """NodeTag if `key_name` is a 16-byte tagged ticket key name (magic,
    format 1/2, tag != 0, CRC-32C of bytes 0..11 at 12..15), else None."""
    b = bytes(key_name or b"")
    if len(b) != KEY_NAME_SIZE:
        return None
    head = _nodetag_header(b, NODETAG_KIND_KEY_NAME)
    if head is None or int.from_bytes(b[12:16], "big") != crc32c(b[:12]):
        return None
    return head


def decode_ticket(ticket):
    """NodeTag from the key name that starts a TLS 1.2 ticket or TLS 1.3 PSK
    identity, else None."""
    b = bytes(ticket or b"")
    return decode_key_name(b[:KEY_NAME_SIZE]) if len(b) >= KEY_NAME_SIZE else None


# ------------------------------------------------------------- ClientHello

ClientHello = collections.namedtuple(
    "ClientHello", "legacy_version session_id sni ticket psk_identities supported_versions")

EXT_SERVER_NAME = 0
EXT_SESSION_TICKET = 35
EXT_PRE_SHARED_KEY = 41
EXT_SUPPORTED_VERSIONS = 43


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("truncated ClientHello")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return int.from_bytes(self.take(2), "big")

    def u24(self):
        return int.from_bytes(self.take(3), "big")

    def vec(self, len_bytes):
        return self.take(int.from_bytes(self.take(len_bytes), "big"))

    def done(self):
        return self.pos == len(self.data)


def parse_client_hello(stream):
    """Reads the ClientHello at the start of a client's byte stream (TLS
    records, possibly several). A test-side reader, independent of
    common/wire/tls_hello.cpp. Returns ClientHello(legacy_version, session_id,
    sni or None, ticket bytes or None (session_ticket extension; b'' when
    empty), psk_identities list, supported_versions list). Raises
    ValueError if the bytes are not a complete ClientHello."""
    handshake = bytearray()
    pos = 0
    while True:
        if len(handshake) >= 4:
            need = 4 + int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= need:
                break
        if pos + 5 > len(stream):
            raise ValueError("incomplete ClientHello")
        ctype, length = stream[pos], int.from_bytes(stream[pos + 3:pos + 5], "big")
        if ctype != 22:
            raise ValueError("record type %d before the ClientHello ended" % ctype)
        handshake += stream[pos + 5:pos + 5 + length]
        pos += 5 + length
    if handshake[0] != 1:
        raise ValueError("handshake type %d is not a ClientHello" % handshake[0])
    r = _Reader(bytes(handshake[4:need]))
    legacy_version = r.u16()
    r.take(32)
    session_id = r.vec(1)
    r.vec(2)  # cipher suites
    r.vec(1)  # compression methods
    sni, ticket, identities, versions = None, None, [], []
    if not r.done():
        exts = _Reader(r.vec(2))
        while not exts.done():
            ext_type = exts.u16()
            body = _Reader(exts.vec(2))
            if ext_type == EXT_SERVER_NAME:
                names = _Reader(body.vec(2))
                while not names.done():
                    name_type = names.u8()
                    name = names.vec(2)
                    if name_type == 0:
                        sni = name.decode("ascii")
            elif ext_type == EXT_SESSION_TICKET:
                ticket = body.take(len(body.data))
            elif ext_type == EXT_PRE_SHARED_KEY:
                ids = _Reader(body.vec(2))
                while not ids.done():
                    identities.append(ids.vec(2))
                    ids.take(4)  # obfuscated_ticket_age
            elif ext_type == EXT_SUPPORTED_VERSIONS:
                vs = _Reader(body.vec(1))
                while not vs.done():
                    versions.append(vs.u16())
    return ClientHello(legacy_version, session_id, sni, ticket, identities, versions)


# ------------------------------------------------------- SOURCE generator

SOURCE_BLOCK = 64 * 1024


def source_chunks(count, seed):
    """The bytes 'SOURCE count seed' makes the backend send, as chunks:
    block k is SHAKE128(b'edgepin-source:' + seed + b':' + str(k))
    truncated to 64 KiB, the stream cut at `count` bytes."""
    seed_b = seed.encode("ascii") if isinstance(seed, str) else bytes(seed)
    k, left = 0, count
    while left > 0:
        n = min(SOURCE_BLOCK, left)
        yield hashlib.shake_128(b"edgepin-source:" + seed_b + b":" + str(k).encode("ascii")).digest(SOURCE_BLOCK)[:n]
        left -= n
        k += 1


def source_sha256(count, seed):
    """sha256 hex of what 'SOURCE count seed' sends."""
    h = hashlib.sha256()
    for chunk in source_chunks(count, seed):
        h.update(chunk)
    return h.hexdigest()


def sha256_of_chunks(chunks):
    h = hashlib.sha256()
    n = 0
    for c in chunks:
        h.update(c)
        n += len(c)
    return h.hexdigest(), n
