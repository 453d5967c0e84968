//! Access control lists: S3's canned ACLs and grants, on buckets (kept as
//! the bucket's `acl` document) and on object versions (kept in the
//! version's headers under [`ACL_HEADER`]), as JSON of [`Acl`].
//!
//! The bucket's owner owns every object in it (S3's "bucket owner
//! preferred" object ownership) and holds FULL_CONTROL on all of them
//! whatever the ACLs say; an ACL grants to others. A grantee is a user,
//! kept by its canonical user ID (what S3 reports and clients send back
//! when they edit an ACL; a request may also name a user by its name), or
//! one of S3's two groups: all users (anonymous callers included) and
//! authenticated users.
//! Grants by e-mail address are refused, as in every region since 2025.

use s3s::dto;
use serde::{Deserialize, Serialize};

use super::Caller;
use crate::auth::canonical_id;
use crate::buckets::JsonDocument;

/// The header a version's ACL is kept under in its `ObjectPut::headers`;
/// never returned as a header itself.
pub const ACL_HEADER: &str = "x-chuyi-acl";

const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
/// More grants than this in one ACL are refused (S3's limit is 100).
pub const GRANTS_MAX: usize = 100;

/// Why an ACL was refused; each is one S3 error code.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error("canned ACL {0:?} is not supported")]
    UnknownCanned(String),
    #[error("grants by e-mail address are not supported")]
    ByEmail,
    #[error("the grant {0:?} is malformed")]
    Malformed(String),
    #[error("an ACL may not be given both as a canned ACL and as grants")]
    Both,
    #[error("more than {GRANTS_MAX} grants")]
    TooMany,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grantee {
    /// By canonical user ID.
    User(String),
    AllUsers,
    AuthenticatedUsers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Permission {
    Read,
    Write,
    ReadAcp,
    WriteAcp,
    FullControl,
}

impl Permission {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "READ" => Permission::Read,
            "WRITE" => Permission::Write,
            "READ_ACP" => Permission::ReadAcp,
            "WRITE_ACP" => Permission::WriteAcp,
            "FULL_CONTROL" => Permission::FullControl,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Write => "WRITE",
            Permission::ReadAcp => "READ_ACP",
            Permission::WriteAcp => "WRITE_ACP",
            Permission::FullControl => "FULL_CONTROL",
        }
    }

    /// Whether holding `self` gives `wanted`.
    fn gives(self, wanted: Permission) -> bool {
        self == wanted || self == Permission::FullControl
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: Permission,
}

/// The grants of a bucket or a version besides its owner's full control.
/// The default, empty, is the canned `private`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    pub grants: Vec<Grant>,
}

impl JsonDocument for Acl {}

/// An ACL as a request may give it: a canned name, or `x-amz-grant-*`
/// headers, or (PutBucketAcl, PutObjectAcl) an XML document.
#[derive(Debug, Default)]
pub struct Given<'a> {
    pub canned: Option<&'a str>,
    pub read: Option<&'a str>,
    pub write: Option<&'a str>,
    pub read_acp: Option<&'a str>,
    pub write_acp: Option<&'a str>,
    pub full_control: Option<&'a str>,
    pub document: Option<&'a dto::AccessControlPolicy>,
}

impl Given<'_> {
    fn headers(&self) -> [(Option<&str>, Permission); 5] {
        [
            (self.read, Permission::Read),
            (self.write, Permission::Write),
            (self.read_acp, Permission::ReadAcp),
            (self.write_acp, Permission::WriteAcp),
            (self.full_control, Permission::FullControl),
        ]
    }

    /// Whether the request gives an ACL at all.
    pub fn any(&self) -> bool {
        self.canned.is_some() || self.document.is_some() || self.headers().iter().any(|(h, _)| h.is_some())
    }

    /// The ACL given; `None` when none is. `bucket_owner` is whom the
    /// `bucket-owner-*` canned ACLs name.
    pub fn acl(&self, bucket_owner: &str) -> Result<Option<Acl>, AclError> {
        let from_headers = self.headers().iter().any(|(h, _)| h.is_some());
        let forms =
            usize::from(self.canned.is_some()) + usize::from(from_headers) + usize::from(self.document.is_some());
        if forms > 1 {
            return Err(AclError::Both);
        }
        let acl = if let Some(name) = self.canned {
            canned(name, bucket_owner)?
        } else if let Some(document) = self.document {
            from_document(document)?
        } else if from_headers {
            let mut grants = Vec::new();
            for (header, permission) in self.headers() {
                for grantee in header.map(grantees).transpose()?.unwrap_or_default() {
                    grants.push(Grant { grantee, permission });
                }
            }
            Acl { grants }
        } else {
            return Ok(None);
        };
        if acl.grants.len() > GRANTS_MAX {
            return Err(AclError::TooMany);
        }
        // The owner's full control is implicit: a document sent back as
        // read keeps it, and it is not stored twice.
        let owner = Grant { grantee: Grantee::User(canonical_id(bucket_owner)), permission: Permission::FullControl };
        let mut acl = acl;
        acl.grants.retain(|g| *g != owner);
        Ok(Some(acl))
    }
}

/// The ACL a request's `x-amz-acl` and `x-amz-grant-*` headers give (every
/// input that takes them has these fields).
macro_rules! acl_given {
    ($input:expr) => {
        $crate::access::acl::Given {
            canned: $input.acl.as_ref().map(|a| a.as_str()),
            read: $input.grant_read.as_deref(),
            write: None,
            read_acp: $input.grant_read_acp.as_deref(),
            write_acp: $input.grant_write_acp.as_deref(),
            full_control: $input.grant_full_control.as_deref(),
            document: None,
        }
    };
}
pub(crate) use acl_given;

/// An ACL error as S3 answers it.
pub fn s3_error(e: AclError) -> s3s::S3Error {
    match e {
        AclError::UnknownCanned(_) => s3s::s3_error!(InvalidArgument, "{e}"),
        AclError::ByEmail => s3s::s3_error!(UnresolvableGrantByEmailAddress, "{e}"),
        AclError::Malformed(_) | AclError::TooMany => s3s::s3_error!(MalformedACLError, "{e}"),
        AclError::Both => {
            s3s::s3_error!(InvalidRequest, "Specifying both Canned ACLs and Header Grants is not allowed")
        }
    }
}

/// The grants of canned ACL `name`.
pub fn canned(name: &str, bucket_owner: &str) -> Result<Acl, AclError> {
    let grant = |grantee, permission| Grant { grantee, permission };
    let grants = match name {
        "private" => vec![],
        "public-read" => vec![grant(Grantee::AllUsers, Permission::Read)],
        "public-read-write" => {
            vec![grant(Grantee::AllUsers, Permission::Read), grant(Grantee::AllUsers, Permission::Write)]
        }
        "authenticated-read" => vec![grant(Grantee::AuthenticatedUsers, Permission::Read)],
        "bucket-owner-read" => vec![grant(Grantee::User(canonical_id(bucket_owner)), Permission::Read)],
        "bucket-owner-full-control" => vec![grant(Grantee::User(canonical_id(bucket_owner)), Permission::FullControl)],
        other => return Err(AclError::UnknownCanned(other.into())),
    };
    Ok(Acl { grants })
}

/// The grantees of one `x-amz-grant-*` header: `id="name", uri="..."`.
fn grantees(header: &str) -> Result<Vec<Grantee>, AclError> {
    header
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            let malformed = || AclError::Malformed(part.to_string());
            let (kind, value) = part.split_once('=').ok_or_else(malformed)?;
            let value = value.trim().trim_matches('"');
            match kind.trim().to_ascii_lowercase().as_str() {
                "id" if !value.is_empty() => Ok(Grantee::User(user_id(value))),
                "uri" => group(value).ok_or_else(malformed),
                "emailaddress" => Err(AclError::ByEmail),
                _ => Err(malformed()),
            }
        })
        .collect()
}

/// A user grantee's canonical ID: as given when it is one (64 hex
/// digits), else the ID of the user of that name.
fn user_id(id_or_name: &str) -> String {
    if id_or_name.len() == 64 && id_or_name.bytes().all(|b| b.is_ascii_hexdigit()) {
        id_or_name.to_ascii_lowercase()
    } else {
        canonical_id(id_or_name)
    }
}

fn group(uri: &str) -> Option<Grantee> {
    match uri {
        ALL_USERS => Some(Grantee::AllUsers),
        AUTHENTICATED_USERS => Some(Grantee::AuthenticatedUsers),
        _ => None,
    }
}

fn from_document(document: &dto::AccessControlPolicy) -> Result<Acl, AclError> {
    let mut grants = Vec::new();
    for grant in document.grants.iter().flatten() {
        let (Some(grantee), Some(permission)) = (&grant.grantee, &grant.permission) else {
            return Err(AclError::Malformed("a grant without a grantee or a permission".into()));
        };
        let permission =
            Permission::parse(permission.as_str()).ok_or_else(|| AclError::Malformed(permission.as_str().into()))?;
        let grantee = match grantee.type_.as_str() {
            dto::Type::CANONICAL_USER => match &grantee.id {
                Some(id) if !id.is_empty() => Grantee::User(user_id(id)),
                _ => return Err(AclError::Malformed("a CanonicalUser grantee without an ID".into())),
            },
            dto::Type::GROUP => grantee
                .uri
                .as_deref()
                .and_then(group)
                .ok_or_else(|| AclError::Malformed(format!("group {:?}", grantee.uri)))?,
            dto::Type::AMAZON_CUSTOMER_BY_EMAIL => return Err(AclError::ByEmail),
            other => return Err(AclError::Malformed(format!("grantee type {other:?}"))),
        };
        grants.push(Grant { grantee, permission });
    }
    Ok(Acl { grants })
}

impl Acl {
    /// Whether the ACL gives `caller` the permission `wanted`.
    pub fn allows(&self, caller: &Caller, wanted: Permission) -> bool {
        self.grants.iter().any(|g| {
            g.permission.gives(wanted)
                && match (&g.grantee, caller) {
                    (Grantee::AllUsers, _) => true,
                    (Grantee::AuthenticatedUsers, Caller::User { .. }) => true,
                    (Grantee::User(grantee), Caller::User { name, .. }) => *grantee == canonical_id(name),
                    (Grantee::AuthenticatedUsers | Grantee::User(_), Caller::Anonymous) => false,
                }
        })
    }

    /// The ACL as S3 returns it: the owner's full control, then the grants.
    pub fn to_document(&self, owner: &str) -> (dto::Owner, dto::Grants) {
        let owner_id = canonical_id(owner);
        let user = |id: &str| dto::Grantee {
            display_name: (id == owner_id).then(|| owner.to_string()),
            email_address: None,
            id: Some(id.to_string()),
            type_: dto::Type::from_static(dto::Type::CANONICAL_USER),
            uri: None,
        };
        let group = |uri: &str| dto::Grantee {
            display_name: None,
            email_address: None,
            id: None,
            type_: dto::Type::from_static(dto::Type::GROUP),
            uri: Some(uri.to_string()),
        };
        let owner_grant = Grant { grantee: Grantee::User(owner_id.clone()), permission: Permission::FullControl };
        let grants = std::iter::once(&owner_grant)
            .chain(&self.grants)
            .map(|g| dto::Grant {
                grantee: Some(match &g.grantee {
                    Grantee::User(id) => user(id),
                    Grantee::AllUsers => group(ALL_USERS),
                    Grantee::AuthenticatedUsers => group(AUTHENTICATED_USERS),
                }),
                permission: Some(dto::Permission::from(g.permission.name().to_string())),
            })
            .collect();
        (crate::buckets::owner(owner), grants)
    }
}

/// The ACL kept in a version's headers; none is `private`.
pub fn of_object(headers: &[(String, String)]) -> Acl {
    headers.iter().find(|(n, _)| n == ACL_HEADER).and_then(|(_, v)| Acl::decode(v.as_bytes())).unwrap_or_default()
}

/// What a version keeps under [`ACL_HEADER`]: the JSON of `acl`, or
/// nothing (no header) for `private`.
pub fn header_value(acl: &Acl) -> String {
    if acl.grants.is_empty() {
        String::new()
    } else {
        String::from_utf8(acl.encode()).unwrap_or_default()
    }
}

/// Keeps `acl` in a version's headers (`private` is kept as no header).
pub fn set_on_object(headers: &mut Vec<(String, String)>, acl: &Acl) {
    headers.retain(|(n, _)| n != ACL_HEADER);
    let value = header_value(acl);
    if !value.is_empty() {
        headers.push((ACL_HEADER.into(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Caller {
        Caller::User { name: name.into(), admin: false }
    }

    #[test]
    fn canned_acls_grant_what_s3_grants() {
        let acl = |name| canned(name, "owner").expect(name);
        assert!(!acl("private").allows(&Caller::Anonymous, Permission::Read));
        assert!(!acl("private").allows(&user("bob"), Permission::Read));
        assert!(acl("public-read").allows(&Caller::Anonymous, Permission::Read));
        assert!(!acl("public-read").allows(&Caller::Anonymous, Permission::Write));
        assert!(acl("public-read-write").allows(&Caller::Anonymous, Permission::Write));
        assert!(acl("authenticated-read").allows(&user("bob"), Permission::Read));
        assert!(!acl("authenticated-read").allows(&Caller::Anonymous, Permission::Read));
        assert!(acl("bucket-owner-full-control").allows(&user("owner"), Permission::WriteAcp));
        assert!(!acl("bucket-owner-full-control").allows(&user("bob"), Permission::Read));
        assert_eq!(canned("log-delivery-write", "o"), Err(AclError::UnknownCanned("log-delivery-write".into())));
    }

    #[test]
    fn grant_headers_name_users_and_groups() {
        let given = Given {
            read: Some(r#"uri="http://acs.amazonaws.com/groups/global/AllUsers", id="carol""#),
            full_control: Some("id=bob"),
            ..Default::default()
        };
        let acl = given.acl("owner").expect("parse").expect("given");
        assert!(acl.allows(&Caller::Anonymous, Permission::Read));
        assert!(acl.allows(&user("bob"), Permission::WriteAcp));
        assert!(!acl.allows(&user("carol"), Permission::Write));
        // A client editing an ACL sends back the canonical ID it was shown.
        let header = format!("id={}", canonical_id("dave").to_uppercase());
        let by_id = Given { read: Some(&header), ..Default::default() };
        assert!(by_id.acl("o").expect("parse").expect("given").allows(&user("dave"), Permission::Read));
        let by_mail = Given { write: Some("emailAddress=a@b.c"), ..Default::default() };
        assert_eq!(by_mail.acl("o"), Err(AclError::ByEmail));
        let bad = Given { write: Some("uri=http://example.com/group"), ..Default::default() };
        assert!(matches!(bad.acl("o"), Err(AclError::Malformed(_))));
        let both = Given { canned: Some("private"), read: Some("id=bob"), ..Default::default() };
        assert_eq!(both.acl("o"), Err(AclError::Both));
        assert_eq!(Given::default().acl("o"), Ok(None));
    }

    #[test]
    fn a_document_round_trips_through_its_s3_form() {
        let acl = canned("public-read-write", "owner").expect("canned");
        let (owner, grants) = acl.to_document("owner");
        let document = dto::AccessControlPolicy { grants: Some(grants), owner: Some(owner) };
        let given = Given { document: Some(&document), ..Default::default() };
        // The owner's own full control, listed first, is not kept twice.
        assert_eq!(given.acl("owner"), Ok(Some(acl)));
    }

    #[test]
    fn an_object_keeps_its_acl_in_a_header_and_private_as_none() {
        let mut headers = vec![("cache-control".to_string(), "no-cache".to_string())];
        set_on_object(&mut headers, &canned("public-read", "o").expect("canned"));
        assert!(of_object(&headers).allows(&Caller::Anonymous, Permission::Read));
        set_on_object(&mut headers, &Acl::default());
        assert_eq!(headers.len(), 1);
        assert_eq!(of_object(&headers), Acl::default());
    }
}
