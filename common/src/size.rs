//! Human-readable byte sizes for config files and the CLI: "4MiB", "10G",
//! "512k", "1048576". Binary multiples throughout (K = KiB = 1024), as
//! operators of Ceph and qemu-img expect.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes, written and read as text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

/// Why a size string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("size {0:?} does not start with a number")]
    NoNumber(String),
    #[error("size {0:?} has an unknown unit (use B, K/KiB, M/MiB, G/GiB, T/TiB)")]
    Unit(String),
    #[error("size {0:?} does not fit in 64 bits")]
    Overflow(String),
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, SizeError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(SizeError::Empty);
        }
        let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let number: u64 = s[..digits].parse().map_err(|_| SizeError::NoNumber(s.to_string()))?;
        let shift = match s[digits..].trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(SizeError::Unit(s.to_string())),
        };
        number.checked_mul(1u64 << shift).map(ByteSize).ok_or_else(|| SizeError::Overflow(s.to_string()))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut unit = 0;
        while unit + 1 < UNITS.len()
            && self.0 >= 1u64 << (10 * (unit + 1))
            && self.0.is_multiple_of(1u64 << (10 * (unit + 1)))
        {
            unit += 1;
        }
        write!(f, "{}{}", self.0 >> (10 * unit), UNITS[unit])
    }
}

impl ByteSize {
    /// For people rather than config files: three significant digits in
    /// the largest unit that keeps the number at least 1 ("4.66 TiB").
    pub fn approx(self) -> Approx {
        Approx(self.0)
    }
}

/// [`ByteSize::approx`]'s display.
#[derive(Clone, Copy, Debug)]
pub struct Approx(u64);

impl fmt::Display for Approx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut value = self.0 as f64;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        match unit {
            0 => write!(f, "{} B", self.0),
            _ if value >= 100.0 => write!(f, "{value:.0} {}", UNITS[unit]),
            _ if value >= 10.0 => write!(f, "{value:.1} {}", UNITS[unit]),
            _ => write!(f, "{value:.2} {}", UNITS[unit]),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn approximate_sizes_read_like_df() {
        assert_eq!(ByteSize(0).approx().to_string(), "0 B");
        assert_eq!(ByteSize(1023).approx().to_string(), "1023 B");
        assert_eq!(ByteSize(4 << 20).approx().to_string(), "4.00 MiB");
        assert_eq!(ByteSize(72_089_600).approx().to_string(), "68.8 MiB");
        assert_eq!(ByteSize(5_120_000_000_000).approx().to_string(), "4.66 TiB");
        assert_eq!(ByteSize(300 << 30).approx().to_string(), "300 GiB");
    }

    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!("4MiB".parse(), Ok(ByteSize(4 << 20)));
        assert_eq!("10G".parse(), Ok(ByteSize(10 << 30)));
        assert_eq!("512k".parse(), Ok(ByteSize(512 << 10)));
        assert_eq!("1048576".parse(), Ok(ByteSize(1 << 20)));
        assert_eq!(" 2 TiB ".parse(), Ok(ByteSize(2 << 40)));
    }

    #[test]
    fn rejects_bad_sizes() {
        assert_eq!("".parse::<ByteSize>(), Err(SizeError::Empty));
        assert!(matches!("MiB".parse::<ByteSize>(), Err(SizeError::NoNumber(_))));
        assert!(matches!("4XB".parse::<ByteSize>(), Err(SizeError::Unit(_))));
        assert!(matches!("99999999999T".parse::<ByteSize>(), Err(SizeError::Overflow(_))));
    }

    #[test]
    fn displays_exact_units() {
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
        assert_eq!(ByteSize(4097).to_string(), "4097B");
        assert_eq!(ByteSize(3 << 10).to_string(), "3KiB");
    }
}
