#!/usr/bin/env bash
# rclone against the S3 gateway: mkdir, copy (small files and a 30 MiB file
# in 5 MiB parts), check, sync after local changes, copy back, lsf (ListObjects
# v1 and v2), purge.
#
# Env: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#      AWS_DEFAULT_REGION (default us-east-1). The remote is configured by
#      environment only (no rclone.conf of the machine is read).
set -Eeuo pipefail

: "${S3_ENDPOINT:?set S3_ENDPOINT, e.g. http://127.0.0.1:9000}"
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"

export RCLONE_CONFIG_CHUYI_TYPE=s3
export RCLONE_CONFIG_CHUYI_PROVIDER=Other
export RCLONE_CONFIG_CHUYI_ENV_AUTH=false
export RCLONE_CONFIG_CHUYI_ENDPOINT="$S3_ENDPOINT"
export RCLONE_CONFIG_CHUYI_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID"
export RCLONE_CONFIG_CHUYI_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export RCLONE_CONFIG_CHUYI_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export RCLONE_CONFIG_CHUYI_FORCE_PATH_STYLE=true

# rclone's AWS SDK refuses AWS_CA_BUNDLE ("unable to load custom CA bundle");
# hand it over as --ca-cert instead, where it matters (https).
ca_args=()
if [ -n "${AWS_CA_BUNDLE:-}" ] && [[ "$S3_ENDPOINT" == https://* ]]; then ca_args=(--ca-cert "$AWS_CA_BUNDLE"); fi
unset AWS_CA_BUNDLE

work=$(mktemp -d)
bucket="rc-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
remote="chuyi:$bucket/tree"
src="$work/src"
touch "$work/rclone.conf" # empty: the remote comes from the environment

# No retries: a retried failure would pass unnoticed.
rcl() {
    rclone --config "$work/rclone.conf" --retries 1 --low-level-retries 1 \
        --s3-upload-cutoff 5M --s3-chunk-size 5M --transfers 4 --checkers 4 ${ca_args[@]+"${ca_args[@]}"} "$@"
}
fail() { echo "FAIL rclone: $*" >&2; exit 1; }
on_err() { echo "FAIL rclone: line ${BASH_LINENO[${#BASH_LINENO[@]} - 2]}: $1" >&2; }
cleanup() {
    local rc=$?
    trap - ERR
    if [ "$rc" -ne 0 ]; then # best effort; the failure is already reported
        rcl purge "chuyi:$bucket" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'on_err "$BASH_COMMAND"' ERR

check_tree() {
    local out
    out=$(rcl check "$src" "$remote" 2>&1) || fail "rclone check ($1): $out"
    grep -q ' 0 differences found' <<<"$out" || fail "rclone check ($1): $out"
}

files_of() { (cd "$1" && find . -type f | sed 's|^\./||' | LC_ALL=C sort); }

for i in $(seq 1 20); do
    d="$src/dir$((i % 3))/sub$((i % 2))"
    mkdir -p "$d"
    head -c $((i * 700 + 1)) /dev/urandom >"$d/file$i.dat"
done
: >"$src/empty.txt"
head -c $((30 * 1024 * 1024)) /dev/urandom >"$src/large.bin"

rcl mkdir "chuyi:$bucket"
rcl copy "$src" "$remote"
check_tree "after copy"

# Change one file, delete one, add one; sync; check again.
head -c 5000 /dev/urandom >"$src/dir1/sub1/file1.dat"
rm "$src/dir2/sub0/file2.dat"
head -c 1234 /dev/urandom >"$src/dir0/new.dat"
rcl sync "$src" "$remote"
check_tree "after sync"

rcl copy "$remote" "$work/back"
diff -r "$src" "$work/back" || fail "the tree copied back differs"

want=$(files_of "$src")
for v in 1 2; do
    got=$(rcl lsf -R --files-only --s3-list-version "$v" "$remote" | LC_ALL=C sort)
    [ "$got" = "$want" ] || fail "lsf -R (ListObjects v$v): got [$got] want [$want]"
done
top=$(rcl lsf "chuyi:$bucket")
[ "$top" = "tree/" ] || fail "lsf of the bucket: [$top]"

rcl purge "chuyi:$bucket"
buckets=$(rcl lsf "chuyi:")
if grep -qx "$bucket/" <<<"$buckets"; then fail "bucket still listed after purge"; fi

echo "ok rclone"
