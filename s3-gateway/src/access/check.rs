//! The access check of every request, as s3s's access hook: it runs after
//! the signature is checked and before the operation, gathers what
//! [`super::decide`] needs (the caller, the bucket's owner, policy and
//! ACLs, the object's ACL when only that can allow it, the condition
//! keys), and either refuses the request with `AccessDenied` or leaves a
//! [`Granted`] in its extensions for the operation to start from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use chuyi_client::qos::Qos;
use chuyi_client::Cluster;
use chuyi_meta_api::ask;
use chuyi_meta_api::model::{Bucket, BucketConfigKind};
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{s3_error, S3Request, S3Result};

use super::acl::{self, Acl};
use super::actions::action;
use super::policy::{self, Policy, Question};
use super::{decide, Caller, Decision, Rules};
use crate::auth::Users;
use crate::buckets::JsonDocument;
use crate::documents::{DocumentError, Documents};
use crate::errors::meta_error;
use crate::qos::QosSlot;

/// Where a request came from, put in its extensions by the server.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Whether it came over TLS.
    pub secure: bool,
}

/// What a request asks of a bucket.
#[derive(Clone, Copy, Debug)]
struct Asked<'a> {
    caller: &'a Caller,
    /// s3s's name of the operation.
    op: &'a str,
    key: Option<&'a str>,
    version_id: Option<&'a str>,
    context: &'a HashMap<&'static str, String>,
}

/// What the check leaves for the operation: who asked, the bucket (none
/// for the operations on no bucket: ListBuckets, CreateBucket), and the
/// request's condition keys, for the decisions an operation makes on
/// further objects (a copy's source, each key of a DeleteObjects).
#[derive(Clone, Debug)]
pub struct Granted {
    pub caller: Caller,
    pub bucket: Option<Bucket>,
    context: HashMap<&'static str, String>,
}

/// The access hook, with the caches of the buckets' policies and ACLs.
#[derive(Debug)]
pub struct Access {
    users: Arc<Users>,
    cluster: Arc<Cluster>,
    pub(crate) policies: Documents<Policy>,
    pub(crate) acls: Documents<Acl>,
    qos: Arc<Qos>,
}

impl Access {
    pub fn new(users: Arc<Users>, cluster: Arc<Cluster>, qos: Arc<Qos>) -> Self {
        let policies = Documents::new(cluster.clone(), BucketConfigKind::Policy, |bucket, bytes| {
            Policy::parse(bytes, bucket).ok()
        });
        let acls = Documents::new(cluster.clone(), BucketConfigKind::Acl, |_, bytes| Acl::decode(bytes));
        Self { users, cluster, policies, acls, qos }
    }

    async fn caller(&self, cx: &S3AccessContext<'_>) -> S3Result<Caller> {
        match cx.credentials() {
            None => Ok(Caller::Anonymous),
            Some(c) => {
                let user = self.users.user(&c.access_key).await?;
                Ok(Caller::User { name: user.name, admin: user.admin })
            }
        }
    }

    /// Whether `asked` may be done in `bucket`.
    async fn decide_in(&self, bucket: &Bucket, asked: Asked<'_>) -> S3Result<()> {
        let Asked { caller, op, key, version_id, context } = asked;
        let policy = self.policies.of(&bucket.name).await.map_err(document_error)?;
        let bucket_acl = self.acls.of(&bucket.name).await.map_err(document_error)?.unwrap_or_default();
        let action = action(op, version_id.is_some());
        let resource = policy::resource(&bucket.name, key);
        let question = Question { caller, action: action.name, resource: &resource, context };
        let mut rules =
            Rules { owner: &bucket.owner, policy: policy.as_deref(), bucket_acl: &bucket_acl, object_acl: None };
        let mut decision = decide(&question, &action, &rules);
        let object_acl;
        if let (Decision::NeedsObjectAcl, Some(key)) = (decision, key) {
            object_acl = self.object_acl(&bucket.name, key, version_id).await?;
            rules.object_acl = Some(&object_acl);
            decision = decide(&question, &action, &rules);
        }
        match decision {
            Decision::Allow => Ok(()),
            Decision::Deny | Decision::NeedsObjectAcl => Err(s3_error!(AccessDenied, "Access Denied")),
        }
    }

    /// Bucket `name`, if `asked` may be done in it.
    async fn decide_on(&self, name: &str, asked: Asked<'_>) -> S3Result<Bucket> {
        let bucket = self.cluster.meta().ask(ask::Bucket(name.to_string())).await.map_err(meta_error)?;
        self.decide_in(&bucket, asked).await?;
        Ok(bucket)
    }

    /// Whether the request `granted` left may also do `op` on version
    /// `version_id` of `key` in `bucket`, decided as a request of its own
    /// would be: a copy's source (`GetObject`, in another bucket perhaps),
    /// each key of a DeleteObjects (`DeleteObject`).
    pub(crate) async fn also(
        &self,
        granted: &Granted,
        op: &str,
        bucket: &Bucket,
        key: &str,
        version_id: Option<&str>,
    ) -> S3Result<()> {
        let asked = Asked { caller: &granted.caller, op, key: Some(key), version_id, context: &granted.context };
        self.decide_in(bucket, asked).await
    }

    /// The ACL of the version a request reads; a missing object or a
    /// delete marker has none that grants anything (S3 answers 403 then,
    /// not 404, to a caller who may not list the bucket).
    async fn object_acl(&self, bucket: &str, key: &str, version_id: Option<&str>) -> S3Result<Acl> {
        let ask = ask::Object { bucket: bucket.into(), key: key.into(), version_id: version_id.map(Into::into) };
        match self.cluster.meta().ask(ask).await {
            Ok(record) if !record.delete_marker => Ok(acl::of_object(&record.data.headers)),
            Ok(_) | Err(chuyi_meta_api::MetaError::NotFound { .. }) => Ok(Acl::default()),
            Err(e) => Err(meta_error(e)),
        }
    }
}

fn document_error(e: DocumentError) -> s3s::S3Error {
    match e {
        DocumentError::Meta(e) => meta_error(e),
        DocumentError::Undecodable(kind) => {
            s3_error!(InternalError, "the bucket's stored {kind} document does not decode")
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let caller = self.caller(cx).await?;
        let peer = cx.extensions_mut().get::<Peer>().copied();
        let slot = cx.extensions_mut().get::<QosSlot>().cloned();
        let noted = cx.extensions_mut().get::<crate::metrics::OpSlot>().cloned();
        if let Some(noted) = &noted {
            noted.set(cx.s3_op().name());
        }
        let op = cx.s3_op().name();
        let query = Query::parse(cx.uri().query());
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { .. } if op == "CreateBucket" => (None, None),
            S3Path::Bucket { bucket } => (Some(bucket.clone()), None),
            S3Path::Object { bucket, key } => (Some(bucket.clone()), Some(key.clone())),
        };
        let context = context(peer, &caller, &query, cx.headers());
        let bucket = match bucket {
            None => None,
            Some(bucket) => {
                let version_id = query.version_id.as_deref();
                let asked = Asked { caller: &caller, op, key: key.as_deref(), version_id, context: &context };
                let decided = self.decide_on(&bucket, asked).await?;
                // Counted by name only once it is known to exist and to
                // be this caller's to use: names from strangers are not
                // labels.
                if let Some(noted) = &noted {
                    noted.set_bucket(&bucket);
                }
                Some(decided)
            }
        };
        // Creating and listing buckets is for users; anonymous callers
        // reach only what a bucket's policy or ACL opens to them.
        if bucket.is_none() && caller == Caller::Anonymous {
            return Err(s3_error!(AccessDenied, "anonymous requests are not allowed"));
        }
        if self.qos.any() {
            let user = match &caller {
                Caller::User { name, .. } => Some(name.as_str()),
                Caller::Anonymous => None,
            };
            let limiters = self.qos.s3(user, bucket.as_ref().map(|b| b.name.as_str()));
            crate::qos::admit(limiters, op, slot.as_ref()).await?;
        }
        cx.extensions_mut().insert(Granted { caller, bucket, context });
        Ok(())
    }
}

/// The access hook as s3s holds it, shared with the gateway's operations.
#[derive(Debug)]
pub struct SharedAccess(pub Arc<Access>);

#[async_trait::async_trait]
impl S3Access for SharedAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        self.0.check(cx).await
    }
}

/// What the check left for the request's operation.
pub fn granted<T>(req: &S3Request<T>) -> S3Result<&Granted> {
    // Every request passes the check before its operation; one that did
    // not would be a routing defect, refused rather than served unchecked.
    req.extensions.get::<Granted>().ok_or_else(|| s3_error!(AccessDenied, "the request was not checked"))
}

/// The query parameters the condition keys and actions read.
#[derive(Debug, Default)]
struct Query {
    version_id: Option<String>,
    prefix: Option<String>,
    delimiter: Option<String>,
    max_keys: Option<String>,
}

impl Query {
    fn parse(query: Option<&str>) -> Self {
        let mut out = Self::default();
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = urlencoding::decode(&value.replace('+', " ")).map(|v| v.into_owned()).unwrap_or_default();
            match name {
                "versionId" if !value.is_empty() => out.version_id = Some(value),
                "prefix" => out.prefix = Some(value),
                "delimiter" => out.delimiter = Some(value),
                "max-keys" => out.max_keys = Some(value),
                _ => {}
            }
        }
        out
    }
}

/// The condition keys of a request.
fn context(
    peer: Option<Peer>,
    caller: &Caller,
    query: &Query,
    headers: &http::HeaderMap,
) -> HashMap<&'static str, String> {
    let mut keys = HashMap::new();
    if let Some(peer) = peer {
        keys.insert("aws:SourceIp", peer.addr.ip().to_string());
        keys.insert("aws:SecureTransport", peer.secure.to_string());
    }
    match caller {
        Caller::Anonymous => {
            keys.insert("aws:PrincipalType", "Anonymous".into());
        }
        Caller::User { name, .. } => {
            keys.insert("aws:PrincipalType", "User".into());
            keys.insert("aws:username", name.clone());
            keys.insert("aws:userid", name.clone());
        }
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    for (key, name) in [("aws:UserAgent", "user-agent"), ("aws:Referer", "referer"), ("s3:x-amz-acl", "x-amz-acl")] {
        if let Some(value) = header(name) {
            keys.insert(key, value);
        }
    }
    let from_query = [
        ("s3:prefix", &query.prefix),
        ("s3:delimiter", &query.delimiter),
        ("s3:max-keys", &query.max_keys),
        ("s3:VersionId", &query.version_id),
    ];
    for (key, value) in from_query {
        if let Some(value) = value {
            keys.insert(key, value.clone());
        }
    }
    keys
}
