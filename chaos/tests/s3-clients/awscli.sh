#!/usr/bin/env bash
# awscli against the S3 gateway: cp (single and multipart), sync both ways,
# ls, rm --recursive, s3api versioning and ranged get, presign + curl, rb.
#
# Env: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#      AWS_DEFAULT_REGION (default us-east-1).
set -Eeuo pipefail

source "$(dirname "$0")/aws_env.sh"
bucket="cli-$suffix"
vbucket="cli-v-$suffix"
fail() { echo "FAIL awscli: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
same() { [ "$(sha "$1")" = "$(sha "$2")" ] || fail "$1 and $2 differ"; }

cleanup() {
    local rc=$?
    trap - ERR
    if [ "$rc" -ne 0 ]; then # best effort; the failure is already reported
        s3 s3 rb --force "s3://$bucket" >/dev/null 2>&1 || true
        s3 s3 rb --force "s3://$vbucket" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
on_err() { echo "FAIL awscli: line ${BASH_LINENO[${#BASH_LINENO[@]} - 2]}: $1" >&2; }
trap 'on_err "$BASH_COMMAND"' ERR

aws configure set default.s3.signature_version s3v4
aws configure set default.s3.addressing_style path
aws configure set default.s3.multipart_threshold 5MB
aws configure set default.s3.multipart_chunksize 5MB

s3 s3 mb "s3://$bucket" >/dev/null

# cp up and down: 1 MiB in one PUT, 20 MiB in 5 MiB parts.
head -c $((1024 * 1024)) /dev/urandom >"$work/small.bin"
head -c $((20 * 1024 * 1024)) /dev/urandom >"$work/big.bin"
s3 s3 cp --only-show-errors "$work/small.bin" "s3://$bucket/small.bin"
s3 s3 cp --only-show-errors "$work/big.bin" "s3://$bucket/big.bin"
etag=$(s3 s3api head-object --bucket "$bucket" --key big.bin --query ETag --output text)
case "$etag" in
*-4\" | *-4) ;;
*) fail "big.bin ETag $etag is not that of a 4-part upload" ;;
esac
mkdir "$work/down"
s3 s3 cp --only-show-errors "s3://$bucket/small.bin" "$work/down/small.bin"
s3 s3 cp --only-show-errors "s3://$bucket/big.bin" "$work/down/big.bin"
same "$work/small.bin" "$work/down/small.bin"
same "$work/big.bin" "$work/down/big.bin"

# sync a tree of 20 small files up, again (nothing to do), and back down.
for i in $(seq 1 20); do
    d="$work/tree/d$((i % 4))/sub$((i % 3))"
    mkdir -p "$d"
    head -c $((i * 1000 + 1)) /dev/urandom >"$d/f$i.bin"
done
# Older than any upload: sync compares mtimes with LastModified, which S3 keeps in seconds.
find "$work/tree" -type f -exec touch -d '2020-01-01 00:00:00' {} +
s3 s3 sync --only-show-errors "$work/tree" "s3://$bucket/tree"
again=$(s3 s3 sync "$work/tree" "s3://$bucket/tree")
[ -z "$again" ] || fail "a second sync of an unchanged tree did something: $again"
s3 s3 sync --only-show-errors "s3://$bucket/tree" "$work/tree-back"
diff -r "$work/tree" "$work/tree-back" || fail "the tree synced down differs"

top=$(s3 s3 ls "s3://$bucket/")
grep -q 'PRE tree/$' <<<"$top" || fail "ls: no tree/ prefix in: $top"
grep -q ' small\.bin$' <<<"$top" || fail "ls: no small.bin in: $top"
grep -q ' big\.bin$' <<<"$top" || fail "ls: no big.bin in: $top"
n=$(s3 s3 ls --recursive "s3://$bucket/" | wc -l)
[ "$n" -eq 22 ] || fail "ls --recursive: $n objects, want 22"
n=$(s3 s3 ls --recursive "s3://$bucket/tree/d1/" | wc -l)
[ "$n" -eq 5 ] || fail "ls --recursive tree/d1/: $n objects, want 5"

s3 s3 rm --recursive --only-show-errors "s3://$bucket/tree"
n=$(s3 s3 ls --recursive "s3://$bucket/" | wc -l)
[ "$n" -eq 2 ] || fail "after rm --recursive: $n objects, want 2"

# s3api: a ranged get.
s3 s3api get-object --bucket "$bucket" --key small.bin --range bytes=0-99 "$work/range.bin" >/dev/null
[ "$(stat -c %s "$work/range.bin")" -eq 100 ] || fail "ranged get: $(stat -c %s "$work/range.bin") bytes, want 100"
head -c 100 "$work/small.bin" >"$work/range.want"
same "$work/range.want" "$work/range.bin"

# presign, then fetch with curl.
url=$(s3 s3 presign "s3://$bucket/small.bin" --expires-in 300)
curl -sf -o "$work/presigned.bin" "$url" || fail "curl of the presigned URL failed"
same "$work/small.bin" "$work/presigned.bin"

# s3api: versioning on a second bucket.
s3 s3 mb "s3://$vbucket" >/dev/null
s3 s3api put-bucket-versioning --bucket "$vbucket" --versioning-configuration Status=Enabled
st=$(s3 s3api get-bucket-versioning --bucket "$vbucket" --query Status --output text)
[ "$st" = Enabled ] || fail "get-bucket-versioning: $st"
s3 s3api put-object --bucket "$vbucket" --key doc.bin --body "$work/small.bin" >/dev/null
s3 s3api put-object --bucket "$vbucket" --key doc.bin --body "$work/range.bin" >/dev/null
versions=$(s3 s3api list-object-versions --bucket "$vbucket" --query 'Versions[].VersionId' --output text)
[ "$(wc -w <<<"$versions")" -eq 2 ] || fail "list-object-versions: '$versions', want 2 versions"
for v in $versions; do
    s3 s3api get-object --bucket "$vbucket" --key doc.bin --version-id "$v" "$work/version.bin" >/dev/null
    s3 s3api delete-object --bucket "$vbucket" --key doc.bin --version-id "$v" >/dev/null
done
same "$work/small.bin" "$work/version.bin" # the last one listed is the oldest
s3 s3 rb "s3://$vbucket" >/dev/null

s3 s3 rm --recursive --only-show-errors "s3://$bucket/"
s3 s3 rb "s3://$bucket" >/dev/null
buckets=$(s3 s3 ls)
if grep -q " $bucket\$" <<<"$buckets"; then fail "bucket still listed after rb"; fi

echo "ok awscli"
