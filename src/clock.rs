//! The time requests are signed with.
//!
//! Vehicles often boot without a real-time clock, and SigV4 refuses requests signed more
//! than 15 minutes off the server's time. Every answer's `Date` header is compared with
//! the local clock; when they differ by more than [`MAX_SKEW_SECONDS`], the difference
//! becomes an offset added to the local clock when signing. Every answer re-checks it, so
//! a clock that jumps later (NTP finally syncing, a wrong RTC corrected) is followed, and
//! the offset returns to 0 once the clocks agree. It is logged when it changes, not per
//! request.

use std::sync::atomic::{AtomicI64, Ordering};

/// A `Date` further than this from the signing clock replaces the offset.
pub const MAX_SKEW_SECONDS: i64 = 5 * 60;

/// Seconds added to the local clock when signing.
static OFFSET: AtomicI64 = AtomicI64::new(0);

/// The system clock, Unix seconds.
pub fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Unix time as the schedule sees it: the wall clock (shifted by a test-only knob in test
/// builds, so that tests can stand at a window's edge without waiting: [`crate::knobs`]).
pub fn schedule_now() -> i64 {
    system_now() + crate::knobs::schedule_offset_seconds()
}

/// The system clock, nanoseconds since the Unix epoch (0 before it).
pub fn wall_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The local clock, Unix seconds (shifted by a test-only knob in test builds, standing in
/// for a vehicle whose clock is wrong: [`crate::knobs`]).
pub fn local_now() -> i64 {
    system_now() + crate::knobs::clock_skew_seconds()
}

/// The time to sign with: the local clock corrected by the server's.
pub fn signing_now() -> i64 {
    local_now() + OFFSET.load(Ordering::Relaxed)
}

/// Takes note of a server's `Date` header. Returns true when it changed the offset (the
/// request it came with was probably signed with the wrong time).
pub fn observe_server_date(date: &str) -> bool {
    let Some(server) = parse_http_date(date) else {
        return false;
    };
    let current = OFFSET.load(Ordering::Relaxed);
    let Some(new) = correction(current, server - local_now()) else {
        return false;
    };
    if OFFSET
        .compare_exchange(current, new, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        // Another answer corrected it at the same moment.
        return true;
    }
    if new == 0 {
        log::info!("the local clock agrees with the server's again; signing with it");
    } else {
        log::warn!(
            "the local clock is {} s {} the server's (Date: {date}); signing with the server's time",
            new.abs(),
            if new > 0 { "behind" } else { "ahead of" }
        );
    }
    true
}

/// The new offset, given the current one and the measured `server - local` difference,
/// or `None` to keep it.
pub fn correction(current: i64, measured: i64) -> Option<i64> {
    if (measured - current).abs() <= MAX_SKEW_SECONDS {
        None
    } else if measured.abs() <= MAX_SKEW_SECONDS {
        Some(0)
    } else {
        Some(measured)
    }
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110's IMF-fixdate; the weekday
/// is not checked) as Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let rest = s.trim().split_once(", ")?.1;
    let mut it = rest.split_whitespace();
    let day: i64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    Some(crate::calendar::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_and_bad_ones_do_not() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Sun, 22 Nov 2026 00:00:00 GMT"),
            Some(1_795_305_600)
        );
        for bad in [
            "",
            "yesterday",
            "Sun, 06 Nov 1994 08:49:37 CET",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn offset_follows_the_server_beyond_five_minutes_and_returns_to_zero() {
        // Within five minutes: left alone.
        assert_eq!(correction(0, 299), None);
        assert_eq!(correction(0, -300), None);
        // A vehicle booted at 1970, or hours ahead.
        assert_eq!(correction(0, 1_700_000_000), Some(1_700_000_000));
        assert_eq!(correction(0, -7200), Some(-7200));
        // Corrected already: jitter of the Date's one-second resolution changes nothing.
        assert_eq!(correction(7200, 7201), None);
        // The clock jumps again (NTP syncs): back to no offset.
        assert_eq!(correction(7200, 3), Some(0));
        // Or to another wrong time.
        assert_eq!(correction(7200, -3600), Some(-3600));
    }
}
