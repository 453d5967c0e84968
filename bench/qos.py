#!/usr/bin/env python3
"""What QoS costs the S3 gateway (issue 17), in one run: the gateway
process's CPU (utime + stime from /proc/PID/stat) per signed 4 KiB GET,
over N requests of each kind from one client on one keep-alive
connection: with no rule; under a bucket rule far above the rate (the
lookup and the take, never a wait); under a rule of 500 requests/s (each
request waits its turn, about 1.3 ms at this client's pace); and refused
(503 SlowDown) under a rule of 1 request/s whose line three other clients
keep over a second long (each retries 50 ms after a refusal: their own
requests, some tens a second, are counted in, and the few of the measured
requests that find the line short are served; the table says how many).

Usage: qos.py PID [N]   (PID: the process serving S3; environment as
chuyi up's up.env, with `chuyi` on PATH). Prints a markdown table.
"""

import http.client
import subprocess
import sys
import threading
import time

from gateway_cpu import cpu_seconds, setup, signed_headers

BUCKET = "qos-bench"
KEY = "obj"


def rule(requests):
    """Sets (or with None deletes) the bucket's rule, and waits until the
    gateway has it (it learns rules at its next exchange, within 2 s)."""
    if requests is None:
        subprocess.run(["chuyi", "qos", "delete", "--bucket", BUCKET], check=False, capture_output=True)
    else:
        subprocess.run(["chuyi", "qos", "set", "--bucket", BUCKET, "--requests", str(requests)], check=True)
    time.sleep(2.5)


def main():
    pid, n, host, url, access, secret, region = setup(BUCKET, KEY)

    def run(name, requests, want, count):
        rule(requests)
        prepared = [signed_headers(url, access, secret, region) for _ in range(count)]
        conn = http.client.HTTPConnection(host)
        before, start = cpu_seconds(pid), time.time()
        for h in prepared:
            conn.request("GET", f"/{BUCKET}/{KEY}", headers=h)
            r = conn.getresponse()
            r.read()
            if r.status != want:
                sys.exit(f"{name}: status {r.status}, not {want}")
        rows.append((name, (cpu_seconds(pid) - before) / count, count / (time.time() - start)))
        conn.close()

    rows = []
    run("no rule (200)", None, 200, n)
    run("bucket rule of 1,000,000 requests/s: admitted at once (200)", 1_000_000, 200, n)
    run("bucket rule of 500 requests/s: each waits its turn (200)", 500, 200, n)

    # Two clients keep the 1 request/s rule's line over a second long, so
    # every measured request is refused at once.
    rule(1)
    stop = threading.Event()

    def hold():
        c = http.client.HTTPConnection(host)
        while not stop.is_set():
            c.request("GET", f"/{BUCKET}/{KEY}", headers=signed_headers(url, access, secret, region))
            r = c.getresponse()
            r.read()
            if r.status == 503:
                time.sleep(0.05)

    holders = [threading.Thread(target=hold, daemon=True) for _ in range(3)]
    for t in holders:
        t.start()
    time.sleep(3)
    prepared = [signed_headers(url, access, secret, region) for _ in range(n)]
    conn = http.client.HTTPConnection(host)
    before, start = cpu_seconds(pid), time.time()
    refused = 0
    for h in prepared:
        conn.request("GET", f"/{BUCKET}/{KEY}", headers=h)
        r = conn.getresponse()
        r.read()
        if r.status not in (200, 503):
            sys.exit(f"throttled: status {r.status}")
        refused += r.status == 503
    rows.append((f"bucket rule of 1 request/s, its line over a second long ({refused} of {n} 503 SlowDown)",
                 (cpu_seconds(pid) - before) / n, n / (time.time() - start)))
    stop.set()
    rule(None)

    base = rows[0][1]
    print("| request (signed GET 4 KiB) | gateway CPU µs/request | / no rule | requests/s (one client) |")
    print("|---|---:|---:|---:|")
    for name, cpu, rate in rows:
        print(f"| {name} | {cpu * 1e6:.0f} | {cpu / base:.2f} | {rate:.0f} |")


if __name__ == "__main__":
    main()
