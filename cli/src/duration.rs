//! Durations on the command line: "500ms", "30s", "15m", "24h", "7d" (a
//! bare number is seconds).

/// Milliseconds of `s`.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let (number, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| format!("{s:?}: a duration such as 500ms, 30s, 15m, 24h or 7d"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("{s:?}: use ms, s, m, h or d")),
    };
    n.checked_mul(per).ok_or_else(|| format!("{s:?} is too long"))
}

/// `ms` as people read it: "7d", "36h", "90s", "250ms".
pub fn show(ms: u64) -> String {
    for (per, unit) in [(86_400_000, "d"), (3_600_000, "h"), (60_000, "m"), (1_000, "s")] {
        if ms >= per && ms.is_multiple_of(per) {
            return format!("{}{unit}", ms / per);
        }
    }
    if ms >= 1_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_show() {
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("30"), Ok(30_000));
        assert_eq!(parse_ms("15m"), Ok(900_000));
        assert_eq!(parse_ms("7d"), Ok(604_800_000));
        assert!(parse_ms("1w").is_err() && parse_ms("d").is_err() && parse_ms("99999999999999999d").is_err());
        assert_eq!(
            (show(604_800_000), show(5_400_000), show(1_500), show(250)),
            ("7d".into(), "90m".into(), "1.5s".into(), "250ms".into())
        );
    }
}
