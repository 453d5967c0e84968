//! Who may do what: every request is decided here, before its operation
//! runs, from its caller, its action and the bucket's owner, policy and
//! ACLs ([`decide`], a pure function); [`check`] gathers those for each
//! request as s3s's access hook.
//!
//! The order is S3's: an administrator may do anything; an explicit Deny
//! in the bucket's policy refuses (the bucket's owner keeps the right to
//! read and change the policy itself and read its status, so it cannot
//! lock itself out); the
//! bucket's owner may do anything else; then an Allow in the policy, then
//! a grant of the bucket's ACL (bucket actions and writes of objects) or
//! of the object's ACL (reads of an object and of its ACL), allow; all
//! else is refused, anonymous callers included.

pub mod acl;
pub mod actions;
pub mod check;
pub mod operations;
pub mod policy;

use self::acl::Acl;
use self::actions::{AclScope, Action};
use self::policy::{Policy, Question, Verdict};

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An unsigned request (or a presigned URL's, which is signed).
    Anonymous,
    User {
        name: String,
        admin: bool,
    },
}

impl Caller {
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::User { name, .. } => Some(name),
        }
    }
}

/// What a decision looks at besides the request.
#[derive(Debug)]
pub struct Rules<'a> {
    pub owner: &'a str,
    pub policy: Option<&'a Policy>,
    pub bucket_acl: &'a Acl,
    /// The object's ACL, for an action that reads it; `None` when the
    /// object is not known (not asked for yet, or absent).
    pub object_acl: Option<&'a Acl>,
}

/// What [`decide`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Only the object's ACL could still allow it: ask again with it.
    NeedsObjectAcl,
}

/// Whether the request `question` (of `action`) is allowed under `rules`.
pub fn decide(question: &Question<'_>, action: &Action, rules: &Rules<'_>) -> Decision {
    if let Caller::User { admin: true, .. } = question.caller {
        return Decision::Allow;
    }
    let is_owner = question.caller.name() == Some(rules.owner);
    let verdict = rules.policy.map_or(Verdict::Silent, |p| p.evaluate(question));
    if verdict == Verdict::Deny && !(is_owner && action.manages_policy()) {
        return Decision::Deny;
    }
    if is_owner || verdict == Verdict::Allow {
        return Decision::Allow;
    }
    match action.acl {
        None => Decision::Deny,
        Some((AclScope::Bucket, wanted)) => allow_if(rules.bucket_acl.allows(question.caller, wanted)),
        Some((AclScope::Object, wanted)) => match rules.object_acl {
            Some(acl) => allow_if(acl.allows(question.caller, wanted)),
            None => Decision::NeedsObjectAcl,
        },
    }
}

fn allow_if(allowed: bool) -> Decision {
    if allowed {
        Decision::Allow
    } else {
        Decision::Deny
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::acl::canned;
    use super::actions::action;
    use super::*;

    fn user(name: &str) -> Caller {
        Caller::User { name: name.into(), admin: false }
    }

    fn run(caller: &Caller, op: &str, key: Option<&str>, rules: &Rules<'_>) -> Decision {
        let action = action(op, false);
        let resource = policy::resource("scans", key);
        let context = HashMap::new();
        let q = Question { caller, action: action.name, resource: &resource, context: &context };
        decide(&q, &action, rules)
    }

    const DENY_ALL: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*",
        "Resource":["arn:aws:s3:::scans","arn:aws:s3:::scans/*"]}]}"#;

    #[test]
    fn the_owner_may_do_anything_but_what_the_policy_denies_and_never_loses_the_policy() {
        let none = Acl::default();
        let open = Rules { owner: "alice", policy: None, bucket_acl: &none, object_acl: None };
        assert_eq!(run(&user("alice"), "DeleteBucket", None, &open), Decision::Allow);
        assert_eq!(run(&user("bob"), "DeleteBucket", None, &open), Decision::Deny);
        assert_eq!(run(&Caller::Anonymous, "ListObjectsV2", None, &open), Decision::Deny);
        let deny = Policy::parse(DENY_ALL.as_bytes(), "scans").expect("policy");
        let locked = Rules { policy: Some(&deny), ..open };
        assert_eq!(run(&user("alice"), "GetObject", Some("k"), &locked), Decision::Deny);
        assert_eq!(run(&user("alice"), "DeleteBucketPolicy", None, &locked), Decision::Allow);
        assert_eq!(run(&user("alice"), "PutBucketPolicy", None, &locked), Decision::Allow);
        let admin = Caller::User { name: "root".into(), admin: true };
        assert_eq!(run(&admin, "GetObject", Some("k"), &locked), Decision::Allow);
    }

    #[test]
    fn acls_grant_bucket_actions_and_object_reads_apart() {
        let public = canned("public-read", "alice").expect("canned");
        let none = Acl::default();
        let rules = Rules { owner: "alice", policy: None, bucket_acl: &public, object_acl: None };
        assert_eq!(run(&Caller::Anonymous, "ListObjectsV2", None, &rules), Decision::Allow);
        assert_eq!(run(&Caller::Anonymous, "PutObject", Some("k"), &rules), Decision::Deny);
        // A public bucket does not make its objects public: their ACLs do.
        assert_eq!(run(&Caller::Anonymous, "GetObject", Some("k"), &rules), Decision::NeedsObjectAcl);
        let with_object = Rules { object_acl: Some(&none), ..rules };
        assert_eq!(run(&Caller::Anonymous, "GetObject", Some("k"), &with_object), Decision::Deny);
        let readable = Rules { bucket_acl: &none, object_acl: Some(&public), ..rules };
        assert_eq!(run(&Caller::Anonymous, "GetObject", Some("k"), &readable), Decision::Allow);
        assert_eq!(run(&Caller::Anonymous, "HeadObject", Some("k"), &readable), Decision::Allow);
        assert_eq!(run(&Caller::Anonymous, "GetObjectAcl", Some("k"), &readable), Decision::Deny);
        let writable = canned("public-read-write", "alice").expect("canned");
        let rw = Rules { bucket_acl: &writable, ..rules };
        assert_eq!(run(&Caller::Anonymous, "PutObject", Some("k"), &rw), Decision::Allow);
        assert_eq!(run(&Caller::Anonymous, "DeleteBucket", None, &rw), Decision::Deny);
    }

    #[test]
    fn bypassing_governance_takes_the_owner_an_admin_or_a_policy_never_an_acl() {
        let writable = canned("public-read-write", "alice").expect("canned");
        let rules = Rules { owner: "alice", policy: None, bucket_acl: &writable, object_acl: None };
        // The ACL lets anyone delete versions, not bypass their retention.
        assert_eq!(run(&user("bob"), "DeleteObject", Some("k"), &rules), Decision::Allow);
        assert_eq!(run(&user("bob"), "BypassGovernanceRetention", Some("k"), &rules), Decision::Deny);
        assert_eq!(run(&user("alice"), "BypassGovernanceRetention", Some("k"), &rules), Decision::Allow);
        let admin = Caller::User { name: "root".into(), admin: true };
        assert_eq!(run(&admin, "BypassGovernanceRetention", Some("k"), &rules), Decision::Allow);
        let allow = Policy::parse(
            br#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"s3:BypassGovernanceRetention","Resource":"arn:aws:s3:::scans/*"}]}"#,
            "scans",
        )
        .expect("policy");
        let granted = Rules { policy: Some(&allow), ..rules };
        assert_eq!(run(&user("bob"), "BypassGovernanceRetention", Some("k"), &granted), Decision::Allow);
    }

    #[test]
    fn a_policy_allow_lets_another_user_in_and_its_deny_beats_an_acl() {
        let allow = Policy::parse(
            br#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"bob"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::scans/*"}]}"#,
            "scans",
        )
        .expect("policy");
        let none = Acl::default();
        let rules = Rules { owner: "alice", policy: Some(&allow), bucket_acl: &none, object_acl: None };
        assert_eq!(run(&user("bob"), "GetObject", Some("k"), &rules), Decision::Allow);
        assert_eq!(run(&user("carol"), "GetObject", Some("k"), &rules), Decision::NeedsObjectAcl);
        let deny = Policy::parse(DENY_ALL.as_bytes(), "scans").expect("policy");
        let public = canned("public-read", "alice").expect("canned");
        let denied = Rules { policy: Some(&deny), bucket_acl: &public, object_acl: Some(&public), ..rules };
        assert_eq!(run(&Caller::Anonymous, "GetObject", Some("k"), &denied), Decision::Deny);
    }
}
