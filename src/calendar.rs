//! Unix seconds as calendar dates and RFC 3339 text, in UTC or at an offset: object
//! keys' dates, metadata, status and checkpoint times. Pure; no clock is read here.

/// Year, month, day of the day containing unix time `t` (seconds, UTC). Howard Hinnant's
/// days-to-civil algorithm, exact for every date a file can carry.
pub fn civil_date(t: i64) -> (i64, u32, u32) {
    let z = t.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date (the inverse of [`civil_date`]).
pub fn days_from_civil(y: i64, m: u32, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Year, month, day, hour, minute, second of unix time `t` in UTC.
pub fn utc_fields(t: i64) -> (i64, u32, u32, i64, i64, i64) {
    let (y, m, d) = civil_date(t);
    let s = t.rem_euclid(86_400);
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// RFC 3339 in UTC to the second, e.g. `2026-11-22T08:15:00Z`.
pub fn rfc3339_utc(t: i64) -> String {
    let (y, m, d, hh, mm, ss) = utc_fields(t);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// `t` as local time at `offset_seconds` east of UTC: `2026-11-22T20:00:00+08:00`.
pub fn rfc3339_at_offset(t: i64, offset_seconds: i32) -> String {
    if offset_seconds == 0 {
        return rfc3339_utc(t);
    }
    let (y, m, d, hh, mm, ss) = utc_fields(t + i64::from(offset_seconds));
    let sign = if offset_seconds < 0 { '-' } else { '+' };
    let off = offset_seconds.unsigned_abs() / 60;
    format!(
        "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{sign}{:02}:{:02}",
        off / 60,
        off % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_times_carry_their_offset() {
        assert_eq!(rfc3339_at_offset(0, 8 * 3600), "1970-01-01T08:00:00+08:00");
        assert_eq!(
            rfc3339_at_offset(0, -(5 * 3600 + 1800)),
            "1969-12-31T18:30:00-05:30"
        );
        assert_eq!(rfc3339_at_offset(0, 0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn civil_dates_round_trip() {
        for day in [-800_000i64, -1, 0, 59, 11_016, 20_414, 2_932_896] {
            let (y, m, d) = civil_date(day * 86_400);
            assert_eq!(days_from_civil(y, m, i64::from(d)), day, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(civil_date(951_782_400), (2000, 2, 29));
        assert_eq!(civil_date(1_795_392_000), (2026, 11, 23));
        assert_eq!(rfc3339_utc(1_795_392_000 + 3661), "2026-11-23T01:01:01Z");
    }
}
