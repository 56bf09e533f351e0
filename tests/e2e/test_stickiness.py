"""Issue #5's end-to-end proof: every kind of client stays on one Tomcat.

edgepin-lb + three edgepin-node-proxies + three real Tomcat 10 instances,
each node on its own loopback address (tests/e2e/stack.py). For each client
kind, 20 requests to the demo page, each on a new TCP connection, cookies
kept like a browser. Asserted for Edgepin, for every kind:
  - every request answered 200 by the same Tomcat (node=),
  - the session counter runs 1..20 (one application session throughout),
  - Tomcat saw the client's own address (the client binds CLIENT_ADDRESS,
    which is neither the balancer's nor a node's) and the client's scheme.
Then the owner's Tomcat is stopped: the next requests are answered by
another node in a new session (counter from 1), with no 5xx but the 502/503
the node-proxy documents until the health checks notice (at most
DETECTION_WINDOW_S), and the affinity cookie names the new node.

The same client kinds run through the classic HAProxy recipe
(docs/stickiness.md, "Why the HAProxy recipe is not enough"; a TCP-mode
haproxy sticking on the TLS 1.2 session ID in front of one haproxy TLS
terminator per node) on the same Tomcats. That side is a comparison, not
asserted: the table of both (printed, and written to stickiness-table.md
in EDGEPIN_E2E_OUT_DIR, ctest's build directory) is what README.md shows.

Run through ctest (`ctest -R e2e_stickiness`), which sets EDGEPIN_LB,
EDGEPIN_NODE_PROXY and EDGEPIN_E2E_OUT_DIR. Set EDGEPIN_E2E_KEEP=1 to keep
the temporary directory (configs, every process's log) for a post-mortem.
"""

import base64
import collections
import http.client
import http.cookiejar
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

import stack as stk
from tomcat import parse_kv

REQUESTS = 20
LB_RESTART_AFTER = 10       # the lb restarts between request 10 and 11
# The client binds its own loopback address: Tomcat seeing exactly this
# proves the address came from the client (PROXY v2 → X-Forwarded-For), not
# from a socket of the balancer (127.0.0.1) or of a node (127.0.5.1x).
CLIENT_ADDRESS = "127.0.5.100"
PAGE = "/index.jsp"
REQUEST_TIMEOUT = 20.0

# After the owner's Tomcat stops: requests per client, and the pause
# between them (together about 3 s, well past DETECTION_WINDOW).
REQUESTS_AFTER_STOP = 10
PAUSE_AFTER_STOP = 0.25
# The 5xx that edgepin-node-proxy documents after a Tomcat stops
# (node-proxy/exchange.h, conf/README.md "Health" of the peer link):
# a request that reaches the node whose Tomcat refuses connections gets 502,
# or 503 once that node's own check says its Tomcat is down; a request
# relayed there gets the same answer back. That lasts until the checks
# notice: the node-proxy's check of its Tomcat (fall x interval), then the
# lb's check and the peers' checks of its health endpoint (fall x interval
# each, in parallel), each check up to its timeout late. Only 502 and 503,
# only for requests begun within this window after the stop began; after
# it, every answer must be a 200. The slack covers a busy 2-core machine
# running the checks' timers late.
DETECTION_SLACK_S = 1.0
DETECTION_WINDOW_S = (2 * stk.CHECK_FALL * (stk.CHECK_INTERVAL_MS + stk.CHECK_TIMEOUT_MS) / 1000.0
                      + DETECTION_SLACK_S)
DOCUMENTED_5XX = (502, 503)


# ----------------------------------------------------------------- results

class Fetch:
    """One request's outcome: status (None when no HTTP answer came), the
    demo page's key=value facts, and for TLS clients whether the session
    was resumed."""

    def __init__(self, status=None, body=b"", resumed=None, connects=None, error=None):
        self.status = status
        self.facts = parse_kv(body.decode("utf-8", "replace")) if status == 200 else {}
        self.resumed = resumed
        self.connects = connects
        self.error = error
        self.began = None  # seconds since an event the test measures from

    @property
    def node(self):
        return self.facts.get("node")

    @property
    def counter(self):
        try:
            return int(self.facts.get("counter", ""))
        except ValueError:
            return None

    def __repr__(self):
        if self.status is None:
            return "Fetch(error=%r)" % self.error
        relayed = self.facts.get("x_edgepin_relayed")
        return "Fetch(%s %s #%s from %s %s%s%s)" % (
            self.status, self.node, self.counter, self.facts.get("remote_addr"),
            self.facts.get("scheme"), ", resumed" if self.resumed else "",
            ", relayed by " + relayed if relayed else "")


class KindResult:
    """The fetches of one client kind against one stack, and their summary."""

    def __init__(self, fetches, scheme):
        self.fetches = fetches
        self.scheme = scheme
        ok = [f for f in fetches if f.status == 200]
        self.nodes = [f.node for f in ok]
        self.distinct_nodes = len(set(self.nodes))
        self.counters = [f.counter for f in ok]
        self.failures = len(fetches) - len(ok)
        self.counter_ok = self.counters == list(range(1, REQUESTS + 1))
        self.resumed = sum(1 for f in fetches if f.resumed)
        # Requests an edgepin-node-proxy relayed to their owner over the
        # peer link (the owner tells Tomcat in X-Edgepin-Relayed).
        self.relayed = sum(1 for f in ok if f.facts.get("x_edgepin_relayed"))

    def counter_cell(self):
        if self.counter_ok:
            return "yes (1..%d)" % REQUESTS
        starts = sum(1 for c in self.counters if c == 1)
        text = "no: %d sessions, highest %s" % (starts, max(self.counters, default="-"))
        if self.failures:
            text += ", %d failed" % self.failures
        return text

    def to_json(self):
        return {"nodes": self.nodes, "counters": self.counters, "failures": self.failures,
                "distinct_nodes": self.distinct_nodes, "counter_ok": self.counter_ok,
                "resumed": self.resumed, "relayed": self.relayed,
                "remote_addrs": sorted({f.facts.get("remote_addr") for f in self.fetches if f.facts}),
                "schemes": sorted({f.facts.get("scheme") for f in self.fetches if f.facts}),
                "errors": [f.error or f.status for f in self.fetches if f.status != 200]}


# ----------------------------------------------------------------- clients

def _browser_request(url, jar):
    """A urllib Request carrying the cookies `jar` would send to `url`:
    http.cookiejar applies the browser rules (domain, path, Secure)."""
    request = urllib.request.Request(url)
    jar.add_cookie_header(request)
    return request


class PythonTlsClient:
    """A browser-like TLS client: a new TCP connection per request, offering
    the last TLS session it got (tickets or session ID as configured), with
    an in-memory cookie jar."""

    def __init__(self, ca_file, tls_version, tickets=True):
        ctx = ssl.create_default_context(cafile=ca_file)
        if tls_version == "1.3":
            ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        if not tickets:
            # TLS 1.2 resumption by session ID only.
            ctx.options |= ssl.OP_NO_TICKET
        self.ctx = ctx
        self.session = None
        self.jar = http.cookiejar.CookieJar()

    def fetch(self, host, port, scheme="https"):
        assert scheme == "https"
        request = _browser_request("https://%s:%d%s" % (host, port, PAGE), self.jar)
        try:
            raw = socket.create_connection((host, port), timeout=REQUEST_TIMEOUT,
                                           source_address=(CLIENT_ADDRESS, 0))
            try:
                s = self.ctx.wrap_socket(raw, server_hostname=host, session=self.session)
            except BaseException:
                raw.close()
                raise
            with s:
                resumed = s.session_reused
                conn = http.client.HTTPConnection(host, port, timeout=REQUEST_TIMEOUT)
                conn.sock = s
                headers = {"Connection": "close", "Accept": "text/plain"}
                if request.has_header("Cookie"):
                    headers["Cookie"] = request.get_header("Cookie")
                conn.request("GET", PAGE, headers=headers)
                response = conn.getresponse()
                # The TLS 1.3 tickets came before the response: this session
                # is the one to offer next time.
                self.session = s.session
                body = response.read()
                self.jar.extract_cookies(response, request)
                conn.close()
            return Fetch(response.status, body, resumed=resumed)
        except (OSError, ssl.SSLError, http.client.HTTPException) as e:
            return Fetch(error="%s: %s" % (type(e).__name__, e))

    def cookie(self, name):
        return next((c.value for c in self.jar if c.name == name), None)


def read_curl_jar(path):
    """The cookies of a curl (Netscape format) cookie file, name → value.
    HttpOnly cookies are lines starting with "#HttpOnly_"."""
    cookies = {}
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return cookies
    for line in text.splitlines():
        if line.startswith("#HttpOnly_"):
            line = line[len("#HttpOnly_"):]
        elif not line or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) == 7:
            cookies[fields[5]] = fields[6]
    return cookies


def _curl_base(ca_file, jar):
    return ["curl", "-sS", "--http1.1", "--noproxy", "*", "--interface", CLIENT_ADDRESS,
            "--cacert", ca_file, "-b", str(jar), "-c", str(jar),
            "-H", "Connection: close", "-H", "Accept: text/plain",
            "--max-time", str(int(REQUEST_TIMEOUT))]


def _run_curl(argv, timeout):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout)


class CurlProcesses:
    """A client that never resumes TLS: each request is a separate curl
    process (a fresh TLS session, a new connection) sharing one cookie jar
    file, as a browser whose TLS cache is gone keeps its cookies."""

    def __init__(self, ca_file, workdir, name):
        self.ca_file = ca_file
        self.dir = Path(workdir) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.jar = self.dir / "cookies.txt"
        self.jar.write_text("")  # an empty jar turns curl's cookie engine on
        self.count = 0

    def fetch(self, host, port, scheme="https"):
        self.count += 1
        out = self.dir / ("body-%d" % self.count)
        argv = _curl_base(self.ca_file, self.jar) + [
            "-o", str(out), "-w", "%{http_code} %{num_connects}",
            "%s://%s:%d%s" % (scheme, host, port, PAGE)]
        try:
            done = _run_curl(argv, REQUEST_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            return Fetch(error="curl did not finish")
        code, _, connects = done.stdout.decode().partition(" ")
        if done.returncode != 0 or not code.isdigit() or int(code) == 0:
            return Fetch(error="curl exit %d: %s" % (done.returncode, done.stderr.decode().strip()))
        body = out.read_bytes() if out.exists() else b""
        return Fetch(int(code), body, connects=int(connects or 0))

    def cookie(self, name):
        return read_curl_jar(self.jar).get(name)


def one_curl_process(ca_file, workdir, host, port):
    """One curl process fetching the page REQUESTS times with
    --no-keepalive. That flag alone only turns TCP keep-alive probes off
    (curl would reuse the connection): `Connection: close` makes every
    fetch a new connection, on which curl resumes its TLS session. Cookies
    go from fetch to fetch inside the process, as in a browser."""
    d = Path(workdir) / "one-curl"
    d.mkdir(parents=True, exist_ok=True)
    jar = d / "cookies.txt"
    jar.write_text("")
    argv = _curl_base(ca_file, jar) + [
        "--no-keepalive", "-o", str(d / "body-#1"), "-w", "%{http_code} %{num_connects}\\n",
        "https://%s:%d%s?fetch=[1-%d]" % (host, port, PAGE, REQUESTS)]
    try:
        done = _run_curl(argv, REQUESTS * (REQUEST_TIMEOUT + 1))
    except subprocess.TimeoutExpired:
        return [Fetch(error="curl did not finish")]
    lines = done.stdout.decode().splitlines()
    fetches = []
    for i in range(1, REQUESTS + 1):
        if i > len(lines):
            fetches.append(Fetch(error="curl exit %d before fetch %d: %s"
                                 % (done.returncode, i, done.stderr.decode().strip())))
            continue
        code, _, connects = lines[i - 1].partition(" ")
        body_file = d / ("body-%d" % i)
        body = body_file.read_bytes() if body_file.exists() else b""
        if not code.isdigit() or int(code) == 0:
            fetches.append(Fetch(error="fetch %d: no answer (%s)" % (i, done.stderr.decode().strip())))
        else:
            fetches.append(Fetch(int(code), body, connects=int(connects or 0)))
    return fetches


# ------------------------------------------------------------ client kinds

class Kind:
    """A client kind: how it talks (client), over which frontend (scheme),
    and what the balancers do meanwhile (lbs: one, restart, two)."""

    def __init__(self, name, label, client, scheme="https", lbs="one", resumes=False, direct=None):
        self.name = name
        self.label = label
        self.client = client   # (ca_file, workdir, name) -> client, or "one-curl"
        self.scheme = scheme
        self.lbs = lbs
        # resumes: a Python client that must resume its TLS session on every
        # connection after the first (checked, so the kind is what it says).
        self.resumes = resumes
        # direct: the client resumes TLS, so the lb must route every request
        # straight to the node that issued its session, by the node tag, with
        # no help from the peer link (docs/stickiness.md, "The node tag").
        self.direct = resumes if direct is None else direct


def _python(version, tickets=True):
    return lambda ca, workdir, name: PythonTlsClient(ca, version, tickets)


def _curl(ca, workdir, name):
    return CurlProcesses(ca, workdir, name)


KINDS = (
    Kind("tls13_tickets", "TLS 1.3, resuming with tickets", _python("1.3"), resumes=True),
    Kind("tls12_tickets", "TLS 1.2, resuming with tickets", _python("1.2"), resumes=True),
    Kind("tls12_session_id", "TLS 1.2, resuming by session ID (no tickets)",
         _python("1.2", tickets=False), resumes=True),
    Kind("no_resumption", "TLS, no resumption (a curl process per request)", _curl),
    Kind("plain_http", "plain HTTP (a curl process per request)", _curl, scheme="http"),
    # curl resumes its TLS session on the next connection when it has an
    # unused ticket (it uses each TLS 1.3 ticket once, as RFC 8446 advises):
    # some fetches are full handshakes that the lb balances anywhere, so
    # this kind relies on the peer link too.
    Kind("one_curl", "one curl process, 20 fetches, --no-keepalive", "one-curl"),
    Kind("lb_restart_tls12_session_id", "lb restarted after request 10, TLS 1.2 session ID",
         _python("1.2", tickets=False), lbs="restart", resumes=True),
    Kind("lb_restart_tls13_tickets", "lb restarted after request 10, TLS 1.3 tickets",
         _python("1.3"), lbs="restart", resumes=True),
    Kind("lb_restart_no_resumption", "lb restarted after request 10, no resumption", _curl,
         lbs="restart"),
    Kind("two_lbs_tls12_session_id", "two lbs used alternately, TLS 1.2 session ID",
         _python("1.2", tickets=False), lbs="two", resumes=True),
    Kind("two_lbs_tls13_tickets", "two lbs used alternately, TLS 1.3 tickets", _python("1.3"),
         lbs="two", resumes=True),
    Kind("two_lbs_no_resumption", "two lbs used alternately, no resumption", _curl, lbs="two"),
)


def run_kind(kind, target, workdir):
    """Runs `kind`'s REQUESTS requests through `target` (an EdgepinStack or
    a HaproxyRecipe) and returns the list of Fetch."""
    endpoint = target.http_endpoint if kind.scheme == "http" else target.https_endpoint
    if kind.client == "one-curl":
        return one_curl_process(target.ca_file, workdir, *endpoint())
    client = kind.client(target.ca_file, workdir, kind.name)
    lbs = [target.lb]
    if kind.lbs == "two":
        lbs.append(target.extra_lbs[0] if target.extra_lbs else target.start_second_lb())
    fetches = []
    for i in range(REQUESTS):
        if kind.lbs == "restart" and i == LB_RESTART_AFTER:
            target.restart_lb()
            lbs = [target.lb]
            # Another user reaches the new process first, as on a live
            # site: our client's next connection must not find the
            # balancer's choices exactly where the old process began them.
            other = kind.client(target.ca_file, workdir, kind.name + "-other-user")
            other.fetch(*endpoint(target.lb), scheme=kind.scheme)
        fetches.append(client.fetch(*endpoint(lbs[i % len(lbs)]), scheme=kind.scheme))
    return fetches


# ------------------------------------------------------------------- table

def render_table(results):
    """The Markdown table of both stacks, one row per client kind.
    `results[kind.name]` is {"edgepin": KindResult, "haproxy": KindResult}."""
    lines = ["| client kind | Edgepin: distinct nodes | Edgepin: counter ok | "
             "Edgepin: relayed over the peer link | "
             "HAProxy recipe: distinct nodes | HAProxy recipe: counter ok |",
             "| --- | --- | --- | --- | --- | --- |"]
    for kind in KINDS:
        cells = [kind.label]
        for side in ("edgepin", "haproxy"):
            r = results.get(kind.name, {}).get(side)
            cells += ([str(r.distinct_nodes), r.counter_cell()] if r else ["not run", "not run"])
            if side == "edgepin":
                cells.append("%d of %d" % (r.relayed, len(r.fetches)) if r else "not run")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def affinity_tag(cookie_value):
    """The node tag inside an affinity cookie (node-proxy/affinity.h:
    base64url of version(1) | tag(2, big-endian) | issued_at(4) | mac(16)),
    or None if it is not one."""
    if not cookie_value:
        return None
    try:
        raw = base64.urlsafe_b64decode(cookie_value + "=" * (-len(cookie_value) % 4))
    except ValueError:
        return None
    if len(raw) != 23 or raw[0] != 1:
        return None
    return int.from_bytes(raw[1:3], "big")


# -------------------------------------------------------------------- test

class Stickiness(unittest.TestCase):
    """One Tomcat trio, one Edgepin stack and one HAProxy recipe for the
    whole class; each client kind starts from an empty cookie jar and no TLS
    session. test_90 stops a Tomcat, so it runs last (methods run in name
    order)."""

    results = collections.defaultdict(dict)

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="edgepin-e2e-stickiness-"))
        cls.addClassCleanup(cls._remove_tmp)
        began = time.monotonic()
        cls.tomcats = stk.start_tomcats(cls.tmp / "tomcat")
        # Cleanups run last-in first-out: the proxies stop before the Tomcats.
        cls.addClassCleanup(cls._stop, cls.tomcats)
        cls.stack = stk.EdgepinStack(cls.tmp, cls.tomcats)
        cls.addClassCleanup(cls._stop, [cls.stack])
        cls.stack.start()
        cls.recipe = stk.HaproxyRecipe(cls.tmp, cls.tomcats, cls.stack.conf)
        cls.addClassCleanup(cls._stop, [cls.recipe])
        cls.recipe.start()
        cls.affinity_cookie = stk.read_json(cls.stack.conf / "cluster.json")["cluster"].get(
            "affinity", {}).get("cookie_name", "EDGEPIN_NODE")
        print("\nstacks up in %.1f s (Tomcat starts: %s)" % (
            time.monotonic() - began,
            ", ".join("%.1f s" % t.startup_seconds for t in cls.tomcats)), file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        if cls.results:
            cls._write_table()

    @classmethod
    def _stop(cls, things):
        errors = stk.stop_all(things)
        if errors:
            raise stk.StackError("; ".join(errors))

    @classmethod
    def _remove_tmp(cls):
        if os.environ.get("EDGEPIN_E2E_KEEP") == "1":
            print("kept %s" % cls.tmp, file=sys.stderr)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def _write_table(cls):
        table = render_table(cls.results)
        out_dir = Path(os.environ.get("EDGEPIN_E2E_OUT_DIR") or tempfile.gettempdir())
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "stickiness-table.md").write_text(table)
        raw = {name: {side: r.to_json() for side, r in sides.items()}
               for name, sides in cls.results.items()}
        (out_dir / "stickiness-results.json").write_text(json.dumps(raw, indent=1) + "\n")
        print("\n%d requests per client kind, each on a new connection:\n\n%s\n(written to %s)"
              % (REQUESTS, table, out_dir / "stickiness-table.md"), file=sys.stderr)

    # -- one test per client kind (added below the class)

    def check_kind(self, kind):
        workdir = self.tmp / "clients" / kind.name
        # The recipe first: the Edgepin side may fail its assertions, and the
        # comparison row should exist either way.
        self.results[kind.name]["haproxy"] = KindResult(
            run_kind(kind, self.recipe, workdir / "haproxy"), kind.scheme)
        fetches = run_kind(kind, self.stack, workdir / "edgepin")
        result = self.results[kind.name]["edgepin"] = KindResult(fetches, kind.scheme)
        self.assert_sticky(kind, fetches, result)

    def assert_sticky(self, kind, fetches, result):
        trace = "\n".join("  %2d: %r" % (i + 1, f) for i, f in enumerate(fetches))
        why = "%s through Edgepin:\n%s" % (kind.label, trace)
        self.assertEqual([f.status for f in fetches], [200] * REQUESTS, why)
        self.assertEqual(result.distinct_nodes, 1, "requests reached several Tomcats: " + why)
        self.assertEqual(result.counters, list(range(1, REQUESTS + 1)),
                         "the application session did not survive: " + why)
        self.assertEqual({f.facts["remote_addr"] for f in fetches}, {CLIENT_ADDRESS},
                         "Tomcat did not see the client's address: " + why)
        self.assertEqual({f.facts["scheme"] for f in fetches}, {kind.scheme}, why)
        self.assertEqual({f.facts["secure"] for f in fetches},
                         {"true" if kind.scheme == "https" else "false"}, why)
        connects = [f.connects for f in fetches if f.connects is not None]
        self.assertTrue(all(c == 1 for c in connects), "a fetch reused a connection: %s" % connects)
        if kind.resumes:
            # Otherwise this kind would not test what its name says.
            self.assertEqual([f.resumed for f in fetches[1:]], [True] * (REQUESTS - 1),
                             "the client did not resume its TLS session: " + why)
        if kind.direct:
            # The peer link would hide a lb that lost the node tag: a
            # resuming client must reach its owner without it.
            self.assertEqual([f.facts.get("x_edgepin_relayed") for f in fetches], [""] * REQUESTS,
                             "resumption did not route to the owner by itself: " + why)

    # -- the owner's Tomcat stops

    def test_90_owner_tomcat_stopped(self):
        """Stop the Tomcat that owns two clients' sessions (one resuming TLS,
        so the lb keeps sending it to the owner's node; one never resuming,
        so it lands anywhere): both must be answered by another node in a
        new session, and their affinity cookies must move there. Then start
        it again: both clients stay with their new node."""
        stack = self.stack
        host, port = stack.https_endpoint()
        workdir = self.tmp / "clients" / "owner-stop"

        resuming = PythonTlsClient(stack.ca_file, "1.3")
        before = [resuming.fetch(host, port) for _ in range(5)]
        self.assertEqual([(f.status, f.counter) for f in before], [(200, i) for i in range(1, 6)],
                         before)
        owner = before[0].node
        self.assertEqual({f.node for f in before}, {owner}, before)

        # A fresh client whose session the same node owns: round robin puts
        # its first request on each node in turn.
        fresh = first = None
        for attempt in range(2 * len(stack.nodes)):
            fresh = CurlProcesses(stack.ca_file, workdir, "fresh-%d" % attempt)
            first = fresh.fetch(host, port)
            if first.status == 200 and first.node == owner:
                break
        self.assertEqual(first.node, owner, "no fresh client landed on %s: %r" % (owner, first))
        fresh_before = [first] + [fresh.fetch(host, port) for _ in range(4)]
        self.assertEqual([(f.status, f.node, f.counter) for f in fresh_before],
                         [(200, owner, i) for i in range(1, 6)], fresh_before)

        owner_tag = stack.node(owner).tag
        for client in (resuming, fresh):
            self.assertEqual(affinity_tag(client.cookie(self.affinity_cookie)), owner_tag,
                             "the affinity cookie does not name the owner %s" % owner)

        stopping = time.monotonic()
        stack.stop_tomcat(owner)
        after = {"resuming TLS 1.3": [], "no resumption": []}
        for _ in range(REQUESTS_AFTER_STOP):
            for label, client in (("resuming TLS 1.3", resuming), ("no resumption", fresh)):
                began = time.monotonic() - stopping
                fetch = client.fetch(host, port)
                fetch.began = began
                after[label].append(fetch)
            time.sleep(PAUSE_AFTER_STOP)

        moved = {}  # label -> (the new owner, requests it answered so far)
        for (label, fetches), client in zip(after.items(), (resuming, fresh)):
            trace = "%s client after %s's Tomcat stopped (5xx allowed only within %.1f s):\n%s\n%s" % (
                label, owner, DETECTION_WINDOW_S,
                "\n".join("  +%.2fs %r" % (f.began, f) for f in fetches), stack.logs(15))
            self.assertEqual([f.error for f in fetches if f.status is None], [], trace)
            server_errors = [f for f in fetches if f.status >= 500]
            print("\n%s client: %d of %d answers after the owner's Tomcat stopped were 5xx (%s)"
                  % (label, len(server_errors), len(fetches),
                     ", ".join("%d at +%.2f s" % (f.status, f.began) for f in server_errors) or "none"),
                  file=sys.stderr)
            self.assertEqual([(f.status, round(f.began, 2)) for f in server_errors
                              if f.status not in DOCUMENTED_5XX or f.began > DETECTION_WINDOW_S], [],
                             "undocumented 5xx: " + trace)
            answered = [f for f in fetches if f.status == 200]
            self.assertEqual(len(answered), len(fetches) - len(server_errors), trace)
            self.assertGreaterEqual(len(answered), REQUESTS_AFTER_STOP // 2, trace)
            nodes = {f.node for f in answered}
            self.assertEqual(len(nodes), 1, trace)
            new_owner = nodes.pop()
            self.assertNotEqual(new_owner, owner, trace)
            self.assertEqual([f.counter for f in answered], list(range(1, len(answered) + 1)),
                             "not one new session: " + trace)
            self.assertEqual({f.facts["remote_addr"] for f in answered}, {CLIENT_ADDRESS}, trace)
            self.assertEqual(affinity_tag(client.cookie(self.affinity_cookie)),
                             stack.node(new_owner).tag, "the affinity cookie did not move: " + trace)
            moved[label] = (new_owner, len(answered))

        # The old owner comes back: its sessions are gone, and the users now
        # belong to their new node, which must keep them (a returning node
        # never pulls users back into an empty session).
        sightings = stack.up_sightings(owner)
        stack.start_tomcat(owner)
        stack.wait_node_seen_up(owner, sightings)
        for label, client in (("resuming TLS 1.3", resuming), ("no resumption", fresh)):
            new_owner, seen = moved[label]
            back = [client.fetch(host, port) for _ in range(5)]
            self.assertEqual([(f.status, f.node, f.counter) for f in back],
                             [(200, new_owner, seen + i) for i in range(1, 6)],
                             "%s client after %s came back: %r" % (label, owner, back))


def _kind_test(kind):
    def test(self):
        self.check_kind(kind)
    test.__doc__ = kind.label
    return test


for _number, _kind in enumerate(KINDS, start=10):
    setattr(Stickiness, "test_%02d_%s" % (_number, _kind.name), _kind_test(_kind))


if __name__ == "__main__":
    unittest.main(verbosity=2)
