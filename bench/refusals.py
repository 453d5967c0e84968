#!/usr/bin/env python3
"""What a refused request costs the S3 gateway (issue 23), against what an
accepted one costs, in one run: the gateway process's CPU (utime + stime
from /proc/PID/stat) per request, over N requests of each kind on
keep-alive connections (a new connection per garbage request). The
gateway answers an address refused more than 100 times a second 503
SlowDown unread: each kind's requests come from a new loopback address
every 150 requests, so that the refusals themselves are measured, and a
last row sends them all from one address, as an attacker would.

Usage: refusals.py PID [N]   (PID: the process serving S3; environment as
chuyi up's up.env: CHUYI_S3_ENDPOINT, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION). Prints a markdown table.
"""

import http.client
import socket
import sys
import time

from gateway_cpu import cpu_seconds, setup, signed_headers

BUCKET = "refusals"
KEY = "obj"


def main():
    pid, n, host, url, access, secret, region = setup(BUCKET, KEY)

    rotating = iter(range(10**9))
    kinds = [
        ("signed GET 4 KiB (200)", lambda: signed_headers(url, access, secret, region), 200),
        ("unsigned GET of a private object (403 AccessDenied)", lambda: {}, 403),
        ("unknown access key (403 InvalidAccessKeyId)", lambda: signed_headers(url, "AKIANOSUCHKEY0000000", secret, region), 403),
        ("wrong secret (403 SignatureDoesNotMatch)", lambda: signed_headers(url, access, "x" * 40, region), 403),
        ("a new unknown access key per request (403 InvalidAccessKeyId)",
         lambda: signed_headers(url, f"AKIAROT{next(rotating):013d}", secret, region), 403),
    ]
    rows = []
    addresses = iter(f"127.0.{a}.{b}" for a in range(1, 250) for b in range(1, 250))

    def measure(name, headers, want, rotate):
        prepared = [headers() for _ in range(n)]  # signing is the client's cost, done before timing
        conn = None
        before, start = cpu_seconds(pid), time.time()
        for i, h in enumerate(prepared):
            if conn is None or (rotate and i % 150 == 0):
                if conn is not None:
                    conn.close()
                conn = http.client.HTTPConnection(host, source_address=(next(addresses), 0))
            conn.request("GET", f"/{BUCKET}/{KEY}", headers=h)
            r = conn.getresponse()
            r.read()
            if r.status not in (want if isinstance(want, tuple) else (want,)):
                sys.exit(f"{name}: status {r.status}, not {want}")
            if r.getheader("connection", "").lower() == "close":
                conn.close()
                conn = None
        rows.append((name, (cpu_seconds(pid) - before) / n, n / (time.time() - start)))
        conn.close()

    for name, headers, want in kinds:
        measure(name, headers, want, True)
    # The attacker's way: a new made-up key per request, one address; past
    # its first 200 refusals, SlowDown unread (a few let through a second).
    burst = [signed_headers(url, f"AKIANEW{i:013d}", secret, region) for i in range(250)]
    conn = http.client.HTTPConnection(host, source_address=(next(addresses), 0))
    for h in burst:
        conn.request("GET", f"/{BUCKET}/{KEY}", headers=h)
        conn.getresponse().read()
    conn.close()
    keys = iter(range(250, 250 + n))
    measure("a new unknown access key per request, one address past its refusals (503 SlowDown)",
            lambda: signed_headers(url, f"AKIANEW{next(keys):013d}", secret, region), (503, 403), False)

    hostname, port = host.split(":")
    before, start = cpu_seconds(pid), time.time()
    for _ in range(n):
        with socket.create_connection((hostname, int(port))) as sock:
            sock.sendall(b"\x16\x03\x01garbage that is not HTTP\r\n\r\n")
            while sock.recv(4096):
                pass
    rows.append(("garbage instead of HTTP (400, closed), a connection each", (cpu_seconds(pid) - before) / n,
                 n / (time.time() - start)))

    base = rows[0][1]
    print(f"| request | gateway CPU µs/request | / signed GET | requests/s (one client) |")
    print("|---|---:|---:|---:|")
    for name, cpu, rate in rows:
        print(f"| {name} | {cpu * 1e6:.0f} | {cpu / base:.2f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
