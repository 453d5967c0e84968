# Sourced by the awscli scripts: the environment they check, a scratch
# directory ($work) with an awscli config of their own (never the
# machine's), a random $suffix for bucket names, and `s3` for aws with the
# endpoint. The caller sets `set -Eeuo pipefail` and its own traps.

: "${S3_ENDPOINT:?set S3_ENDPOINT, e.g. http://127.0.0.1:9000}"
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_EC2_METADATA_DISABLED=true AWS_PAGER=""

work=$(mktemp -d)
suffix=$(head -c 4 /dev/urandom | od -An -tx1 | tr -d ' \n')
export AWS_CONFIG_FILE="$work/aws-config" AWS_SHARED_CREDENTIALS_FILE="$work/aws-credentials"

s3() { aws --endpoint-url "$S3_ENDPOINT" "$@"; }
