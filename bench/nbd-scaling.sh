#!/usr/bin/env bash
# Random 4 KiB reads through NBD as the cores given to Chuyi grow (issue
# 20's scaling curve). For each core count N: a cluster of 3 storage
# nodes and its metadata service (`chuyi-bench nbd-serve`, the frontend in
# that process, reaching the nodes over Unix sockets as on one host) and
# the load generator (`chuyi-bench nbd-load`: N connections, QD128 in all)
# all pinned to cores 0..N-1 with taskset, so the runtimes size themselves
# to N. QD1 reads at each N; at the largest N also QD128 writes. The cluster's
# disks are under BENCH_DIR: give a memory-backed one (/dev/shm) to measure
# the software, not the disk. Prints IOPS, latency and the CPU per
# operation of the frontend, the nodes (and of that, their io_uring ring
# threads and io-wq workers) and the metadata service (from /proc) for
# each run; nbd-load's JSON in $BENCH_DIR/results. Run it
# alone: the split counts every process on the host that looks like one
# of the cluster's.
#
# Usage: bench/nbd-scaling.sh [N...]   (default: 1 2, this machine's cores)
# Knobs: BENCH_DIR (/dev/shm/chuyi-scaling), SIZE_MIB (1024), RUN_SECONDS
# (10), CHUYI_BENCH (a chuyi-bench binary; built here when unset; chuyi
# must sit beside it or be named by CHUYI_BIN), LOAD_BENCH (the chuyi-bench
# that runs nbd-load; CHUYI_BENCH when unset: an A/B of two builds keeps
# the load generator, which shares the cores, the same).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=${BENCH_DIR:-/dev/shm/chuyi-scaling}
size_mib=${SIZE_MIB:-1024}
run_s=${RUN_SECONDS:-10}
cores=("$@")
[ ${#cores[@]} -gt 0 ] || cores=(1 2)
if [ -z "${CHUYI_BENCH:-}" ]; then
	target_dir=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
	(cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build --workspace --all-targets -q)
	CHUYI_BENCH=$target_dir/debug/chuyi-bench
fi
load_bench=${LOAD_BENCH:-$CHUYI_BENCH}
results=$bench_dir/results
rm -rf "$results" "$bench_dir"/n[0-9]* && mkdir -p "$results"
pid=
cleanup() { [ -z "$pid" ] || kill "$pid" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT

cpu_ticks() { # pattern -> CPU ticks (1/100 s) of the cluster's processes matching it
	local total=0 p
	for p in $(pgrep -f "$1"); do
		total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$total"
}

split() { # -> "frontend nodes meta" CPU ticks now
	echo "$(cpu_ticks 'chuyi-bench nbd-serve') $(cpu_ticks 'chuyi node --config') $(cpu_ticks 'chuyi meta --config')"
}

node_threads() { # -> "tid kind ticks" per thread of the nodes now, kind ring (the
	# io_uring engine's thread per disk), iowq (io_uring's kernel workers:
	# the node's O_DIRECT I/O on a memory-backed disk is punted to them,
	# where an NVMe disk would complete it by interrupt) or runtime
	local p t comm
	for p in $(pgrep -f 'chuyi node --config'); do
		for t in /proc/"$p"/task/*; do
			comm=$(cat "$t/comm" 2>/dev/null) || continue
			case $comm in chuyi-uring*) comm=ring ;; iou-wrk*) comm=iowq ;; *) comm=runtime ;; esac
			echo "${t##*/} $comm $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)"
		done
	done
}

depth() { # N -> requests per connection, 128 in all (rounded up)
	echo $(((128 + $1 - 1) / $1))
}

load() { # N name nbd-load arguments...
	local n=$1 name=$2 before after
	shift 2
	before=$(split)
	node_threads >"$results/$name.threads-before"
	taskset -c "0-$((n - 1))" "$load_bench" nbd-load --json --warmup-seconds 0 --seconds "$run_s" "$@" >"$results/$name.json"
	node_threads >"$results/$name.threads-after"
	after=$(split)
	# CPU per operation of each part over the whole run (no warm-up, so
	# the split covers the counted span plus connecting and the drain at
	# the end; nbd-load's own figure covers the counted span only).
	# (python3, not jq: the device machine has no jq.)
	# The nodes' ring and io-wq threads are counted apart (of the nodes'
	# figure), from the threads alive at the end: a thread gone during the
	# run is in the nodes' figure only (io-wq workers leave when idle).
	python3 - "$before" "$after" "$results/$name.json" "$results/$name.threads-before" \
		"$results/$name.threads-after" <<-'PY'
		import json, sys
		before, after = ([int(t) for t in s.split()] for s in sys.argv[1:3])
		r = json.load(open(sys.argv[3]))
		ops = max(r["ops"], 1)
		per_op = lambda i: round((after[i] - before[i]) * 10_000 / ops, 1)
		threads = lambda f: {tid: (kind, int(t)) for tid, kind, t in (l.split() for l in open(f))}
		start, end = threads(sys.argv[4]), threads(sys.argv[5])
		kinds = {"ring": 0, "iowq": 0}
		for tid, (kind, t) in end.items():
		    if kind in kinds:
		        kinds[kind] += t - start.get(tid, (kind, 0))[1]
		print(json.dumps({"iops": round(r["iops"]), "p50_us": round(r["latency"]["p50_us"]),
		                  "p99_us": round(r["latency"]["p99_us"]), "frontend_us_per_op": per_op(0),
		                  "nodes_us_per_op": per_op(1),
		                  "of_which_ring_us_per_op": round(kinds["ring"] * 10_000 / ops, 1),
		                  "of_which_iowq_us_per_op": round(kinds["iowq"] * 10_000 / ops, 1),
		                  "meta_us_per_op": per_op(2),
		                  "machine_but_load_us_per_op": round(r["others_us_per_op"], 1)}))
	PY
}

echo "nbd-scaling: $(nproc) CPUs, $(uname -r), commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?'), disks in $bench_dir"
for n in "${cores[@]}"; do
	cluster=$bench_dir/n$n
	mkdir -p "$cluster"
	# The harness keeps the cluster's disks under TMPDIR.
	TMPDIR=$cluster taskset -c "0-$((n - 1))" "$CHUYI_BENCH" nbd-serve --nodes 3 --volume-mib "$size_mib" \
		--node-unix --listen 127.0.0.1:10899 >"$results/serve-$n.log" 2>&1 &
	pid=$!
	for _ in $(seq 600); do grep -q READY "$results/serve-$n.log" && break; sleep 0.5; done
	grep -q READY "$results/serve-$n.log" || { cat "$results/serve-$n.log"; exit 1; }
	printf 'cores=%s randread qd128: ' "$n"
	load "$n" "randread-$n" --connections "$n" --depth "$(depth "$n")"
	printf 'cores=%s randread qd1: ' "$n"
	load "$n" "randread-qd1-$n" --connections 1 --depth 1
	if [ "$n" = "${cores[-1]}" ]; then
		printf 'cores=%s randwrite qd128: ' "$n"
		load "$n" "randwrite-$n" --connections "$n" --depth "$(depth "$n")" --write
	fi
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	pid=
	rm -rf "$cluster"
done
