//! Operational-hours windows: whether uploading is allowed at an instant, under which
//! bandwidth cap, and when the next window opens. Pure functions of (schedule, unix time).
//!
//! A window lists weekdays and a local `start`..`end` time at `utc_offset`. When `end` is
//! at or before `start` the window crosses midnight: it opens on a listed day and closes
//! on the next day. Overlapping windows merge (uploading is allowed when any is open; the
//! cap is the largest of the open windows', none when any open window has none).

use serde_json::{Value, json};

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: i64 = 24 * 60;

#[derive(Debug, Clone)]
pub struct Schedule {
    /// Seconds east of UTC at which the windows' times are read.
    pub utc_offset_seconds: i32,
    /// At least one.
    pub windows: Vec<Window>,
}

#[derive(Debug, Clone)]
pub struct Window {
    /// Indexed by weekday, Monday = 0.
    pub days: [bool; 7],
    /// Minutes since local midnight, below 1440.
    pub start_minute: u32,
    /// Minutes since local midnight, up to 1440; at or below `start_minute` it is on the
    /// next day.
    pub end_minute: u32,
    pub max_bytes_per_second: Option<u64>,
}

/// Uploading is allowed now, with this cap (bytes per second), or `None` for no cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Open {
    pub max_bytes_per_second: Option<u64>,
}

/// Whether uploading is allowed at `t` under an optional schedule: no schedule means
/// always, without a cap.
pub fn allowed(schedule: Option<&Schedule>, t: i64) -> Option<Open> {
    match schedule {
        None => Some(Open {
            max_bytes_per_second: None,
        }),
        Some(s) => s.open_at(t),
    }
}

/// `"mon"`..`"sun"` (any case) to 0..6.
pub fn weekday_index(name: &str) -> Option<usize> {
    let lower = name.to_ascii_lowercase();
    DAY_NAMES.iter().position(|d| {
        lower == *d || lower.starts_with(d) && lower.len() > 3 && is_full_day_name(&lower)
    })
}

fn is_full_day_name(lower: &str) -> bool {
    [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ]
    .contains(&lower)
}

/// Monday = 0 weekday and minute of day, local to `offset`, of unix time `t`.
fn local_day_minute(t: i64, offset_seconds: i32) -> (usize, i64) {
    let local = t + offset_seconds as i64;
    let days = local.div_euclid(86_400);
    let minute = local.rem_euclid(86_400) / 60;
    // 1970-01-01 was a Thursday (index 3).
    (((days + 3).rem_euclid(7)) as usize, minute)
}

impl Window {
    fn is_open(&self, weekday: usize, minute: i64) -> bool {
        let (start, end) = (self.start_minute as i64, self.end_minute as i64);
        if start < end {
            self.days[weekday] && start <= minute && minute < end
        } else {
            let yesterday = (weekday + 6) % 7;
            (self.days[weekday] && minute >= start) || (self.days[yesterday] && minute < end)
        }
    }
}

impl Schedule {
    /// Whether uploading is allowed at unix time `t`, and under which cap.
    pub fn open_at(&self, t: i64) -> Option<Open> {
        let (weekday, minute) = local_day_minute(t, self.utc_offset_seconds);
        let mut open: Option<Open> = None;
        for w in self.windows.iter().filter(|w| w.is_open(weekday, minute)) {
            open = Some(match (open, w.max_bytes_per_second) {
                (None, cap) => Open {
                    max_bytes_per_second: cap,
                },
                (
                    Some(Open {
                        max_bytes_per_second: None,
                    }),
                    _,
                )
                | (Some(_), None) => Open {
                    max_bytes_per_second: None,
                },
                (
                    Some(Open {
                        max_bytes_per_second: Some(a),
                    }),
                    Some(b),
                ) => Open {
                    max_bytes_per_second: Some(a.max(b)),
                },
            });
        }
        open
    }

    /// The first unix time at or after `t` (to the minute) when some window is open, or
    /// `None` if none opens within a week (which validation makes impossible).
    pub fn next_open(&self, t: i64) -> Option<i64> {
        if self.open_at(t).is_some() {
            return Some(t);
        }
        let first = t - t.rem_euclid(60) + 60;
        (0..7 * MINUTES_PER_DAY)
            .map(|m| first + m * 60)
            .find(|&c| self.open_at(c).is_some())
    }

    /// The first unix time after `t` (to the minute) when the state of `open_at` changes,
    /// so a planner can sleep until then instead of polling.
    pub fn next_change(&self, t: i64) -> Option<i64> {
        let now = self.open_at(t);
        let first = t - t.rem_euclid(60) + 60;
        (0..7 * MINUTES_PER_DAY)
            .map(|m| first + m * 60)
            .find(|&c| self.open_at(c) != now)
    }

    pub fn to_json(&self) -> Value {
        let off = self.utc_offset_seconds;
        let sign = if off < 0 { '-' } else { '+' };
        let abs = off.unsigned_abs() / 60;
        let clock = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        json!({
            "utc_offset": format!("{sign}{:02}:{:02}", abs / 60, abs % 60),
            "windows": self.windows.iter().map(|w| json!({
                "days": DAY_NAMES.iter().zip(w.days).filter(|(_, on)| *on).map(|(d, _)| *d).collect::<Vec<_>>(),
                "start": clock(w.start_minute),
                "end": clock(w.end_minute),
                "max_bytes_per_second": w.max_bytes_per_second,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23 is a Monday; 00:00 UTC.
    const MONDAY_UTC: i64 = 1_795_392_000;

    fn at(day: i64, h: i64, m: i64) -> i64 {
        MONDAY_UTC + day * 86_400 + h * 3600 + m * 60
    }

    fn weekday_nights() -> Schedule {
        let mut days = [false; 7];
        days[..5].iter_mut().for_each(|d| *d = true);
        Schedule {
            utc_offset_seconds: 0,
            windows: vec![Window {
                days,
                start_minute: 20 * 60,
                end_minute: 6 * 60,
                max_bytes_per_second: None,
            }],
        }
    }

    #[test]
    fn monday_constant_is_a_monday() {
        assert_eq!(local_day_minute(MONDAY_UTC, 0), (0, 0));
        assert_eq!(local_day_minute(MONDAY_UTC - 1, 0), (6, 1439));
    }

    #[test]
    fn window_crossing_midnight_opens_on_listed_days_and_closes_next_morning() {
        let s = weekday_nights();
        assert!(s.open_at(at(0, 19, 59)).is_none());
        assert!(s.open_at(at(0, 20, 0)).is_some(), "opens at start");
        assert!(s.open_at(at(1, 5, 59)).is_some(), "still open next morning");
        assert!(s.open_at(at(1, 6, 0)).is_none(), "closed at end");
        // Friday night runs into Saturday morning; Saturday night does not open.
        assert!(s.open_at(at(5, 3, 0)).is_some());
        assert!(s.open_at(at(5, 21, 0)).is_none());
        // Monday early morning belongs to Sunday night, which is not listed.
        assert!(s.open_at(at(0, 3, 0)).is_none());
    }

    #[test]
    fn each_weekday_is_its_own() {
        for day in 0..7 {
            let mut days = [false; 7];
            days[day] = true;
            let s = Schedule {
                utc_offset_seconds: 0,
                windows: vec![Window {
                    days,
                    start_minute: 0,
                    end_minute: 1440,
                    max_bytes_per_second: None,
                }],
            };
            for probe in 0..7 {
                assert_eq!(
                    s.open_at(at(probe, 12, 0)).is_some(),
                    probe == day as i64,
                    "day {day} probe {probe}"
                );
            }
        }
    }

    #[test]
    fn utc_offset_shifts_the_window() {
        let mut s = weekday_nights();
        s.utc_offset_seconds = 8 * 3600;
        // 12:00 UTC Monday is 20:00 at +08:00.
        assert!(s.open_at(at(0, 12, 0)).is_some());
        assert!(s.open_at(at(0, 11, 59)).is_none());
    }

    #[test]
    fn overlapping_windows_merge_and_caps_take_the_largest() {
        let all = [true; 7];
        let s = Schedule {
            utc_offset_seconds: 0,
            windows: vec![
                Window {
                    days: all,
                    start_minute: 60,
                    end_minute: 180,
                    max_bytes_per_second: Some(100),
                },
                Window {
                    days: all,
                    start_minute: 120,
                    end_minute: 240,
                    max_bytes_per_second: Some(500),
                },
            ],
        };
        assert_eq!(
            s.open_at(at(0, 1, 30)),
            Some(Open {
                max_bytes_per_second: Some(100)
            })
        );
        assert_eq!(
            s.open_at(at(0, 2, 30)),
            Some(Open {
                max_bytes_per_second: Some(500)
            })
        );
        assert_eq!(
            s.open_at(at(0, 3, 30)),
            Some(Open {
                max_bytes_per_second: Some(500)
            })
        );
        assert_eq!(s.next_change(at(0, 0, 10)), Some(at(0, 1, 0)));
        assert_eq!(s.next_open(at(0, 4, 0)), Some(at(1, 1, 0)));
    }

    #[test]
    fn no_schedule_means_always_open_without_a_cap() {
        for t in [0, MONDAY_UTC, at(3, 23, 59), at(6, 4, 0)] {
            assert_eq!(
                allowed(None, t),
                Some(Open {
                    max_bytes_per_second: None
                })
            );
        }
        let s = weekday_nights();
        assert_eq!(allowed(Some(&s), at(0, 12, 0)), None);
    }

    #[test]
    fn day_names_parse() {
        assert_eq!(weekday_index("mon"), Some(0));
        assert_eq!(weekday_index("Sunday"), Some(6));
        assert_eq!(weekday_index("mond"), None);
        assert_eq!(weekday_index("xyz"), None);
    }
}
