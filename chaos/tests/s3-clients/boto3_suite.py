#!/usr/bin/env python3
"""Drives a running S3 gateway with boto3, the way real applications do.

Environment:
  S3_ENDPOINT              e.g. http://127.0.0.1:9000 (path-style addressing only)
  AWS_ACCESS_KEY_ID        the first user's keys
  AWS_SECRET_ACCESS_KEY
  AWS_DEFAULT_REGION       defaults to us-east-1
  OTHER_ACCESS_KEY_ID      optional: a second user, for the ownership check
  OTHER_SECRET_ACCESS_KEY

Usage: boto3_suite.py [CHECK ...]   (no argument: every check, in order)

Each check makes its own bucket (b3-<check>-<random hex>) and removes it
afterwards. Prints `ok <check>` per check; on the first failure prints the
traceback and `FAIL <check>`, and exits 1. Uses only the standard library,
boto3 and botocore.
"""

import base64
import concurrent.futures
import contextlib
import datetime
import email.utils
import hashlib
import io
import json
import os
import re
import secrets
import struct
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zlib

import boto3
import botocore
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

KiB = 1024
MiB = 1024 * 1024
UTC = datetime.timezone.utc

ENDPOINT = None
REGION = None
ACCESS = None
SECRET = None
OTHER = None  # (access, secret) of a second user, or None
S3 = None  # the first user's client


class Skip(Exception):
    """A check that cannot run in this environment."""


# ---------------------------------------------------------------- helpers


def make_client(access, secret):
    """A path-style SigV4 client that never retries (a retry would hide a failure)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
            max_pool_connections=16,
            connect_timeout=10,
            read_timeout=120,
        ),
    )


def make_anonymous_client():
    """A client that signs nothing: what a browser or curl is to S3."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name=REGION,
        config=Config(
            signature_version=botocore.UNSIGNED,
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
        ),
    )


def rand(n):
    return os.urandom(n)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def md5_etag(data):
    return '"%s"' % hashlib.md5(data).hexdigest()


def multipart_etag(parts):
    joined = b"".join(hashlib.md5(p).digest() for p in parts)
    return '"%s-%d"' % (hashlib.md5(joined).hexdigest(), len(parts))


def status(resp):
    return resp["ResponseMetadata"]["HTTPStatusCode"]


def headers(resp):
    """Response headers, names lowercased by botocore."""
    return resp["ResponseMetadata"]["HTTPHeaders"]


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def lower_keys(d):
    return {k.lower(): v for k, v in (d or {}).items()}


def expect_error(fn, *allowed, **kwargs):
    """Calls fn(**kwargs), which must fail with one of `allowed`: (status, code) pairs,
    where code None accepts any code (HEAD errors have no body: botocore names them by
    their status, '404'). Returns the ClientError."""
    name = getattr(fn, "__name__", repr(fn))
    try:
        fn(**kwargs)
    except ClientError as e:
        got = (e.response["ResponseMetadata"]["HTTPStatusCode"], e.response.get("Error", {}).get("Code"))
        for st, code in allowed:
            if got[0] == st and (code is None or got[1] == code):
                return e
        raise AssertionError(f"{name}: expected one of {allowed}, got {got}: {e}") from e
    raise AssertionError(f"{name}: expected one of {allowed}, but the call succeeded")


def read(resp):
    body = resp["Body"]
    try:
        return body.read()
    finally:
        body.close()


def get_bytes(bucket, key, **kwargs):
    return read(S3.get_object(Bucket=bucket, Key=key, **kwargs))


def bucket_name(tag):
    tag = re.sub(r"[^a-z0-9-]", "-", tag.lower())[:30]
    return f"b3-{tag}-{secrets.token_hex(4)}"


def create_bucket(s3, name):
    kwargs = {}
    if REGION != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": REGION}
    s3.create_bucket(Bucket=name, **kwargs)


def empty_and_delete(s3, bucket, versioned, multipart):
    if multipart:
        uploads = []
        for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket):
            uploads += page.get("Uploads", [])
        for u in uploads:
            s3.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])
    objs = []
    if versioned:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
            for v in page.get("Versions", []) + page.get("DeleteMarkers", []):
                objs.append({"Key": v["Key"], "VersionId": v["VersionId"]})
    else:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            objs += [{"Key": o["Key"]} for o in page.get("Contents", [])]
    for i in range(0, len(objs), 1000):
        r = s3.delete_objects(Bucket=bucket, Delete={"Objects": objs[i : i + 1000], "Quiet": True})
        check(not r.get("Errors"), f"cleanup of {bucket}: delete_objects errors {r.get('Errors')}")
    s3.delete_bucket(Bucket=bucket)


@contextlib.contextmanager
def new_bucket(tag, versioned=False, multipart=False):
    """A fresh bucket, emptied and deleted afterwards. `versioned`: clean up by
    listing versions; `multipart`: abort leftover uploads first."""
    name = bucket_name(tag)
    create_bucket(S3, name)
    try:
        yield name
    except BaseException:
        try:
            empty_and_delete(S3, name, versioned, multipart)
        except Exception as e:  # keep the original failure visible
            print(f"warning: cleanup of {name} failed: {e}", file=sys.stderr)
        raise
    empty_and_delete(S3, name, versioned, multipart)


# Castagnoli CRC (botocore needs awscrt for it, which may be missing).
_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def b64_u32(v):
    return base64.b64encode(struct.pack(">I", v)).decode()


def checksum_b64(algorithm, data):
    if algorithm == "CRC32":
        return b64_u32(zlib.crc32(data) & 0xFFFFFFFF)
    if algorithm == "CRC32C":
        return b64_u32(crc32c(data))
    if algorithm == "SHA1":
        return base64.b64encode(hashlib.sha1(data).digest()).decode()
    if algorithm == "SHA256":
        return base64.b64encode(hashlib.sha256(data).digest()).decode()
    raise ValueError(algorithm)


def http_status(url, data=None, method="GET", hdrs=None):
    """(status, body, S3 error code or None) of a plain urllib request."""
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read(), None
    except urllib.error.HTTPError as e:
        body = e.read()
        code = None
        try:
            node = ET.fromstring(body).find("Code")
            code = node.text if node is not None else None
        except ET.ParseError:
            pass
        return e.code, body, code


def http_headers(url, method="GET", hdrs=None):
    """(status, lower-cased response headers) of a plain urllib request."""
    req = urllib.request.Request(url, method=method, headers=hdrs or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()
            return r.status, {k.lower(): v for k, v in r.headers.items()}
    except urllib.error.HTTPError as e:
        e.read()
        return e.code, {k.lower(): v for k, v in e.headers.items()}


def put_listing_keys(bucket):
    keys = [f"photos/2024/a{i:02}.dcm" for i in range(25)] + ["photos/2025/b.dcm", "readme.txt"]
    for k in keys:
        S3.put_object(Bucket=bucket, Key=k, Body=k.encode())
    return sorted(keys)


def contents_keys(resp):
    return [o["Key"] for o in resp.get("Contents", [])]


def prefixes(resp):
    return [p["Prefix"] for p in resp.get("CommonPrefixes", [])]


def version_entries(page):
    """(VersionId, IsLatest, is_delete_marker) of one list_object_versions page."""
    return [(v["VersionId"], v["IsLatest"], False) for v in page.get("Versions", [])] + [
        (m["VersionId"], m["IsLatest"], True) for m in page.get("DeleteMarkers", [])
    ]


# ----------------------------------------------------------------- checks


def check_objects():
    """put/get/head/delete with system and user metadata; ETag is the MD5."""
    expires = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    attrs = {
        "ContentType": "application/dicom",
        "ContentEncoding": "gzip",
        "ContentDisposition": 'attachment; filename="scan.dcm"',
        "CacheControl": "max-age=3600",
    }
    with new_bucket("objects") as b:
        for size in (0, 1, 4096, 5 * MiB + 3):
            data, key = rand(size), f"obj-{size}"
            put = S3.put_object(
                Bucket=b, Key=key, Body=data, Metadata={"study": "x", "Patient-Id": "42"}, Expires=expires, **attrs
            )
            eq(put["ETag"], md5_etag(data), f"put {key} ETag")
            get = S3.get_object(Bucket=b, Key=key)
            body = read(get)
            eq(sha(body), sha(data), f"get {key} content")
            head = S3.head_object(Bucket=b, Key=key)
            for what, r in (("get", get), ("head", head)):
                eq(status(r), 200, f"{what} {key} status")
                eq(r["ContentLength"], size, f"{what} {key} ContentLength")
                eq(r["ETag"], md5_etag(data), f"{what} {key} ETag")
                for name, value in attrs.items():
                    eq(r.get(name), value, f"{what} {key} {name}")
                eq(lower_keys(r.get("Metadata")), {"study": "x", "patient-id": "42"}, f"{what} {key} Metadata")
                raw = headers(r).get("expires")
                check(raw is not None, f"{what} {key}: no Expires header")
                eq(email.utils.parsedate_to_datetime(raw), expires, f"{what} {key} Expires")
                check(isinstance(r.get("LastModified"), datetime.datetime), f"{what} {key}: no LastModified")
            eq(status(S3.delete_object(Bucket=b, Key=key)), 204, f"delete {key} status")
            expect_error(S3.head_object, (404, None), Bucket=b, Key=key)
            expect_error(S3.get_object, (404, "NoSuchKey"), Bucket=b, Key=key)
            # Deleting what is not there succeeds.
            eq(status(S3.delete_object(Bucket=b, Key=key)), 204, f"second delete {key} status")


def check_range_get():
    size = 1000
    data = rand(size)
    with new_bucket("range") as b:
        S3.put_object(Bucket=b, Key="r", Body=data)
        cases = [
            ("bytes=0-9", data[:10], f"bytes 0-9/{size}"),
            ("bytes=10-", data[10:], f"bytes 10-{size - 1}/{size}"),
            ("bytes=-5", data[-5:], f"bytes {size - 5}-{size - 1}/{size}"),
            (f"bytes=995-{size + 100}", data[995:], f"bytes 995-{size - 1}/{size}"),
        ]
        for rng, want, content_range in cases:
            r = S3.get_object(Bucket=b, Key="r", Range=rng)
            eq(status(r), 206, f"{rng} status")
            eq(read(r), want, f"{rng} body")
            eq(r.get("ContentRange"), content_range, f"{rng} ContentRange")
            eq(r["ContentLength"], len(want), f"{rng} ContentLength")
        expect_error(S3.get_object, (416, "InvalidRange"), Bucket=b, Key="r", Range=f"bytes={size + 10}-{size + 20}")
        expect_error(S3.get_object, (416, "InvalidRange"), Bucket=b, Key="r", Range=f"bytes={size}-")


def check_conditional_get():
    data = rand(100)
    wrong = '"%s"' % ("0" * 32)
    with new_bucket("conditional") as b:
        etag = S3.put_object(Bucket=b, Key="c", Body=data)["ETag"]
        last = S3.head_object(Bucket=b, Key="c")["LastModified"]
        future = datetime.datetime.now(UTC) + datetime.timedelta(hours=1)
        past = last - datetime.timedelta(days=1)
        k = {"Bucket": b, "Key": "c"}

        r = S3.get_object(IfMatch=etag, **k)
        eq((status(r), read(r)), (200, data), "IfMatch right ETag")
        expect_error(S3.get_object, (412, "PreconditionFailed"), IfMatch=wrong, **k)
        expect_error(S3.get_object, (304, None), IfNoneMatch=etag, **k)
        expect_error(S3.get_object, (304, None), IfModifiedSince=future, **k)
        expect_error(S3.get_object, (412, "PreconditionFailed"), IfUnmodifiedSince=past, **k)
        # The other side of each condition.
        eq(status(S3.get_object(IfNoneMatch=wrong, **k)), 200, "IfNoneMatch other ETag")
        eq(status(S3.get_object(IfModifiedSince=past, **k)), 200, "IfModifiedSince past")
        eq(status(S3.get_object(IfUnmodifiedSince=future, **k)), 200, "IfUnmodifiedSince future")
        # HEAD has the same conditions (no body, so no error code).
        eq(status(S3.head_object(IfMatch=etag, **k)), 200, "head IfMatch right ETag")
        expect_error(S3.head_object, (412, None), IfMatch=wrong, **k)
        expect_error(S3.head_object, (304, None), IfNoneMatch=etag, **k)


def check_response_overrides():
    with new_bucket("overrides") as b:
        S3.put_object(Bucket=b, Key="o.dcm", Body=b"dicom", ContentType="application/dicom")
        r = S3.get_object(
            Bucket=b,
            Key="o.dcm",
            ResponseContentType="text/plain",
            ResponseContentDisposition='attachment; filename="a.dcm"',
            ResponseCacheControl="no-cache",
        )
        eq(read(r), b"dicom", "body")
        eq(r.get("ContentType"), "text/plain", "ContentType")
        eq(r.get("ContentDisposition"), 'attachment; filename="a.dcm"', "ContentDisposition")
        eq(r.get("CacheControl"), "no-cache", "CacheControl")
        # Only that response: the stored type is unchanged.
        eq(S3.head_object(Bucket=b, Key="o.dcm")["ContentType"], "application/dicom", "stored ContentType")


def check_checksums():
    eq(crc32c(b"123456789"), 0xE3069283, "crc32c self-test")
    data = rand(3000)
    with new_bucket("checksums") as b:
        for algorithm in ("CRC32", "CRC32C", "SHA1", "SHA256"):
            key = f"ck-{algorithm.lower()}"
            want = checksum_b64(algorithm, data)
            if algorithm == "CRC32C":
                # botocore computes CRC32C only with awscrt installed: send it ourselves.
                r = S3.put_object(Bucket=b, Key=key, Body=data, ChecksumCRC32C=want)
            else:
                r = S3.put_object(Bucket=b, Key=key, Body=data, ChecksumAlgorithm=algorithm)
            eq(r["ETag"], md5_etag(data), f"{key} ETag")
            if r.get("Checksum" + algorithm) is not None:
                eq(r["Checksum" + algorithm], want, f"{key} put response checksum")
            eq(sha(get_bytes(b, key)), sha(data), f"{key} content")
            h = S3.head_object(Bucket=b, Key=key, ChecksumMode="ENABLED")
            if h.get("Checksum" + algorithm) is not None:
                eq(h["Checksum" + algorithm], want, f"{key} head checksum")

        # A wrong Content-MD5: BadDigest, and nothing stored.
        bad_md5 = base64.b64encode(hashlib.md5(b"other data").digest()).decode()
        expect_error(S3.put_object, (400, "BadDigest"), Bucket=b, Key="bad-md5", Body=data, ContentMD5=bad_md5)
        expect_error(S3.head_object, (404, None), Bucket=b, Key="bad-md5")

        # A wrong explicit CRC32: rejected, for a new key and over an existing one.
        bad_crc = "AAAAAA=="
        check(checksum_b64("CRC32", data) != bad_crc, "random data with a zero CRC32; run again")
        allowed = ((400, "BadDigest"), (400, "InvalidRequest"))
        expect_error(S3.put_object, *allowed, Bucket=b, Key="bad-crc", Body=data, ChecksumCRC32=bad_crc)
        expect_error(S3.head_object, (404, None), Bucket=b, Key="bad-crc")
        keep = rand(500)
        S3.put_object(Bucket=b, Key="keep", Body=keep)
        expect_error(S3.put_object, *allowed, Bucket=b, Key="keep", Body=data, ChecksumCRC32=bad_crc)
        eq(sha(get_bytes(b, "keep")), sha(keep), "object after a rejected overwrite")


def check_copy_object():
    data = rand(2000)
    with new_bucket("copy", versioned=True) as b:
        src_etag = S3.put_object(
            Bucket=b, Key="src", Body=data, ContentType="application/dicom", Metadata={"study": "x", "Patient-Id": "42"}
        )["ETag"]
        src = {"Bucket": b, "Key": "src"}

        r = S3.copy_object(Bucket=b, Key="dst", CopySource=src)
        eq(r["CopyObjectResult"]["ETag"], src_etag, "COPY ETag")
        h = S3.head_object(Bucket=b, Key="dst")
        eq(h["ContentType"], "application/dicom", "COPY ContentType")
        eq(lower_keys(h["Metadata"]), {"study": "x", "patient-id": "42"}, "COPY Metadata")
        eq(sha(get_bytes(b, "dst")), sha(data), "COPY content")

        S3.copy_object(
            Bucket=b, Key="dst2", CopySource=src, MetadataDirective="REPLACE", Metadata={"study": "y"}, ContentType="text/plain"
        )
        h = S3.head_object(Bucket=b, Key="dst2")
        eq(h["ContentType"], "text/plain", "REPLACE ContentType")
        eq(lower_keys(h["Metadata"]), {"study": "y"}, "REPLACE Metadata")
        eq(sha(get_bytes(b, "dst2")), sha(data), "REPLACE content")

        expect_error(
            S3.copy_object, (412, "PreconditionFailed"), Bucket=b, Key="dst3", CopySource=src, CopySourceIfMatch='"%s"' % ("0" * 32)
        )
        expect_error(S3.head_object, (404, None), Bucket=b, Key="dst3")
        S3.copy_object(Bucket=b, Key="dst3", CopySource=src, CopySourceIfMatch=src_etag)
        eq(sha(get_bytes(b, "dst3")), sha(data), "CopySourceIfMatch right ETag content")

        # Onto itself: refused without a change, allowed with new metadata.
        expect_error(S3.copy_object, (400, "InvalidRequest"), Bucket=b, Key="src", CopySource=src)
        S3.copy_object(Bucket=b, Key="src", CopySource=src, MetadataDirective="REPLACE", Metadata={"study": "z"})
        h = S3.head_object(Bucket=b, Key="src")
        eq(lower_keys(h["Metadata"]), {"study": "z"}, "self-copy REPLACE Metadata")
        eq(sha(get_bytes(b, "src")), sha(data), "self-copy content")

        # From an older version.
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        v1_data, v2_data = rand(300), rand(400)
        v1 = S3.put_object(Bucket=b, Key="v", Body=v1_data)["VersionId"]
        S3.put_object(Bucket=b, Key="v", Body=v2_data)
        r = S3.copy_object(Bucket=b, Key="v-copy", CopySource={"Bucket": b, "Key": "v", "VersionId": v1})
        if r.get("CopySourceVersionId") is not None:
            eq(r["CopySourceVersionId"], v1, "CopySourceVersionId")
        eq(sha(get_bytes(b, "v-copy")), sha(v1_data), "copy of an older version")


def check_delete_objects():
    with new_bucket("delete-objects") as b:
        keys = ["d/one", "d/two", "d/three"]
        for k in keys:
            S3.put_object(Bucket=b, Key=k, Body=k.encode())
        r = S3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in keys + ["d/missing"]]})
        eq(sorted(d["Key"] for d in r.get("Deleted", [])), sorted(keys + ["d/missing"]), "Deleted")
        eq(r.get("Errors", []), [], "Errors")
        lst = S3.list_objects_v2(Bucket=b)
        eq((lst["KeyCount"], contents_keys(lst)), (0, []), "listing after delete_objects")

        for k in keys:
            S3.put_object(Bucket=b, Key=k, Body=k.encode())
        r = S3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
        eq(r.get("Deleted", []), [], "Quiet Deleted")
        eq(r.get("Errors", []), [], "Quiet Errors")
        eq(contents_keys(S3.list_objects_v2(Bucket=b)), [], "listing after quiet delete_objects")


def check_list_objects_v2():
    with new_bucket("list-v2") as b:
        keys = put_listing_keys(b)
        all_photos_2024 = [k for k in keys if k.startswith("photos/2024/")]

        r = S3.list_objects_v2(Bucket=b)
        eq((contents_keys(r), r["KeyCount"], r["IsTruncated"]), (keys, 27, False), "plain listing")
        obj = {o["Key"]: o for o in r["Contents"]}["readme.txt"]
        eq((obj["Size"], obj["ETag"]), (len(b"readme.txt"), md5_etag(b"readme.txt")), "Size and ETag in a listing")

        r = S3.list_objects_v2(Bucket=b, Prefix="photos/2024/")
        eq((contents_keys(r), r["KeyCount"]), (all_photos_2024, 25), "Prefix")

        r = S3.list_objects_v2(Bucket=b, Delimiter="/")
        eq((prefixes(r), contents_keys(r), r["KeyCount"]), (["photos/"], ["readme.txt"], 2), "Delimiter at the root")
        r = S3.list_objects_v2(Bucket=b, Prefix="photos/", Delimiter="/")
        eq((prefixes(r), contents_keys(r), r["KeyCount"]), (["photos/2024/", "photos/2025/"], [], 2), "Delimiter under photos/")

        got, pages, kwargs = [], 0, {}
        while True:
            r = S3.list_objects_v2(Bucket=b, MaxKeys=10, **kwargs)
            pages += 1
            check(pages <= 3, "MaxKeys=10 over 27 keys takes more than 3 pages")
            eq(r["MaxKeys"], 10, "MaxKeys echoed")
            eq(r["KeyCount"], len(r.get("Contents", [])), "KeyCount of a page")
            got += contents_keys(r)
            if not r["IsTruncated"]:
                check("NextContinuationToken" not in r, "NextContinuationToken on the last page")
                break
            eq(r["KeyCount"], 10, "KeyCount of a full page")
            check(r.get("NextContinuationToken"), "a truncated page without NextContinuationToken")
            kwargs = {"ContinuationToken": r["NextContinuationToken"]}
        eq(got, keys, "MaxKeys=10 pagination")
        eq(pages, 3, "pages")

        r = S3.list_objects_v2(Bucket=b, StartAfter="photos/2024/a20.dcm")
        want = ["photos/2024/a21.dcm", "photos/2024/a22.dcm", "photos/2024/a23.dcm", "photos/2024/a24.dcm"]
        eq(contents_keys(r), want + ["photos/2025/b.dcm", "readme.txt"], "StartAfter")

        r = S3.list_objects_v2(Bucket=b, Prefix="readme", FetchOwner=True)
        owner = r["Contents"][0].get("Owner") or {}
        check(owner.get("ID") and owner.get("DisplayName"), f"FetchOwner: Owner {owner!r}")

        got, page_sizes = [], []
        for page in S3.get_paginator("list_objects_v2").paginate(Bucket=b, PaginationConfig={"PageSize": 7}):
            got += contents_keys(page)
            page_sizes.append(len(page.get("Contents", [])))
        eq(got, keys, "paginator PageSize=7")
        eq(page_sizes, [7, 7, 7, 6], "paginator page sizes")

        # URL encoding. boto3 asks for it on its own and decodes the answer...
        odd = "enc/a b+c é.dcm"
        S3.put_object(Bucket=b, Key=odd, Body=b"odd")
        r = S3.list_objects_v2(Bucket=b, Prefix="enc/")
        eq(contents_keys(r), [odd], "a key with space, '+' and 'é' through boto3's own url decoding")
        eq(get_bytes(b, odd), b"odd", "get of that key")
        # ... and asked for by us it hands back the encoded form.
        r = S3.list_objects_v2(Bucket=b, Prefix="enc/", EncodingType="url")
        eq(r.get("EncodingType"), "url", "EncodingType echoed")
        raw = contents_keys(r)
        eq(len(raw), 1, "url-encoded listing")
        check(raw[0] != odd, f"EncodingType=url returned the key unencoded: {raw[0]!r}")
        eq(urllib.parse.unquote_plus(raw[0]), odd, f"url-decoded key (raw {raw[0]!r})")
        # As S3 encodes it: '/' plain, a space as '+', the rest %XX.
        eq(raw[0], "enc/a+b%2Bc+%C3%A9.dcm", "the encoded form S3 gives")
        r = S3.list_objects_v2(Bucket=b, Prefix="enc/", Delimiter="/", EncodingType="url")
        eq((r.get("Prefix"), r.get("Delimiter")), ("enc/", "/"), "prefix and delimiter as S3 encodes them")
        r = S3.list_objects_v2(Bucket=b, Delimiter="/", EncodingType="url")
        check("enc/" in prefixes(r), f"common prefixes keep '/' plain: {prefixes(r)}")


def check_list_objects_v1():
    with new_bucket("list-v1") as b:
        keys = put_listing_keys(b)
        got, pages, kwargs = [], 0, {}
        while True:
            r = S3.list_objects(Bucket=b, MaxKeys=10, **kwargs)
            pages += 1
            check(pages <= 3, "MaxKeys=10 over 27 keys takes more than 3 pages")
            page = contents_keys(r)
            got += page
            if not r["IsTruncated"]:
                break
            eq(len(page), 10, "a full v1 page")
            kwargs = {"Marker": r.get("NextMarker") or page[-1]}
        eq(got, keys, "v1 Marker pagination")

        r = S3.list_objects(Bucket=b, Marker="photos/2024/a22.dcm")
        eq(contents_keys(r), ["photos/2024/a23.dcm", "photos/2024/a24.dcm", "photos/2025/b.dcm", "readme.txt"], "v1 Marker")

        r = S3.list_objects(Bucket=b, Delimiter="/")
        eq((prefixes(r), contents_keys(r)), (["photos/"], ["readme.txt"]), "v1 Delimiter at the root")
        r = S3.list_objects(Bucket=b, Prefix="photos/", Delimiter="/")
        eq((prefixes(r), contents_keys(r)), (["photos/2024/", "photos/2025/"], []), "v1 Delimiter under photos/")

        got = []
        for page in S3.get_paginator("list_objects").paginate(Bucket=b, PaginationConfig={"PageSize": 10}):
            got += contents_keys(page)
        eq(got, keys, "v1 paginator")


def check_versioning():
    with new_bucket("versioning", versioned=True) as b:
        eq(S3.get_bucket_versioning(Bucket=b).get("Status"), None, "versioning of a new bucket")
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        eq(S3.get_bucket_versioning(Bucket=b).get("Status"), "Enabled", "versioning status")

        key = "scan.dcm"
        datas = [rand(100 + i) for i in range(3)]
        vids = []
        for d in datas:
            v = S3.put_object(Bucket=b, Key=key, Body=d).get("VersionId")
            check(v and v != "null", f"put in an Enabled bucket returned VersionId {v!r}")
            vids.append(v)
        eq(len(set(vids)), 3, "distinct VersionIds")
        for d, v in zip(datas, vids):
            r = S3.get_object(Bucket=b, Key=key, VersionId=v)
            eq((read(r), r.get("VersionId")), (d, v), f"get VersionId={v}")
        r = S3.get_object(Bucket=b, Key=key)
        eq((read(r), r.get("VersionId")), (datas[2], vids[2]), "get of the latest")
        # An older version copied onto its own key restores it as a new
        # version; the current one copied onto itself is refused.
        restored = S3.copy_object(Bucket=b, Key=key, CopySource={"Bucket": b, "Key": key, "VersionId": vids[0]})
        check(restored.get("VersionId") not in vids, "the restore is a new version")
        eq(get_bytes(b, key), datas[0], "the older version restored")
        expect_error(S3.copy_object, (400, "InvalidRequest"), Bucket=b, Key=key,
                     CopySource={"Bucket": b, "Key": key, "VersionId": restored["VersionId"]})
        S3.delete_object(Bucket=b, Key=key, VersionId=restored["VersionId"])

        d = S3.delete_object(Bucket=b, Key=key)
        eq(d.get("DeleteMarker"), True, "delete in an Enabled bucket: DeleteMarker")
        dm = d.get("VersionId")
        check(dm and dm not in vids, f"delete marker VersionId {dm!r}")
        e = expect_error(S3.get_object, (404, "NoSuchKey"), Bucket=b, Key=key)
        eq(e.response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-delete-marker"), "true", "x-amz-delete-marker on the 404")
        expect_error(S3.head_object, (404, None), Bucket=b, Key=key)
        eq(contents_keys(S3.list_objects_v2(Bucket=b)), [], "a deleted key is not listed")

        newest_first = [dm] + vids[::-1]
        lv = S3.list_object_versions(Bucket=b, Prefix=key)
        eq([v["VersionId"] for v in lv.get("Versions", [])], vids[::-1], "Versions, newest first")
        eq([m["VersionId"] for m in lv.get("DeleteMarkers", [])], [dm], "DeleteMarkers")
        eq([(v, latest) for v, latest, _ in version_entries(lv) if latest], [(dm, True)], "IsLatest")
        check(all(v["Key"] == key for v in lv.get("Versions", []) + lv.get("DeleteMarkers", [])), "Keys")

        seen, kwargs = [], {}
        while True:
            page = S3.list_object_versions(Bucket=b, Prefix=key, MaxKeys=1, **kwargs)
            entries = version_entries(page)
            eq(len(entries), 1, f"entries on a MaxKeys=1 page after {seen}")
            seen.append(entries[0][0])
            check(len(seen) <= 4, f"MaxKeys=1 pagination does not end: {seen}")
            if not page["IsTruncated"]:
                break
            kwargs = {"KeyMarker": page["NextKeyMarker"], "VersionIdMarker": page["NextVersionIdMarker"]}
        eq(seen, newest_first, "KeyMarker/VersionIdMarker pagination")
        seen = []
        for page in S3.get_paginator("list_object_versions").paginate(
            Bucket=b, Prefix=key, PaginationConfig={"PageSize": 1}
        ):
            seen += [v for v, _, _ in version_entries(page)]
        eq(seen, newest_first, "list_object_versions paginator")

        expect_error(S3.get_object, (405, "MethodNotAllowed"), Bucket=b, Key=key, VersionId=dm)
        expect_error(S3.head_object, (405, None), Bucket=b, Key=key, VersionId=dm)

        r = S3.delete_object(Bucket=b, Key=key, VersionId=vids[1])
        eq(r.get("VersionId"), vids[1], "delete of a version: VersionId")
        expect_error(S3.get_object, (404, "NoSuchVersion"), Bucket=b, Key=key, VersionId=vids[1])
        r = S3.delete_object(Bucket=b, Key=key, VersionId=dm)
        eq(r.get("VersionId"), dm, "delete of the delete marker: VersionId")
        r = S3.get_object(Bucket=b, Key=key)
        eq((read(r), r.get("VersionId")), (datas[2], vids[2]), "visible again")
        lv = S3.list_object_versions(Bucket=b, Prefix=key)
        eq(version_entries(lv), [(vids[2], True, False), (vids[0], False, False)], "versions after the deletes")

        # Suspended: new writes go to the single 'null' version.
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended"})
        eq(S3.get_bucket_versioning(Bucket=b).get("Status"), "Suspended", "versioning status")
        s1, s2 = rand(50), rand(60)
        v = S3.put_object(Bucket=b, Key=key, Body=s1).get("VersionId")
        check(v in (None, "null"), f"put in a Suspended bucket returned VersionId {v!r}")
        lv = S3.list_object_versions(Bucket=b, Prefix=key)
        eq(version_entries(lv), [("null", True, False), (vids[2], False, False), (vids[0], False, False)], "after a Suspended put")
        S3.put_object(Bucket=b, Key=key, Body=s2)
        lv = S3.list_object_versions(Bucket=b, Prefix=key)
        eq(version_entries(lv), [("null", True, False), (vids[2], False, False), (vids[0], False, False)], "after a second Suspended put")
        eq(get_bytes(b, key), s2, "latest after the second Suspended put")
        eq(get_bytes(b, key, VersionId="null"), s2, "get VersionId=null")
        eq(get_bytes(b, key, VersionId=vids[0]), datas[0], "an Enabled-era version")


def check_version_null_unversioned():
    """rclone and others ask an unversioned bucket for VersionId=null."""
    data = rand(100)
    with new_bucket("null-version") as b:
        S3.put_object(Bucket=b, Key="k", Body=data)
        eq(get_bytes(b, "k", VersionId="null"), data, "get VersionId=null")
        eq(S3.head_object(Bucket=b, Key="k", VersionId="null")["ContentLength"], 100, "head VersionId=null")
        lv = S3.list_object_versions(Bucket=b)
        eq(version_entries(lv), [("null", True, False)], "list_object_versions of an unversioned bucket")


def check_concurrent_versions():
    threads_n, puts_n = 8, 5
    with new_bucket("concurrency", versioned=True) as b:
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        key = "contended"
        put_ids, marker_ids, errors = [], [], []
        barrier = threading.Barrier(threads_n)

        def worker(t):
            try:
                barrier.wait(timeout=60)
                for i in range(puts_n):
                    put_ids.append(S3.put_object(Bucket=b, Key=key, Body=f"{t}-{i}".encode())["VersionId"])
                r = S3.delete_object(Bucket=b, Key=key)
                check(r.get("DeleteMarker") is True, f"thread {t}: delete without DeleteMarker: {r}")
                marker_ids.append(r["VersionId"])
            except BaseException as e:
                errors.append((t, e))

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        if errors:
            t, e = errors[0]
            raise AssertionError(f"thread {t} failed ({len(errors)} threads failed)") from e

        versions, markers = [], []
        for page in S3.get_paginator("list_object_versions").paginate(Bucket=b, Prefix=key):
            versions += page.get("Versions", [])
            markers += page.get("DeleteMarkers", [])
        eq((len(versions), len(markers)), (threads_n * puts_n, threads_n), "versions and delete markers")
        listed = [v["VersionId"] for v in versions + markers]
        eq(len(set(listed)), len(listed), "distinct version ids")
        eq(set(listed), set(put_ids) | set(marker_ids), "listed ids are the ones returned")
        eq(len(set(put_ids) | set(marker_ids)), threads_n * (puts_n + 1), "distinct returned ids")
        eq(sum(1 for v in versions + markers if v["IsLatest"]), 1, "entries with IsLatest")


def check_multipart():
    with new_bucket("multipart", multipart=True) as b:
        key = "big.dcm"
        parts = [rand(5 * MiB), rand(5 * MiB), rand(MiB + 7)]
        up = S3.create_multipart_upload(Bucket=b, Key=key, ContentType="application/dicom", Metadata={"study": "mp"})
        uid = up["UploadId"]
        eq((up["Bucket"], up["Key"]), (b, key), "create_multipart_upload")
        etags = []
        for n, d in enumerate(parts, 1):
            r = S3.upload_part(Bucket=b, Key=key, UploadId=uid, PartNumber=n, Body=d)
            eq(r["ETag"], md5_etag(d), f"part {n} ETag")
            etags.append(r["ETag"])

        p = S3.list_parts(Bucket=b, Key=key, UploadId=uid, MaxParts=2)
        eq([(x["PartNumber"], x["ETag"], x["Size"]) for x in p["Parts"]],
           [(1, etags[0], 5 * MiB), (2, etags[1], 5 * MiB)], "list_parts first page")
        eq((p["IsTruncated"], int(p["NextPartNumberMarker"])), (True, 2), "list_parts first page marker")
        p = S3.list_parts(Bucket=b, Key=key, UploadId=uid, MaxParts=2, PartNumberMarker=p["NextPartNumberMarker"])
        eq([(x["PartNumber"], x["ETag"], x["Size"]) for x in p["Parts"]], [(3, etags[2], MiB + 7)], "list_parts second page")
        eq(p["IsTruncated"], False, "list_parts second page IsTruncated")

        ups = S3.list_multipart_uploads(Bucket=b).get("Uploads", [])
        eq([(u["Key"], u["UploadId"]) for u in ups], [(key, uid)], "list_multipart_uploads")

        good = [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, 1)]
        k = {"Bucket": b, "Key": key, "UploadId": uid}
        expect_error(S3.complete_multipart_upload, (400, "InvalidPartOrder"),
                     MultipartUpload={"Parts": [good[1], good[0], good[2]]}, **k)
        bad = [dict(x) for x in good]
        bad[1]["ETag"] = '"%s"' % ("0" * 32)
        expect_error(S3.complete_multipart_upload, (400, "InvalidPart"), MultipartUpload={"Parts": bad}, **k)
        # A failed complete leaves the upload in place.
        done = S3.complete_multipart_upload(MultipartUpload={"Parts": good}, **k)
        eq(done["ETag"], multipart_etag(parts), "multipart ETag")
        whole = b"".join(parts)
        g = S3.get_object(Bucket=b, Key=key)
        eq(sha(read(g)), sha(whole), "multipart content")
        eq((g["ContentType"], lower_keys(g["Metadata"])), ("application/dicom", {"study": "mp"}), "multipart attributes")
        h = S3.head_object(Bucket=b, Key=key)
        eq((h["ContentLength"], h["ETag"]), (len(whole), multipart_etag(parts)), "multipart head")
        eq(S3.list_multipart_uploads(Bucket=b).get("Uploads", []), [], "uploads after complete")

        # A part other than the last under 5 MiB.
        small = S3.create_multipart_upload(Bucket=b, Key="small")["UploadId"]
        s_parts = [rand(KiB), rand(KiB)]
        s_etags = [S3.upload_part(Bucket=b, Key="small", UploadId=small, PartNumber=n, Body=d)["ETag"]
                   for n, d in enumerate(s_parts, 1)]
        expect_error(S3.complete_multipart_upload, (400, "EntityTooSmall"), Bucket=b, Key="small", UploadId=small,
                     MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(s_etags, 1)]})
        S3.abort_multipart_upload(Bucket=b, Key="small", UploadId=small)
        expect_error(S3.upload_part, (404, "NoSuchUpload"), Bucket=b, Key="small", UploadId=small, PartNumber=3, Body=b"x")
        expect_error(S3.head_object, (404, None), Bucket=b, Key="small")
        eq(S3.list_multipart_uploads(Bucket=b).get("Uploads", []), [], "uploads after abort")

        # upload_part_copy from an existing object.
        src = rand(6 * MiB)
        S3.put_object(Bucket=b, Key="src", Body=src)
        cid = S3.create_multipart_upload(Bucket=b, Key="copied")["UploadId"]
        r1 = S3.upload_part_copy(Bucket=b, Key="copied", UploadId=cid, PartNumber=1,
                                 CopySource={"Bucket": b, "Key": "src"}, CopySourceRange=f"bytes=0-{5 * MiB - 1}")
        eq(r1["CopyPartResult"]["ETag"], md5_etag(src[: 5 * MiB]), "upload_part_copy ETag")
        tail = rand(1000)
        e2 = S3.upload_part(Bucket=b, Key="copied", UploadId=cid, PartNumber=2, Body=tail)["ETag"]
        done = S3.complete_multipart_upload(Bucket=b, Key="copied", UploadId=cid, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": r1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": e2}]})
        eq(done["ETag"], multipart_etag([src[: 5 * MiB], tail]), "upload_part_copy upload ETag")
        eq(sha(get_bytes(b, "copied")), sha(src[: 5 * MiB] + tail), "upload_part_copy content")


def check_multipart_checksums():
    """Checksums of multipart uploads as the current SDKs send them:
    COMPOSITE (a checksum of the parts' checksums, "-N") and FULL_OBJECT
    (the whole object's CRC, made of the parts' without reading them)."""
    parts = [rand(5 * MiB), rand(KiB + 3)]
    whole = b"".join(parts)
    with new_bucket("mpsums", multipart=True) as b:
        # COMPOSITE SHA256: each part's checksum kept and listed; the object's
        # is SHA256 over the parts' binary digests.
        uid = S3.create_multipart_upload(Bucket=b, Key="c", ChecksumAlgorithm="SHA256")["UploadId"]
        k = {"Bucket": b, "Key": "c", "UploadId": uid}
        expect_error(S3.upload_part, (400, "InvalidRequest"), PartNumber=1, Body=parts[0],
                     ChecksumAlgorithm="CRC32", **k)
        done = []
        for n, d in enumerate(parts, 1):
            r = S3.upload_part(PartNumber=n, Body=d, ChecksumAlgorithm="SHA256", **k)
            eq(r["ChecksumSHA256"], checksum_b64("SHA256", d), f"part {n} SHA256")
            done.append({"PartNumber": n, "ETag": r["ETag"], "ChecksumSHA256": r["ChecksumSHA256"]})
        listed = S3.list_parts(**k)
        eq([p.get("ChecksumSHA256") for p in listed["Parts"]], [x["ChecksumSHA256"] for x in done], "listed part checksums")
        eq((listed.get("ChecksumAlgorithm"), listed.get("ChecksumType")), ("SHA256", "COMPOSITE"), "listed upload checksum")
        bare = [{"PartNumber": x["PartNumber"], "ETag": x["ETag"]} for x in done]
        expect_error(S3.complete_multipart_upload, (400, "InvalidRequest"), MultipartUpload={"Parts": bare}, **k)
        wrong = [dict(x) for x in done]
        wrong[1]["ChecksumSHA256"] = checksum_b64("SHA256", b"other")
        expect_error(S3.complete_multipart_upload, (400, "InvalidPart"), MultipartUpload={"Parts": wrong}, **k)
        r = S3.complete_multipart_upload(MultipartUpload={"Parts": done}, **k)
        digests = b"".join(hashlib.sha256(d).digest() for d in parts)
        composite = base64.b64encode(hashlib.sha256(digests).digest()).decode() + "-2"
        eq((r.get("ChecksumSHA256"), r.get("ChecksumType")), (composite, "COMPOSITE"), "composite on complete")
        h = S3.head_object(Bucket=b, Key="c", ChecksumMode="ENABLED")
        eq((h.get("ChecksumSHA256"), h.get("ChecksumType")), (composite, "COMPOSITE"), "composite on HEAD")
        eq(sha(read(S3.get_object(Bucket=b, Key="c", ChecksumMode="ENABLED"))), sha(whole), "composite content")
        a = S3.get_object_attributes(Bucket=b, Key="c", ObjectAttributes=["Checksum", "ObjectParts"])
        eq(a["Checksum"].get("ChecksumSHA256"), composite, "composite in GetObjectAttributes")

        # FULL_OBJECT CRC32: the object's CRC32 is the whole object's, which
        # botocore checks on a GET with checksum mode.
        up = S3.create_multipart_upload(Bucket=b, Key="f", ChecksumAlgorithm="CRC32", ChecksumType="FULL_OBJECT")
        eq((up.get("ChecksumAlgorithm"), up.get("ChecksumType")), ("CRC32", "FULL_OBJECT"), "create response")
        k = {"Bucket": b, "Key": "f", "UploadId": up["UploadId"]}
        done = [{"PartNumber": n, "ETag": S3.upload_part(PartNumber=n, Body=d, ChecksumAlgorithm="CRC32", **k)["ETag"]}
                for n, d in enumerate(parts, 1)]
        want = checksum_b64("CRC32", whole)
        expect_error(S3.complete_multipart_upload, (400, "BadDigest"), MultipartUpload={"Parts": done},
                     ChecksumCRC32=checksum_b64("CRC32", whole + b"x"), ChecksumType="FULL_OBJECT", **k)
        expect_error(S3.complete_multipart_upload, (400, "InvalidRequest"), MultipartUpload={"Parts": done},
                     ChecksumType="COMPOSITE", **k)
        r = S3.complete_multipart_upload(MultipartUpload={"Parts": done}, ChecksumCRC32=want,
                                         ChecksumType="FULL_OBJECT", MpuObjectSize=len(whole), **k)
        eq((r.get("ChecksumCRC32"), r.get("ChecksumType")), (want, "FULL_OBJECT"), "full object on complete")
        g = S3.get_object(Bucket=b, Key="f", ChecksumMode="ENABLED")
        eq((g.get("ChecksumCRC32"), g.get("ChecksumType")), (want, "FULL_OBJECT"), "full object on GET")
        eq(sha(read(g)), sha(whole), "full object content")

        # FULL_OBJECT CRC32C, the checksums sent by the client (botocore
        # computes CRC32C only with awscrt).
        up = S3.create_multipart_upload(Bucket=b, Key="fc", ChecksumAlgorithm="CRC32C", ChecksumType="FULL_OBJECT")
        k = {"Bucket": b, "Key": "fc", "UploadId": up["UploadId"]}
        done = [{"PartNumber": n, "ChecksumCRC32C": checksum_b64("CRC32C", d),
                 "ETag": S3.upload_part(PartNumber=n, Body=d, ChecksumCRC32C=checksum_b64("CRC32C", d), **k)["ETag"]}
                for n, d in enumerate(parts, 1)]
        r = S3.complete_multipart_upload(MultipartUpload={"Parts": done}, **k)
        eq(r.get("ChecksumCRC32C"), checksum_b64("CRC32C", whole), "full object CRC32C")

        # What S3 refuses at creation, and a checksum for an upload without one.
        expect_error(S3.create_multipart_upload, (400, "InvalidRequest"), Bucket=b, Key="x",
                     ChecksumAlgorithm="SHA1", ChecksumType="FULL_OBJECT")
        expect_error(S3.create_multipart_upload, (400, "InvalidRequest"), Bucket=b, Key="x",
                     ChecksumAlgorithm="CRC64NVME", ChecksumType="COMPOSITE")
        plain = S3.create_multipart_upload(Bucket=b, Key="p")["UploadId"]
        e = S3.upload_part(Bucket=b, Key="p", UploadId=plain, PartNumber=1, Body=b"tail")["ETag"]
        expect_error(S3.complete_multipart_upload, (400, "InvalidRequest"), Bucket=b, Key="p", UploadId=plain,
                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]}, ChecksumCRC32=checksum_b64("CRC32", b"tail"))
        S3.complete_multipart_upload(Bucket=b, Key="p", UploadId=plain, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e}]})
        check("ChecksumCRC32" not in S3.head_object(Bucket=b, Key="p", ChecksumMode="ENABLED"), "a checksum made up")


def check_conditional_writes():
    """If-None-Match: * creates only; If-Match replaces only that ETag; a
    refused write changes nothing; racing creators: exactly one wins; a
    Complete retried after success answers as the first time."""
    with new_bucket("cond-writes", versioned=True, multipart=True) as b:
        first, second = rand(1000), rand(2000)
        r = S3.put_object(Bucket=b, Key="k", Body=first, IfNoneMatch="*")
        eq(r["ETag"], md5_etag(first), "create-only on an absent key")
        expect_error(S3.put_object, (412, "PreconditionFailed"), Bucket=b, Key="k", Body=second, IfNoneMatch="*")
        eq(sha(get_bytes(b, "k")), sha(first), "a refused create-only changed nothing")
        expect_error(S3.put_object, (412, "PreconditionFailed"), Bucket=b, Key="k", Body=second, IfMatch=md5_etag(second))
        expect_error(S3.put_object, (404, "NoSuchKey"), Bucket=b, Key="absent", Body=second, IfMatch=md5_etag(first))
        r = S3.put_object(Bucket=b, Key="k", Body=second, IfMatch=md5_etag(first))
        eq(sha(get_bytes(b, "k")), sha(second), "If-Match on the current ETag replaced it")
        expect_error(S3.put_object, (501, "NotImplemented"), Bucket=b, Key="k", Body=first, IfNoneMatch=md5_etag(first))
        # A delete marker is no object.
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        S3.delete_object(Bucket=b, Key="k")
        S3.put_object(Bucket=b, Key="k", Body=first, IfNoneMatch="*")

        # Eight creators race for one key: exactly one wins, the others get 412.
        bodies = [rand(500 + i) for i in range(8)]

        def create(body):
            try:
                S3.put_object(Bucket=b, Key="race", Body=body, IfNoneMatch="*")
                return "won"
            except ClientError as e:
                return e.response["Error"]["Code"]

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(create, bodies))
        eq(sorted(results), ["PreconditionFailed"] * 7 + ["won"], "racing create-only puts")
        winner = bodies[results.index("won")]
        eq(sha(get_bytes(b, "race")), sha(winner), "the winner's data is the object")
        versions = S3.list_object_versions(Bucket=b, Prefix="race").get("Versions", [])
        eq(len(versions), 1, "the losers left no version")

        # CompleteMultipartUpload: conditions, then a retry after success.
        parts = [rand(5 * MiB), rand(1000)]

        def upload(key):
            uid = S3.create_multipart_upload(Bucket=b, Key=key)["UploadId"]
            listed = [{"PartNumber": n, "ETag": S3.upload_part(Bucket=b, Key=key, UploadId=uid, PartNumber=n, Body=d)["ETag"]}
                      for n, d in enumerate(parts, 1)]
            return uid, {"Parts": listed}

        uid, listed = upload("k")
        expect_error(S3.complete_multipart_upload, (412, "PreconditionFailed"), Bucket=b, Key="k", UploadId=uid,
                     MultipartUpload=listed, IfNoneMatch="*")
        done = S3.complete_multipart_upload(Bucket=b, Key="k", UploadId=uid, MultipartUpload=listed,
                                            IfMatch=md5_etag(first))
        eq(done["ETag"], multipart_etag(parts), "a conditional Complete whose condition holds")
        again = S3.complete_multipart_upload(Bucket=b, Key="k", UploadId=uid, MultipartUpload=listed)
        eq((again["ETag"], again.get("VersionId")), (done["ETag"], done.get("VersionId")),
           "a Complete retried after success answers as the first time")
        eq(len([v for v in S3.list_object_versions(Bucket=b, Prefix="k").get("Versions", []) if v["Key"] == "k"]), 3,
           "the retry made no version of its own")
        # Other parts than those completed: the upload is gone.
        other = {"Parts": [dict(listed["Parts"][0])]}
        expect_error(S3.complete_multipart_upload, (404, "NoSuchUpload"), Bucket=b, Key="k", UploadId=uid,
                     MultipartUpload=other)
        # A part uploaded twice: the later upload's ETag is the part's.
        uid2 = S3.create_multipart_upload(Bucket=b, Key="twice")["UploadId"]
        S3.upload_part(Bucket=b, Key="twice", UploadId=uid2, PartNumber=1, Body=rand(100))
        later = rand(200)
        e2 = S3.upload_part(Bucket=b, Key="twice", UploadId=uid2, PartNumber=1, Body=later)["ETag"]
        listed2 = S3.list_parts(Bucket=b, Key="twice", UploadId=uid2)["Parts"]
        eq([(p["PartNumber"], p["ETag"]) for p in listed2], [(1, e2)], "a part uploaded twice keeps the later one")
        S3.complete_multipart_upload(Bucket=b, Key="twice", UploadId=uid2,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e2}]})
        eq(sha(get_bytes(b, "twice")), sha(later), "the later part's data is the object")


def check_conformance_gaps():
    """Behaviours where S3 has a precise answer that clients rely on."""
    with new_bucket("conformance", versioned=True, multipart=True) as b:
        # An unversioned bucket hands out no version ids: PUT, copy, Complete.
        r = S3.put_object(Bucket=b, Key="a", Body=b"a")
        check("VersionId" not in r, f"PUT into an unversioned bucket returned a version id: {r.get('VersionId')}")
        r = S3.copy_object(Bucket=b, Key="b", CopySource={"Bucket": b, "Key": "a"})
        check("VersionId" not in r, f"copy into an unversioned bucket returned a version id: {r.get('VersionId')}")
        uid = S3.create_multipart_upload(Bucket=b, Key="m")["UploadId"]
        e1 = S3.upload_part(Bucket=b, Key="m", UploadId=uid, PartNumber=1, Body=b"m")["ETag"]
        r = S3.complete_multipart_upload(Bucket=b, Key="m", UploadId=uid,
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
        check("VersionId" not in r, f"Complete in an unversioned bucket returned a version id: {r.get('VersionId')}")
        # MFADelete=Disabled is what tools send along; turning it on is not supported.
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Suspended", "MFADelete": "Disabled"})
        r = S3.put_object(Bucket=b, Key="a", Body=b"a2")
        eq(r.get("VersionId"), "null", "PUT into a suspended bucket: the null version")
        # An empty Content-MD5 is a bad digest, and stores nothing.
        url = S3.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "md5"}, ExpiresIn=60)
        st, _, code = http_status(url, data=b"x", method="PUT", hdrs={"Content-MD5": ""})
        eq((st, code), (400, "InvalidDigest"), "empty Content-MD5")
        expect_error(S3.head_object, (404, None), Bucket=b, Key="md5")
        # Presigned URLs: X-Amz-Expires within 1 s to 7 days; an expired one is 403.
        for bad in (604801, 0):
            url = S3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "a"}, ExpiresIn=bad)
            st, _, code = http_status(url)
            eq((st, code), (400, "AuthorizationQueryParametersError"), f"X-Amz-Expires={bad}")
        url = S3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "a"}, ExpiresIn=1)
        time.sleep(2.2)
        st, _, code = http_status(url)
        eq((st, code), (403, "AccessDenied"), "an expired presigned URL")
        # GetObjectAttributes: what was asked for, and a multipart object's parts.
        data = rand(1000)
        S3.put_object(Bucket=b, Key="attrs", Body=data, ChecksumAlgorithm="SHA256")
        r = S3.get_object_attributes(Bucket=b, Key="attrs", ObjectAttributes=["ETag", "ObjectSize", "StorageClass", "Checksum"])
        eq((r["ETag"].strip('"'), r["ObjectSize"], r["StorageClass"]), (md5_etag(data).strip('"'), 1000, "STANDARD"),
           "GetObjectAttributes")
        eq(r["Checksum"].get("ChecksumSHA256"), checksum_b64("SHA256", data), "the stored checksum")
        r = S3.get_object_attributes(Bucket=b, Key="attrs", ObjectAttributes=["ObjectSize"])
        check("ETag" not in r, "only the attributes asked for")
        uid = S3.create_multipart_upload(Bucket=b, Key="parts")["UploadId"]
        sizes = [5 * MiB, 5 * MiB, 7]
        listed = [{"PartNumber": n, "ETag": S3.upload_part(Bucket=b, Key="parts", UploadId=uid, PartNumber=n,
                                                          Body=rand(size))["ETag"]} for n, size in enumerate(sizes, 1)]
        S3.complete_multipart_upload(Bucket=b, Key="parts", UploadId=uid, MultipartUpload={"Parts": listed})
        r = S3.get_object_attributes(Bucket=b, Key="parts", ObjectAttributes=["ObjectParts"], MaxParts=2)
        got = r["ObjectParts"]
        eq((got["TotalPartsCount"], got["IsTruncated"], [(p["PartNumber"], p["Size"]) for p in got["Parts"]]),
           (3, True, [(1, 5 * MiB), (2, 5 * MiB)]), "the first page of parts")
        r = S3.get_object_attributes(Bucket=b, Key="parts", ObjectAttributes=["ObjectParts"],
                                     PartNumberMarker=got["NextPartNumberMarker"])
        eq([(p["PartNumber"], p["Size"]) for p in r["ObjectParts"]["Parts"]], [(3, 7)], "the next page")
        expect_error(S3.get_object_attributes, (404, "NoSuchKey"), Bucket=b, Key="absent", ObjectAttributes=["ETag"])
        # Creating a bucket one owns again: 200 in us-east-1, as S3 answers there.
        if REGION == "us-east-1":
            S3.create_bucket(Bucket=b)
    for bad in ("ab.-cd", "ab-.cd"):
        expect_error(S3.create_bucket, (400, "InvalidBucketName"), Bucket=bad)


def check_tagging():
    """Object tags on PUT, copy and multipart, Get/Put/DeleteObjectTagging by
    version, the tag count on GET, bucket tags, and S3's limits."""
    tag_set = lambda r: sorted((t["Key"], t["Value"]) for t in r["TagSet"])
    with new_bucket("tagging", versioned=True, multipart=True) as b:
        S3.put_object(Bucket=b, Key="scan", Body=b"v1", Tagging="study=CT%20chest&ward=3")
        eq(tag_set(S3.get_object_tagging(Bucket=b, Key="scan")), [("study", "CT chest"), ("ward", "3")], "tags on PUT")
        eq(S3.get_object(Bucket=b, Key="scan").get("TagCount"), 2, "x-amz-tagging-count")
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        v2 = S3.put_object(Bucket=b, Key="scan", Body=b"v2")["VersionId"]
        eq(S3.get_object_tagging(Bucket=b, Key="scan")["TagSet"], [], "a new version starts untagged")
        check("TagCount" not in S3.get_object(Bucket=b, Key="scan"), "no tag count without tags")
        r = S3.put_object_tagging(Bucket=b, Key="scan", VersionId="null", Tagging={"TagSet": [{"Key": "kept", "Value": "yes"}]})
        eq(r.get("VersionId"), "null", "tagging a version by id")
        eq(tag_set(S3.get_object_tagging(Bucket=b, Key="scan", VersionId="null")), [("kept", "yes")], "the older version's tags")
        eq(S3.get_object_tagging(Bucket=b, Key="scan", VersionId=v2)["TagSet"], [], "the newer version untouched")
        S3.put_object_tagging(Bucket=b, Key="scan", Tagging={"TagSet": [{"Key": "a", "Value": "1"}]})
        S3.delete_object_tagging(Bucket=b, Key="scan")
        eq(S3.get_object_tagging(Bucket=b, Key="scan")["TagSet"], [], "tags deleted")
        eq(get_bytes(b, "scan"), b"v2", "tagging left the data alone")

        # Copies keep the source's tags unless told to replace them.
        S3.put_object_tagging(Bucket=b, Key="scan", Tagging={"TagSet": [{"Key": "src", "Value": "1"}]})
        S3.copy_object(Bucket=b, Key="copy1", CopySource={"Bucket": b, "Key": "scan"})
        eq(tag_set(S3.get_object_tagging(Bucket=b, Key="copy1")), [("src", "1")], "copy keeps tags")
        S3.copy_object(Bucket=b, Key="copy2", CopySource={"Bucket": b, "Key": "scan"}, TaggingDirective="REPLACE",
                       Tagging="dst=2")
        eq(tag_set(S3.get_object_tagging(Bucket=b, Key="copy2")), [("dst", "2")], "copy with REPLACE")
        S3.copy_object(Bucket=b, Key="copy3", CopySource={"Bucket": b, "Key": "scan"}, MetadataDirective="REPLACE",
                       ContentType="text/plain")
        eq(tag_set(S3.get_object_tagging(Bucket=b, Key="copy3")), [("src", "1")], "metadata REPLACE keeps tags")

        uid = S3.create_multipart_upload(Bucket=b, Key="mp", Tagging="phase=archive")["UploadId"]
        e1 = S3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=1, Body=b"x")["ETag"]
        S3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})
        eq(tag_set(S3.get_object_tagging(Bucket=b, Key="mp")), [("phase", "archive")], "multipart tags")

        # Limits and bad input: refused, nothing changed.
        eleven = {"TagSet": [{"Key": f"k{i}", "Value": "v"} for i in range(11)]}
        expect_error(S3.put_object_tagging, (400, "BadRequest"), Bucket=b, Key="mp", Tagging=eleven)
        expect_error(S3.put_object_tagging, (400, "InvalidTag"), Bucket=b, Key="mp",
                     Tagging={"TagSet": [{"Key": "aws:x", "Value": "v"}]})
        expect_error(S3.put_object_tagging, (400, "InvalidTag"), Bucket=b, Key="mp",
                     Tagging={"TagSet": [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}]})
        expect_error(S3.put_object, (400, "InvalidTag"), Bucket=b, Key="bad", Body=b"x", Tagging="k=" + "v" * 257)
        expect_error(S3.head_object, (404, None), Bucket=b, Key="bad")
        eq(tag_set(S3.get_object_tagging(Bucket=b, Key="mp")), [("phase", "archive")], "refused tagging changed nothing")
        expect_error(S3.get_object_tagging, (404, "NoSuchKey"), Bucket=b, Key="absent")
        expect_error(S3.put_object_tagging, (404, "NoSuchKey"), Bucket=b, Key="absent", Tagging={"TagSet": []})

        # Bucket tags.
        expect_error(S3.get_bucket_tagging, (404, "NoSuchTagSet"), Bucket=b)
        tags = [{"Key": f"dept{i}", "Value": "radiology"} for i in range(50)]
        S3.put_bucket_tagging(Bucket=b, Tagging={"TagSet": tags})
        eq(len(S3.get_bucket_tagging(Bucket=b)["TagSet"]), 50, "fifty bucket tags")
        expect_error(S3.put_bucket_tagging, (400, "BadRequest"), Bucket=b,
                     Tagging={"TagSet": tags + [{"Key": "one", "Value": "more"}]})
        S3.delete_bucket_tagging(Bucket=b)
        expect_error(S3.get_bucket_tagging, (404, "NoSuchTagSet"), Bucket=b)


def check_cors():
    """A web viewer's browser reading a bucket from another origin: the
    preflight answered by the bucket's rules, the CORS headers on the actual
    GET, and refusals where no rule allows."""
    viewer = "https://viewer.example.org"
    with new_bucket("cors") as b:
        S3.put_object(Bucket=b, Key="img.dcm", Body=b"DICM")
        url = f"{ENDPOINT}/{b}/img.dcm"
        ask = lambda origin, method, headers=None: http_headers(url, "OPTIONS", dict(
            {"Origin": origin, "Access-Control-Request-Method": method},
            **({"Access-Control-Request-Headers": headers} if headers else {})))
        st, _ = ask(viewer, "GET")
        eq(st, 403, "a preflight to a bucket without CORS rules")
        expect_error(S3.get_bucket_cors, (404, "NoSuchCORSConfiguration"), Bucket=b)
        rules = [
            {"AllowedOrigins": ["https://*.example.org"], "AllowedMethods": ["GET", "HEAD"],
             "AllowedHeaders": ["range", "authorization", "x-amz-*"], "ExposeHeaders": ["ETag", "Content-Range"],
             "MaxAgeSeconds": 600},
            {"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]},
        ]
        S3.put_bucket_cors(Bucket=b, CORSConfiguration={"CORSRules": rules})
        got = S3.get_bucket_cors(Bucket=b)["CORSRules"]
        eq([(r["AllowedOrigins"], r["AllowedMethods"]) for r in got],
           [(["https://*.example.org"], ["GET", "HEAD"]), (["*"], ["GET"])], "get_bucket_cors")
        eq(got[0].get("MaxAgeSeconds"), 600, "MaxAgeSeconds kept")

        # Gateways read a bucket's rules through a 2 s cache.
        deadline = time.time() + 5
        while True:
            st, h = ask(viewer, "GET", "Range, X-Amz-Date")
            if st == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        eq(st, 200, "an allowed preflight")
        eq(h.get("access-control-allow-origin"), viewer, "the origin allowed")
        eq(h.get("access-control-allow-methods"), "GET, HEAD", "the methods allowed")
        eq(h.get("access-control-allow-headers"), "Range, X-Amz-Date", "the headers allowed")
        eq(h.get("access-control-max-age"), "600", "max age")
        eq(ask(viewer, "DELETE")[0], 403, "a method no rule allows")
        eq(ask("https://other.net", "GET", "range")[0], 403, "a header the matching origin's rule does not allow")
        eq(ask("https://other.net", "GET")[1].get("access-control-allow-origin"), "*", "the catch-all rule")
        eq(http_headers(url, "OPTIONS", {"Origin": viewer})[0], 400, "a preflight without a method")

        signed = S3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "img.dcm"}, ExpiresIn=60)
        st, h = http_headers(signed, "GET", {"Origin": viewer})
        eq(st, 200, "the actual GET")
        eq(h.get("access-control-allow-origin"), viewer, "CORS headers on the actual GET")
        eq(h.get("access-control-expose-headers"), "ETag, Content-Range", "exposed headers")
        st, h = http_headers(signed, "GET")
        check("access-control-allow-origin" not in h, "no CORS headers without Origin")
        signed_put = S3.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "x"}, ExpiresIn=60)
        req = urllib.request.Request(signed_put, data=b"x", method="PUT", headers={"Origin": "https://other.net"})
        with urllib.request.urlopen(req, timeout=60) as r:
            check("access-control-allow-origin" not in {k.lower() for k in r.headers.keys()},
                  "no CORS headers for a PUT no rule allows")

        bad = [{"AllowedOrigins": ["*"], "AllowedMethods": ["PATCH"]}]
        expect_error(S3.put_bucket_cors, (400, "InvalidRequest"), Bucket=b, CORSConfiguration={"CORSRules": bad})
        eq(len(S3.get_bucket_cors(Bucket=b)["CORSRules"]), 2, "a refused configuration changed nothing")
        S3.delete_bucket_cors(Bucket=b)
        expect_error(S3.get_bucket_cors, (404, "NoSuchCORSConfiguration"), Bucket=b)
        deadline = time.time() + 5
        while ask(viewer, "GET")[0] != 403 and time.time() < deadline:
            time.sleep(0.2)
        eq(ask(viewer, "GET")[0], 403, "a preflight after the rules were deleted")


def bypass_refused(client, bucket, key, version, retention, what):
    """With x-amz-bypass-governance-retention, `client` may neither delete
    the version (DeleteObject, DeleteObjects) nor shorten its retention."""
    expect_error(client.delete_object, (403, "AccessDenied"), Bucket=bucket, Key=key, VersionId=version,
                 BypassGovernanceRetention=True)
    r = client.delete_objects(Bucket=bucket, BypassGovernanceRetention=True,
                              Delete={"Objects": [{"Key": key, "VersionId": version}]})
    eq([e["Code"] for e in r.get("Errors", [])], ["AccessDenied"], f"DeleteObjects refused {what}")
    expect_error(client.put_object_retention, (403, "AccessDenied"), Bucket=bucket, Key=key, VersionId=version,
                 Retention=retention, BypassGovernanceRetention=True)


def check_object_lock():
    """WORM against ransomware: a locked version survives every delete path
    until its date (GOVERNANCE unless bypassed, COMPLIANCE for no one, a
    legal hold until lifted); retention only moves later; a default
    retention applies to new versions; a bucket without object lock takes
    no lock."""
    now = datetime.datetime.now(datetime.timezone.utc)
    b = bucket_name("lock")
    S3.create_bucket(Bucket=b, ObjectLockEnabledForBucket=True)
    eq(S3.get_bucket_versioning(Bucket=b).get("Status"), "Enabled", "object lock turns versioning on")
    eq(S3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"]["ObjectLockEnabled"], "Enabled",
       "object lock configuration")
    expect_error(S3.put_bucket_versioning, (409, "InvalidBucketState"), Bucket=b,
                 VersioningConfiguration={"Status": "Suspended"})

    soon = now + datetime.timedelta(seconds=6)
    gov = S3.put_object(Bucket=b, Key="gov", Body=b"g", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=now + datetime.timedelta(hours=1))["VersionId"]
    h = S3.head_object(Bucket=b, Key="gov")
    eq(h.get("ObjectLockMode"), "GOVERNANCE", "the mode on HEAD")
    check(h.get("ObjectLockRetainUntilDate") is not None, "the date on HEAD")
    expect_error(S3.delete_object, (403, "AccessDenied"), Bucket=b, Key="gov", VersionId=gov)
    comp = S3.put_object(Bucket=b, Key="comp", Body=b"c", ObjectLockMode="COMPLIANCE",
                         ObjectLockRetainUntilDate=soon)["VersionId"]
    bypass_refused(S3, b, "comp", comp, {"Mode": "COMPLIANCE", "RetainUntilDate": now + datetime.timedelta(seconds=2)},
                   "the compliance version")
    expect_error(S3.put_object_retention, (403, "AccessDenied"), Bucket=b, Key="comp", VersionId=comp,
                 Retention={"Mode": "GOVERNANCE", "RetainUntilDate": soon})
    later = soon + datetime.timedelta(seconds=1)
    S3.put_object_retention(Bucket=b, Key="comp", VersionId=comp, Retention={"Mode": "COMPLIANCE", "RetainUntilDate": later})
    got = S3.get_object_retention(Bucket=b, Key="comp", VersionId=comp)["Retention"]
    eq((got["Mode"], int(got["RetainUntilDate"].timestamp())), ("COMPLIANCE", int(later.timestamp())), "extended retention")
    # A delete without a version adds a marker; the locked version stays readable.
    S3.delete_object(Bucket=b, Key="comp")
    eq(get_bytes(b, "comp", VersionId=comp), b"c", "the locked version under a delete marker")

    # Legal hold, on a version with no retention.
    held = S3.put_object(Bucket=b, Key="held", Body=b"h", ObjectLockLegalHoldStatus="ON")["VersionId"]
    eq(S3.get_object_legal_hold(Bucket=b, Key="held")["LegalHold"]["Status"], "ON", "legal hold on")
    expect_error(S3.delete_object, (403, "AccessDenied"), Bucket=b, Key="held", VersionId=held,
                 BypassGovernanceRetention=True)
    S3.put_object_legal_hold(Bucket=b, Key="held", LegalHold={"Status": "OFF"})
    S3.delete_object(Bucket=b, Key="held", VersionId=held)

    # A default retention reaches new versions, multipart ones too.
    S3.put_object_lock_configuration(Bucket=b, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 1}}})
    eq(S3.get_object_lock_configuration(Bucket=b)["ObjectLockConfiguration"]["Rule"]["DefaultRetention"],
       {"Mode": "GOVERNANCE", "Days": 1}, "default retention")
    dflt = S3.put_object(Bucket=b, Key="dflt", Body=b"d")["VersionId"]
    eq(S3.head_object(Bucket=b, Key="dflt").get("ObjectLockMode"), "GOVERNANCE", "the default applied")
    uid = S3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
    e1 = S3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=1, Body=b"m")["ETag"]
    mp = S3.complete_multipart_upload(Bucket=b, Key="mp", UploadId=uid,
                                      MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}]})["VersionId"]
    expect_error(S3.delete_object, (403, "AccessDenied"), Bucket=b, Key="mp", VersionId=mp)
    expect_error(S3.put_object, (400, "InvalidArgument"), Bucket=b, Key="past", Body=b"p",
                 ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=now - datetime.timedelta(days=1))

    src = S3.put_object(Bucket=b, Key="gov-src", Body=b"s", ObjectLockMode="GOVERNANCE",
                        ObjectLockRetainUntilDate=now + datetime.timedelta(hours=1))["VersionId"]
    S3.copy_object(Bucket=b, Key="gov-copy", CopySource={"Bucket": b, "Key": "gov-src"})
    eq(S3.head_object(Bucket=b, Key="gov-copy").get("ObjectLockMode"), "GOVERNANCE",
       "a copy in a lock bucket gets the bucket's default, not nothing")

    with new_bucket("nolock") as plain:
        # A copy's lock is its own: a locked source copies into a plain bucket unlocked.
        S3.copy_object(Bucket=plain, Key="copied", CopySource={"Bucket": b, "Key": "gov-src"})
        check("ObjectLockMode" not in S3.head_object(Bucket=plain, Key="copied"), "the copy carries no lock")
        S3.delete_object(Bucket=plain, Key="copied")
        expect_error(S3.get_object_lock_configuration, (404, "ObjectLockConfigurationNotFoundError"), Bucket=plain)
        expect_error(S3.put_object, (400, "InvalidRequest"), Bucket=plain, Key="x", Body=b"x",
                     ObjectLockLegalHoldStatus="ON")
        expect_error(S3.head_object, (404, None), Bucket=plain, Key="x")
        expect_error(S3.put_object_lock_configuration, (409, "InvalidBucketState"), Bucket=plain,
                     ObjectLockConfiguration={"ObjectLockEnabled": "Enabled"})

    if OTHER:
        # WRITE on the bucket lets another user delete versions, never
        # bypass their governance retention (s3:BypassGovernanceRetention).
        other = make_client(*OTHER)
        them = other.list_buckets()["Owner"]
        S3.put_bucket_acl(Bucket=b, GrantWrite=f'id="{them["ID"]}"', GrantFullControl=f'id="{S3.list_buckets()["Owner"]["ID"]}"')
        bypass_refused(other, b, "gov", gov, {"Mode": "GOVERNANCE", "RetainUntilDate": soon}, "another user's bypass")
        eq(get_bytes(b, "gov", VersionId=gov), b"g", "the governed version after another user's bypass")
        eq(S3.get_object_retention(Bucket=b, Key="gov", VersionId=gov)["Retention"]["Mode"], "GOVERNANCE",
           "its retention")

    # Governance is bypassed by its owner; compliance waits for its date.
    for key, v in (("gov", gov), ("dflt", dflt), ("mp", mp), ("gov-src", src)):
        S3.delete_object(Bucket=b, Key=key, VersionId=v, BypassGovernanceRetention=True)
    for v in S3.list_object_versions(Bucket=b, Prefix="gov-copy").get("Versions", []):
        S3.delete_object(Bucket=b, Key="gov-copy", VersionId=v["VersionId"], BypassGovernanceRetention=True)
    time.sleep(max(0.0, (later - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) + 1.5)
    empty_and_delete(S3, b, True, True)


def check_lifecycle():
    """Lifecycle with days shortened by the gateway under test
    (LIFECYCLE_DAY_MS): current versions expire by prefix and tags,
    noncurrent ones a day after they were replaced (the newest kept), a
    lone delete marker is cleaned up, an abandoned upload aborted; an
    untagged object, a kept upload and a locked version are left alone."""
    day_ms = os.environ.get("LIFECYCLE_DAY_MS")
    if not day_ms:
        raise Skip("LIFECYCLE_DAY_MS is not set: this gateway's lifecycle days are real days")
    day = int(day_ms) / 1000.0
    rules = [
        {"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 1}},
        {"ID": "old-versions", "Status": "Enabled", "Filter": {"Prefix": "keep/"},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 1}},
        {"ID": "tmp", "Status": "Enabled", "Filter": {"Prefix": "tmp/"},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "temp-scans", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "scans/", "Tags": [{"Key": "class", "Value": "temp"}]}}, "Expiration": {"Days": 1}},
        {"ID": "markers", "Status": "Enabled", "Filter": {"Prefix": "gone/"},
         "Expiration": {"ExpiredObjectDeleteMarker": True}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
        {"ID": "off", "Status": "Disabled", "Filter": {"Prefix": "keep/"}, "Expiration": {"Days": 1}},
    ]
    with new_bucket("lifecycle", versioned=True, multipart=True) as b:
        expect_error(S3.get_bucket_lifecycle_configuration, (404, "NoSuchLifecycleConfiguration"), Bucket=b)
        transition = [{"ID": "t", "Status": "Enabled", "Filter": {"Prefix": ""},
                       "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}]}]
        expect_error(S3.put_bucket_lifecycle_configuration, (400, "InvalidStorageClass"), Bucket=b,
                     LifecycleConfiguration={"Rules": transition})
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        for key in ("logs/a", "scans/t", "scans/u", "gone/x"):
            S3.put_object(Bucket=b, Key=key, Body=key.encode(), **({"Tagging": "class=temp"} if key == "scans/t" else {}))
        versions = [S3.put_object(Bucket=b, Key="keep/b", Body=b"v%d" % i)["VersionId"] for i in range(3)]
        S3.delete_object(Bucket=b, Key="gone/x")
        tmp = S3.create_multipart_upload(Bucket=b, Key="tmp/upload")["UploadId"]
        kept = S3.create_multipart_upload(Bucket=b, Key="keep/upload")["UploadId"]
        S3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": rules})
        got = S3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"]
        eq([(r["ID"], r["Status"]) for r in got], [(r["ID"], r["Status"]) for r in rules], "lifecycle rules kept")
        # x-amz-expiration: the rule that will expire the current version.
        put = S3.put_object(Bucket=b, Key="logs/new", Body=b"n")
        check('rule-id="logs"' in put.get("Expiration", ""), f"PUT Expiration: {put.get('Expiration')}")
        head = S3.head_object(Bucket=b, Key="logs/new")
        check(head.get("Expiration", "").startswith('expiry-date="'), f"HEAD Expiration: {head.get('Expiration')}")
        check("Expiration" not in S3.head_object(Bucket=b, Key="scans/u"), "an untagged scan has no expiration")
        old_version = S3.head_object(Bucket=b, Key="logs/new", VersionId=put["VersionId"])
        check("Expiration" not in old_version, "a version read by id has no x-amz-expiration")

        def state():
            vs = S3.list_object_versions(Bucket=b)
            live = {v["Key"]: [] for v in vs.get("Versions", []) + vs.get("DeleteMarkers", [])}
            for v in vs.get("Versions", []):
                live[v["Key"]].append(v["VersionId"])
            markers = sorted(m["Key"] for m in vs.get("DeleteMarkers", []))
            uploads = sorted(u["Key"] for u in S3.list_multipart_uploads(Bucket=b).get("Uploads", []))
            current = sorted(o["Key"] for o in S3.list_objects_v2(Bucket=b).get("Contents", []))
            return live, markers, uploads, current

        want_current = ["keep/b", "scans/u"]
        deadline = time.time() + 6 * day + 10
        while True:
            live, markers, uploads, current = state()
            # The markers too: state() lists versions before current
            # objects, so an expiry between the two lists shows its object
            # gone from the second and its marker missing from the first.
            done = (current == want_current and uploads == ["keep/upload"] and "gone/x" not in live
                    and sorted(live.get("keep/b", [])) == sorted(versions[1:])
                    and markers == ["logs/a", "logs/new", "scans/t"])
            if done or time.time() > deadline:
                break
            time.sleep(0.5)
        eq(current, want_current, "current objects after lifecycle (logs/a and the tagged scan expired)")
        eq(sorted(live.get("keep/b", [])), sorted(versions[1:]), "the oldest noncurrent version removed, the newest kept")
        eq(markers, ["logs/a", "logs/new", "scans/t"], "expiry left delete markers; the lone one under gone/ was cleaned up")
        check("gone/x" not in live, f"gone/x left: {live.get('gone/x')}")
        eq(len(live.get("logs/a", [])), 1, "the expired object's version stays, noncurrent, for a day")
        eq(uploads, ["keep/upload"], "the abandoned upload aborted, the other kept")
        S3.abort_multipart_upload(Bucket=b, Key="keep/upload", UploadId=kept)
        S3.delete_bucket_lifecycle(Bucket=b)
        expect_error(S3.get_bucket_lifecycle_configuration, (404, "NoSuchLifecycleConfiguration"), Bucket=b)

    # Object lock outranks lifecycle: a retained noncurrent version stays.
    b = bucket_name("lifecycle-lock")
    S3.create_bucket(Bucket=b, ObjectLockEnabledForBucket=True)
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
    locked = S3.put_object(Bucket=b, Key="k", Body=b"1", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    S3.put_object(Bucket=b, Key="k", Body=b"2")
    S3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
        {"ID": "all", "Status": "Enabled", "Filter": {"Prefix": ""}, "NoncurrentVersionExpiration": {"NoncurrentDays": 1}}]})
    time.sleep(3 * day)
    ids = [v["VersionId"] for v in S3.list_object_versions(Bucket=b).get("Versions", [])]
    check(locked["VersionId"] in ids, "lifecycle removed a version under retention")
    S3.delete_object(Bucket=b, Key="k", VersionId=locked["VersionId"], BypassGovernanceRetention=True)
    empty_and_delete(S3, b, True, False)

    # Transitions: storage class COLD is the cluster's pool `cold` (the
    # test cluster has one); the data moves, reads the same, and says where.
    with new_bucket("lifecycle-move") as b:
        small, big = rand(3000), rand(5 * MiB + 7)
        S3.put_object(Bucket=b, Key="cold/small", Body=small)
        S3.put_object(Bucket=b, Key="cold/big", Body=big)
        S3.put_object(Bucket=b, Key="hot/k", Body=b"hot")
        check("StorageClass" not in S3.head_object(Bucket=b, Key="cold/big"), "STANDARD before the move")
        S3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
            {"ID": "to-cold", "Status": "Enabled", "Filter": {"Prefix": "cold/"},
             "Transitions": [{"Days": 1, "StorageClass": "COLD"}]}]})
        got = S3.get_bucket_lifecycle_configuration(Bucket=b)["Rules"][0]["Transitions"]
        eq(got, [{"Days": 1, "StorageClass": "COLD"}], "the transition as stored")
        deadline = time.time() + 4 * day + 10
        while time.time() < deadline:
            classes = [S3.head_object(Bucket=b, Key=k).get("StorageClass") for k in ("cold/small", "cold/big")]
            if classes == ["COLD", "COLD"]:
                break
            time.sleep(0.5)
        eq(classes, ["COLD", "COLD"], "both moved to the cold pool")
        eq(sha(get_bytes(b, "cold/small")), sha(small), "the small object after its move")
        eq(sha(get_bytes(b, "cold/big")), sha(big), "the big object after its move")
        eq(S3.get_object(Bucket=b, Key="cold/big", Range="bytes=5242000-5242999")["Body"].read(),
           big[5242000:5243000], "a range of the moved object")
        check("StorageClass" not in S3.head_object(Bucket=b, Key="hot/k"), "outside the prefix: not moved")

    # Noncurrent versions move a day after they were replaced.
    with new_bucket("lifecycle-move-old", versioned=True) as b:
        S3.put_bucket_versioning(Bucket=b, VersioningConfiguration={"Status": "Enabled"})
        first, second = rand(2000), rand(2001)
        old = S3.put_object(Bucket=b, Key="k", Body=first)["VersionId"]
        S3.put_object(Bucket=b, Key="k", Body=second)
        S3.put_bucket_lifecycle_configuration(Bucket=b, LifecycleConfiguration={"Rules": [
            {"ID": "old-to-cold", "Status": "Enabled", "Filter": {"Prefix": ""},
             "NoncurrentVersionTransitions": [{"NoncurrentDays": 1, "StorageClass": "COLD"}]}]})
        deadline = time.time() + 4 * day + 10
        while time.time() < deadline and S3.head_object(Bucket=b, Key="k", VersionId=old).get("StorageClass") != "COLD":
            time.sleep(0.5)
        eq(S3.head_object(Bucket=b, Key="k", VersionId=old).get("StorageClass"), "COLD", "the noncurrent version moved")
        check("StorageClass" not in S3.head_object(Bucket=b, Key="k"), "the current version stays")
        eq(sha(get_bytes(b, "k", VersionId=old)), sha(first), "the moved version reads the same")
        eq(sha(get_bytes(b, "k")), sha(second), "the current version")


def check_presigned_urls():
    data = rand(2000)
    with new_bucket("presigned") as b:
        S3.put_object(Bucket=b, Key="p", Body=data)
        url = S3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"}, ExpiresIn=60)
        st, body, code = http_status(url)
        eq((st, code), (200, None), "presigned GET")
        eq(sha(body), sha(data), "presigned GET content")

        up = rand(3000)
        purl = S3.generate_presigned_url("put_object", Params={"Bucket": b, "Key": "up"}, ExpiresIn=60)
        st, body, code = http_status(purl, data=up, method="PUT", hdrs={"Content-Type": "application/octet-stream"})
        eq((st, code), (200, None), f"presigned PUT: {body[:300]!r}")
        eq(sha(get_bytes(b, "up")), sha(up), "presigned PUT content")

        m = re.search(r"(X-Amz-Signature=)([0-9a-f]{64})", url)
        check(m, f"no SigV4 signature in {url}")
        sig = m.group(2)
        tampered = url.replace(m.group(0), m.group(1) + sig[:-1] + ("0" if sig[-1] != "0" else "1"))
        st, body, code = http_status(tampered)
        eq((st, code), (403, "SignatureDoesNotMatch"), "tampered presigned GET")

        short = S3.generate_presigned_url("get_object", Params={"Bucket": b, "Key": "p"}, ExpiresIn=1)
        time.sleep(2)  # S3 semantics: let it expire
        st, body, code = http_status(short)
        eq(st, 403, f"expired presigned GET ({code})")


def check_transfer_manager():
    data = rand(20 * MiB)
    cfg = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB, max_concurrency=4)
    with new_bucket("transfer", multipart=True) as b:
        S3.upload_fileobj(io.BytesIO(data), b, "t.bin", Config=cfg)
        h = S3.head_object(Bucket=b, Key="t.bin")
        eq(h["ContentLength"], len(data), "ContentLength")
        check(h["ETag"].endswith('-4"'), f"ETag {h['ETag']} is not that of a 4-part upload")
        # s3transfer asks for CRC32 by default: a composite checksum of 4 parts.
        h = S3.head_object(Bucket=b, Key="t.bin", ChecksumMode="ENABLED")
        check(h.get("ChecksumCRC32", "").endswith("-4"), f"checksum {h.get('ChecksumCRC32')} of a 4-part upload")
        out = io.BytesIO()
        S3.download_fileobj(b, "t.bin", out, Config=cfg)
        eq(sha(out.getvalue()), sha(data), "download_fileobj content")


def check_ownership():
    if not OTHER:
        raise Skip("OTHER_ACCESS_KEY_ID / OTHER_SECRET_ACCESS_KEY not set")
    other = make_client(*OTHER)
    with new_bucket("ownership") as b:
        S3.put_object(Bucket=b, Key="mine", Body=b"secret")
        denied = (403, "AccessDenied")
        expect_error(other.get_object, denied, Bucket=b, Key="mine")
        expect_error(other.put_object, denied, Bucket=b, Key="intruder", Body=b"x")
        expect_error(other.list_objects_v2, denied, Bucket=b)
        expect_error(other.delete_object, denied, Bucket=b, Key="mine")
        expect_error(S3.head_object, (404, None), Bucket=b, Key="intruder")
        eq(get_bytes(b, "mine"), b"secret", "the owner's object")


ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def grants_of(acl):
    return sorted((g["Grantee"].get("URI") or g["Grantee"].get("ID"), g["Permission"]) for g in acl["Grants"])


def check_acls():
    if not OTHER:
        raise Skip("OTHER_ACCESS_KEY_ID / OTHER_SECRET_ACCESS_KEY not set")
    other, anon = make_client(*OTHER), make_anonymous_client()
    me, them = S3.list_buckets()["Owner"], other.list_buckets()["Owner"]
    denied = (403, "AccessDenied")
    with new_bucket("acl") as b:
        # Objects: private by default, readable by whom their ACL says.
        S3.put_object(Bucket=b, Key="private", Body=b"p")
        S3.put_object(Bucket=b, Key="public", Body=b"pub", ACL="public-read")
        eq(read(anon.get_object(Bucket=b, Key="public")), b"pub", "anonymous GET of a public-read object")
        eq(status(anon.head_object(Bucket=b, Key="public")), 200, "anonymous HEAD of a public-read object")
        expect_error(anon.get_object, denied, Bucket=b, Key="private")
        expect_error(anon.get_object, denied, Bucket=b, Key="absent")
        expect_error(anon.list_objects_v2, denied, Bucket=b)
        expect_error(anon.put_object, denied, Bucket=b, Key="x", Body=b"x")
        expect_error(anon.get_object_acl, denied, Bucket=b, Key="public")
        expect_error(anon.list_buckets, denied)
        acl = S3.get_object_acl(Bucket=b, Key="public")
        eq(acl["Owner"]["ID"], me["ID"], "object ACL owner")
        eq(grants_of(acl), sorted([(me["ID"], "FULL_CONTROL"), (ALL_USERS, "READ")]), "public-read grants")
        eq(grants_of(S3.get_object_acl(Bucket=b, Key="private")), [(me["ID"], "FULL_CONTROL")], "private grants")
        S3.put_object_acl(Bucket=b, Key="private", ACL="authenticated-read")
        eq(read(other.get_object(Bucket=b, Key="private")), b"p", "authenticated-read: another user reads")
        expect_error(anon.get_object, denied, Bucket=b, Key="private")
        expect_error(other.put_object, denied, Bucket=b, Key="private", Body=b"overwrite")
        # A grant by the canonical ID the owner saw in a listing.
        S3.put_object_acl(Bucket=b, Key="private", GrantRead=f'id="{them["ID"]}"')
        eq(read(other.get_object(Bucket=b, Key="private")), b"p", "READ granted by canonical ID")
        S3.put_object_acl(Bucket=b, Key="private", ACL="private")
        expect_error(other.get_object, denied, Bucket=b, Key="private")
        expect_error(other.put_object_acl, denied, Bucket=b, Key="private", ACL="public-read")
        # The bucket's ACL: listing and writing, never its objects' reads.
        eq(grants_of(S3.get_bucket_acl(Bucket=b)), [(me["ID"], "FULL_CONTROL")], "a new bucket is private")
        S3.put_bucket_acl(Bucket=b, ACL="public-read")
        listed = [o["Key"] for o in anon.list_objects_v2(Bucket=b).get("Contents", [])]
        eq(listed, ["private", "public"], "anonymous listing of a public-read bucket")
        expect_error(anon.get_object, denied, Bucket=b, Key="private")
        expect_error(anon.put_object, denied, Bucket=b, Key="x", Body=b"x")
        S3.put_bucket_acl(Bucket=b, ACL="public-read-write")
        anon.put_object(Bucket=b, Key="dropbox", Body=b"dropped")
        eq(get_bytes(b, "dropbox"), b"dropped", "an anonymous write to a public-read-write bucket")
        expect_error(anon.delete_bucket, denied, Bucket=b)
        expect_error(anon.put_bucket_acl, denied, Bucket=b, ACL="private")
        # A whole document, as clients edit ACLs: the owner's grant kept.
        acl = S3.get_bucket_acl(Bucket=b)
        grants = [g for g in acl["Grants"] if g["Grantee"].get("ID") == me["ID"]]
        grants.append({"Grantee": {"Type": "CanonicalUser", "ID": them["ID"]}, "Permission": "WRITE"})
        S3.put_bucket_acl(Bucket=b, AccessControlPolicy={"Owner": acl["Owner"], "Grants": grants})
        eq(grants_of(S3.get_bucket_acl(Bucket=b)), sorted([(me["ID"], "FULL_CONTROL"), (them["ID"], "WRITE")]), "edited bucket ACL")
        other.put_object(Bucket=b, Key="from-other", Body=b"o")
        eq(get_bytes(b, "from-other"), b"o", "a write granted by the bucket ACL")
        expect_error(anon.put_object, denied, Bucket=b, Key="x", Body=b"x")
        expect_error(other.list_objects_v2, denied, Bucket=b)
        # Refusals change nothing.
        expect_error(S3.put_bucket_acl, (400, "InvalidArgument"), Bucket=b, ACL="log-delivery-write")
        expect_error(S3.put_bucket_acl, (400, "UnresolvableGrantByEmailAddress"), Bucket=b,
                     GrantRead='emailAddress="someone@example.com"')
        expect_error(S3.put_bucket_acl, (400, "MalformedACLError"), Bucket=b, GrantRead='uri="http://example.com/x"')
        expect_error(S3.put_bucket_acl, (400, "InvalidRequest"), Bucket=b, ACL="private", GrantRead='id="x"')
        eq(len(S3.get_bucket_acl(Bucket=b)["Grants"]), 2, "refused ACLs changed nothing")
    # A bucket created public-read.
    name = bucket_name("acl-created")
    S3.create_bucket(Bucket=name, ACL="public-read")
    try:
        eq(anon.list_objects_v2(Bucket=name)["KeyCount"], 0, "anonymous listing of a bucket created public-read")
    finally:
        S3.delete_bucket(Bucket=name)


def check_bucket_policy():
    if not OTHER:
        raise Skip("OTHER_ACCESS_KEY_ID / OTHER_SECRET_ACCESS_KEY not set")
    other, anon = make_client(*OTHER), make_anonymous_client()
    them = other.list_buckets()["Owner"]["DisplayName"]
    denied = (403, "AccessDenied")
    with new_bucket("policy") as b:
        expect_error(S3.get_bucket_policy, (404, "NoSuchBucketPolicy"), Bucket=b)
        expect_error(S3.get_bucket_policy_status, (404, "NoSuchBucketPolicy"), Bucket=b)
        S3.put_object(Bucket=b, Key="public/a", Body=b"a")
        S3.put_object(Bucket=b, Key="private/b", Body=b"b")
        arn = f"arn:aws:s3:::{b}"
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                 "Resource": f"{arn}/public/*"},
                {"Sid": "OtherListsPublic", "Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam:::user/{them}"]},
                 "Action": "s3:ListBucket", "Resource": arn, "Condition": {"StringLike": {"s3:prefix": "public/*"}}},
                {"Sid": "KeepPublic", "Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject",
                 "Resource": f"{arn}/public/*"},
            ],
        }
        S3.put_bucket_policy(Bucket=b, Policy=json.dumps(policy))
        eq(json.loads(S3.get_bucket_policy(Bucket=b)["Policy"]), policy, "the policy as put")
        eq(S3.get_bucket_policy_status(Bucket=b)["PolicyStatus"]["IsPublic"], True, "policy status")
        eq(read(anon.get_object(Bucket=b, Key="public/a")), b"a", "anonymous GET allowed by the policy")
        eq(read(other.get_object(Bucket=b, Key="public/a")), b"a", "another user's GET allowed by the policy")
        expect_error(anon.get_object, denied, Bucket=b, Key="private/b")
        listed = [o["Key"] for o in other.list_objects_v2(Bucket=b, Prefix="public/").get("Contents", [])]
        eq(listed, ["public/a"], "a listing the policy allows")
        expect_error(other.list_objects_v2, denied, Bucket=b, Prefix="private/")
        expect_error(other.list_objects_v2, denied, Bucket=b)
        expect_error(anon.list_objects_v2, denied, Bucket=b, Prefix="public/")
        # An explicit Deny binds the owner too.
        expect_error(S3.delete_object, denied, Bucket=b, Key="public/a")
        eq(get_bytes(b, "public/a"), b"a", "the denied delete changed nothing")
        # DeleteObjects decides each key as a DeleteObject of it.
        r = S3.delete_objects(Bucket=b, Delete={"Objects": [{"Key": "public/a"}, {"Key": "private/b"}]})
        eq([d["Key"] for d in r.get("Deleted", [])], ["private/b"], "the keys the policy lets go")
        eq([(e["Key"], e["Code"]) for e in r.get("Errors", [])], [("public/a", "AccessDenied")], "the key it keeps")
        eq(get_bytes(b, "public/a"), b"a", "the kept key")
        # Others cannot read or change the policy.
        expect_error(other.get_bucket_policy, denied, Bucket=b)
        expect_error(other.put_bucket_policy, denied, Bucket=b, Policy=json.dumps(policy))
        expect_error(anon.delete_bucket_policy, denied, Bucket=b)
        # Conditions on where the request comes from; the owner keeps the
        # policy itself even when the policy denies it everything.
        by_ip = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": [arn, f"{arn}/*"],
             "Condition": {"IpAddress": {"aws:SourceIp": ["127.0.0.0/8", "::1"]}}}]}
        S3.put_bucket_policy(Bucket=b, Policy=json.dumps(by_ip))
        eq(S3.get_bucket_policy_status(Bucket=b)["PolicyStatus"]["IsPublic"], False, "a Deny is not public")
        expect_error(S3.list_objects_v2, denied, Bucket=b)
        expect_error(S3.get_object, denied, Bucket=b, Key="public/a")
        eq(json.loads(S3.get_bucket_policy(Bucket=b)["Policy"]), by_ip, "the owner still reads its policy")
        tls_only = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/*",
             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}
        S3.put_bucket_policy(Bucket=b, Policy=json.dumps(tls_only))
        expect_error(S3.get_object, denied, Bucket=b, Key="public/a")
        eq(status(S3.list_objects_v2(Bucket=b)), 200, "listing is not denied by a GetObject rule")
        S3.delete_bucket_policy(Bucket=b)
        eq(get_bytes(b, "public/a"), b"a", "after the policy is deleted")
        expect_error(anon.get_object, denied, Bucket=b, Key="public/a")
        # Malformed policies are refused and change nothing.
        for bad in ["{}", "not json", json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::elsewhere/*"}]}),
                json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "NotPrincipal": "*", "Action": "s3:GetObject", "Resource": f"{arn}/*"}]})]:
            expect_error(S3.put_bucket_policy, (400, "MalformedPolicy"), Bucket=b, Policy=bad)
        expect_error(S3.get_bucket_policy, (404, "NoSuchBucketPolicy"), Bucket=b)


def check_errors():
    with new_bucket("errors") as b:
        expect_error(S3.get_object, (404, "NoSuchKey"), Bucket=b, Key="missing")
        expect_error(S3.head_object, (404, None), Bucket=b, Key="missing")
        missing = bucket_name("nosuch")
        expect_error(S3.list_objects_v2, (404, "NoSuchBucket"), Bucket=missing)
        expect_error(S3.get_object, (404, "NoSuchBucket"), Bucket=missing, Key="k")
        expect_error(S3.put_object, (404, "NoSuchBucket"), Bucket=missing, Key="k", Body=b"x")
        expect_error(S3.head_bucket, (404, None), Bucket=missing)

        S3.put_object(Bucket=b, Key="k", Body=b"x")
        expect_error(S3.delete_bucket, (409, "BucketNotEmpty"), Bucket=b)

        bad_key = make_client("AKIA" + secrets.token_hex(8).upper(), SECRET)
        expect_error(bad_key.list_buckets, (403, "InvalidAccessKeyId"))
        expect_error(bad_key.get_object, (403, "InvalidAccessKeyId"), Bucket=b, Key="k")
        wrong_secret = SECRET[:-1] + ("A" if SECRET[-1] != "A" else "B")
        bad_secret = make_client(ACCESS, wrong_secret)
        expect_error(bad_secret.list_buckets, (403, "SignatureDoesNotMatch"))
        expect_error(bad_secret.get_object, (403, "SignatureDoesNotMatch"), Bucket=b, Key="k")

        expect_error(S3.get_object, (400, "InvalidArgument"), (404, "NoSuchVersion"), Bucket=b, Key="k", VersionId="zzz")


CHECKS = [
    ("objects", check_objects),
    ("range_get", check_range_get),
    ("conditional_get", check_conditional_get),
    ("response_overrides", check_response_overrides),
    ("checksums", check_checksums),
    ("copy_object", check_copy_object),
    ("delete_objects", check_delete_objects),
    ("list_objects_v2", check_list_objects_v2),
    ("list_objects_v1", check_list_objects_v1),
    ("versioning", check_versioning),
    ("version_null_unversioned", check_version_null_unversioned),
    ("concurrent_versions", check_concurrent_versions),
    ("multipart", check_multipart),
    ("multipart_checksums", check_multipart_checksums),
    ("conditional_writes", check_conditional_writes),
    ("conformance_gaps", check_conformance_gaps),
    ("tagging", check_tagging),
    ("cors", check_cors),
    ("object_lock", check_object_lock),
    ("lifecycle", check_lifecycle),
    ("presigned_urls", check_presigned_urls),
    ("transfer_manager", check_transfer_manager),
    ("ownership", check_ownership),
    ("acls", check_acls),
    ("bucket_policy", check_bucket_policy),
    ("errors", check_errors),
]


def main():
    global ENDPOINT, REGION, ACCESS, SECRET, OTHER, S3
    missing = [v for v in ("S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    if missing:
        print(f"FAIL setup: set {', '.join(missing)}", file=sys.stderr)
        return 2
    ENDPOINT = os.environ["S3_ENDPOINT"].rstrip("/")
    REGION = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    ACCESS, SECRET = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    if os.environ.get("OTHER_ACCESS_KEY_ID") and os.environ.get("OTHER_SECRET_ACCESS_KEY"):
        OTHER = (os.environ["OTHER_ACCESS_KEY_ID"], os.environ["OTHER_SECRET_ACCESS_KEY"])
    S3 = make_client(ACCESS, SECRET)

    wanted = sys.argv[1:]
    names = [n for n, _ in CHECKS]
    unknown = [w for w in wanted if w not in names]
    if unknown:
        print(f"FAIL setup: unknown checks {unknown}; known: {names}", file=sys.stderr)
        return 2
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}, endpoint {ENDPOINT}", flush=True)
    for name, fn in CHECKS:
        if wanted and name not in wanted:
            continue
        try:
            fn()
        except Skip as s:
            print(f"skip {name}: {s}", flush=True)
        except BaseException:
            traceback.print_exc()
            sys.stderr.flush()
            print(f"FAIL {name}", flush=True)
            return 1
        else:
            print(f"ok {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
