//! A time slice of files asked for on demand (`tvm-upload request`, or a request object
//! from the fleet): which files it covers, and the times it is written in. Pure: the
//! present comes in as an argument.

use crate::calendar::days_from_civil;

/// Files of `sources` (empty: every source) whose mtime lies in `since_ns..=until_ns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    pub since_ns: i64,
    pub until_ns: i64,
    pub sources: Vec<String>,
}

impl Slice {
    pub fn covers(&self, source: &str, mtime_ns: i64) -> bool {
        (self.since_ns..=self.until_ns).contains(&mtime_ns)
            && (self.sources.is_empty() || self.sources.iter().any(|s| s == source))
    }
}

const NS: i64 = 1_000_000_000;

/// A time as a request gives it, in Unix nanoseconds: RFC 3339
/// (`2026-12-06T07:00:00Z`, `2026-12-06T09:00:00.5+02:00`), `now`, or relative to
/// `now_ns`: `-30m`, `-90s`, `-2h`, `-1d` (`+` for the future is refused: no file has
/// an mtime there worth asking for).
pub fn parse_time(text: &str, now_ns: i64) -> Result<i64, String> {
    let t = text.trim();
    if t == "now" {
        return Ok(now_ns);
    }
    if let Some(rel) = t.strip_prefix('-') {
        return relative(rel).map(|d| now_ns - d).ok_or_else(|| {
            format!("{text:?}: a relative time is a minus, a number and s, m, h or d (\"-30m\")")
        });
    }
    rfc3339(t).ok_or_else(|| {
        format!(
            "{text:?} is not a time: give RFC 3339 (\"2026-12-06T07:00:00Z\", with Z or an \
             offset like +02:00), \"now\", or a relative time (\"-30m\")"
        )
    })
}

/// `30m` → nanoseconds.
fn relative(text: &str) -> Option<i64> {
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return None,
    };
    let n: i64 = text[..text.len() - 1].parse().ok().filter(|n| *n >= 0)?;
    n.checked_mul(unit)?.checked_mul(NS)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → Unix nanoseconds.
fn rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut frac_ns = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept = &f[..digits.min(9)];
        frac_ns = kept.parse::<i64>().ok()? * 10i64.pow(9 - kept.len() as u32);
        rest = &f[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let o = rest.as_bytes();
            if o.len() != 6 || o[3] != b':' {
                return None;
            }
            let (oh, om) = (
                rest[1..3].parse::<i64>().ok()?,
                rest[4..6].parse::<i64>().ok()?,
            );
            if oh > 23 || om > 59 {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    let days = days_from_civil(y, mo as u32, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + s - offset;
    secs.checked_mul(NS)?.checked_add(frac_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000 * NS;

    #[test]
    fn times_parse_as_rfc_3339_now_or_relative() {
        // `date -u -d 2026-12-06T07:00:00Z +%s` = 1796540400
        let at = 1_796_540_400 * NS;
        assert_eq!(parse_time("2026-12-06T07:00:00Z", NOW), Ok(at));
        assert_eq!(parse_time("2026-12-06T09:00:00+02:00", NOW), Ok(at));
        assert_eq!(parse_time("2026-12-06T06:30:00-00:30", NOW), Ok(at));
        assert_eq!(parse_time("2026-12-06T07:00:00.25Z", NOW), Ok(at + NS / 4));
        assert_eq!(
            parse_time("2026-12-06T07:00:00.1234567891Z", NOW),
            Ok(at + 123_456_789)
        );
        assert_eq!(parse_time("now", NOW), Ok(NOW));
        assert_eq!(parse_time("-30m", NOW), Ok(NOW - 1800 * NS));
        assert_eq!(parse_time("-90s", NOW), Ok(NOW - 90 * NS));
        assert_eq!(parse_time("-2h", NOW), Ok(NOW - 7200 * NS));
        assert_eq!(parse_time("-1d", NOW), Ok(NOW - 86_400 * NS));
    }

    #[test]
    fn a_bad_time_is_named_with_what_is_accepted() {
        for bad in [
            "",
            "yesterday",
            "2026-12-06",
            "2026-12-06T07:00:00",
            "2026-13-06T07:00:00Z",
            "2026-12-06T07:00:00+2:00",
            "2026-12-06T07:00:00.Z",
            "-30",
            "-m",
            "-30w",
            "--30m",
            "+30m",
            "2026-12-06T07:0a:00Z",
        ] {
            let e = parse_time(bad, NOW).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_slice_covers_its_sources_and_both_ends() {
        let s = Slice {
            since_ns: 10,
            until_ns: 20,
            sources: vec!["bags".into()],
        };
        assert!(s.covers("bags", 10) && s.covers("bags", 20));
        assert!(!s.covers("bags", 9) && !s.covers("bags", 21));
        assert!(!s.covers("logs", 15));
        let all = Slice {
            sources: Vec::new(),
            ..s
        };
        assert!(all.covers("logs", 15));
    }
}
