#!/usr/bin/env python3
"""A pool that fills up, through boto3.

Usage: pool_full.py BUCKET --limit N --wait SECONDS

Creates BUCKET and PUTs 1 KiB objects `o0`, `o1`, ... (on a gateway that
gives every object chunks of its own, on small disks) until a PUT is
refused, at most N of them. The refusal must be 507 InsufficientCapacity,
not a 503 that clients retry as a busy service, and must store nothing:
its key is NoSuchKey. Every object stored before reads back. Then deletes
them all and PUTs the refused key again until it is taken (the gateway
frees the deleted objects' data after its garbage grace), for at most
SECONDS, and reads it back. Deletes it and the bucket. Prints
`ok pool_full after K objects`.

Any mismatch prints `FAIL ...` and exits 1. Environment as the other
scripts. boto3 never retries (a retry would hide a failure).
"""

import argparse
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def client():
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def fail(what):
    print(f"FAIL {what}", flush=True)
    sys.exit(1)


def body(i):
    return (f"object {i} ".encode() * 128)[:1024]


def answer(e):
    return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bucket")
    parser.add_argument("--limit", type=int, required=True)
    parser.add_argument("--wait", type=float, required=True)
    args = parser.parse_args()
    s3, b = client(), args.bucket
    s3.create_bucket(Bucket=b)
    stored = 0
    while True:
        if stored == args.limit:
            fail(f"{stored} objects stored and the pool never filled")
        try:
            s3.put_object(Bucket=b, Key=f"o{stored}", Body=body(stored))
            stored += 1
        except ClientError as e:
            if answer(e) != (507, "InsufficientCapacity"):
                fail(f"PUT o{stored} into a full pool answered {answer(e)}: {e}")
            break
    refused = f"o{stored}"
    try:
        s3.head_object(Bucket=b, Key=refused)
        fail(f"the refused {refused} exists")
    except ClientError as e:
        if answer(e)[0] != 404:
            fail(f"HEAD of the refused {refused}: {e}")
    for i in range(stored):
        if s3.get_object(Bucket=b, Key=f"o{i}")["Body"].read() != body(i):
            fail(f"o{i} does not read back after the pool filled")
        s3.delete_object(Bucket=b, Key=f"o{i}")
    deadline = time.monotonic() + args.wait
    while True:
        try:
            s3.put_object(Bucket=b, Key=refused, Body=body(stored))
            break
        except ClientError as e:
            if answer(e) != (507, "InsufficientCapacity"):
                fail(f"PUT {refused} while space is freed answered {answer(e)}: {e}")
            if time.monotonic() > deadline:
                fail(f"no space for {refused} {args.wait} s after every object was deleted")
            time.sleep(0.5)
    if s3.get_object(Bucket=b, Key=refused)["Body"].read() != body(stored):
        fail(f"{refused} does not read back once stored")
    s3.delete_object(Bucket=b, Key=refused)
    s3.delete_bucket(Bucket=b)
    print(f"ok pool_full after {stored} objects", flush=True)


if __name__ == "__main__":
    main()
