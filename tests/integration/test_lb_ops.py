"""edgepin-lb's operator interfaces: the stats listener (HTML, JSON,
Prometheus /metrics) and the admin socket, against the real binary in front
of edgepin-test-backend instances on loopback.

The numbers the lb reports are checked against what the test did and
against the lb's own per-connection log lines; /metrics is read with a
strict parser of the Prometheus text format (0.0.4) written here. Run
through ctest (it sets EDGEPIN_LB and EDGEPIN_TEST_BACKEND).
"""

import http.client
import json
import os
import re
import socket
import stat
import time
import unittest

import edgepin_testlib as t
import test_lb as lbt


# --------------------------------------------------------- Prometheus text

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_LABEL = _LABEL_NAME + "=" + _LABEL_VALUE
_VALUE = r"(?:[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|NaN|\+Inf|-Inf)"
_SAMPLE = re.compile(r"^(" + _NAME + r")(\{" + _LABEL + r"(?:," + _LABEL + r")*\})? (" + _VALUE + r")$")
_HELP = re.compile(r"^# HELP (" + _NAME + r") (.*)$")
_TYPE = re.compile(r"^# TYPE (" + _NAME + r") (counter|gauge)$")
_ONE_LABEL = re.compile("(" + _LABEL_NAME + ")=(" + _LABEL_VALUE + ")")


def _unescape(quoted):
    out, i, body = [], 0, quoted[1:-1]
    while i < len(body):
        if body[i] == "\\":
            out.append({"\\": "\\", '"': '"', "n": "\n"}[body[i + 1]])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def parse_prometheus(text):
    """Parses a text exposition strictly: every line is a HELP, a TYPE or a
    sample `name{labels} value`; each family has exactly one HELP and one
    TYPE, both before its samples, and its samples are contiguous; counters
    are named *_total; no sample repeats a label set. Returns {family name:
    {"type", "help", "samples": {frozenset of (label, value): float}}}.
    Raises AssertionError naming the line that breaks a rule."""
    assert text.endswith("\n"), "exposition does not end with a newline"
    families = {}
    current = None    # family whose samples may follow
    closed = set()    # families whose block has ended
    for number, line in enumerate(text[:-1].split("\n"), start=1):
        where = "line %d %r" % (number, line)
        m = _HELP.match(line)
        if m:
            name = m.group(1)
            assert name not in families and name not in closed, "second HELP for %s: %s" % (name, where)
            if current:
                closed.add(current)
            families[name] = {"help": m.group(2), "type": None, "samples": {}}
            current = name
            continue
        m = _TYPE.match(line)
        if m:
            name = m.group(1)
            assert name == current, "TYPE without its HELP just before: " + where
            fam = families[name]
            assert fam["type"] is None and not fam["samples"], "TYPE repeated or after samples: " + where
            fam["type"] = m.group(2)
            if fam["type"] == "counter":
                assert name.endswith("_total"), "counter not named *_total: " + where
            continue
        assert not line.startswith("#"), "unexpected comment: " + where
        m = _SAMPLE.match(line)
        assert m, "not a sample line: " + where
        name = m.group(1)
        assert name == current and families[name]["type"], \
            "sample outside its family's block (HELP and TYPE first): " + where
        labels = []
        if m.group(2):
            labels = [(k, _unescape(v)) for k, v in _ONE_LABEL.findall(m.group(2))]
        keys = [k for k, _ in labels]
        assert len(keys) == len(set(keys)), "label repeated: " + where
        key = frozenset(labels)
        assert key not in families[name]["samples"], "duplicate sample: " + where
        families[name]["samples"][key] = float(m.group(3))
    for name, fam in families.items():
        assert fam["type"], "family %s has no TYPE" % name
        assert fam["samples"], "family %s has no samples" % name
    return families


def sample(families, name, **labels):
    """The value of one sample, by family name and exact label set."""
    return families[name]["samples"][frozenset(labels.items())]


# -------------------------------------------------------------------- HTTP

def http_get(port, path, method="GET", headers=None, timeout=10):
    """(status, headers dict with lower-case names, body bytes)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def raw_http(port, data, timeout=10):
    """Sends raw bytes to the stats port; returns everything until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


class OpsTestCase(lbt.LbTestCase):
    """LbTestCase with the stats listener and the admin socket on."""

    def ops_config(self, mode="tls", threads=2, admin_mode="0600", second_frontend=False, **kwargs):
        self.stats_port = t.free_port()
        self.admin_path = os.path.join(self.tmp, "lb.sock")
        overrides = dict(kwargs.pop("lb_overrides", {}))
        overrides["stats"] = {"bind": "127.0.0.1:%d" % self.stats_port}
        overrides["admin_socket"] = {"path": self.admin_path, "mode": admin_mode}
        conf = self.write_config(mode=mode, threads=threads, lb_overrides=overrides, **kwargs)
        if second_frontend:
            self.lb_port2 = t.free_port()
            path = os.path.join(conf, "lb.json")
            lb = t.read_json(path)
            lb["frontends"].append({"name": "fe2", "mode": "tcp", "bind": ["127.0.0.1:%d" % self.lb_port2],
                                    "server_port": "tls", "proxy_protocol": "v2"})
            t.write_json(path, lb)
        return conf

    def start_ops_lb(self, conf, name="lb"):
        proc = self.start_lb(conf, name=name)
        t.wait_for_port("127.0.0.1", self.stats_port, timeout=15, proc=proc)
        # Accepting, not just present: a crashed lb leaves its socket file
        # behind until the new one replaces it.
        lbt.wait_for(lambda: t.admin_accepts(self.admin_path), 10, "the admin socket to accept")
        return proc

    def stats_json(self, path="/stats;json", headers=None):
        status, hdrs, body = http_get(self.stats_port, path, headers=headers)
        self.assertEqual(status, 200, body)
        self.assertEqual(hdrs["content-type"], "application/json")
        return json.loads(body)

    def who_on(self, port, **kwargs):
        return t.tls_who("127.0.0.1", port, **kwargs)


# -------------------------------------------------------------------- stats

class StatsListener(OpsTestCase):
    def test_html_json_and_metrics_match_the_traffic(self):
        self.add_backends(3)
        lb = self.start_ops_lb(self.ops_config(second_frontend=True))
        t.wait_for_port("127.0.0.1", self.lb_port2, timeout=10, proc=lb)
        # Every server checked once (the first checks are spread over an interval).
        lbt.wait_for(lambda: all(s["check"]["outcome"] == "ok" for s in self.stats_json()["servers"]), 5,
                     "a passed health check of every server")
        for _ in range(9):
            self.lb_who()
        for _ in range(3):
            self.who_on(self.lb_port2)
        # A tcp frontend routes at once, so wait_for_port's probe of fe2 was
        # balanced to a server too: 13 routed connections, plus fe's probe.
        lbt.lines_when(lb, 13)
        everything = lbt.conn_lines(lb, routed_only=False)
        logs = [l for l in everything if l["route"] != "-"]

        # HTML: a page with every frontend and every server in it.
        status, hdrs, body = http_get(self.stats_port, "/stats")
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["content-type"], "text/html; charset=utf-8")
        self.assertEqual(hdrs["connection"], "close")
        html = body.decode()
        self.assertIn('<meta http-equiv="refresh"', html)
        for name in ("fe", "fe2", "node1", "node2", "node3"):
            self.assertIn("<td>%s</td>" % name, html)
        self.assertIn(">UP</td>", html)
        self.assertEqual(http_get(self.stats_port, "/")[2].decode().count("<table>"), html.count("<table>"))

        # JSON: the same numbers, three ways of asking.
        j = self.stats_json()
        for other in (self.stats_json("/stats?json"),
                      self.stats_json("/stats", headers={"Accept": "application/json"}),
                      self.stats_json("/", headers={"Accept": "text/html;q=0.5, application/json"})):
            self.assertEqual(set(other), set(j))
            self.assertEqual(other["totals"]["connections_total"], j["totals"]["connections_total"])
        fe = {f["name"]: f for f in j["frontends"]}
        self.assertEqual(set(fe), {"fe", "fe2"})
        self.assertEqual(fe["fe"]["mode"], "tls")
        self.assertEqual(fe["fe2"]["mode"], "tcp")
        self.assertEqual(fe["fe"]["binds"], ["127.0.0.1:%d" % self.lb_port])
        per_fe = {"fe": [l for l in everything if l["frontend"] == "fe"],
                  "fe2": [l for l in everything if l["frontend"] == "fe2"]}
        for name, lines in per_fe.items():
            f = fe[name]
            self.assertEqual(f["current_connections"], 0, f)
            # Every accepted connection ended with a log line: probes too.
            self.assertEqual(f["connections_total"], len(lines), f)
            self.assertEqual(f["ends"]["closed"], sum(1 for l in lines if l["end"] == "closed"), f)
            self.assertEqual(sum(f["ends"].values()), f["connections_total"], f)
            self.assertEqual(f["bytes_in"], sum(int(l["bytes_in"]) for l in lines), f)
            self.assertEqual(f["bytes_out"], sum(int(l["bytes_out"]) for l in lines), f)
        self.assertEqual(fe["fe"]["routes"]["balance"], 9)
        self.assertEqual(fe["fe"]["routes"]["none"], len(per_fe["fe"]) - 9)  # the probe
        self.assertEqual(fe["fe2"]["routes"]["balance"], len(per_fe["fe2"]))
        self.assertEqual(j["totals"]["connections_total"], len(everything))
        self.assertEqual(j["totals"]["routes"]["balance"], len(logs))
        servers = {s["name"]: s for s in j["servers"]}
        self.assertEqual(set(servers), {"node1", "node2", "node3"})
        for name, s in servers.items():
            mine = [l for l in logs if l["server"] == name]
            self.assertGreaterEqual(len(mine), 4)  # round robin over 13
            self.assertEqual(s["connections_total"], len(mine), s)
            self.assertEqual(s["bytes_in"], sum(int(l["bytes_in"]) for l in mine), s)
            self.assertEqual(s["bytes_out"], sum(int(l["bytes_out"]) for l in mine), s)
            self.assertGreater(s["bytes_out"], 0)
            self.assertEqual((s["state"], s["healthy"], s["admin"]), ("UP", True, "ready"))
            self.assertEqual(s["current_connections"], 0)
            self.assertEqual(s["check"]["outcome"], "ok")
        self.assertEqual(j["info"]["threads"], 2)
        self.assertEqual(j["info"]["pid"], lb.pid)
        self.assertTrue(j["stick_table"]["enabled"])
        self.assertEqual(j["stick_table"]["capacity"], 100000)

        # Prometheus: strictly parsed, and the same numbers again.
        status, hdrs, body = http_get(self.stats_port, "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(hdrs["content-type"], "text/plain; version=0.0.4; charset=utf-8")
        m = parse_prometheus(body.decode())
        for name in m:
            self.assertTrue(name.startswith("edgepin_lb_"), name)
        for name in ("fe", "fe2"):
            self.assertEqual(sample(m, "edgepin_lb_frontend_connections_total", frontend=name),
                             fe[name]["connections_total"])
            self.assertEqual(sample(m, "edgepin_lb_frontend_bytes_out_total", frontend=name),
                             fe[name]["bytes_out"])
            self.assertEqual(sample(m, "edgepin_lb_frontend_current_connections", frontend=name), 0)
        self.assertEqual(sample(m, "edgepin_lb_frontend_routes_total", frontend="fe", reason="balance"), 9)
        self.assertEqual(sample(m, "edgepin_lb_frontend_session_ends_total", frontend="fe", reason="closed"),
                         fe["fe"]["ends"]["closed"])
        for name, s in servers.items():
            self.assertEqual(sample(m, "edgepin_lb_server_connections_total", server=name), s["connections_total"])
            self.assertEqual(sample(m, "edgepin_lb_server_bytes_in_total", server=name), s["bytes_in"])
            self.assertEqual(sample(m, "edgepin_lb_server_state", server=name, state="up"), 1)
            self.assertEqual(sample(m, "edgepin_lb_server_state", server=name, state="down"), 0)
            self.assertEqual(sample(m, "edgepin_lb_server_check_outcome", server=name, outcome="ok"), 1)
        self.assertEqual(m["edgepin_lb_server_connections_total"]["type"], "counter")
        self.assertEqual(m["edgepin_lb_server_current_connections"]["type"], "gauge")
        self.assertEqual(sample(m, "edgepin_lb_threads"), 2)
        self.assertEqual(sample(m, "edgepin_lb_stick_table_capacity"), 100000)

    def test_requests_outside_the_pages_are_refused_cleanly(self):
        self.add_backends(1)
        self.start_ops_lb(self.ops_config())
        self.assertEqual(http_get(self.stats_port, "/nope")[0], 404)
        self.assertEqual(http_get(self.stats_port, "/stats/extra")[0], 404)
        status, hdrs, _ = http_get(self.stats_port, "/stats", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(hdrs["allow"], "GET, HEAD")
        # HEAD: the headers of a GET, no body.
        status, hdrs, body = http_get(self.stats_port, "/metrics", method="HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertGreater(int(hdrs["content-length"]), 0)
        # Malformed and oversized heads get the parser's status, then a close.
        self.assertTrue(raw_http(self.stats_port, b"GET / HTTP/1.1\nHost: x\n\n").startswith(b"HTTP/1.1 400 "))
        big = b"GET /stats HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 10000 + b"\r\n\r\n"
        self.assertTrue(raw_http(self.stats_port, big).startswith(b"HTTP/1.1 431 "))
        # Nothing above disturbed the listener.
        self.assertEqual(http_get(self.stats_port, "/stats;json")[0], 200)


# -------------------------------------------------------------------- admin

class AdminSocket(OpsTestCase):
    def test_socket_mode_is_applied_and_the_file_removed_on_stop(self):
        self.add_backends(1)
        lb = self.start_ops_lb(self.ops_config(admin_mode="0640"))
        st = os.stat(self.admin_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o640)
        lb.stop()
        self.assertEqual(lb.returncode, 0)
        self.assertFalse(os.path.exists(self.admin_path))

    def test_a_stale_socket_is_replaced_and_a_live_one_is_not_stolen(self):
        self.add_backends(1)
        conf = self.ops_config()
        lb = self.start_ops_lb(conf)
        lb.kill()  # a crash leaves the socket file behind
        self._procs = [(p, c) for p, c in self._procs if p is not lb]
        self.assertTrue(os.path.exists(self.admin_path))
        lb = self.start_ops_lb(conf, name="lb-after-crash")
        self.assertIn("Name: edgepin-lb", t.admin_command(self.admin_path, "show info"))
        # A second lb with the same admin socket path (other ports) refuses to start.
        with open(os.path.join(conf, "lb.json")) as f:
            other = json.load(f)
        other["frontends"][0]["bind"] = ["127.0.0.1:%d" % t.free_port()]
        other["stats"]["bind"] = "127.0.0.1:%d" % t.free_port()
        conf2 = os.path.join(self.tmp, "conf2")
        os.makedirs(conf2)
        with open(os.path.join(conf2, "lb.json"), "w") as f:
            json.dump(other, f)
        with open(os.path.join(conf, "cluster.json")) as src, open(os.path.join(conf2, "cluster.json"), "w") as dst:
            dst.write(src.read())
        second = self.spawn([t.binary("EDGEPIN_LB"), "--config-dir", conf2], "lb-second", expect_clean_exit=False)
        second.popen.wait(timeout=15)
        self.assertNotEqual(second.returncode, 0)
        self.assertIn("admin socket %s: another process is listening there" % self.admin_path, second.stderr_text())
        self.assertIn("Name: edgepin-lb", t.admin_command(self.admin_path, "show info"))

    def test_show_info(self):
        self.add_backends(2)
        lb = self.start_ops_lb(self.ops_config(threads=2))
        for _ in range(4):
            self.lb_who()
        lbt.lines_when(lb, 4)
        info = t.info_fields(t.admin_command(self.admin_path, "show info"))
        self.assertEqual(info["Name"], "edgepin-lb")
        self.assertRegex(info["Version"], r"^\d+\.\d+\.\d+$")
        self.assertEqual(int(info["Pid"]), lb.pid)
        self.assertEqual(int(info["Threads"]), 2)
        self.assertEqual(int(info["CurrConns"]), 0)
        self.assertEqual(int(info["CumConns"]), len(lbt.conn_lines(lb, routed_only=False)))
        self.assertGreaterEqual(int(info["Uptime_sec"]), 0)
        self.assertEqual(int(info["Servers"]), 2)
        j = json.loads(t.admin_command(self.admin_path, "show info json"))
        self.assertEqual((j["name"], j["pid"], j["threads"]), ("edgepin-lb", lb.pid, 2))
        self.assertEqual(j["connections_total"], int(info["CumConns"]))

    def test_show_stat_text_and_json(self):
        self.add_backends(3)
        lb = self.start_ops_lb(self.ops_config())
        names = [self.lb_who()[0]["name"] for _ in range(6)]
        lbt.lines_when(lb, 6)
        text = t.admin_command(self.admin_path, "show stat")
        self.assertNotIn("\n\n", text)
        sections = [l for l in text.splitlines() if l.startswith("# ")]
        self.assertEqual(sections, ["# frontends", "# frontend ends", "# servers", "# stick table"])
        rows = {}
        header = None
        for line in text.splitlines():
            if line == "# servers":
                header = "want"
                continue
            if line.startswith("#"):
                header = None
                continue
            if header == "want":
                header = line.split()
                continue
            if header:
                rows[line.split()[0]] = dict(zip(header, line.split()))
        self.assertEqual(set(rows), {"node1", "node2", "node3"})
        for name, row in rows.items():
            self.assertEqual(int(row["total"]), names.count(name))
            self.assertEqual(row["state"], "UP")
        j = json.loads(t.admin_command(self.admin_path, "show stat json"))
        self.assertEqual(sorted(s["name"] for s in j["servers"]), ["node1", "node2", "node3"])
        self.assertEqual(j["frontends"][0]["routes"]["balance"], 6)

    def test_drain_keeps_bound_clients_maint_takes_everything_ready_restores(self):
        self.add_backends(3)
        lb = self.start_ops_lb(self.ops_config(threads=1))
        # A TLS 1.3 session whose tickets carry node1's tag.
        sess = None
        for _ in range(3):
            reply, s = self.lb_who(tls_max="1.3")
            if reply["name"] == "node1":
                sess = s
        self.assertIsNotNone(sess)

        self.assertEqual(t.admin_command(self.admin_path, "set server node1 state drain"),
                         "server node1: state drain (was ready)\n")
        lb.wait_for_stderr("server node1 set to drain (was ready) by the admin socket")
        self.assertEqual({s["name"]: s["state"] for s in self.stats_json()["servers"]}["node1"], "DRAIN")
        new = [self.lb_who()[0]["name"] for _ in range(9)]
        self.assertNotIn("node1", new)
        self.assertEqual(set(new), {"node2", "node3"})
        # The resumed client of node1 still reaches it, by its tag.
        for _ in range(3):
            reply, _ = self.lb_who(tls_max="1.3", session=sess)
            self.assertEqual((reply["name"], reply["resumed"]), ("node1", "1"))
        self.assertEqual([l["route"] for l in lbt.lines_when(lb, 15)[-3:]], ["tag"] * 3)

        self.assertEqual(t.admin_command(self.admin_path, "set server node1 state maint"),
                         "server node1: state maint (was drain)\n")
        self.assertEqual({s["name"]: s["state"] for s in self.stats_json()["servers"]}["node1"], "MAINT")
        reply, _ = self.lb_who(tls_max="1.3", session=sess)
        self.assertNotEqual(reply["name"], "node1")
        self.assertNotIn("node1", [self.lb_who()[0]["name"] for _ in range(6)])
        last = lbt.lines_when(lb, 22)
        self.assertTrue(all(l["server"] != "node1" for l in last[-7:]), last[-7:])
        self.assertEqual(last[-7].get("bound_down"), "1")  # the tag named a server in maintenance

        self.assertEqual(t.admin_command(self.admin_path, "set server node1 state ready"),
                         "server node1: state ready (was maint)\n")
        self.assertIn("node1", [self.lb_who()[0]["name"] for _ in range(3)])
        reply, _ = self.lb_who(tls_max="1.3", session=sess)
        self.assertEqual((reply["name"], reply["resumed"]), ("node1", "1"))
        self.assertEqual({s["name"]: s["state"] for s in self.stats_json()["servers"]}["node1"], "UP")

    def test_show_table_lists_a_learned_session_id_and_clear_table_empties_it(self):
        self.add_backends(3, tags=False)
        lb = self.start_ops_lb(self.ops_config(threads=1))
        first, sess = self.lb_who(tls_max="1.2", no_ticket=True)
        self.assertEqual(len(sess.id), 32)
        lbt.lines_when(lb, 1)
        table = t.admin_command(self.admin_path, "show table")
        lines = table.splitlines()
        self.assertTrue(lines[0].startswith("# table: capacity 100000, entries 1,"), table)
        entry = dict(kv.split("=", 1) for kv in lines[1].split())
        self.assertEqual(entry["kind"], "session_id")
        self.assertEqual(entry["key"], sess.id.hex())
        self.assertEqual(entry["server"], first["name"])
        self.assertTrue(0 < int(entry["expires_in_ms"]) <= 1800 * 1000, entry)
        j = json.loads(t.admin_command(self.admin_path, "show table json"))
        self.assertEqual(j["list"], [{"kind": "session_id", "key": sess.id.hex(), "server": first["name"],
                                      "expires_in_ms": j["list"][0]["expires_in_ms"]}])
        # The entry routes the resumed client.
        reply, _ = self.lb_who(tls_max="1.2", no_ticket=True, session=sess)
        self.assertEqual((reply["name"], reply["resumed"]), (first["name"], "1"))
        self.assertEqual(lbt.lines_when(lb, 2)[-1]["route"], "stick")

        self.assertEqual(t.admin_command(self.admin_path, "clear table"), "cleared 1 entry\n")
        lb.wait_for_stderr("admin socket: stick table cleared (1 entry)")
        table = t.admin_command(self.admin_path, "show table")
        self.assertTrue(table.startswith("# table: capacity 100000, entries 0,"), table)
        self.assertEqual(len(table.splitlines()), 1, table)
        # With the entry gone, the same client is balanced, not stuck.
        self.lb_who(tls_max="1.2", no_ticket=True, session=sess)
        self.assertEqual(lbt.lines_when(lb, 3)[-1]["route"], "balance")

    def test_show_sessions_counts_and_lists_open_sessions(self):
        self.add_backends(2)
        lb = self.start_ops_lb(self.ops_config(threads=2))
        held = []
        try:
            for _ in range(3):
                s = t.tls_connect("127.0.0.1", self.lb_port)
                s.sendall(b"ECHO\n")
                held.append(s)
            clients = sorted("%s:%d" % s.getsockname() for s in held)

            def listed():
                text = t.admin_command(self.admin_path, "show sessions")
                rows = [dict(kv.split("=", 1) for kv in l.split()) for l in text.splitlines()
                        if l.startswith("worker=")]
                return len(rows) == 3 and all(r["state"] == "relaying" for r in rows) and (text, rows)

            text, rows = lbt.wait_for(listed, 5, "three relaying sessions")
            self.assertTrue(text.startswith("# sessions: 3\n"), text)
            self.assertEqual(sorted(r["client"] for r in rows), clients)
            self.assertEqual({r["frontend"] for r in rows}, {"fe"})
            self.assertEqual({r["route"] for r in rows}, {"balance"})
            self.assertLessEqual({r["server"] for r in rows}, {"node1", "node2"})
            counts = dict(l.split(": ", 1) for l in text.splitlines() if l.startswith(("worker ", "server ")))
            self.assertEqual(int(counts["worker 0"]) + int(counts["worker 1"]), 3)
            per_server = {name: sum(1 for r in rows if r["server"] == name) for name in ("node1", "node2")}
            for name, n in per_server.items():
                self.assertEqual(counts["server " + name], "%d current, 0 queued" % n)
            self.assertIn("frontend fe: 3", text.splitlines())
            j = json.loads(t.admin_command(self.admin_path, "show sessions json"))
            self.assertEqual(j["current"], 3)
            self.assertEqual(sorted(r["client"] for r in j["list"]), clients)
            self.assertEqual(j["unanswered_workers"], [])
        finally:
            for s in held:
                s.close()
        lbt.wait_for(lambda: t.admin_command(self.admin_path, "show sessions").startswith("# sessions: 0\n"), 5,
                     "the sessions to end")
        del lb

    def test_bad_commands_answer_an_error_line(self):
        self.add_backends(2)
        self.start_ops_lb(self.ops_config())
        c = t.AdminClient(self.admin_path)
        try:
            cases = {
                "bogus": "error: unknown command 'bogus'; try 'help'",
                "show": "error: unknown command 'show'; try 'help'",
                "show nothing": "error: unknown command 'show nothing'; try 'help'",
                "show stat xml": "error: unknown option 'xml' (only 'json')",
                "set server nosuch state drain": "error: no server named 'nosuch'",
                "set server node1 state sleepy": "error: unknown state 'sleepy' (expected ready, drain or maint)",
                "set server node1": "error: usage: set server NAME state ready|drain|maint",
                "set server node1 weight 5": "error: usage: set server NAME state ready|drain|maint",
                "clear table now": "error: unknown command 'clear table now'; try 'help'",
            }
            # All on one connection: an error does not end the session.
            for line, expect in cases.items():
                self.assertEqual(c.command(line), expect + "\n", line)
            # Nothing was changed by the refused commands.
            self.assertEqual({s["admin"] for s in self.stats_json()["servers"]}, {"ready"})
            help_text = c.command("help")
            for cmd in ("show info", "show stat", "show table", "clear table", "set server NAME state",
                        "show sessions", "quit"):
                self.assertIn(cmd, help_text)
            # Pipelined commands are answered in order.
            c.send(b"show info\nbogus\r\nshow info json\n")
            self.assertTrue(c.read_answer().startswith("Name: edgepin-lb\n"))
            self.assertTrue(c.read_answer().startswith("error: unknown command"))
            self.assertEqual(json.loads(c.read_answer())["name"], "edgepin-lb")
            c.send(b"quit\n")
            self.assertTrue(c.closed_by_server())
        finally:
            c.close()
        # A line over 4 KiB is refused and the connection closed.
        c = t.AdminClient(self.admin_path)
        try:
            c.send(b"show " + b"x" * 5000 + b"\nshow info\n")
            self.assertEqual(c.read_answer(), "error: command line longer than 4096 bytes\n")
            self.assertTrue(c.closed_by_server())
        finally:
            c.close()
        self.assertIn("Name: edgepin-lb", t.admin_command(self.admin_path, "show info"))


if __name__ == "__main__":
    unittest.main()
