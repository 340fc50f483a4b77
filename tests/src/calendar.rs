//! Calendar arithmetic for tests that put nodes' clocks near a month's end: the months
//! around a time and how far the next one is. Test code reads no period type of the
//! product on purpose (it checks the product's periods from outside).

/// The months (`YYYY-MM`) containing `now_ms` and after it, and the milliseconds from
/// `now_ms` to the first of the next (UTC).
pub fn next_month(now_ms: u64) -> (String, String, u64) {
    let days = now_ms / 86_400_000;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    // Days from 1970-01-01 to the first of the next month.
    let y = next_year - i64::from(next_month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = next_month;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let first_ms = ((era * 146_097 + doe - 719_468) as u64) * 86_400_000;
    (
        format!("{year:04}-{month:02}"),
        format!("{next_year:04}-{next_month:02}"),
        first_ms - now_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_month_is_the_calendar_month() {
        // 2026-11-30T12:00:00Z
        let (this, next, until) = next_month(1_796_040_000_000);
        assert_eq!((this.as_str(), next.as_str()), ("2026-11", "2026-12"));
        assert_eq!(until, 12 * 3_600_000);
        // 2026-12-31T23:00:00Z
        let (this, next, until) = next_month(1_798_758_000_000);
        assert_eq!((this.as_str(), next.as_str()), ("2026-12", "2027-01"));
        assert_eq!(until, 3_600_000);
    }
}
