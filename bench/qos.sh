#!/usr/bin/env bash
# What QoS costs the S3 gateway per request (issue 17): a `chuyi up`
# cluster of its own on other ports, then bench/qos.py against the process
# that serves S3 (the storage nodes and the metadata member are its
# children, not counted). N (2000) requests of each kind.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
dir=$(mktemp -d /var/tmp/chuyi-qos-bench.XXXXXX)
(cd "$repo" && CARGO_TARGET_DIR=$target cargo build -q --bin chuyi)
"$target/debug/chuyi" up --data-dir "$dir" --port-base 7500 --s3 127.0.0.1:19200 \
	--s3-tls 127.0.0.1:19243 --nbd 127.0.0.1:19909 --metrics 127.0.0.1:0 >"$dir.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$dir" "$dir.log"' EXIT
for _ in $(seq 120); do [ -s "$dir/up.env" ] && break; sleep 0.5; done
set -a; . "$dir/up.env"; set +a
echo "qos.sh: $(nproc) CPUs, $(date -u +%FT%TZ), commit $(git -C "$repo" rev-parse --short HEAD)"
python3 "$repo/bench/qos.py" "$up" "${N:-2000}"
