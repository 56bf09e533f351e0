"""Real Tomcat 10 instances for Edgepin's end-to-end tests.

Standard library only; run with /usr/bin/python3 (Debian 12). Needs the
Debian packages tomcat10 and tomcat10-user.

    from tomcat import TomcatInstance, parse_kv

    with TomcatInstance(tmpdir, "tomcat1", "127.0.0.21") as t:   # create + start
        body = urlopen(t.url("/index.jsp")).read().decode()
        assert parse_kv(body)["node"] == "tomcat1"
    # stopped here, even when the block raised

An instance lives in BASE_DIR/NAME (its CATALINA_BASE), made by
deploy/tomcat/make-instance.sh with the demo application of deploy/tomcat/ROOT
(index.jsp, headers.jsp, upload.jsp, download.jsp, slow.jsp, health.jsp; see
deploy/tomcat/README.md). The node name is NAME.

Lifecycle guarantees (what a failing test may rely on):
  - start() runs `catalina.sh run` in the foreground as a child in its own
    session and process group, output to BASE_DIR/NAME/logs/console.log,
    and returns once GET /index.jsp answers 200. On failure or after
    start_timeout it stops what it started and raises TomcatError with the
    tail of the log.
  - stop() sends SIGTERM to the process group (Tomcat shuts down cleanly),
    SIGKILL after stop_timeout, reaps the JVM and (if it had served) waits
    until the port is free again.
  - Every started instance is stopped at interpreter exit (atexit). If this
    Python process dies without running atexit (SIGKILL, a ctest timeout),
    a watchdog in the instance's process group sees the pipe from this
    process close and kills the group: no JVM outlives its test.
  - The port is fixed when the object is made (a free one when not given)
    and kept across stop()/start(), so a test can restart "the same
    Tomcat".
"""

import atexit
import hashlib
import http.client
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKE_INSTANCE = REPO_ROOT / "deploy" / "tomcat" / "make-instance.sh"
CATALINA_HOME = Path("/usr/share/tomcat10")
CATALINA_SH = CATALINA_HOME / "bin" / "catalina.sh"

DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 20.0
# After SIGKILL the kernel tears the JVM down on its own; this only bounds
# the wait for a process stuck in uninterruptible sleep.
KILL_WAIT_SECONDS = 10.0
PORT_FREE_TIMEOUT = 10.0
POLL_INTERVAL = 0.05
PROBE_TIMEOUT = 2.0
LOG_TAIL_LINES = 60
# Attempts at a start when the port was chosen here and another process
# took it between the choice and Tomcat's bind.
BIND_RETRIES = 3
BIND_FAILURE_MARKERS = ("java.net.BindException", "Address already in use")

# The instance's JVM runs C1 only (-XX:TieredStopAtLevel=1, from
# make-instance.sh): it starts with far less CPU. A test that moves a lot of
# data through Tomcat (SHA-256 of a 1 GB upload) can pass these to get the
# optimising compiler back: about twice the upload throughput, about 2 s
# more CPU at startup.
BULK_JAVA_OPTS = ("-XX:TieredStopAtLevel=4",)

# download.jsp's generator, documented there and in deploy/tomcat/README.md.
PATTERN_BLOCK_BYTES = 65536
PATTERN_DIGEST_BYTES = 32
PATTERN_DEFAULT_SEED = "edgepin"


class TomcatError(RuntimeError):
    """A Tomcat instance could not be created, started or stopped."""


# ---------------------------------------------------------------- helpers

def _family(address):
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def free_port(address="127.0.0.1"):
    """Returns a TCP port that was free on `address` a moment ago (the
    kernel's choice for a bind to port 0)."""
    with socket.socket(_family(address), socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def port_is_free(address, port):
    """Returns True when a listener could bind address:port now. Connections
    left in TIME_WAIT do not count, as for Tomcat (SO_REUSEADDR)."""
    with socket.socket(_family(address), socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
        return True


def catalina_pids(catalina_base):
    """Returns the PIDs of live processes whose command line has
    -Dcatalina.base=CATALINA_BASE (the JVMs running that instance)."""
    wanted = b"-Dcatalina.base=" + os.fsencode(os.path.abspath(catalina_base))
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if wanted in args:
            pids.append(int(entry))
    return pids


def listening_addresses(pid):
    """Returns the set of (ip, port) on which process `pid` has listening TCP
    sockets, read from /proc (this network namespace)."""
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    listening = set()
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for row in rows:
            fields = row.split()
            # local_address is fields[1], st fields[3] (0A: LISTEN), inode fields[9]
            if fields[3] != "0A" or fields[9] not in inodes:
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            ip = b"".join(raw[i:i + 4][::-1] for i in range(0, width, 4))
            address = ipaddress.ip_address(ip)
            # Java listens on IPv6 sockets: 127.0.0.21 shows as ::ffff:127.0.0.21.
            if address.version == 6 and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            listening.add((str(address), int(port_hex, 16)))
    return listening


def parse_kv(text):
    """Returns the key=value lines of a demo page as a dict (split at the
    first '='; lines without '=' are ignored)."""
    result = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key] = value
    return result


def direct_opener(cookiejar=None):
    """Returns a urllib opener that never uses a proxy from the environment
    (http_proxy would otherwise capture requests to 127.0.0.x) and keeps
    cookies in `cookiejar` when given."""
    handlers = [urllib.request.ProxyHandler({})]
    if cookiejar is not None:
        handlers.append(urllib.request.HTTPCookieProcessor(cookiejar))
    return urllib.request.build_opener(*handlers)


def _seed_bytes(seed):
    return seed.encode("utf-8") if isinstance(seed, str) else bytes(seed)


def pattern_chunks(nbytes, seed=PATTERN_DEFAULT_SEED):
    """Yields the nbytes bytes download.jsp?bytes=N&seed=S sends, in blocks
    of at most 64 KiB. The XOR of two 64 KiB integers keeps this at about
    1 s per GB in pure Python."""
    s = _seed_bytes(seed)
    base = b"".join(
        hashlib.sha256(s + b"base" + j.to_bytes(8, "big")).digest()
        for j in range(PATTERN_BLOCK_BYTES // PATTERN_DIGEST_BYTES))
    base_int = int.from_bytes(base, "big")
    repeat = PATTERN_BLOCK_BYTES // PATTERN_DIGEST_BYTES
    left = nbytes
    i = 0
    while left > 0:
        mask = hashlib.sha256(s + b"block" + i.to_bytes(8, "big")).digest() * repeat
        block = (base_int ^ int.from_bytes(mask, "big")).to_bytes(PATTERN_BLOCK_BYTES, "big")
        n = min(left, PATTERN_BLOCK_BYTES)
        yield block[:n]
        left -= n
        i += 1


def pattern_sha256(nbytes, seed=PATTERN_DEFAULT_SEED):
    """Returns the hex SHA-256 of what download.jsp?bytes=N&seed=S sends."""
    h = hashlib.sha256()
    for chunk in pattern_chunks(nbytes, seed):
        h.update(chunk)
    return h.hexdigest()


def _jsp_cache_root():
    configured = os.environ.get("EDGEPIN_TOMCAT_JSP_CACHE")
    if configured is not None:
        return Path(configured) if configured not in ("", "off") else None
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "edgepin" / "tomcat-jsp"


# -------------------------------------------------- cleanup of last resort

_live_lock = threading.Lock()
_live = set()


def _stop_all_at_exit():
    with _live_lock:
        instances = list(_live)
    for instance in instances:
        try:
            instance.stop()
        except Exception as e:  # keep stopping the others
            print(f"tomcat.py: stopping {instance.name} at exit: {e}", file=sys.stderr)


atexit.register(_stop_all_at_exit)

# Runs in the instance's process group beside the JVM: waits on a pipe from
# this Python process and kills the whole group when it reads end-of-file,
# i.e. when this process is gone. Then `exec` turns the shell into
# catalina.sh, which execs java: the JVM keeps the PID that Popen returned,
# which is also the process group id.
_WATCHDOG_AND_EXEC = 'fd=$1; shift; ( read _ignored <&"$fd"; kill -KILL 0 ) & exec "$@"'


# ---------------------------------------------------------------- instance

class TomcatInstance:
    """A private Tomcat 10 instance in BASE_DIR/NAME, serving the demo app on
    ADDRESS:PORT with node name NAME.

    port: a free port on ADDRESS is chosen when None.
    jvm_route: sets the Engine's jvmRoute (JSESSIONID gets ".ROUTE").
    shutdown_port: -1 (default) disables Tomcat's shutdown port; this class
        stops the JVM by signal in any case.
    java_opts: extra JVM options, after the instance's own (so they win),
        e.g. BULK_JAVA_OPTS or ["-Xmx512m"].
    """

    def __init__(self, base_dir, name, address="127.0.0.1", port=None, jvm_route=None,
                 shutdown_port=-1, java_opts=(), start_timeout=DEFAULT_START_TIMEOUT,
                 stop_timeout=DEFAULT_STOP_TIMEOUT):
        self.name = name
        self.address = str(ipaddress.ip_address(address))
        self.base = Path(base_dir).resolve() / name
        self._port_chosen_here = port is None
        self.port = free_port(self.address) if port is None else int(port)
        self.jvm_route = jvm_route
        self.shutdown_port = shutdown_port
        self.java_opts = list(java_opts)
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.console_log = self.base / "logs" / "console.log"
        self.access_log = self.base / "logs" / "access.log"
        self.pid_file = self.base / "temp" / "catalina.pid"
        self.startup_seconds = None  # wall time of the last successful start()
        self._proc = None
        self._log = None
        self._log_offset = 0
        self._watchdog_w = None
        self._served = False  # this run answered: its connector held the port

    def __repr__(self):
        return f"TomcatInstance({self.name!r}, {self.address}:{self.port})"

    # -- public API

    def url(self, path="/"):
        """Returns http://ADDRESS:PORT/path (brackets around IPv6)."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}{path if path.startswith('/') else '/' + path}"

    @property
    def pid(self):
        """The JVM's PID while running, else None."""
        return self._proc.pid if self.is_running() else None

    def create(self):
        """(Re)creates the instance directory with make-instance.sh. Raises
        TomcatError if it fails or if this instance is running."""
        if self.is_running():
            raise TomcatError(f"{self.name}: create() while running")
        args = [str(MAKE_INSTANCE), str(self.base), self.name, self.address,
                str(self.port), str(self.shutdown_port)]
        if self.jvm_route:
            args.append(self.jvm_route)
        done = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120)
        if done.returncode != 0:
            raise TomcatError(f"{self.name}: make-instance.sh failed ({done.returncode}):\n"
                              + done.stdout.decode(errors="replace"))
        self._seed_compiled_jsps()

    def start(self):
        """Starts the JVM and returns once GET /index.jsp answers 200 (the
        first start of a new instance creates it). Raises TomcatError, with
        nothing left running, if that does not happen within start_timeout."""
        if self.is_running():
            raise TomcatError(f"{self.name}: already running (pid {self._proc.pid})")
        if not (self.base / "conf" / "server.xml").exists():
            self.create()
        for attempt in range(1, BIND_RETRIES + 1):
            try:
                self._start_once()
                return
            except TomcatError as e:
                retry = (self._port_chosen_here and attempt < BIND_RETRIES
                         and any(m in str(e) for m in BIND_FAILURE_MARKERS))
                if not retry:
                    raise
                print(f"tomcat.py: {self.name}: port {self.port} taken meanwhile, "
                      "trying another", file=sys.stderr)
                self.port = free_port(self.address)
                self.create()

    def stop(self):
        """Stops the JVM (SIGTERM to its process group, SIGKILL after
        stop_timeout) and, if it had served, waits until the port is free.
        Does nothing if not running. Raises TomcatError if a process of the
        instance or (after serving) the port stays."""
        proc = self._proc
        if proc is None:
            return
        served = self._served
        try:
            pgid = proc.pid  # the JVM leads its process group (see start)
            # Until proc is reaped its PID (and so the group id) cannot be
            # reused, so signalling the group below can hit nothing else.
            if not self._exited():
                self._signal_group(pgid, signal.SIGTERM)
                if not self._wait_exit(self.stop_timeout):
                    print(f"tomcat.py: {self.name}: no exit {self.stop_timeout:.0f} s after "
                          "SIGTERM, sending SIGKILL", file=sys.stderr)
                    self._signal_group(pgid, signal.SIGKILL)
                    if not self._wait_exit(KILL_WAIT_SECONDS):
                        raise TomcatError(f"{self.name}: pid {pgid} survives SIGKILL")
            # The watchdog and anything else left in the group.
            self._signal_group(pgid, signal.SIGKILL)
            proc.wait()
        finally:
            self._forget_process()
        # A JVM that never served may never have bound the port, and whoever
        # holds it then is not ours to wait for.
        deadline = time.monotonic() + PORT_FREE_TIMEOUT
        while served and not port_is_free(self.address, self.port):
            if time.monotonic() > deadline:
                raise TomcatError(f"{self.name}: port {self.address}:{self.port} still "
                                  "in use after stop")
            time.sleep(POLL_INTERVAL)
        left = catalina_pids(self.base)
        if left:
            raise TomcatError(f"{self.name}: processes left running from {self.base}: {left}")

    def is_running(self):
        """Returns True while the JVM started by start() has not exited."""
        return self._proc is not None and not self._exited()

    def log_tail(self, lines=LOG_TAIL_LINES):
        """Returns the last lines of the console log ("" if none)."""
        try:
            with open(self.console_log, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 64 * 1024))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def rss_kib(self):
        """Returns the JVM's resident set size in KiB, or None if not running."""
        pid = self.pid
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def __enter__(self):
        try:
            self.create()
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- internals

    def _start_once(self):
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.console_log, "ab")
        self._log_offset = self._log.tell()
        self._log.write(f"=== tomcat.py: start {time.strftime('%Y-%m-%d %H:%M:%S')} "
                        f"on {self.address}:{self.port}\n".encode())
        self._log.flush()
        env = dict(os.environ)
        env.update({
            "CATALINA_HOME": str(CATALINA_HOME),
            "CATALINA_BASE": str(self.base),
            "CATALINA_PID": str(self.pid_file),
            # Only what this object asks for: not whatever the test's
            # environment happens to carry.
            "JAVA_OPTS": "",
            "CATALINA_OPTS": " ".join(self.java_opts),
        })
        watchdog_r, self._watchdog_w = os.pipe()
        began = time.monotonic()
        try:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _WATCHDOG_AND_EXEC, "tomcat-watchdog", str(watchdog_r),
                 str(CATALINA_SH), "run"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=env, cwd=str(self.base), start_new_session=True,
                pass_fds=(watchdog_r,))
        except OSError as e:
            self._forget_process()
            raise TomcatError(f"{self.name}: cannot run {CATALINA_SH}: {e}") from e
        finally:
            os.close(watchdog_r)
        with _live_lock:
            _live.add(self)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{self._proc.pid}\n")

        try:
            failure = self._wait_ready(began + self.start_timeout)
        except BaseException:  # e.g. KeyboardInterrupt: leave nothing running
            self.stop()
            raise
        if failure is None:
            self._served = True
            self.startup_seconds = time.monotonic() - began
            self._fill_compiled_jsp_cache()
            return
        tail = self.log_tail()
        try:
            self.stop()
        except TomcatError as e:
            failure += f"; and stopping it: {e}"
        message = f"{self.name} on {self.address}:{self.port}: {failure}\n--- {self.console_log} (tail)\n{tail}"
        print(f"tomcat.py: {message}", file=sys.stderr)
        raise TomcatError(message)

    def _wait_ready(self, deadline):
        """Returns None once /index.jsp answers 200, else why not."""
        last = "no answer yet"
        while True:
            if self._exited():
                return f"JVM exited during startup (status {self._exit_status()})"
            if any(m in self._log_since_start() for m in BIND_FAILURE_MARKERS):
                return f"cannot bind {self.address}:{self.port} ({BIND_FAILURE_MARKERS[0]})"
            try:
                status = self._probe("/index.jsp")
                if status == 200:
                    return None
                last = f"GET /index.jsp answered {status}"
            except (OSError, http.client.HTTPException) as e:
                last = f"GET /index.jsp: {e!r}"
            if time.monotonic() > deadline:
                return f"not ready after {self.start_timeout:.0f} s ({last})"
            time.sleep(POLL_INTERVAL)

    def _probe(self, path):
        conn = http.client.HTTPConnection(self.address, self.port, timeout=PROBE_TIMEOUT)
        try:
            conn.request("GET", path, headers={"User-Agent": "edgepin-tomcat-harness",
                                               "Connection": "close"})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def _log_since_start(self):
        """Returns what this start wrote to the console log so far (earlier
        starts' failures must not count)."""
        try:
            with open(self.console_log, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _exit_status(self):
        """The JVM's exit status (negative: killed by that signal), without
        reaping it; None while it runs."""
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return self._proc.returncode
        if info is None:
            return None
        return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status

    def _exited(self):
        """True once the JVM has exited; does not reap it, so its PID stays
        reserved until stop() does."""
        if self._proc is None:
            return True
        if self._proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _wait_exit(self, timeout):
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() > deadline:
                return False
            time.sleep(POLL_INTERVAL)
        return True

    @staticmethod
    def _signal_group(pgid, sig):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    def _forget_process(self):
        with _live_lock:
            _live.discard(self)
        self._proc = None
        self._served = False
        if self._watchdog_w is not None:
            os.close(self._watchdog_w)
            self._watchdog_w = None
        if self._log is not None:
            self._log.close()
            self._log = None
        try:
            self.pid_file.unlink()
        except FileNotFoundError:
            pass

    # -- compiled JSP cache
    #
    # Compiling the demo JSPs (Jasper + the Eclipse compiler) is about a
    # third of a fresh instance's startup CPU and ~20 MB of its RSS. The
    # classes do not depend on the node, so the first instance to start
    # compiles all pages (?jsp_precompile) and stores them; later instances
    # get them copied into work/ before they start. Jasper reuses a class
    # only if its mtime equals the JSP's, so a stale or foreign class is
    # recompiled, never served. Entries are keyed by the application's
    # files and the exact Jasper and Java installed.

    def _jsp_dir(self):
        return self.base / "work" / "Catalina" / "localhost" / "ROOT" / "org" / "apache" / "jsp"

    def _app_jsps(self):
        return sorted((self.base / "webapps" / "ROOT").glob("*.jsp"))

    def _jsp_cache_entry(self):
        root = _jsp_cache_root()
        if root is None:
            return None
        h = hashlib.sha256()
        app = self.base / "webapps" / "ROOT"
        for path in sorted(p for p in app.rglob("*") if p.is_file()):
            h.update(str(path.relative_to(app)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
        # The JSP servlet's settings (conf/web.xml) shape the generated code.
        h.update((self.base / "conf" / "web.xml").read_bytes() + b"\0")
        for tool in (Path("/usr/share/java/tomcat10-jasper.jar"),
                     Path("/usr/share/java/eclipse-jdt-core.jar"),
                     Path(shutil.which("java") or "/usr/bin/java")):
            try:
                real = tool.resolve()
                st = real.stat()
                h.update(f"{real}:{st.st_size}:{st.st_mtime_ns}\0".encode())
            except OSError:
                h.update(f"{tool}:missing\0".encode())
        return root / h.hexdigest()[:32]

    def _seed_compiled_jsps(self):
        entry = self._jsp_cache_entry()
        if entry is None or not entry.is_dir():
            return
        target = self._jsp_dir()
        target.mkdir(parents=True, exist_ok=True)
        for jsp in self._app_jsps():
            stem = jsp.stem + "_jsp"
            mtime_ns = jsp.stat().st_mtime_ns
            for suffix in (".java", ".class"):
                cached = entry / (stem + suffix)
                if cached.is_file():
                    shutil.copyfile(cached, target / cached.name)
                    os.utime(target / cached.name, ns=(mtime_ns, mtime_ns))

    def _fill_compiled_jsp_cache(self):
        entry = self._jsp_cache_entry()
        if entry is None or entry.is_dir():
            return
        try:
            for jsp in self._app_jsps():
                status = self._probe(f"/{jsp.name}?jsp_precompile=true")
                if status != 200:
                    print(f"tomcat.py: {jsp.name} does not compile ({status}); "
                          "not caching compiled JSPs", file=sys.stderr)
                    return
            entry.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
            try:
                for f in self._jsp_dir().iterdir():
                    if f.suffix in (".java", ".class"):
                        shutil.copyfile(f, tmp / f.name)
                # Several test processes may fill the same entry at once:
                # the first rename wins, the others find it in place.
                os.rename(tmp, entry)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)
        except (OSError, http.client.HTTPException) as e:
            # The cache only saves time; an unwritable one costs nothing else.
            print(f"tomcat.py: compiled JSP cache not written: {e}", file=sys.stderr)
