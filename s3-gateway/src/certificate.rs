//! What the gateway reads from its own TLS certificate: when it expires
//! (X.509's `notAfter`), exported so an alert fires before clients start
//! refusing it. A few lines of DER walking rather than an X.509 crate:
//! one field is read, and x509-parser's proc-macro features would change
//! the workspace's feature set (a rebuild of RocksDB's bindings).
//!
//! RFC 5280: Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//! \[0\] version OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
//! issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter Time },
//! ... }, ... }; Time is UTCTime (YYMMDDHHMMSSZ, years 1950-2049) or
//! GeneralizedTime (YYYYMMDDHHMMSSZ).

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's `notAfter` in seconds since the Unix epoch; `None`
/// for anything that is not a well-formed certificate as far as read.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let cert = expect(SEQUENCE, der)?.0;
    let mut tbs = expect(SEQUENCE, cert)?.0;
    if let Some((VERSION, _, rest)) = element(tbs) {
        tbs = rest;
    }
    for tag in [INTEGER, SEQUENCE, SEQUENCE] {
        tbs = expect(tag, tbs)?.1;
    }
    let validity = expect(SEQUENCE, tbs)?.0;
    let (_, _, after_not_before) = element(validity)?;
    let (tag, time, _) = element(after_not_before)?;
    parse_time(tag, time)
}

/// The element at the start of `input` if its tag is `tag`: its contents
/// and what follows it.
fn expect(tag: u8, input: &[u8]) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (found, contents, rest) if found == tag => Some((contents, rest)),
        _ => None,
    }
}

/// One DER element at the start of `input`: (tag, contents, rest).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A UTCTime or GeneralizedTime in UTC (`Z`), to Unix seconds.
fn parse_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match tag {
        UTC_TIME => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        GENERALIZED_TIME => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 {
        return None;
    }
    let field = |i: usize| rest.get(i..i + 2)?.parse::<i64>().ok();
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let valid = (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && minute < 60 && second < 61;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (the civil
/// calendar's days-from-epoch formula, exact for every year).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_until(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["s3.local".to_string()]).expect("params");
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("certificate").der().to_vec()
    }

    #[test]
    fn not_after_is_read_from_utc_and_generalized_times() {
        // UTCTime up to 2049, GeneralizedTime from 2050 (RFC 5280 4.1.2.5).
        assert_eq!(not_after(&certificate_until(2031, 5, 17)), Some(1_936_742_400));
        assert_eq!(not_after(&certificate_until(2051, 1, 2)), Some(2_556_230_400));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn anything_malformed_reads_as_nothing_and_never_panics() {
        let der = certificate_until(2031, 5, 17);
        for len in 0..der.len() {
            assert_eq!(not_after(&der[..len]), None, "cut at {len}");
        }
        for bad in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80", b"\x31\x00"] {
            assert_eq!(not_after(bad), None, "{bad:?}");
        }
        assert_eq!(parse_time(UTC_TIME, b"311317000000Z"), None, "month 13");
        assert_eq!(parse_time(UTC_TIME, b"3105170000Z"), None, "no seconds");
        assert_eq!(parse_time(GENERALIZED_TIME, b"20310517000000+0800"), None, "not UTC");
    }
}
