"""A node's Tomcat dies and no user sees an error (issue 11), end to end:
edgepin-lb, three edgepin-node-proxies and three real Tomcat 10 instances
(stack.py).

For each way a Tomcat goes away (a clean stop, SIGTERM as catalina.sh stop
does; then the JVM killed with SIGKILL), four clients whose sessions live on
one node A:
  - TLS 1.3, resuming its session (the lb routes it to A by the node tag);
  - TLS 1.2, resuming by session ID;
  - never resuming (a new curl process per request: any node);
  - plain HTTP (the lb's TCP frontend: any node).
Each makes REQUESTS_BEFORE requests on A, A's Tomcat goes away, and each
then makes REQUESTS_AFTER requests at once, each on a new connection: every
answer must be a 200, all from one other node, in one new session whose
counter runs from 1 (the old session died with its Tomcat). The first of
them reaches a node-proxy whose Tomcat refuses: it retries before the first
byte on a peer (node-proxy/exchange.h), which starts the new session and
records itself in the affinity cookie, so the next ones follow. Then A's
Tomcat comes back: the clients stay on their new node.

Run through ctest (EDGEPIN_LB and EDGEPIN_NODE_PROXY set), or:
    EDGEPIN_LB=build/lb/edgepin-lb EDGEPIN_NODE_PROXY=build/node-proxy/edgepin-node-proxy \\
        /usr/bin/python3 -m unittest -v test_failover
"""

import os
import shutil
import signal
import sys
import tempfile
import time
import unittest
from pathlib import Path

import stack as stk
import test_stickiness as sticky  # its clients (imported as a module: its tests do not run here)

REQUESTS_BEFORE = 10
REQUESTS_AFTER = 20
REQUESTS_BACK = 3


def _kill_tomcat(tomcat):
    """SIGKILL to the JVM's process group (a crash), then the bookkeeping of
    stop() (which finds it exited and only cleans up)."""
    os.killpg(tomcat.pid, signal.SIGKILL)
    tomcat.stop()


class Failover(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="edgepin-e2e-failover-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.tomcats = stk.start_tomcats(cls.tmp / "tomcat")
        cls.addClassCleanup(cls._stop, cls.tomcats)
        cls.stack = stk.EdgepinStack(cls.tmp, cls.tomcats)
        cls.addClassCleanup(cls._stop, [cls.stack])
        cls.stack.start()

    @classmethod
    def _stop(cls, things):
        errors = stk.stop_all(things)
        if errors:
            raise stk.StackError("; ".join(errors))

    def _clients(self, run):
        stack = self.stack
        workdir = self.tmp / "clients" / run
        https = stack.https_endpoint()
        http = stack.http_endpoint()
        return [
            ("TLS 1.3 resuming", sticky.PythonTlsClient(stack.ca_file, "1.3"), https, "https"),
            ("TLS 1.2 session ID", sticky.PythonTlsClient(stack.ca_file, "1.2", tickets=False),
             https, "https"),
            ("no resumption", sticky.CurlProcesses(stack.ca_file, workdir, "curl-https"), https,
             "https"),
            ("plain HTTP", sticky.CurlProcesses(stack.ca_file, workdir, "curl-http"), http, "http"),
        ]

    def _on_node(self, run, owner):
        """The four clients, each with REQUESTS_BEFORE answers from `owner`
        (None: wherever the first one lands) in one session. A client kind
        whose first request lands elsewhere is started again (round robin
        brings it to each node in turn)."""
        placed = []
        for index in range(4):
            for attempt in range(3 * len(self.stack.nodes)):
                label, client, (host, port), scheme = self._clients("%s-%d-%d" % (run, index, attempt))[index]
                first = client.fetch(host, port, scheme)
                self.assertEqual(first.status, 200, "%s: %r\n%s" % (label, first, self.stack.logs(15)))
                if owner is None:
                    owner = first.node
                if first.node == owner:
                    break
            self.assertEqual(first.node, owner, "%s never landed on %s" % (label, owner))
            fetches = [first] + [client.fetch(host, port, scheme) for _ in range(REQUESTS_BEFORE - 1)]
            self.assertEqual([(f.status, f.node, f.counter) for f in fetches],
                             [(200, owner, i) for i in range(1, REQUESTS_BEFORE + 1)],
                             "%s before the stop: %r" % (label, fetches))
            placed.append((label, client, (host, port), scheme))
        return owner, placed

    def _tomcat_goes_away(self, run, stop):
        stack = self.stack
        owner, clients = self._on_node(run, None)
        stop(stack.node(owner).tomcat)
        stopped = time.monotonic()
        after = {label: [] for label, *_ in clients}
        # At once, each request on a new connection; the kinds interleaved.
        for _ in range(REQUESTS_AFTER):
            for label, client, (host, port), scheme in clients:
                fetch = client.fetch(host, port, scheme)
                fetch.began = time.monotonic() - stopped
                after[label].append(fetch)
        new_owners = {}
        for label, fetches in after.items():
            trace = "%s after %s's Tomcat went away (%s):\n%s\n%s" % (
                label, owner, run, "\n".join("  +%.2fs %r" % (f.began, f) for f in fetches),
                stack.logs(20))
            self.assertEqual([f.status for f in fetches], [200] * REQUESTS_AFTER, trace)
            nodes = {f.node for f in fetches}
            self.assertEqual(len(nodes), 1, trace)
            new_owner = nodes.pop()
            self.assertNotEqual(new_owner, owner, trace)
            self.assertEqual([f.counter for f in fetches], list(range(1, REQUESTS_AFTER + 1)),
                             "not one new session: " + trace)
            new_owners[label] = new_owner
        print("\n%s: %s's Tomcat gone, every client answered by its new node: %s" % (
            run, owner, new_owners), file=sys.stderr)

        # The old owner comes back: its users stay where their session is.
        sightings = stack.up_sightings(owner)
        stack.start_tomcat(owner)
        stack.wait_node_seen_up(owner, sightings)
        for label, client, (host, port), scheme in clients:
            back = [client.fetch(host, port, scheme) for _ in range(REQUESTS_BACK)]
            self.assertEqual(
                [(f.status, f.node, f.counter) for f in back],
                [(200, new_owners[label], REQUESTS_AFTER + i) for i in range(1, REQUESTS_BACK + 1)],
                "%s after %s came back: %r\n%s" % (label, owner, back, stack.logs(15)))

    def test_1_tomcat_stopped(self):
        """A clean stop (SIGTERM to the JVM: catalina.sh stop's shutdown)."""
        self._tomcat_goes_away("stopped", lambda tomcat: tomcat.stop())

    def test_2_tomcat_killed(self):
        """The JVM killed with SIGKILL (a crash: no shutdown at all)."""
        self._tomcat_goes_away("killed", _kill_tomcat)


if __name__ == "__main__":
    unittest.main()
