//! Calendar dates as FHIR writes them: possibly partial (`1958`, `1958-03`), possibly with a
//! time and zone. Only the calendar arithmetic the rules need, with no time-zone database:
//! the date part is taken as written.

use std::fmt;

/// A full calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    pub month: u8,
    pub day: u8,
}

impl Date {
    /// A valid date, or `None`.
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        (1..=12)
            .contains(&month)
            .then_some(())
            .filter(|_| day >= 1 && day <= days_in_month(year, month))
            .map(|_| Date { year, month, day })
    }

    /// Parses `YYYY-MM-DD` (the form of `--today`).
    pub fn parse(s: &str) -> Option<Date> {
        match PartialDate::parse(s)? {
            PartialDate {
                year,
                month: Some(m),
                day: Some(d),
                ..
            } => Date::new(year, m, d),
            _ => None,
        }
    }

    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` after 1970-01-01.
    pub fn from_days_since_epoch(days: i64) -> Date {
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// Whole years from `self` (a birth date) to `today`.
    pub fn years_until(self, today: Date) -> i32 {
        let mut years = today.year - self.year;
        if (today.month, today.day) < (self.month, self.day) {
            years -= 1;
        }
        years
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// A FHIR `date` or `dateTime`, possibly partial. `instant` orders results that share a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartialDate {
    pub year: i32,
    pub month: Option<u8>,
    pub day: Option<u8>,
    /// Seconds since the epoch, in UTC, when a full dateTime with a zone was given.
    pub instant: Option<i64>,
}

impl PartialDate {
    /// Parses `YYYY`, `YYYY-MM`, `YYYY-MM-DD` or a dateTime; `None` for anything else.
    pub fn parse(s: &str) -> Option<PartialDate> {
        let s = s.trim();
        let b = s.as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = s.get(r)?;
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())?
        };
        let year = num(0..4)? as i32;
        if b.len() == 4 {
            return Some(PartialDate {
                year,
                month: None,
                day: None,
                instant: None,
            });
        }
        if b.get(4) != Some(&b'-') {
            return None;
        }
        let month = num(5..7)? as u8;
        if !(1..=12).contains(&month) {
            return None;
        }
        if b.len() == 7 {
            return Some(PartialDate {
                year,
                month: Some(month),
                day: None,
                instant: None,
            });
        }
        if b.get(7) != Some(&b'-') {
            return None;
        }
        let day = num(8..10)? as u8;
        let date = Date::new(year, month, day)?;
        if b.len() == 10 {
            return Some(PartialDate {
                year,
                month: Some(month),
                day: Some(day),
                instant: None,
            });
        }
        if b.get(10) != Some(&b'T') {
            return None;
        }
        let instant = parse_time(&s[11..])
            .map(|(secs, offset)| date.days_since_epoch() * 86_400 + secs - offset);
        Some(PartialDate {
            year,
            month: Some(month),
            day: Some(day),
            instant,
        })
    }

    /// The earliest full date this partial date may stand for.
    pub fn earliest(self) -> Date {
        Date {
            year: self.year,
            month: self.month.unwrap_or(1),
            day: self.day.unwrap_or(1),
        }
    }

    /// The latest full date this partial date may stand for.
    pub fn latest(self) -> Date {
        let month = self.month.unwrap_or(12);
        Date {
            year: self.year,
            month,
            day: self.day.unwrap_or_else(|| days_in_month(self.year, month)),
        }
    }

    /// A key that orders dates chronologically (partial dates sort at their earliest day).
    pub fn sort_key(self) -> i64 {
        self.instant
            .unwrap_or_else(|| self.earliest().days_since_epoch() * 86_400)
    }
}

impl fmt::Display for PartialDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.year)?;
        if let Some(m) = self.month {
            write!(f, "-{m:02}")?;
        }
        if let Some(d) = self.day {
            write!(f, "-{d:02}")?;
        }
        Ok(())
    }
}

/// `hh:mm:ss[.fff](Z|±hh:mm)` into (seconds of the day, zone offset in seconds).
fn parse_time(t: &str) -> Option<(i64, i64)> {
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        let p = t.get(r)?;
        p.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| p.parse().ok())?
    };
    let secs = n(0..2)? * 3600 + n(3..5)? * 60 + n(6..8)?;
    let mut rest = &t[8..];
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest.as_bytes().first() {
        Some(b'Z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let o = h * 3600 + m * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        // FHIR requires a zone; a missing one is read as UTC rather than refused.
        None => 0,
        _ => return None,
    };
    Some((secs, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_dates_parse_to_their_precision() {
        assert_eq!(PartialDate::parse("1958").unwrap().month, None);
        assert_eq!(PartialDate::parse("1958-03").unwrap().day, None);
        assert_eq!(
            PartialDate::parse("1958-03-07").unwrap().earliest(),
            Date::new(1958, 3, 7).unwrap()
        );
        assert!(PartialDate::parse("1958-13").is_none());
        assert!(PartialDate::parse("1958-02-30").is_none());
        assert!(PartialDate::parse("next tuesday").is_none());
    }

    #[test]
    fn datetimes_with_zones_order_by_instant() {
        let a = PartialDate::parse("2026-11-01T23:30:00-02:00").unwrap();
        let b = PartialDate::parse("2026-11-02T00:30:00Z").unwrap();
        assert!(a.sort_key() > b.sort_key());
    }

    #[test]
    fn age_counts_whole_years_and_birthdays() {
        let born = Date::new(1961, 12, 2).unwrap();
        assert_eq!(born.years_until(Date::new(2026, 12, 1).unwrap()), 64);
        assert_eq!(born.years_until(Date::new(2026, 12, 2).unwrap()), 65);
        let leap = Date::new(1960, 2, 29).unwrap();
        assert_eq!(leap.years_until(Date::new(2025, 2, 28).unwrap()), 64);
        assert_eq!(leap.years_until(Date::new(2025, 3, 1).unwrap()), 65);
    }

    #[test]
    fn days_round_trip_to_dates() {
        for days in [-800_000, -1, 0, 59, 60, 20_000, 20_788, 100_000] {
            assert_eq!(Date::from_days_since_epoch(days).days_since_epoch(), days);
        }
        assert_eq!(
            Date::from_days_since_epoch(20_788).to_string(),
            "2026-12-01"
        );
    }

    #[test]
    fn epoch_days_are_consistent() {
        assert_eq!(Date::new(1970, 1, 1).unwrap().days_since_epoch(), 0);
        assert_eq!(
            Date::new(2026, 12, 1).unwrap().days_since_epoch()
                - Date::new(2026, 9, 2).unwrap().days_since_epoch(),
            90
        );
    }
}
