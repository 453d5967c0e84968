#!/usr/bin/env bash
# The S3 gateway under load, against the same objects through chuyi-client
# directly and through a gateway that packs nothing (every object in chunks
# of its own, the layout before packing): `chuyi-bench s3-load` starts a cluster of real processes (one
# metadata member, NODES storage nodes, a 2-replica pool) with its disks
# under $BENCH_DIR, starts the gateway inside chuyi-bench on a runtime of
# its own, and for each object size runs PUT, GET, LIST (ListObjectsV2
# pages of 1000) and DELETE with many requests in flight, first through the
# gateway (real HTTP, SigV4-signed) and then directly. It prints a markdown
# table per (size, phase, path) and the gateway/direct ratios, kept with
# the JSON report and the progress lines in $BENCH_DIR (results.md,
# results.json, progress.log); the cluster's data is removed at the end.
#
# Binaries are the dev profile of `make test`, built with the same
# `--workspace --all-targets` set so cargo reuses its RocksDB build (see
# bench/meta.sh); chuyi-client and chuyi-common are at opt-level 3 there.
#
# Each PUT phase also reports what the storage nodes' disk files grew by
# per byte stored (disk / data). On the owned paths every object takes at
# least one whole chunk slot (4 MiB, fallocated) on each of two nodes, so
# the 1100 objects of 4 KiB hold 8.6 GiB of $BENCH_DIR's disk until they
# are deleted; the script refuses to start with less than 20 GiB free
# there. The space runs of RESULTS.md use PATHS=gateway.
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-s3-bench, not tmpfs), NODES (3),
# SIZES (4KiB,1MiB,64MiB), OBJECTS (1100,200,16), CONCURRENCY (32,16,4),
# GET_ROUNDS (4), LIST_ROUNDS (16), PAYLOAD (unsigned or sha256), GATEWAY_THREADS (2),
# PATHS (gateway,gateway-owned,direct, and gateway-performance and
# gateway-capacity: buckets with compression; gateway-sm4 and
# gateway-aes256: buckets that encrypt by default), DATA (a file the bodies are
# cut from instead of random bytes), MIN_FREE_GIB (20).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-s3-bench}")
target_dir=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}

cleanup() { rm -rf "$bench_dir/cluster"; }
trap cleanup EXIT

(cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build --workspace --all-targets -q)
rm -rf "$bench_dir" && mkdir -p "$bench_dir"
if [ "$(stat -f -c %T "$bench_dir")" = tmpfs ]; then
	echo "s3.sh: $bench_dir is on tmpfs; the storage nodes' O_DIRECT would not reach a disk" >&2
	exit 1
fi

free_gib=$(df -B1G --output=avail "$bench_dir" | tail -1 | tr -d ' ')
if [ "$free_gib" -lt "${MIN_FREE_GIB:-20}" ]; then
	echo "s3.sh: only ${free_gib} GiB free under $bench_dir (MIN_FREE_GIB=${MIN_FREE_GIB:-20})" >&2
	exit 1
fi

# The harness keeps the cluster's disks under TMPDIR (removed when
# chuyi-bench exits; the trap catches what a crash leaves).
mkdir -p "$bench_dir/cluster"
echo "s3.sh: $(nproc) CPUs, $(date -u +%FT%TZ), commit $(git -C "$repo" rev-parse --short HEAD)"
TMPDIR=$bench_dir/cluster "$target_dir/debug/chuyi-bench" s3-load \
	--nodes "${NODES:-3}" \
	--sizes "${SIZES:-4KiB,1MiB,64MiB}" \
	--objects "${OBJECTS:-1100,200,16}" \
	--concurrency "${CONCURRENCY:-32,16,4}" \
	--get-rounds "${GET_ROUNDS:-4}" \
	--list-rounds "${LIST_ROUNDS:-16}" \
	--payload "${PAYLOAD:-unsigned}" \
	--gateway-threads "${GATEWAY_THREADS:-2}" \
	--paths "${PATHS:-gateway,gateway-owned,direct}" \
	${DATA:+--data "$DATA"} \
	--json-out "$bench_dir/results.json" 2> >(tee "$bench_dir/progress.log" >&2) | tee "$bench_dir/results.md"
