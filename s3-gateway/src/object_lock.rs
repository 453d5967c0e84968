//! Object lock (WORM) as S3 has it: a bucket created with object lock (or
//! turned to it while versioned), its default retention, and each
//! version's retention (GOVERNANCE or COMPLIANCE until a date) and legal
//! hold.
//!
//! The metadata service keeps the locks and enforces them when a version
//! would be removed or its lock shortened (`removal_refused`,
//! `retention_change_allowed` in `chuyi_meta_api::model`), so no path
//! around this gateway (DeleteObjects, a CLI, lifecycle) can remove a
//! locked version. Here: the S3 documents and headers turned into those
//! records and back, checked as S3 checks them, and the operations.

use chuyi_meta_api::ask;
use chuyi_meta_api::model::{Bucket, DefaultRetention, LockMode, ObjectLockConfig, ObjectPut, Retention};
use chuyi_meta_api::Request;
use s3s::dto::{
    DefaultRetention as S3DefaultRetention, GetObjectLegalHoldInput, GetObjectLegalHoldOutput,
    GetObjectLockConfigurationInput, GetObjectLockConfigurationOutput, GetObjectRetentionInput,
    GetObjectRetentionOutput, ObjectLockConfiguration, ObjectLockEnabled, ObjectLockLegalHold,
    ObjectLockLegalHoldStatus, ObjectLockMode, ObjectLockRetention, ObjectLockRetentionMode, ObjectLockRule,
    PutObjectLegalHoldInput, PutObjectLegalHoldOutput, PutObjectLockConfigurationInput,
    PutObjectLockConfigurationOutput, PutObjectRetentionInput, PutObjectRetentionOutput, Timestamp,
};
use s3s::{s3_error, S3Request, S3Response, S3Result};

use crate::gateway::{check_version_id, Gateway};

/// A default retention of at most 100 years, as S3 allows.
const DEFAULT_DAYS_MAX: i64 = 36_500;

fn mode(s: &str) -> S3Result<LockMode> {
    LockMode::parse(s).ok_or_else(|| s3_error!(InvalidArgument, "Unknown wormMode directive: {s}"))
}

fn millis(t: &Timestamp) -> i64 {
    let at = time::OffsetDateTime::from(t.clone());
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

fn timestamp(ms: u64) -> Timestamp {
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

/// A bucket's configuration from PutObjectLockConfiguration: enabled, and
/// a default retention of a mode and either days or years.
pub fn config_from_document(document: Option<ObjectLockConfiguration>) -> S3Result<ObjectLockConfig> {
    let document = document.ok_or_else(|| s3_error!(MalformedXML, "no ObjectLockConfiguration"))?;
    if document.object_lock_enabled.as_ref().map(|e| e.as_str()) != Some(ObjectLockEnabled::ENABLED) {
        return Err(s3_error!(MalformedXML, "ObjectLockEnabled must be Enabled"));
    }
    let Some(default) = document.rule.and_then(|r| r.default_retention) else {
        return Ok(ObjectLockConfig { default_retention: None });
    };
    let mode = mode(default.mode.as_ref().map(|m| m.as_str()).unwrap_or_default())?;
    let days = match (default.days, default.years) {
        (Some(d), None) => i64::from(d),
        (None, Some(y)) => i64::from(y) * 365,
        _ => return Err(s3_error!(MalformedXML, "a default retention names either Days or Years")),
    };
    if !(1..=DEFAULT_DAYS_MAX).contains(&days) {
        return Err(s3_error!(InvalidArgument, "Default retention period must be a positive integer value"));
    }
    Ok(ObjectLockConfig { default_retention: Some(DefaultRetention { mode, days: days as u32 }) })
}

pub fn config_to_document(config: &ObjectLockConfig) -> ObjectLockConfiguration {
    ObjectLockConfiguration {
        object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
        rule: config.default_retention.map(|d| ObjectLockRule {
            default_retention: Some(S3DefaultRetention {
                days: Some(d.days as i32),
                mode: Some(ObjectLockRetentionMode::from(d.mode.as_str().to_string())),
                years: None,
            }),
        }),
    }
}

/// A retention from a mode and a date (headers or a document): both or
/// neither, the date in the future at `now_ms`.
pub fn retention(mode_name: Option<&str>, until: Option<&Timestamp>, now_ms: u64) -> S3Result<Option<Retention>> {
    match (mode_name, until) {
        (None, None) => Ok(None),
        (Some(m), Some(until)) => {
            let until_ms = millis(until);
            if until_ms <= now_ms as i64 {
                return Err(s3_error!(InvalidArgument, "The retain until date must be in the future!"));
            }
            Ok(Some(Retention { mode: mode(m)?, until_ms: until_ms as u64 }))
        }
        _ => Err(s3_error!(
            InvalidArgument,
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied"
        )),
    }
}

pub fn legal_hold(status: &str) -> S3Result<bool> {
    match status {
        ObjectLockLegalHoldStatus::ON => Ok(true),
        ObjectLockLegalHoldStatus::OFF => Ok(false),
        other => Err(s3_error!(MalformedXML, "legal hold status is ON or OFF, not {other}")),
    }
}

/// The lock a write's headers ask for, set on the new version's
/// description; `None` when they ask for none.
pub fn apply_headers(object: &mut ObjectPut, headers: LockHeaders<'_>, now_ms: u64) -> S3Result<()> {
    object.set_retention(retention(headers.mode.map(|m| m.as_str()), headers.until, now_ms)?);
    object.set_legal_hold(match headers.hold {
        Some(h) => legal_hold(h.as_str())?,
        None => false,
    });
    Ok(())
}

/// The lock headers of a write (PutObject, CopyObject and
/// CreateMultipartUpload inputs have the same three).
#[derive(Debug, Clone, Copy)]
pub struct LockHeaders<'a> {
    pub mode: Option<&'a ObjectLockMode>,
    pub until: Option<&'a Timestamp>,
    pub hold: Option<&'a ObjectLockLegalHoldStatus>,
}

macro_rules! lock_headers {
    ($input:expr) => {
        $crate::object_lock::LockHeaders {
            mode: $input.object_lock_mode.as_ref(),
            until: $input.object_lock_retain_until_date.as_ref(),
            hold: $input.object_lock_legal_hold_status.as_ref(),
        }
    };
}
pub(crate) use lock_headers;

/// What GET and HEAD say of a version's lock.
pub fn returned(object: &ObjectPut) -> (Option<ObjectLockMode>, Option<Timestamp>, Option<ObjectLockLegalHoldStatus>) {
    let retention = object.retention();
    let hold = object.legal_hold().then(|| ObjectLockLegalHoldStatus::from_static(ObjectLockLegalHoldStatus::ON));
    (
        retention.map(|r| ObjectLockMode::from(r.mode.as_str().to_string())),
        retention.map(|r| timestamp(r.until_ms)),
        hold,
    )
}

impl Gateway {
    /// The bucket's object lock, or S3's refusal for a bucket without it.
    pub(crate) async fn object_lock_of(&self, bucket: &Bucket) -> S3Result<ObjectLockConfig> {
        self.ask(ask::ObjectLock(bucket.name.clone()))
            .await?
            .ok_or_else(|| s3_error!(InvalidRequest, "Bucket is missing Object Lock Configuration"))
    }

    pub(crate) async fn bucket_object_lock(
        &self,
        req: S3Request<GetObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<GetObjectLockConfigurationOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let Some(config) = self.ask(ask::ObjectLock(bucket.name)).await? else {
            return Err(s3_error!(
                ObjectLockConfigurationNotFoundError,
                "Object Lock configuration does not exist for this bucket"
            ));
        };
        let output = GetObjectLockConfigurationOutput { object_lock_configuration: Some(config_to_document(&config)) };
        Ok(S3Response::new(output))
    }

    pub(crate) async fn set_bucket_object_lock(
        &self,
        req: S3Request<PutObjectLockConfigurationInput>,
    ) -> S3Result<S3Response<PutObjectLockConfigurationOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        let config = config_from_document(req.input.object_lock_configuration)?;
        self.write(Request::SetObjectLockConfig { bucket: bucket.name, config }).await?;
        Ok(S3Response::new(PutObjectLockConfigurationOutput::default()))
    }

    pub(crate) async fn object_retention(
        &self,
        req: S3Request<GetObjectRetentionInput>,
    ) -> S3Result<S3Response<GetObjectRetentionOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        self.object_lock_of(&bucket).await?;
        let record = self.object(&bucket.name, &req.input.key, req.input.version_id.as_deref()).await?;
        let Some(r) = record.data.retention() else {
            return Err(s3_error!(
                NoSuchObjectLockConfiguration,
                "The specified object does not have a ObjectLock configuration"
            ));
        };
        let retention = ObjectLockRetention {
            mode: Some(ObjectLockRetentionMode::from(r.mode.as_str().to_string())),
            retain_until_date: Some(timestamp(r.until_ms)),
        };
        Ok(S3Response::new(GetObjectRetentionOutput { retention: Some(retention) }))
    }

    pub(crate) async fn set_object_retention(
        &self,
        req: S3Request<PutObjectRetentionInput>,
    ) -> S3Result<S3Response<PutObjectRetentionOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        self.object_lock_of(&bucket).await?;
        let bypass_governance = req.input.bypass_governance_retention.unwrap_or(false);
        let (key, version_id) = (&req.input.key, req.input.version_id.as_deref());
        self.may_bypass(crate::access::check::granted(&req)?, bypass_governance, &bucket, key, version_id).await?;
        let input = req.input;
        if let Some(v) = input.version_id.as_deref() {
            check_version_id(v)?;
        }
        let asked = input.retention.unwrap_or_default();
        let now_ms = chuyi_common::clock::unix_ms();
        let retention = retention(asked.mode.as_ref().map(|m| m.as_str()), asked.retain_until_date.as_ref(), now_ms)?;
        let request = Request::SetRetention {
            bucket: bucket.name,
            key: input.key,
            version_id: input.version_id,
            retention,
            bypass_governance,
        };
        self.write(request).await?;
        Ok(S3Response::new(PutObjectRetentionOutput::default()))
    }

    pub(crate) async fn object_legal_hold(
        &self,
        req: S3Request<GetObjectLegalHoldInput>,
    ) -> S3Result<S3Response<GetObjectLegalHoldOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        self.object_lock_of(&bucket).await?;
        let record = self.object(&bucket.name, &req.input.key, req.input.version_id.as_deref()).await?;
        let status =
            if record.data.legal_hold() { ObjectLockLegalHoldStatus::ON } else { ObjectLockLegalHoldStatus::OFF };
        let legal_hold = ObjectLockLegalHold { status: Some(ObjectLockLegalHoldStatus::from_static(status)) };
        Ok(S3Response::new(GetObjectLegalHoldOutput { legal_hold: Some(legal_hold) }))
    }

    pub(crate) async fn set_object_legal_hold(
        &self,
        req: S3Request<PutObjectLegalHoldInput>,
    ) -> S3Result<S3Response<PutObjectLegalHoldOutput>> {
        let (_, bucket) = self.request_bucket(&req, &req.input.bucket).await?;
        self.object_lock_of(&bucket).await?;
        let input = req.input;
        if let Some(v) = input.version_id.as_deref() {
            check_version_id(v)?;
        }
        let status =
            input.legal_hold.and_then(|h| h.status).ok_or_else(|| s3_error!(MalformedXML, "no legal hold status"))?;
        let on = legal_hold(status.as_str())?;
        let request = Request::SetLegalHold { bucket: bucket.name, key: input.key, version_id: input.version_id, on };
        self.write(request).await?;
        Ok(S3Response::new(PutObjectLegalHoldOutput::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code<T>(r: S3Result<T>) -> Option<String> {
        r.err().map(|e| e.code().as_str().to_string())
    }

    fn document(mode: &str, days: Option<i32>, years: Option<i32>) -> ObjectLockConfiguration {
        ObjectLockConfiguration {
            object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
            rule: Some(ObjectLockRule {
                default_retention: Some(S3DefaultRetention {
                    days,
                    mode: Some(ObjectLockRetentionMode::from(mode.to_string())),
                    years,
                }),
            }),
        }
    }

    #[test]
    fn bucket_configurations_take_days_or_years() {
        let c = config_from_document(Some(document("COMPLIANCE", None, Some(7)))).expect("years");
        assert_eq!(c.default_retention, Some(DefaultRetention { mode: LockMode::Compliance, days: 7 * 365 }));
        assert_eq!(config_from_document(Some(config_to_document(&c))).ok(), Some(c));
        assert_eq!(
            code(config_from_document(Some(document("GOVERNANCE", Some(1), Some(1))))).as_deref(),
            Some("MalformedXML")
        );
        assert_eq!(
            code(config_from_document(Some(document("GOVERNANCE", Some(0), None)))).as_deref(),
            Some("InvalidArgument")
        );
        assert_eq!(
            code(config_from_document(Some(document("FOREVER", Some(1), None)))).as_deref(),
            Some("InvalidArgument")
        );
        assert_eq!(code(config_from_document(None)).as_deref(), Some("MalformedXML"));
    }

    #[test]
    fn a_retention_needs_both_a_mode_and_a_future_date() {
        let now_ms = 1_000_000;
        let later = timestamp(now_ms + 60_000);
        let r = retention(Some("GOVERNANCE"), Some(&later), now_ms).expect("ok");
        assert_eq!(r, Some(Retention { mode: LockMode::Governance, until_ms: now_ms + 60_000 }));
        assert_eq!(retention(None, None, now_ms).ok(), Some(None));
        assert_eq!(code(retention(Some("GOVERNANCE"), None, now_ms)).as_deref(), Some("InvalidArgument"));
        assert_eq!(code(retention(None, Some(&later), now_ms)).as_deref(), Some("InvalidArgument"));
        let past = timestamp(now_ms - 1);
        assert_eq!(code(retention(Some("COMPLIANCE"), Some(&past), now_ms)).as_deref(), Some("InvalidArgument"));
        assert_eq!(code(legal_hold("MAYBE")).as_deref(), Some("MalformedXML"));
    }
}
