//! Property harnesses over what the gateway parses itself of a client's
//! request (s3s parses the HTTP, SigV4, aws-chunked framing and the XML):
//! presigned-URL queries, tag headers, ACL grant headers, bucket
//! policies, copy-source ranges, checksum and SSE-C headers, CORS
//! headers; and over what a disk may return in place of a framed run.
//! Arbitrary input must give a value or a precise error, never a panic.
//!
//! `make test` runs proptest's default 256 cases each; `make fuzz` runs
//! them with `PROPTEST_CASES` raised (FUZZING.md).

use proptest::prelude::*;

use crate::access::acl::Given;
use crate::access::policy::Policy;
use crate::frames::{Layout, TRAILER_BYTES};

/// Text that looks like what the parser wants, half the time.
fn texty(pattern: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![pattern.prop_map(|s| s), any::<String>()]
}

proptest! {
    #[test]
    fn presigned_queries(query in texty("(X-Amz-[A-Za-z]{0,10}=[0-9A-Za-z%]{0,20}&?){0,6}"), now in any::<i64>()) {
        let _ = crate::presigned::check(Some(&query), now);
    }

    #[test]
    fn tag_headers(header in texty("([a-z%0-9]{0,6}=[a-z%0-9]{0,6}&?){0,12}")) {
        let _ = crate::tagging::from_header(&header);
        let _ = crate::tagging::decode(&header);
    }

    #[test]
    fn acl_headers(
        canned in proptest::option::of(texty("(private|public-read|bucket-owner-read|[a-z-]{0,12})")),
        read in proptest::option::of(texty("((id|uri|emailAddress)=\"?[a-z:/.]{0,16}\"?,? ?){0,3}")),
        full in proptest::option::of(any::<String>()),
    ) {
        let given = Given {
            canned: canned.as_deref(),
            read: read.as_deref(),
            full_control: full.as_deref(),
            ..Default::default()
        };
        let _ = given.acl("owner");
    }

    #[test]
    fn bucket_policies(text in prop_oneof![
        any::<Vec<u8>>(),
        r#"\{"Version":"2012-10-17","Statement":\[\{"Effect":"(Allow|Deny|x)","Principal":("\*"|\{"AWS":"[a-z*]{0,5}"\}),"Action":"s3:[A-Za-z*]{0,12}","Resource":"arn:aws:s3:::[a-z*/]{0,12}"(,"Condition":\{"[A-Za-z]{0,12}":\{"[a-z:]{0,16}":"[0-9./a-z]{0,12}"\}\})?\}\]\}"#
            .prop_map(String::into_bytes),
    ]) {
        let _ = Policy::parse(&text, "bucket");
    }

    #[test]
    fn copy_source_ranges(range in texty("bytes=[0-9-]{0,24}"), size in any::<u64>()) {
        if let Ok(r) = crate::multipart::copy_range(Some(&range), size) {
            prop_assert!(r.start <= r.end && r.end <= size);
        }
    }

    #[test]
    fn checksum_and_sse_c_headers(
        algorithm in proptest::option::of(texty("(CRC32|CRC32C|CRC64NVME|SHA1|SHA256|AES256|[A-Z0-9]{0,8})")),
        kind in proptest::option::of(texty("(COMPOSITE|FULL_OBJECT|[A-Z_]{0,12})")),
        key in proptest::option::of(texty("[A-Za-z0-9+/=]{0,64}")),
    ) {
        let _ = crate::part_checksums::chosen(algorithm.as_deref(), kind.as_deref());
        let _ = crate::encryption::customer_key(algorithm.as_deref(), key.as_deref(), kind.as_deref());
    }

    #[test]
    fn cors_headers(value in any::<String>(), path in any::<String>()) {
        let _ = crate::cors::requested_headers(&value);
        let _ = crate::cors::bucket_of(&path);
    }

    /// What a disk may hand back for a framed run's tail: never a panic,
    /// and a layout only where the index fits the run.
    #[test]
    fn framed_run_tails(mut tail in proptest::collection::vec(any::<u8>(), 0..200), stored_len in 0u64..1 << 20, magic in any::<bool>()) {
        if magic && tail.len() >= TRAILER_BYTES {
            let n = tail.len();
            tail[n - 4..].copy_from_slice(b"CYFZ");
        }
        if let Ok(layout) = Layout::parse(&tail, stored_len) {
            prop_assert!(layout.logical_len == 0 || stored_len > 0);
        }
    }
}
