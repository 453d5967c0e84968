# Chuyi: `make run` brings up a local node, `make test` runs the whole suite.
# Both install what they need first (`make deps`), only when it is missing.

SHELL := /bin/bash
CARGO ?= cargo
# One target dir outside the clone, so a fresh checkout (CI's) reuses the
# build of the one before; RocksDB alone costs ~10 minutes to compile.
export CARGO_TARGET_DIR ?= /var/cache/chuyi/target
DATA_DIR ?= ./chuyi-data
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

# System packages the build and the tests use: libclang/clang for RocksDB's
# bindings, fio and nbd tools as peers and clients, e2fsprogs for test file
# systems, jq and linux-perf for the benchmark script and its profiles,
# rclone, s3cmd and restic as S3 clients of the gateway's tests, chromium
# (headless) as the browser of the CORS test; QEMU, busybox and cpio for
# the vhost-user-blk tests' VM (its kernel is Debian's, unpacked by
# chaos/vm/guest.sh into CHUYI_GUEST_DIR, where the tests look; not installed);
# prometheus for promtool, which checks and unit-tests the alert rules.
APT_PACKAGES := pkg-config libclang-dev clang fio libnbd-bin nbdkit qemu-utils \
	e2fsprogs util-linux procps jq linux-perf rclone s3cmd restic chromium chromium-driver \
	qemu-system-x86 busybox-static cpio prometheus
export CHUYI_GUEST_DIR ?= /var/cache/chuyi/guest
# S3 clients the gateway's tests drive, from pip (Debian's awscli lags),
# pydicom for its sample DICOM files (the compression tests' corpus), and
# prometheus-client, whose text-format parser reads /metrics in the tests;
# selenium, through which the console's test drives headless Chromium
# (Debian's chromium and chromium-driver, above).
PIP_PACKAGES := awscli boto3 pydicom prometheus-client selenium

.PHONY: fuzz deps build test run bench chaos simulate fmt lint clean-data

# Two passes: installing one package can remove another of a newer
# series that clashes with it (Debian's qemu-system-x86 takes away a
# backported qemu-utils), and the second pass installs the matching one.
# (A package removed but for its config files is not installed.)
deps:
	@installed() { dpkg-query -W -f='$${db:Status-Status}\n' "$$1" 2>/dev/null | grep -qx installed; }; \
	for pass in 1 2; do \
		missing=""; \
		for p in $(APT_PACKAGES); do installed $$p || missing="$$missing $$p"; done; \
		[ -z "$$missing" ] && break; \
		echo "installing:$$missing"; \
		[ $$pass = 1 ] && { $(SUDO) apt-get update -qq || exit 1; }; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing || exit 1; \
	done; \
	for p in $(APT_PACKAGES); do installed $$p || { echo "$$p is still missing" >&2; exit 1; }; done
	@for p in $(PIP_PACKAGES); do \
		python3 -m pip show -q $$p >/dev/null 2>&1 || python3 -m pip install -q $$p || exit 1; \
	done
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust with rustup first"; exit 1; }
	@mkdir -p $(CARGO_TARGET_DIR)
	@chaos/vm/guest.sh $(CHUYI_GUEST_DIR) || { $(SUDO) apt-get update -qq && chaos/vm/guest.sh $(CHUYI_GUEST_DIR); }

build: deps
	$(CARGO) build --workspace --all-targets

# The whole suite: unit tests, the chunk-store conformance suite on both I/O
# engines, RPC tests over real sockets, and the storage node crash test that
# SIGKILLs a real `chuyi node` process.
test: build
	@if command -v cargo-nextest >/dev/null; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi

# The local all-in-one cluster (`chuyi up`): a metadata member, three
# storage nodes and the NBD frontend under $(DATA_DIR), endpoints in
# $(DATA_DIR)/up.env; Ctrl-C stops them.
run: build
	@$(CARGO_TARGET_DIR)/debug/chuyi up --data-dir "$(DATA_DIR)"

# Criterion benches, then the node load bench against fio on the same disk
# (bench/node-vs-fio.sh; PROFILE=1 adds perf profiles), then the metadata
# service's puts/s and read latency (bench/meta.sh), then failure and recovery
# figures on real clusters of 2, 3 and 4 nodes. Results: bench/RESULTS.md.
bench: deps
	$(CARGO) bench -p chuyi-common --bench crc32c
	$(CARGO) bench -p chuyi-common --bench sm4
	$(CARGO) bench -p chuyi-storage-node --bench chunk_store
	bench/node-vs-fio.sh
	bench/meta.sh
	$(CARGO) build --workspace --all-targets
	for n in 2 3 4; do $(CARGO_TARGET_DIR)/debug/chuyi-bench recovery --nodes $$n --volume-mib 1024; done
	bench/nbd-vs-nbdkit.sh
	bench/nbd-encrypted.sh
	bench/nbd-scaling.sh
	bench/s3.sh

# The long fault runs: the single-node crash test, the chunk store's power
# cut on 2000 seeds, then every chaos
# scenario in its long form against a real multi-process cluster, one line
# each and a last line "N passed, N failed" (make test runs the short forms).
chaos: build
	CHUYI_CRASH_CYCLES=200 $(CARGO) test -p chuyi --test crash -- --nocapture
	CHUYI_POWER_CUT_SEEDS=2000 $(CARGO) test -p chuyi-storage-node --test power_cut -- --nocapture
	$(CARGO_TARGET_DIR)/debug/chuyi-chaos

# The seeded whole-cluster simulation (chaos/src/sim) on SEEDS seeds from
# FROM, one line each and a last line "N passed, N failed"; make test runs
# a fixed 16. A failing seed reruns with `chuyi-chaos simulate --seed N`.
SEEDS ?= 1000
FROM ?= 0
simulate: build
	RUST_LOG=off $(CARGO_TARGET_DIR)/debug/chuyi-chaos simulate --seeds $(SEEDS) --from $(FROM)

# The parsers of network and disk input under many more cases than
# `make test` gives them (FUZZING.md): CASES per harness.
CASES ?= 200000
fuzz: deps
	PROPTEST_CASES=$(CASES) $(CARGO) nextest run --workspace --no-fail-fast -E 'test(fuzz::) | test(never_panic)'

fmt:
	$(CARGO) fmt --all

# Style, checked by CI before the tests (.ci/run): formatting, and clippy
# with every warning an error.
lint: deps
	@if command -v rustup >/dev/null; then for c in rustfmt clippy; do \
		rustup component list --installed | grep -q "^$$c" || rustup component add $$c || exit 1; \
	done; fi
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

clean-data:
	rm -rf $(DATA_DIR)
