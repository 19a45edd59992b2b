//! Exact decimal parsing of reference values: pounds into integer pence, MFF indices into
//! millionths, whole days. Nothing here goes through a float, so `£1,234.56` is exactly 123 456 pence.
//!
//! Each parser returns a message (not an [`crate::Error`]) so that the caller can name the file, line
//! and column the value came from.

use crate::model::{MffMicros, Pence};

/// Parses money as the workbook prints it (`1234`, `1,234`, `1234.5`, `£1,234.56`) into pence.
///
/// A blank cell or `-` means "no national price" and gives `Ok(None)`. Thousands separators must be
/// well placed (`12,34` is refused: it is more likely a typing error than a price), and more than two
/// decimals is an error rather than a silent rounding.
pub fn parse_money(raw: &str) -> Result<Option<Pence>, String> {
    let s = raw.trim();
    if s.is_empty() || s == "-" {
        return Ok(None);
    }
    let body = s.strip_prefix('£').map_or(s, str::trim_start);
    let (int_part, frac_part) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let bad = || format!("'{raw}' is not an amount in pounds (e.g. 1,234.56)");
    let digits = thousands_digits(int_part).ok_or_else(bad)?;
    let pounds = digits_value(&digits).ok_or_else(|| format!("'{raw}' is too large"))?;
    let pence_part = match frac_part {
        None => 0,
        Some(f) if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) => return Err(bad()),
        Some(f) if f.len() > 2 => {
            return Err(format!(
                "'{raw}' has more than two decimals (money is exact to the penny)"
            ));
        }
        Some(f) => {
            // "5" after the point is 50 pence, "05" is 5 pence.
            let v = digits_value(f).ok_or_else(bad)?;
            if f.len() == 1 { v * 10 } else { v }
        }
    };
    pounds
        .checked_mul(100)
        .and_then(|p| p.checked_add(pence_part))
        .map(Some)
        .ok_or_else(|| format!("'{raw}' is too large"))
}

/// Parses an MFF payment index (`1.045678`, up to six decimals) into millionths. Blank is an error:
/// a provider listed on the MFF sheet must have an index (an absent provider gets 1.000000).
pub fn parse_mff(raw: &str) -> Result<MffMicros, String> {
    let s = raw.trim();
    let bad = || format!("'{raw}' is not a payment index (e.g. 1.045678)");
    if s.is_empty() {
        return Err("blank payment index".into());
    }
    let (int_part, frac_part) = s.split_once('.').unwrap_or((s, ""));
    if int_part.is_empty()
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && frac_part.is_empty())
    {
        return Err(bad());
    }
    if frac_part.len() > 6 {
        return Err(format!("'{raw}' has more than six decimals"));
    }
    let whole = digits_value(int_part).ok_or_else(bad)?;
    let mut frac = if frac_part.is_empty() {
        0
    } else {
        digits_value(frac_part).ok_or_else(bad)?
    };
    for _ in frac_part.len()..6 {
        frac *= 10;
    }
    let micros = whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(|| format!("'{raw}' is too large"))?;
    if micros == 0 {
        return Err(format!(
            "'{raw}': a payment index of zero would price everything at 0"
        ));
    }
    Ok(micros)
}

/// Parses a whole number of days (trim points). Blank or `-` is `None`: no trim point, no excess.
pub fn parse_days(raw: &str) -> Result<Option<i32>, String> {
    let s = raw.trim();
    if s.is_empty() || s == "-" {
        return Ok(None);
    }
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{raw}' is not a whole number of days"));
    }
    s.parse::<i32>()
        .map(Some)
        .map_err(|_| format!("'{raw}' is too large a number of days"))
}

/// Parses a `Yes`/`No` flag (also `Y`/`N`, any case). Blank reads as `No`.
pub fn parse_yes_no(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_uppercase().as_str() {
        "YES" | "Y" => Ok(true),
        "NO" | "N" | "" => Ok(false),
        _ => Err(format!("'{raw}' is not Yes or No")),
    }
}

/// The digits of an integer part with optional, well-placed thousands separators; `None` if malformed.
fn thousands_digits(int_part: &str) -> Option<String> {
    if int_part.is_empty() {
        return None;
    }
    let groups: Vec<&str> = int_part.split(',').collect();
    for (i, g) in groups.iter().enumerate() {
        let ok_len = if i == 0 {
            (1..=3).contains(&g.len()) || groups.len() == 1
        } else {
            g.len() == 3
        };
        if !ok_len || g.is_empty() || !g.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    Some(groups.concat())
}

/// The value of a string of ASCII digits, `None` on overflow.
fn digits_value(digits: &str) -> Option<i64> {
    digits.bytes().try_fold(0i64, |acc, b| {
        acc.checked_mul(10)?.checked_add(i64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every form the workbook prints reads to the exact pence; blanks and dashes mean no price.
    #[test]
    fn money_forms() {
        assert_eq!(parse_money("1234"), Ok(Some(123_400)));
        assert_eq!(parse_money("1,234"), Ok(Some(123_400)));
        assert_eq!(parse_money("1234.5"), Ok(Some(123_450)));
        assert_eq!(parse_money("1234.05"), Ok(Some(123_405)));
        assert_eq!(parse_money("£1,234.56"), Ok(Some(123_456)));
        assert_eq!(parse_money(" £ 1,234,567.89 "), Ok(Some(123_456_789)));
        assert_eq!(parse_money("0"), Ok(Some(0)));
        assert_eq!(parse_money("0.01"), Ok(Some(1)));
        assert_eq!(parse_money(""), Ok(None));
        assert_eq!(parse_money("   "), Ok(None));
        assert_eq!(parse_money("-"), Ok(None));
        assert_eq!(parse_money(" - "), Ok(None));
    }

    // Anything that is not exactly pounds and pence is refused, never rounded or guessed.
    #[test]
    fn money_errors() {
        let e = parse_money("12.345").expect_err("three decimals");
        assert!(e.contains("more than two decimals"), "{e}");
        for bad in [
            "12,34",
            "1,2345",
            ",123",
            "1,",
            "12.",
            ".5",
            "1.2.3",
            "abc",
            "£",
            "-5",
            "1 234",
            "1e3",
            "£-",
            "12.3x",
            "99999999999999999999",
        ] {
            assert!(parse_money(bad).is_err(), "{bad} should be refused");
        }
    }

    // The MFF is read as exact millionths with up to six decimals.
    #[test]
    fn mff_forms() {
        assert_eq!(parse_mff("1.045678"), Ok(1_045_678));
        assert_eq!(parse_mff("1"), Ok(1_000_000));
        assert_eq!(parse_mff("0.9"), Ok(900_000));
        assert_eq!(parse_mff(" 1.000005 "), Ok(1_000_005));
        for bad in [
            "",
            "1.0456789",
            "1.",
            ".9",
            "-1.0",
            "1,0",
            "0",
            "0.000000",
            "x",
        ] {
            assert!(parse_mff(bad).is_err(), "{bad} should be refused");
        }
    }

    // Trim points are whole days; blank means none.
    #[test]
    fn days_and_flags() {
        assert_eq!(parse_days("5"), Ok(Some(5)));
        assert_eq!(parse_days(""), Ok(None));
        assert_eq!(parse_days("-"), Ok(None));
        assert!(parse_days("5.5").is_err());
        assert!(parse_days("-3").is_err());
        assert_eq!(parse_yes_no("Yes"), Ok(true));
        assert_eq!(parse_yes_no("y"), Ok(true));
        assert_eq!(parse_yes_no("No"), Ok(false));
        assert_eq!(parse_yes_no(""), Ok(false));
        assert!(parse_yes_no("maybe").is_err());
    }
}
