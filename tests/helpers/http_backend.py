#!/usr/bin/env python3
"""The one HTTP/1.1 test backend (an upstream for node-proxies, an HTTP
health-check target for the lb), run as a program or in-process.

Every request is answered 200 with what the backend received, so a test
reads exactly what the proxy forwarded:
  format "json" (default): {"backend": NAME, "method", "path", "headers"
      (names in lower case; a repeated name keeps its last value),
      "header_names" (every received name, as sent, in order), "body_len",
      "body_sha256" (chunked bodies decoded), "new_session"}
  format "text": "path=<path>\\n"
Sessions: a request without a known JSESSIONID cookie starts one
(Set-Cookie: JSESSIONID=<hex>[.<name> with jvm_route], as Tomcat's
jvmRoute does) and reports it as "new_session".
Health: with a health path, that path answers `health_status` (changeable
in-process) with an empty body; every other path is answered as above.
Keep-alive (HTTP/1.1), one thread per connection; HEAD gets the headers of
the GET answer and no body.

As a program:
  http_backend.py --name NAME --host HOST --port PORT [--format json|text]
                  [--jvm-route] [--health-path PATH] [--health-status CODE]
prints "listening <port>" once bound (port 0 picks one) and exits 0 on
SIGTERM. In-process:
  backend = HttpBackend("127.0.0.1", 0, health_path="/_edgepin/health")
  backend.start(); ...; backend.health_status = 503; ...; backend.stop()
"""
import argparse
import hashlib
import http.server
import json
import secrets
import signal
import sys
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0"))
        return self.rfile.read(n) if n else b""

    def _answer(self):
        backend = self.server.backend
        data = self._body()
        if backend.health_path is not None and self.path == backend.health_path:
            self.send_response(backend.health_status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        new = backend.session_for(self.headers.get("Cookie", ""))
        if backend.format == "text":
            reply, ctype = ("path=" + self.path + "\n").encode(), "text/plain"
        else:
            reply = json.dumps({
                "backend": backend.name, "method": self.command, "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "header_names": list(self.headers.keys()),
                "body_len": len(data), "body_sha256": hashlib.sha256(data).hexdigest(),
                "new_session": new}).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(reply)))
        if new:
            self.send_header("Set-Cookie", "JSESSIONID=%s; Path=/; HttpOnly" % new)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = _answer

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


class HttpBackend:
    def __init__(self, host, port, name="backend", fmt="json", jvm_route=False,
                 health_path=None, health_status=200):
        if fmt not in ("json", "text"):
            raise ValueError("fmt must be 'json' or 'text'")
        self.name, self.format, self.jvm_route = name, fmt, jvm_route
        self.health_path, self.health_status = health_path, health_status
        self._sessions, self._lock = set(), threading.Lock()
        self._server = _Server((host, port), _Handler)
        self._server.backend = self
        self._thread = None

    @property
    def port(self):
        return self._server.server_address[1]

    def session_for(self, cookie_header):
        """None when the Cookie header names a session this backend made;
        else a new session id (remembered)."""
        jsid = None
        for part in cookie_header.split(";"):
            k, _, v = part.strip().partition("=")
            if k == "JSESSIONID":
                jsid = v
        with self._lock:
            if jsid in self._sessions:
                return None
            new = secrets.token_hex(8) + ("." + self.name if self.jvm_route else "")
            self._sessions.add(new)
            return new

    def start(self):
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve_forever(self):
        self._server.serve_forever()

    def stop(self):
        self._server.shutdown()
        self._server.server_close()


def main():
    p = argparse.ArgumentParser(description="Edgepin's HTTP/1.1 test backend")
    p.add_argument("--name", default="backend")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--format", choices=("json", "text"), default="json")
    p.add_argument("--jvm-route", action="store_true")
    p.add_argument("--health-path")
    p.add_argument("--health-status", type=int, default=200)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    backend = HttpBackend(a.host, a.port, a.name, a.format, a.jvm_route, a.health_path,
                          a.health_status)
    print("listening %d" % backend.port, flush=True)
    backend.serve_forever()


if __name__ == "__main__":
    main()
