//! Billing periods: the UTC calendar month (the default, what invoices use) and the UTC hour
//! (buckets for usage charts), computed from a unix timestamp in milliseconds that the
//! caller passes in.
//!
//! This module reads no clock: the caller's `at_ms` decides, so replicas and tests agree on
//! which period an event belongs to. The calendar arithmetic is Howard Hinnant's
//! `days_from_civil` / `civil_from_days` (proleptic Gregorian, exact for every `u64`
//! millisecond), hand-written because it is twenty lines and a date crate would be the
//! only reason to pull one in. A decoded period is validated (month 1–12, start
//! representable), so a malformed peer message cannot build one that panics later.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

const MS_PER_HOUR: u64 = 3_600_000;
const MS_PER_DAY: u64 = 86_400_000;
const HOURS_PER_DAY: u64 = 24;

/// Which kind of period to compute.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub enum PeriodKind {
    /// A UTC calendar month: the billing period.
    #[default]
    Month,
    /// A UTC hour: a bucket for charts.
    Hour,
}

/// One billing period or chart bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "PeriodRepr", into = "PeriodRepr")]
pub enum Period {
    /// A UTC calendar month; `month` is 1–12.
    Month { year: u32, month: u8 },
    /// A UTC hour, counted from the unix epoch.
    Hour { hours_since_epoch: u64 },
}

/// A period that does not exist or cannot be represented.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PeriodError {
    #[error("month {0} is not in 1..=12")]
    Month(u8),
    #[error("year {0} is before 1970 or its start is past the last representable millisecond")]
    Year(u32),
    #[error("hour {0} is past the last representable millisecond")]
    Hour(u64),
    #[error("cannot parse {0:?} as a period (expected YYYY-MM or YYYY-MM-DDTHH)")]
    Syntax(String),
}

/// The wire shape of [`Period`]; converting back validates it.
#[derive(Clone, Copy, Serialize, Deserialize)]
enum PeriodRepr {
    Month { year: u32, month: u8 },
    Hour { hours_since_epoch: u64 },
}

impl TryFrom<PeriodRepr> for Period {
    type Error = PeriodError;
    fn try_from(repr: PeriodRepr) -> Result<Self, PeriodError> {
        match repr {
            PeriodRepr::Month { year, month } => Period::month(year, month),
            PeriodRepr::Hour { hours_since_epoch } => Period::hour(hours_since_epoch),
        }
    }
}

impl From<Period> for PeriodRepr {
    fn from(period: Period) -> Self {
        match period {
            Period::Month { year, month } => PeriodRepr::Month { year, month },
            Period::Hour { hours_since_epoch } => PeriodRepr::Hour { hours_since_epoch },
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = i64::from((month + 9) % 12);
    let day_of_year = (153 * month_from_march + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Milliseconds from the epoch to the first instant of a month, if it fits in `u64`.
fn month_start_ms(year: u32, month: u8) -> Option<u64> {
    let days = days_from_civil(i64::from(year), u32::from(month), 1);
    let days = u64::try_from(days).ok()?;
    days.checked_mul(MS_PER_DAY)
}

impl Period {
    /// A calendar month, validated: `month` in 1–12, `year` from 1970 and its first
    /// millisecond representable as `u64` milliseconds since the epoch.
    pub fn month(year: u32, month: u8) -> Result<Period, PeriodError> {
        if !(1..=12).contains(&month) {
            return Err(PeriodError::Month(month));
        }
        if year < 1970 || month_start_ms(year, month).is_none() {
            return Err(PeriodError::Year(year));
        }
        Ok(Period::Month { year, month })
    }

    /// An hour bucket, validated: its first millisecond is representable.
    pub fn hour(hours_since_epoch: u64) -> Result<Period, PeriodError> {
        if hours_since_epoch.checked_mul(MS_PER_HOUR).is_none() {
            return Err(PeriodError::Hour(hours_since_epoch));
        }
        Ok(Period::Hour { hours_since_epoch })
    }

    /// The period of `kind` that contains the instant `at_ms` (unix time, milliseconds).
    pub fn containing(kind: PeriodKind, at_ms: u64) -> Period {
        match kind {
            PeriodKind::Month => Period::month_containing(at_ms),
            PeriodKind::Hour => Period::hour_containing(at_ms),
        }
    }

    /// The UTC calendar month containing `at_ms`: the billing period.
    pub fn month_containing(at_ms: u64) -> Period {
        // u64::MAX ms is about 213e9 days: fits i64, and the year (about 584e6) fits u32.
        let (year, month, _) = civil_from_days((at_ms / MS_PER_DAY) as i64);
        Period::Month {
            year: year as u32,
            month: month as u8,
        }
    }

    /// The UTC hour containing `at_ms`: a chart bucket.
    pub fn hour_containing(at_ms: u64) -> Period {
        Period::Hour {
            hours_since_epoch: at_ms / MS_PER_HOUR,
        }
    }

    /// The kind of this period.
    pub fn kind(&self) -> PeriodKind {
        match self {
            Period::Month { .. } => PeriodKind::Month,
            Period::Hour { .. } => PeriodKind::Hour,
        }
    }

    /// The first millisecond of the period.
    pub fn start_ms(&self) -> u64 {
        match *self {
            // Validated at construction, so the start is representable.
            Period::Month { year, month } => month_start_ms(year, month).unwrap_or(u64::MAX),
            Period::Hour { hours_since_epoch } => hours_since_epoch.saturating_mul(MS_PER_HOUR),
        }
    }

    /// The first millisecond after the period (exclusive end). The last representable
    /// period ends at `u64::MAX`, where this saturates.
    pub fn end_ms(&self) -> u64 {
        match self.next() {
            Some(next) => next.start_ms(),
            None => u64::MAX,
        }
    }

    /// Whether the instant `at_ms` falls in this period.
    pub fn contains(&self, at_ms: u64) -> bool {
        Period::containing(self.kind(), at_ms) == *self
    }

    /// The period that follows this one, if it is representable.
    pub fn next(&self) -> Option<Period> {
        match *self {
            Period::Month { year, month } => {
                let (year, month) = if month == 12 {
                    (year.checked_add(1)?, 1)
                } else {
                    (year, month + 1)
                };
                Period::month(year, month).ok()
            }
            Period::Hour { hours_since_epoch } => {
                Period::hour(hours_since_epoch.checked_add(1)?).ok()
            }
        }
    }
}

impl fmt::Display for Period {
    /// `2026-11` for a month, `2026-11-22T20` for an hour (UTC).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Period::Month { year, month } => write!(f, "{year:04}-{month:02}"),
            Period::Hour { hours_since_epoch } => {
                let days = (hours_since_epoch / HOURS_PER_DAY) as i64;
                let (year, month, day) = civil_from_days(days);
                let hour = hours_since_epoch % HOURS_PER_DAY;
                write!(f, "{year:04}-{month:02}-{day:02}T{hour:02}")
            }
        }
    }
}

impl FromStr for Period {
    type Err = PeriodError;

    /// Parses what `Display` writes: `YYYY-MM` or `YYYY-MM-DDTHH`.
    fn from_str(text: &str) -> Result<Period, PeriodError> {
        let syntax = || PeriodError::Syntax(text.chars().take(64).collect());
        let number = |part: &str, digits: std::ops::RangeInclusive<usize>| {
            if !digits.contains(&part.len()) || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            part.parse::<u32>().map_err(|_| syntax())
        };
        let (date, hour) = match text.split_once('T') {
            Some((date, hour)) => (date, Some(number(hour, 2..=2)?)),
            None => (text, None),
        };
        let mut parts = date.split('-');
        let year = number(parts.next().ok_or_else(syntax)?, 4..=9)?;
        let month = number(parts.next().ok_or_else(syntax)?, 2..=2)?;
        let day = parts.next().map(|d| number(d, 2..=2)).transpose()?;
        if parts.next().is_some() || month > 12 {
            return Err(syntax());
        }
        let period = Period::month(year, month as u8)?;
        match (day, hour) {
            (None, None) => Ok(period),
            (Some(day), Some(hour)) => {
                let next_start_ms = period.end_ms();
                let day_start_ms = period.start_ms() + u64::from(day.max(1) - 1) * MS_PER_DAY;
                if day == 0 || hour > 23 || day_start_ms >= next_start_ms {
                    return Err(syntax());
                }
                Period::hour(day_start_ms / MS_PER_HOUR + u64::from(hour))
            }
            _ => Err(syntax()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix seconds of UTC instants, from `date -u -d ... +%s`.
    const S_2024_01_01: u64 = 1_704_067_200;
    const S_2024_02_29: u64 = 1_709_164_800;
    const S_2024_03_01: u64 = 1_709_251_200;
    const S_2023_03_01: u64 = 1_677_628_800;
    const S_2000_03_01: u64 = 951_868_800;
    const S_2100_03_01: u64 = 4_107_542_400;

    fn month(year: u32, month: u8) -> Period {
        Period::month(year, month).unwrap()
    }

    #[test]
    fn epoch_is_january_1970() {
        assert_eq!(Period::month_containing(0), month(1970, 1));
        assert_eq!(month(1970, 1).start_ms(), 0);
        assert_eq!(Period::hour_containing(0), Period::hour(0).unwrap());
    }

    #[test]
    fn year_boundary() {
        let at_ms = S_2024_01_01 * 1000;
        assert_eq!(Period::month_containing(at_ms - 1), month(2023, 12));
        assert_eq!(Period::month_containing(at_ms), month(2024, 1));
        assert_eq!(month(2023, 12).end_ms(), at_ms);
        assert_eq!(month(2023, 12).next(), Some(month(2024, 1)));
        assert_eq!(month(2024, 1).start_ms(), at_ms);
    }

    #[test]
    fn leap_day_belongs_to_february() {
        // 2024 is a leap year: 29 February exists, March starts a day later.
        assert_eq!(
            Period::month_containing(S_2024_02_29 * 1000 + 12 * MS_PER_HOUR),
            month(2024, 2)
        );
        let march_ms = S_2024_03_01 * 1000;
        assert_eq!(Period::month_containing(march_ms - 1), month(2024, 2));
        assert_eq!(Period::month_containing(march_ms), month(2024, 3));
        assert_eq!(month(2024, 2).end_ms(), march_ms);
        assert_eq!(
            month(2024, 2).end_ms() - month(2024, 2).start_ms(),
            29 * MS_PER_DAY
        );
    }

    #[test]
    fn century_rules() {
        // 2023: common year; 2000: leap (divisible by 400); 2100: common (by 100 only).
        assert_eq!(month(2023, 3).start_ms(), S_2023_03_01 * 1000);
        assert_eq!(
            month(2023, 2).end_ms() - month(2023, 2).start_ms(),
            28 * MS_PER_DAY
        );
        assert_eq!(month(2000, 3).start_ms(), S_2000_03_01 * 1000);
        assert_eq!(
            month(2000, 2).end_ms() - month(2000, 2).start_ms(),
            29 * MS_PER_DAY
        );
        assert_eq!(month(2100, 3).start_ms(), S_2100_03_01 * 1000);
        assert_eq!(
            month(2100, 2).end_ms() - month(2100, 2).start_ms(),
            28 * MS_PER_DAY
        );
        assert_eq!(
            Period::month_containing(S_2100_03_01 * 1000 - 1),
            month(2100, 2)
        );
    }

    #[test]
    fn hours_across_midnight_and_month_end() {
        let march_ms = S_2024_03_01 * 1000;
        let before = Period::hour_containing(march_ms - 1);
        let after = Period::hour_containing(march_ms);
        assert_eq!(before.to_string(), "2024-02-29T23");
        assert_eq!(after.to_string(), "2024-03-01T00");
        assert_eq!(before.next(), Some(after));
        assert_eq!(before.end_ms(), march_ms);
        assert!(after.contains(march_ms + MS_PER_HOUR - 1));
        assert!(!after.contains(march_ms + MS_PER_HOUR));
    }

    #[test]
    fn containing_uses_the_kind_and_month_is_default() {
        assert_eq!(PeriodKind::default(), PeriodKind::Month);
        let at_ms = S_2024_03_01 * 1000 + 5;
        assert_eq!(Period::containing(PeriodKind::Month, at_ms), month(2024, 3));
        assert_eq!(
            Period::containing(PeriodKind::Hour, at_ms).kind(),
            PeriodKind::Hour
        );
    }

    #[test]
    fn the_whole_u64_range_is_covered() {
        let last = Period::month_containing(u64::MAX);
        assert!(last.contains(u64::MAX));
        assert_eq!(last.next(), None);
        assert_eq!(last.end_ms(), u64::MAX);
        let last_hour = Period::hour_containing(u64::MAX);
        assert_eq!(last_hour.next(), None);
        assert!(last_hour.contains(u64::MAX));
        assert_eq!(last_hour.end_ms(), u64::MAX);
    }

    #[test]
    fn invalid_periods_are_refused() {
        assert_eq!(Period::month(2024, 0), Err(PeriodError::Month(0)));
        assert_eq!(Period::month(2024, 13), Err(PeriodError::Month(13)));
        assert_eq!(Period::month(1969, 12), Err(PeriodError::Year(1969)));
        assert!(Period::month(u32::MAX, 1).is_err());
        assert!(Period::hour(u64::MAX).is_err());
        // The decoder validates too.
        let bad = postcard::to_allocvec(&PeriodRepr::Month {
            year: 2024,
            month: 13,
        })
        .unwrap();
        assert!(postcard::from_bytes::<Period>(&bad).is_err());
    }

    #[test]
    fn display_and_parse_round_trip() {
        for text in [
            "2024-02",
            "1970-01",
            "2100-12",
            "2024-02-29T23",
            "2026-11-22T20",
        ] {
            let period: Period = text.parse().unwrap();
            assert_eq!(period.to_string(), text);
        }
        for bad in [
            "",
            "2024",
            "2024-13",
            "2024-00",
            "2024-2",
            "2023-02-29T00",
            "2024-02-30T00",
            "2024-02-28T24",
            "2024-02-00T01",
            "2024-02-28",
            "x024-01",
            "2024-01-01T1",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn civil_conversions_agree_over_four_centuries() {
        // Every day from 1970 to 2370 round-trips and is one more than the day before.
        let mut previous = civil_from_days(-1);
        for days in 0..146_097 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((y, m, d) > previous);
            previous = (y, m, d);
        }
    }
}
