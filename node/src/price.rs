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
