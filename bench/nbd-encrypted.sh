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

default_bench_dir=/var/tmp/chuyi-nbd-enc-bench
default_size_mib=512
. "$(dirname "$0")/nbd-common.sh"
need fio jq
port=10895
serve_chuyi "$port" --encrypted

printf '%-16s %12s %12s %8s\n' workload plain encrypted ratio
for w in "${workloads[@]}"; do
	set -- $w
	name="$1-$2-qd$3"
	read -r p_iops p_mib _ < <(run "plain-$name" "nbd://127.0.0.1:$port/bench" "$1" "$2" "$3")
	read -r e_iops e_mib _ < <(run "enc-$name" "nbd://127.0.0.1:$port/bench-enc" "$1" "$2" "$3")
	if [ "$2" = 4k ]; then
		printf '%-16s %9.0f io %9.0f io %8s\n' "$name" "$p_iops" "$e_iops" "$(ratio "$e_iops" "$p_iops")"
	else
		printf '%-16s %7.0f MiB/s %7.0f MiB/s %6s\n' "$name" "$p_mib" "$e_mib" "$(ratio "$e_mib" "$p_mib")"
	fi
done
