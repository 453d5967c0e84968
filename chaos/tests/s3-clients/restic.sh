#!/usr/bin/env bash
# restic against the S3 gateway: init (restic creates the bucket), two
# backups, snapshots, check --read-data, restore, diff with the source.
#
# Env: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#      AWS_DEFAULT_REGION (default us-east-1). The bucket is removed at the
#      end with awscli.
set -Eeuo pipefail

: "${S3_ENDPOINT:?set S3_ENDPOINT, e.g. http://127.0.0.1:9000}"
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

work=$(mktemp -d)
bucket="restic-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
src="$work/src"
export RESTIC_REPOSITORY="s3:${S3_ENDPOINT%/}/$bucket/repo"
RESTIC_PASSWORD=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export RESTIC_PASSWORD
export RESTIC_CACHE_DIR="$work/cache"
export AWS_CONFIG_FILE="$work/aws-config" AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials" AWS_PAGER=""

r() {
    restic -o s3.region="$AWS_DEFAULT_REGION" -o s3.bucket-lookup=path -o s3.retries=1 "$@"
}
fail() { echo "FAIL restic: $*" >&2; exit 1; }
on_err() { echo "FAIL restic: line ${BASH_LINENO[${#BASH_LINENO[@]} - 2]}: $1" >&2; }
remove_bucket() { aws --endpoint-url "$S3_ENDPOINT" s3 rb --force "s3://$bucket" >/dev/null; }
cleanup() {
    local rc=$?
    trap - ERR
    if [ "$rc" -ne 0 ]; then # best effort; the failure is already reported
        remove_bucket 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'on_err "$BASH_COMMAND"' ERR

# A few large files (one repeated, for deduplication) and many small ones.
mkdir -p "$src/big"
head -c $((8 * 1024 * 1024)) /dev/urandom >"$src/big/eight.bin"
head -c $((3 * 1024 * 1024)) /dev/urandom >"$src/big/three.bin"
cp "$src/big/three.bin" "$src/big/three-again.bin"
head -c $((1024 * 1024 + 17)) /dev/urandom >"$src/big/one.bin"
head -c $((300 * 1024)) /dev/urandom >"$src/big/small.bin"
for i in $(seq 1 200); do
    d="$src/small/d$((i % 10))"
    mkdir -p "$d"
    head -c $((i * 20 + 1)) /dev/urandom >"$d/f$i"
done
: >"$src/small/empty"

r init >/dev/null
r backup --quiet "$src"
head -c 5000 /dev/urandom >"$src/small/d1/f1"
head -c 4096 /dev/urandom >"$src/small/added"
r backup --quiet "$src"
n=$(r snapshots --json | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
[ "$n" -eq 2 ] || fail "snapshots: $n, want 2"
r check --read-data >/dev/null

r restore latest --target "$work/restore" >/dev/null
restored="$work/restore$src" # restic restores the full path under the target
[ -d "$restored" ] || fail "nothing restored at $restored: $(cd "$work/restore" && find . -maxdepth 4 | head)"
diff -r "$src" "$restored" || fail "the restored tree differs"

remove_bucket
echo "ok restic"
