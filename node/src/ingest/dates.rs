//! Dates and date-times of submission files. The fixed-width forms are read by hand (chrono's
//! format-string parser took about a tenth of `prepare`); any other text goes to chrono exactly
//! as before, so what is accepted, and how, does not change.

use chrono::{NaiveDate, NaiveDateTime};

/// A date `YYYY-MM-DD`.
pub fn parse_date(v: &str) -> Option<NaiveDate> {
    fixed_date(v.as_bytes()).or_else(|| NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
}

/// A date-time `YYYY-MM-DDTHH:MM:SS`, or with a space instead of `T` (fractional seconds are not
/// allowed).
pub fn parse_datetime(v: &str) -> Option<NaiveDateTime> {
    fixed_datetime(v.as_bytes()).or_else(|| {
        NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S"))
            .ok()
    })
}

/// ASCII digits as a number (`None` for anything else).
fn number(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

fn fixed_date(b: &[u8]) -> Option<NaiveDate> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = i32::try_from(number(&b[..4])?).ok()?;
    NaiveDate::from_ymd_opt(year, number(&b[5..7])?, number(&b[8..])?)
}

fn fixed_datetime(b: &[u8]) -> Option<NaiveDateTime> {
    if b.len() != 19 || !matches!(b[10], b'T' | b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    fixed_date(&b[..10])?.and_hms_opt(number(&b[11..13])?, number(&b[14..16])?, number(&b[17..])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrono_date(v: &str) -> Option<NaiveDate> {
        NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()
    }

    fn chrono_datetime(v: &str) -> Option<NaiveDateTime> {
        NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S")
            .or_else(|_| NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S"))
            .ok()
    }

    #[test]
    fn every_day_and_odd_text_parse_as_chrono_parses_them() {
        let mut day = NaiveDate::from_ymd_opt(1899, 12, 25).expect("date");
        while day < NaiveDate::from_ymd_opt(2101, 1, 7).expect("date") {
            let text = day.format("%Y-%m-%d").to_string();
            assert_eq!(fixed_date(text.as_bytes()), Some(day), "{text}");
            for (h, m, s) in [(0, 0, 0), (9, 30, 5), (23, 59, 59)] {
                for sep in ['T', ' '] {
                    let t = format!("{text}{sep}{h:02}:{m:02}:{s:02}");
                    assert_eq!(parse_datetime(&t), chrono_datetime(&t), "{t}");
                    assert!(fixed_datetime(t.as_bytes()).is_some(), "{t}");
                }
            }
            day = day.succ_opt().expect("next day");
        }
        for v in [
            "",
            "2024-5-01",
            "2024-05-1",
            "2024/05/01",
            " 2024-05-01",
            "2024-05-01 ",
            "2024-13-01",
            "2024-02-30",
            "2023-02-29",
            "0000-01-01",
            "+2024-05-01",
            "2024-00-10",
            "2024-05-00",
            "20x4-05-01",
            "2024-05-01T00:00:00",
            "99999-01-01",
            "2024-05-01T24:00:00",
            "2024-05-01T23:59:60",
            "2024-05-01T23:60:00",
            "2024-05-01T12:00:00.5",
            "2024-05-01t12:00:00",
            "2024-05-01T1:00:00",
            "2024-05-01T12:00",
            "2024-05-01 12:00:00",
            "2024-05-0112:00:00",
            "2024-05-01T12-00-00",
            "-001-05-01",
        ] {
            assert_eq!(parse_date(v), chrono_date(v), "date {v:?}");
            assert_eq!(parse_datetime(v), chrono_datetime(v), "date-time {v:?}");
        }
    }
}
