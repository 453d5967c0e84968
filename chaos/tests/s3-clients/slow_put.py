#!/usr/bin/env python3
"""One slow, signed PUT of random bytes, for tests that kill things mid-upload.

Usage: slow_put.py BUCKET KEY TOTAL_BYTES [--stop-after BYTES] [--piece BYTES]
                   [--pause SECONDS] [--graceful-close | --hold] [--timeout SECONDS]

Sends `PUT /BUCKET/KEY` with Content-Length TOTAL_BYTES, signed with SigV4
(x-amz-content-sha256: UNSIGNED-PAYLOAD), over a raw socket; the body is
random bytes written in pieces of --piece bytes (default 262144) with --pause
seconds (default 0.05) between pieces. After each piece it prints `sent N`
(N: body bytes sent so far) and flushes, so a caller can tell that data is
flowing.

  --stop-after BYTES  stop after exactly BYTES body bytes, close the connection
                      abruptly (TCP RST; --graceful-close: FIN) without reading
                      an answer, print `stopped after N`, exit 0.
  --hold              with --stop-after: keep the connection open, sending
                      nothing more (a stalled body), and wait for the answer:
                      print `status NNN` and exit 1, or as below when the
                      server closes first or --timeout passes.
  otherwise           after the whole body print `sha256 HEX` (of the body
                      sent), read the answer, print `status NNN` (and `etag E`
                      when there is one); exit 0 on 200, 1 on any other status.

If the server closes or resets the connection before answering (the gateway
was killed), prints `connection lost after N` and exits 3; if it answers
early (mid-body), prints `status NNN` and exits 1. A stall longer than
--timeout (default 120 s) prints `timeout after N` and exits 4. Bad usage
exits 2.

Environment: S3_ENDPOINT (http://host:port, path-style), AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION (default us-east-1). Standard
library and botocore only.
"""

import argparse
import hashlib
import os
import socket
import ssl
import struct
import sys
import time
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class PathSigV4Auth(SigV4Auth):
    """SigV4 for S3: the path is signed as sent (already URI-encoded)."""

    def _normalize_url_path(self, path):
        return path


def say(line):
    print(line, flush=True)


def parse_args():
    p = argparse.ArgumentParser(description="One slow signed PUT of random bytes.")
    p.add_argument("bucket")
    p.add_argument("key")
    p.add_argument("total", type=int, metavar="TOTAL_BYTES")
    p.add_argument("--stop-after", type=int, metavar="BYTES")
    p.add_argument("--piece", type=int, default=256 * 1024, metavar="BYTES")
    p.add_argument("--pause", type=float, default=0.05, metavar="SECONDS")
    p.add_argument("--graceful-close", action="store_true", help="with --stop-after: close with FIN, not RST")
    p.add_argument("--hold", action="store_true", help="with --stop-after: stall with the connection open")
    p.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS")
    a = p.parse_args()
    if a.total < 0 or a.piece <= 0 or a.pause < 0:
        p.error("TOTAL_BYTES >= 0, --piece > 0, --pause >= 0")
    if a.stop_after is not None and not 0 <= a.stop_after <= a.total:
        p.error("--stop-after must be between 0 and TOTAL_BYTES")
    return a


def signed_head(endpoint, region, creds, bucket, key, total):
    path = "/" + urllib.parse.quote(bucket, safe="-_.~") + "/" + urllib.parse.quote(key, safe="-_.~/")
    headers = {
        "Host": endpoint.netloc,
        "Content-Length": str(total),
        "Content-Type": "application/octet-stream",
        "X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD",
    }
    req = AWSRequest(method="PUT", url=f"{endpoint.scheme}://{endpoint.netloc}{path}", data=b"", headers=headers)
    PathSigV4Auth(creds, "s3", region).add_auth(req)
    lines = [f"PUT {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in req.headers.items()] + ["", ""]
    return "\r\n".join(lines).encode()


def connect(endpoint, timeout):
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    s = socket.create_connection((endpoint.hostname, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if endpoint.scheme == "https":
        ctx = ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or None)
        s = ctx.wrap_socket(s, server_hostname=endpoint.hostname)
    return s


def early_answer(sock):
    """After a failed send: the status of an answer the server sent before
    closing, or None if it sent none."""
    try:
        sock.settimeout(2)
        data = sock.recv(4096)
    except OSError:
        return None
    return status_of(data)


def status_of(data):
    if not data.startswith(b"HTTP/"):
        return None
    try:
        return int(data.split(b"\r\n", 1)[0].split()[1])
    except (IndexError, ValueError):
        return None


def read_answer(sock):
    """(status, headers dict, body) of the response, or None if the connection
    ended first."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = sock.recv(65536)
        if not c:
            return None
        buf += c
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0") or 0)
    while len(body) < n:
        c = sock.recv(65536)
        if not c:
            break
        body += c
    return status, hdrs, body


def answer_or_exit(sock, sent):
    """(the answer, None), or (None, the exit code) after printing why
    there is none: a timeout (4) or a closed connection (3)."""
    try:
        answer = read_answer(sock)
    except socket.timeout:
        say(f"timeout after {sent}")
        return None, 4
    except OSError:
        answer = None
    if answer is None:
        say(f"connection lost after {sent}")
        return None, 3
    return answer, None


def main():
    a = parse_args()
    missing = [v for v in ("S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    if missing:
        print(f"slow_put: set {', '.join(missing)}", file=sys.stderr)
        return 2
    endpoint = urllib.parse.urlsplit(os.environ["S3_ENDPOINT"].rstrip("/"))
    region = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])

    limit = a.total if a.stop_after is None else a.stop_after
    digest = hashlib.sha256()
    sent = 0
    try:
        sock = connect(endpoint, a.timeout)
    except socket.timeout:
        say("timeout after 0")
        return 4
    except OSError as e:
        print(f"slow_put: cannot connect: {e}", file=sys.stderr)
        say("connection lost after 0")
        return 3
    try:
        try:
            sock.sendall(signed_head(endpoint, region, creds, a.bucket, a.key, a.total))
            while sent < limit:
                if sent and a.pause:
                    time.sleep(a.pause)
                piece = os.urandom(min(a.piece, limit - sent))
                sock.sendall(piece)
                digest.update(piece)
                sent += len(piece)
                say(f"sent {sent}")
        except socket.timeout:
            say(f"timeout after {sent}")
            return 4
        except OSError:
            st = early_answer(sock)
            if st is not None:
                say(f"status {st}")
                return 1
            say(f"connection lost after {sent}")
            return 3

        if a.stop_after is not None and a.hold:
            answer, code = answer_or_exit(sock, sent)
            if answer is None:
                return code
            say(f"status {answer[0]}")
            return 1
        if a.stop_after is not None:
            if not a.graceful_close:
                # SO_LINGER with a zero timeout: close() sends a RST at once.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            say(f"stopped after {sent}")
            return 0

        say(f"sha256 {digest.hexdigest()}")
        answer, code = answer_or_exit(sock, sent)
        if answer is None:
            return code
        status, hdrs, body = answer
        say(f"status {status}")
        if "etag" in hdrs:
            say(f"etag {hdrs['etag']}")
        if status != 200:
            print(body.decode("utf-8", "replace"), file=sys.stderr)
            return 1
        return 0
    finally:
        try:
            sock.close()
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
