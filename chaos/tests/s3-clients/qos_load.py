#!/usr/bin/env python3
"""S3 load for the QoS tests: users reading (or writing) objects through
several gateways at once, with what each got, second by second.

Usage:
  qos_load.py setup --endpoint URL --owner NAME:ACCESS:SECRET --reader NAME
                    --bucket B --object KEY:BYTES [--object ...]
      Creates bucket B as the owner, lets user `reader` read it (a bucket
      policy), and writes each object of random bytes.
  qos_load.py load --endpoints URL[,URL...] --bucket B --key KEY
                   --user NAME:ACCESS:SECRET:THREADS [--user ...]
                   --seconds S
      Each user's THREADS threads GET B/KEY in a loop for S seconds, thread i
      through endpoint i mod the number of endpoints, with no retries (a
      503 SlowDown is counted, and the thread pauses 0.1 s). Prints one
      JSON object:
      {"start": unix seconds, "users": {NAME: {"ok": n, "bytes": n,
       "slowdowns": n, "errors": n, "first_error": str,
       "series": [[t0, ok, bytes, slowdowns], ...]}}}
      where each series entry counts what completed in the quarter second
      starting t0 seconds after start.

Standard library and boto3 only.
"""

import argparse
import json
import os
import sys
import threading
import time

import boto3
import botocore.config
import botocore.exceptions

STEP = 0.25


def client(endpoint, access, secret):
    config = botocore.config.Config(
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path"},
        max_pool_connections=64,
        read_timeout=60,
        connect_timeout=10,
    )
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=config,
    )


def setup(args):
    name, access, secret = args.owner.split(":")
    s3 = client(args.endpoint, access, secret)
    s3.create_bucket(Bucket=args.bucket)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": [args.reader]},
                "Action": ["s3:GetObject"],
                "Resource": ["arn:aws:s3:::%s/*" % args.bucket],
            }
        ],
    }
    s3.put_bucket_policy(Bucket=args.bucket, Policy=json.dumps(policy))
    for spec in args.object:
        key, size = spec.split(":")
        s3.put_object(Bucket=args.bucket, Key=key, Body=os.urandom(int(size)))
    print(json.dumps({"ok": True}))


class Tally:
    def __init__(self, seconds):
        self.lock = threading.Lock()
        self.ok = self.bytes = self.slowdowns = self.errors = 0
        self.first_error = ""
        self.series = [[round(i * STEP, 2), 0, 0, 0] for i in range(int(seconds / STEP) + 8)]

    def add(self, at, ok, nbytes, slowdown, error=""):
        i = min(int(at / STEP), len(self.series) - 1)
        with self.lock:
            if ok:
                self.ok += 1
                self.bytes += nbytes
                self.series[i][1] += 1
                self.series[i][2] += nbytes
            elif slowdown:
                self.slowdowns += 1
                self.series[i][3] += 1
            else:
                self.errors += 1
                self.first_error = self.first_error or error

    def json(self):
        return {
            "ok": self.ok,
            "bytes": self.bytes,
            "slowdowns": self.slowdowns,
            "errors": self.errors,
            "first_error": self.first_error,
            "series": self.series,
        }


def reader(s3, bucket, key, start, end, tally):
    while True:
        now = time.time()
        if now >= end:
            return
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            tally.add(time.time() - start, True, len(body), False)
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            tally.add(time.time() - start, False, 0, code == "SlowDown", "%s: %s" % (code, e))
            # Backs off as S3 clients do, if briefly.
            time.sleep(0.1 if code == "SlowDown" else 0.05)
        except Exception as e:  # a dropped connection: counted, not fatal
            tally.add(time.time() - start, False, 0, False, repr(e))
            time.sleep(0.05)


def load(args):
    endpoints = args.endpoints.split(",")
    start = time.time() + 0.5
    end = start + args.seconds
    tallies, threads = {}, []
    for spec in args.user:
        name, access, secret, count = spec.split(":")
        tally = tallies[name] = Tally(args.seconds)
        for i in range(int(count)):
            s3 = client(endpoints[i % len(endpoints)], access, secret)
            t = threading.Thread(target=reader, args=(s3, args.bucket, args.key, start, end, tally), daemon=True)
            threads.append(t)
    time.sleep(max(0.0, start - time.time()))
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.seconds + 90)
    print(json.dumps({"start": start, "users": {n: t.json() for n, t in tallies.items()}}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("setup")
    s.add_argument("--endpoint", required=True)
    s.add_argument("--owner", required=True)
    s.add_argument("--reader", required=True)
    s.add_argument("--bucket", required=True)
    s.add_argument("--object", action="append", default=[])
    l = sub.add_parser("load")
    l.add_argument("--endpoints", required=True)
    l.add_argument("--bucket", required=True)
    l.add_argument("--key", required=True)
    l.add_argument("--user", action="append", default=[])
    l.add_argument("--seconds", type=float, required=True)
    args = p.parse_args()
    if args.cmd == "setup":
        setup(args)
    else:
        load(args)


if __name__ == "__main__":
    sys.exit(main())
