# What the metadata benchmark scripts share (sourced, not run). Given
# `repo` and `bench_dir`, it sets `target_dir`, `chuyi`, `chuyi_bench`
# and `pids` (the member processes, killed on exit), builds the workspace
# (the dev profile of `make test`: see meta.sh for why), and makes an
# empty `bench_dir` with a fresh cluster secret in `secret_file`, refusing
# tmpfs, where fsync would cost nothing.

target_dir=${CARGO_TARGET_DIR:-/var/cache/chuyi/target}
chuyi=$target_dir/debug/chuyi
chuyi_bench=$target_dir/debug/chuyi-bench
pids=()

cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
}
trap cleanup EXIT

(cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo build -q --workspace --all-targets)
rm -rf "$bench_dir"
mkdir -p "$bench_dir"
if [ "$(stat -f -c %T "$bench_dir")" = tmpfs ]; then
	echo "$(basename "$0"): $bench_dir is on tmpfs; fsync would cost nothing" >&2
	exit 1
fi
secret_file=$bench_dir/secret
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret_file"
