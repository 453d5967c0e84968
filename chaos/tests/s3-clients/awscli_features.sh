#!/usr/bin/env bash
# awscli's s3api against the gateway's bucket features, as an operator
# scripts them: tagging, CORS, lifecycle, object lock, ACLs and an
# anonymous curl, bucket policies, conditional writes. Each refusal is
# checked by its S3 error code.
#
# Env: S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
#      AWS_DEFAULT_REGION (default us-east-1).
set -Eeuo pipefail

source "$(dirname "$0")/aws_env.sh"
bucket="clif-$suffix"
locked="clif-lock-$suffix"
api() { s3 s3api "$@"; }
fail() { echo "FAIL awscli_features: $*" >&2; exit 1; }
# refused CODE COMMAND...: the command must fail with S3 error CODE.
refused() {
    local code=$1 out
    shift
    if out=$("$@" 2>&1); then fail "succeeded, wanted $code: $*"; fi
    grep -q "($code)" <<<"$out" || fail "wanted $code from: $*; got: $out"
}
# http_status URL: the status of an unsigned GET.
http_status() { curl -s -o /dev/null -w '%{http_code}' "$1"; }

cleanup() {
    local rc=$?
    trap - ERR
    if [ "$rc" -ne 0 ]; then
        api delete-bucket-policy --bucket "$bucket" >/dev/null 2>&1 || true
        s3 s3 rb --force "s3://$bucket" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
on_err() { echo "FAIL awscli_features: line ${BASH_LINENO[${#BASH_LINENO[@]} - 2]}: $1" >&2; }
trap 'on_err "$BASH_COMMAND"' ERR

aws configure set default.s3.signature_version s3v4
aws configure set default.s3.addressing_style path

api create-bucket --bucket "$bucket" >/dev/null
echo "hello" >"$work/hello.txt"

# Tagging: on PUT, read back, replaced, counted on HEAD... and bucket tags.
api put-object --bucket "$bucket" --key tagged --body "$work/hello.txt" --tagging "study=ct&ward=3" >/dev/null
tags=$(api get-object-tagging --bucket "$bucket" --key tagged --query 'TagSet[].[Key,Value]' --output text | sort | tr '\t\n' '=,')
[ "$tags" = "study=ct,ward=3," ] || fail "object tags: $tags"
api put-object-tagging --bucket "$bucket" --key tagged --tagging 'TagSet=[{Key=study,Value=mr}]'
[ "$(api get-object-tagging --bucket "$bucket" --key tagged --query 'TagSet[0].Value' --output text)" = mr ] ||
    fail "object tags were not replaced"
api put-bucket-tagging --bucket "$bucket" --tagging 'TagSet=[{Key=dept,Value=radiology}]'
[ "$(api get-bucket-tagging --bucket "$bucket" --query 'TagSet[0].Value' --output text)" = radiology ] ||
    fail "bucket tags"

# CORS: stored as given, then a preflight from curl answered by it.
cat >"$work/cors.json" <<'EOF'
{"CORSRules": [{"AllowedOrigins": ["https://viewer.example"], "AllowedMethods": ["GET", "HEAD"],
  "AllowedHeaders": ["*"], "MaxAgeSeconds": 600}]}
EOF
api put-bucket-cors --bucket "$bucket" --cors-configuration "file://$work/cors.json"
[ "$(api get-bucket-cors --bucket "$bucket" --query 'CORSRules[0].AllowedOrigins[0]' --output text)" = https://viewer.example ] ||
    fail "CORS rules"
preflight=$(curl -s -i -X OPTIONS -H 'Origin: https://viewer.example' -H 'Access-Control-Request-Method: GET' \
    "$S3_ENDPOINT/$bucket/tagged")
grep -qi '^access-control-allow-origin: https://viewer.example' <<<"$preflight" || fail "preflight: $preflight"
api delete-bucket-cors --bucket "$bucket"
refused NoSuchCORSConfiguration api get-bucket-cors --bucket "$bucket"

# Lifecycle: a configuration round-trips; a bad one is refused.
cat >"$work/lifecycle.json" <<'EOF'
{"Rules": [{"ID": "old-scans", "Status": "Enabled", "Filter": {"Prefix": "scans/"}, "Expiration": {"Days": 30},
  "NoncurrentVersionExpiration": {"NoncurrentDays": 7}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2}}]}
EOF
api put-bucket-lifecycle-configuration --bucket "$bucket" --lifecycle-configuration "file://$work/lifecycle.json"
[ "$(api get-bucket-lifecycle-configuration --bucket "$bucket" --query 'Rules[0].Expiration.Days' --output text)" = 30 ] ||
    fail "lifecycle rules"
echo '{"Rules": [{"ID": "x", "Status": "Enabled", "Filter": {}, "Expiration": {"Days": -1}}]}' >"$work/bad.json"
refused InvalidArgument api put-bucket-lifecycle-configuration --bucket "$bucket" \
    --lifecycle-configuration "file://$work/bad.json"
api delete-bucket-lifecycle --bucket "$bucket"

# Conditional writes: create-only, then If-Match on the ETag.
etag=$(api put-object --bucket "$bucket" --key once --body "$work/hello.txt" --if-none-match '*' --query ETag --output text)
refused PreconditionFailed api put-object --bucket "$bucket" --key once --body "$work/hello.txt" --if-none-match '*'
api put-object --bucket "$bucket" --key once --body "$work/hello.txt" --if-match "$etag" >/dev/null

# ACLs: an object made public-read is readable by an unsigned GET; the
# bucket's other objects are not.
api put-object --bucket "$bucket" --key public.txt --body "$work/hello.txt" --acl public-read >/dev/null
[ "$(http_status "$S3_ENDPOINT/$bucket/public.txt")" = 200 ] || fail "anonymous GET of a public-read object"
[ "$(http_status "$S3_ENDPOINT/$bucket/once")" = 403 ] || fail "anonymous GET of a private object"
api get-object-acl --bucket "$bucket" --key public.txt --query 'Grants[].Permission' --output text | grep -q READ ||
    fail "the object ACL lists no READ grant"
api put-object-acl --bucket "$bucket" --key public.txt --acl private
[ "$(http_status "$S3_ENDPOINT/$bucket/public.txt")" = 403 ] || fail "anonymous GET after the ACL went private"
api put-bucket-acl --bucket "$bucket" --acl public-read
[ "$(http_status "$S3_ENDPOINT/$bucket?list-type=2")" = 200 ] || fail "anonymous listing of a public-read bucket"
api put-bucket-acl --bucket "$bucket" --acl private
[ "$(http_status "$S3_ENDPOINT/$bucket?list-type=2")" = 403 ] || fail "anonymous listing of a private bucket"

# Bucket policy: public reads of one prefix, and a Deny that binds the owner.
cat >"$work/policy.json" <<EOF
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::$bucket/shared/*"},
  {"Effect": "Deny", "Principal": "*", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::$bucket/shared/*"}]}
EOF
api put-object --bucket "$bucket" --key shared/report.txt --body "$work/hello.txt" >/dev/null
api put-bucket-policy --bucket "$bucket" --policy "file://$work/policy.json"
[ "$(api get-bucket-policy-status --bucket "$bucket" --query PolicyStatus.IsPublic --output text)" = True ] ||
    fail "policy status"
[ "$(http_status "$S3_ENDPOINT/$bucket/shared/report.txt")" = 200 ] || fail "anonymous GET the policy allows"
refused AccessDenied api delete-object --bucket "$bucket" --key shared/report.txt
refused MalformedPolicy api put-bucket-policy --bucket "$bucket" --policy '{"Version": "2012-10-17"}'
api delete-bucket-policy --bucket "$bucket"
refused NoSuchBucketPolicy api get-bucket-policy --bucket "$bucket"
[ "$(http_status "$S3_ENDPOINT/$bucket/shared/report.txt")" = 403 ] || fail "anonymous GET after the policy went"

# Object lock: a COMPLIANCE version cannot be deleted, even with bypass.
api create-bucket --bucket "$locked" --object-lock-enabled-for-bucket >/dev/null
# Retained for 12 s: long enough that the refusals below run inside it on
# a loaded machine (4 s was not, once), then waited out.
until_s=$(($(date +%s) + 12))
until=$(date -u -d "@$until_s" +%Y-%m-%dT%H:%M:%SZ)
vid=$(api put-object --bucket "$locked" --key kept --body "$work/hello.txt" --object-lock-mode COMPLIANCE \
    --object-lock-retain-until-date "$until" --query VersionId --output text)
[ "$(api get-object-retention --bucket "$locked" --key kept --query Retention.Mode --output text)" = COMPLIANCE ] ||
    fail "retention"
refused AccessDenied api delete-object --bucket "$locked" --key kept --version-id "$vid"
refused AccessDenied api delete-object --bucket "$locked" --key kept --version-id "$vid" --bypass-governance-retention
api put-object-legal-hold --bucket "$locked" --key kept --version-id "$vid" --legal-hold Status=ON
left=$((until_s + 1 - $(date +%s)))
[ "$left" -le 0 ] || sleep "$left"
refused AccessDenied api delete-object --bucket "$locked" --key kept --version-id "$vid"
api put-object-legal-hold --bucket "$locked" --key kept --version-id "$vid" --legal-hold Status=OFF
api delete-object --bucket "$locked" --key kept --version-id "$vid" >/dev/null
api delete-bucket --bucket "$locked"

s3 s3 rb --force "s3://$bucket" >/dev/null
echo "ok awscli_features"
