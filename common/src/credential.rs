//! Who a process is on the cluster's internal RPC, and what proves it.
//!
//! Every connection opens with a handshake (`rpc/handshake.rs`) in which
//! the client names a [`Principal`] (a role and a name: `frontend nbd-a`,
//! `node 3`) and proves it with that principal's key; the server derives
//! the same key from what it holds and, once the proof checks, serves the
//! connection as that principal. The services then refuse calls outside
//! the principal's role (`metadata/src/access.rs`,
//! `storage-node/src/access.rs`).
//!
//! Each door (the metadata service, the storage nodes) has its own keys,
//! all HMAC-SHA256 outputs:
//!
//! ```text
//! meta door: key(p) = HMAC(cluster secret, "chuyi-role-v1 meta " || role || " " || name)
//! node door: root   = HMAC(cluster secret, "chuyi-role-v1 node door")
//!            key(p) = HMAC(root,           "chuyi-role-v1 node " || role || " " || name)
//! ```
//!
//! What each process holds:
//! - the cluster secret (metadata members, the administrator's CLI):
//!   every key;
//! - a node's credential: its own meta-door key, and the node door's
//!   root, because a node checks everyone who calls it. It can therefore
//!   pose as anyone *to another node*, which a node (holding replicas of
//!   everything) could harm anyway; never to the metadata service;
//! - a frontend's credential (S3 gateways, NBD frontends: the processes
//!   that face users): its own key at each door and the key that opens S3
//!   users' sealed secrets. It can verify nobody, so a leaked one lets its
//!   holder act as that one frontend: no node marked down, no volume key
//!   destroyed, no other frontend's lease written.
//!
//! Credentials are issued by `chuyi credential issue` (and `chuyi up`) as
//! text files, format in [`Credential::to_text`].

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::seal::{SealKey, SEAL_KEY_BYTES, USER_SECRET_PURPOSE};
use crate::secret::{hex, ClusterSecret, SecretError};

/// The longest principal name the handshake carries.
pub const NAME_MAX_BYTES: usize = 64;

/// The first line of a credential file.
const FILE_MAGIC: &str = "chuyi-credential-v1";

const KEY_BYTES: usize = 32;

/// What a principal is for; services decide per role what it may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// A metadata service member (Raft traffic).
    Member,
    /// The administrator's CLI: everything but Raft traffic.
    Admin,
    /// A storage node.
    Node,
    /// An S3 gateway or NBD frontend.
    Frontend,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Member, Role::Admin, Role::Node, Role::Frontend];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Node => "node",
            Role::Frontend => "frontend",
        }
    }

    /// The role's byte in the handshake.
    pub fn wire(self) -> u8 {
        match self {
            Role::Member => 1,
            Role::Admin => 2,
            Role::Node => 3,
            Role::Frontend => 4,
        }
    }

    pub fn from_wire(byte: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.wire() == byte)
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role and a name: who a connection's client is.
///
/// Names: a member's or node's id in decimal, a frontend's name (its lease
/// holder names start with it), `admin` for the CLI. 1 to
/// [`NAME_MAX_BYTES`] bytes of ASCII letters, digits and `-_.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Principal {
    pub role: Role,
    pub name: String,
}

impl Principal {
    pub fn new(role: Role, name: impl Into<String>) -> Result<Self, CredentialError> {
        let name = name.into();
        let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        if name.is_empty() || name.len() > NAME_MAX_BYTES || !name.chars().all(allowed) {
            return Err(CredentialError::BadName(name));
        }
        Ok(Self { role, name })
    }

    pub fn member(id: u64) -> Self {
        Self { role: Role::Member, name: id.to_string() }
    }

    pub fn node(id: impl fmt::Display) -> Self {
        Self { role: Role::Node, name: id.to_string() }
    }

    pub fn admin() -> Self {
        Self { role: Role::Admin, name: "admin".into() }
    }

    /// Whether a lease holder name belongs to this principal: the name
    /// itself, or the name followed by `:` and anything (one credential per
    /// host, one holder per process on it). Names hold no `:`, so no
    /// frontend's holders are another's.
    pub fn owns_holder(&self, holder: &str) -> bool {
        holder.strip_prefix(self.name.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.role, self.name)
    }
}

/// The two services a connection can open: each has its own keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Meta,
    Node,
}

impl Door {
    fn label(self) -> &'static str {
        match self {
            Door::Meta => "meta",
            Door::Node => "node",
        }
    }
}

/// One principal's key at one door.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleKey([u8; KEY_BYTES]);

impl RoleKey {
    pub fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl fmt::Debug for RoleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RoleKey(<redacted>)")
    }
}

/// A client's side of the handshake at one door: who it says it is and the
/// key that proves it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub principal: Principal,
    key: RoleKey,
}

impl Identity {
    pub fn key(&self) -> &RoleKey {
        &self.key
    }
}

/// A server's side: derives the key of any principal that calls at its
/// door.
#[derive(Clone)]
pub struct Keyring {
    door: Door,
    /// The HMAC key the door's principal keys derive from: the cluster
    /// secret at the meta door, the node root at the node door.
    root: Vec<u8>,
}

impl Keyring {
    pub fn key(&self, principal: &Principal) -> RoleKey {
        principal_key(&self.root, self.door, principal)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keyring({:?}, <redacted>)", self.door)
    }
}

/// Why a credential could not be had or used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("cannot read the credential {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("malformed credential: {0}")]
    Malformed(String),
    #[error("invalid principal name {0:?}: 1 to 64 ASCII letters, digits or -_.")]
    BadName(String),
    #[error("the credential is for {have}; this needs the {want} role (the cluster secret for admin)")]
    WrongRole { have: Principal, want: Role },
    #[error("{0} credentials are not issued: a {0} holds the cluster secret")]
    NotIssued(Role),
    #[error("the credential of {principal} cannot check callers at the {door:?} door: that needs the cluster secret")]
    CannotServe { principal: Principal, door: Door },
}

/// What a process holds to prove who it is, and, for members and nodes,
/// to check who calls it.
#[derive(Clone)]
pub struct Credential {
    principal: Principal,
    holds: Holds,
}

#[derive(Clone)]
enum Holds {
    Secret(ClusterSecret),
    Node { meta: RoleKey, node_root: RoleKey },
    Frontend { meta: RoleKey, node: RoleKey, user_seal: SealKey },
}

impl Credential {
    /// The whole cluster secret, acting as `principal`.
    pub fn from_secret(secret: ClusterSecret, principal: Principal) -> Self {
        Self { principal, holds: Holds::Secret(secret) }
    }

    /// A node's or frontend's own credential, derived from the secret.
    pub fn issue(secret: &ClusterSecret, principal: Principal) -> Result<Self, CredentialError> {
        let meta = principal_key(secret.as_bytes(), Door::Meta, &principal);
        let node_root = node_root(secret);
        let holds = match principal.role {
            Role::Node => Holds::Node { meta, node_root },
            Role::Frontend => Holds::Frontend {
                meta,
                node: principal_key(node_root.as_bytes(), Door::Node, &principal),
                user_seal: SealKey::derive(secret, USER_SECRET_PURPOSE),
            },
            role @ (Role::Member | Role::Admin) => return Err(CredentialError::NotIssued(role)),
        };
        Ok(Self { principal, holds })
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The cluster secret, when this credential is it.
    pub fn cluster_secret(&self) -> Option<&ClusterSecret> {
        match &self.holds {
            Holds::Secret(secret) => Some(secret),
            Holds::Node { .. } | Holds::Frontend { .. } => None,
        }
    }

    /// Who this process is at `door`.
    pub fn identity(&self, door: Door) -> Identity {
        let key = match (&self.holds, door) {
            (Holds::Secret(secret), Door::Meta) => principal_key(secret.as_bytes(), door, &self.principal),
            (Holds::Secret(secret), Door::Node) => principal_key(node_root(secret).as_bytes(), door, &self.principal),
            (Holds::Node { meta, .. } | Holds::Frontend { meta, .. }, Door::Meta) => meta.clone(),
            (Holds::Node { node_root, .. }, Door::Node) => principal_key(node_root.as_bytes(), door, &self.principal),
            (Holds::Frontend { node, .. }, Door::Node) => node.clone(),
        };
        Identity { principal: self.principal.clone(), key }
    }

    /// What a server at `door` checks its callers with.
    pub fn keyring(&self, door: Door) -> Result<Keyring, CredentialError> {
        let root = match (&self.holds, door) {
            (Holds::Secret(secret), Door::Meta) => secret.as_bytes().to_vec(),
            (Holds::Secret(secret), Door::Node) => node_root(secret).as_bytes().to_vec(),
            (Holds::Node { node_root, .. }, Door::Node) => node_root.as_bytes().to_vec(),
            (Holds::Node { .. }, Door::Meta) | (Holds::Frontend { .. }, _) => {
                return Err(CredentialError::CannotServe { principal: self.principal.clone(), door })
            }
        };
        Ok(Keyring { door, root })
    }

    /// The key that opens S3 users' sealed secret keys; nodes have none.
    pub fn user_seal(&self) -> Option<SealKey> {
        match &self.holds {
            Holds::Secret(secret) => Some(SealKey::derive(secret, USER_SECRET_PURPOSE)),
            Holds::Frontend { user_seal, .. } => Some(user_seal.clone()),
            Holds::Node { .. } => None,
        }
    }

    /// The credential file's text; none for the cluster secret itself,
    /// which is written as it is.
    ///
    /// ```text
    /// chuyi-credential-v1
    /// principal ROLE NAME
    /// meta-key HEX          (32 bytes: the principal's meta-door key)
    /// node-root HEX         (32 bytes; nodes)
    /// node-key HEX          (32 bytes: the principal's node-door key; frontends)
    /// user-seal HEX         (48 bytes: SM4 key, MAC key; frontends)
    /// ```
    pub fn to_text(&self) -> Option<String> {
        let mut lines =
            vec![FILE_MAGIC.to_string(), format!("principal {} {}", self.principal.role, self.principal.name)];
        match &self.holds {
            Holds::Secret(_) => return None,
            Holds::Node { meta, node_root } => {
                lines.push(format!("meta-key {}", hex(meta.as_bytes())));
                lines.push(format!("node-root {}", hex(node_root.as_bytes())));
            }
            Holds::Frontend { meta, node, user_seal } => {
                lines.push(format!("meta-key {}", hex(meta.as_bytes())));
                lines.push(format!("node-key {}", hex(node.as_bytes())));
                lines.push(format!("user-seal {}", hex(&user_seal.to_bytes())));
            }
        }
        lines.push(String::new());
        Some(lines.join("\n"))
    }

    /// Reads what [`Self::to_text`] wrote.
    pub fn from_text(text: &str) -> Result<Self, CredentialError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(FILE_MAGIC) {
            return Err(CredentialError::Malformed(format!("the first line is not {FILE_MAGIC}")));
        }
        let mut fields = std::collections::BTreeMap::new();
        for line in lines {
            let (field, value) = line
                .split_once(' ')
                .ok_or_else(|| CredentialError::Malformed(format!("line {line:?} has no value")))?;
            if fields.insert(field, value).is_some() {
                return Err(CredentialError::Malformed(format!("{field} is given twice")));
            }
        }
        let field =
            |name: &str| fields.get(name).copied().ok_or_else(|| CredentialError::Malformed(format!("no {name} line")));
        let (role, name) = field("principal")?
            .split_once(' ')
            .ok_or_else(|| CredentialError::Malformed("principal needs a role and a name".into()))?;
        let role = Role::parse(role).ok_or_else(|| CredentialError::Malformed(format!("unknown role {role:?}")))?;
        let principal = Principal::new(role, name)?;
        let key = |name: &str| Ok::<_, CredentialError>(RoleKey(unhex::<KEY_BYTES>(name, field(name)?)?));
        let holds = match role {
            Role::Node => Holds::Node { meta: key("meta-key")?, node_root: key("node-root")? },
            Role::Frontend => Holds::Frontend {
                meta: key("meta-key")?,
                node: key("node-key")?,
                user_seal: SealKey::from_bytes(&unhex::<SEAL_KEY_BYTES>("user-seal", field("user-seal")?)?),
            },
            role @ (Role::Member | Role::Admin) => return Err(CredentialError::NotIssued(role)),
        };
        Ok(Self { principal, holds })
    }

    /// A credential from a file (else the cluster secret from
    /// [`crate::secret::SECRET_ENV`]): an issued one,
    /// whose role must be `default.role`, or the cluster secret itself,
    /// acting as `default`.
    pub fn load(file: Option<&Path>, default: Principal) -> Result<Self, CredentialError> {
        let text = match file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| CredentialError::Read { path: path.display().to_string(), source })?,
            None => return Ok(Self::from_secret(ClusterSecret::load(None)?, default)),
        };
        Self::from_file_text(&text, default)
    }

    /// The text of a credential file or of a cluster secret file.
    pub fn from_file_text(text: &str, default: Principal) -> Result<Self, CredentialError> {
        if !text.trim_start().starts_with(FILE_MAGIC) {
            return Ok(Self::from_secret(ClusterSecret::new(text.trim_ascii().as_bytes().to_vec())?, default));
        }
        let credential = Self::from_text(text)?;
        if credential.principal.role != default.role {
            return Err(CredentialError::WrongRole { have: credential.principal, want: default.role });
        }
        Ok(credential)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let holds = match self.holds {
            Holds::Secret(_) => "cluster secret",
            Holds::Node { .. } => "node credential",
            Holds::Frontend { .. } => "frontend credential",
        };
        write!(f, "Credential({}, {holds})", self.principal)
    }
}

fn node_root(secret: &ClusterSecret) -> RoleKey {
    RoleKey(hmac(secret.as_bytes(), &[b"chuyi-role-v1 node door"]))
}

fn principal_key(root: &[u8], door: Door, p: &Principal) -> RoleKey {
    RoleKey(hmac(
        root,
        &[b"chuyi-role-v1 ", door.label().as_bytes(), b" ", p.role.as_str().as_bytes(), b" ", p.name.as_bytes()],
    ))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; KEY_BYTES] {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn unhex<const N: usize>(field: &str, text: &str) -> Result<[u8; N], CredentialError> {
    let bad = || CredentialError::Malformed(format!("{field} is not {N} bytes of hex"));
    if text.len() != 2 * N {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> ClusterSecret {
        ClusterSecret::new(b"0123456789abcdef-test-cluster-secret".to_vec()).expect("secret")
    }

    fn frontend(name: &str) -> Principal {
        Principal::new(Role::Frontend, name).expect("name")
    }

    #[test]
    fn issued_keys_match_what_the_secret_derives() {
        let full = Credential::from_secret(secret(), Principal::admin());
        for principal in [frontend("s3-a"), Principal::node(3)] {
            let issued = Credential::issue(&secret(), principal.clone()).expect("issue");
            for door in [Door::Meta, Door::Node] {
                let keyring = full.keyring(door).expect("the secret serves every door");
                assert_eq!(issued.identity(door).key(), &keyring.key(&principal), "{principal} at {door:?}");
            }
        }
    }

    #[test]
    fn a_node_checks_frontends_at_its_door_only() {
        let node = Credential::issue(&secret(), Principal::node(1)).expect("issue");
        let fe = Credential::issue(&secret(), frontend("fe")).expect("issue");
        let ring = node.keyring(Door::Node).expect("a node serves the node door");
        assert_eq!(&ring.key(&fe.principal), fe.identity(Door::Node).key());
        assert!(matches!(node.keyring(Door::Meta), Err(CredentialError::CannotServe { .. })));
        assert!(matches!(fe.keyring(Door::Node), Err(CredentialError::CannotServe { .. })));
    }

    #[test]
    fn keys_differ_by_door_role_and_name() {
        let ring = Credential::from_secret(secret(), Principal::admin()).keyring(Door::Meta).expect("ring");
        let keys = [
            ring.key(&frontend("a")),
            ring.key(&frontend("b")),
            ring.key(&Principal::admin()),
            ring.key(&Principal::new(Role::Node, "a").expect("name")),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let node_ring = Credential::from_secret(secret(), Principal::admin()).keyring(Door::Node).expect("ring");
        assert_ne!(node_ring.key(&frontend("a")), keys[0]);
    }

    #[test]
    fn text_round_trips() {
        for principal in [frontend("nbd-host1"), Principal::node(7)] {
            let issued = Credential::issue(&secret(), principal.clone()).expect("issue");
            let text = issued.to_text().expect("issued credentials have text");
            let read = Credential::from_file_text(&text, Principal { name: "other".into(), ..principal.clone() })
                .expect("read");
            assert_eq!(read.principal(), &principal, "the file's name wins over the default");
            for door in [Door::Meta, Door::Node] {
                assert_eq!(read.identity(door).key(), issued.identity(door).key());
            }
            assert_eq!(read.user_seal().map(|k| k.to_bytes()), issued.user_seal().map(|k| k.to_bytes()));
        }
    }

    #[test]
    fn a_secret_file_acts_as_the_default() {
        let c = Credential::from_file_text("0123456789abcdef-test-cluster-secret\n", Principal::node(2)).expect("c");
        assert_eq!(c.principal(), &Principal::node(2));
        assert!(c.cluster_secret().is_some());
        assert!(c.to_text().is_none());
    }

    #[test]
    fn wrong_role_and_bad_text_are_refused() {
        let node = Credential::issue(&secret(), Principal::node(1)).expect("issue").to_text().expect("text");
        assert!(matches!(
            Credential::from_file_text(&node, frontend("x")),
            Err(CredentialError::WrongRole { want: Role::Frontend, .. })
        ));
        let cases = [
            "chuyi-credential-v1\n".to_string(),
            "chuyi-credential-v1\nprincipal node\n".to_string(),
            "chuyi-credential-v1\nprincipal wizard 1\n".to_string(),
            "chuyi-credential-v1\nprincipal admin x\n".to_string(),
            node.replace("meta-key ", "meta-key 00"),
            node.replace("node-root ", "node-root zz"),
            format!("{node}meta-key 00\n"),
        ];
        for text in cases {
            assert!(Credential::from_text(&text).is_err(), "{text:?}");
        }
        assert!(matches!(Credential::issue(&secret(), Principal::admin()), Err(CredentialError::NotIssued(_))));
    }

    #[test]
    fn names_are_checked() {
        assert!(Principal::new(Role::Frontend, "").is_err());
        assert!(Principal::new(Role::Frontend, "a b").is_err());
        assert!(Principal::new(Role::Frontend, "x".repeat(65)).is_err());
        assert!(Principal::new(Role::Frontend, "nbd-h1.example_2").is_ok());
        assert!(Principal::new(Role::Frontend, "nbd-h1:42").is_err(), "the holder separator");
    }

    #[test]
    fn holders_belong_to_their_frontend() {
        let p = frontend("nbd-h1");
        assert!(p.owns_holder("nbd-h1"));
        assert!(p.owns_holder("nbd-h1:4242"));
        assert!(!p.owns_holder("nbd-h10"));
        assert!(!p.owns_holder("nbd-h"));
        assert!(!p.owns_holder("other:nbd-h1"));
    }

    #[test]
    fn debug_redacts() {
        let c = Credential::issue(&secret(), frontend("fe")).expect("issue");
        let shown = format!("{c:?} {:?} {:?}", c.identity(Door::Meta), c.keyring(Door::Meta).err());
        let meta_hex = hex(c.identity(Door::Meta).key().as_bytes());
        assert!(!shown.contains(&meta_hex[..16]), "{shown}");
    }
}
