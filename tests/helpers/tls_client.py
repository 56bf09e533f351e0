#!/usr/bin/python3
"""A TLS client made with Python's ssl module, for tests that need real
ClientHellos from a second TLS stack (CPython over the system OpenSSL, with
its own defaults).

It makes --connections connections one after the other to 127.0.0.1:PORT;
each one after the first offers the previous connection's session, so the
second and later ones resume. It reads until the server closes (so TLS 1.3
tickets have arrived before the session is taken), then prints one JSON
object per connection on stdout:
  {"version": "TLSv1.3", "reused": false, "session_id": "hex",
   "has_ticket": true, "alpn": "http/1.1" or null, "greeting": "..."}
Exit status 0 if every connection completed its handshake.
"""
import argparse
import json
import socket
import ssl
import sys

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--sni", help="server name to send (and verify) - none if absent")
    ap.add_argument("--cafile", help="CA to verify the server with; no verification if absent")
    ap.add_argument("--tls", choices=sorted(VERSIONS), help="pin this version")
    ap.add_argument("--alpn", help="comma-separated protocols to offer")
    ap.add_argument("--no-ticket", action="store_true", help="set OP_NO_TICKET (TLS 1.2 resumes by session ID)")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if args.cafile:
        ctx.load_verify_locations(args.cafile)
        ctx.check_hostname = args.sni is not None
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args.tls:
        ctx.minimum_version = VERSIONS[args.tls]
        ctx.maximum_version = VERSIONS[args.tls]
    if args.alpn:
        ctx.set_alpn_protocols(args.alpn.split(","))
    if args.no_ticket:
        ctx.options |= ssl.OP_NO_TICKET

    session = None
    ok = True
    for _ in range(args.connections):
        raw = socket.create_connection((args.host, args.port), timeout=args.timeout)
        with ctx.wrap_socket(raw, server_hostname=args.sni, session=session) as s:
            greeting = b""
            try:
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    greeting += chunk
            except (ssl.SSLEOFError, ConnectionResetError):
                pass
            session = s.session
            print(json.dumps({
                "version": s.version(),
                "reused": s.session_reused,
                "session_id": session.id.hex() if session else "",
                "has_ticket": bool(session and session.has_ticket),
                "alpn": s.selected_alpn_protocol(),
                "greeting": greeting.decode("utf-8", "replace"),
            }), flush=True)
            ok = ok and s.version() is not None
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
