"""Browser-like users for Edgepin's HA tests, run inside the client namespace.

    ip netns exec NS python3 ha_client.py --host 198.18.0.10 --ca ca.crt \
        --users resume13:1,cookie:1 --requests 400 --interval 0.2 \
        --stop-file /tmp/x/stop --max-seconds 120

Each user (a thread) makes requests to the demo page one after another,
each on a new TCP connection (`Connection: close`), keeping its cookies
like a browser, until it made --requests, the stop file exists or
--max-seconds passed. Every request prints one JSON line on stdout:
    {"user": "resume13-0", "kind": "resume13", "seq": 7, "start": T0, "end": T1,
     "ok": true, "status": 200, "node": "node2", "counter": 7, "session": "...",
     "resumed": true, "lport": 40123, "error": null}
start/end are CLOCK_MONOTONIC seconds, the clock the test reads too.

User kinds:
    resume13  TLS 1.3, offers the last session it got (tickets)
    resume12  TLS 1.2 without tickets: resumes by session ID
    cookie    TLS, never resumes (a fresh session per connection)
    http      plain HTTP
The TLS users verify the node certificates with --ca and the name
--server-name (the certificates name localhost, not the service address).
"""

import argparse
import http.client
import io
import http.cookiejar
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.request

PAGE = "/index.jsp"
KINDS = ("resume13", "resume12", "cookie", "http")


def parse_kv(text):
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


class _Answer:
    """What http.cookiejar needs of a response: info() with the headers."""

    def __init__(self, headers):
        self._headers = headers

    def info(self):
        return self._headers


def read_to_eof(sock):
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ssl.SSLZeroReturnError:  # close_notify
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse_response(data):
    """(status, headers, body) of one HTTP/1.1 response read to EOF."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise http.client.HTTPException("incomplete response (%d bytes)" % len(data))
    status_line, _, fields = head.partition(b"\r\n")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise http.client.HTTPException("bad status line %r" % status_line[:80])
    headers = http.client.parse_headers(io.BytesIO(fields + b"\r\n\r\n"))
    if "chunked" in (headers.get("Transfer-Encoding") or "").lower():
        out = []
        rest = body
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out.append(rest[:size])
            rest = rest[size + 2:]
        body = b"".join(out)
    elif headers.get("Content-Length") is not None:
        body = body[:int(headers["Content-Length"])]
    return int(parts[1]), headers, body


class User:
    def __init__(self, name, kind, args):
        self.name = name
        self.kind = kind
        self.args = args
        self.jar = http.cookiejar.CookieJar()
        self.session = None
        self.ctx = None
        if kind != "http":
            ctx = ssl.create_default_context(cafile=args.ca)
            if kind == "resume12":
                ctx.minimum_version = ssl.TLSVersion.TLSv1_2
                ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                ctx.options |= ssl.OP_NO_TICKET
            else:
                ctx.minimum_version = ssl.TLSVersion.TLSv1_3
            self.ctx = ctx

    def url(self):
        if self.kind == "http":
            return "http://%s:%d%s" % (self.args.host, self.args.http_port, PAGE)
        return "https://%s:%d%s" % (self.args.server_name, self.args.https_port, PAGE)

    def fetch(self):
        a = self.args
        record = {"user": self.name, "kind": self.kind, "ok": False, "status": None,
                  "node": None, "counter": None, "session": None, "resumed": None,
                  "lport": None, "error": None}
        request = urllib.request.Request(self.url())
        self.jar.add_cookie_header(request)
        port = a.http_port if self.kind == "http" else a.https_port
        sock = None
        try:
            sock = socket.create_connection((a.host, port), timeout=a.connect_timeout)
            record["lport"] = sock.getsockname()[1]
            # One deadline for the whole exchange would be nicer; a timeout
            # per socket operation bounds it too (the answer is small).
            sock.settimeout(a.request_timeout)
            if self.ctx is not None:
                offer = self.session if self.kind in ("resume13", "resume12") else None
                sock = self.ctx.wrap_socket(sock, server_hostname=a.server_name, session=offer)
                record["resumed"] = sock.session_reused
            head = ["GET %s HTTP/1.1" % PAGE, "Host: %s" % request.host, "Connection: close",
                    "Accept: text/plain", "User-Agent: edgepin-ha-client"]
            if request.has_header("Cookie"):
                head.append("Cookie: " + request.get_header("Cookie"))
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
            # The server closes after the answer (Connection: close): read to
            # the end, TLS close_notify included, then close cleanly. A TLS
            # 1.2 session whose connection was not shut down is no longer
            # resumable (OpenSSL marks it so when the SSL object is freed).
            data = read_to_eof(sock)
            if self.ctx is not None:
                self.session = sock.session
                try:
                    sock = sock.unwrap()
                except (OSError, ssl.SSLError):
                    pass
            status, headers, body = parse_response(data)
            self.jar.extract_cookies(_Answer(headers), request)
            record["status"] = status
            if status == 200:
                facts = parse_kv(body.decode("utf-8", "replace"))
                record.update(ok=True, node=facts.get("node"), session=facts.get("session_id"))
                try:
                    record["counter"] = int(facts.get("counter", ""))
                except ValueError:
                    record.update(ok=False, error="no counter in the page")
            else:
                record["error"] = "HTTP %d" % status
        except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as e:
            record["error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        return record


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", required=True)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--server-name", default="localhost")
    p.add_argument("--ca", required=True)
    p.add_argument("--users", required=True, help="KIND:COUNT,...")
    p.add_argument("--requests", type=int, required=True, help="per user, at most")
    p.add_argument("--interval", type=float, default=0.0, help="pause between a user's requests")
    p.add_argument("--stop-file")
    p.add_argument("--max-seconds", type=float, required=True)
    p.add_argument("--connect-timeout", type=float, default=1.0)
    p.add_argument("--request-timeout", type=float, default=5.0)
    args = p.parse_args()

    users = []
    for item in args.users.split(","):
        kind, _, count = item.partition(":")
        if kind not in KINDS:
            p.error("unknown kind %r" % kind)
        for i in range(int(count or 1)):
            users.append(User("%s-%d" % (kind, i), kind, args))

    out_lock = threading.Lock()
    deadline = time.monotonic() + args.max_seconds

    def stopped():
        return time.monotonic() > deadline or (args.stop_file and os.path.exists(args.stop_file))

    def loop(user):
        for seq in range(args.requests):
            if stopped():
                return
            start = time.monotonic()
            record = user.fetch()
            record.update(seq=seq, start=start, end=time.monotonic())
            with out_lock:
                sys.stdout.write(json.dumps(record) + "\n")
                sys.stdout.flush()
            if args.interval:
                time.sleep(args.interval)

    threads = [threading.Thread(target=loop, args=(u,), daemon=True) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + args.request_timeout + args.connect_timeout + 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
