"""What bench/refusals.py and bench/qos.py share: their arguments and a
4 KiB object to GET, the CPU a process has used (utime + stime from
/proc/PID/stat) and a SigV4-signed GET's headers, signed before timing so
that signing is not counted."""

import os
import sys
import urllib.parse

import boto3

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def signed_headers(url, access, secret, region):
    req = AWSRequest(method="GET", url=url)
    S3SigV4Auth(Credentials(access, secret), "s3", region).add_auth(req)
    return dict(req.headers.items())


def setup(bucket, key):
    """PID and N from the arguments, the gateway and credentials from
    chuyi up's environment, and `bucket`/`key` made (4 KiB): (pid, n, host,
    url of the object, access key, secret key, region)."""
    pid = int(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    endpoint = os.environ["CHUYI_S3_ENDPOINT"]
    region = os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    access, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    s3.put_object(Bucket=bucket, Key=key, Body=os.urandom(4096))
    return pid, n, urllib.parse.urlsplit(endpoint).netloc, f"{endpoint}/{bucket}/{key}", access, secret, region
