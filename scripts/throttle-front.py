#!/usr/bin/env python3
"""A throttling front for an object store's stand-in, with the store's documented write limit.

The stand-ins the tests use (s3s-fs or moto, fake-gcs-server, Azurite) take any rate; the real
services do not, and answer writes past their limit with an error of their own. This reverse proxy
sits in front of a stand-in, lets RATE writes a second through (a token bucket holding BURST
writes), and answers the rest as the vendor does:

  s3     503 with `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>`
         (S3 sends no Retry-After)
  gcs    429 with GCS's JSON error (reason `rateLimitExceeded`), and a share of them (--share-503)
         503 with reason `backendError`, as GCS answers under load; with --ramp-every the rate
         doubles at most that often, as a new bucket's does every 20 minutes
  azure  503 with `<Error><Code>ServerBusy</Code><Message>...` and `x-ms-error-code: ServerBusy`

`--retry-after SECONDS` adds a `Retry-After` header to every refusal. Reads (GET, HEAD) always pass.
Writes are PUT, POST, DELETE and PATCH. The client's `Host` header is passed on unchanged, so
signatures over it (SigV4) still hold.

  scripts/throttle-front.py --kind s3 --rate 200 --upstream http://127.0.0.1:9000 [--port 0]

prints `listening on http://127.0.0.1:PORT` once it accepts connections. GET
/__throttle_front__/stats answers the counts as JSON: writes passed and refused, in all and after
the first 30 s of writes. SIGTERM prints the same on stderr and stops.
"""

import argparse
import http.client
import json
import random
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATS_PATH = "/__throttle_front__/stats"
WRITES = {"PUT", "POST", "DELETE", "PATCH"}
# Headers that describe one hop, never passed on.
HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
       "proxy-connection", "content-length"}


class Bucket:
    """Tokens for writes: RATE a second up to BURST; the rate doubles every RAMP seconds."""

    def __init__(self, rate, burst, ramp):
        self.rate, self.burst, self.ramp = float(rate), float(burst), ramp
        self.tokens, self.at, self.start = float(burst), time.monotonic(), None
        self.lock = threading.Lock()
        self.passed = self.refused = self.passed_late = self.refused_late = 0

    def rate_now(self, now):
        if not self.ramp or self.start is None:
            return self.rate
        return self.rate * 2 ** int((now - self.start) / self.ramp)

    def take(self):
        with self.lock:
            now = time.monotonic()
            if self.start is None:
                self.start = now
            rate = self.rate_now(now)
            self.tokens = min(max(self.burst, rate / 4), self.tokens + (now - self.at) * rate)
            self.at = now
            late = now - self.start > 30
            if self.tokens >= 1:
                self.tokens -= 1
                self.passed += 1
                self.passed_late += late
                return True
            self.refused += 1
            self.refused_late += late
            return False

    def stats(self):
        with self.lock:
            late = self.passed_late + self.refused_late
            return {
                "writes_passed": self.passed,
                "writes_refused": self.refused,
                "writes_passed_after_30s": self.passed_late,
                "writes_refused_after_30s": self.refused_late,
                "refused_share_after_30s": self.refused_late / late if late else 0.0,
                "rate_now": self.rate_now(time.monotonic()),
            }


def refusal(kind, share_503):
    """The status, headers and body the vendor answers a write past its limit with."""
    if kind == "s3":
        body = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>"
                "<Message>Please reduce your request rate.</Message>"
                f"<RequestId>{random.getrandbits(64):016X}</RequestId></Error>")
        return 503, {"Content-Type": "application/xml"}, body
    if kind == "azure":
        body = ("\ufeff<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code>"
                "<Message>Ingress is over the account limit.\n"
                f"RequestId:{random.getrandbits(64):016x}\nTime:"
                f"{time.strftime('%Y-%m-%dT%H:%M:%S.0000000Z', time.gmtime())}</Message></Error>")
        return 503, {"Content-Type": "application/xml", "x-ms-error-code": "ServerBusy"}, body
    if random.random() < share_503:
        status, reason, message = 503, "backendError", "Backend Error"
    else:
        status, reason, message = 429, "rateLimitExceeded", (
            "The rate of change requests to the bucket exceeds the rate limit. "
            "Please reduce the rate of create, update, and delete requests.")
    body = json.dumps({"error": {"code": status, "message": message,
                                 "errors": [{"message": message, "domain": "usageLimits"
                                             if status == 429 else "global",
                                             "reason": reason}]}})
    return status, {"Content-Type": "application/json; charset=UTF-8"}, body


def handler(args, bucket):
    upstream = urllib.parse.urlsplit(args.upstream)
    local = threading.local()

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def answer(self, status, headers, body):
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def forward(self, body):
            for attempt in (1, 2):
                connection = getattr(local, "connection", None)
                if connection is None:
                    connection = http.client.HTTPConnection(upstream.hostname, upstream.port,
                                                            timeout=120)
                    local.connection = connection
                try:
                    connection.putrequest(self.command, self.path, skip_host=True,
                                          skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() not in HOP:
                            connection.putheader(name, value)
                    if body or self.command in WRITES:
                        connection.putheader("Content-Length", str(len(body)))
                    connection.endheaders(body or None)
                    reply = connection.getresponse()
                    data = reply.read()
                    return reply.status, reply.getheaders(), data
                except (OSError, http.client.HTTPException):
                    connection.close()
                    local.connection = None
                    if attempt == 2:
                        raise

        def handle_any(self):
            if self.path == STATS_PATH:
                self.answer(200, [("Content-Type", "application/json")],
                            json.dumps(bucket.stats()))
                return
            body = self.body()
            if self.command in WRITES and not bucket.take():
                status, headers, text = refusal(args.kind, args.share_503)
                headers = list(headers.items())
                if args.retry_after is not None:
                    headers.append(("Retry-After", str(args.retry_after)))
                self.answer(status, headers, text)
                return
            try:
                status, headers, data = self.forward(body)
            except (OSError, http.client.HTTPException) as error:
                self.answer(502, [("Content-Type", "text/plain")], f"upstream: {error}")
                return
            # `send_response` sends its own Date and Server.
            kept = [(n, v) for n, v in headers if n.lower() not in HOP | {"date", "server"}]
            if self.command == "HEAD":
                length = next((v for n, v in headers if n.lower() == "content-length"), "0")
                self.send_response(status)
                for name, value in kept:
                    self.send_header(name, value)
                self.send_header("Content-Length", length)
                self.end_headers()
                return
            self.answer(status, kept, data)

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = do_OPTIONS = handle_any

    return Front


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=["s3", "gcs", "azure"], required=True)
    parser.add_argument("--rate", type=float, required=True, help="writes a second let through")
    parser.add_argument("--burst", type=float, help="writes the bucket holds (default rate/4)")
    parser.add_argument("--upstream", required=True, help="the stand-in's URL")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--retry-after", type=int, help="Retry-After seconds on each refusal")
    parser.add_argument("--share-503", type=float, default=0.1,
                        help="gcs: share of refusals answered 503 backendError (default 0.1)")
    parser.add_argument("--ramp-every", type=float,
                        help="seconds after which the rate doubles again (GCS: 1200, scaled down)")
    args = parser.parse_args()
    bucket = Bucket(args.rate, args.burst or max(1.0, args.rate / 4), args.ramp_every)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(args, bucket))
    server.daemon_threads = True
    server.request_queue_size = 512

    def stop(*_):
        print(json.dumps(bucket.stats()), file=sys.stderr, flush=True)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
