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

default_bench_dir=/var/tmp/chuyi-nbd-bench
default_size_mib=1024
. "$(dirname "$0")/nbd-common.sh"
need fio jq nbdkit
chuyi_port=10899
nbdkit_port=10898
nocache_port=10897

serve_chuyi "$chuyi_port" $([ "${NODE_LINK:-tcp}" = unix ] && echo --node-unix)
# nbdkit: a raw file of the same size on the same disk, filled.
raw=$bench_dir/raw.img
fio --name=fill --filename="$raw" --rw=write --bs=1M --size="${size_mib}M" --direct=1 \
	--output="$results/fill.txt" >/dev/null
nbdkit -f -p "$nbdkit_port" --exit-with-parent file "$raw" &
pids+=($!)
nbdkit -f -p "$nocache_port" --exit-with-parent file "$raw" cache=none &
pids+=($!)

printf '%-16s %12s %12s %12s %7s %7s\n' workload chuyi nbdkit-file nbdkit-nocache ratio ratio-nc
for w in "${workloads[@]}"; do
	set -- $w
	name="$1-$2-qd$3"
	read -r c_iops c_mib < <(run "chuyi-$name" "nbd://127.0.0.1:$chuyi_port/bench" "$1" "$2" "$3")
	read -r k_iops k_mib < <(run "nbdkit-$name" "nbd://127.0.0.1:$nbdkit_port" "$1" "$2" "$3")
	read -r n_iops n_mib < <(run "nocache-$name" "nbd://127.0.0.1:$nocache_port" "$1" "$2" "$3")
	if [ "$2" = 4k ]; then
		printf '%-16s %9.0f io %9.0f io %9.0f io %7s %7s\n' "$name" "$c_iops" "$k_iops" "$n_iops" \
			"$(ratio "$c_iops" "$k_iops")" "$(ratio "$c_iops" "$n_iops")"
	else
		printf '%-16s %6.0f MiB/s %6.0f MiB/s %6.0f MiB/s %7s %7s\n' "$name" "$c_mib" "$k_mib" "$n_mib" \
			"$(ratio "$c_mib" "$k_mib")" "$(ratio "$c_mib" "$n_mib")"
	fi
done
