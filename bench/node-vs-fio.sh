#!/usr/bin/env bash
# The storage node next to fio on the same disk: 4 KiB random reads and
# writes at QD1 and QD32 over a 1 GiB region, through the node's real RPC
# over TCP loopback (chuyi-bench node-load), and through fio with io_uring
# and O_DIRECT on a 1 GiB file in the same directory. Prints one table;
# raw outputs land in $BENCH_DIR/results.
#
# Both sides read data that was written first: the node's region and fio's
# file are prefilled with 1 MiB writes, since a never-written chunk (or an
# unwritten ext4 extent) reads as zeros without touching the device.
#
# Knobs (environment):
#   BENCH_DIR       where the node's disk and fio's file live (/var/tmp/chuyi-bench);
#                   must be on the disk under test, not tmpfs
#   RUN_SECONDS     measured seconds per run (10); WARMUP_SECONDS before each (2)
#   NODE_PORT       the node's TCP port on 127.0.0.1 (7199)
#   IO_ENGINE       the node's engine, uring or pread (uring)
#   CLIENT_THREADS  worker threads of chuyi-bench's runtime (1)
#   PROFILE=1       afterwards, profile the node under randread QD32 with perf
#                   (extra runs, not the ones in the table)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-bench}")
run_s=${RUN_SECONDS:-10}
warmup_s=${WARMUP_SECONDS:-2}
port=${NODE_PORT:-7199}
engine=${IO_ENGINE:-uring}
client_threads=${CLIENT_THREADS:-1}
target_dir=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
results=$bench_dir/results
chuyi=$target_dir/release/chuyi
chuyi_bench=$target_dir/release/chuyi-bench
node_addr=127.0.0.1:$port
secret_file=$bench_dir/cluster.secret
fio_file=$bench_dir/fio.img
clk_tck=$(getconf CLK_TCK)
node_pid=
disk_stat=

for tool in fio jq cargo; do
	command -v "$tool" >/dev/null || { echo "node-vs-fio: $tool is needed" >&2; exit 1; }
done

build() {
	(cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build --release -p chuyi -p chuyi-bench)
}

# A fresh node disk and fio file each run, so both start from the same state.
setup_dir() {
	rm -rf "$bench_dir/node" "$fio_file" "$results"
	mkdir -p "$bench_dir" "$results"
	if [ "$(stat -f -c %T "$bench_dir")" = tmpfs ]; then
		echo "node-vs-fio: $bench_dir is on tmpfs; O_DIRECT would not reach a disk" >&2
		exit 1
	fi
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_file"
	chmod 600 "$secret_file"
	disk_stat=$(disk_stat_file)
	cat >"$bench_dir/node.toml" <<TOML
node_id = 1
listen = "$node_addr"
cluster_secret_file = "$secret_file"
io_engine = "$engine"

[[disk]]
id = 0
path = "$bench_dir/node/disk0"
class = "ssd"
capacity = "4GiB"
TOML
}

stop_node() {
	if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
		kill "$node_pid"
		wait "$node_pid" || true
	fi
}

# Starts the node and waits (30 s at most) until it answers a DiskStats call.
start_node() {
	"$chuyi" node --config "$bench_dir/node.toml" >"$results/node.log" 2>&1 &
	node_pid=$!
	trap stop_node EXIT
	local deadline=$((SECONDS + 30))
	until "$chuyi" disks --node "$node_addr" --secret-file "$secret_file" >/dev/null 2>&1; do
		kill -0 "$node_pid" 2>/dev/null || { cat "$results/node.log" >&2; exit 1; }
		[ "$SECONDS" -lt "$deadline" ] || { echo "node-vs-fio: node not serving after 30 s" >&2; exit 1; }
		sleep 0.2
	done
}

node_load() {
	"$chuyi_bench" node-load --node "$node_addr" --secret-file "$secret_file" --disk 0 --size 1GiB \
		--client-threads "$client_threads" "$@"
}

prefill() {
	node_load --op randwrite --prefill --seconds 0
	fio --name=prefill --filename="$fio_file" --ioengine=io_uring --direct=1 --bs=1M --size=1G \
		--rw=write --iodepth=8 --output-format=json --output="$results/fio-prefill.json"
}

calc() {
	awk "BEGIN { printf \"%.4f\", $1 }"
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
	awk -v tck="$clk_tck" '{ printf "%.2f", ($14 + $15) / tck }' "/proc/$1/stat"
}

# The stat file of the block device under $bench_dir; empty if not found.
disk_stat_file() {
	local dev
	dev=$(basename "$(findmnt -no SOURCE --target "$bench_dir" 2>/dev/null || true)")
	if [ -n "$dev" ] && [ -r "/sys/class/block/$dev/stat" ]; then
		echo "/sys/class/block/$dev/stat"
	fi
}

# Runs "$@", then writes to $1 the device's average queue depth over the
# run (weighted time in queue / wall time), or null when it is unknown.
with_device_queue() {
	local out=$1
	shift
	if [ -z "$disk_stat" ]; then
		"$@"
		echo null >"$out"
		return
	fi
	local q0 t0 q1 t1
	q0=$(awk '{ print $11 }' "$disk_stat")
	t0=$(date +%s%N)
	"$@"
	q1=$(awk '{ print $11 }' "$disk_stat")
	t1=$(date +%s%N)
	echo "$(calc "($q1 - $q0) * 1000000 / ($t1 - $t0)")" >"$out"
}

# One chuyi run: the report, plus the CPU the node and the client used per
# wall second (100 = one core), over warm-up and window together.
run_chuyi() {
	local op=$1 qd=$2 out=$results/node-$1-qd$2.json
	local node_cpu0 t0 t1
	node_cpu0=$(cpu_seconds "$node_pid")
	t0=$(date +%s.%N)
	local TIMEFORMAT='%U %S'
	{ time with_device_queue "$results/node-$op-qd$qd.devq" node_load --op "$op" --qd "$qd" \
		--seconds "$run_s" --warmup-seconds "$warmup_s" --json >"$out"; } 2>"$results/node-$op-qd$qd.time"
	t1=$(date +%s.%N)
	local node_cpu1 wall user sys
	node_cpu1=$(cpu_seconds "$node_pid")
	wall=$(calc "$t1 - $t0")
	read -r user sys <"$results/node-$op-qd$qd.time"
	jq --argjson node "$(calc "100 * ($node_cpu1 - $node_cpu0) / $wall")" \
		--argjson client "$(calc "100 * ($user + $sys) / $wall")" \
		'. + {node_cpu_pct: $node, client_cpu_pct: $client}' "$out" >"$out.tmp"
	mv "$out.tmp" "$out"
}

run_fio() {
	local op=$1 qd=$2
	with_device_queue "$results/fio-$op-qd$qd.devq" \
		fio --name="$op-qd$qd" --filename="$fio_file" --ioengine=io_uring --direct=1 --bs=4k --size=1G \
		--rw="$op" --iodepth="$qd" --time_based --runtime="$run_s" --ramp_time="$warmup_s" \
		--norandommap --randrepeat=0 --output-format=json --output="$results/fio-$op-qd$qd.json"
}

row() {
	local op=$1 qd=$2 side=read
	[ "$op" = randwrite ] && side=write
	local node=$results/node-$op-qd$qd.json fio=$results/fio-$op-qd$qd.json
	local n_iops n_lat n_cpu f_iops f_lat f_cpu devq
	n_iops=$(jq '.iops' "$node")
	n_lat=$(jq -r '"\(.latency.p50_us | round)/\(.latency.p99_us | round)"' "$node")
	n_cpu=$(jq -r '"\(.node_cpu_pct | round)+\(.client_cpu_pct | round)"' "$node")
	f_iops=$(jq ".jobs[0].$side.iops" "$fio")
	f_lat=$(jq -r ".jobs[0].$side.clat_ns.percentile
		| \"\(.\"50.000000\" / 1000 | round)/\(.\"99.000000\" / 1000 | round)\"" "$fio")
	f_cpu=$(jq '.jobs[0].usr_cpu + .jobs[0].sys_cpu | round' "$fio")
	devq=$(jq -rs 'map(if . == null then "-" else (. * 10 | round) / 10 end) | "\(.[0])/\(.[1])"' \
		"$results/node-$op-qd$qd.devq" "$results/fio-$op-qd$qd.devq")
	printf '| %-14s | %10.0f | %10.0f | %5.2f | %13s | %13s | %11s | %14s | %7s |\n' "$op QD$qd" "$n_iops" \
		"$f_iops" "$(calc "$n_iops / $f_iops")" "$n_lat" "$f_lat" "$devq" "$n_cpu" "$f_cpu"
}

table() {
	echo "4 KiB, 1 GiB region, ${run_s} s per run after ${warmup_s} s warm-up; engine $engine; $(date -u +%FT%TZ)"
	echo
	printf '| %-14s | %10s | %10s | %5s | %13s | %13s | %11s | %14s | %7s |\n' workload "chuyi IOPS" "fio IOPS" \
		ratio "chuyi p50/p99" "fio p50/p99" "device QD" "chuyi CPU %" "fio CPU"
	printf '|%s|\n' "----------------|-----------:|-----------:|------:|--------------:|--------------:|------------:|\
---------------:|--------:"
	for op in randread randwrite; do
		for qd in 1 32; do
			row "$op" "$qd"
		done
	done
	echo
	echo "Latency in µs (chuyi: request to reply at the client; fio: clat). Device QD: average requests"
	echo "in the block device, chuyi/fio. CPU: % of one core over warm-up and run; chuyi as node+client,"
	echo "fio for its one job."
}

# How long each profile samples.
profile_window_s=$((run_s < 8 ? run_s : 8))

# Runs randread QD32 and, once it is past its start, the perf command in
# "$@" for profile_window_s seconds of it.
perf_during_run() {
	local name=$1 settle=2
	shift
	node_load --op randread --qd 32 --seconds "$((profile_window_s + 2 * settle))" --warmup-seconds 0 \
		>"$results/profile-$name.load" &
	local load=$!
	sleep "$settle"
	"$@" -- sleep "$profile_window_s" >/dev/null 2>&1
	wait "$load"
}

# The whole machine's CPU split (% of one core) over the next
# profile_window_s seconds, from the "cpu" line of /proc/stat.
machine_cpu() {
	local before after
	before=$(head -1 /proc/stat)
	sleep "$profile_window_s"
	after=$(head -1 /proc/stat)
	printf '%s\n%s\n' "$before" "$after" | awk -v cpus="$(nproc)" '
		NR == 1 { for (i = 2; i <= 9; i++) b[i] = $i }
		NR == 2 { for (i = 2; i <= 9; i++) { d[i] = $i - b[i]; t += d[i] } }
		END {
			split("user nice sys idle iowait irq softirq steal", name, " ")
			for (i = 2; i <= 9; i++) printf "%s %.0f  ", name[i - 1], d[i] * 100 * cpus / t
			printf "(%% of one core, %d cores)\n", cpus
		}'
}

# Extra randread QD32 runs under perf, after the table: per-thread counts and
# the machine's CPU split, scheduling delays, the CPU split by process, and
# the node's call graphs. Summaries land in $results/perf-*.txt.
profile() {
	# `head` closing a pipe early is not a failure here.
	local -
	set +o pipefail
	perf_during_run stat perf stat --per-thread -e task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter \
		-p "$node_pid" -o "$results/perf-stat-node.txt" &
	local stat_run=$!
	sleep 2
	machine_cpu >"$results/machine-cpu.txt"
	wait "$stat_run"
	perf_during_run sched perf sched record -o "$results/perf-sched.data"
	perf_during_run system perf record -a -F 997 -o "$results/perf-system.data"
	perf_during_run node perf record -p "$node_pid" -F 997 --call-graph dwarf,16384 -o "$results/perf-node.data"
	echo "node pid $node_pid" >"$results/pids.txt"
	perf sched latency -i "$results/perf-sched.data" --pids --sort max 2>/dev/null \
		| head -14 >"$results/perf-sched-latency.txt"
	perf report -i "$results/perf-system.data" --stdio --sort pid 2>/dev/null | grep -E '^ +[0-9]' \
		| head -25 >"$results/perf-system-by-thread.txt"
	perf report -i "$results/perf-node.data" --stdio --no-children --sort comm,symbol -g none 2>/dev/null \
		| grep -E '^ +[0-9]' | head -60 >"$results/perf-node-self.txt"
	perf report -i "$results/perf-node.data" --stdio --children --sort symbol -g none 2>/dev/null \
		| grep -E '^ +[0-9]' | head -300 >"$results/perf-node-children.txt"
	echo "profiles: $results/perf-*.txt, $results/machine-cpu.txt (raw: perf-*.data)"
}

build
setup_dir
start_node
prefill
for op in randread randwrite; do
	for qd in 1 32; do
		run_chuyi "$op" "$qd"
		run_fio "$op" "$qd"
	done
done
table | tee "$results/table.md"
if [ "${PROFILE:-0}" = 1 ]; then
	profile
fi
