#!/usr/bin/env python3
"""Objects in compressed buckets through boto3, for the compression tests
(chaos/tests/s3_objects.rs): every corpus file round-trips by sha256, whole
and by ranges that start and end inside frames, in single PUTs, multipart
uploads and copies between buckets of different policies.

Usage: compression.py load BUCKET...     (the buckets exist already)
       compression.py clear BUCKET...
       compression.py info BUCKET       (the gateway's admin endpoint)

The corpus is data no one here wrote: pydicom's sample DICOM files (CT,
MR, JPEG and JPEG 2000 compressed), a tar of Python's standard library
sources (text), and random bytes. `load` prints `ok load <bucket> <bytes>`
per bucket, the bytes the bucket's current objects hold as sent; `clear`
deletes every object and prints `ok clear`; `info` GETs
/?chuyi-bucket-info=BUCKET signed with SigV4 (and once unsigned) and prints
`status <code> <body>` for each. Environment: S3_ENDPOINT,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
"""

import hashlib
import io
import os
import random
import sys
import tarfile

import boto3
import pydicom
from botocore.config import Config

KiB = 1024
MiB = 1024 * 1024
FRAME = 128 * KiB


def client():
    return boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def sha(data):
    return hashlib.sha256(data).hexdigest()


def fail(what):
    print(f"FAIL {what}", flush=True)
    sys.exit(1)


def eq(got, want, what):
    if got != want:
        fail(f"{what}: got {got!r}, want {want!r}")


def corpus():
    """(name, bytes) of every file of the corpus."""
    files = []
    d = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
    for name in sorted(os.listdir(d)):
        if name.endswith(".dcm"):
            with open(os.path.join(d, name), "rb") as f:
                files.append((f"dicom/{name}", f.read()))
    # Text: Python's own json and email packages, as a tar.
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for pkg in ("json", "email"):
            tar.add(os.path.dirname(__import__(pkg).__file__), arcname=pkg)
    files.append(("text/stdlib.tar", out.getvalue()))
    files.append(("random/3MiB", random.Random(7).randbytes(3 * MiB + 5)))
    return files


def get(s3, bucket, key, rng=None):
    kwargs = {"Range": f"bytes={rng[0]}-{rng[1] - 1}"} if rng else {}
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def check_ranges(s3, bucket, key, data):
    """Ranges inside one frame, across frames, to the end, and a suffix."""
    n = len(data)
    ranges = [(0, 1), (n // 2, n // 2 + 1)]
    if n > FRAME + 20:
        ranges += [(10, FRAME + 10), (FRAME - 7, FRAME + 7), (FRAME + 3, n - 3), (n - 5, n)]
    for a, b in ranges:
        eq(sha(get(s3, bucket, key, (a, b))), sha(data[a:b]), f"{bucket}/{key} bytes {a}-{b - 1}")
    tail = s3.get_object(Bucket=bucket, Key=key, Range="bytes=-9")["Body"].read()
    eq(tail, data[-9:], f"{bucket}/{key} suffix range")


def load(s3, bucket, files, other):
    held = 0
    for key, data in files:
        r = s3.put_object(Bucket=bucket, Key=key, Body=data)
        eq(r["ETag"].strip('"'), hashlib.md5(data).hexdigest(), f"{bucket}/{key} ETag")
        h = s3.head_object(Bucket=bucket, Key=key)
        eq(h["ContentLength"], len(data), f"{bucket}/{key} Content-Length")
        eq(sha(get(s3, bucket, key)), sha(data), f"{bucket}/{key} content")
        check_ranges(s3, bucket, key, data)
        held += len(data)

    # Overwrite one, delete one: the bucket holds what is current.
    key, data = files[0]
    s3.put_object(Bucket=bucket, Key=key, Body=data + data)
    held += len(data)
    gone_key, gone = files[1]
    s3.delete_object(Bucket=bucket, Key=gone_key)
    held -= len(gone)

    # Multipart: text parts of 5 MiB and 1 MiB + 3, read across the seam.
    text = files[-2][1]
    whole = (text * (6 * MiB // len(text) + 1))[: 6 * MiB + 3]
    parts = [whole[: 5 * MiB], whole[5 * MiB:]]
    key = "multipart/text"
    uid = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    for n, part in enumerate(parts, 1):
        e = s3.upload_part(Bucket=bucket, Key=key, UploadId=uid, PartNumber=n, Body=part)["ETag"]
        done.append({"PartNumber": n, "ETag": e})
    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=uid)["Parts"]
    eq([p["Size"] for p in listed], [len(p) for p in parts], f"{bucket} listed part sizes")
    s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=uid, MultipartUpload={"Parts": done})
    eq(s3.head_object(Bucket=bucket, Key=key)["ContentLength"], len(whole), f"{bucket} multipart length")
    eq(sha(get(s3, bucket, key)), sha(whole), f"{bucket} multipart content")
    check_ranges(s3, bucket, key, whole)
    seam = 5 * MiB
    eq(sha(get(s3, bucket, key, (seam - 100, seam + 100))), sha(whole[seam - 100: seam + 100]), "across parts")
    held += len(whole)

    # A part copied from a compressed object, and copies both ways
    # between this bucket and another of a different policy.
    src_key, src = files[2]
    copied = "copied/" + src_key
    s3.copy_object(Bucket=other, Key=copied, CopySource={"Bucket": bucket, "Key": src_key})
    eq(sha(get(s3, other, copied)), sha(src), f"copy {bucket} -> {other}")
    s3.copy_object(Bucket=bucket, Key="back", CopySource={"Bucket": other, "Key": copied})
    eq(sha(get(s3, bucket, "back")), sha(src), f"copy {other} -> {bucket}")
    s3.delete_object(Bucket=other, Key=copied)
    held += len(src)
    uid = s3.create_multipart_upload(Bucket=bucket, Key="part-copy")["UploadId"]
    r = s3.upload_part_copy(Bucket=bucket, Key="part-copy", UploadId=uid, PartNumber=1,
                            CopySource={"Bucket": bucket, "Key": key}, CopySourceRange=f"bytes=10-{seam + 9}")
    s3.complete_multipart_upload(Bucket=bucket, Key="part-copy", UploadId=uid,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": r["CopyPartResult"]["ETag"]}]})
    eq(sha(get(s3, bucket, "part-copy")), sha(whole[10: seam + 10]), f"{bucket} part copy")
    held += seam
    return held


def clear(s3, bucket):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])


def info(bucket):
    """The admin endpoint, signed as S3 requests are, then unsigned."""
    import urllib.error
    import urllib.request
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = os.environ["S3_ENDPOINT"].rstrip("/") + "/?chuyi-bucket-info=" + bucket
    creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    signed = AWSRequest(method="GET", url=url)
    S3SigV4Auth(creds, "s3", os.environ.get("AWS_DEFAULT_REGION") or "us-east-1").add_auth(signed)
    for headers in (dict(signed.headers.items()), {}):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers)) as r:
                print(f"status {r.status} {r.read().decode()}", flush=True)
        except urllib.error.HTTPError as e:
            print(f"status {e.code} {e.read().decode()}", flush=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "info":
        info(sys.argv[2])
        return 0
    if len(sys.argv) < 3 or sys.argv[1] not in ("load", "clear"):
        print(__doc__, file=sys.stderr)
        return 2
    s3 = client()
    buckets = sys.argv[2:]
    if sys.argv[1] == "clear":
        for b in buckets:
            clear(s3, b)
        print("ok clear", flush=True)
        return 0
    files = corpus()
    for i, b in enumerate(buckets):
        other = buckets[(i + 1) % len(buckets)]
        print(f"ok load {b} {load(s3, b, files, other)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
