#!/usr/bin/env bash
# A metadata member catching up from a streamed snapshot (issue 14): one
# member is filled with object-index puts (`chuyi-bench meta-load`, 64
# writers, FILL_SECONDS), a snapshot is forced by a small `snapshot_logs`,
# then an empty second member is added and must catch up from it. Prints
# the objects, the state's size (the leader's RocksDB and its snapshot
# file), how long the new member took to apply everything, and the peak
# RSS (VmHWM) of both members: with snapshots streamed through files the
# joining member's peak stays flat while the state grows.
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-bench-snap, not tmpfs), FILL_SECONDS (60).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-bench-snap}")
fill_s=${FILL_SECONDS:-60}
. "$(dirname "$0")/meta-common.sh"
for i in 1 2; do
	founders=$([ "$i" = 1 ] && printf '[[member]]\nid = 1\naddr = "127.0.0.1:7501"\n' || true)
	cat >"$bench_dir/m$i.toml" <<TOML
id = $i
listen = "127.0.0.1:750$i"
data_dir = "$bench_dir/m$i"
cluster_secret_file = "$secret_file"
snapshot_logs = 50000

$founders
TOML
done
start() { RUST_LOG=info,openraft=warn "$chuyi" meta --config "$bench_dir/m$1.toml" 2>>"$bench_dir/m$1.log" & pids+=($!); }
hwm_mib() { awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }
applied() { "$chuyi" --meta "127.0.0.1:750$1" --secret-file "$secret_file" status --json 2>/dev/null | jq -r '.last_applied // 0'; }

start 1
m1=${pids[0]}
sleep 2
"$chuyi_bench" meta-load --meta 127.0.0.1:7501 --secret-file "$secret_file" --writers 64 \
	--seconds "$fill_s" --json >"$bench_dir/fill.json"
objects=$(jq -r '.puts' "$bench_dir/fill.json")
# Wait for the leader's snapshot of (nearly) everything.
for _ in $(seq 120); do ls "$bench_dir"/m1/snapshots/*.snap >/dev/null 2>&1 && break; sleep 1; done
snap_mib=$(du -m "$bench_dir"/m1/snapshots/*.snap | awk '{ s += $1 } END { print s }')
rocks_mib=$(du -sm --exclude=snapshots "$bench_dir/m1" | cut -f1)
start 2
m2=${pids[1]}
sleep 1
t0=$(date +%s.%N)
"$chuyi" --meta 127.0.0.1:7501 --secret-file "$secret_file" member add 2 127.0.0.1:7502 >/dev/null
target=$(applied 1)
until [ "$(applied 2)" -ge "$target" ] 2>/dev/null; do sleep 0.2; done
t1=$(date +%s.%N)
printf 'objects %s; leader RocksDB %s MiB, snapshot file %s MiB\n' "$objects" "$rocks_mib" "$snap_mib"
printf 'new member caught up in %.1f s (log index %s)\n' "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$target"
printf 'peak RSS: leader %s MiB, new member %s MiB\n' "$(hwm_mib "$m1")" "$(hwm_mib "$m2")"
grep -h "snapshot installed" "$bench_dir/m2.log" | tail -1
