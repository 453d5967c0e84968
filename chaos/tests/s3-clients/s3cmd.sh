#!/usr/bin/env bash
# s3cmd against the S3 gateway: mb, put (single and 5 MiB multipart), get,
# sync both ways, ls, del --recursive, rb.
#
# Env: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#      AWS_DEFAULT_REGION (default us-east-1). A config file of its own is
#      written to a temporary directory; ~/.s3cfg is not read.
set -Eeuo pipefail

: "${S3_ENDPOINT:?set S3_ENDPOINT, e.g. http://127.0.0.1:9000}"
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"

work=$(mktemp -d)
bucket="s3cmd-$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cfg="$work/s3cfg"

fail() { echo "FAIL s3cmd: $*" >&2; exit 1; }
on_err() { echo "FAIL s3cmd: line ${BASH_LINENO[${#BASH_LINENO[@]} - 2]}: $1" >&2; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
same() { [ "$(sha "$1")" = "$(sha "$2")" ] || fail "$1 and $2 differ"; }
s3c() { s3cmd -c "$cfg" --no-progress "$@"; }
cleanup() {
    local rc=$?
    trap - ERR
    if [ "$rc" -ne 0 ] && [ -f "$cfg" ]; then # best effort; the failure is already reported
        s3c del --recursive --force "s3://$bucket/" >/dev/null 2>&1 || true
        s3c rb "s3://$bucket" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'on_err "$BASH_COMMAND"' ERR

hostport=${S3_ENDPOINT#*://}
hostport=${hostport%%/*}
case "$S3_ENDPOINT" in
https://*) https=True ;;
*) https=False ;;
esac
# host_bucket without %(bucket)s: path-style requests.
cat >"$cfg" <<EOF
[default]
access_key = $AWS_ACCESS_KEY_ID
secret_key = $AWS_SECRET_ACCESS_KEY
host_base = $hostport
host_bucket = $hostport
use_https = $https
signature_v2 = False
bucket_location = ${AWS_DEFAULT_REGION:-us-east-1}
progress_meter = False
EOF

s3c mb "s3://$bucket" >/dev/null

head -c $((1024 * 1024)) /dev/urandom >"$work/small.bin"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$work/big.bin"
s3c put "$work/small.bin" "s3://$bucket/small.bin" >/dev/null
s3c put --multipart-chunk-size-mb=5 "$work/big.bin" "s3://$bucket/big.bin" >/dev/null
mkdir "$work/down"
s3c get "s3://$bucket/small.bin" "$work/down/small.bin" >/dev/null
s3c get "s3://$bucket/big.bin" "$work/down/big.bin" >/dev/null
same "$work/small.bin" "$work/down/small.bin"
same "$work/big.bin" "$work/down/big.bin"
# The long listing shows the ETag; --list-md5 the MD5 s3cmd keeps in metadata for multipart.
listed=$(s3c ls --long-listing "s3://$bucket/big.bin")
grep -q -- '-4 ' <<<"$listed" || fail "big.bin is not a 4-part upload: $listed"
md5=$(md5sum "$work/big.bin" | cut -d' ' -f1)
listed=$(s3c ls --list-md5 "s3://$bucket/big.bin")
grep -q -- " $md5 " <<<"$listed" || fail "big.bin: MD5 in s3cmd's metadata is not $md5: $listed"

for i in $(seq 1 20); do
    d="$work/tree/d$((i % 4))/sub$((i % 3))"
    mkdir -p "$d"
    head -c $((i * 1000 + 1)) /dev/urandom >"$d/f$i.bin"
done
s3c sync "$work/tree/" "s3://$bucket/tree/" >/dev/null
s3c sync "s3://$bucket/tree/" "$work/back/" >/dev/null
diff -r "$work/tree" "$work/back" || fail "the tree synced down differs"

top=$(s3c ls "s3://$bucket/")
grep -q "DIR *s3://$bucket/tree/\$" <<<"$top" || fail "ls: no tree/ in: $top"
grep -q " s3://$bucket/small.bin\$" <<<"$top" || fail "ls: no small.bin in: $top"
n=$(s3c ls --recursive "s3://$bucket/" | wc -l)
[ "$n" -eq 22 ] || fail "ls --recursive: $n objects, want 22"

s3c del --recursive --force "s3://$bucket/" >/dev/null
n=$(s3c ls --recursive "s3://$bucket/" | wc -l)
[ "$n" -eq 0 ] || fail "after del --recursive: $n objects left"
s3c rb "s3://$bucket" >/dev/null
buckets=$(s3c ls)
if grep -q " s3://$bucket\$" <<<"$buckets"; then fail "bucket still listed after rb"; fi

echo "ok s3cmd"
