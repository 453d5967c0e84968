//! Who a request comes from: access keys are looked up in the metadata
//! service, whose user records keep each secret key sealed under the
//! cluster secret; the gateway opens it to check the request's signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chuyi_common::clock::{self, Instant};

use chuyi_client::Cluster;
use chuyi_common::seal::SealKey;
use chuyi_common::secret::hex;
use chuyi_meta_api::ask;
use chuyi_meta_api::model::User;
use chuyi_meta_api::MetaError;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};
use sha2::{Digest, Sha256};

use crate::errors::unavailable;

/// How long a user record read for one request serves the next ones: a
/// request is authenticated and then served as its user, which would
/// otherwise read the record twice. A deleted user keeps access this long.
/// An access key found to be no one's is refused this long without
/// asking again: a client retrying with a wrong key costs the metadata
/// service nothing (bench/RESULTS.md, refused requests).
const USER_FRESH: Duration = Duration::from_secs(2);
/// Access keys remembered at most (a bound on memory against a client
/// trying many): past it, all are forgotten.
const REMEMBERED_MAX: usize = 65_536;

/// The users of the cluster, as the gateway authenticates them.
#[derive(Debug)]
pub struct Users {
    cluster: Arc<Cluster>,
    seal: SealKey,
    /// Each access key looked up lately: its user, or none (unknown).
    recent: Mutex<HashMap<String, (Instant, Option<User>)>>,
}

impl Users {
    /// `seal` opens the users' sealed secret keys: a frontend credential's
    /// `user_seal`.
    pub fn new(cluster: Arc<Cluster>, seal: SealKey) -> Self {
        Self { cluster, seal, recent: Mutex::new(HashMap::new()) }
    }

    /// The user an access key belongs to.
    pub async fn user(&self, access_key: &str) -> S3Result<User> {
        if let Some((at, user)) = self.lock().get(access_key) {
            if at.elapsed() < USER_FRESH {
                return user.clone().ok_or_else(|| s3_error!(InvalidAccessKeyId));
            }
        }
        let user = match self.cluster.meta().ask(ask::User(access_key.to_string())).await {
            Ok(user) => Some(user),
            Err(MetaError::NotFound { .. }) => None,
            Err(e) => return Err(unavailable(e)),
        };
        self.remember(access_key, user.clone());
        user.ok_or_else(|| s3_error!(InvalidAccessKeyId))
    }

    fn remember(&self, access_key: &str, user: Option<User>) {
        let mut recent = self.lock();
        recent.retain(|_, (at, _)| at.elapsed() < USER_FRESH);
        if recent.len() >= REMEMBERED_MAX {
            recent.clear();
        }
        recent.insert(access_key.to_string(), (clock::now(), user));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<User>)>> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The users as s3s asks them for secret keys.
#[derive(Debug)]
pub struct UserAuth(pub Arc<Users>);

#[async_trait::async_trait]
impl S3Auth for UserAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        let user = self.0.user(access_key).await?;
        let secret = self.0.seal.open(&user.secret).map_err(|e| {
            tracing::error!(user = user.name, error = %e, "a user's secret key does not open with this cluster secret");
            s3_error!(InternalError, "the user's secret key cannot be opened")
        })?;
        let secret = String::from_utf8(secret).map_err(|_| s3_error!(InternalError, "a secret key is not text"))?;
        Ok(SecretKey::from(secret))
    }
}

/// A user's stable canonical id, as Owner fields report it: 64 hex digits
/// (like AWS's), derived from the user name, which never changes.
pub fn canonical_id(user_name: &str) -> String {
    hex(&Sha256::digest(format!("chuyi canonical user id\0{user_name}").as_bytes()))
}
