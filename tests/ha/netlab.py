"""Network namespaces for Edgepin's HA tests: "hosts" joined by bridges.

Standard library only; run as root with /usr/bin/python3 (iproute2 and
procps installed). Addresses come from 198.18.0.0/15, the benchmarking
range, and exist only inside the namespaces made here.

    lab = NetLab("vrrp")                       # names ephaPID-vrrp-*
    sw = lab.add("sw"); a = lab.add("a"); b = lab.add("b")
    lab.bridge(sw, "br0")
    lab.wire(a, "eth0", sw, "a0", bridge="br0", cidr="198.18.0.2/24")
    lab.run(a, ["ip", "route"])                # ip netns exec ...
    with lab.entered(b): ...                   # this thread in b's namespace
    lab.close()                                # kills every process, deletes

Cleanup guarantees: close() kills every process left in each namespace
(SIGKILL, by the PIDs `ip netns pids` lists) and deletes the namespaces; it
runs at interpreter exit too. Namespace names carry the creating PID, so a
later run deletes what a killed run (SIGKILL, ctest timeout) left behind.
"""

import atexit
import ctypes
import os
import re
import signal
import subprocess
import threading
import time
from contextlib import contextmanager

PREFIX = "epha"
CLONE_NEWNET = 0x40000000
COMMAND_TIMEOUT = 15.0

_libc = ctypes.CDLL(None, use_errno=True)
_labs = []
_labs_lock = threading.Lock()


class NetLabError(RuntimeError):
    """A namespace command failed."""


def _ip(args, timeout=COMMAND_TIMEOUT, check=True):
    done = subprocess.run(["ip"] + [str(a) for a in args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if check and done.returncode != 0:
        raise NetLabError("ip %s: %s" % (" ".join(map(str, args)), done.stdout.decode().strip()))
    return done.stdout.decode()


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_namespace(name):
    """SIGKILLs every process in namespace `name` and deletes it; waits up to
    5 s for the processes to go (a killed process leaves the namespace only
    when the kernel has torn it down)."""
    deadline = time.monotonic() + 5.0
    while True:
        pids = [int(p) for p in _ip(["netns", "pids", name], check=False).split() if p.isdigit()]
        if not pids or time.monotonic() > deadline:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    _ip(["netns", "del", name], check=False)


def sweep_stale():
    """Deletes namespaces a dead run of these tests left behind."""
    for line in _ip(["netns", "list"], check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(r"^%s(\d+)-" % PREFIX, name)
        if m and not _pid_alive(int(m.group(1))):
            kill_namespace(name)


class NetLab:
    """A set of namespaces made for one test, deleted by close()."""

    def __init__(self, tag):
        sweep_stale()
        self.prefix = "%s%d-%s-" % (PREFIX, os.getpid(), tag)
        self.names = []
        with _labs_lock:
            _labs.append(self)

    # -- building

    def add(self, short):
        """Creates namespace PREFIX+short with its loopback up; returns its
        full name."""
        name = self.prefix + short
        _ip(["netns", "add", name])
        self.names.append(name)
        _ip(["-n", name, "link", "set", "lo", "up"])
        return name

    def bridge(self, ns, name):
        _ip(["-n", ns, "link", "add", name, "type", "bridge"])
        # No STP or forwarding delay: a port forwards as soon as it is up.
        _ip(["-n", ns, "link", "set", name, "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        _ip(["-n", ns, "link", "set", name, "up"])

    def wire(self, ns, ifname, peer_ns, peer_if, bridge=None, cidr=None):
        """A veth pair: `ifname` in `ns`, `peer_if` in `peer_ns` (a port of
        `bridge` there when given); `cidr` is assigned to `ifname`. Both ends
        are brought up."""
        _ip(["-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", peer_if,
             "netns", peer_ns])
        if bridge:
            _ip(["-n", peer_ns, "link", "set", peer_if, "master", bridge])
        _ip(["-n", peer_ns, "link", "set", peer_if, "up"])
        if cidr:
            self.addr(ns, ifname, cidr)
        _ip(["-n", ns, "link", "set", ifname, "up"])

    def addr(self, ns, ifname, cidr):
        _ip(["-n", ns, "addr", "add", cidr, "dev", ifname])

    def route(self, ns, *args):
        _ip(["-n", ns, "route", "add"] + list(args))

    def sysctl(self, ns, key, value):
        self.run(ns, ["sysctl", "-q", "-w", "%s=%s" % (key, value)])

    def link(self, ns, *args):
        _ip(["-n", ns, "link"] + list(args))

    # -- using

    def argv(self, ns, argv):
        """argv run inside `ns` (ip netns exec; the command keeps its PID)."""
        return ["ip", "netns", "exec", ns] + [str(a) for a in argv]

    def run(self, ns, argv, timeout=COMMAND_TIMEOUT, check=True):
        """Runs argv in `ns`; returns its stdout. Raises NetLabError when it
        fails and `check` is set."""
        done = subprocess.run(self.argv(ns, argv), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if check and done.returncode != 0:
            raise NetLabError("in %s: %s: exit %d: %s" % (ns, " ".join(map(str, argv)),
                                                           done.returncode,
                                                           done.stderr.decode().strip()))
        return done.stdout.decode()

    def addresses(self, ns, ifname):
        """The IPv4 addresses on `ifname` in `ns`, without prefix length."""
        out = _ip(["-n", ns, "-o", "-4", "addr", "show", "dev", ifname], check=False)
        return set(re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out))

    @contextmanager
    def entered(self, ns):
        """Moves the calling thread into `ns` for the block (setns(2); threads
        and processes it starts meanwhile are born there), then back."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open("/run/netns/" + ns, os.O_RDONLY)
            try:
                self._setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                self._setns(own)
        finally:
            os.close(own)

    @staticmethod
    def _setns(fd):
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetLabError("setns: %s" % os.strerror(err))

    def close(self):
        """Kills every process in the namespaces and deletes them."""
        for name in reversed(self.names):
            kill_namespace(name)
        self.names = []
        with _labs_lock:
            if self in _labs:
                _labs.remove(self)


@atexit.register
def _close_all():
    with _labs_lock:
        labs = list(_labs)
    for lab in labs:
        lab.close()
