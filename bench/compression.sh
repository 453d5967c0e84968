#!/usr/bin/env bash
# Per-bucket compression through the gateway (issue 16): for each corpus,
# PUT and GET of 1 MiB and 64 MiB objects into a bucket with compression
# off (path `gateway`), `performance` (lz4) and `capacity` (zstd 6), in one
# run per corpus so the ratios compare like with like (bench/s3.sh's
# harness, `--data`: bodies cut from the corpus). The PUT rows' disk/data
# column is what the nodes' disk files grew by per byte sent, both
# replicas included: its ratio to the `gateway` row is the stored/sent
# ratio. LIST and DELETE rows are printed too, unchanged by compression.
#
# Corpora (under $BENCH_DIR/corpus, made here from data no one here
# wrote): dicom (pydicom's sample files concatenated: CT, MR, JPEG and JPEG
# 2000), source (a tar of Python's standard library), logs (/var/log's
# *.log; left out when there are none) and random bytes.
#
# The codecs' own ratios and MB/s per zstd level, frame by frame on one
# core: `cargo bench -p chuyi-s3 --bench frames` (its table first).
#
# Knobs: BENCH_DIR (/var/tmp/chuyi-compression-bench), CORPORA
# (dicom,source,logs,random), SIZES (1MiB,64MiB), OBJECTS (100,8),
# CONCURRENCY (16,4), GET_ROUNDS (2).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bench_dir=$(realpath -m "${BENCH_DIR:-/var/tmp/chuyi-compression-bench}")
mkdir -p "$bench_dir/corpus"
corpus=$bench_dir/corpus

python3 - "$corpus" <<'PY'
import io, os, random, sys, tarfile
import pydicom, json
out = sys.argv[1]
d = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
with open(os.path.join(out, "dicom"), "wb") as f:
    for name in sorted(os.listdir(d)):
        if name.endswith(".dcm"):
            f.write(open(os.path.join(d, name), "rb").read())
with tarfile.open(os.path.join(out, "source"), "w") as tar:
    tar.add(os.path.dirname(os.path.dirname(json.__file__)) + "/email", arcname="email")
    tar.add(os.path.dirname(json.__file__), arcname="json")
    tar.add(os.path.dirname(os.path.dirname(json.__file__)) + "/asyncio", arcname="asyncio")
with open(os.path.join(out, "logs"), "wb") as f:
    for root, _, files in os.walk("/var/log"):
        for name in sorted(files):
            if name.endswith(".log"):
                try:
                    f.write(open(os.path.join(root, name), "rb").read())
                except OSError:
                    pass
with open(os.path.join(out, "random"), "wb") as f:
    f.write(random.Random(1).randbytes(64 << 20))
PY

for name in ${CORPORA:-dicom source logs random}; do
	file=$corpus/$name
	if [ ! -s "$file" ]; then
		echo "compression.sh: no $name corpus here, left out" >&2
		continue
	fi
	echo "## $name ($(stat -c %s "$file") bytes of corpus)"
	BENCH_DIR=$bench_dir/run-$name SIZES=${SIZES:-1MiB,64MiB} OBJECTS=${OBJECTS:-100,8} \
		CONCURRENCY=${CONCURRENCY:-16,4} GET_ROUNDS=${GET_ROUNDS:-2} LIST_ROUNDS=1 MIN_FREE_GIB=4 \
		PATHS=gateway,gateway-performance,gateway-capacity DATA=$file "$repo/bench/s3.sh"
done
