#!/usr/bin/env bash
# What encryption costs a volume: fio's NBD engine against a plain and an
# SM4-XTS encrypted chuyi volume of the same size, both filled, served by
# one NBD frontend (`chuyi-bench nbd-serve --encrypted`), in the same run:
# 4 KiB randread and randwrite at QD1 and QD32, 1 MiB sequential read and
# write at QD8. Prints each pair and encrypted/plain; raw fio JSON in
# $BENCH_DIR/results.
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-nbd-enc-bench, not tmpfs), RUN_SECONDS
# (10), SIZE_MIB (512), WORKLOADS (all six: "rw bs qd,rw bs qd,...").
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-nbd-enc-bench}")
run_s=${RUN_SECONDS:-10}
size_mib=${SIZE_MIB:-512}
target_dir=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
results=$bench_dir/results
port=10895

for tool in fio jq; do
	command -v "$tool" >/dev/null || { echo "nbd-encrypted: $tool is needed" >&2; exit 1; }
done
(cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build --workspace --all-targets -q)

rm -rf "$bench_dir" && mkdir -p "$results"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

TMPDIR=$bench_dir "$target_dir/debug/chuyi-bench" nbd-serve --volume-mib "$size_mib" --encrypted \
	--listen "127.0.0.1:$port" >"$results/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 600); do grep -q READY "$results/serve.log" && break; sleep 0.5; done
grep -q READY "$results/serve.log" || { cat "$results/serve.log"; exit 1; }

run() { # name uri rw bs qd
	fio --name="$1" --ioengine=nbd --uri="$2" --rw="$3" --bs="$4" --iodepth="$5" \
		--size="${size_mib}M" --time_based --runtime="$run_s" --ramp_time=2 \
		--output-format=json --output="$results/$1.json" >/dev/null
	jq -r '.jobs[0] | [(.read.iops + .write.iops), ((.read.bw + .write.bw) / 1024)] | @tsv' "$results/$1.json"
}

printf '%-16s %12s %12s %8s\n' workload plain encrypted ratio
IFS=, read -r -a workloads <<<"${WORKLOADS:-randread 4k 1,randread 4k 32,randwrite 4k 1,randwrite 4k 32,read 1M 8,write 1M 8}"
for w in "${workloads[@]}"; do
	set -- $w
	name="$1-$2-qd$3"
	read -r p_iops p_mib < <(run "plain-$name" "nbd://127.0.0.1:$port/bench" "$1" "$2" "$3")
	read -r e_iops e_mib < <(run "enc-$name" "nbd://127.0.0.1:$port/bench-enc" "$1" "$2" "$3")
	if [ "$2" = 4k ]; then
		printf '%-16s %9.0f io %9.0f io %8.2f\n' "$name" "$p_iops" "$e_iops" "$(awk -v a="$e_iops" -v b="$p_iops" 'BEGIN { print a / b }')"
	else
		printf '%-16s %7.0f MiB/s %7.0f MiB/s %6.2f\n' "$name" "$p_mib" "$e_mib" "$(awk -v a="$e_mib" -v b="$p_mib" 'BEGIN { print a / b }')"
	fi
done
