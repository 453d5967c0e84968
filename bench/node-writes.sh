#!/usr/bin/env bash
# One storage node's 4 KiB random writes, build against build: IOPS, p50 and
# p99, device writes per client write and the node's CPU per write, at QD32
# and QD1, rounds alternating between the builds. Made for the checksum
# journal (bench/RESULTS.md, "The checksum journal, with lone writes
# direct"): base binaries of a commit before it against binaries with it.
#
#   bench/node-writes.sh base:/path/to/bin/dir journal:/path/to/other/dir
#
# Each directory holds `chuyi` and `chuyi-bench`. Every run gets a fresh node
# with one 2 GiB disk under $BENCH_DIR, fills 512 MiB of it with 1 MiB
# writes, then runs `chuyi-bench node-load --op randwrite` for RUN_SECONDS
# at each depth. Device writes come from the stat file of the block device
# under $BENCH_DIR (field 5, writes completed), so nothing else should
# write to that device meanwhile.
#
# Knobs (environment):
#   BENCH_DIR     where the node's disk lives (/var/tmp/chuyi-node-writes); not tmpfs
#   ROUNDS        rounds of every build (3); RUN_SECONDS per run (8)
#   WRITE_IOPS    if set, the node's writes to that device are capped at this
#                 many per second (cgroup v1 blkio throttle): a disk bound by
#                 its write IOPS, as a provisioned cloud disk or an HDD is
set -euo pipefail

bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-node-writes}")
rounds=${ROUNDS:-3}
run_s=${RUN_SECONDS:-8}
cap=${WRITE_IOPS:-}
port=7291
addr=127.0.0.1:$port
cgroup=/sys/fs/cgroup/blkio/chuyi-node-writes
[ $# -ge 1 ] || { echo "usage: $0 label:bindir [label:bindir ...]" >&2; exit 2; }

mkdir -p "$bench_dir"
[ "$(stat -f -c %T "$bench_dir")" != tmpfs ] || { echo "node-writes: $bench_dir is on tmpfs" >&2; exit 1; }
dev=$(basename "$(findmnt -no SOURCE --target "$bench_dir")")
stat_file=/sys/class/block/$dev/stat
[ -r "$stat_file" ] || { echo "node-writes: no stat file for $dev" >&2; exit 1; }
devno=$(cat "/sys/class/block/$dev/dev")
if [ -n "$cap" ]; then
	[ -d /sys/fs/cgroup/blkio ] || { echo "node-writes: WRITE_IOPS needs cgroup v1 blkio" >&2; exit 1; }
	mkdir -p "$cgroup"
	echo "$devno $cap" >"$cgroup/blkio.throttle.write_iops_device"
fi

node_pid=
stop_node() {
	[ -z "$node_pid" ] || { kill "$node_pid" 2>/dev/null || true; wait "$node_pid" 2>/dev/null || true; }
	node_pid=
}
finish() {
	stop_node
	[ -z "$cap" ] || rmdir "$cgroup" 2>/dev/null || true
}
trap finish EXIT

one_build() {
	local label=$1 bin=$2 d=$bench_dir/run
	rm -rf "$d" && mkdir -p "$d"
	head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/secret"
	chmod 600 "$d/secret"
	cat >"$d/node.toml" <<TOML
node_id = 1
listen = "$addr"
cluster_secret_file = "$d/secret"
io_engine = "uring"

[[disk]]
id = 0
path = "$d/disk0"
class = "ssd"
capacity = "2GiB"
TOML
	"$bin/chuyi" node --config "$d/node.toml" >"$d/node.log" 2>&1 &
	node_pid=$!
	until "$bin/chuyi" disks --node "$addr" --secret-file "$d/secret" >/dev/null 2>&1; do
		kill -0 "$node_pid" 2>/dev/null || { cat "$d/node.log" >&2; exit 1; }
		sleep 0.2
	done
	load() { "$bin/chuyi-bench" node-load --node "$addr" --secret-file "$d/secret" --disk 0 --size 512MiB \
		--client-threads 1 "$@"; }
	load --op randwrite --prefill --seconds 0 >/dev/null 2>&1
	if [ -n "$cap" ]; then
		for t in /proc/"$node_pid"/task/*; do echo "${t##*/}" >"$cgroup/tasks"; done
	fi
	for qd in 32 1; do
		local w0 c0 w1 c1 out
		w0=$(awk '{ print $5 }' "$stat_file")
		c0=$(awk '{ print $14 + $15 }' "/proc/$node_pid/stat")
		out=$(load --op randwrite --qd "$qd" --seconds "$run_s" --warmup-seconds 0 --json)
		w1=$(awk '{ print $5 }' "$stat_file")
		c1=$(awk '{ print $14 + $15 }' "/proc/$node_pid/stat")
		echo "$out" | jq -r --arg build "$label" --arg qd "$qd" --argjson w "$((w1 - w0))" \
			--argjson cpu "$((c1 - c0))" --argjson tck "$(getconf CLK_TCK)" --argjson s "$run_s" \
			'"\($build) QD\($qd): \(.iops | round) IOPS, p50/p99 \(.latency.p50_us | round)/\(.latency.p99_us | round) us, \($w / (.iops * $s) * 100 | round / 100) device writes per write, node CPU \($cpu / $tck * 1e6 / (.iops * $s) | round) us per write"'
	done
	stop_node
}

echo "node-writes: disk $dev under $bench_dir${cap:+, writes capped at $cap IOPS}; $(date -u +%FT%TZ)"
for r in $(seq "$rounds"); do
	for build in "$@"; do
		one_build "${build%%:*}" "${build#*:}"
	done
done
rm -rf "$bench_dir/run"
