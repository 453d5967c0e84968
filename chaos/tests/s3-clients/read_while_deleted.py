#!/usr/bin/env python3
"""GETs that outlive the object they read, through boto3.

Usage: read_while_deleted.py BUCKET --pause SECONDS

Creates BUCKET and PUTs two 40 MiB objects of random bytes, `doomed` and
`replaced`. Opens a GET of each and reads its first MiB; then DELETEs
`doomed` and overwrites `replaced` with 1 KiB, and waits SECONDS (long
enough for the gateway's reclaimer to have freed the old data, were it
not for its garbage grace). Then reads the rest of both GETs: each must
be the whole old object (sha256). A new GET of `doomed` is NoSuchKey, of
`replaced` the new 1 KiB. Deletes both and the bucket. Prints
`ok read_while_deleted`.

Any mismatch prints `FAIL ...` and exits 1. Environment as the other
scripts. boto3 never retries (a retry would hide a failure).
"""

import argparse
import hashlib
import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

MiB = 1024 * 1024


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bucket")
    parser.add_argument("--pause", type=float, required=True)
    args = parser.parse_args()
    s3 = client()
    s3.create_bucket(Bucket=args.bucket)
    data = {key: os.urandom(40 * MiB) for key in ("doomed", "replaced")}
    for key, body in data.items():
        s3.put_object(Bucket=args.bucket, Key=key, Body=body)
    streams = {key: s3.get_object(Bucket=args.bucket, Key=key)["Body"] for key in data}
    heads = {key: stream.read(MiB) for key, stream in streams.items()}
    s3.delete_object(Bucket=args.bucket, Key="doomed")
    s3.put_object(Bucket=args.bucket, Key="replaced", Body=b"n" * 1024)
    print(f"deleted and replaced; waiting {args.pause} s", flush=True)
    time.sleep(args.pause)
    for key, stream in streams.items():
        try:
            got = heads[key] + stream.read()
        except Exception as e:  # the stream cut: the old data was freed under it
            fail(f"GET of {key} cut after its object changed: {e!r}")
        if hashlib.sha256(got).digest() != hashlib.sha256(data[key]).digest():
            fail(f"GET of {key} read {len(got)} bytes, not the old object's {len(data[key])}")
    try:
        s3.get_object(Bucket=args.bucket, Key="doomed")
        fail("doomed still reads")
    except ClientError as e:
        if e.response["Error"]["Code"] != "NoSuchKey":
            fail(f"doomed: {e}")
    if s3.get_object(Bucket=args.bucket, Key="replaced")["Body"].read() != b"n" * 1024:
        fail("replaced does not read as its new body")
    s3.delete_object(Bucket=args.bucket, Key="replaced")
    s3.delete_bucket(Bucket=args.bucket)
    print("ok read_while_deleted", flush=True)


if __name__ == "__main__":
    main()
