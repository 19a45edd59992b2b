//! Payment by Results pricing in exact integer pence (`docs/rules.md` section 5).
//!
//! ```text
//!  APC spell:  base = DC | EL | NEL price (blank DC/EL → combined)       step 1
//!              NEL, LoS ≤ 1, age ≥ 19, SSEM Yes and priced → SSEM price  step 2
//!              excess days = max(0, LoS − trim point) × per-day payment   step 3
//!              price = round_half_even((base + excess) × MFF)             step 4
//!  OP:         procedure price (OPPROC) or the TFC's first / follow-up price, × MFF
//!  EC:         HRG price for department types 01-02 or 03, × MFF; 04 is a local price
//! ```
//!
//! Every function is pure; an activity that cannot be priced is an [`Exclusion`] whose text is the
//! stored `exclusion_reason`.

use crate::model::{MffMicros, Pence, Pod};
use crate::refdata::{ApcPrice, TariffYear};
use std::fmt;

/// Youngest age (on the admission date) for the short-stay emergency tariff.
pub const SSEM_MIN_AGE: u16 = 19;
/// Longest spell (days) for the short-stay emergency tariff.
pub const SSEM_MAX_LOS: i32 = 1;
/// The MFF denominator: the index is held in millionths.
const MICROS: i128 = 1_000_000;

/// Why an activity is priced 0 and flagged `pbr_excluded`. `Display` gives the stored reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exclusion {
    /// No reference folder for the financial year of the activity.
    NoTariff {
        /// The financial year `YYYY-YY`.
        year: String,
    },
    /// The (spell) HRG is `UZ01Z` or `VB99Z`, or a code was malformed.
    Ungroupable,
    /// W03: the date of birth is before 1880 or after the activity.
    DateOfBirthImplausible,
    /// The spell's last episode has no discharge date yet.
    SpellUnfinished,
    /// The price for this HRG and point of delivery is blank or absent (includes `RDA`/`RNA`).
    NoNationalPrice {
        /// The HRG priced.
        hrg: String,
        /// The point of delivery.
        pod: Pod,
    },
    /// The spell's admission method and patient classification give no point of delivery.
    PodUnknown,
    /// The treatment function has no (or a blank) outpatient price.
    NoTfcPrice {
        /// The treatment function code as submitted.
        tfc: String,
    },
    /// The appointment was not attended (`attended_or_did_not_attend` not `5`/`6`).
    NotAttended,
    /// `first_attendance` is not `1`-`4`, the attendances that can be priced (`5` is a
    /// referral-to-treatment clock stop, an administrative event: stored, never priced).
    NotPricedAttendance {
        /// The `first_attendance` code as submitted (blank when missing).
        code: String,
    },
    /// A type 04 walk-in centre: locally priced.
    WalkInCentre,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exclusion::NoTariff { year } => write!(f, "no tariff for {year}"),
            Exclusion::Ungroupable => f.write_str("ungroupable"),
            Exclusion::DateOfBirthImplausible => f.write_str("date of birth implausible"),
            Exclusion::SpellUnfinished => f.write_str("spell unfinished"),
            Exclusion::NoNationalPrice { hrg, pod } => {
                write!(f, "no national price for HRG {hrg} {}", pod.code())
            }
            Exclusion::PodUnknown => f.write_str("point of delivery unknown"),
            Exclusion::NoTfcPrice { tfc } => write!(f, "no national price for TFC {tfc}"),
            Exclusion::NotAttended => f.write_str("not attended"),
            Exclusion::NotPricedAttendance { code } => {
                write!(f, "first attendance '{code}' is not priced (only 1-4)")
            }
            Exclusion::WalkInCentre => f.write_str("walk-in centre: local price"),
        }
    }
}

/// The money of a priced row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    /// Pence before MFF (the tariff, or the SSEM tariff).
    pub base_price: Pence,
    /// Days beyond the trim point.
    pub excess_bed_days: i32,
    /// Pence before MFF for the excess days.
    pub excess_payment: Pence,
    /// The MFF applied.
    pub mff: MffMicros,
    /// `round_half_even((base + excess) × mff)`.
    pub price: Pence,
}

impl Payment {
    /// A payment of `base` plus `excess_payment` for `excess_bed_days`, with the MFF applied.
    pub fn new(
        base_price: Pence,
        excess_bed_days: i32,
        excess_payment: Pence,
        mff: MffMicros,
    ) -> Payment {
        Payment {
            base_price,
            excess_bed_days,
            excess_payment,
            mff,
            price: apply_mff(base_price.saturating_add(excess_payment), mff),
        }
    }
}

/// `n / d` rounded to the nearest integer, exact halves to the even one (`d` > 0).
pub fn round_half_even_div(n: i128, d: i128) -> i128 {
    debug_assert!(d > 0, "divisor must be positive");
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d);
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => q,
        std::cmp::Ordering::Greater => q + 1,
        std::cmp::Ordering::Equal if q % 2 == 0 => q,
        std::cmp::Ordering::Equal => q + 1,
    }
}

/// `round_half_even(amount × mff / 1 000 000)` in pence, in i128 so no product can overflow. A result
/// beyond `i64` (impossible with real prices) saturates rather than wrapping.
pub fn apply_mff(amount: Pence, mff: MffMicros) -> Pence {
    let v = round_half_even_div(i128::from(amount) * i128::from(mff), MICROS);
    Pence::try_from(v).unwrap_or(if v < 0 { Pence::MIN } else { Pence::MAX })
}

/// Step 1: the base price of an HRG's row for a point of delivery. A blank DC or EL price falls
/// back to the combined DC/EL price; `RDA`, `RNA` and the outpatient/EC PODs have none here.
pub fn apc_base_price(price: &ApcPrice, pod: Pod) -> Option<Pence> {
    match pod {
        Pod::Dc => price.day_case.or(price.combined),
        Pod::El => price.elective.or(price.combined),
        Pod::Nel => price.non_elective,
        _ => None,
    }
}

/// Step 1 for spell HRG selection: the base price of `hrg` for `pod` in `year`, blank or absent = 0.
pub fn apc_base_or_zero(year: Option<&TariffYear>, hrg: &str, pod: Option<Pod>) -> Pence {
    match (year.and_then(|y| y.apc_price(hrg)), pod) {
        (Some(p), Some(pod)) => apc_base_price(p, pod).unwrap_or(0),
        _ => 0,
    }
}

/// What an APC spell is priced from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpellFacts<'a> {
    /// The spell HRG.
    pub hrg: &'a str,
    /// The spell's point of delivery.
    pub pod: Option<Pod>,
    /// An emergency admission (methods 21-25, 28, 2A-2D): only these get the SSEM price.
    pub emergency: bool,
    /// Discharge minus admission in days.
    pub spell_los: Option<i32>,
    /// Age on the admission date (`None` without a date of birth).
    pub age_at_admission: Option<u16>,
}

/// Steps 1-4 for a finished spell whose HRG groups, in `year`, with the provider's `mff`.
pub fn apc_spell_payment(
    year: &TariffYear,
    spell: &SpellFacts<'_>,
    mff: MffMicros,
) -> Result<Payment, Exclusion> {
    let pod = spell.pod.ok_or(Exclusion::PodUnknown)?;
    let no_price = || Exclusion::NoNationalPrice {
        hrg: spell.hrg.to_string(),
        pod,
    };
    let row = year.apc_price(spell.hrg).ok_or_else(no_price)?;
    let mut base = apc_base_price(row, pod).ok_or_else(no_price)?;
    let los = spell.spell_los;
    let short_stay_emergency = pod == Pod::Nel
        && spell.emergency
        && los.is_some_and(|l| l <= SSEM_MAX_LOS)
        && spell.age_at_admission.is_some_and(|a| a >= SSEM_MIN_AGE)
        && row.ssem_applies;
    // A blank SSEM price leaves the full tariff in place.
    if let Some(ssem) = row.ssem.filter(|_| short_stay_emergency) {
        base = ssem;
    }
    let trim = match pod {
        Pod::Dc | Pod::El => row.el_trim_days,
        _ => row.nel_trim_days,
    };
    let excess_days = match (los, trim) {
        (Some(l), Some(t)) => l.saturating_sub(t).max(0),
        _ => 0,
    };
    let excess_payment = row
        .per_day
        .unwrap_or(0)
        .saturating_mul(Pence::from(excess_days));
    Ok(Payment::new(base, excess_days, excess_payment, mff))
}

/// An outpatient procedure priced at its HRG's outpatient procedure price.
pub fn op_procedure_payment(procedure_price: Pence, mff: MffMicros) -> Payment {
    Payment::new(procedure_price, 0, 0, mff)
}

/// An attended outpatient appointment priced by its treatment function: the first-attendance price
/// for `OPFA`, the follow-up price otherwise.
pub fn op_tfc_payment(
    year: &TariffYear,
    tfc: Option<&str>,
    pod: Pod,
    mff: MffMicros,
) -> Result<Payment, Exclusion> {
    let tfc = tfc.unwrap_or("");
    let row = year.op_price(tfc);
    let base = row.and_then(|p| {
        if pod == Pod::Opfa {
            p.first
        } else {
            p.follow_up
        }
    });
    base.map(|b| Payment::new(b, 0, 0, mff))
        .ok_or_else(|| Exclusion::NoTfcPrice {
            tfc: tfc.to_string(),
        })
}

/// An emergency care attendance: the HRG's price for department types `01`/`02` or `03`; type `04`
/// is a walk-in centre priced locally; any other type is ungroupable.
pub fn ec_payment(
    year: &TariffYear,
    hrg: &str,
    department_type: Option<&str>,
    mff: MffMicros,
) -> Result<Payment, Exclusion> {
    let row = year.ec_price(hrg);
    let base = match department_type {
        Some("01" | "02") => row.and_then(|p| p.types_1_2),
        Some("03") => row.and_then(|p| p.types_3_4),
        Some("04") => return Err(Exclusion::WalkInCentre),
        _ => return Err(Exclusion::Ungroupable),
    };
    base.map(|b| Payment::new(b, 0, 0, mff))
        .ok_or_else(|| Exclusion::NoNationalPrice {
            hrg: hrg.to_string(),
            pod: Pod::Ae,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refdata::testdata::refdata;

    const RRV: MffMicros = 1_045_678;

    #[test]
    fn round_half_even_division() {
        // Below, above and exactly half, with even and odd quotients.
        assert_eq!(round_half_even_div(14, 10), 1); // 1.4 → 1
        assert_eq!(round_half_even_div(16, 10), 2); // 1.6 → 2
        assert_eq!(round_half_even_div(5, 10), 0); // 0.5 → 0 (even)
        assert_eq!(round_half_even_div(15, 10), 2); // 1.5 → 2 (even)
        assert_eq!(round_half_even_div(25, 10), 2); // 2.5 → 2 (even)
        assert_eq!(round_half_even_div(35, 10), 4); // 3.5 → 4 (even)
        assert_eq!(round_half_even_div(30, 10), 3); // exact
        // Negative amounts round the same way (−1.5 → −2, −2.5 → −2, −1.4 → −1, −1.6 → −2).
        assert_eq!(round_half_even_div(-15, 10), -2);
        assert_eq!(round_half_even_div(-25, 10), -2);
        assert_eq!(round_half_even_div(-5, 10), 0);
        assert_eq!(round_half_even_div(-14, 10), -1);
        assert_eq!(round_half_even_div(-16, 10), -2);
    }

    #[test]
    fn apply_mff_rounds_half_even_in_pence() {
        // 550_000 × 1.045678 = 575_122.9 → 575_123 (up: above half).
        assert_eq!(apply_mff(550_000, RRV), 575_123);
        // 400_000 × 1.045678 = 418_271.2 → 418_271 (down: below half).
        assert_eq!(apply_mff(400_000, RRV), 418_271);
        // 1.000005: 100_000 × 1.000005 = 100_000.5 → 100_000 (half, to even: down).
        assert_eq!(apply_mff(100_000, 1_000_005), 100_000);
        // 300_000 × 1.000005 = 300_001.5 → 300_002 (half, to even: up).
        assert_eq!(apply_mff(300_000, 1_000_005), 300_002);
        // 500_000 × 1.000005 = 500_002.5 → 500_002 (down); 700_000 → 700_003.5 → 700_004 (up).
        assert_eq!(apply_mff(500_000, 1_000_005), 500_002);
        assert_eq!(apply_mff(700_000, 1_000_005), 700_004);
        // 300_001 × 1.000005 = 300_002.500005: just above half → 300_003.
        assert_eq!(apply_mff(300_001, 1_000_005), 300_003);
        // MFF 1.0 and 0 pence are exact.
        assert_eq!(apply_mff(123_456, crate::model::MFF_ONE), 123_456);
        assert_eq!(apply_mff(0, RRV), 0);
        // No overflow: i64::MAX × 2.0 saturates instead of wrapping.
        assert_eq!(apply_mff(i64::MAX, 2_000_000), i64::MAX);
        // A large but real amount: £10,000,000 × 1.045678 = 1_045_678_000 pence exactly.
        assert_eq!(apply_mff(1_000_000_000, RRV), 1_045_678_000);
    }

    #[test]
    fn payment_new_sums_before_mff() {
        // (350_000 + 350_000) × 1.045678 = 731_974.6 → 731_975: rounded once on the sum. Rounding
        // each part (365_987.3 → 365_987, twice) would give 731_974.
        let p = Payment::new(350_000, 14, 350_000, RRV);
        assert_eq!(
            p,
            Payment {
                base_price: 350_000,
                excess_bed_days: 14,
                excess_payment: 350_000,
                mff: RRV,
                price: 731_975,
            }
        );
        // (50_001 + 10_000) × 1.045678 = 62_741.725678 → 62_742.
        assert_eq!(Payment::new(50_001, 1, 10_000, RRV).price, 62_742);
    }

    #[test]
    fn apc_base_price_by_pod() {
        let rd = refdata();
        let y = rd.year("2024-25").expect("2024-25");
        let base = |hrg: &str, pod: Pod| apc_base_price(y.apc_price(hrg).expect("row"), pod);
        // HN12C: DC £4,000, EL £5,500, NEL £6,000.
        assert_eq!(base("HN12C", Pod::Dc), Some(400_000));
        assert_eq!(base("HN12C", Pod::El), Some(550_000));
        assert_eq!(base("HN12C", Pod::Nel), Some(600_000));
        // HN12B: DC and EL "-" → combined £6,000.
        assert_eq!(base("HN12B", Pod::Dc), Some(600_000));
        assert_eq!(base("HN12B", Pod::El), Some(600_000));
        // EB10A: no combined, DC or EL.
        assert_eq!(base("EB10A", Pod::El), None);
        // No national price for regular day/night admissions or non-APC PODs.
        assert_eq!(base("HN12C", Pod::Rda), None);
        assert_eq!(base("HN12C", Pod::Rna), None);
        assert_eq!(base("HN12C", Pod::Opfa), None);
        // For the spell HRG choice blank or absent = 0.
        assert_eq!(apc_base_or_zero(Some(y), "EB10A", Some(Pod::El)), 0);
        assert_eq!(apc_base_or_zero(Some(y), "WD99Z", Some(Pod::El)), 0);
        assert_eq!(apc_base_or_zero(Some(y), "HN12C", None), 0);
        assert_eq!(apc_base_or_zero(None, "HN12C", Some(Pod::El)), 0);
        assert_eq!(apc_base_or_zero(Some(y), "HN12C", Some(Pod::El)), 550_000);
    }

    fn facts(hrg: &str, pod: Pod, los: i32, age: Option<u16>) -> SpellFacts<'_> {
        SpellFacts {
            hrg,
            pod: Some(pod),
            emergency: pod == Pod::Nel,
            spell_los: Some(los),
            age_at_admission: age,
        }
    }

    #[test]
    fn apc_spell_payment_steps() {
        let rd = refdata();
        let y = rd.year("2024-25").expect("2024-25");
        let pay = |f: SpellFacts<'_>| apc_spell_payment(y, &f, RRV);
        // Step 1 only: HN12C EL 550_000, LoS 3 = trim 3 → 575_123.
        assert_eq!(
            pay(facts("HN12C", Pod::El, 3, Some(40))).map(|p| p.price),
            Ok(575_123)
        );
        // Step 2: EB10C NEL LoS 1, age 19, SSEM Yes £950 → 95_000 × 1.045678 = 99_339.41 → 99_339.
        assert_eq!(
            pay(facts("EB10C", Pod::Nel, 1, Some(19))),
            Ok(Payment {
                base_price: 95_000,
                excess_bed_days: 0,
                excess_payment: 0,
                mff: RRV,
                price: 99_339,
            })
        );
        // …not at 18, nor without an age: NEL £2,800 = 280_000 × 1.045678 = 292_789.84 → 292_790.
        for age in [Some(18), None] {
            assert_eq!(
                pay(facts("EB10C", Pod::Nel, 1, age)).map(|p| p.price),
                Ok(292_790)
            );
        }
        // Step 3: EB10C NEL trim 8, LoS 11 → 3 × £240 = 72_000; 352_000 × 1.045678
        // = 368_078.656 → 368_079.
        assert_eq!(
            pay(facts("EB10C", Pod::Nel, 11, Some(40))),
            Ok(Payment {
                base_price: 280_000,
                excess_bed_days: 3,
                excess_payment: 72_000,
                mff: RRV,
                price: 368_079,
            })
        );
        // HN12A per day £350.50: EL trim 5, LoS 9 → 4 × 35_050 = 140_200; 750_000 + 140_200
        // = 890_200 × 1.045678 = 930_862.5556 → 930_863.
        assert_eq!(
            pay(facts("HN12A", Pod::El, 9, Some(40))).map(|p| (p.excess_payment, p.price)),
            Ok((140_200, 930_863))
        );
        // Blank price and unknown POD are exclusions.
        assert_eq!(
            pay(facts("EB30Z", Pod::Nel, 2, Some(40))),
            Err(Exclusion::NoNationalPrice {
                hrg: "EB30Z".into(),
                pod: Pod::Nel
            })
        );
        assert_eq!(
            pay(facts("NOPE1", Pod::El, 2, Some(40))),
            Err(Exclusion::NoNationalPrice {
                hrg: "NOPE1".into(),
                pod: Pod::El
            })
        );
        let unknown = SpellFacts {
            pod: None,
            ..facts("HN12C", Pod::El, 2, Some(40))
        };
        assert_eq!(
            apc_spell_payment(y, &unknown, RRV),
            Err(Exclusion::PodUnknown)
        );
    }

    #[test]
    fn op_and_ec_payments() {
        let rd = refdata();
        let y = rd.year("2024-25").expect("2024-25");
        // TFC 110: first £180 → 18_822 (18_822.204); follow-up £95.50 → 9_986 (9_986.2249).
        assert_eq!(
            op_tfc_payment(y, Some("110"), Pod::Opfa, RRV).map(|p| p.price),
            Ok(18_822)
        );
        assert_eq!(
            op_tfc_payment(y, Some("110"), Pod::Opfu, RRV).map(|p| p.price),
            Ok(9_986)
        );
        assert_eq!(
            op_tfc_payment(y, Some("100"), Pod::Opfu, RRV),
            Err(Exclusion::NoTfcPrice { tfc: "100".into() })
        );
        assert_eq!(
            op_tfc_payment(y, None, Pod::Opfa, RRV),
            Err(Exclusion::NoTfcPrice { tfc: String::new() })
        );
        // Procedure £150 → 15_685 (15_685.17).
        assert_eq!(op_procedure_payment(15_000, RRV).price, 15_685);
        // EC VB02Z: types 1-2 £400 = 40_000 × 1.045678 = 41_827.12 → 41_827; type 3 £140 = 14_000
        // × 1.045678 = 14_639.492 → 14_639.
        for t in ["01", "02"] {
            assert_eq!(
                ec_payment(y, "VB02Z", Some(t), RRV).map(|p| p.price),
                Ok(41_827)
            );
        }
        assert_eq!(
            ec_payment(y, "VB02Z", Some("03"), RRV).map(|p| p.price),
            Ok(14_639)
        );
        assert_eq!(
            ec_payment(y, "VB02Z", Some("04"), RRV),
            Err(Exclusion::WalkInCentre)
        );
        assert_eq!(
            ec_payment(y, "VB02Z", Some("05"), RRV),
            Err(Exclusion::Ungroupable)
        );
        assert_eq!(
            ec_payment(y, "VB11Z", Some("03"), RRV),
            Err(Exclusion::NoNationalPrice {
                hrg: "VB11Z".into(),
                pod: Pod::Ae
            })
        );
    }

    #[test]
    fn exclusion_reasons_are_the_documented_strings() {
        let cases = [
            (
                Exclusion::NoTariff {
                    year: "2025-26".into(),
                },
                "no tariff for 2025-26",
            ),
            (Exclusion::Ungroupable, "ungroupable"),
            (
                Exclusion::DateOfBirthImplausible,
                "date of birth implausible",
            ),
            (Exclusion::SpellUnfinished, "spell unfinished"),
            (
                Exclusion::NoNationalPrice {
                    hrg: "HN12C".into(),
                    pod: Pod::Rda,
                },
                "no national price for HRG HN12C RDA",
            ),
            (
                Exclusion::NoTfcPrice { tfc: "100".into() },
                "no national price for TFC 100",
            ),
            (Exclusion::NotAttended, "not attended"),
            (Exclusion::WalkInCentre, "walk-in centre: local price"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
