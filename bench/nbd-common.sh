# What the NBD benchmark scripts share (sourced, not run): their knobs,
# the build, a clean results directory, stopping what they started, the
# chuyi side (`chuyi-bench nbd-serve`), and one fio run.
#
# Knobs: BENCH_DIR (the script's default, not tmpfs), RUN_SECONDS (10),
# SIZE_MIB (the script's default), WORKLOADS (all six: "rw bs qd,...").

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-$default_bench_dir}")
run_s=${RUN_SECONDS:-10}
size_mib=${SIZE_MIB:-$default_size_mib}
target_dir=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
results=$bench_dir/results
IFS=, read -r -a workloads <<<"${WORKLOADS:-randread 4k 1,randread 4k 32,randwrite 4k 1,randwrite 4k 32,read 1M 8,write 1M 8}"

need() { # tool...
	for tool in "$@"; do
		command -v "$tool" >/dev/null || { echo "$(basename "$0"): $tool is needed" >&2; exit 1; }
	done
}

(cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build --workspace --all-targets -q)
rm -rf "$bench_dir" && mkdir -p "$results"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

serve_chuyi() { # port, then extra nbd-serve arguments; waits until it serves
	local port=$1
	shift
	# The harness keeps the cluster's disks under TMPDIR.
	TMPDIR=$bench_dir "$target_dir/debug/chuyi-bench" nbd-serve --volume-mib "$size_mib" \
		--listen "127.0.0.1:$port" "$@" >"$results/chuyi-serve.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 600); do grep -q READY "$results/chuyi-serve.log" && break; sleep 0.5; done
	grep -q READY "$results/chuyi-serve.log" || { cat "$results/chuyi-serve.log"; exit 1; }
}

run() { # name uri rw bs qd -> "iops MiB/s p50_us p99_us" (completion latency of the
	# reads, or of the writes when there were none; 0 when nothing completed)
	fio --name="$1" --ioengine=nbd --uri="$2" --rw="$3" --bs="$4" --iodepth="$5" \
		--size="${size_mib}M" --time_based --runtime="$run_s" --ramp_time=2 \
		--output-format=json --output="$results/$1.json" >/dev/null
	jq -r '.jobs[0] | (if .read.iops > 0 then .read else .write end) as $d
		| [(.read.iops + .write.iops), ((.read.bw + .write.bw) / 1024),
		   (($d.clat_ns.percentile["50.000000"] // 0) / 1000), (($d.clat_ns.percentile["99.000000"] // 0) / 1000)] | @tsv' "$results/$1.json"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
