//! The time bounds of a presigned (SigV4 query) URL, as S3 answers them,
//! checked before the request is routed: `X-Amz-Expires` outside 1 s to 7
//! days is a malformed URL (400 AuthorizationQueryParametersError), and a
//! URL dated ahead of the server's clock is not valid yet (403
//! AccessDenied). s3s checks the signature and whether the URL has
//! expired; it takes any expiry and says RequestTimeTooSkewed for an early
//! URL.

use s3s::{s3_error, S3Result};

/// What S3 allows a presigned URL to live: one week.
pub const EXPIRES_MAX_SECS: u64 = 7 * 24 * 3600;
/// How far ahead of the server a URL's date may be (clocks differ).
pub const CLOCK_SKEW_SECS: i64 = 15 * 60;

/// Checks the query of a request at `now` (Unix seconds); a request that
/// is no presigned SigV4 URL passes.
pub fn check(query: Option<&str>, now: i64) -> S3Result<()> {
    let Some(query) = query else { return Ok(()) };
    let param = |name: &str| query.split('&').find_map(|p| p.strip_prefix(name)?.strip_prefix('='));
    if param("X-Amz-Algorithm").is_none() {
        return Ok(());
    }
    if let Some(expires) = param("X-Amz-Expires") {
        match expires.parse::<u64>() {
            Ok(0) => {
                return Err(s3_error!(AuthorizationQueryParametersError, "X-Amz-Expires must be non-negative"));
            }
            Ok(secs) if secs > EXPIRES_MAX_SECS => {
                return Err(s3_error!(
                    AuthorizationQueryParametersError,
                    "X-Amz-Expires must be less than a week (in seconds) that is {EXPIRES_MAX_SECS}"
                ));
            }
            Ok(_) => {}
            Err(_) => {
                return Err(s3_error!(AuthorizationQueryParametersError, "X-Amz-Expires should be a number"));
            }
        }
    }
    if let Some(date) = param("X-Amz-Date").and_then(unix_seconds) {
        if date > now + CLOCK_SKEW_SECS {
            return Err(s3_error!(AccessDenied, "Request is not valid yet"));
        }
    }
    Ok(())
}

/// `YYYYMMDDTHHMMSSZ` as Unix seconds; anything else is left for the
/// signature check to refuse.
fn unix_seconds(date: &str) -> Option<i64> {
    let b = date.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |from: usize, to: usize| date.get(from..to)?.parse::<u32>().ok();
    let month = time::Month::try_from(u8::try_from(num(4, 6)?).ok()?).ok()?;
    let day = time::Date::from_calendar_date(i32::try_from(num(0, 4)?).ok()?, month, u8::try_from(num(6, 8)?).ok()?);
    let at = time::Time::from_hms(
        u8::try_from(num(9, 11)?).ok()?,
        u8::try_from(num(11, 13)?).ok()?,
        u8::try_from(num(13, 15)?).ok()?,
    );
    Some(time::PrimitiveDateTime::new(day.ok()?, at.ok()?).assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_302_400; // 2026-12-03T12:53:20Z

    fn code(r: S3Result<()>) -> Option<String> {
        r.err().map(|e| e.code().as_str().to_string())
    }

    fn url(expires: &str, date: &str) -> String {
        format!("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={date}&X-Amz-Expires={expires}&X-Amz-Signature=ab")
    }

    #[test]
    fn dates_parse_as_sigv4_writes_them() {
        assert_eq!(unix_seconds("20261203T125320Z"), Some(NOW));
        for bad in ["20261203125320Z", "20261303T125320Z", "2026120xT125320Z", "20261203T125320", ""] {
            assert_eq!(unix_seconds(bad), None, "{bad}");
        }
    }

    #[test]
    fn expiry_is_one_second_to_a_week_and_early_urls_are_not_valid_yet() {
        let date = "20261203T125320Z";
        assert_eq!(code(check(Some(&url("1", date)), NOW)), None);
        assert_eq!(code(check(Some(&url("604800", date)), NOW)), None);
        for bad in ["0", "604801", "-1", "x"] {
            assert_eq!(
                code(check(Some(&url(bad, date)), NOW)).as_deref(),
                Some("AuthorizationQueryParametersError"),
                "{bad}"
            );
        }
        assert_eq!(code(check(Some(&url("60", date)), NOW - 3600)).as_deref(), Some("AccessDenied"));
        assert_eq!(code(check(Some(&url("60", date)), NOW - 60)), None, "within the clock skew");
    }

    #[test]
    fn other_requests_pass() {
        assert_eq!(code(check(None, NOW)), None);
        assert_eq!(code(check(Some("list-type=2&X-Amz-Expires=0"), NOW)), None, "no presigned URL");
    }
}
