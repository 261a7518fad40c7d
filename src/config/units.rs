//! Sizes, durations, clock times and UTC offsets as the config writes them: a number or
//! a string with a unit. Pure.

use std::time::Duration;

use super::{ConfigError, Quantity};

pub(super) fn opt_size(field: &str, q: Option<Quantity>, default: u64) -> Result<u64, ConfigError> {
    q.map_or(Ok(default), |q| size(field, q))
}

pub(super) fn opt_duration(
    field: &str,
    q: Option<Quantity>,
    default_seconds: u64,
) -> Result<Duration, ConfigError> {
    q.map_or(Ok(Duration::from_secs(default_seconds)), |q| {
        duration(field, q)
    })
}

pub(super) fn size(field: &str, q: Quantity) -> Result<u64, ConfigError> {
    match q {
        Quantity::Number(n) if n >= 0.0 && n.fract() == 0.0 && n < 9.0e15 => Ok(n as u64),
        Quantity::Number(n) => Err(ConfigError::field(
            field,
            format!("{n} is not a whole number of bytes"),
        )),
        Quantity::Text(t) => parse_size(&t).ok_or_else(|| {
            ConfigError::field(
                field,
                format!("{t:?} is not a size such as 8388608, \"8MiB\" or \"500KB\""),
            )
        }),
    }
}

pub(super) fn duration(field: &str, q: Quantity) -> Result<Duration, ConfigError> {
    match q {
        Quantity::Number(n) if n.is_finite() && (0.0..1.0e9).contains(&n) => {
            Ok(Duration::from_secs_f64(n))
        }
        Quantity::Number(n) => Err(ConfigError::field(
            field,
            format!("{n} is not a duration in seconds"),
        )),
        Quantity::Text(t) => parse_duration(&t).ok_or_else(|| {
            ConfigError::field(
                field,
                format!("{t:?} is not a duration such as 60, \"90s\", \"5m\" or \"2h\""),
            )
        }),
    }
}

/// `"8MiB"`, `"500KB"`, `"1048576"`, `"1.5GiB"`: binary suffixes (K, KiB, ...) are 1024-based,
/// decimal ones (KB, MB, GB) 1000-based.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "KiB" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 9.0e15).then_some(v as u64)
}

/// `"90"`, `"90s"`, `"5m"`, `"2h"`, `"1d"`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && (0.0..1.0e9).contains(&v)).then(|| Duration::from_secs_f64(v))
}

/// `"HH:MM"` to minutes since midnight; `"24:00"` is allowed (as an end).
pub(super) fn parse_clock(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u32 = h.parse().ok()?;
    let m: u32 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// `"+08:00"`, `"-05:30"`, `"Z"` to seconds east of UTC.
pub fn parse_utc_offset(text: &str) -> Option<i32> {
    if text == "Z" || text == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let minutes = parse_clock(rest)? as i32;
    (minutes <= 14 * 60).then_some(sign * minutes * 60)
}
