#!/usr/bin/env python3
"""Server-side encryption through boto3, for the encryption tests
(chaos/tests/s3_objects.rs).

Usage: encryption.py load BUCKET...      every corpus file through buckets
                                         that encrypt by default (as
                                         compression.py load: sha256, ranges
                                         inside frames, multipart, copies
                                         between the buckets), then their
                                         encryption headers
       encryption.py sse BUCKET          per-request SSE and SSE-C in a bucket
                                         with no default: headers, errors,
                                         copies, multipart
       encryption.py put BUCKET KEY TEXT [SSE]  one PUT (SSE: its
                                         x-amz-server-side-encryption)
       encryption.py probe BUCKET KEY    GET and HEAD of one object
       encryption.py default BUCKET      Put/Get/DeleteBucketEncryption

`put` and `probe` print `status <op> <http status> <error code> <sha256 or
->` per request and never fail: the Rust test judges what a gateway with
another KEK (or none) answers. The others print `ok <mode> ...` lines and
exit 1 with `FAIL ...` at the first failure. Environment: S3_ENDPOINT,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION.
"""

import base64
import hashlib
import os
import sys

from botocore.exceptions import ClientError

import compression
from compression import client, eq, fail, sha

MiB = 1024 * 1024


def error_of(call):
    """The (HTTP status, S3 error code) `call` fails with; fails if it does not."""
    try:
        call()
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"].get("Code")
    fail("a request that must fail succeeded")


def load(s3, buckets):
    files = compression.corpus()
    for i, b in enumerate(buckets):
        algorithm = s3.get_bucket_encryption(Bucket=b)["ServerSideEncryptionConfiguration"]["Rules"][0][
            "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"]
        other = buckets[(i + 1) % len(buckets)]
        held = compression.load(s3, b, files, other)
        for key, _ in files[2:5]:
            eq(s3.head_object(Bucket=b, Key=key).get("ServerSideEncryption"), algorithm, f"{b}/{key} HEAD")
            eq(s3.get_object(Bucket=b, Key=key).get("ServerSideEncryption"), algorithm, f"{b}/{key} GET")
        eq(s3.head_object(Bucket=b, Key="multipart/text").get("ServerSideEncryption"), algorithm,
           f"{b} multipart HEAD")
        print(f"ok load {b} {held}", flush=True)


def default(s3, bucket):
    code = error_of(lambda: s3.get_bucket_encryption(Bucket=bucket))
    eq(code, (404, "ServerSideEncryptionConfigurationNotFoundError"), "no default yet")
    for algorithm in ("SM4", "AES256"):
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": algorithm}}]})
        got = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0]
        eq(got["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], algorithm, "the default read back")
        r = s3.put_object(Bucket=bucket, Key=f"by-default-{algorithm}", Body=b"x" * 1000)
        eq(r.get("ServerSideEncryption"), algorithm, f"a PUT under the {algorithm} default")
    kms = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}
    eq(error_of(lambda: s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=kms)),
       (501, "NotImplemented"), "aws:kms refused")
    eq(s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"][0][
        "ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"], "AES256", "a refused default changes nothing")
    s3.delete_bucket_encryption(Bucket=bucket)
    eq(error_of(lambda: s3.get_bucket_encryption(Bucket=bucket))[0], 404, "deleted")
    eq(s3.put_object(Bucket=bucket, Key="after-delete", Body=b"y").get("ServerSideEncryption"), None,
       "no default, no encryption")
    for algorithm in ("SM4", "AES256"):
        eq(s3.head_object(Bucket=bucket, Key=f"by-default-{algorithm}").get("ServerSideEncryption"), algorithm,
           "objects keep the encryption they were written with")
        s3.delete_object(Bucket=bucket, Key=f"by-default-{algorithm}")
    s3.delete_object(Bucket=bucket, Key="after-delete")
    print("ok default", flush=True)


def sse(s3, bucket):
    data = os.urandom(3 * MiB + 11)
    # Per-request algorithms, in a bucket with no default.
    for algorithm in ("SM4", "AES256"):
        key = f"req-{algorithm}"
        r = s3.put_object(Bucket=bucket, Key=key, Body=data, ServerSideEncryption=algorithm)
        eq(r.get("ServerSideEncryption"), algorithm, f"PUT {algorithm} answer")
        eq(r["ETag"].strip('"'), hashlib.md5(data).hexdigest(), f"{algorithm} ETag is the MD5")
        eq(s3.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption"), algorithm, f"HEAD {algorithm}")
        eq(sha(compression.get(s3, bucket, key)), sha(data), f"{algorithm} content")
        compression.check_ranges(s3, bucket, key, data)
        # Copied into a plain object, and copied onto itself with another.
        c = s3.copy_object(Bucket=bucket, Key=key + "-plain", CopySource={"Bucket": bucket, "Key": key})
        eq(c.get("ServerSideEncryption"), None, "a copy without SSE is plain")
        eq(sha(compression.get(s3, bucket, key + "-plain")), sha(data), "plain copy content")
        c = s3.copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": bucket, "Key": key},
                           ServerSideEncryption="AES256" if algorithm == "SM4" else "SM4")
        eq(sha(compression.get(s3, bucket, key)), sha(data), "re-encrypted in place")
    for bad, want in (("aws:kms", (501, "NotImplemented")), ("sm4", (400, "InvalidArgument"))):
        got = error_of(lambda: s3.put_object(Bucket=bucket, Key="bad", Body=b"x", ServerSideEncryption=bad))
        eq(got, want, f"SSE {bad!r}")
    eq(error_of(lambda: s3.head_object(Bucket=bucket, Key="bad"))[0], 404, "a refused PUT stores nothing")

    # Multipart under SM4, and an empty object.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mp", ServerSideEncryption="SM4")
    eq(uid.get("ServerSideEncryption"), "SM4", "CreateMultipartUpload answer")
    uid = uid["UploadId"]
    parts = [data[:5 * MiB] if len(data) >= 5 * MiB else data + os.urandom(5 * MiB - len(data)), data[:777]]
    done = []
    for n, part in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key="mp", UploadId=uid, PartNumber=n, Body=part)
        eq(r.get("ServerSideEncryption"), "SM4", "UploadPart answer")
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    r = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=uid, MultipartUpload={"Parts": done})
    eq(r.get("ServerSideEncryption"), "SM4", "Complete answer")
    whole = b"".join(parts)
    eq(sha(compression.get(s3, bucket, "mp")), sha(whole), "SM4 multipart content")
    compression.check_ranges(s3, bucket, "mp", whole)
    r = s3.put_object(Bucket=bucket, Key="empty", Body=b"", ServerSideEncryption="SM4")
    eq(s3.head_object(Bucket=bucket, Key="empty").get("ServerSideEncryption"), "SM4", "empty SM4 object")
    eq(compression.get(s3, bucket, "empty"), b"", "empty SM4 content")

    # SSE-C: the client's key, sent with every request.
    key_c = os.urandom(32)
    other_c = os.urandom(32)
    c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key_c}
    r = s3.put_object(Bucket=bucket, Key="ssec", Body=data, **c)
    md5 = base64.b64encode(hashlib.md5(key_c).digest()).decode()
    eq(r.get("SSECustomerKeyMD5"), md5, "PUT SSE-C answers the key's MD5")
    h = s3.head_object(Bucket=bucket, Key="ssec", **c)
    eq((h.get("SSECustomerAlgorithm"), h.get("SSECustomerKeyMD5")), ("AES256", md5), "HEAD SSE-C")
    eq(sha(s3.get_object(Bucket=bucket, Key="ssec", **c)["Body"].read()), sha(data), "SSE-C content")
    part = s3.get_object(Bucket=bucket, Key="ssec", Range="bytes=200000-400000", **c)["Body"].read()
    eq(part, data[200000:400001], "SSE-C range")
    eq(error_of(lambda: s3.get_object(Bucket=bucket, Key="ssec")), (400, "InvalidRequest"), "GET without the key")
    eq(error_of(lambda: s3.head_object(Bucket=bucket, Key="ssec"))[0], 400, "HEAD without the key")
    wrong = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": other_c}
    eq(error_of(lambda: s3.get_object(Bucket=bucket, Key="ssec", **wrong)), (403, "AccessDenied"), "a wrong key")
    eq(error_of(lambda: s3.head_object(Bucket=bucket, Key="ssec", **wrong))[0], 403, "HEAD with a wrong key")
    bad_md5 = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(key_c).decode(),
               "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(other_c).digest()).decode()}
    eq(error_of(lambda: s3.put_object(Bucket=bucket, Key="x", Body=b"x", **bad_md5)), (400, "InvalidArgument"),
       "a key whose MD5 does not match")
    short = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key_c[:16]}
    eq(error_of(lambda: s3.put_object(Bucket=bucket, Key="x", Body=b"x", **short)), (400, "InvalidArgument"),
       "a 128-bit key")
    eq(error_of(lambda: s3.get_object(Bucket=bucket, Key="req-SM4", **c)), (400, "InvalidRequest"),
       "a customer key for an object that has none")
    both = dict(c, ServerSideEncryption="AES256")
    eq(error_of(lambda: s3.put_object(Bucket=bucket, Key="x", Body=b"x", **both))[0], 400, "SSE-C and SSE")
    eq(error_of(lambda: s3.head_object(Bucket=bucket, Key="x"))[0], 404, "refused SSE-C PUTs store nothing")
    # Copies: from SSE-C with the source key, to SSE-C with a new one.
    src = {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key_c}
    eq(error_of(lambda: s3.copy_object(Bucket=bucket, Key="c1", CopySource={"Bucket": bucket, "Key": "ssec"}))[0],
       400, "copy without the source key")
    s3.copy_object(Bucket=bucket, Key="c1", CopySource={"Bucket": bucket, "Key": "ssec"}, **src)
    eq(sha(compression.get(s3, bucket, "c1")), sha(data), "SSE-C copied to plain")
    new = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": other_c}
    s3.copy_object(Bucket=bucket, Key="c2", CopySource={"Bucket": bucket, "Key": "ssec"}, **src, **new)
    eq(sha(s3.get_object(Bucket=bucket, Key="c2", **new)["Body"].read()), sha(data), "SSE-C copied to SSE-C")
    eq(error_of(lambda: s3.get_object(Bucket=bucket, Key="c2", **c))[0], 403, "the copy's key is its own")
    # Multipart SSE-C: the key with every part; a part without it refused.
    uid = s3.create_multipart_upload(Bucket=bucket, Key="mpc", **c)["UploadId"]
    eq(error_of(lambda: s3.upload_part(Bucket=bucket, Key="mpc", UploadId=uid, PartNumber=1, Body=b"x"))[0], 400,
       "a part without the upload's key")
    eq(error_of(lambda: s3.upload_part(Bucket=bucket, Key="mpc", UploadId=uid, PartNumber=1, Body=b"x",
                                       **wrong))[0], 403, "a part with another key")
    done = []
    for n, p in enumerate(parts, 1):
        r = s3.upload_part(Bucket=bucket, Key="mpc", UploadId=uid, PartNumber=n, Body=p, **c)
        done.append({"PartNumber": n, "ETag": r["ETag"]})
    s3.complete_multipart_upload(Bucket=bucket, Key="mpc", UploadId=uid, MultipartUpload={"Parts": done}, **c)
    eq(sha(s3.get_object(Bucket=bucket, Key="mpc", **c)["Body"].read()), sha(whole), "SSE-C multipart")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=o["Key"])
    print("ok sse", flush=True)


def status(op, call):
    try:
        r = call()
        body = r["Body"].read() if "Body" in r else None
        print(f"status {op} 200 - {sha(body) if body is not None else '-'}", flush=True)
    except ClientError as e:
        code = e.response["Error"].get("Code")
        msg = e.response["Error"].get("Message", "")
        print(f"status {op} {e.response['ResponseMetadata']['HTTPStatusCode']} {code} - {msg}", flush=True)


def main():
    s3 = client()
    args = sys.argv[1:]
    if len(args) >= 2 and args[0] == "load":
        load(s3, args[1:])
    elif len(args) == 2 and args[0] == "sse":
        sse(s3, args[1])
    elif len(args) == 2 and args[0] == "default":
        default(s3, args[1])
    elif len(args) in (4, 5) and args[0] == "put":
        extra = {"ServerSideEncryption": args[4]} if len(args) == 5 else {}
        status("put", lambda: s3.put_object(Bucket=args[1], Key=args[2], Body=args[3].encode(), **extra))
    elif len(args) == 3 and args[0] == "probe":
        status("get", lambda: s3.get_object(Bucket=args[1], Key=args[2]))
        status("head", lambda: s3.head_object(Bucket=args[1], Key=args[2]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
