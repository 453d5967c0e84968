#!/usr/bin/env bash
# What a refused request costs the S3 gateway against an accepted one
# (issue 23: "unauthenticated requests cost as little as possible"):
# bench/refusals.py against a `chuyi up` cluster of its own
# (bench/with_up.sh). N (2000) requests of each kind.
exec "$(dirname "$0")/with_up.sh" refusals 400 "$(dirname "$0")/refusals.py" "${N:-2000}"
