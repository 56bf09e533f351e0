"""Issue 15: several stateless edgepin-lbs behind keepalived (VRRP) or ECMP.

Real parts only: network namespaces joined by Linux bridges, Debian's
keepalived 2.2 with deploy/ha/keepalived.conf unchanged (the site values in
its include file), edgepin-lb, three edgepin-node-proxies and three real
Tomcat 10 instances. Addresses are from 198.18.0.0/15 and exist only in the
namespaces made here (tests/ha/netlab.py deletes them, and kills whatever
runs in them, even when a test fails).

    back net 198.18.3.0/24 (bridge "brback"):
      nodes ns: node-proxies on .21-.23, Tomcats on its own 127.0.0.11-13
      every lb ns has eth1 here

  VRRP (TestVrrpPair): front net 198.18.0.0/24 (bridge "brvrrp")
      vclient .100 ── vlb1 .2 (lb1, priority 150) ── VIP 198.18.0.10
                  └── vlb2 .3 (lb2, priority 100)
  ECMP (TestEcmp):
      eclient 198.18.1.100 ── router (.1 | 198.18.2.1, multipath route to
      198.18.0.20 via elb1-3 at 198.18.2.11-13, fib_multipath_hash_policy=1)
      each elbN holds 198.18.0.20/32 on its loopback

The test process itself runs in the nodes namespace (setns), so that
tests/e2e/tomcat.py starts and probes the Tomcats there unchanged. Clients
run tests/ha/ha_client.py in the client namespace and report every request
as a JSON line with CLOCK_MONOTONIC times, the clock this test reads.

Run through ctest (`ctest -R ha_network`), which sets EDGEPIN_LB and
EDGEPIN_NODE_PROXY. EDGEPIN_HA_KEEP=1 keeps the temporary directory (every
config and log) for a post-mortem.
"""

import json
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
import unittest
from contextlib import ExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))
sys.path.insert(0, str(REPO_ROOT / "tests" / "e2e"))

import edgepin_testlib as lib  # noqa: E402
from netlab import NetLab  # noqa: E402
from tomcat import TomcatInstance  # noqa: E402

HA_DIR = REPO_ROOT / "deploy" / "ha"
CONF_DIR = REPO_ROOT / "conf"
MAKE_PKI = REPO_ROOT / "deploy" / "make-pki.sh"
CLIENT = HERE / "ha_client.py"
PYTHON = "/usr/bin/python3"
KEEPALIVED = shutil.which("keepalived") or "/usr/sbin/keepalived"

NODE_NAMES = ("node1", "node2", "node3")
NODE_ADDRESSES = ("198.18.3.21", "198.18.3.22", "198.18.3.23")
TOMCAT_ADDRESSES = ("127.0.0.11", "127.0.0.12", "127.0.0.13")
BACK_NET = "198.18.3.0/24"
STATS_URL = "http://127.0.0.1:8888"

# Health checks (the lbs' of the nodes, each node's of its Tomcat and of its
# peers): nothing fails at the nodes in these tests, so the checks are slow
# and forgiving. A check that times out on a busy machine (the sanitizer
# build, other tests in parallel) would make a node look DOWN and move its
# users to a new session, which is not what is tested here.
CHECK = {"interval_ms": 1000, "timeout_ms": 900, "rise": 2, "fall": 3}

# keepalived.conf: advert_int 1; backup takes over after 3 missed adverts
# plus a skew of (256 - priority) / 256 s. The track script: interval 1,
# fall 2. Slack covers a busy 2-core machine.
ADVERT_INT = 1.0
SLACK = 1.5
VIP = "198.18.0.10"
ECMP_ADDRESS = "198.18.0.20"

START_TIMEOUT = 60.0


def master_down_interval(priority):
    return 3 * ADVERT_INT + (256 - priority) / 256.0


def wait_until(what, predicate, timeout, poll=0.05):
    """Returns the CLOCK_MONOTONIC time at which predicate() first held;
    raises AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError("not within %.1f s: %s" % (timeout, what))
        time.sleep(poll)


class Nodes:
    """The nodes namespace: three Tomcats and their node-proxies, and the
    configuration directory every lb copies (cluster.json, PKI)."""

    def __init__(self, lab, sw, workdir):
        self.lab = lab
        self.workdir = Path(workdir)
        self.conf = self.workdir / "conf"
        self.ns = lab.add("nodes")
        lab.wire(self.ns, "eth0", sw, "nodes", bridge="brback", cidr=NODE_ADDRESSES[0] + "/24")
        for a in NODE_ADDRESSES[1:]:
            lab.addr(self.ns, "eth0", a + "/24")
        self.tomcats = []
        self.procs = []

    def start(self):
        """Runs in the nodes namespace (the caller entered it)."""
        self.tomcats = [TomcatInstance(self.workdir, n, a) for n, a in zip(NODE_NAMES, TOMCAT_ADDRESSES)]
        # One after another: three JVMs starting at once on two cores take
        # longer in total than in turn, and a start that fails is clearer.
        for t in self.tomcats:
            t.create()
            t.start()
        self._write_config()
        for name, address in zip(NODE_NAMES, NODE_ADDRESSES):
            proc = lib.Proc([lib.binary("EDGEPIN_NODE_PROXY"), "--config-dir", self.conf, "--node", name],
                            "node-proxy-" + name, str(self.workdir))
            self.procs.append(proc)
            for port in (8443, 8081):
                lib.wait_for_port(address, port, timeout=START_TIMEOUT, proc=proc)
        # A node relays a request to the owner of its cookie only while it
        # sees that peer UP: wait until every node sees both others.
        for name, proc in zip(NODE_NAMES, self.procs):
            for other in NODE_NAMES:
                if other != name:
                    wait_until("%s sees peer %s UP\n%s" % (name, other, proc.describe()),
                               lambda: any(("peer %s at " % other) in line and " is UP" in line
                                           for line in proc.stderr_text().splitlines()),
                               START_TIMEOUT, poll=0.1)

    def stop(self):
        errors = []
        for p in self.procs:
            p.stop(timeout=5.0)
        for t in self.tomcats:
            try:
                t.stop()
            except Exception as e:  # keep stopping the others
                errors.append(str(e))
        return errors

    def _write_config(self):
        self.conf.mkdir(parents=True)
        cluster = lib.read_json(CONF_DIR / "cluster.json")
        cluster["cluster"]["name"] = "ha"
        template = cluster["nodes"][0]
        cluster["nodes"] = []
        for i, (name, address, t) in enumerate(zip(NODE_NAMES, NODE_ADDRESSES, self.tomcats)):
            entry = dict(template)
            entry.update({"name": name, "tag": i + 1, "address": address, "tls_port": 8443,
                          "http_port": 8081, "peer_port": 9443, "weight": 100,
                          "upstream": "%s:%d" % (t.address, t.port)})
            cluster["nodes"].append(entry)
        lib.write_json(self.conf / "cluster.json", cluster)
        np = lib.read_json(CONF_DIR / "node-proxy.json")
        np["threads"] = 1
        for listener in np["listeners"]:
            # PROXY v2 headers come from the lbs on the back net.
            listener["trusted_proxies"] = [BACK_NET]
        np["health"].update({"check_path": "/health.jsp", "check_interval_ms": 1000,
                             "check_timeout_ms": 900, "rise": 2, "fall": 3})
        np.setdefault("peer", {}).update({"check_interval_ms": 1000, "check_timeout_ms": 900,
                                          "rise": 2, "fall": 3})
        np.pop("admin_socket", None)
        lib.write_json(self.conf / "node-proxy.json", np)
        done = lib.subprocess.run([str(MAKE_PKI), str(self.conf)], stdin=lib.subprocess.DEVNULL,
                                  stdout=lib.subprocess.PIPE, stderr=lib.subprocess.STDOUT, timeout=120)
        if done.returncode != 0:
            raise RuntimeError("make-pki.sh failed:\n" + done.stdout.decode(errors="replace"))

    @property
    def ca_file(self):
        return str(self.conf / "pki" / "ca.crt")


class Lb:
    """edgepin-lb in namespace `ns`, frontends on `address` ports 443/80,
    stats on 127.0.0.1:8888 there, every connection in its access log."""

    def __init__(self, lab, ns, name, nodes, address, workdir):
        self.lab = lab
        self.ns = ns
        self.name = name
        self.conf = Path(workdir) / ("conf-" + name)
        self.conf.mkdir(parents=True)
        self.workdir = str(workdir)
        shutil.copy(nodes.conf / "cluster.json", self.conf / "cluster.json")
        lb = lib.read_json(CONF_DIR / "lb.json")
        lb["threads"] = 1
        lb["shutdown_grace_ms"] = 1000
        for fe in lb["frontends"]:
            fe["bind"] = ["%s:%d" % (address, 443 if fe["mode"] == "tls" else 80)]
        lb["health_check"].update(CHECK)
        lb["stats"] = {"bind": "127.0.0.1:8888"}
        lb["log"]["access_log"] = True
        lb.pop("admin_socket", None)
        lib.write_json(self.conf / "lb.json", lb)
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.proc = lib.Proc(self.lab.argv(self.ns, [lib.binary("EDGEPIN_LB"), "--config-dir", self.conf]),
                             "%s-%d" % (self.name, self.starts), self.workdir)
        wait_until("%s sees 3 nodes UP\n%s" % (self.name, self.proc.describe()),
                   lambda: self.nodes_up() == 3, START_TIMEOUT, poll=0.1)

    def metrics(self):
        return self.lab.run(self.ns, ["curl", "-sS", "--max-time", "2", "--noproxy", "*",
                                      STATS_URL + "/metrics"], check=False)

    def nodes_up(self):
        return sum(1 for line in self.metrics().splitlines()
                   if line.startswith("edgepin_lb_server_state{") and 'state="up"' in line
                   and line.endswith(" 1"))

    def stats(self):
        text = self.lab.run(self.ns, ["curl", "-sS", "--max-time", "2", "--noproxy", "*",
                                      STATS_URL + "/stats;json"])
        return json.loads(text)

    def client_ports(self):
        """(frontend, client source port) of every connection in this lb's
        access log (all its runs)."""
        ports = set()
        for i in range(1, self.starts + 1):
            path = Path(self.workdir) / ("%s-%d.stderr" % (self.name, i))
            for line in path.read_text(errors="replace").splitlines():
                fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
                if " conn " in line and "client" in fields and "frontend" in fields:
                    ports.add((fields["frontend"], int(fields["client"].rsplit(":", 1)[1])))
        return ports


class Keepalived:
    """keepalived (VRRP only) in `ns` with deploy/ha/keepalived.conf as
    shipped, config id `config_id` (lb1 or lb2)."""

    def __init__(self, lab, ns, config_id, workdir):
        self.lab = lab
        self.ns = ns
        self.config_id = config_id
        self.dir = Path(workdir) / ("keepalived-" + config_id)
        self.dir.mkdir(parents=True)
        # keepalived runs scripts as "nobody" and refuses scripts in or under
        # directories others may write to: a private, root-owned copy.
        os.chmod(self.dir, 0o755)
        for f in ("keepalived.conf", "edgepin-lb-check", "edgepin-vrrp-notify"):
            shutil.copy(HA_DIR / f, self.dir / f)
        self.notify_log = self.dir / "vrrp.log"
        self.notify_log.touch()
        os.chmod(self.notify_log, 0o666)
        site = ["$EDGEPIN_VRRP_INTERFACE=eth0", "$EDGEPIN_VRRP_ID=51",
                "$EDGEPIN_VIP=%s/24" % VIP, "$EDGEPIN_HA_SCRIPTS=%s" % self.dir,
                "$EDGEPIN_LB_METRICS=%s/metrics" % STATS_URL,
                "$EDGEPIN_NOTIFY_ARGS= --log-file %s" % self.notify_log]
        (self.dir / "edgepin-site.conf").write_text("\n".join(site) + "\n")
        self.proc = None

    def start(self):
        d = self.dir
        argv = ["setsid", KEEPALIVED, "--dont-fork", "--log-console", "--log-detail", "--vrrp",
                "--use-file", d / "keepalived.conf", "--config-id", self.config_id,
                "--pid", d / "keepalived.pid", "--vrrp_pid", d / "vrrp.pid",
                "--checkers_pid", d / "checkers.pid"]
        self.proc = lib.Proc(self.lab.argv(self.ns, argv), "keepalived-" + self.config_id, str(d))

    def notifications(self):
        return self.notify_log.read_text(errors="replace")

    def has_vip(self):
        return VIP in self.lab.addresses(self.ns, "eth0")


class Traffic:
    """ha_client.py in the client namespace; results() stops it and returns
    its records."""

    def __init__(self, lab, ns, workdir, ca_file, host, users, requests, interval, max_seconds, name):
        self.stop_file = Path(workdir) / (name + ".stop")
        argv = [PYTHON, CLIENT, "--host", host, "--ca", ca_file, "--users", users,
                "--requests", requests, "--interval", interval, "--stop-file", self.stop_file,
                "--max-seconds", max_seconds]
        self.proc = lib.Proc(lab.argv(ns, argv), name, str(workdir), env={"PYTHONDONTWRITEBYTECODE": "1"})
        self.max_seconds = max_seconds

    def records(self):
        out = []
        for line in self.proc.stdout_text().splitlines():
            if line.endswith("}"):
                out.append(json.loads(line))
        return out

    def successes(self, user):
        return sum(1 for r in self.records() if r["user"] == user and r["ok"])

    def results(self):
        self.stop_file.touch()
        try:
            self.proc.popen.wait(timeout=15)
        except lib.subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("client did not stop\n" + self.proc.describe())
        return self.records()


def frontend_of(record):
    """The lb frontend a client record went to (lb.json's names)."""
    return "http" if record["kind"] == "http" else "https"


def by_user(records):
    users = {}
    for r in records:
        users.setdefault(r["user"], []).append(r)
    for rs in users.values():
        rs.sort(key=lambda r: r["seq"])
    return users


# ------------------------------------------------------------------ module

_lab = None
_nodes = None
_sw = None
_exit = ExitStack()
_tmp = None


def setUpModule():
    global _lab, _nodes, _sw, _tmp
    if os.geteuid() != 0:
        raise RuntimeError("the HA tests need root (network namespaces)")
    _tmp = tempfile.mkdtemp(prefix="edgepin-ha-")
    os.chmod(_tmp, 0o755)
    _lab = NetLab("net")
    try:
        _sw = _lab.add("sw")
        _lab.bridge(_sw, "brback")
        _nodes = Nodes(_lab, _sw, _tmp)
        # From here on this thread lives in the nodes namespace.
        _exit.enter_context(_lab.entered(_nodes.ns))
        _nodes.start()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    errors = []
    if _nodes is not None:
        errors = _nodes.stop()
    _exit.close()
    if _lab is not None:
        _lab.close()
    if _tmp and os.environ.get("EDGEPIN_HA_KEEP") != "1":
        shutil.rmtree(_tmp, ignore_errors=True)
    elif _tmp:
        print("kept %s" % _tmp, file=sys.stderr)
    if errors:
        raise RuntimeError("; ".join(errors))


class HaCase(unittest.TestCase):
    def dump(self, procs):
        return "\n".join(p.describe(25) for p in procs if p is not None)


# -------------------------------------------------------------------- VRRP

class TestVrrpPair(HaCase):
    """Two lbs behind one VIP: the lb process killed, then a host cut off
    the network; each time the VIP moves and every user keeps its Tomcat
    and its session."""

    KINDS = "resume13:1,resume12:1,cookie:1,http:1"
    INTERVAL = 0.2
    # After the VIP moved, the client's ARP entry follows the new master's
    # gratuitous ARP; a request begun before that reached the old MAC.
    ARP_SETTLE = 0.5

    def setUp(self):
        lab = _lab
        self.procs = []
        sw = _sw
        lab.bridge(sw, "brvrrp")
        self.client_ns = lab.add("vclient")
        lab.wire(self.client_ns, "eth0", sw, "vc", bridge="brvrrp", cidr="198.18.0.100/24")
        self.lbs = []
        self.kas = []
        for i, prio_id in ((1, "lb1"), (2, "lb2")):
            ns = lab.add("v" + prio_id)
            lab.wire(ns, "eth0", sw, "v%df" % i, bridge="brvrrp", cidr="198.18.0.%d/24" % (1 + i))
            lab.wire(ns, "eth1", sw, "v%db" % i, bridge="brback", cidr="198.18.3.%d/24" % (1 + i))
            # deploy/ha/99-edgepin-nonlocal-bind.conf: the backup binds the VIP.
            lab.sysctl(ns, "net.ipv4.ip_nonlocal_bind", 1)
            lb = Lb(lab, ns, prio_id, _nodes, VIP, _tmp)
            self.lbs.append(lb)
            self.kas.append(Keepalived(lab, ns, prio_id, _tmp))

    def tearDown(self):
        for lb in self.lbs:
            if lb.proc:
                lb.proc.stop(timeout=3)
        for ka in self.kas:
            if ka.proc:
                ka.proc.stop(timeout=3)
        for ns in [self.client_ns] + [lb.ns for lb in self.lbs]:
            _lab.names.remove(ns)
            netlab_kill(ns)
        _lab.link(_sw, "del", "brvrrp")

    def failure(self, msg, traffic=None):
        procs = [lb.proc for lb in self.lbs] + [ka.proc for ka in self.kas]
        notes = "\n".join("%s notify log:\n%s" % (ka.config_id, ka.notifications()) for ka in self.kas)
        return "%s\n%s\n%s" % (msg, notes, self.dump(procs + ([traffic.proc] if traffic else [])))

    def test_vip_moves_and_every_user_keeps_its_tomcat_and_session(self):
        lb1, lb2 = self.lbs
        ka1, ka2 = self.kas
        for lb in self.lbs:
            lb.start()
        for ka in self.kas:
            ka.start()
        try:
            wait_until("lb1 (priority 150) holds the VIP", ka1.has_vip, 20)
            wait_until("lb2 is BACKUP", lambda: "now BACKUP" in ka2.notifications(), 20)
            # The notify hook logs each transition (it runs after keepalived
            # set the VIP).
            wait_until("lb1's notify hook logs MASTER",
                       lambda: "vrrp INSTANCE edgepin_vip: now MASTER (priority 150)" in ka1.notifications(), 5)
        except AssertionError as e:
            self.fail(self.failure(str(e)))
        self.assertFalse(ka2.has_vip())

        traffic = Traffic(_lab, self.client_ns, _tmp, _nodes.ca_file, VIP, self.KINDS, 100000,
                          self.INTERVAL, 150, "vrrp-client")
        users = [k.split(":")[0] + "-0" for k in self.KINDS.split(",")]
        wait_until("every user has 3 answers", lambda: all(traffic.successes(u) >= 3 for u in users), 30)

        # 1. The lb process on the master dies: the track script fails
        #    (2 x 1 s), lb1 goes FAULT and drops the VIP, lb2 takes it.
        t_kill = time.monotonic()
        lb1.proc.kill()
        try:
            t_move1 = wait_until("VIP on lb2 after the kill",
                                 lambda: ka2.has_vip() and not ka1.has_vip(), 10)
        except AssertionError as e:
            self.fail(self.failure(str(e), traffic))
        move1 = t_move1 - t_kill
        self.assertLess(move1, 2 * 1.0 + 1.0 + SLACK + 1.0,
                        "the track script (interval 1, fall 2) should notice within about 3 s")
        wait_until("lb1's notify hook logs FAULT", lambda: "now FAULT" in ka1.notifications(), 5)
        time.sleep(3)

        # 2. lb1's edgepin-lb is back: lb1 leaves FAULT for BACKUP and, with
        #    nopreempt, leaves the VIP where it is.
        lb1.start()
        wait_until("lb1 BACKUP again", lambda: ka1.notifications().count("now BACKUP") >= 2, 15)
        t_back = time.monotonic()
        while time.monotonic() < t_back + 4:
            self.assertTrue(ka2.has_vip() and not ka1.has_vip(), self.failure("nopreempt: VIP moved back"))
            time.sleep(0.2)

        # 3. lb2, now the master, is cut off both networks (its host is
        #    gone for everyone else; it still thinks it is MASTER): lb1 takes
        #    over after 3 missed adverts.
        t_cut = time.monotonic()
        _lab.link(_sw, "set", "v2f", "nomaster")
        _lab.link(_sw, "set", "v2b", "nomaster")
        try:
            t_move2 = wait_until("VIP on lb1 after the cut", ka1.has_vip, 10)
        except AssertionError as e:
            self.fail(self.failure(str(e), traffic))
        move2 = t_move2 - t_cut
        self.assertLess(move2, master_down_interval(150) + SLACK,
                        "lb1 should take over after 3 missed advertisements")
        time.sleep(3)

        # 4. lb2 comes back: it sees lb1's higher priority and steps down.
        _lab.link(_sw, "set", "v2f", "master", "brvrrp")
        _lab.link(_sw, "set", "v2b", "master", "brback")
        t_rejoin = time.monotonic()
        wait_until("lb2 drops the VIP after rejoining", lambda: not ka2.has_vip(), 10)
        self.assertTrue(ka1.has_vip())
        time.sleep(3)
        t_end = time.monotonic()
        records = traffic.results()

        windows = [(t_kill, t_move1 + self.ARP_SETTLE), (t_cut, t_move2 + self.ARP_SETTLE)]
        report = ["VIP moved %.2f s after the kill, %.2f s after the cut" % (move1, move2)]
        for user, rs in sorted(by_user(records).items()):
            ok = [r for r in rs if r["ok"]]
            failed = [r for r in rs if not r["ok"]]
            report.append("%s: %d requests, %d failed, node %s, counter %s..%s, resumed %d" % (
                user, len(rs), len(failed), sorted({r["node"] for r in ok}),
                ok[0]["counter"] if ok else "-", ok[-1]["counter"] if ok else "-",
                sum(1 for r in rs if r["resumed"])))
            # Requests after each move and between the events all succeed;
            # only those in flight at the kill or cut, or begun during the
            # outage, may fail.
            for r in failed:
                self.assertTrue(any(r["start"] <= b and r["end"] >= a for a, b in windows),
                                self.failure("%s: request #%d failed outside the failover windows "
                                             "(%s): %s" % (user, r["seq"], windows, r), traffic))
            # Traffic kept flowing after each move and after lb2 rejoined.
            for a, b in ((t_move1 + self.ARP_SETTLE, t_cut), (t_move2 + self.ARP_SETTLE, t_rejoin),
                         (t_rejoin, t_end)):
                self.assertGreaterEqual(sum(1 for r in ok if a <= r["start"] <= b), 3,
                                        "%s: too few answers in %.1f..%.1f" % (user, a, b))
            self.assertEqual(len({r["node"] for r in ok}), 1, "%s: more than one Tomcat: %s" % (user, ok))
            self.assertEqual(len({r["session"] for r in ok}), 1, "%s: more than one session" % user)
            # The session counter continues: it only skips what a failed
            # request may have counted before its connection broke.
            for prev, nxt in zip(ok, ok[1:]):
                lost = sum(1 for r in failed if prev["seq"] < r["seq"] < nxt["seq"])
                self.assertTrue(prev["counter"] < nxt["counter"] <= prev["counter"] + 1 + lost,
                                "%s: counter %d then %d with %d failures between" % (
                                    user, prev["counter"], nxt["counter"], lost))
            self.assertEqual(ok[0]["counter"], 1, user)
            if user.startswith("resume"):
                # Every TLS connection after the first resumed: the lbs
                # routed by the node tag in the session, not by memory.
                self.assertEqual(sum(1 for r in ok[1:] if not r["resumed"]), 0,
                                 "%s: a connection did not resume" % user)
        # Both lbs carried the users' traffic.
        for lb in self.lbs:
            self.assertGreater(len(lb.client_ports()), 0, lb.name)
        print("\n".join(report), file=sys.stderr)


def netlab_kill(ns):
    from netlab import kill_namespace
    kill_namespace(ns)


# -------------------------------------------------------------------- ECMP

class TestEcmp(HaCase):
    """A router spreads connections over three lbs with a multipath route
    and the L4 hash; every user stays on one Tomcat in one session although
    its connections reach different lbs."""

    KINDS = ("resume13", "resume12", "cookie", "http")
    USERS_PER_KIND = 5
    REQUESTS = 10

    def setUp(self):
        lab = _lab
        sw = _sw
        lab.bridge(sw, "brecmp")
        self.client_ns = lab.add("eclient")
        self.router = lab.add("router")
        lab.wire(self.client_ns, "eth0", self.router, "eth0", cidr="198.18.1.100/24")
        lab.addr(self.router, "eth0", "198.18.1.1/24")
        lab.route(self.client_ns, "default", "via", "198.18.1.1")
        lab.wire(self.router, "eth1", sw, "rt", bridge="brecmp", cidr="198.18.2.1/24")
        lab.sysctl(self.router, "net.ipv4.ip_forward", 1)
        lab.sysctl(self.router, "net.ipv4.fib_multipath_hash_policy", 1)
        self.lbs = []
        hops = []
        for i in (1, 2, 3):
            ns = lab.add("elb%d" % i)
            lab.wire(ns, "eth0", sw, "e%df" % i, bridge="brecmp", cidr="198.18.2.%d/24" % (10 + i))
            lab.wire(ns, "eth1", sw, "e%db" % i, bridge="brback", cidr="198.18.3.%d/24" % (10 + i))
            lab.addr(ns, "lo", ECMP_ADDRESS + "/32")
            lab.route(ns, "default", "via", "198.18.2.1")
            hops += ["nexthop", "via", "198.18.2.%d" % (10 + i), "weight", "1"]
            self.lbs.append(Lb(lab, ns, "elb%d" % i, _nodes, ECMP_ADDRESS, _tmp))
        lab.route(self.router, ECMP_ADDRESS + "/32", *hops)

    def tearDown(self):
        for lb in self.lbs:
            if lb.proc:
                lb.proc.stop(timeout=3)
        for ns in [self.client_ns, self.router] + [lb.ns for lb in self.lbs]:
            _lab.names.remove(ns)
            netlab_kill(ns)
        _lab.link(_sw, "del", "brecmp")

    def test_connections_spread_over_all_lbs_and_users_stay_put(self):
        for lb in self.lbs:
            lb.start()
        users = ",".join("%s:%d" % (k, self.USERS_PER_KIND) for k in self.KINDS)
        traffic = Traffic(_lab, self.client_ns, _tmp, _nodes.ca_file, ECMP_ADDRESS, users,
                          self.REQUESTS, 0, 120, "ecmp-client")
        try:
            traffic.proc.popen.wait(timeout=130)
        except lib.subprocess.TimeoutExpired:
            traffic.proc.kill()
            self.fail("client did not finish\n" + traffic.proc.describe())
        records = traffic.records()
        total = len(self.KINDS) * self.USERS_PER_KIND * self.REQUESTS
        self.assertEqual(len(records), total, traffic.proc.describe())
        failed = [r for r in records if not r["ok"]]
        self.assertEqual(failed, [], self.dump([lb.proc for lb in self.lbs]))
        ports = {(frontend_of(r), r["lport"]) for r in records}
        self.assertGreaterEqual(len(ports), total * 3 // 4, "too few distinct source ports")

        # Each lb's own stats show a share of the connections, and the
        # shares add up to every connection the clients made.
        counts = {}
        for lb in self.lbs:
            counts[lb.name] = lb.stats()["totals"]["connections_total"]
        self.assertEqual(sum(counts.values()), total, counts)
        for name, n in counts.items():
            self.assertGreaterEqual(n, total // 10, "%s got too few connections: %s" % (name, counts))

        # Which lb carried each connection, from the lbs' access logs.
        lb_of_port = {}
        for lb in self.lbs:
            for p in lb.client_ports():
                lb_of_port[p] = lb.name
        crossed = 0
        report = ["connections per lb: %s" % counts]
        for user, rs in sorted(by_user(records).items()):
            nodes = {r["node"] for r in rs}
            sessions = {r["session"] for r in rs}
            lbs = {lb_of_port.get((frontend_of(r), r["lport"])) for r in rs}
            crossed += len(lbs) > 1
            report.append("%s: nodes %s, counters %s, lbs %s" % (
                user, sorted(nodes), [r["counter"] for r in rs], sorted(map(str, lbs))))
            self.assertEqual(len(nodes), 1, "%s: %s" % (user, rs))
            self.assertEqual(len(sessions), 1, user)
            self.assertEqual([r["counter"] for r in rs], list(range(1, self.REQUESTS + 1)), user)
            if user.startswith("resume"):
                self.assertTrue(all(r["resumed"] for r in rs[1:]), "%s did not resume" % user)
        # 10 connections hashed over 3 paths all land on one lb with
        # probability 3^-9: nearly every user must have crossed lbs.
        self.assertGreaterEqual(crossed, 18, "\n".join(report))
        print("\n".join(report), file=sys.stderr)


if __name__ == "__main__":
    unittest.main()
