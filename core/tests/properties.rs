//! Properties of the pure domain, each checked against a reference written here from
//! `docs/rules.md`, independently of the code under test:
//! - the NHS number validator (Modulus 11, §3) against a reference implementation, and: changing
//!   any single digit of a valid number makes it invalid; spaces do not matter;
//! - money: `round_half_even((base + excess) × mff / 1 000 000)` (§5) against a reference that
//!   picks the nearest penny by comparing distances (exact half-pennies included);
//! - the reference-data parsers: pence written as the workbook prints pounds read back exactly,
//!   MFF indices read back as millionths.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use proptest::prelude::*;
use sus_core::price::{apply_mff, round_half_even_div};
use sus_core::refdata::money::{parse_mff, parse_money};
use sus_core::validate::nhs_number_is_valid;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ----------------------------------------------------------------------------------------------
// NHS number, Modulus 11
// ----------------------------------------------------------------------------------------------

/// docs/rules.md W01, written out: spaces removed, exactly ten ASCII digits, not all one digit,
/// weights 10..2 on digits 1-9, check = 11 - (sum mod 11), 11 -> 0, 10 -> invalid, check equals
/// digit 10.
fn reference_nhs_valid(raw: &str) -> bool {
    let s: String = raw.chars().filter(|c| *c != ' ').collect();
    if s.len() != 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let d: Vec<u32> = s.bytes().map(|b| u32::from(b - b'0')).collect();
    if d.iter().all(|x| *x == d[0]) {
        return false;
    }
    let mut sum = 0;
    for (i, digit) in d.iter().take(9).enumerate() {
        sum += digit * (10 - i as u32);
    }
    let check = 11 - sum % 11;
    let check = if check == 11 { 0 } else { check };
    check != 10 && check == d[9]
}

/// Nine digits and the check digit that makes them valid, when there is one (and the number is not
/// all one digit).
fn valid_number() -> impl Strategy<Value = String> {
    proptest::collection::vec(0u32..10, 9).prop_filter_map("check digit 10 or one digit", |nine| {
        let sum: u32 = nine
            .iter()
            .enumerate()
            .map(|(i, d)| d * (10 - i as u32))
            .sum();
        let check = match 11 - sum % 11 {
            11 => 0,
            10 => return None,
            c => c,
        };
        let mut s: String = nine
            .iter()
            .map(|d| char::from_digit(*d, 10).expect("digit"))
            .collect();
        s.push(char::from_digit(check, 10).expect("digit"));
        let first = s.as_bytes()[0];
        (!s.bytes().all(|b| b == first)).then_some(s)
    })
}

proptest! {
    #![proptest_config(config())]

    // Any ten digits: the validator agrees with the reference (most are invalid).
    #[test]
    fn modulus_11_matches_the_reference_on_any_ten_digits(s in "[0-9]{10}") {
        prop_assert_eq!(nhs_number_is_valid(&s), reference_nhs_valid(&s), "{}", s);
    }

    // Near misses: other lengths, letters, spaces, repeated digits.
    #[test]
    fn modulus_11_matches_the_reference_on_near_misses(
        s in prop_oneof![
            "[0-9]{8,12}",
            "[0-9 ]{10,14}",
            "[0-9A-Z]{10}",
            (0u8..10).prop_map(|d| d.to_string().repeat(10)),
        ]
    ) {
        prop_assert_eq!(nhs_number_is_valid(&s), reference_nhs_valid(&s), "{:?}", s);
    }

    // Every constructed valid number is valid, with or without spaces (3-3-4 as printed).
    #[test]
    fn constructed_numbers_are_valid(s in valid_number()) {
        prop_assert!(reference_nhs_valid(&s));
        prop_assert!(nhs_number_is_valid(&s), "{}", s);
        let spaced = format!("{} {} {}", &s[..3], &s[3..6], &s[6..]);
        prop_assert!(nhs_number_is_valid(&spaced), "{}", spaced);
    }

    // Modulus 11 detects every single-digit error: 11 is prime, so w × delta (w in 2..10,
    // delta in ±1..9) is never 0 mod 11, and a changed check digit no longer matches.
    #[test]
    fn any_single_digit_changed_is_invalid(
        s in valid_number(),
        position in 0usize..10,
        shift in 1u8..10,
    ) {
        let mut b = s.clone().into_bytes();
        b[position] = b'0' + (b[position] - b'0' + shift) % 10;
        let changed = String::from_utf8(b).expect("ascii");
        prop_assert_ne!(&changed, &s);
        prop_assert!(!nhs_number_is_valid(&changed), "{} -> {}", s, changed);
        prop_assert!(!reference_nhs_valid(&changed));
    }
}

#[test]
fn modulus_11_examples_of_the_rules() {
    assert!(nhs_number_is_valid("9434765919"));
    assert!(!nhs_number_is_valid("9434765918"));
    for last in 0..10 {
        // 123456789: sum 210, 210 mod 11 = 1, check 10: invalid whatever digit 10.
        assert!(!nhs_number_is_valid(&format!("123456789{last}")));
    }
    assert!(nhs_number_is_valid("4000000020")); // check 11 reads as 0
    assert!(!nhs_number_is_valid("1111111111")); // passes Modulus 11, all one digit
    assert!(!nhs_number_is_valid("0000000000"));
    assert!(!nhs_number_is_valid(""));
}

// ----------------------------------------------------------------------------------------------
// MFF and round-half-even
// ----------------------------------------------------------------------------------------------

/// The integer nearest to `n / d` (`d` > 0), an exact half to the even one: found by comparing
/// the distances of the two candidates around the quotient, in i128.
fn reference_round(n: i128, d: i128) -> i128 {
    let low = n.div_euclid(d);
    let high = low + 1;
    let (dl, dh) = (n - low * d, high * d - n);
    match dl.cmp(&dh) {
        std::cmp::Ordering::Less => low,
        std::cmp::Ordering::Greater => high,
        std::cmp::Ordering::Equal if low % 2 == 0 => low,
        std::cmp::Ordering::Equal => high,
    }
}

fn reference_price(pence: i64, mff_micros: i64) -> i64 {
    i64::try_from(reference_round(
        i128::from(pence) * i128::from(mff_micros),
        1_000_000,
    ))
    .expect("fits")
}

proptest! {
    #![proptest_config(config())]

    // Realistic and large amounts, any index from 0.000001 to 5: the reference agrees.
    #[test]
    fn apply_mff_matches_the_reference(
        pence in prop_oneof![0i64..10_000_000, -10_000_000_000i64..10_000_000_000],
        mff in 1i64..5_000_000,
    ) {
        prop_assert_eq!(apply_mff(pence, mff), reference_price(pence, mff));
    }

    // Exact half-pennies: an odd amount times an odd multiple of 0.5 ends in exactly half a
    // penny; it goes to the even penny, half a penny from the exact value.
    #[test]
    fn exact_half_pennies_round_to_even(
        half in 0i64..5_000_000,
        k in 0i64..8,
    ) {
        let pence = 2 * half + 1;
        let mff = (2 * k + 1) * 500_000;
        let exact = i128::from(pence) * i128::from(mff);
        prop_assert_eq!(exact.rem_euclid(1_000_000), 500_000);
        let got = apply_mff(pence, mff);
        prop_assert_eq!(got % 2, 0, "{} x {} -> {}", pence, mff, got);
        prop_assert_eq!((i128::from(got) * 1_000_000 - exact).abs(), 500_000);
        prop_assert_eq!(got, reference_price(pence, mff));
    }

    // A sum of pence priced at exactly 1.000000 is unchanged; pricing is monotonic in the amount.
    #[test]
    fn mff_one_is_identity_and_pricing_is_monotonic(
        a in 0i64..1_000_000_000,
        b in 0i64..1_000_000_000,
        mff in 1i64..3_000_000,
    ) {
        prop_assert_eq!(apply_mff(a, 1_000_000), a);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        prop_assert!(apply_mff(lo, mff) <= apply_mff(hi, mff));
    }

    #[test]
    fn round_half_even_div_matches_the_reference(
        n in -1_000_000_000_000i128..1_000_000_000_000,
        d in 1i128..10_000_000,
    ) {
        prop_assert_eq!(round_half_even_div(n, d), reference_round(n, d));
    }
}

#[test]
fn half_penny_examples() {
    assert_eq!(apply_mff(10_403, 1_500_000), 15_604); // 15604.5 -> even below
    assert_eq!(apply_mff(23_793, 1_500_000), 35_690); // 35689.5 -> even above
    assert_eq!(apply_mff(1, 500_000), 0); // 0.5 -> 0
    assert_eq!(apply_mff(3, 500_000), 2); // 1.5 -> 2
    assert_eq!(apply_mff(470_218, 1_187_991), 558_615); // 558614.752038
}

// ----------------------------------------------------------------------------------------------
// Reference-data parsers
// ----------------------------------------------------------------------------------------------

/// `1234567` with thousands separators: `1,234,567`.
fn with_thousands(n: i64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The ways the workbook prints `pence` (`style` picks one).
fn pounds_text(pence: i64, style: u8) -> String {
    let (pounds, p) = (pence / 100, pence % 100);
    match style {
        0 => format!("{pounds}.{p:02}"),
        1 => format!("{}.{p:02}", with_thousands(pounds)),
        2 => format!("£{}.{p:02}", with_thousands(pounds)),
        3 => format!("  £{pounds}.{p:02} "),
        // Shortest form: no decimals for whole pounds, one for whole tens of pence.
        _ if p == 0 => with_thousands(pounds),
        _ if p % 10 == 0 => format!("{pounds}.{}", p / 10),
        _ => format!("{pounds}.{p:02}"),
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn money_round_trips_pence(
        pence in prop_oneof![0i64..100_000, 0i64..1_000_000_000_000],
        style in 0u8..5,
    ) {
        let text = pounds_text(pence, style);
        prop_assert_eq!(parse_money(&text), Ok(Some(pence)), "{:?}", text);
    }

    // More than two decimals is refused, never rounded.
    #[test]
    fn money_with_three_decimals_is_an_error(pence in 0i64..10_000_000, extra in 0u8..10) {
        let text = format!("{}.{:02}{extra}", pence / 100, pence % 100);
        prop_assert!(parse_money(&text).is_err(), "{:?}", text);
    }

    #[test]
    fn mff_round_trips_micros(micros in 1i64..10_000_000, trim in any::<bool>()) {
        let mut text = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
        if trim {
            // 1.500000 is also written 1.5.
            while text.ends_with('0') {
                text.pop();
            }
            if text.ends_with('.') {
                text.pop();
            }
        }
        prop_assert_eq!(parse_mff(&text), Ok(micros), "{:?}", text);
    }
}

#[test]
fn money_blanks_mean_no_price() {
    assert_eq!(parse_money(""), Ok(None));
    assert_eq!(parse_money("  "), Ok(None));
    assert_eq!(parse_money("-"), Ok(None));
    assert_eq!(parse_money("£1,234.56"), Ok(Some(123_456)));
}
