#!/usr/bin/env bash
# The object-count benchmark of issue 14: one bucket filled to OBJECTS
# object records (10 million) through the metadata service, on a 1-member
# and a 3-member group (members on this machine, each with its own RocksDB
# under $BENCH_DIR), by `chuyi-bench meta-count`:
#
# - the PUT rate of each tenth of the fill (64 writers, as issue 14
#   measured), and the last tenth's over the first's;
# - ListObjectsV2 pages of 1000 (no prefix, from a random key; and one
#   shard's folder with delimiter "/", i.e. its studies) at 0, 1/10, 1/2
#   and all of OBJECTS, with the writers stopped;
# - every member's RSS and peak RSS (VmRSS, VmHWM) and its data directory
#   on disk (RocksDB, and snapshot files apart) at the same points;
# - each snapshot built during the fill, then one of the filled state
#   with the writers stopped (build time, the leader's peak RSS);
# - an empty member (id members+1) added to the filled group: when it
#   received and installed the snapshot, when it had applied everything,
#   and its peak RSS.
#
# Objects are records with PACS-shaped keys
# (`shard/study/series/instance.dcm`, bench/src/pacs_keys.rs), each with a
# 500 KiB range of a pack as its data, as the gateway writes a CT slice
# (no data is written: the figures are the metadata service's alone). Binaries are the dev profile of `make
# test` (see bench/meta.sh for why). Each group's data is deleted after its
# run unless KEEP=1; logs and JSON stay in $BENCH_DIR.
#
# Disk: a member holds its RocksDB write-ahead log (capped at 256 MiB,
# store/rocks.rs), its SSTs (~35 B per object at 1 million) and
# a snapshot file (~160 B per object), two while it builds the next; the
# new member about half that. At 10 million objects the 3-member group
# needs about 21 GiB free: the script checks first (SKIP_DISK_CHECK=1 to go
# on anyway).
# Time: at 1 million objects the 1-member group took 78 s and the 3-member
# one 126 s, so 10 million should take 40-60 minutes on a quiet machine;
# the "other" cores column of the PUT table says whether it was quiet.
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-bench-count, not tmpfs), OBJECTS
# (10000000), WRITERS (64), GROUP_SIZES ("1 3"), SNAPSHOT_LOGS (the members'
# snapshot_logs; 10000, their default), LIST_PAGES (50), KEEP (0),
# SKIP_DISK_CHECK (0).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-bench-count}")
objects=${OBJECTS:-10000000}
writers=${WRITERS:-64}
groups=${GROUP_SIZES:-1 3}
snapshot_logs=${SNAPSHOT_LOGS:-10000}
list_pages=${LIST_PAGES:-50}
keep=${KEEP:-0}
. "$(dirname "$0")/meta-common.sh"
largest=$(tr ' ' '\n' <<<"$groups" | sort -n | tail -1)
# Per member 2.5 GiB of WAL + 400 B per object; the new member half that.
need_kib=$(((largest * (2621440 + objects * 400 / 1024)) + (1310720 + objects * 200 / 1024)))
free_kib=$(df -Pk "$bench_dir" | awk 'NR == 2 { print $4 }')
if [ "$free_kib" -lt "$need_kib" ] && [ "${SKIP_DISK_CHECK:-0}" != 1 ]; then
	echo "meta-count.sh: $bench_dir has $((free_kib >> 20)) GiB free; $objects objects on $largest+1 members want about $((need_kib >> 20)) GiB (SKIP_DISK_CHECK=1 to try anyway)" >&2
	exit 1
fi

# member_config N I: member I of group N (I = N+1 is the one added later,
# with no founders listed, so it starts empty and waits).
member_config() {
	local n=$1 i=$2 j founders=""
	if [ "$i" -le "$n" ]; then
		for j in $(seq 1 "$n"); do founders+="[[member]]"$'\n'"id = $j"$'\n'"addr = \"127.0.0.1:$((7600 + j))\""$'\n'; done
	fi
	cat >"$bench_dir/g$n-m$i.toml" <<TOML
id = $i
listen = "127.0.0.1:$((7600 + i))"
data_dir = "$bench_dir/g$n/m$i"
cluster_secret_file = "$secret_file"
snapshot_logs = $snapshot_logs

$founders
TOML
}

# run_group N: N founders and one member waiting, then the bench.
run_group() {
	local n=$1 i member_args=() joiner
	for i in $(seq 1 $((n + 1))); do
		member_config "$n" "$i"
		RUST_LOG=info,openraft=warn "$chuyi" meta --config "$bench_dir/g$n-m$i.toml" 2>>"$bench_dir/g$n-m$i.log" &
		pids+=($!)
		if [ "$i" -le "$n" ]; then
			member_args+=(--member "$i,$!,$bench_dir/g$n/m$i")
		else
			joiner="$i,127.0.0.1:$((7600 + i)),$!,$bench_dir/g$n/m$i"
		fi
	done
	local meta
	meta=$(seq -s, -f "127.0.0.1:76%02g" 1 "$n")
	local started=$SECONDS
	"$chuyi_bench" meta-count --meta "$meta" --secret-file "$secret_file" --objects "$objects" \
		--writers "$writers" --list-pages "$list_pages" "${member_args[@]}" --joiner "$joiner" \
		--json-out "$bench_dir/g$n.json" | tee "$bench_dir/g$n.md"
	echo "($n member(s): $((SECONDS - started)) s)"
	cleanup
	pids=()
	[ "$keep" = 1 ] || rm -rf "${bench_dir:?}/g$n"
}

for n in $groups; do
	run_group "$n"
	echo
done
echo "JSON: $bench_dir/g*.json; member logs: $bench_dir/g*-m*.log"
