#!/usr/bin/env bash
# fio's NBD engine against a chuyi volume (3 storage nodes, two replicas,
# filled first, served by the NBD frontend) and, in the same run, against
# three servers of a raw file on the same disk over TCP: nbdkit's file
# plugin as it comes (reads and writes through the page cache), nbdkit with
# cache=none (pages dropped after each request, so reads reach the device
# as chuyi's O_DIRECT reads do), and qemu-nbd with --cache=none
# --aio=io_uring (O_DIRECT, one copy: issue 20's peer). 4 KiB randread and
# randwrite at QD1 and QD32, 1 MiB sequential read and write at QD8. Prints
# each result and chuyi's ratio to each, then completion latency p50/p99
# of the 4 KiB runs; raw fio JSON in $BENCH_DIR/results.
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-nbd-bench, not tmpfs), RUN_SECONDS (10),
# SIZE_MIB (1024), WORKLOADS (all six: "rw bs qd,rw bs qd,..."),
# NODE_LINK (tcp, or unix: the frontend reaches the nodes over their Unix
# sockets, as on a host that runs both).
set -euo pipefail

default_bench_dir=/var/tmp/chuyi-nbd-bench
default_size_mib=1024
. "$(dirname "$0")/nbd-common.sh"
need fio jq nbdkit qemu-nbd
chuyi_port=10899
nbdkit_port=10898
nocache_port=10897
qemu_port=10896

serve_chuyi "$chuyi_port" $([ "${NODE_LINK:-tcp}" = unix ] && echo --node-unix)
# nbdkit: a raw file of the same size on the same disk, filled.
raw=$bench_dir/raw.img
fio --name=fill --filename="$raw" --rw=write --bs=1M --size="${size_mib}M" --direct=1 \
	--output="$results/fill.txt" >/dev/null
nbdkit -f -p "$nbdkit_port" --exit-with-parent file "$raw" &
pids+=($!)
nbdkit -f -p "$nocache_port" --exit-with-parent file "$raw" cache=none &
pids+=($!)
# --persistent: fio connects once per run; --shared=4 lets the next run in
# while the last one's connection is being torn down.
qemu-nbd --persistent --shared=4 -b 127.0.0.1 -p "$qemu_port" -f raw --cache=none --aio=io_uring "$raw" &
pids+=($!)

servers=(chuyi nbdkit nocache qemu)
uri() { # server -> its NBD URI
	case $1 in
	chuyi) echo "nbd://127.0.0.1:$chuyi_port/bench" ;;
	nbdkit) echo "nbd://127.0.0.1:$nbdkit_port" ;;
	nocache) echo "nbd://127.0.0.1:$nocache_port" ;;
	qemu) echo "nbd://127.0.0.1:$qemu_port" ;;
	esac
}
printf '%-16s %13s %13s %13s %13s %7s %7s %7s\n' workload chuyi nbdkit-file nbdkit-nocache qemu-nbd-nc \
	ratio ratio-nc ratio-q
latencies=()
for w in "${workloads[@]}"; do
	set -- $w
	name="$1-$2-qd$3"
	declare -A iops=() mib=()
	for s in "${servers[@]}"; do
		read -r "iops[$s]" "mib[$s]" p50 p99 < <(run "$s-$name" "$(uri "$s")" "$1" "$2" "$3")
		latencies+=("$(printf '%-16s %-8s %8.0f %8.0f' "$name" "$s" "$p50" "$p99")")
	done
	if [ "$2" = 4k ]; then
		printf '%-16s %10.0f io %10.0f io %10.0f io %10.0f io %7s %7s %7s\n' "$name" \
			"${iops[chuyi]}" "${iops[nbdkit]}" "${iops[nocache]}" "${iops[qemu]}" "$(ratio "${iops[chuyi]}" "${iops[nbdkit]}")" \
			"$(ratio "${iops[chuyi]}" "${iops[nocache]}")" "$(ratio "${iops[chuyi]}" "${iops[qemu]}")"
	else
		printf '%-16s %7.0f MiB/s %7.0f MiB/s %7.0f MiB/s %7.0f MiB/s %7s %7s %7s\n' "$name" \
			"${mib[chuyi]}" "${mib[nbdkit]}" "${mib[nocache]}" "${mib[qemu]}" "$(ratio "${mib[chuyi]}" "${mib[nbdkit]}")" \
			"$(ratio "${mib[chuyi]}" "${mib[nocache]}")" "$(ratio "${mib[chuyi]}" "${mib[qemu]}")"
	fi
done
printf '\n%-16s %-8s %8s %8s\n' workload server p50_us p99_us
printf '%s\n' "${latencies[@]}" | grep -- '-4k-' || true
