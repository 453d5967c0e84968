#!/usr/bin/env python3
"""Malformed and hostile requests against a running S3 gateway.

Every request here must be refused with a 4xx S3 error (an XML body with a
<Code>, except for HEAD) and change nothing, and the gateway must keep
serving. Requests are signed with botocore's SigV4Auth and sent with
http.client (or a raw socket) so that the bytes on the wire are exactly the
ones written here; boto3 is used only to set up and to verify.

Environment:
  S3_ENDPOINT              e.g. http://127.0.0.1:9000 (path-style addressing only)
  AWS_ACCESS_KEY_ID        a gateway user's keys
  AWS_SECRET_ACCESS_KEY
  AWS_DEFAULT_REGION       defaults to us-east-1

Usage: robustness.py [-k] [-v] [CHECK ...]
  no CHECK: every check, in order; -k: keep going after a failure (put the 3
  objects back, run the next checks, list the failed ones, still exit 1);
  -v: print the status and code of each refused request.

Setup: one bucket (rb-<random hex>, versioning never set) holding 3 known
objects, and one multipart upload in progress with a 5 MiB part 1 and a
1 KiB part 2 (two parts, so that a descending part list is wrong only by its
order). Prints `ok <check>` per check; on failure the traceback and
`FAIL <check>`, exit 1. `ok final` when the 3 objects are unchanged, the
listing is exactly them and the gateway still answers ListBuckets. Cleans
up (aborts the upload, deletes the objects and the bucket). Standard
library, boto3 and botocore only.
"""

import base64
import hashlib
import http.client
import os
import secrets
import socket
import sys
import time
import traceback
import urllib.parse
import xml.etree.ElementTree as ET

import boto3
import botocore
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

KiB = 1024
MiB = 1024 * 1024
UNSIGNED = "UNSIGNED-PAYLOAD"

ENDPOINT = None  # urllib.parse.SplitResult of S3_ENDPOINT
REGION = None
CREDS = None
S3 = None  # boto3 client, for setup and verification only

BUCKET = None
OBJECTS = {}  # key -> bytes: the 3 objects that must never change
UPLOAD = None  # (key, upload id, [(part number, etag), ...])
VERBOSE = False  # -v: print the status and code of each refused request


class PathSigV4Auth(SigV4Auth):
    """SigV4 for S3: the path is signed as sent (already URI-encoded), not
    normalized and re-encoded as SigV4Auth does for other services."""

    def _normalize_url_path(self, path):
        return path


# ---------------------------------------------------------------- helpers


def eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def b64md5(data):
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def qs(params):
    """A query string from [(name, value or None)], each part URI-encoded the
    way SigV4 wants it; None gives a bare `name` (signed as `name=`)."""
    parts = []
    for k, v in params:
        k = urllib.parse.quote(k, safe="-_.~")
        parts.append(k if v is None else k + "=" + urllib.parse.quote(str(v), safe="-_.~"))
    return "&".join(parts)


def target(bucket=None, key=None, params=()):
    path = "/"
    if bucket is not None:
        path += urllib.parse.quote(bucket, safe="-_.~")
        if key is not None:
            path += "/" + urllib.parse.quote(key, safe="-_.~/")
    q = qs(params)
    return path + ("?" + q if q else "")


def host_header():
    return ENDPOINT.netloc


def sign(method, path_qs, headers=None, body=b"", payload_hash=None):
    """The headers (a list of (name, value)) of a SigV4-signed request.
    payload_hash: the x-amz-content-sha256 value; default the body's sha256."""
    hdrs = {"Host": host_header()}
    hdrs.update(headers or {})
    hdrs["X-Amz-Content-SHA256"] = payload_hash if payload_hash is not None else sha(body)
    req = AWSRequest(method=method, url=f"{ENDPOINT.scheme}://{ENDPOINT.netloc}{path_qs}", data=body, headers=hdrs)
    PathSigV4Auth(CREDS, "s3", REGION).add_auth(req)
    return list(req.headers.items())


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lowercased names
        self.body = body
        self.code = None
        if body:
            try:
                node = ET.fromstring(body).find("Code")
                self.code = node.text if node is not None else None
            except ET.ParseError:
                pass

    def __repr__(self):
        return f"<{self.status} {self.code} {self.body[:300]!r}>"


def connection(timeout=60):
    port = ENDPOINT.port or (443 if ENDPOINT.scheme == "https" else 80)
    if ENDPOINT.scheme == "https":
        return http.client.HTTPSConnection(ENDPOINT.hostname, port, timeout=timeout)
    return http.client.HTTPConnection(ENDPOINT.hostname, port, timeout=timeout)


def send(method, path_qs, headers=None, body=b"", payload_hash=None, extra=None, timeout=60):
    """A signed request on a fresh connection. extra: (name, value) pairs added
    after signing (unsigned). Returns a Resp, or None if the server closed or
    reset the connection without an answer."""
    hdrs = sign(method, path_qs, headers, body, payload_hash) + list(extra or [])
    conn = connection(timeout)
    try:
        conn.putrequest(method, path_qs, skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs:
            conn.putheader(k, v)
        if body or method in ("PUT", "POST"):
            if not any(k.lower() == "content-length" for k, _ in hdrs):
                conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body if body else None)
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, http.client.BadStatusLine):
        return None
    finally:
        conn.close()


def expect(resp, statuses, codes, what):
    """resp must be an S3 error with a status in `statuses` and (unless codes is
    None) a <Code> in `codes`."""
    if VERBOSE:
        print(f"  {what}: {'closed' if resp is None else f'{resp.status} {resp.code}'}", flush=True)
    check(resp is not None, f"{what}: connection closed without an answer")
    check(
        resp.status in statuses and (codes is None or resp.code in codes),
        f"{what}: want status {statuses} code {codes}, got {resp!r}",
    )
    return resp


def expect_all(cases):
    """expect() on each (resp, statuses, codes, what); one AssertionError naming
    every mismatch."""
    failures = []
    for resp, statuses, codes, what in cases:
        try:
            expect(resp, statuses, codes, what)
        except AssertionError as e:
            failures.append(str(e))
    check(not failures, "\n  ".join(failures))


def expect_4xx_or_closed(resp, what):
    """resp must be a 4xx (an S3 error or hyper's bare 400/431), or None (closed)."""
    if VERBOSE:
        print(f"  {what}: {'closed' if resp is None else f'{resp.status} {resp.code}'}", flush=True)
    if resp is not None:
        check(400 <= resp.status < 500, f"{what}: want a 4xx or the connection closed, got {resp!r}")


def note_raw(what, answer):
    if VERBOSE:
        first = answer.split(b"\r\n", 1)[0].decode("latin-1") if answer else "closed"
        print(f"  {what}: {first}", flush=True)


def ping(what):
    """The gateway still answers a plain ListBuckets."""
    r = send("GET", "/")
    check(r is not None and r.status == 200, f"after {what}: ListBuckets got {r!r}")


def raw_exchange(payload, timeout=10):
    """Sends `payload` on a raw socket, half-closes, returns what came back
    (b'' if the server closed without a word), or raises TimeoutError."""
    port = ENDPOINT.port or 80
    with socket.create_connection((ENDPOINT.hostname, port), timeout=timeout) as s:
        try:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                c = s.recv(65536)
            except ConnectionResetError:
                break
            except socket.timeout:
                if chunks:
                    break
                raise TimeoutError(f"no answer and no close within {timeout}s")
            if not c:
                break
            chunks.append(c)
            if time.monotonic() > deadline:
                break
        return b"".join(chunks)


def status_of_raw(answer):
    """The status of a raw HTTP answer, or None for no answer."""
    if not answer:
        return None
    line = answer.split(b"\r\n", 1)[0]
    parts = line.split()
    check(len(parts) >= 2 and parts[0].startswith(b"HTTP/"), f"not an HTTP answer: {answer[:200]!r}")
    return int(parts[1])


def head_status(key):
    return head_status_in(BUCKET, key)


def assert_absent(key, what):
    eq(head_status(key), 404, f"{what}: HEAD {key[:40]!r}")


def object_keys():
    keys = []
    for page in S3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def assert_objects_unchanged(what):
    for key, data in OBJECTS.items():
        r = S3.get_object(Bucket=BUCKET, Key=key)
        body = r["Body"].read()
        eq(sha(body), sha(data), f"{what}: content of {key}")
    eq(sorted(object_keys()), sorted(OBJECTS), f"{what}: listing")


def upload_parts():
    key, uid, _ = UPLOAD
    r = S3.list_parts(Bucket=BUCKET, Key=key, UploadId=uid)
    return [(p["PartNumber"], p["ETag"], p["Size"]) for p in r.get("Parts", [])]


def assert_upload_intact(what):
    key, uid, parts = UPLOAD
    r = S3.list_multipart_uploads(Bucket=BUCKET)
    ids = [(u["Key"], u["UploadId"]) for u in r.get("Uploads", [])]
    eq(ids, [(key, uid)], f"{what}: ListMultipartUploads")
    eq([(n, e) for n, e, _ in upload_parts()], parts, f"{what}: ListParts")


def new_key(tag):
    return f"probe-{tag}-{secrets.token_hex(4)}"


# ----------------------------------------------------------------- setup


def setup():
    global BUCKET, UPLOAD
    BUCKET = f"rb-{secrets.token_hex(6)}"
    kwargs = {}
    if REGION != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": REGION}
    S3.create_bucket(Bucket=BUCKET, **kwargs)
    OBJECTS.update({"alpha": os.urandom(1000), "dir/beta": os.urandom(64 * KiB), "gamma.bin": os.urandom(1 * MiB + 7)})
    for key, data in OBJECTS.items():
        S3.put_object(Bucket=BUCKET, Key=key, Body=data)
    key = "big/upload"
    uid = S3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    p1 = S3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=1, Body=os.urandom(5 * MiB))["ETag"]
    p2 = S3.upload_part(Bucket=BUCKET, Key=key, UploadId=uid, PartNumber=2, Body=os.urandom(KiB))["ETag"]
    UPLOAD = (key, uid, [(1, p1), (2, p2)])
    v = S3.get_bucket_versioning(Bucket=BUCKET)
    check("Status" not in v, f"new bucket has versioning status {v.get('Status')!r}")
    assert_objects_unchanged("setup")
    assert_upload_intact("setup")


def restore():
    """After a failed check (with -k): put the 3 objects back, so that the next
    checks start from the known state."""
    for key, data in OBJECTS.items():
        S3.put_object(Bucket=BUCKET, Key=key, Body=data)
    for key in object_keys():
        if key not in OBJECTS:
            S3.delete_object(Bucket=BUCKET, Key=key)


def cleanup():
    if BUCKET is None:
        return
    errors = []
    try:
        for u in S3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []):
            S3.abort_multipart_upload(Bucket=BUCKET, Key=u["Key"], UploadId=u["UploadId"])
    except Exception as e:
        errors.append(f"abort uploads: {e}")
    try:
        keys = object_keys()
        for i in range(0, len(keys), 1000):
            S3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True})
    except Exception as e:
        errors.append(f"delete objects: {e}")
    try:
        S3.delete_bucket(Bucket=BUCKET)
    except Exception as e:
        errors.append(f"delete bucket: {e}")
    if errors:
        print(f"warning: cleanup of {BUCKET}: {'; '.join(errors)}", file=sys.stderr)
        return False
    return True


# ----------------------------------------------------------------- checks


def delete_xml(keys, quiet=False):
    objs = "".join(f"<Object><Key>{k}</Key></Object>" for k in keys)
    q = "<Quiet>true</Quiet>" if quiet else ""
    return f'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{q}{objs}</Delete>'.encode()


def post_delete(body, md5=None):
    return send(
        "POST",
        target(BUCKET, params=[("delete", None)]),
        {"Content-MD5": md5 or b64md5(body), "Content-Type": "application/xml"},
        body,
    )


def check_delete_objects_malformed():
    """POST ?delete with bodies S3 refuses; the 3 objects are named in each, so
    a gateway that acted on any of them would lose them."""
    real = sorted(OBJECTS)
    # S3 answers MalformedXML to all of these; InvalidRequest/InvalidArgument
    # are accepted as reasonable alternatives.
    bad = ("MalformedXML", "InvalidRequest", "InvalidArgument")
    cases = [
        ("truncated XML", delete_xml(real)[:-20]),
        ("not XML", b"this is not xml at all " + ",".join(real).encode()),
        ("wrong root element", b"<Remove>" + b"".join(f"<Object><Key>{k}</Key></Object>".encode() for k in real) + b"</Remove>"),
        ("wrong shape", b"<Delete><Key>" + real[0].encode() + b"</Key><Thing><Key>" + real[1].encode() + b"</Key></Thing></Delete>"),
        ("1001 keys", delete_xml(real + [f"nothere-{i:04}" for i in range(1001 - len(real))])),
        ("empty <Delete/>", b"<Delete/>"),
        ("<Delete> with only Quiet", b"<Delete><Quiet>true</Quiet></Delete>"),
    ]
    for what, body in cases:
        expect(post_delete(body), (400,), bad, f"DeleteObjects {what}")
    assert_objects_unchanged("after malformed DeleteObjects")


def scratch_bucket():
    name = f"rb-scratch-{secrets.token_hex(4)}"
    kwargs = {}
    if REGION != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": REGION}
    S3.create_bucket(Bucket=name, **kwargs)
    return name


def remove_scratch_bucket(name):
    """Removes everything, whatever a failed check left (versions, uploads)."""
    for u in S3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        S3.abort_multipart_upload(Bucket=name, Key=u["Key"], UploadId=u["UploadId"])
    r = S3.list_object_versions(Bucket=name)
    objs = [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in r.get("Versions", []) + r.get("DeleteMarkers", [])]
    if objs:
        S3.delete_objects(Bucket=name, Delete={"Objects": objs, "Quiet": True})
    S3.delete_bucket(Bucket=name)


def check_bad_digest_xml():
    """Bodies of XML requests with a Content-MD5 (or x-amz-checksum-crc32) that
    does not match: S3 answers 400 BadDigest and does nothing. Done in a
    scratch bucket: a gateway that ignores the digest would delete objects,
    enable versioning (for good) or complete the upload."""
    b = scratch_bucket()
    failures = []

    def want(resp, statuses, codes, what):
        try:
            expect(resp, statuses, codes, what)
        except AssertionError as e:
            failures.append(str(e))

    try:
        data = {k: os.urandom(100) for k in ("one", "two")}
        for k, v in data.items():
            S3.put_object(Bucket=b, Key=k, Body=v)
        body = delete_xml(sorted(data))
        path = target(b, params=[("delete", None)])
        ctype = {"Content-Type": "application/xml"}
        want(send("POST", path, {**ctype, "Content-MD5": b64md5(b"other")}, body), (400,), ("BadDigest",), "DeleteObjects, wrong Content-MD5")
        # A wrong CRC32: S3 says BadDigest ("The CRC32 you specified did not match");
        # InvalidRequest accepted as in boto3_suite.py.
        want(
            send("POST", path, {**ctype, "x-amz-checksum-crc32": "AAAAAA==", "x-amz-sdk-checksum-algorithm": "CRC32"}, body),
            (400,),
            ("BadDigest", "InvalidRequest"),
            "DeleteObjects, wrong x-amz-checksum-crc32",
        )
        left = sorted(o["Key"] for o in S3.list_objects_v2(Bucket=b).get("Contents", []))
        if left != sorted(data):
            failures.append(f"DeleteObjects with a wrong digest deleted objects: left {left}")

        vbody = b'<VersioningConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Status>Enabled</Status></VersioningConfiguration>'
        want(
            send("PUT", target(b, params=[("versioning", None)]), {**ctype, "Content-MD5": b64md5(b"other")}, vbody),
            (400,),
            ("BadDigest",),
            "PutBucketVersioning, wrong Content-MD5",
        )
        st = S3.get_bucket_versioning(Bucket=b).get("Status")
        if st is not None:
            failures.append(f"PutBucketVersioning with a wrong Content-MD5 set the status to {st!r}")

        uid = S3.create_multipart_upload(Bucket=b, Key="mp")["UploadId"]
        etag = S3.upload_part(Bucket=b, Key="mp", UploadId=uid, PartNumber=1, Body=b"part")["ETag"]
        cbody = complete_xml([(1, etag)])
        want(
            send("POST", target(b, "mp", [("uploadId", uid)]), {**ctype, "Content-MD5": b64md5(b"other")}, cbody),
            (400,),
            ("BadDigest",),
            "CompleteMultipartUpload, wrong Content-MD5",
        )
        ups = [u["UploadId"] for u in S3.list_multipart_uploads(Bucket=b).get("Uploads", [])]
        if ups != [uid] or head_status_in(b, "mp") != 404:
            failures.append(f"CompleteMultipartUpload with a wrong Content-MD5 completed it (uploads {ups})")
    finally:
        remove_scratch_bucket(b)
    check(not failures, "\n  ".join(failures))


def head_status_in(bucket, key):
    try:
        S3.head_object(Bucket=bucket, Key=key)
        return 200
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def complete_xml(parts):
    inner = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{e}</ETag></Part>" for n, e in parts)
    return f"<CompleteMultipartUpload>{inner}</CompleteMultipartUpload>".encode()


def post_complete(body, upload_id=None):
    key, uid, _ = UPLOAD
    return send("POST", target(BUCKET, key, [("uploadId", upload_id or uid)]), {"Content-Type": "application/xml"}, body)


def check_complete_multipart_bad():
    key, uid, parts = UPLOAD
    (n1, e1), (n2, e2) = parts
    expect(post_complete(complete_xml(parts)[:-10]), (400,), ("MalformedXML",), "Complete with truncated XML")
    expect(post_complete(b"<CompleteMultipartUpload><Part>"), (400,), ("MalformedXML",), "Complete with broken XML")
    # S3 refuses an empty part list as MalformedXML ("must specify at least one part").
    expect(post_complete(b"<CompleteMultipartUpload/>"), (400,), ("MalformedXML", "InvalidRequest"), "Complete with no parts")
    expect(post_complete(complete_xml([(n2, e2), (n1, e1)])), (400,), ("InvalidPartOrder",), "Complete with descending parts")
    expect(post_complete(complete_xml([(n1, e1), (n2, e2), (7, e2)])), (400,), ("InvalidPart",), "Complete with a part never uploaded")
    expect(post_complete(complete_xml([(n1, e1), (n2, '"%s"' % ("0" * 32))])), (400,), ("InvalidPart",), "Complete with a wrong ETag")
    # Part number 0: S3's exact code is not documented for Complete; InvalidArgument
    # ("Part number must be an integer between 1 and 10000") or InvalidPart, and a
    # gateway that checks the order first may say InvalidPartOrder.
    expect(
        post_complete(complete_xml([(0, e1), (n2, e2)])),
        (400,),
        ("InvalidArgument", "InvalidPart", "InvalidPartOrder"),
        "Complete with part number 0",
    )
    expect(
        post_complete(complete_xml(parts), upload_id="nosuchupload" + secrets.token_hex(8)),
        (404,),
        ("NoSuchUpload",),
        "Complete of an unknown upload",
    )
    assert_upload_intact("after bad CompleteMultipartUpload")
    assert_absent(key, "after bad CompleteMultipartUpload")


def check_put_bucket_versioning_bad():
    def put(body):
        return send(
            "PUT",
            target(BUCKET, params=[("versioning", None)]),
            {"Content-MD5": b64md5(body), "Content-Type": "application/xml"},
            body,
        )

    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    # S3 answers MalformedXML for both; IllegalVersioningConfigurationException
    # (S3's code for an invalid MFA/Status combination) and InvalidArgument are
    # accepted for the bogus status.
    expect(put(b"<VersioningConfiguration><Status>Enabled"), (400,), ("MalformedXML",), "versioning truncated XML")
    expect(put(b"not xml"), (400,), ("MalformedXML",), "versioning not XML")
    expect(
        put(f"<VersioningConfiguration {ns}><Status>Bogus</Status></VersioningConfiguration>".encode()),
        (400,),
        ("MalformedXML", "InvalidArgument", "IllegalVersioningConfigurationException"),
        "versioning Status=Bogus",
    )
    expect(
        put(f"<VersioningConfiguration {ns}><Status>enabled</Status></VersioningConfiguration>".encode()),
        (400,),
        ("MalformedXML", "InvalidArgument", "IllegalVersioningConfigurationException"),
        "versioning Status=enabled (lower case)",
    )
    v = S3.get_bucket_versioning(Bucket=BUCKET)
    check("Status" not in v, f"GetBucketVersioning after bad puts: Status {v.get('Status')!r}")


def check_upload_part_bad():
    key, uid, _ = UPLOAD
    body = b"x" * 100
    for n in ("0", "10001", "-1", "abc"):
        r = send("PUT", target(BUCKET, key, [("partNumber", n), ("uploadId", uid)]), {}, body)
        expect(r, (400,), ("InvalidArgument",), f"UploadPart partNumber={n}")
    r = send("PUT", target(BUCKET, key, [("partNumber", "3"), ("uploadId", "nosuchupload" + secrets.token_hex(8))]), {}, body)
    expect(r, (404,), ("NoSuchUpload",), "UploadPart to an unknown uploadId")
    # The right upload id under another key is not that upload.
    r = send("PUT", target(BUCKET, "other/key", [("partNumber", "3"), ("uploadId", uid)]), {}, body)
    expect(r, (404,), ("NoSuchUpload",), "UploadPart with the upload id under another key")
    assert_upload_intact("after bad UploadPart")


def check_bad_ranges():
    data = OBJECTS["alpha"]
    path = target(BUCKET, "alpha")
    # An unparsable or unsatisfiable-by-syntax range: RFC 9110 says ignore it, and
    # S3 does (200, the whole object). A 400 or 416 is accepted too.
    for rng in ("bytes=abc", "bytes=5-2", "bytes=--1", "items=0-1"):
        r = send("GET", path, {"Range": rng})
        if VERBOSE:
            print(f"  Range {rng}: {'closed' if r is None else f'{r.status} {r.code}'}", flush=True)
        check(r is not None, f"Range {rng}: connection closed")
        if r.status == 200:
            eq(sha(r.body), sha(data), f"Range {rng}: 200 body")
        else:
            check(r.status in (400, 416) and r.code is not None, f"Range {rng}: got {r!r}")
    expect(send("GET", path, {"Range": "bytes=999999-"}), (416,), ("InvalidRange",), "Range bytes=999999-")
    expect(send("GET", path, {"Range": f"bytes={len(data)}-{len(data) + 5}"}), (416,), ("InvalidRange",), "Range past the end")


def check_bad_names():
    long_key = "k" * 1025
    expect(send("PUT", target(BUCKET, long_key), {}, b"data"), (400,), ("KeyTooLongError",), "PUT of a 1025-byte key")
    # 1024 bytes is allowed: not tried here, this check must change nothing.
    for name in ("UpperCase-" + secrets.token_hex(4), "ab", "b" * 64, "bad_underscore", "-leading-dash", "192.168.5.4"):
        r = send("PUT", target(name), {}, b"")
        try:
            expect(r, (400,), ("InvalidBucketName",), f"CreateBucket {name!r}")
        finally:
            listed = [b["Name"] for b in S3.list_buckets().get("Buckets", [])]
            if name in listed:
                try:
                    S3.delete_bucket(Bucket=name)
                finally:
                    raise AssertionError(f"CreateBucket {name!r} created it: {r!r}")
    eq(sorted(object_keys()), sorted(OBJECTS), "listing after bad names")


def check_huge_headers():
    key = new_key("hdr")
    # One 64 KiB header value (signed user metadata, which S3 limits to 2 KiB,
    # in a header section S3 limits to 8 KiB): S3 says 400 MetadataTooLarge or
    # RequestHeaderSectionTooLarge; hyper would say 431. Closing is accepted.
    r = send("PUT", target(BUCKET, key), {"x-amz-meta-big": "v" * (64 * KiB)}, b"data")
    expect_4xx_or_closed(r, "PUT with a 64 KiB x-amz-meta- header")
    ping("a 64 KiB header")
    assert_absent(key, "after a 64 KiB header")
    # 500 headers (signed metadata): 400 or 431, or closed.
    many = {f"x-amz-meta-h{i:03}": "v" for i in range(500)}
    r = send("PUT", target(BUCKET, key), many, b"data")
    expect_4xx_or_closed(r, "PUT with 500 x-amz-meta- headers")
    ping("500 headers")
    assert_absent(key, "after 500 headers")
    # The same 64 KiB, unsigned, on a GET: S3 says 400 RequestHeaderSectionTooLarge.
    r = send("GET", target(BUCKET, "alpha"), extra=[("X-Padding", "p" * (64 * KiB))])
    expect_4xx_or_closed(r, "GET with an unsigned 64 KiB header")
    ping("an unsigned 64 KiB header")


def check_list_objects_bad_args():
    base = [("list-type", "2")]
    for what, params in (
        ("max-keys=-1", [("max-keys", "-1")]),
        ("max-keys=abc", [("max-keys", "abc")]),
        ("continuation-token=garbage", [("continuation-token", "garbage")]),
        ("encoding-type=bogus", [("encoding-type", "bogus")]),
    ):
        r = send("GET", target(BUCKET, params=base + params))
        expect(r, (400,), ("InvalidArgument",), f"ListObjectsV2 {what}")


def check_bad_version_id():
    path = target(BUCKET, "alpha", [("versionId", "zzz")])
    expect(send("GET", path), (400,), ("InvalidArgument",), "GET versionId=zzz")
    r = send("HEAD", path)
    expect(r, (400,), None, "HEAD versionId=zzz")
    expect(send("DELETE", path), (400,), ("InvalidArgument",), "DELETE versionId=zzz")
    assert_objects_unchanged("after versionId=zzz")


def short_body_put(key, total, sent):
    """A signed PUT announcing `total` bytes that sends `sent` and half-closes;
    returns what the server answered (possibly b'')."""
    path = target(BUCKET, key)
    hdrs = sign("PUT", path, {"Content-Length": str(total)}, payload_hash=UNSIGNED)
    head = f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    try:
        return raw_exchange(head.encode() + os.urandom(sent), timeout=20)
    except TimeoutError:
        return b"(no answer: timed out)"


def check_short_body():
    key = new_key("short")
    answer = short_body_put(key, 1 * MiB, 512 * KiB)
    note_raw("PUT of 512 KiB of 1 MiB, then half-close", answer)
    st = status_of_raw(answer) if answer and answer.startswith(b"HTTP/") else None
    check(st is None or 400 <= st < 500, f"short body: answered {answer[:300]!r}")
    time.sleep(0.5)
    assert_absent(key, "after a short body")
    # The same onto an existing key: it keeps its old content.
    short_body_put("alpha", 1 * MiB, 4 * KiB)
    time.sleep(0.5)
    assert_objects_unchanged("after a short body onto alpha")
    ping("a short body")


def check_wrong_content_sha256():
    body = os.urandom(10 * KiB)
    wrong = sha(b"something else")
    codes = ("XAmzContentSHA256Mismatch", "BadDigest", "SignatureDoesNotMatch")
    key = new_key("sha")
    r_new = send("PUT", target(BUCKET, key), {}, body, payload_hash=wrong)
    r_over = send("PUT", target(BUCKET, "alpha"), {}, body, payload_hash=wrong)
    r_hex = send("PUT", target(BUCKET, key), {}, body, payload_hash="z" * 64)
    # An XML body (DeleteObjects of the 3 objects, right Content-MD5) whose
    # x-amz-content-sha256 is wrong.
    dbody = delete_xml(sorted(OBJECTS))
    r_del = send(
        "POST",
        target(BUCKET, params=[("delete", None)]),
        {"Content-MD5": b64md5(dbody), "Content-Type": "application/xml"},
        dbody,
        payload_hash=wrong,
    )
    # Nothing stored or deleted, whatever the codes.
    assert_absent(key, "after wrong sha256 PUTs")
    assert_objects_unchanged("after wrong sha256 PUTs")
    # S3: 400 XAmzContentSHA256Mismatch; BadDigest and SignatureDoesNotMatch
    # (403) are accepted as other gateways' answers.
    expect_all(
        [
            (r_new, (400, 403), codes, "PUT with a wrong x-amz-content-sha256"),
            (r_over, (400, 403), codes, "PUT onto alpha with a wrong x-amz-content-sha256"),
            # Not hex at all: S3 says 400 InvalidArgument ("x-amz-content-sha256 must be
            # UNSIGNED-PAYLOAD, STREAMING-... or a valid sha256 value").
            (r_hex, (400, 403), codes + ("InvalidArgument", "InvalidRequest"), "PUT with a non-hex x-amz-content-sha256"),
            (r_del, (400, 403), codes, "DeleteObjects with a wrong x-amz-content-sha256"),
        ]
    )


def check_garbage_bytes():
    for what, payload in (
        ("binary garbage", b"\x00\x01 not http\r\n\r\n"),
        ("bad request line", b"GARBAGE / HTTP/9.9\r\n\r\n"),
        ("header without colon", b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"),
    ):
        try:
            answer = raw_exchange(payload, timeout=10)
        except TimeoutError as e:
            raise AssertionError(f"{what}: {e}")
        note_raw(what, answer)
        st = status_of_raw(answer)
        check(st is None or 400 <= st < 500, f"{what}: answered {answer[:300]!r}")
        ping(what)


def check_refused_body_closes():
    """A PUT refused on its headers (bad signature) before its body is read
    must say Connection: close: the server will not read past the unread
    body, and a client that reuses the connection (botocore's pool does)
    would send its next request into a closing socket."""
    body = os.urandom(256 * KiB)
    key = new_key("refused")
    hdrs = sign("PUT", target(BUCKET, key), {}, body)
    flip = lambda v: v[:-1] + ("1" if v.endswith("0") else "0")  # the signature's last hex digit
    hdrs = [(k, flip(v) if k.lower() == "authorization" else v) for k, v in hdrs]
    conn = connection(30)
    try:
        conn.putrequest("PUT", target(BUCKET, key), skip_host=True, skip_accept_encoding=True)
        for k, v in hdrs:
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()  # the body is never sent
        r = conn.getresponse()
        r.read()
        expect(Resp(r.status, {}, b""), (403,), None, "PUT with a bad signature")
        eq((r.getheader("Connection") or "").lower(), "close", "Connection header of a refusal with its body unread")
    finally:
        conn.close()
    assert_absent(key, "after a refused PUT")
    ping("a refused PUT with its body unread")


def check_acl_and_policy_bad():
    """Bodies and headers of the access-control calls that must be refused
    whole: the bucket keeps no grant and no policy, the objects their ACLs."""
    key = sorted(OBJECTS)[0]

    def put_acl(body, headers=None, key=None):
        h = {"Content-MD5": b64md5(body), "Content-Type": "application/xml"}
        h.update(headers or {})
        return send("PUT", target(BUCKET, key=key, params=[("acl", None)]), h, body)

    def put_policy(body):
        return send("PUT", target(BUCKET, params=[("policy", None)]), {"Content-Type": "application/json"}, body)

    expect_all([
        (put_acl(b"not xml"), (400,), ("MalformedXML", "MalformedACLError"), "PutBucketAcl not XML"),
        (put_acl(b"<AccessControlPolicy><AccessControlList><Grant>"), (400,), ("MalformedXML", "MalformedACLError"),
         "PutBucketAcl truncated XML"),
        (put_acl(b"", {"x-amz-grant-read": "id"}), (400,), ("MalformedACLError",), "a grant without '='"),
        (put_acl(b"", {"x-amz-grant-read": 'uri="http://acs.amazonaws.com/groups/global/Nobody"'}), (400,),
         ("MalformedACLError",), "an unknown group"),
        (put_acl(b"", {"x-amz-acl": "public-read", "x-amz-grant-read": "id=x"}), (400,), ("InvalidRequest",),
         "canned and grants together"),
        (put_acl(b"", {"x-amz-acl": "public-read", "x-amz-grant-read": "id=x"}, key=key), (400,), ("InvalidRequest",),
         "PutObjectAcl canned and grants together"),
        (put_acl(b"", {"x-amz-acl": "nonsense"}, key=key), (400,), ("InvalidArgument",), "an unknown canned ACL"),
        # Not UTF-8: s3s refuses the body before the gateway sees it.
        (put_policy(b"\xff\xfe garbage"), (400,), ("MalformedPolicy", "InvalidRequest"), "a policy not UTF-8"),
        (put_policy(b"{not json"), (400,), ("MalformedPolicy",), "a policy that is not JSON"),
        (put_policy(b'{"Version": "2012-10-17", "Statement": []}'), (400,), ("MalformedPolicy",), "no statement"),
        (put_policy(b" " * (30 * 1024)), (400,), ("MalformedPolicy",), "a 30 KiB policy"),
    ])
    acl = S3.get_bucket_acl(Bucket=BUCKET)
    check(len(acl["Grants"]) == 1, f"the bucket gained grants: {acl['Grants']}")
    check(len(S3.get_object_acl(Bucket=BUCKET, Key=key)["Grants"]) == 1, "the object gained grants")
    try:
        S3.get_bucket_policy(Bucket=BUCKET)
        raise AssertionError("a refused policy was stored")
    except ClientError as e:
        check(e.response["Error"]["Code"] == "NoSuchBucketPolicy", f"policy read: {e}")
    assert_objects_unchanged("acl_and_policy_bad")


def check_final():
    assert_objects_unchanged("final")
    assert_upload_intact("final")
    v = S3.get_bucket_versioning(Bucket=BUCKET)
    check("Status" not in v, f"final versioning status {v.get('Status')!r}")
    r = S3.list_buckets()
    check(BUCKET in [b["Name"] for b in r.get("Buckets", [])], "ListBuckets lacks the bucket")


CHECKS = [
    ("delete_objects_malformed", check_delete_objects_malformed),
    ("bad_digest_xml", check_bad_digest_xml),
    ("complete_multipart_bad", check_complete_multipart_bad),
    ("put_bucket_versioning_bad", check_put_bucket_versioning_bad),
    ("upload_part_bad", check_upload_part_bad),
    ("bad_ranges", check_bad_ranges),
    ("bad_names", check_bad_names),
    ("huge_headers", check_huge_headers),
    ("list_objects_bad_args", check_list_objects_bad_args),
    ("bad_version_id", check_bad_version_id),
    ("short_body", check_short_body),
    ("wrong_content_sha256", check_wrong_content_sha256),
    ("garbage_bytes", check_garbage_bytes),
    ("refused_body_closes", check_refused_body_closes),
    ("acl_and_policy_bad", check_acl_and_policy_bad),
]


def main():
    global ENDPOINT, REGION, CREDS, S3, VERBOSE
    missing = [v for v in ("S3_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not os.environ.get(v)]
    if missing:
        print(f"FAIL setup: set {', '.join(missing)}", file=sys.stderr)
        return 2
    args = sys.argv[1:]
    keep_going = False
    while args and args[0] in ("-k", "--keep-going", "-v", "--verbose"):
        if args[0] in ("-k", "--keep-going"):
            keep_going = True
        else:
            VERBOSE = True
        args = args[1:]
    names = [n for n, _ in CHECKS]
    unknown = [a for a in args if a not in names]
    if unknown:
        print(f"FAIL setup: unknown checks {unknown}; known: {names}", file=sys.stderr)
        return 2

    endpoint = os.environ["S3_ENDPOINT"].rstrip("/")
    ENDPOINT = urllib.parse.urlsplit(endpoint)
    REGION = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    CREDS = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
    S3 = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDS.access_key,
        aws_secret_access_key=CREDS.secret_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=120,
        ),
    )
    print(f"boto3 {boto3.__version__}, botocore {botocore.__version__}, endpoint {endpoint}", flush=True)

    failed = []
    try:
        try:
            setup()
        except BaseException:
            traceback.print_exc()
            print("FAIL setup", flush=True)
            return 1
        for name, fn in CHECKS + [("final", check_final)]:
            if args and name not in args and name != "final":
                continue
            try:
                fn()
            except BaseException as e:
                traceback.print_exc()
                sys.stderr.flush()
                print(f"FAIL {name}", flush=True)
                failed.append(name)
                if not keep_going or isinstance(e, KeyboardInterrupt):
                    break
                try:
                    ping(name)
                    restore()
                except BaseException:
                    traceback.print_exc()
                    print("FAIL gateway stopped answering", flush=True)
                    break
            else:
                print(f"ok {name}", flush=True)
    finally:
        if not cleanup():
            failed.append("cleanup")
    if failed:
        print(f"failed: {' '.join(failed)}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
