#!/usr/bin/env bash
# The metadata service's write throughput and read latency: object-index
# puts per second with 1 and 64 concurrent writers, on a 1-member and a
# 3-member group (all members on this machine, each with its own RocksDB
# under $BENCH_DIR), then linearizable reads one at a time.
#
# The peer is fio on the same file system: 4 KiB writes each followed by
# fdatasync, the cost of one durable commit. puts/s divided by fio's
# fsyncs/s is how many puts share one fsync (group commit); above 1 means
# batching works.
#
# Binaries are the dev profile of `make test` (dependencies, RocksDB
# included, at opt-level 2), built with the same `--workspace --all-targets`
# set so cargo reuses that RocksDB build: another feature set or the release
# profile rebuilds RocksDB, 25 minutes on the 2-core development machine.
# The service code at opt-level 1 is not the bottleneck next to fsync.
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-bench-meta, not tmpfs), RUN_SECONDS (10).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-bench-meta}")
run_s=${RUN_SECONDS:-10}
. "$(dirname "$0")/meta-common.sh"

fio_json=$(fio --name=fsync --filename="$bench_dir/fio.img" --size=64m --rw=write --bs=4k \
	--fdatasync=1 --ioengine=sync --time_based --runtime="$run_s" --output-format=json)
fsyncs=$(jq '.jobs[0].sync.lat_ns.N / .jobs[0].job_runtime * 1000' <<<"$fio_json")

# start_group N: N members on ports 7401.., founded together.
start_group() {
	local n=$1 founders="" i
	for i in $(seq 1 "$n"); do founders+="[[member]]"$'\n'"id = $i"$'\n'"addr = \"127.0.0.1:$((7400 + i))\""$'\n'; done
	for i in $(seq 1 "$n"); do
		cat >"$bench_dir/m$i.toml" <<TOML
id = $i
listen = "127.0.0.1:$((7400 + i))"
data_dir = "$bench_dir/g$n/m$i"
cluster_secret_file = "$secret_file"

$founders
TOML
		RUST_LOG=warn "$chuyi" meta --config "$bench_dir/m$i.toml" 2>>"$bench_dir/m$i.log" &
		pids+=($!)
	done
	meta=$(seq -s, -f "127.0.0.1:74%02g" 1 "$n")
}

stop_group() {
	cleanup
	pids=()
}

printf '%-8s %-8s %10s %12s %12s %12s %12s\n' members writers puts/s per-fsync "put p99 us" "read p50 us" "read p99 us"
for members in 1 3; do
	start_group "$members"
	for writers in 1 64; do
		out=$("$chuyi_bench" meta-load --meta "$meta" --secret-file "$secret_file" --writers "$writers" \
			--seconds "$run_s" --reads 2000 --json)
		echo "$out" >>"$bench_dir/results.jsonl"
		jq -r --arg m "$members" --argjson f "$fsyncs" \
			'[$m, .writers, (.puts_per_s|floor), ((.puts_per_s / $f * 100|floor) / 100),
			  (.put_latency.p99_us|floor), (.read_latency.p50_us|floor), (.read_latency.p99_us|floor)]
			 | @tsv' <<<"$out" | awk -F'\t' '{printf "%-8s %-8s %10s %12s %12s %12s %12s\n", $1, $2, $3, $4, $5, $6, $7}'
	done
	stop_group
done
printf 'peer: fio 4 KiB write + fdatasync on %s: %.0f fsyncs/s\n' "$bench_dir" "$fsyncs"
