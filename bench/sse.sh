#!/usr/bin/env bash
# Server-side encryption through the gateway (issue 16): PUT and GET of
# 4 KiB, 1 MiB and 64 MiB objects into a bucket with no encryption (path
# `gateway`), one that encrypts with SM4-GCM by default (`gateway-sm4`)
# and one with AES-256-GCM (`gateway-aes256`), in one run (bench/s3.sh's
# harness, random bodies: no compression in any of them). The report ends
# with each cipher's rows as ratios to `gateway`; the target is SM4 at
# 0.8x of plain or better for 1 MiB objects.
#
# What each cipher costs per byte on one core, without the gateway:
# `cargo bench --profile dev -p chuyi-s3 --bench frames -- seal`.
#
# Knobs: as bench/s3.sh; BENCH_DIR (/var/tmp/chuyi-sse-bench), SIZES
# (4KiB,1MiB,64MiB), OBJECTS (1100,200,16), CONCURRENCY (32,16,4),
# GET_ROUNDS (2), LIST_ROUNDS (1).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-sse-bench}") \
	SIZES=${SIZES:-4KiB,1MiB,64MiB} OBJECTS=${OBJECTS:-1100,200,16} CONCURRENCY=${CONCURRENCY:-32,16,4} \
	GET_ROUNDS=${GET_ROUNDS:-2} LIST_ROUNDS=${LIST_ROUNDS:-1} MIN_FREE_GIB=${MIN_FREE_GIB:-4} \
	PATHS=gateway,gateway-sm4,gateway-aes256 "$repo/bench/s3.sh"
