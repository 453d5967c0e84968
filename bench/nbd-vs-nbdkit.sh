#!/usr/bin/env bash
# fio's NBD engine against a chuyi volume (3 storage nodes, two replicas,
# filled first, served by the NBD frontend) and, in the same run, against
# nbdkit's file plugin serving a raw file on the same disk over TCP, twice:
# as it comes (reads and writes through the page cache) and with
# cache=none (pages dropped after each request, so reads reach the device
# as chuyi's O_DIRECT reads do). 4 KiB randread and randwrite at QD1 and
# QD32, 1 MiB sequential read and write at QD8. Prints each result and
# chuyi's ratio to both; raw fio JSON in $BENCH_DIR/results.
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-nbd-bench, not tmpfs), RUN_SECONDS (10),
# SIZE_MIB (1024), WORKLOADS (all six: "rw bs qd,rw bs qd,..."),
# NODE_LINK (tcp, or unix: the frontend reaches the nodes over their Unix
# sockets, as on a host that runs both).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-nbd-bench}")
run_s=${RUN_SECONDS:-10}
size_mib=${SIZE_MIB:-1024}
target_dir=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
results=$bench_dir/results
chuyi_port=10899
nbdkit_port=10898
nocache_port=10897

for tool in fio jq nbdkit; do
	command -v "$tool" >/dev/null || { echo "nbd-vs-nbdkit: $tool is needed" >&2; exit 1; }
done
(cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build --workspace --all-targets -q)

rm -rf "$bench_dir" && mkdir -p "$results"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# chuyi: the harness keeps the cluster's disks under TMPDIR.
TMPDIR=$bench_dir "$target_dir/debug/chuyi-bench" nbd-serve --volume-mib "$size_mib" \
	--listen "127.0.0.1:$chuyi_port" $([ "${NODE_LINK:-tcp}" = unix ] && echo --node-unix) >"$results/chuyi-serve.log" 2>&1 &
pids+=($!)
# nbdkit: a raw file of the same size on the same disk, filled.
raw=$bench_dir/raw.img
fio --name=fill --filename="$raw" --rw=write --bs=1M --size="${size_mib}M" --direct=1 \
	--output="$results/fill.txt" >/dev/null
nbdkit -f -p "$nbdkit_port" --exit-with-parent file "$raw" &
pids+=($!)
nbdkit -f -p "$nocache_port" --exit-with-parent file "$raw" cache=none &
pids+=($!)
for _ in $(seq 600); do grep -q READY "$results/chuyi-serve.log" && break; sleep 0.5; done
grep -q READY "$results/chuyi-serve.log" || { cat "$results/chuyi-serve.log"; exit 1; }

run() { # name uri rw bs qd
	fio --name="$1" --ioengine=nbd --uri="$2" --rw="$3" --bs="$4" --iodepth="$5" \
		--size="${size_mib}M" --time_based --runtime="$run_s" --ramp_time=2 \
		--output-format=json --output="$results/$1.json" >/dev/null
	jq -r '.jobs[0] | [(.read.iops + .write.iops), ((.read.bw + .write.bw) / 1024)] | @tsv' "$results/$1.json"
}

printf '%-16s %12s %12s %12s %7s %7s\n' workload chuyi nbdkit-file nbdkit-nocache ratio ratio-nc
IFS=, read -r -a workloads <<<"${WORKLOADS:-randread 4k 1,randread 4k 32,randwrite 4k 1,randwrite 4k 32,read 1M 8,write 1M 8}"
for w in "${workloads[@]}"; do
	set -- $w
	name="$1-$2-qd$3"
	read -r c_iops c_mib < <(run "chuyi-$name" "nbd://127.0.0.1:$chuyi_port/bench" "$1" "$2" "$3")
	read -r k_iops k_mib < <(run "nbdkit-$name" "nbd://127.0.0.1:$nbdkit_port" "$1" "$2" "$3")
	read -r n_iops n_mib < <(run "nocache-$name" "nbd://127.0.0.1:$nocache_port" "$1" "$2" "$3")
	ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
	if [ "$2" = 4k ]; then
		printf '%-16s %9.0f io %9.0f io %9.0f io %7s %7s\n' "$name" "$c_iops" "$k_iops" "$n_iops" \
			"$(ratio "$c_iops" "$k_iops")" "$(ratio "$c_iops" "$n_iops")"
	else
		printf '%-16s %6.0f MiB/s %6.0f MiB/s %6.0f MiB/s %7s %7s\n' "$name" "$c_mib" "$k_mib" "$n_mib" \
			"$(ratio "$c_mib" "$k_mib")" "$(ratio "$c_mib" "$n_mib")"
	fi
done
