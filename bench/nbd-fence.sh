#!/usr/bin/env bash
# What fencing at the storage nodes costs (issue 24): fio's NBD engine,
# 4 KiB randwrite at QD32 and QD1, against `chuyi-bench nbd-serve` built
# from the commit before fencing (BEFORE_REV) and from this tree, each on
# its own 3-node cluster, both up for the whole run, measured in turns
# (ROUNDS pairs, which of the two goes first alternating) so the shared
# machine's noise falls on both alike.
# Prints each pair and after/before; raw fio JSON in $BENCH_DIR/results.
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-fence-bench, not tmpfs), RUN_SECONDS
# (10), SIZE_MIB (1024), ROUNDS (3), BEFORE_REV (69c8560: main before
# fencing), WORKLOADS ("randwrite 4k 32,randwrite 4k 1").
set -euo pipefail

default_bench_dir=/var/tmp/chuyi-fence-bench
default_size_mib=1024
repo=$(cd "$(dirname "$0")/.." && pwd)
before_rev=${BEFORE_REV:-69c8560}
before_bin=/var/tmp/chuyi-bench-$before_rev
target=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
# The old binaries first: a worktree build in the shared target dir
# replaces target/debug's binaries, which nbd-common.sh then rebuilds. It
# builds what `make build` builds, so cargo unifies the same features and
# reuses every dependency (RocksDB included) instead of building them again.
if [ ! -x "$before_bin/chuyi-bench" ]; then
	tree=$(mktemp -d)/before
	git -C "$repo" worktree add -q "$tree" "$before_rev"
	(cd "$tree" && CARGO_TARGET_DIR=$target cargo build -q --workspace --all-targets)
	mkdir -p "$before_bin"
	cp "$target/debug/chuyi" "$target/debug/chuyi-bench" "$before_bin/"
	git -C "$repo" worktree remove --force "$tree"
	# Cargo may take the old tree's artifacts for this tree's (same package
	# names, older sources): make this tree's sources newer than them.
	find "$repo" -name '*.rs' -not -path '*/target/*' -exec touch {} +
fi
WORKLOADS=${WORKLOADS:-randwrite 4k 32,randwrite 4k 1}
. "$(dirname "$0")/nbd-common.sh"
need fio jq
rounds=${ROUNDS:-3}

serve() { # name bin-dir port: a cluster and its frontend (chuyi-bench finds chuyi beside it)
	local log=$results/$1-serve.log
	mkdir -p "$bench_dir/$1"
	TMPDIR=$bench_dir/$1 "$2/chuyi-bench" nbd-serve --volume-mib "$size_mib" --listen "127.0.0.1:$3" >"$log" 2>&1 &
	pids+=($!)
	for _ in $(seq 600); do grep -q READY "$log" && break; sleep 0.5; done
	grep -q READY "$log" || { cat "$log"; exit 1; }
}

serve before "$before_bin" 10896
serve after "$target/debug" 10895
printf '%-18s %5s %12s %12s %7s\n' workload round before after ratio
for w in "${workloads[@]}"; do
	set -- $w
	for r in $(seq "$rounds"); do
		name="$1-$2-qd$3-$r"
		if [ $((r % 2)) = 1 ]; then
			read -r b_iops _ < <(run "before-$name" "nbd://127.0.0.1:10896/bench" "$1" "$2" "$3")
			read -r a_iops _ < <(run "after-$name" "nbd://127.0.0.1:10895/bench" "$1" "$2" "$3")
		else
			read -r a_iops _ < <(run "after-$name" "nbd://127.0.0.1:10895/bench" "$1" "$2" "$3")
			read -r b_iops _ < <(run "before-$name" "nbd://127.0.0.1:10896/bench" "$1" "$2" "$3")
		fi
		printf '%-18s %5s %9.0f io %9.0f io %7s\n' "$1-$2-qd$3" "$r" "$b_iops" "$a_iops" "$(ratio "$a_iops" "$b_iops")"
	done
done
