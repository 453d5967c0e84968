#!/usr/bin/env python3
"""Many small objects through boto3, with a model of what each key holds,
for the tests of packed objects (chaos/tests/packs.rs).

Usage: small_objects.py COMMAND BUCKET [options]

  load BUCKET --model FILE [--threads N] [--ops N] [--seed N]
      Creates BUCKET if missing. N threads each run --ops operations on
      keys of their own: PUT (new or overwrite, 4 KiB objects mostly, from
      1 byte up to 3 MiB), DELETE, or GET checked against the model. Then
      GETs every key of the model and checks its sha256, checks that the
      listing is exactly the model's keys, and writes the model to FILE
      as JSON {key: [sha256, size]}. Prints `ok load K keys B bytes`.
  read BUCKET --model FILE [--threads N] [--seconds S]
      GETs random keys of the model for S seconds, each checked by
      sha256. Prints `ok read G gets`.
  put-until-gone BUCKET --acked FILE [--threads N]
      PUTs new small objects until the gateway is gone (any error ends a
      thread); after each acknowledged PUT appends `key sha256` to FILE
      and flushes. Prints `ok stopped A acked`.
  check-acked BUCKET --acked FILE
      Every acknowledged key reads back with its sha256. Prints
      `ok acked A`.
  clear BUCKET
      Deletes every object (every version) and the bucket. Prints `ok clear`.

Any mismatch prints `FAIL ...` and exits 1. Environment as the other
scripts: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION. boto3 never retries (a retry would hide a failure).
"""

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

KiB = 1024
MiB = 1024 * KiB


def client():
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=64,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def fail(what):
    print(f"FAIL {what}", flush=True)
    sys.exit(1)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def size_of(rng):
    """Mostly 4 KiB, as backup catalogues and reports; some sub-block and
    DICOM-slice sizes; a few just under a chunk."""
    r = rng.random()
    if r < 0.6:
        return 4 * KiB
    if r < 0.8:
        return rng.randint(1, 4 * KiB)
    if r < 0.97:
        return rng.randint(4 * KiB, 600 * KiB)
    return rng.randint(1 * MiB, 3 * MiB)


def get_checked(s3, bucket, key, want_sha):
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    if sha(body) != want_sha:
        fail(f"{key}: read {len(body)} bytes with sha256 {sha(body)}, want {want_sha}")


def run_threads(n, worker):
    """worker(t) on n threads at once; any of them failing fails the run."""
    errors = []

    def guarded(t):
        try:
            worker(t)
        except SystemExit:  # get_checked's fail(): it printed why
            errors.append(f"thread {t}: mismatch")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"thread {t}: {e!r}")

    threads = [threading.Thread(target=guarded, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        fail("; ".join(errors))


def ensure_bucket(s3, bucket):
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def load(args):
    s3 = client()
    ensure_bucket(s3, args.bucket)
    model = {}
    lock = threading.Lock()

    def worker(t):
        rng = random.Random(args.seed * 1000 + t)
        mine = {}
        keys = [f"t{t:02}/k{i:04}" for i in range(max(8, args.ops // 3))]
        for _ in range(args.ops):
            key = rng.choice(keys)
            op = rng.random()
            if op < 0.7 or key not in mine:
                data = rng.randbytes(size_of(rng))
                s3.put_object(Bucket=args.bucket, Key=key, Body=data)
                mine[key] = (sha(data), len(data))
            elif op < 0.9:
                s3.delete_object(Bucket=args.bucket, Key=key)
                del mine[key]
            else:
                get_checked(s3, args.bucket, key, mine[key][0])
        with lock:
            model.update(mine)

    run_threads(args.threads, worker)
    for key, (digest, _) in model.items():
        get_checked(s3, args.bucket, key, digest)
    listed = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=args.bucket):
        listed.update(o["Key"] for o in page.get("Contents", []))
    if listed != set(model):
        fail(f"listing: {len(listed - set(model))} keys not in the model, {len(set(model) - listed)} missing")
    with open(args.model, "w") as f:
        json.dump({k: list(v) for k, v in model.items()}, f)
    print(f"ok load {len(model)} keys {sum(v[1] for v in model.values())} bytes", flush=True)


def read(args):
    with open(args.model) as f:
        model = json.load(f)
    keys = sorted(model)
    deadline = time.monotonic() + args.seconds
    counts = [0] * args.threads

    def worker(t):
        s3 = client()
        rng = random.Random(t)
        while time.monotonic() < deadline:
            key = rng.choice(keys)
            get_checked(s3, args.bucket, key, model[key][0])
            counts[t] += 1

    run_threads(args.threads, worker)
    print(f"ok read {sum(counts)} gets", flush=True)


def put_until_gone(args):
    s3 = client()
    ensure_bucket(s3, args.bucket)
    lock = threading.Lock()
    acked = [0]
    out = open(args.acked, "a")

    def worker(t):
        rng = random.Random(t)
        s3 = client()
        i = 0
        while True:
            key = f"w{t:02}/o{i:06}"
            data = rng.randbytes(rng.choice([4 * KiB, rng.randint(1, 64 * KiB)]))
            try:
                s3.put_object(Bucket=args.bucket, Key=key, Body=data)
            except BaseException:  # noqa: BLE001 - the gateway is gone
                return
            with lock:
                out.write(f"{key} {sha(data)}\n")
                out.flush()
                acked[0] += 1
            i += 1

    run_threads(args.threads, worker)
    print(f"ok stopped {acked[0]} acked", flush=True)


def check_acked(args):
    s3 = client()
    with open(args.acked) as f:
        lines = [line.split() for line in f if line.strip()]
    for key, digest in lines:
        get_checked(s3, args.bucket, key, digest)
    print(f"ok acked {len(lines)}", flush=True)


def clear(args):
    s3 = client()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=args.bucket):
        items = page.get("Versions", []) + page.get("DeleteMarkers", [])
        for v in items:
            s3.delete_object(Bucket=args.bucket, Key=v["Key"], VersionId=v["VersionId"])
    s3.delete_bucket(Bucket=args.bucket)
    print("ok clear", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["load", "read", "put-until-gone", "check-acked", "clear"])
    p.add_argument("bucket")
    p.add_argument("--model")
    p.add_argument("--acked")
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--ops", type=int, default=60)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    {
        "load": load,
        "read": read,
        "put-until-gone": put_until_gone,
        "check-acked": check_acked,
        "clear": clear,
    }[args.command](args)


if __name__ == "__main__":
    main()
