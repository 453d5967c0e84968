#!/usr/bin/env bash
# Runs a gateway benchmark against a `chuyi up` cluster of its own:
#   bench/with_up.sh NAME PORT_OFFSET SCRIPT [ARGS...]
# brings up a cluster under /var/tmp on ports offset from the usual ones
# by PORT_OFFSET (so that two benchmarks, or `make run`, can coexist),
# sources its up.env and runs `python3 SCRIPT PID ARGS...`, PID being the
# process that serves S3 (its storage nodes and metadata member are its
# children, not counted); the cluster is stopped and removed at the end.
set -euo pipefail
name=$1 offset=$2 script=$3
shift 3
repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
dir=$(mktemp -d "/var/tmp/chuyi-$name.XXXXXX")
(cd "$repo" && CARGO_TARGET_DIR=$target cargo build -q --workspace --all-targets)
# Port bases 10 x PORT_OFFSET apart from 20000 (below the ephemeral range):
# a cluster uses its base + 1..3, + 101 and + 102.
"$target/debug/chuyi" up --data-dir "$dir" --port-base $((20000 + 10 * offset)) --s3 127.0.0.1:$((19000 + offset)) \
	--s3-tls 127.0.0.1:$((19043 + offset)) --nbd 127.0.0.1:$((19709 + offset)) --metrics 127.0.0.1:0 \
	--ssd-capacity "${SSD_CAPACITY:-4GiB}" \
	>"$dir.log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$dir" "$dir.log"' EXIT
for _ in $(seq 120); do [ -s "$dir/up.env" ] && break; sleep 0.5; done
set -a; . "$dir/up.env"; set +a
echo "$name: $(nproc) CPUs, $(date -u +%FT%TZ), commit $(git -C "$repo" rev-parse --short HEAD)"
python3 "$script" "$up" "$@"
