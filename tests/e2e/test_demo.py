"""The README's first command, deploy/demo.sh, end to end.

Runs the demo in the background as an operator would, waits until it says
it is running, and checks the stack through the lb with curl: HTTPS and
HTTP reach the demo app, a user stays on one node (one curl process making
ten requests on ten new connections, and ten curl processes sharing a
cookie jar, as the demo's printed loop does), draining that user's node
through its admin socket moves new users away while the user stays, the
stats page answers, and the lb's and the node-proxies' /metrics parse as
Prometheus text. Then it
sends SIGTERM and checks that nothing the demo started is left: no process,
no listening port, no temporary directory. Then it runs the demo again.

Environment: EDGEPIN_DEMO_BUILD_DIR (set by ctest to its build directory)
makes the demo use those binaries instead of installing and building; the
demo's default does everything.

Run: cd tests/e2e && /usr/bin/python3 -m unittest -v test_demo
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "helpers"))
from prometheus_text import parse_prometheus, sample  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "deploy", "demo.sh")

# What the demo must have up before it prints its banner; generous because
# three JVMs start at once on a small, shared CI machine (and without a
# build directory the demo also builds).
READY_TIMEOUT = 900.0 if not os.environ.get("EDGEPIN_DEMO_BUILD_DIR") else 600.0
STOP_TIMEOUT = 90.0
CURL_TIMEOUT = 20
READY_MARK = "Edgepin demo is running"
STATS = "127.0.0.1:8888"
NODES = {"node1": "127.0.0.11", "node2": "127.0.0.12", "node3": "127.0.0.13"}
METRICS_PORT = 9180


# ------------------------------------------------------------- helpers

def curl(*args):
    """Runs curl; returns (exit code, stdout text)."""
    done = subprocess.run(["curl", "-sS", "--max-time", str(CURL_TIMEOUT), *args],
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=CURL_TIMEOUT * 12)
    return done.returncode, done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")


def kv_blocks(text):
    """Each demo page's key=value lines, split where a new page starts."""
    blocks = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "node":
            blocks.append({})
        if blocks:
            blocks[-1].setdefault(key, value)
    return blocks


def admin_command(path, line):
    """One admin socket command; the answer without its final empty line."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(CURL_TIMEOUT)
    try:
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        s.shutdown(socket.SHUT_WR)  # the server answers, then closes
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    return data.decode().rstrip("\n")


def http_get(url):
    with urllib.request.urlopen(url, timeout=CURL_TIMEOUT) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def proc_start_time(pid):
    """Field 22 of /proc/PID/stat (start time in ticks): tells a process
    from a later one that got the same PID."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2:].split()[19]


def describe_pid(pid):
    """"PID (comm) cmdline" for a failure message."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        with open("/proc/%d/comm" % pid) as f:
            comm = f.read().strip()
    except OSError:
        return "%d (gone)" % pid
    return "%d (%s) %s" % (pid, comm, cmd[:200])


def descendants(root):
    """{pid: start time} of every living descendant of `root`."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                data = f.read()
        except OSError:
            continue
        ppid = int(data[data.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            start = proc_start_time(child)
            if start is not None:
                out[child] = start
                todo.append(child)
    return out


def is_zombie(pid):
    """An exited process not yet reaped (by init, once its parent is gone):
    it holds no memory, socket or port any more."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return False
    return data[data.rindex(")") + 2:].split()[0] == "Z"


def still_running(recorded):
    return sorted(pid for pid, start in recorded.items()
                  if proc_start_time(pid) == start and not is_zombie(pid))


def wait_all_gone(recorded, timeout=5.0):
    """The recorded processes still alive after up to `timeout` seconds: a
    grandchild that got SIGTERM with its group may take a moment to exit."""
    deadline = time.monotonic() + timeout
    while still_running(recorded) and time.monotonic() < deadline:
        time.sleep(0.1)
    return still_running(recorded)


def bound_addresses():
    """Everything the demo listens on."""
    out = [("127.0.0.1", 443), ("127.0.0.1", 80), ("127.0.0.1", 8888)]
    for address in NODES.values():
        out += [(address, p) for p in (8080, 8443, 8081, 9443, METRICS_PORT)]
    return out


def listening(address, port):
    """True when a process accepts connections on address:port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        return s.connect_ex((address, port)) == 0
    finally:
        s.close()


# -------------------------------------------------------------- the test

class DemoRun:
    """One run of deploy/demo.sh, in the background, output to a file."""

    def __init__(self, tmp, index):
        self.log_path = os.path.join(tmp, "demo-%d.log" % index)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["/bin/bash", DEMO], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True, env=dict(os.environ))
        self.recorded = {}
        self.state_dir = None

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            text = self.output()
            self.recorded.update(descendants(self.proc.pid))
            if READY_MARK in text:
                m = re.search(r"state and logs in (/tmp/edgepin-demo\.[A-Za-z0-9]+)", text)
                if not m:
                    raise AssertionError("no state directory in the banner:\n" + text[-3000:])
                self.state_dir = m.group(1)
                # Everything is up: record the whole tree once more.
                self.recorded.update(descendants(self.proc.pid))
                return
            if self.proc.poll() is not None:
                raise AssertionError("demo.sh exited with %s before it was ready:\n%s"
                                     % (self.proc.returncode, text[-6000:]))
            time.sleep(1)
        raise AssertionError("demo.sh not ready in %.0f s:\n%s" % (READY_TIMEOUT, self.output()[-6000:]))

    def stop(self):
        """SIGTERM, as Ctrl-C's sibling; returns demo.sh's exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        finally:
            self.log.close()

    def kill_leftovers(self):
        """Last resort after a failure: nothing may outlive the test."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=STOP_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for pid in still_running(self.recorded):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not self.log.closed:
            self.log.close()


class DemoTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="edgepin-test-demo-")
        self.addCleanup(self.tmp.cleanup)
        for address, port in bound_addresses():
            self.assertFalse(listening(address, port),
                             "%s:%d is taken before the demo starts" % (address, port))

    def run_demo(self, index, check):
        demo = DemoRun(self.tmp.name, index)
        self.addCleanup(demo.kill_leftovers)
        demo.wait_ready()
        try:
            check(demo)
        except BaseException:
            print("\n----- demo.sh output:\n" + demo.output()[-6000:])
            raise
        self.assertTrue(still_running(demo.recorded), "no process of the demo was seen")
        self.assertTrue(os.path.isdir(demo.state_dir))
        rc = demo.stop()
        text = demo.output()
        self.assertEqual(rc, 0, "demo.sh exit code after SIGTERM:\n" + text[-4000:])
        self.assertIn("stopped", text)
        # Nothing left behind.
        left = wait_all_gone(demo.recorded)
        self.assertEqual(left, [], "processes of the demo are still running: " +
                         "; ".join(describe_pid(pid) for pid in left))
        for address, port in bound_addresses():
            self.assertFalse(listening(address, port), "%s:%d still accepts connections" % (address, port))
        self.assertFalse(os.path.exists(demo.state_dir), demo.state_dir + " is still there")

    def check_stack(self, demo, full=True):
        # HTTPS and HTTP through the lb reach the demo app.
        rc, out = curl("-k", "https://127.0.0.1/")
        self.assertEqual(rc, 0, out)
        page = kv_blocks(out)
        self.assertEqual(len(page), 1, out)
        self.assertIn(page[0]["node"], NODES)
        self.assertEqual(page[0]["scheme"], "https")
        self.assertEqual(page[0]["counter"], "1")
        rc, out = curl("http://127.0.0.1/")
        self.assertEqual(rc, 0, out)
        page = kv_blocks(out)
        self.assertEqual(len(page), 1, out)
        self.assertIn(page[0]["node"], NODES)
        self.assertEqual(page[0]["scheme"], "http")
        if not full:
            return

        # One curl process, ten requests, each on a new connection
        # (Connection: close): it resumes its TLS session, whose node tag
        # makes the lb send it back to the node that issued it (curl 7.88
        # resumes TLS 1.3 on every other connection only); the cookies
        # bring the rest to the same node's session (L7 affinity).
        jar = os.path.join(self.tmp.name, "jar-one-process")
        totals = json.loads(http_get("http://%s/stats;json" % STATS)[2])["totals"]
        before, tag_before = totals["connections_total"], totals["routes"]["tag"]
        rc, out = curl("-k", "-b", jar, "-c", jar, "-H", "Connection: close",
                       *(["https://127.0.0.1/"] * 10))
        self.assertEqual(rc, 0, out)
        pages = kv_blocks(out)
        self.assertEqual(len(pages), 10, out)
        self.assertEqual(len({p["node"] for p in pages}), 1, [p["node"] for p in pages])
        self.assertEqual([p["counter"] for p in pages], [str(i) for i in range(1, 11)])
        totals = json.loads(http_get("http://%s/stats;json" % STATS)[2])["totals"]
        self.assertGreaterEqual(totals["connections_total"] - before, 10,
                                "the ten requests did not use ten connections")
        self.assertGreaterEqual(totals["routes"]["tag"] - tag_before, 1,
                                "no reconnection was routed by its TLS session's node tag")

        # The demo's own loop: ten curl processes sharing a cookie jar. They
        # never resume TLS, so only the node-proxies' L7 affinity (the
        # cookie names the owner node) keeps them on one node's session.
        jar = os.path.join(self.tmp.name, "jar-processes")
        pages = []
        for _ in range(10):
            rc, out = curl("-k", "-b", jar, "-c", jar, "https://127.0.0.1/")
            self.assertEqual(rc, 0, out)
            pages += kv_blocks(out)
        self.assertEqual(len(pages), 10)
        self.assertEqual([p["counter"] for p in pages], [str(i) for i in range(1, 11)],
                         "nodes seen: %s" % [p["node"] for p in pages])
        self.assertEqual(len({p["node"] for p in pages}), 1)

        # The lb's stats: HTML page, JSON, Prometheus text.
        status, ctype, body = http_get("http://%s/" % STATS)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/html"), ctype)
        for name in NODES:
            self.assertIn(name, body)
        stats = json.loads(http_get("http://%s/stats;json" % STATS)[2])
        self.assertEqual(sorted(s["name"] for s in stats["servers"]), sorted(NODES))
        self.assertTrue(all(s["healthy"] for s in stats["servers"]), stats["servers"])
        status, ctype, body = http_get("http://%s/metrics" % STATS)
        self.assertEqual(status, 200)
        self.assertTrue(ctype.startswith("text/plain; version=0.0.4"), ctype)
        families = parse_prometheus(body)
        self.assertEqual(families["edgepin_lb_info"]["type"], "gauge")
        self.check_conventions(families)
        self.assertGreaterEqual(
            sum(v for n, _, v in families["edgepin_lb_frontend_connections_total"]["samples"]), 22)

        # Each node-proxy's metrics listener.
        served = 0
        for name, address in NODES.items():
            status, ctype, body = http_get("http://%s:%d/metrics" % (address, METRICS_PORT))
            self.assertEqual(status, 200)
            families = parse_prometheus(body)
            info = families["edgepin_node_info"]["samples"]
            self.assertEqual(len(info), 1)
            self.assertEqual(info[0][1]["node"], name)
            self.assertEqual(sample(families, "edgepin_node_tomcat_up"), 1)
            self.assertEqual(families["edgepin_node_requests_total"]["type"], "counter")
            self.check_conventions(families)
            served += sample(families, "edgepin_node_requests_total")
        self.assertGreaterEqual(served, 22)

        # The live summary reads those and prints a line a second.
        self.assertRegex(demo.output(), r"\d\d:\d\d:\d\d \| lb: \d+ open, \d+ total \| node1: ")

    def wait_lb_health(self, server, healthy, timeout=60.0):
        """Until the lb's health checks see `server` as `healthy`."""
        deadline = time.monotonic() + timeout
        while True:
            servers = json.loads(http_get("http://%s/stats;json" % STATS)[2])["servers"]
            state = {s["name"]: s["healthy"] for s in servers}[server]
            if state == healthy:
                return
            self.assertLess(time.monotonic(), deadline,
                            "the lb did not see %s as %s in %.0f s" % (server, healthy, timeout))
            time.sleep(0.5)

    def check_conventions(self, families):
        """Prometheus naming conventions: every family typed and described,
        counters end in _total, nothing undeclared."""
        for name, fam in families.items():
            self.assertTrue(fam["typed"], name + " has no TYPE")
            self.assertTrue(fam["help"], name + " has no HELP")
            self.assertTrue(fam["samples"], name + " has no samples")
            self.assertEqual(fam["type"] == "counter", name.endswith("_total"), name)

    def check_drain(self, demo):
        """Drain a user's node through its admin socket: the lb stops
        sending it new users, while the user's session is still served
        there (the issue's contract for `set node state drain`). Then back
        to ready."""
        jar = os.path.join(self.tmp.name, "jar-drain")
        pages = []
        for _ in range(3):
            rc, out = curl("-k", "-b", jar, "-c", jar, "https://127.0.0.1/")
            self.assertEqual(rc, 0, out)
            pages += kv_blocks(out)
        self.assertEqual([p["counter"] for p in pages], ["1", "2", "3"])
        owner = pages[0]["node"]
        admin = os.path.join(demo.state_dir, "run", owner + ".sock")
        self.assertEqual(admin_command(admin, "set node state drain"), "node: state drain (was ready)")
        self.wait_lb_health(owner, healthy=False)
        for _ in range(6):
            rc, out = curl("-k", "https://127.0.0.1/")
            self.assertEqual(rc, 0, out)
            self.assertNotEqual(kv_blocks(out)[0]["node"], owner, "a new user landed on the drained node")
        rc, out = curl("-k", "-b", jar, "-c", jar, "https://127.0.0.1/")
        self.assertEqual(rc, 0, out)
        page = kv_blocks(out)[0]
        self.assertEqual((page["node"], page["counter"]), (owner, "4"),
                         "the drained node's existing session moved")
        self.assertEqual(admin_command(admin, "set node state ready"), "node: state ready (was drain)")
        self.wait_lb_health(owner, healthy=True)

    def test_demo_twice(self):
        self.run_demo(1, self.check_stack)
        # Running it again right away works (ports free, fresh state).
        self.run_demo(2, lambda demo: self.check_stack(demo, full=False))

    def test_drain_keeps_sessions(self):
        self.run_demo(3, self.check_drain)


if __name__ == "__main__":
    unittest.main()
