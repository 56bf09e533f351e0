"""Issue 15: the systemd-native lifecycle of both daemons, and config pushes.

The daemons run as real processes on loopback. This test plays systemd's
part: it binds the notification socket (an AF_UNIX datagram socket, with
SO_PASSCRED so every message carries the sender's PID) and passes it in
NOTIFY_SOCKET, with WATCHDOG_USEC as a unit's WatchdogSec= would.

- lifecycle (lb and node-proxy): READY=1 with a STATUS= line once the
  listeners accept; WATCHDOG=1 every half interval; SIGHUP gives RELOADING=1
  with MONOTONIC_USEC (our CLOCK_MONOTONIC) then READY=1, for a valid and
  for a refused config; SIGTERM gives STOPPING=1 and exit 0; every message
  comes from the main PID (NotifyAccess=main).
- watchdog: a worker event loop stalled by the test hook (builds with tests
  only, EDGEPIN_TEST_STALL_LOOP) withholds the pings, which resume when it
  turns again; without NOTIFY_SOCKET the daemon runs as before.
- config push: the commands of deploy/systemd/edgepin-lb-config.service, run
  as systemd would after edgepin-lb-config.path fired (the `systemctl
  try-reload-or-restart` line carried out as systemd does it: the lb unit's
  ExecReload lines with $MAINPID), apply a changed weight; a broken file is
  refused by the check with the file named on stderr and never reaches the
  lb.
- `systemd-analyze verify` accepts every unit in deploy/systemd/ (paths
  pointed at the built binaries), where systemd-analyze is installed.

Run through ctest (`ctest -R ha_systemd`), which sets EDGEPIN_LB and
EDGEPIN_NODE_PROXY.
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))

import edgepin_testlib as lib  # noqa: E402

UNIT_DIR = REPO_ROOT / "deploy" / "systemd"
CONF_DIR = REPO_ROOT / "conf"
START_TIMEOUT = 20.0
# WatchdogSec=4s for these tests: pings every 2 s, a loop that has not
# turned for 2 s withholds them.
WATCHDOG_USEC = 4_000_000
PING_EVERY = WATCHDOG_USEC / 2e6
# The main thread's tick is about a second: a ping may come up to that much
# after it is due.
TICK = 1.0

_template = lib.ConfTemplate("edgepin-ha-sd-conf-")


def setUpModule():
    _template.make()


def tearDownModule():
    _template.cleanup()


class NotifySocket:
    """systemd's end of the protocol: a bound datagram socket and a thread
    collecting (monotonic time, sender pid, {key: value}) per message."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []
        self.lock = threading.Lock()
        self.stop_flag = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        ucred = struct.calcsize("3i")
        while not self.stop_flag:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(ucred))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:ucred])[0]
            fields = {}
            for line in data.decode("utf-8", "replace").split("\n"):
                k, sep, v = line.partition("=")
                if sep:
                    fields[k] = v
            with self.lock:
                self.messages.append((time.monotonic(), pid, fields))

    def close(self):
        self.stop_flag = True
        self.thread.join(2)
        self.sock.close()

    def snapshot(self):
        with self.lock:
            return list(self.messages)

    def wait_for(self, key, value=None, after=0.0, timeout=START_TIMEOUT):
        """The first message at or after `after` (monotonic) with `key`
        (equal to `value` when given); AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            for t, pid, fields in self.snapshot():
                if t >= after and key in fields and (value is None or fields[key] == value):
                    return t, pid, fields
            if time.monotonic() > deadline:
                raise AssertionError("no %s%s from the daemon within %.0f s; got %s" % (
                    key, "=" + value if value else "", timeout,
                    [f for _, _, f in self.snapshot()]))
            time.sleep(0.02)

    def pings(self, since=0.0, until=float("inf")):
        return [t for t, _, f in self.snapshot() if f.get("WATCHDOG") == "1" and since <= t <= until]


def accepts(host, port):
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def regular_intervals(test, pings, what):
    """Consecutive pings come every PING_EVERY seconds, give or take the tick."""
    test.assertGreaterEqual(len(pings), 3, "%s: too few pings: %s" % (what, pings))
    for a, b in zip(pings, pings[1:]):
        test.assertGreaterEqual(b - a, PING_EVERY - 0.3, "%s: pings too close: %s" % (what, pings))
        test.assertLessEqual(b - a, PING_EVERY + TICK + 0.5, "%s: ping late: %s" % (what, pings))


class Daemon(lib.EdgepinTestCase):
    """Starts the daemon under test with a notification socket."""

    def notify_env(self, watchdog=True, extra=None):
        self.notify = NotifySocket(Path(self.tmp) / "notify.sock")
        self.addCleanup(self.notify.close)
        env = {"NOTIFY_SOCKET": self.notify.path}
        if watchdog:
            env["WATCHDOG_USEC"] = str(WATCHDOG_USEC)
        env.update(extra or {})
        return env


# ---------------------------------------------------------------------- lb

def lb_conf(tmp):
    conf = os.path.join(tmp, "conf")
    os.mkdir(conf)
    shutil.copy(CONF_DIR / "cluster.json", conf)
    lb = lib.read_json(CONF_DIR / "lb.json")
    lb["threads"] = 2
    lb["shutdown_grace_ms"] = 2000
    ports = {}
    for fe in lb["frontends"]:
        ports[fe["name"]] = lib.free_port()
        fe["bind"] = ["127.0.0.1:%d" % ports[fe["name"]]]
    ports["stats"] = lib.free_port()
    lb["stats"] = {"bind": "127.0.0.1:%d" % ports["stats"]}
    lb["health_check"].update({"interval_ms": 500, "timeout_ms": 200})
    lb.pop("admin_socket", None)
    lib.write_json(os.path.join(conf, "lb.json"), lb)
    return conf, ports


def lb_weights(port):
    stats = json.loads(subprocess.run(
        ["curl", "-sS", "--max-time", "5", "--noproxy", "*", "http://127.0.0.1:%d/stats;json" % port],
        stdout=subprocess.PIPE, check=True, timeout=10).stdout)
    return {s["name"]: s["weight"] for s in stats["servers"]}


STATUS_LB = re.compile(r"^\d+ connections?, \d+/3 nodes up")


class TestLbLifecycle(Daemon):
    def start_lb(self, env):
        self.conf, self.ports = lb_conf(self.tmp)
        return self.spawn([lib.binary("EDGEPIN_LB"), "--config-dir", self.conf], "lb", env=env)

    def test_ready_watchdog_reload_stopping(self):
        lb = self.start_lb(self.notify_env())
        t_ready, pid, ready = self.notify.wait_for("READY", "1")
        self.assertEqual(pid, lb.pid, "NotifyAccess=main: the main process must send")
        # READY means listening: the frontends accept at once.
        self.assertTrue(accepts("127.0.0.1", self.ports["https"]))
        self.assertTrue(accepts("127.0.0.1", self.ports["http"]))
        self.assertRegex(ready.get("STATUS", ""), STATUS_LB)

        # Pings at the configured rate while everything turns.
        time.sleep(4 * PING_EVERY + TICK)
        regular_intervals(self, self.notify.pings(since=t_ready), "lb")

        # A valid reload: RELOADING=1 with our monotonic clock, then READY=1.
        cluster = lib.read_json(os.path.join(self.conf, "cluster.json"))
        cluster["nodes"][0]["weight"] = 7
        lib.write_json(os.path.join(self.conf, "cluster.json"), cluster)
        t_hup = time.monotonic()
        lb.signal(signal.SIGHUP)
        t_rel, pid, rel = self.notify.wait_for("RELOADING", "1", after=t_hup)
        self.assertEqual(pid, lb.pid)
        self.assertLess(abs(int(rel["MONOTONIC_USEC"]) / 1e6 - t_hup), 2.0, rel)
        t_back, _, back = self.notify.wait_for("READY", "1", after=t_rel)
        self.assertRegex(back.get("STATUS", ""), STATUS_LB)
        lb.wait_for_stderr("reload ok")
        self.assertEqual(lb_weights(self.ports["stats"])["node1"], 7)

        # A refused reload: the daemon still says READY (it serves the old one).
        with open(os.path.join(self.conf, "lb.json"), "w") as f:
            f.write("{ broken")
        t_hup = time.monotonic()
        lb.signal(signal.SIGHUP)
        t_rel, _, _ = self.notify.wait_for("RELOADING", "1", after=t_hup)
        self.notify.wait_for("READY", "1", after=t_rel)
        lb.wait_for_stderr("reload failed")
        self.assertTrue(accepts("127.0.0.1", self.ports["https"]))

        # SIGTERM: STOPPING=1 before the drain, then a clean exit.
        t_term = time.monotonic()
        lb.signal(signal.SIGTERM)
        _, pid, stopping = self.notify.wait_for("STOPPING", "1", after=t_term)
        self.assertEqual(pid, lb.pid)
        self.assertEqual(lb.popen.wait(timeout=15), 0)

    def test_stalled_worker_withholds_watchdog_pings(self):
        # The hook stalls the event loop of worker 1 for 6 s, 5 s after it
        # starts: a callback that never returns, as a deadlock would.
        stall_at, stall_for = 5.0, 6.0
        env = self.notify_env(extra={"EDGEPIN_TEST_STALL_LOOP": "lb-worker-1:%d:%d" % (
            stall_at * 1000, stall_for * 1000)})
        lb = self.start_lb(env)
        t_ready, _, _ = self.notify.wait_for("READY", "1")
        lb.wait_for_stderr("test hook", timeout=5)
        # Until the stall ends and two pings after it.
        time.sleep(stall_at + stall_for + 3 * PING_EVERY + TICK)
        pings = self.notify.pings(since=t_ready)
        gaps = [(b - a, a, b) for a, b in zip(pings, pings[1:])]
        longest = max(gaps) if gaps else (0, 0, 0)
        # The pings stop for about the stall (less the 2 s a loop may lag
        # before it counts as stalled, plus up to a ping period).
        self.assertGreaterEqual(longest[0], stall_for - PING_EVERY - 0.5,
                                "pings did not stop during the stall: %s" % pings)
        self.assertLessEqual(longest[0], stall_for + PING_EVERY + TICK + 1.0, pings)
        # Regular before, regular again after: the watchdog follows the loop.
        regular_intervals(self, [p for p in pings if p <= longest[1]], "before the stall")
        regular_intervals(self, [p for p in pings if p >= longest[2]], "after the stall")
        # systemctl status shows why, and the log says it.
        statuses = [f["STATUS"] for t, _, f in self.notify.snapshot()
                    if "STATUS" in f and longest[1] <= t <= longest[2]]
        self.assertTrue(any("lb-worker-1 stalled" in s for s in statuses), statuses)
        err = lb.stderr_text()
        self.assertIn("event loop lb-worker-1 has not turned for", err)
        self.assertIn("watchdog pings resume", err)
        lb.signal(signal.SIGTERM)
        self.assertEqual(lb.popen.wait(timeout=15), 0)

    def test_runs_without_systemd(self):
        lb = self.start_lb({"NOTIFY_SOCKET": "", "WATCHDOG_USEC": ""})
        lib.wait_for_port("127.0.0.1", self.ports["https"], timeout=START_TIMEOUT, proc=lb)
        self.assertNotIn("sd_notify", lb.stderr_text())
        lb.signal(signal.SIGTERM)
        self.assertEqual(lb.popen.wait(timeout=15), 0)


# -------------------------------------------------------------- node-proxy

STATUS_NP = re.compile(r"^\d+ connections?, Tomcat (up|down), \d+/2 peers up")


class TestNodeProxyLifecycle(Daemon):
    def test_ready_watchdog_reload_stopping(self):
        conf = _template.copy_to(os.path.join(self.tmp, "conf"))
        tls_port, http_port = lib.free_port("127.0.0.11"), lib.free_port("127.0.0.11")
        lib.place_node(conf, "node1", "127.0.0.11", tls_port, http_port, lib.free_port("127.0.0.11"))
        np = lib.read_json(os.path.join(conf, "node-proxy.json"))
        np["threads"] = 1
        np["shutdown_grace_ms"] = 2000
        np.pop("admin_socket", None)
        lib.write_json(os.path.join(conf, "node-proxy.json"), np)
        proc = self.spawn([lib.binary("EDGEPIN_NODE_PROXY"), "--config-dir", conf, "--node", "node1"],
                          "node-proxy", env=self.notify_env())
        t_ready, pid, ready = self.notify.wait_for("READY", "1")
        self.assertEqual(pid, proc.pid)
        self.assertTrue(accepts("127.0.0.11", tls_port))
        self.assertTrue(accepts("127.0.0.11", http_port))
        self.assertRegex(ready.get("STATUS", ""), STATUS_NP)
        time.sleep(3 * PING_EVERY + TICK)
        regular_intervals(self, self.notify.pings(since=t_ready), "node-proxy")

        t_hup = time.monotonic()
        proc.signal(signal.SIGHUP)
        t_rel, pid, rel = self.notify.wait_for("RELOADING", "1", after=t_hup)
        self.assertEqual(pid, proc.pid)
        self.assertLess(abs(int(rel["MONOTONIC_USEC"]) / 1e6 - t_hup), 2.0, rel)
        self.notify.wait_for("READY", "1", after=t_rel)

        t_term = time.monotonic()
        proc.signal(signal.SIGTERM)
        _, pid, _ = self.notify.wait_for("STOPPING", "1", after=t_term)
        self.assertEqual(pid, proc.pid)
        self.assertEqual(proc.popen.wait(timeout=15), 0)


# ------------------------------------------------------------- config push

def read_unit(path):
    """{section: [(key, value)]} of a unit file (no continuation lines)."""
    sections = {}
    current = None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        key, _, value = line.partition("=")
        current.append((key, value))
    return sections


def unit_values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


class TestConfigPush(Daemon):
    """edgepin-lb-config.path → edgepin-lb-config.service, run by hand."""

    def setUp(self):
        super().setUp()
        path_unit = read_unit(UNIT_DIR / "edgepin-lb-config.path")
        self.assertEqual(unit_values(path_unit, "Path", "PathChanged"), ["/etc/edgepin"])
        self.assertEqual(unit_values(path_unit, "Path", "Unit"), ["edgepin-lb-config.service"])
        self.service = read_unit(UNIT_DIR / "edgepin-lb-config.service")
        self.lb_unit = read_unit(UNIT_DIR / "edgepin-lb.service")
        self.assertEqual(unit_values(self.service, "Service", "Type"), ["oneshot"])
        self.conf, self.ports = lb_conf(self.tmp)
        self.lb = self.spawn([lib.binary("EDGEPIN_LB"), "--config-dir", self.conf], "lb",
                             env=self.notify_env(watchdog=False))
        self.notify.wait_for("READY", "1")

    def argv(self, command):
        """A unit's command line for this test: the built binary and the
        test's configuration directory instead of the package paths."""
        argv = shlex.split(command.replace("$MAINPID", str(self.lb.pid)))
        out = []
        for a in argv:
            if a == "/usr/bin/edgepin-lb":
                a = lib.binary("EDGEPIN_LB")
            elif a == "/etc/edgepin":
                a = self.conf
            out.append(a)
        return out

    def run_push_service(self):
        """Runs the oneshot's commands in order as systemd does: the first
        that fails ends the run (its exit status is the unit's). Returns
        (exit status, combined stderr, commands run)."""
        commands = [("pre", c) for c in unit_values(self.service, "Service", "ExecStartPre")]
        commands += [("start", c) for c in unit_values(self.service, "Service", "ExecStart")]
        stderr = ""
        ran = []
        for _, command in commands:
            if command.startswith("+"):
                command = command[1:]
            if shlex.split(command) == ["/bin/systemctl", "try-reload-or-restart", "edgepin-lb.service"]:
                # What systemd does for it while the lb runs: the lb unit's
                # ExecReload lines, in order.
                reload = [self.argv(c) for c in unit_values(self.lb_unit, "Service", "ExecReload")]
                steps = reload
            else:
                steps = [self.argv(command)]
            for argv in steps:
                ran.append(argv)
                done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, timeout=30)
                stderr += done.stderr.decode()
                if done.returncode != 0:
                    return done.returncode, stderr, ran
        return 0, stderr, ran

    def test_a_changed_weight_is_applied(self):
        self.assertEqual(lb_weights(self.ports["stats"])["node2"], 100)
        path = os.path.join(self.conf, "cluster.json")
        cluster = lib.read_json(path)
        cluster["nodes"][1]["weight"] = 42
        lib.write_json(path, cluster)
        t0 = time.monotonic()
        rc, err, ran = self.run_push_service()
        self.assertEqual(rc, 0, err)
        self.assertIn(["/bin/kill", "-HUP", str(self.lb.pid)], ran)
        self.notify.wait_for("RELOADING", "1", after=t0)
        self.lb.wait_for_stderr("reload ok")
        self.assertEqual(lb_weights(self.ports["stats"])["node2"], 42)

    def test_a_broken_push_is_refused_and_logged(self):
        path = os.path.join(self.conf, "lb.json")
        lb = lib.read_json(path)
        lb["balance"]["algorithm"] = "fastest"
        lib.write_json(path, lb)
        t0 = time.monotonic()
        rc, err, ran = self.run_push_service()
        self.assertEqual(rc, 1, err)
        # The error names the file and the key (it goes to the journal of
        # edgepin-lb-config.service).
        self.assertRegex(err, r"lb\.json.*/balance/algorithm")
        # The lb was never asked to reload.
        self.assertFalse(any("kill" in a[0] for a in ran), ran)
        time.sleep(1.0)
        self.assertFalse([f for t, _, f in self.notify.snapshot() if t >= t0 and "RELOADING" in f])
        self.assertNotIn("reload", self.lb.stderr_text())
        self.assertTrue(accepts("127.0.0.1", self.ports["https"]))


# ---------------------------------------------------------- systemd-analyze

class TestUnitsVerify(unittest.TestCase):
    def test_systemd_analyze_verify_accepts_every_unit(self):
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze is not installed")
        binaries = {"/usr/bin/edgepin-lb": lib.binary("EDGEPIN_LB"),
                    "/usr/bin/edgepin-node-proxy": lib.binary("EDGEPIN_NODE_PROXY")}
        with tempfile.TemporaryDirectory(prefix="edgepin-units-") as tmp:
            targets = []
            for unit in sorted(os.listdir(UNIT_DIR)):
                if not unit.endswith((".service", ".path")):
                    continue
                text = (UNIT_DIR / unit).read_text()
                for packaged, built in binaries.items():
                    text = text.replace(packaged, built)
                target = os.path.join(tmp, unit.replace("@.", "@node1."))
                Path(target).write_text(text)
                targets.append(target)
            self.assertEqual(len(targets), 6, targets)
            result = subprocess.run([analyze, "verify", "--man=no"] + targets, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, timeout=60, cwd=tmp)
            # Unknown keys and bad values are warnings with exit 0: any
            # output fails.
            self.assertEqual((result.returncode, result.stdout), (0, ""))


if __name__ == "__main__":
    unittest.main()
