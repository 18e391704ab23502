//! Calendar arithmetic and RFC 3339 timestamps, without a time crate: the one place that turns
//! instants into `2026-11-27T21:49:09.123456Z` and back (audit log, report, man page date).
//!
//! Instants are `SystemTime` or signed microseconds since 1970-01-01T00:00:00Z (what the
//! report aggregates); dates are days since that epoch, in the proleptic Gregorian calendar,
//! before 1970 included. No leap seconds: `:60` is read as `:59`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const SECS_PER_DAY: i64 = 86_400;

/// Why a timestamp or date did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    /// What was wrong, e.g. "no such day".
    pub reason: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an RFC 3339 timestamp: {}", self.reason)
    }
}

impl std::error::Error for ParseError {}

fn bad(reason: &'static str) -> ParseError {
    ParseError { reason }
}

/// Days since 1970-01-01 → (year, month 1-12, day 1-31) in the proleptic Gregorian calendar
/// (Howard Hinnant's civil_from_days: eras of 400 years, years starting in March so the
/// leap day is last). Any `i64` is accepted (computed in `i128`, so nothing overflows).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = i128::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1 [0, 365]
    let mp = (5 * doy + 2) / 153; // month from March [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    // |year| <= |days| / 365 + 1 fits an i64; day is in [1, 31] and month in [1, 12].
    (year as i64, month as u32, day as u32)
}

/// (year, month 1-12, day 1-31) → days since 1970-01-01; the inverse of
/// [`civil_from_days`] (Hinnant's days_from_civil). Not validated: see [`parse_date`].
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let (m, d) = (i64::from(m), i64::from(d));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn is_leap_year(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

/// Days in `month` (1-12) of `year`; `None` for a month out of range.
pub fn days_in_month(year: i64, month: u32) -> Option<u32> {
    Some(match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => return None,
    })
}

/// Microseconds since the epoch, negative before 1970, rounded toward the past (1 ns before
/// the epoch is -1); saturates at the ends of `i64` (some 292,000 years away).
pub fn micros_since_epoch(t: SystemTime) -> i64 {
    i64::try_from(micros_i128(t)).unwrap_or(if t >= UNIX_EPOCH { i64::MAX } else { i64::MIN })
}

fn micros_i128(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i128,
        // Round toward the past so e.g. 1 ns before the epoch is 23:59:59.999999.
        Err(e) => {
            let d = e.duration();
            -(d.as_micros() as i128) - i128::from(d.subsec_nanos() % 1000 != 0)
        }
    }
}

/// The instant `micros` microseconds after the epoch (before it when negative); the epoch
/// itself if the platform cannot represent it.
pub fn from_micros(micros: i64) -> SystemTime {
    let d = Duration::from_micros(micros.unsigned_abs());
    let t = if micros >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// Formats as RFC 3339 UTC with microseconds, e.g. "2026-11-27T21:49:09.123456Z".
/// Sub-microsecond digits are truncated; instants before 1970 are handled too.
pub fn format_rfc3339(t: SystemTime) -> String {
    format_micros_i128(micros_i128(t))
}

/// [`format_rfc3339`] of an instant in microseconds since the epoch.
pub fn format_micros(micros: i64) -> String {
    format_micros_i128(i128::from(micros))
}

fn format_micros_i128(micros: i128) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    // A SystemTime's seconds fit an i64, so its days always do; clamp rather than trust it.
    let days = secs.div_euclid(86_400);
    let days = i64::try_from(days).unwrap_or(if days < 0 { i64::MIN } else { i64::MAX });
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// The UTC date of a day number, "YYYY-MM-DD".
pub fn format_date(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, &d| n * 10 + i64::from(d - b'0')))
}

/// "YYYY-MM-DD" → days since 1970-01-01, validated (no February 30th).
pub fn parse_date(s: &str) -> Result<i64, ParseError> {
    date_of(s.as_bytes())
}

fn date_of(b: &[u8]) -> Result<i64, ParseError> {
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = *b else {
        return Err(bad("expected a date YYYY-MM-DD"));
    };
    let number = |b: &[u8]| digits(b).ok_or(bad("expected digits in YYYY-MM-DD"));
    let (y, m, d) = (
        number(&[y0, y1, y2, y3])?,
        number(&[m0, m1])?,
        number(&[d0, d1])?,
    );
    // Two digits each, so these fit.
    let (m, d) = (m as u32, d as u32);
    let month_days = days_in_month(y, m).ok_or(bad("no such month"))?;
    if d < 1 || d > month_days {
        return Err(bad("no such day"));
    }
    Ok(days_from_civil(y, m, d))
}

/// RFC 3339 → microseconds since the epoch. Accepts 'T', 't' or ' ' between date and time,
/// any number of fraction digits (beyond microseconds truncated), and `Z` or `±HH:MM`.
/// A leap second (:60) counts as :59.
pub fn parse_rfc3339(s: &str) -> Result<i64, ParseError> {
    let (date, rest) = s
        .as_bytes()
        .split_at_checked(10)
        .ok_or(bad("expected a date YYYY-MM-DD"))?;
    let days = date_of(date)?;
    let [b'T' | b't' | b' ', h0, h1, b':', n0, n1, b':', s0, s1, rest @ ..] = rest else {
        return Err(bad("expected a time THH:MM:SS after the date"));
    };
    let number = |b: &[u8]| digits(b).ok_or(bad("expected digits in HH:MM:SS"));
    let (hour, min, sec) = (
        number(&[*h0, *h1])?,
        number(&[*n0, *n1])?,
        number(&[*s0, *s1])?,
    );
    if hour > 23 || min > 59 || sec > 60 {
        return Err(bad("no such time of day"));
    }
    let (micros, rest) = match rest {
        [b'.', fraction @ ..] => {
            let n = fraction.iter().take_while(|d| d.is_ascii_digit()).count();
            let (fraction, rest) = fraction.split_at(n);
            if fraction.is_empty() {
                return Err(bad("expected digits after the decimal point"));
            }
            // Exactly six digits: pad, or truncate what is finer than a microsecond.
            let micros = fraction
                .iter()
                .chain(std::iter::repeat(&b'0'))
                .take(6)
                .fold(0, |n, &d| n * 10 + i64::from(d - b'0'));
            (micros, rest)
        }
        _ => (0, rest),
    };
    let offset = match *rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh0, oh1, b':', om0, om1] => {
            let number = |b: &[u8]| digits(b).ok_or(bad("expected digits in the offset"));
            let (oh, om) = (number(&[oh0, oh1])?, number(&[om0, om1])?);
            if oh > 23 || om > 59 {
                return Err(bad("no such offset"));
            }
            let offset = oh * 3600 + om * 60;
            if sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return Err(bad("expected Z or an offset +HH:MM at the end")),
    };
    let secs = days * SECS_PER_DAY + hour * 3600 + min * 60 + sec.min(59) - offset;
    Ok(secs * MICROS_PER_SEC + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_rfc3339(at(1_795_816_149, 123_456)),
            "2026-11-27T21:49:09.123456Z"
        );
        // Leap days: an ordinary leap year, a 400-year one; 2100 is not a leap year.
        assert_eq!(
            format_rfc3339(at(1_709_210_096, 1)),
            "2024-02-29T12:34:56.000001Z"
        );
        assert_eq!(
            format_rfc3339(at(951_782_400, 0)),
            "2000-02-29T00:00:00.000000Z"
        );
        assert_eq!(
            format_rfc3339(at(4_107_542_400 - 1, 999_999)),
            "2100-02-28T23:59:59.999999Z"
        );
        assert_eq!(
            format_rfc3339(at(4_107_542_400, 0)),
            "2100-03-01T00:00:00.000000Z"
        );
        assert_eq!(
            format_rfc3339(at(1_704_067_199, 0)),
            "2023-12-31T23:59:59.000000Z"
        );
        // Sub-microsecond digits are truncated; before the epoch rounds toward the past.
        assert_eq!(
            format_rfc3339(UNIX_EPOCH + Duration::new(0, 999)),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_nanos(1)),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            format_rfc3339(UNIX_EPOCH - Duration::from_secs(2_208_988_800)),
            "1900-01-01T00:00:00.000000Z"
        );
        assert_eq!(format_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(format_date(19_782), "2024-02-29");
    }

    #[test]
    fn civil_dates_round_trip_across_eras() {
        // Every day from 1600 to 2400, and both ends far out.
        let start = days_from_civil(1600, 1, 1);
        let end = days_from_civil(2400, 12, 31);
        let mut expected = (1600, 1, 1);
        for days in start..=end {
            let (y, m, d) = civil_from_days(days);
            assert_eq!((y, m, d), expected, "day {days}");
            assert_eq!(days_from_civil(y, m, d), days);
            expected = if Some(d) == days_in_month(y, m) {
                if m == 12 {
                    (y + 1, 1, 1)
                } else {
                    (y, m + 1, 1)
                }
            } else {
                (y, m, d + 1)
            };
        }
        for days in [i64::MIN / 2, -1_000_000_000, 1_000_000_000, i64::MAX / 2] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        // The extremes do not overflow.
        civil_from_days(i64::MIN);
        civil_from_days(i64::MAX);
    }

    #[test]
    fn leap_years() {
        for (y, leap) in [(1900, false), (2000, true), (2023, false), (2024, true)] {
            assert_eq!(is_leap_year(y), leap, "{y}");
            assert_eq!(days_in_month(y, 2), Some(if leap { 29 } else { 28 }));
        }
        assert!(is_leap_year(-4));
        assert_eq!(days_in_month(2024, 13), None);
        assert_eq!(days_in_month(2024, 0), None);
        assert_eq!(parse_date("2024-02-29"), Ok(19_782));
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("1900-02-29").is_err());
        assert_eq!(parse_date("2000-02-29"), Ok(days_from_civil(2000, 2, 29)));
    }

    #[test]
    fn parses_what_the_report_accepts() {
        let p = |s: &str| parse_rfc3339(s).ok();
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(p("1970-01-01t00:00:00z"), Some(0));
        assert_eq!(p("1970-01-01T00:00:01.5Z"), Some(1_500_000));
        assert_eq!(p("1970-01-01T00:00:00.1234569Z"), Some(123_456));
        assert_eq!(p("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(p("1969-12-31T19:00:00-05:00"), Some(0));
        assert_eq!(p("1969-12-31T23:59:59Z"), Some(-1_000_000));
        assert_eq!(p("1900-01-01T00:00:00Z"), Some(-2_208_988_800_000_000));
        assert_eq!(p("2016-12-31T23:59:60Z"), p("2016-12-31T23:59:59Z"));
        assert_eq!(p("2024-02-29 00:00:00Z"), Some(19_782 * 86_400 * 1_000_000));
        assert_eq!(parse_date("1969-12-31"), Ok(-1));
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-11-00T00:00:00Z",
            "2026-11-27T24:00:00Z",
            "2026-11-27T23:60:00Z",
            "2026-11-27T21:56:61Z",
            "2026-11-27T21:56:23",
            "2026-11-27T21:56:23.Z",
            "2026-11-27T21:56:23Zx",
            "2026-11-27T21:56:23+0100",
            "2026-11-27T21:56:23+24:00",
            "2026-11-27",
            "",
            "2026-11-27T21:5é:23Z",
            "2026-1é-27T21:56:23Z",
            "+2026-11-27T21:56:23Z",
        ] {
            let e = parse_rfc3339(bad).expect_err(bad);
            assert!(e.to_string().starts_with("not an RFC 3339 timestamp: "));
        }
    }

    #[test]
    fn round_trips() {
        for micros in [
            0,
            1,
            -1,
            999_999,
            -1_000_001,
            1_795_000_000_123_456,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
        ] {
            assert_eq!(
                parse_rfc3339(&format_micros(micros)),
                Ok(micros),
                "{micros}"
            );
            assert_eq!(micros_since_epoch(from_micros(micros)), micros);
            assert_eq!(format_rfc3339(from_micros(micros)), format_micros(micros));
        }
        let now = SystemTime::now();
        let back = from_micros(parse_rfc3339(&format_rfc3339(now)).unwrap());
        let lost = now.duration_since(back).unwrap();
        assert!(lost < Duration::from_micros(1), "{lost:?}");
        assert_eq!(micros_since_epoch(UNIX_EPOCH - Duration::from_nanos(1)), -1);
    }
}
