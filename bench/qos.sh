#!/usr/bin/env bash
# What QoS costs the S3 gateway per request (issue 17): bench/qos.py
# against a `chuyi up` cluster of its own (bench/with_up.sh). N (2000)
# requests of each kind.
exec "$(dirname "$0")/with_up.sh" qos 500 "$(dirname "$0")/qos.py" "${N:-2000}"
