//! Property harnesses over every parser of what an NBD client sends: the
//! option haggling (each option's data, in any order, through the same
//! decision the handshake makes), info and meta-context requests, and
//! transmission request headers. Arbitrary bytes must give a decision or
//! an error, never a panic, and what was negotiated must stay coherent.
//!
//! `make test` runs proptest's default 256 cases each; `make fuzz` runs
//! them with `PROPTEST_CASES` raised (FUZZING.md).

use proptest::prelude::*;

use crate::handshake::{decide, Negotiated, Step};
use crate::proto::{
    parse_info_request, parse_meta_context_request, Request, MAX_OPTION_DATA, OPT_ABORT, OPT_EXPORT_NAME, OPT_GO,
    OPT_INFO, OPT_LIST, OPT_LIST_META_CONTEXT, OPT_SET_META_CONTEXT, OPT_STRUCTURED_REPLY, REQUEST_LEN,
};

/// An option number: mostly the ones the server knows, some it does not.
fn option() -> impl Strategy<Value = u32> {
    prop_oneof![
        8 => prop::sample::select(vec![
            OPT_EXPORT_NAME,
            OPT_ABORT,
            OPT_LIST,
            OPT_INFO,
            OPT_GO,
            OPT_STRUCTURED_REPLY,
            OPT_LIST_META_CONTEXT,
            OPT_SET_META_CONTEXT,
        ]),
        1 => any::<u32>(),
    ]
}

/// Option data: random bytes, or the shape a meta-context request has
/// (length-prefixed export, a count, length-prefixed queries) with
/// lengths that may lie.
fn data() -> impl Strategy<Value = Vec<u8>> {
    let shaped =
        (any::<u32>(), ".{0,12}", any::<u32>(), proptest::collection::vec(("[a-z:]{0,12}", any::<bool>()), 0..4))
            .prop_map(|(export_len, export, count, queries)| {
                let mut out = export_len.to_be_bytes().to_vec();
                out.extend_from_slice(export.as_bytes());
                out.extend_from_slice(&count.to_be_bytes());
                for (q, honest) in queries {
                    let len = if honest { q.len() as u32 } else { u32::MAX - q.len() as u32 };
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(q.as_bytes());
                }
                out
            });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..64), shaped]
}

proptest! {
    /// Any sequence of options: every one is decided, and base:allocation
    /// is only ever selected once structured replies were.
    #[test]
    fn option_haggling_never_panics(options in proptest::collection::vec((option(), data()), 0..12)) {
        let mut negotiated = Negotiated::default();
        for (option, data) in options {
            prop_assert!(data.len() <= MAX_OPTION_DATA as usize);
            let step = decide(option, &data, &mut negotiated);
            if negotiated.allocation_for.is_some() {
                prop_assert!(negotiated.structured, "allocation without structured replies");
            }
            if matches!(step, Step::Abort | Step::Close(_)) {
                break;
            }
        }
    }

    #[test]
    fn info_and_meta_context_requests_never_panic(data in data()) {
        let _ = parse_info_request(&data);
        if let Some((export, queries)) = parse_meta_context_request(&data) {
            // What parsed fits in what was sent.
            prop_assert!(export.len() + queries.iter().map(String::len).sum::<usize>() <= data.len());
        }
    }

    #[test]
    fn request_headers_never_panic(raw in any::<[u8; REQUEST_LEN]>()) {
        let _ = Request::parse(&raw);
    }
}
