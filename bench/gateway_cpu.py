"""What bench/refusals.py and bench/qos.py share: the CPU a process has
used (utime + stime from /proc/PID/stat) and a SigV4-signed GET's headers,
signed before timing so that signing is not counted."""

import os

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
