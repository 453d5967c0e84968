#!/usr/bin/env python3
"""CORS as a real browser enforces it: headless Chromium loads a page from
another origin (a local HTTP server on another port), whose script reads
an object from the gateway with fetch() through a presigned URL, as a web
DICOM viewer does.

Environment: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_DEFAULT_REGION (default us-east-1); CHROMIUM (default: chromium).

Checks, each from what the page's script could see:
- a GET from an allowed origin reads the object's bytes, and the exposed
  ETag header;
- a PUT with a header outside the simple ones (a preflight first) stores
  an object the test then reads with boto3;
- the same GET from a bucket without CORS rules is blocked by the browser;
- the page's origin removed from the rules, the GET is blocked.
Prints `ok browser_cors`, or `FAIL ...` and exits 1.
"""

import hashlib
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time

import boto3
from botocore.config import Config


def client():
    return boto3.session.Session().client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"].rstrip("/"),
        region_name=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


PAGE = """<!doctype html><html><head><title>viewer</title></head><body><pre id="out">running</pre><script>
const urls = %s;
async function sha256(buf) {
  const d = await crypto.subtle.digest("SHA-256", buf);
  return Array.from(new Uint8Array(d)).map(b => b.toString(16).padStart(2, "0")).join("");
}
async function get(url) {
  try {
    const r = await fetch(url);
    return {status: r.status, sha: await sha256(await r.arrayBuffer()), etag: r.headers.get("ETag")};
  } catch (e) { return {blocked: String(e)}; }
}
async function put(url) {
  try {
    const r = await fetch(url, {method: "PUT", body: "from the browser", headers: {"x-amz-meta-origin": "viewer"}});
    return {status: r.status};
  } catch (e) { return {blocked: String(e)}; }
}
(async () => {
  const out = {allowed: await get(urls.allowed), put: await put(urls.put), no_rules: await get(urls.no_rules)};
  document.getElementById("out").textContent = "RESULT " + JSON.stringify(out) + " END";
})();
</script></body></html>"""


def serve(page):
    """Serves `page["html"]` at / on a free port, read at each request."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = page["html"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def browse(url):
    """What the page's script found, from Chromium's DOM after it ran."""
    chromium = os.environ.get("CHROMIUM", "chromium")
    args = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--virtual-time-budget=20000", "--dump-dom", url]
    dom = subprocess.run(args, capture_output=True, text=True, timeout=120).stdout
    start, end = dom.find("RESULT "), dom.find(" END")
    if start < 0 or end < 0:
        raise AssertionError(f"the page's script did not finish; DOM: {dom[:2000]}")
    return json.loads(dom[start + len("RESULT "):end].replace("&quot;", '"').replace("&amp;", "&"))


def fail(what):
    print(f"FAIL browser_cors: {what}", flush=True)
    sys.exit(1)


def main():
    s3 = client()
    tag = secrets.token_hex(4)
    viewer, plain = f"cors-viewer-{tag}", f"cors-plain-{tag}"
    body = os.urandom(100_000)
    page = {"html": ""}  # set once the URLs are known
    page_server = serve(page)
    origin = f"http://127.0.0.1:{page_server.server_address[1]}"
    for b in (viewer, plain):
        s3.create_bucket(Bucket=b)
        s3.put_object(Bucket=b, Key="scan.dcm", Body=body)
    rules = {"CORSRules": [{"AllowedOrigins": [origin], "AllowedMethods": ["GET", "PUT"],
                            "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"], "MaxAgeSeconds": 60}]}
    s3.put_bucket_cors(Bucket=viewer, CORSConfiguration=rules)
    presign = lambda method, b, k: s3.generate_presigned_url(method, Params={"Bucket": b, "Key": k}, ExpiresIn=600)
    urls = {
        "allowed": presign("get_object", viewer, "scan.dcm"),
        "put": presign("put_object", viewer, "from-browser.txt"),
        "no_rules": presign("get_object", plain, "scan.dcm"),
    }
    try:
        page["html"] = PAGE % json.dumps(urls)
        got = browse(origin + "/")
        print("the page saw:", json.dumps(got), flush=True)
        want_sha = hashlib.sha256(body).hexdigest()
        if got["allowed"].get("sha") != want_sha or got["allowed"].get("status") != 200:
            fail(f"the allowed GET: {got['allowed']}")
        if not (got["allowed"].get("etag") or "").strip('"'):
            fail(f"ETag was not exposed: {got['allowed']}")
        if got["put"].get("status") != 200:
            fail(f"the PUT after a preflight: {got['put']}")
        stored = s3.get_object(Bucket=viewer, Key="from-browser.txt")
        if stored["Body"].read() != b"from the browser" or stored["Metadata"].get("origin") != "viewer":
            fail("the browser's PUT did not store what it sent")
        if "blocked" not in got["no_rules"]:
            fail(f"a bucket without CORS rules was readable cross-origin: {got['no_rules']}")
        # Rules that name another origin: the browser blocks the page.
        rules["CORSRules"][0]["AllowedOrigins"] = ["https://elsewhere.example"]
        s3.put_bucket_cors(Bucket=viewer, CORSConfiguration=rules)
        time.sleep(2.5)  # the gateway reads rules through a 2 s cache
        again = browse(origin + "/")
        print("after the rules changed:", json.dumps(again["allowed"]), flush=True)
        if "blocked" not in again["allowed"]:
            fail(f"a GET from an origin the rules no longer name: {again['allowed']}")
    finally:
        page_server.shutdown()
        for b in (viewer, plain):
            for o in s3.list_objects_v2(Bucket=b).get("Contents", []):
                s3.delete_object(Bucket=b, Key=o["Key"])
            s3.delete_bucket(Bucket=b)
    print("ok browser_cors", flush=True)


if __name__ == "__main__":
    main()
