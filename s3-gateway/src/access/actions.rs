//! The IAM action of each S3 operation, as bucket policies name it, and
//! the ACL permission that may grant it (S3's "mapping of ACL permissions
//! and access policy permissions").

use super::acl::Permission;

/// Whose ACL may grant an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclScope {
    Bucket,
    Object,
}

/// What a policy statement and an ACL see of an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Action {
    /// `s3:GetObject` and the like.
    pub name: &'static str,
    pub acl: Option<(AclScope, Permission)>,
}

impl Action {
    /// Reading or changing the bucket's policy: its owner keeps these even
    /// when the policy denies it everything.
    pub fn manages_policy(&self) -> bool {
        matches!(
            self.name,
            "s3:GetBucketPolicy" | "s3:PutBucketPolicy" | "s3:DeleteBucketPolicy" | "s3:GetBucketPolicyStatus"
        )
    }
}

/// The action of operation `op` (s3s's name for it); `versioned` when the
/// request names a version (`s3:GetObjectVersion`, `s3:DeleteObjectVersion`).
pub fn action(op: &str, versioned: bool) -> Action {
    use AclScope::{Bucket, Object};
    use Permission::{Read, ReadAcp, Write, WriteAcp};
    let (name, acl) = match op {
        "GetObject" | "HeadObject" if versioned => ("s3:GetObjectVersion", Some((Object, Read))),
        "GetObject" | "HeadObject" => ("s3:GetObject", Some((Object, Read))),
        "GetObjectAcl" if versioned => ("s3:GetObjectVersionAcl", Some((Object, ReadAcp))),
        "GetObjectAcl" => ("s3:GetObjectAcl", Some((Object, ReadAcp))),
        "PutObjectAcl" if versioned => ("s3:PutObjectVersionAcl", Some((Object, WriteAcp))),
        "PutObjectAcl" => ("s3:PutObjectAcl", Some((Object, WriteAcp))),
        "GetObjectAttributes" => ("s3:GetObjectAttributes", Some((Object, Read))),
        "PutObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload"
        | "PostObject" => ("s3:PutObject", Some((Bucket, Write))),
        "AbortMultipartUpload" => ("s3:AbortMultipartUpload", Some((Bucket, Write))),
        "DeleteObject" if versioned => ("s3:DeleteObjectVersion", Some((Bucket, Write))),
        "DeleteObject" | "DeleteObjects" => ("s3:DeleteObject", Some((Bucket, Write))),
        "ListParts" => ("s3:ListMultipartUploadParts", Some((Bucket, Read))),
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => ("s3:ListBucket", Some((Bucket, Read))),
        "ListObjectVersions" => ("s3:ListBucketVersions", Some((Bucket, Read))),
        "ListMultipartUploads" => ("s3:ListBucketMultipartUploads", Some((Bucket, Read))),
        "GetBucketAcl" => ("s3:GetBucketAcl", Some((Bucket, ReadAcp))),
        "PutBucketAcl" => ("s3:PutBucketAcl", Some((Bucket, WriteAcp))),
        other => (owner_action(other), None),
    };
    Action { name, acl }
}

/// The actions only the owner, an administrator or a policy may grant.
fn owner_action(op: &str) -> &'static str {
    match op {
        "GetObjectTagging" => "s3:GetObjectTagging",
        "PutObjectTagging" => "s3:PutObjectTagging",
        "DeleteObjectTagging" => "s3:DeleteObjectTagging",
        "GetObjectRetention" => "s3:GetObjectRetention",
        "PutObjectRetention" => "s3:PutObjectRetention",
        "GetObjectLegalHold" => "s3:GetObjectLegalHold",
        "PutObjectLegalHold" => "s3:PutObjectLegalHold",
        "DeleteBucket" => "s3:DeleteBucket",
        "GetBucketLocation" => "s3:GetBucketLocation",
        "GetBucketVersioning" => "s3:GetBucketVersioning",
        "PutBucketVersioning" => "s3:PutBucketVersioning",
        // Not an operation: what a delete or a retention change sent with
        // `x-amz-bypass-governance-retention` also needs.
        "BypassGovernanceRetention" => "s3:BypassGovernanceRetention",
        "GetBucketPolicy" => "s3:GetBucketPolicy",
        "PutBucketPolicy" => "s3:PutBucketPolicy",
        "DeleteBucketPolicy" => "s3:DeleteBucketPolicy",
        "GetBucketPolicyStatus" => "s3:GetBucketPolicyStatus",
        "GetBucketTagging" => "s3:GetBucketTagging",
        "PutBucketTagging" | "DeleteBucketTagging" => "s3:PutBucketTagging",
        "GetBucketEncryption" => "s3:GetEncryptionConfiguration",
        "PutBucketEncryption" | "DeleteBucketEncryption" => "s3:PutEncryptionConfiguration",
        "GetBucketCors" => "s3:GetBucketCORS",
        "PutBucketCors" | "DeleteBucketCors" => "s3:PutBucketCORS",
        "GetBucketLifecycleConfiguration" => "s3:GetLifecycleConfiguration",
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => "s3:PutLifecycleConfiguration",
        "GetObjectLockConfiguration" => "s3:GetBucketObjectLockConfiguration",
        "PutObjectLockConfiguration" => "s3:PutBucketObjectLockConfiguration",
        "ListBuckets" => "s3:ListAllMyBuckets",
        "CreateBucket" => "s3:CreateBucket",
        // Operations the gateway does not implement answer 501 after this;
        // they are the owner's to be refused.
        _ => "s3:Unsupported",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_of_objects_are_granted_by_the_object_acl_and_writes_by_the_bucket_acl() {
        assert_eq!(action("GetObject", false).acl, Some((AclScope::Object, Permission::Read)));
        assert_eq!(action("HeadObject", true).name, "s3:GetObjectVersion");
        assert_eq!(
            action("UploadPart", false),
            Action { name: "s3:PutObject", acl: Some((AclScope::Bucket, Permission::Write)) }
        );
        assert_eq!(action("DeleteObject", true).name, "s3:DeleteObjectVersion");
        assert_eq!(action("ListObjectsV2", false).acl, Some((AclScope::Bucket, Permission::Read)));
        assert_eq!(action("DeleteBucket", false).acl, None);
        assert_eq!(action("DeleteBucketCors", false).name, "s3:PutBucketCORS");
        assert!(action("PutBucketPolicy", false).manages_policy());
        assert!(!action("PutBucketAcl", false).manages_policy());
    }
}
