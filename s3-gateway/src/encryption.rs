//! Server-side encryption as S3 clients see it: the bucket's default
//! (Put/Get/DeleteBucketEncryption, kept as the bucket's `encryption`
//! document), the `x-amz-server-side-encryption` and SSE-C headers of a
//! request, the bucket keys behind them (made on first use, kept wrapped
//! under the KEK), and the headers responses return. The crypto is
//! [`crate::sse`]'s.
//!
//! A gateway without the KEK, or with another one, serves every object
//! that is not encrypted and refuses the rest (and writes into a bucket
//! that encrypts by default) with `KeyUnavailable`, 503.

use std::sync::Arc;

use chuyi_common::sm4::Kek;
use chuyi_meta_api::model::{Bucket, BucketConfigKind, ObjectPut};
use chuyi_meta_api::{ask, MetaError, Request};
use hmac::{Hmac, Mac};
use s3s::dto::*;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use sha2::Sha256;

use crate::errors::meta_error;
use crate::gateway::Gateway;
use crate::sse::{self, Algorithm, DataKey, Seal, Sealing};

/// Where an SSE-C object keeps the MD5 of its key (base64, returned as S3
/// does) and the check a later key is compared with: hex of a 16-byte
/// salt and HMAC-SHA256(key, salt). Neither is returned as a header.
pub const SSE_C_KEY_MD5_HEADER: &str = "x-chuyi-sse-c-key-md5";
pub const SSE_C_CHECK_HEADER: &str = "x-chuyi-sse-c-check";

/// The S3 error for an encrypted object or bucket this gateway holds no
/// key for. 503: another gateway, given the KEK, serves it.
pub fn key_unavailable(why: impl std::fmt::Display) -> S3Error {
    let mut e = S3Error::with_message(
        S3ErrorCode::Custom("KeyUnavailable".into()),
        format!("this gateway cannot encrypt or decrypt here: {why}"),
    );
    e.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
    e
}

/// What binds a bucket's wrapped key to that bucket: a key copied into
/// another bucket's record, or into a bucket made again under the same
/// name, does not unwrap.
fn bucket_key_context(bucket: &Bucket) -> Vec<u8> {
    let mut context = b"chuyi bucket key\0".to_vec();
    context.extend_from_slice(bucket.name.as_bytes());
    context.push(0);
    context.extend_from_slice(&bucket.created_ms.to_le_bytes());
    context
}

/// Wraps a bucket key under `kek` for `bucket` (rotation, in the CLI).
pub fn wrap_bucket_key(kek: &Kek, bucket: &Bucket, key: &DataKey) -> Vec<u8> {
    kek.wrap(key.bytes(), &bucket_key_context(bucket))
}

/// Unwraps `bucket`'s key with `kek`.
pub fn unwrap_bucket_key(kek: &Kek, bucket: &Bucket, wrapped: &[u8]) -> Result<DataKey, String> {
    let key = kek.unwrap(wrapped, &bucket_key_context(bucket)).map_err(|e| e.to_string())?;
    DataKey::from_slice(&key).ok_or_else(|| format!("bucket {}'s key has {} bytes", bucket.name, key.len()))
}

/// The SSE-C key of a request whose input has the three `sse_customer_*`
/// fields (every S3 operation that takes one names them alike).
macro_rules! request_customer_key {
    ($input:expr) => {
        $crate::encryption::customer_key(
            $input.sse_customer_algorithm.as_deref(),
            $input.sse_customer_key.as_deref(),
            $input.sse_customer_key_md5.as_deref(),
        )?
    };
}
pub(crate) use request_customer_key;

/// The SSE-C key of a copy's source, from the three
/// `copy_source_sse_customer_*` fields (CopyObject, UploadPartCopy).
macro_rules! copy_source_customer_key {
    ($input:expr) => {
        $crate::encryption::customer_key(
            $input.copy_source_sse_customer_algorithm.as_deref(),
            $input.copy_source_sse_customer_key.as_deref(),
            $input.copy_source_sse_customer_key_md5.as_deref(),
        )?
    };
}
pub(crate) use copy_source_customer_key;

/// A client's SSE-C key, checked against the MD5 it sent with it.
#[derive(Clone, Debug)]
pub struct CustomerKey {
    pub key: Arc<DataKey>,
    /// base64 of the key's MD5, as the client sent it.
    pub md5: String,
}

/// The SSE-C key of a request from its three headers; none when none is
/// sent. Each error is S3's.
pub fn customer_key(algorithm: Option<&str>, key: Option<&str>, md5: Option<&str>) -> S3Result<Option<CustomerKey>> {
    use base64_simd::STANDARD;
    let (algorithm, key) = match (algorithm, key) {
        (None, None) if md5.is_none() => return Ok(None),
        (Some(a), Some(k)) => (a, k),
        (None, _) => {
            return Err(s3_error!(
                InvalidArgument,
                "Requests specifying Server Side Encryption with Customer provided keys must provide a valid encryption algorithm."
            ))
        }
        (Some(_), None) => {
            return Err(s3_error!(
                InvalidArgument,
                "Requests specifying Server Side Encryption with Customer provided keys must provide an appropriate secret key."
            ))
        }
    };
    if algorithm != "AES256" {
        return Err(s3_error!(
            InvalidEncryptionAlgorithmError,
            "The encryption request you specified is not valid. The valid value is AES256."
        ));
    }
    let bytes = STANDARD.decode_to_vec(key).ok().and_then(|k| DataKey::from_slice(&k));
    let Some(bytes) = bytes else {
        return Err(s3_error!(InvalidArgument, "The secret key was invalid for the specified algorithm."));
    };
    let computed = STANDARD.encode_to_string(md5_of(bytes.bytes()));
    let Some(md5) = md5 else {
        return Err(s3_error!(
            InvalidArgument,
            "Requests specifying Server Side Encryption with Customer provided keys must provide the client calculated MD5 of the secret key."
        ));
    };
    if md5 != computed {
        return Err(s3_error!(
            InvalidArgument,
            "The calculated MD5 hash of the key did not match the hash that was provided."
        ));
    }
    Ok(Some(CustomerKey { key: Arc::new(bytes), md5: computed }))
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    use s3s::crypto::{Checksum as _, Md5};
    let mut md5 = Md5::new();
    md5.update(bytes);
    md5.finalize()
}

/// HMAC-SHA256(key, salt): what an SSE-C object keeps to know its key again.
fn customer_check(key: &DataKey, salt: &[u8]) -> [u8; 32] {
    let mut mac = match <Hmac<Sha256>>::new_from_slice(key.bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(salt);
    mac.finalize().into_bytes().into()
}

/// Records an SSE-C key's MD5 and check with the object it seals.
pub fn keep_customer_key(object: &mut ObjectPut, customer: &CustomerKey) {
    let salt = sse::new_salt();
    let mut check = salt.to_vec();
    check.extend_from_slice(&customer_check(&customer.key, &salt));
    object.headers.retain(|(n, _)| n != SSE_C_KEY_MD5_HEADER && n != SSE_C_CHECK_HEADER);
    object.headers.push((SSE_C_KEY_MD5_HEADER.into(), customer.md5.clone()));
    object.headers.push((SSE_C_CHECK_HEADER.into(), chuyi_common::secret::hex(&check)));
}

/// Whether `customer` is the key `object` was sealed with.
fn is_customer_key_of(object: &ObjectPut, customer: &CustomerKey) -> bool {
    let stored = object.headers.iter().find(|(n, _)| n == SSE_C_CHECK_HEADER).map(|(_, v)| v.as_str());
    let Some(check) = stored.and_then(chuyi_common::secret::unhex) else { return false };
    if check.len() != 16 + 32 {
        return false;
    }
    let computed = customer_check(&customer.key, &check[..16]);
    // Constant time: no hint of how much of the check matched.
    chuyi_common::secret::same_bytes(&computed, &check[16..])
}

/// The encryption headers S3 returns with a version (PUT, GET, HEAD,
/// copy, multipart).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReturnedSse {
    pub server_side_encryption: Option<ServerSideEncryption>,
    pub sse_customer_algorithm: Option<SSECustomerAlgorithm>,
    pub sse_customer_key_md5: Option<SSECustomerKeyMD5>,
}

pub fn returned_sse(object: &ObjectPut) -> ReturnedSse {
    match Sealing::of_flags(object.flags) {
        None => ReturnedSse::default(),
        Some(Sealing::Bucket(a)) => ReturnedSse {
            server_side_encryption: Some(ServerSideEncryption::from(a.s3_name().to_string())),
            ..Default::default()
        },
        Some(Sealing::Customer) => ReturnedSse {
            server_side_encryption: None,
            sse_customer_algorithm: Some("AES256".into()),
            sse_customer_key_md5: object
                .headers
                .iter()
                .find(|(n, _)| n == SSE_C_KEY_MD5_HEADER)
                .map(|(_, v)| v.clone()),
        },
    }
}

/// The bucket's default algorithm, from its `encryption` document.
pub fn decode_default(bytes: &[u8]) -> Option<Algorithm> {
    std::str::from_utf8(bytes).ok().and_then(Algorithm::parse)
}

impl Gateway {
    /// How a new object (or upload) written into `bucket` is sealed: with
    /// the client's key, the algorithm it asked for, or the bucket's
    /// default; with the flag its version records. None: not encrypted.
    pub(crate) async fn write_sealing(
        &self,
        bucket: &Bucket,
        requested: Option<&ServerSideEncryption>,
        customer: Option<&CustomerKey>,
    ) -> S3Result<Option<(Sealing, Seal)>> {
        if let Some(customer) = customer {
            if requested.is_some() {
                return Err(s3_error!(
                    InvalidArgument,
                    "Server Side Encryption with Customer provided key is incompatible with the encryption method specified"
                ));
            }
            let seal = Seal { algorithm: Algorithm::Aes256, key: customer.key.clone() };
            return Ok(Some((Sealing::Customer, seal)));
        }
        let default = self.default_encryption(&bucket.name).await?;
        let Some(algorithm) = sse::chosen(requested.map(|r| r.as_str()), default)? else { return Ok(None) };
        let key = self.bucket_key(bucket).await?;
        Ok(Some((Sealing::Bucket(algorithm), Seal { algorithm, key })))
    }

    /// The key `object`'s data opens with: none for a plain object, the
    /// bucket's, or the client's (which must be sent, and be the one).
    pub(crate) fn read_key(
        &self,
        bucket: &Bucket,
        object: &ObjectPut,
        customer: Option<&CustomerKey>,
    ) -> S3Result<Option<Arc<DataKey>>> {
        // The request's keys are judged once, here as for a HEAD.
        self.check_customer_key(object, customer)?;
        match (Sealing::of_flags(object.flags), customer) {
            (None, _) => Ok(None),
            (Some(Sealing::Bucket(_)), _) => Ok(Some(self.existing_bucket_key(bucket)?)),
            (Some(Sealing::Customer), customer) => Ok(customer.map(|c| c.key.clone())),
        }
    }

    /// What an upload's parts are sealed with: the upload's algorithm
    /// under its bucket's key, or the client's key, sent with every part
    /// and the one the upload began with.
    pub(crate) fn upload_seal(
        &self,
        bucket: &Bucket,
        upload: &ObjectPut,
        customer: Option<&CustomerKey>,
    ) -> S3Result<Option<Seal>> {
        let key = self.read_key(bucket, upload, customer)?;
        Ok(Sealing::of_flags(upload.flags).zip(key).map(|(sealing, key)| Seal { algorithm: sealing.algorithm(), key }))
    }

    /// Checks an SSE-C HEAD's key without opening data.
    pub(crate) fn check_customer_key(&self, object: &ObjectPut, customer: Option<&CustomerKey>) -> S3Result<()> {
        match (Sealing::of_flags(object.flags), customer) {
            (Some(Sealing::Customer), None) => Err(s3_error!(
                InvalidRequest,
                "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object."
            )),
            (Some(Sealing::Customer), Some(c)) if !is_customer_key_of(object, c) => Err(s3_error!(
                AccessDenied,
                "The provided customer key does not match the key the object was stored with."
            )),
            (Some(Sealing::Customer), Some(_)) | (None, None) | (Some(Sealing::Bucket(_)), None) => Ok(()),
            (None, Some(_)) | (Some(Sealing::Bucket(_)), Some(_)) => Err(s3_error!(
                InvalidRequest,
                "The encryption parameters are not applicable to this object."
            )),
        }
    }

    async fn default_encryption(&self, bucket: &str) -> S3Result<Option<Algorithm>> {
        match self.encryptions.of(bucket).await {
            Ok(a) => Ok(a.map(|a| *a)),
            Err(crate::documents::DocumentError::Meta(e)) => Err(meta_error(e)),
            Err(e @ crate::documents::DocumentError::Undecodable(_)) => Err(s3_error!(InternalError, "{e}")),
        }
    }

    /// The key of a bucket whose objects are sealed under it: a bucket
    /// without one has lost it (a read never makes one: a new key would
    /// open nothing).
    fn existing_bucket_key(&self, bucket: &Bucket) -> S3Result<Arc<DataKey>> {
        let kek = self.kek()?;
        let Some(wrapped) = &bucket.settings.wrapped_key else {
            return Err(s3_error!(InternalError, "bucket {} holds encrypted objects but no key", bucket.name));
        };
        unwrap_bucket_key(kek, bucket, wrapped).map(Arc::new).map_err(key_unavailable)
    }

    fn kek(&self) -> S3Result<&Kek> {
        self.kek.as_deref().ok_or_else(|| key_unavailable("it was started without the master key (KEK)"))
    }

    /// The bucket's data key, unwrapped; made and stored first if the
    /// bucket has none (the first gateway to store one wins, the others
    /// take it).
    async fn bucket_key(&self, bucket: &Bucket) -> S3Result<Arc<DataKey>> {
        if bucket.settings.wrapped_key.is_some() {
            return self.existing_bucket_key(bucket);
        }
        let kek = self.kek()?;
        let key = DataKey::random();
        let request =
            Request::SetBucketKey { bucket: bucket.name.clone(), old: None, new: wrap_bucket_key(kek, bucket, &key) };
        match self.meta().write(request).await {
            Ok(_) => Ok(Arc::new(key)),
            Err(MetaError::Invalid { .. }) => {
                // Another gateway made it first: take theirs.
                let fresh = self.ask(ask::Bucket(bucket.name.clone())).await?;
                self.existing_bucket_key(&fresh)
            }
            Err(e) => Err(meta_error(e)),
        }
    }

    pub(crate) async fn put_encryption(
        &self,
        req: S3Request<PutBucketEncryptionInput>,
    ) -> S3Result<S3Response<PutBucketEncryptionOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let rules = &req.input.server_side_encryption_configuration.rules;
        let [rule] = rules.as_slice() else {
            return Err(s3_error!(MalformedXML, "one server-side encryption rule is expected, not {}", rules.len()));
        };
        let Some(by_default) = &rule.apply_server_side_encryption_by_default else {
            return Err(s3_error!(MalformedXML, "the rule has no ApplyServerSideEncryptionByDefault"));
        };
        let algorithm = sse::chosen(Some(by_default.sse_algorithm.as_str()), None)?;
        let Some(algorithm) = algorithm else { unreachable!("an algorithm was named") };
        if by_default.kms_master_key_id.is_some() {
            return Err(s3_error!(InvalidArgument, "KMSMasterKeyID applies to aws:kms only"));
        }
        // Refused here, not at the first PUT, when no key can be had.
        self.bucket_key(&bucket).await?;
        let name = bucket.name.clone();
        self.set_bucket_document(bucket, BucketConfigKind::Encryption, Some(algorithm.s3_name().into())).await?;
        self.encryptions.forget(&name);
        Ok(S3Response::new(PutBucketEncryptionOutput::default()))
    }

    pub(crate) async fn get_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let mut missing = s3_error!(
            ServerSideEncryptionConfigurationNotFoundError,
            "The server side encryption configuration was not found"
        );
        // S3 answers it with 404; s3s's table says 400.
        missing.set_status_code(http::StatusCode::NOT_FOUND);
        let algorithm = self.bucket_document(bucket, BucketConfigKind::Encryption, decode_default, missing).await?;
        let rule = ServerSideEncryptionRule {
            apply_server_side_encryption_by_default: Some(ServerSideEncryptionByDefault {
                sse_algorithm: ServerSideEncryption::from(algorithm.s3_name().to_string()),
                kms_master_key_id: None,
            }),
            bucket_key_enabled: Some(false),
        };
        let config = ServerSideEncryptionConfiguration { rules: vec![rule] };
        Ok(S3Response::new(GetBucketEncryptionOutput { server_side_encryption_configuration: Some(config) }))
    }

    pub(crate) async fn delete_encryption(
        &self,
        req: S3Request<DeleteBucketEncryptionInput>,
    ) -> S3Result<S3Response<DeleteBucketEncryptionOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let name = bucket.name.clone();
        self.set_bucket_document(bucket, BucketConfigKind::Encryption, None).await?;
        self.encryptions.forget(&name);
        Ok(S3Response::new(DeleteBucketEncryptionOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64_simd::STANDARD.encode_to_string(bytes)
    }

    #[test]
    fn customer_keys_are_checked_as_s3_does() {
        let key = [7u8; 32];
        let md5 = b64(&md5_of(&key));
        let ok = customer_key(Some("AES256"), Some(&b64(&key)), Some(&md5)).expect("valid").expect("some");
        assert_eq!(ok.md5, md5);
        assert!(customer_key(None, None, None).expect("none").is_none());
        let code = |r: S3Result<Option<CustomerKey>>| r.err().map(|e| e.code().as_str().to_string());
        assert_eq!(code(customer_key(Some("AES256"), None, Some(&md5))).as_deref(), Some("InvalidArgument"));
        assert_eq!(code(customer_key(None, Some(&b64(&key)), Some(&md5))).as_deref(), Some("InvalidArgument"));
        assert_eq!(code(customer_key(Some("AES256"), Some(&b64(&key)), None)).as_deref(), Some("InvalidArgument"));
        let wrong_md5 = b64(&md5_of(b"other"));
        assert_eq!(
            code(customer_key(Some("AES256"), Some(&b64(&key)), Some(&wrong_md5))).as_deref(),
            Some("InvalidArgument")
        );
        let short = b64(&key[..16]);
        assert_eq!(code(customer_key(Some("AES256"), Some(&short), Some(&md5))).as_deref(), Some("InvalidArgument"));
        assert_eq!(
            code(customer_key(Some("SM4"), Some(&b64(&key)), Some(&md5))).as_deref(),
            Some("InvalidEncryptionAlgorithmError")
        );
    }

    #[test]
    fn an_object_knows_its_customer_key_again_and_no_other() {
        let key = |byte: u8| {
            let k = [byte; 32];
            customer_key(Some("AES256"), Some(&b64(&k)), Some(&b64(&md5_of(&k)))).expect("valid").expect("some")
        };
        let mut object = ObjectPut::default();
        keep_customer_key(&mut object, &key(1));
        assert!(is_customer_key_of(&object, &key(1)));
        assert!(!is_customer_key_of(&object, &key(2)));
        assert!(!is_customer_key_of(&ObjectPut::default(), &key(1)));
        object.flags = Sealing::Customer.flag();
        let returned = returned_sse(&object);
        assert_eq!(returned.sse_customer_key_md5, Some(key(1).md5));
        assert_eq!(returned.server_side_encryption, None);
    }

    #[test]
    fn bucket_keys_unwrap_only_for_their_bucket() {
        let kek = Kek::new(&[3; 16]);
        let bucket = Bucket {
            name: "scans".into(),
            owner: "alice".into(),
            pool: "ssd".into(),
            created_ms: 5,
            versioning: Default::default(),
            settings: Default::default(),
        };
        let key = DataKey::random();
        let wrapped = wrap_bucket_key(&kek, &bucket, &key);
        assert_eq!(unwrap_bucket_key(&kek, &bucket, &wrapped).expect("unwraps").bytes(), key.bytes());
        let again = Bucket { created_ms: 6, ..bucket.clone() };
        assert!(unwrap_bucket_key(&kek, &again, &wrapped).is_err(), "a bucket made again under the name");
        let other = Bucket { name: "notes".into(), ..bucket.clone() };
        assert!(unwrap_bucket_key(&kek, &other, &wrapped).is_err());
        assert!(unwrap_bucket_key(&Kek::new(&[4; 16]), &bucket, &wrapped).is_err());
    }
}
