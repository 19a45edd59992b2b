//! The prices of one financial year (`YYYY-YY/`): the workbook sheets "APC & OPROC", "OP",
//! "Emergency care" and "MFF", plus the grouper tables of that year.

use super::grouping::{EcGrouperTable, GrouperTable};
use super::sheet::Sheet;
use crate::error::Result;
use crate::model::{MFF_ONE, MffMicros, Pence};
use std::collections::BTreeMap;
use std::path::Path;

/// Column names of `apc_oproc_prices.csv`, as published.
pub mod apc_columns {
    /// The HRG.
    pub const HRG: &str = "HRG code";
    /// Outpatient procedure price.
    pub const OP_PROCEDURE: &str = "Outpatient procedure tariff (£)";
    /// Combined day case / ordinary elective price (the fallback of both).
    pub const COMBINED: &str = "Combined day case / ordinary elective spell tariff (£)";
    /// Day case price.
    pub const DAY_CASE: &str = "Day case spell tariff (£)";
    /// Ordinary elective price.
    pub const ELECTIVE: &str = "Ordinary elective spell tariff (£)";
    /// Ordinary elective trim point.
    pub const EL_TRIM: &str = "Ordinary elective long stay trim point (days)";
    /// Non-elective price.
    pub const NON_ELECTIVE: &str = "Non-elective spell tariff (£)";
    /// Non-elective trim point.
    pub const NEL_TRIM: &str = "Non-elective long stay trim point (days)";
    /// Payment per day beyond the trim point.
    pub const PER_DAY: &str = "Per day long stay payment (for days exceeding trim point) (£)";
    /// Whether the reduced short-stay emergency tariff applies.
    pub const SSEM_APPLIES: &str = "Reduced short stay emergency tariff _applicable?";
    /// The reduced short-stay emergency price.
    pub const SSEM: &str = "Reduced short stay emergency tariff (£)";
}

/// Column names of `op_prices.csv`.
pub mod op_columns {
    /// Treatment function code.
    pub const TFC: &str = "Treatment function code";
    /// First attendance, single professional.
    pub const FIRST: &str = "First attendance - single professional (£)";
    /// Follow-up attendance, single professional.
    pub const FOLLOW_UP: &str = "Follow-up attendance - single professional (£)";
}

/// Column names of `ec_prices.csv`.
pub mod ec_columns {
    /// The HRG.
    pub const HRG: &str = "HRG code";
    /// Price in type 1 and 2 departments.
    pub const TYPES_1_2: &str = "Type 1 and 2 departments (£)";
    /// Price in type 3 and 4 departments.
    pub const TYPES_3_4: &str = "Type 3 and 4 departments (£)";
}

/// Column names of `mff.csv`.
pub mod mff_columns {
    /// The provider.
    pub const ORG: &str = "Org code";
    /// The payment index.
    pub const INDEX: &str = "MFF payment index";
}

/// One row of "APC & OPROC". `None` is a blank cell: no national price.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApcPrice {
    /// Outpatient procedure price.
    pub op_procedure: Option<Pence>,
    /// Combined day case / ordinary elective price.
    pub combined: Option<Pence>,
    /// Day case price.
    pub day_case: Option<Pence>,
    /// Ordinary elective price.
    pub elective: Option<Pence>,
    /// Ordinary elective trim point in days.
    pub el_trim_days: Option<i32>,
    /// Non-elective price.
    pub non_elective: Option<Pence>,
    /// Non-elective trim point in days.
    pub nel_trim_days: Option<i32>,
    /// Payment per day beyond the trim point.
    pub per_day: Option<Pence>,
    /// Whether the reduced short-stay emergency tariff applies.
    pub ssem_applies: bool,
    /// The reduced short-stay emergency price.
    pub ssem: Option<Pence>,
}

/// One row of "OP" (single-professional prices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpPrice {
    /// First attendance price.
    pub first: Option<Pence>,
    /// Follow-up attendance price.
    pub follow_up: Option<Pence>,
}

/// One row of "Emergency care".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcPrice {
    /// Price in type 1 and 2 departments.
    pub types_1_2: Option<Pence>,
    /// Price in type 3 and 4 departments.
    pub types_3_4: Option<Pence>,
}

/// The file contents of one year folder, by file name.
pub(crate) struct YearFiles<'a> {
    pub apc: (&'a Path, &'a str),
    pub op: (&'a Path, &'a str),
    pub ec: (&'a Path, &'a str),
    pub mff: (&'a Path, &'a str),
    pub hrg_grouper: (&'a Path, &'a str),
    pub ec_grouper: (&'a Path, &'a str),
    pub ec_hrg: (&'a Path, &'a str),
}

/// Everything priced or grouped with the reference data of one financial year.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TariffYear {
    /// The financial year, `YYYY-YY`.
    pub year: String,
    apc: BTreeMap<String, ApcPrice>,
    op: BTreeMap<String, OpPrice>,
    ec: BTreeMap<String, EcPrice>,
    mff: BTreeMap<String, MffMicros>,
    /// The APC/OP grouper rules of the year.
    pub grouper: GrouperTable,
    /// The EC grouper tables of the year.
    pub ec_grouper: EcGrouperTable,
}

impl TariffYear {
    /// Reads the seven files of a year folder.
    pub(crate) fn parse(year: &str, files: &YearFiles<'_>) -> Result<TariffYear> {
        use apc_columns as a;
        let mut t = TariffYear {
            year: year.to_string(),
            grouper: GrouperTable::parse(files.hrg_grouper.0, files.hrg_grouper.1)?,
            ec_grouper: EcGrouperTable::parse(files.ec_grouper, files.ec_hrg)?,
            ..TariffYear::default()
        };

        let sheet = Sheet::parse(
            files.apc.0,
            files.apc.1,
            &[
                a::HRG,
                a::OP_PROCEDURE,
                a::COMBINED,
                a::DAY_CASE,
                a::ELECTIVE,
                a::EL_TRIM,
                a::NON_ELECTIVE,
                a::NEL_TRIM,
                a::PER_DAY,
                a::SSEM_APPLIES,
                a::SSEM,
            ],
        )?;
        for row in sheet.rows() {
            let hrg = row.required(a::HRG)?;
            let price = ApcPrice {
                op_procedure: row.money(a::OP_PROCEDURE)?,
                combined: row.money(a::COMBINED)?,
                day_case: row.money(a::DAY_CASE)?,
                elective: row.money(a::ELECTIVE)?,
                el_trim_days: row.days(a::EL_TRIM)?,
                non_elective: row.money(a::NON_ELECTIVE)?,
                nel_trim_days: row.days(a::NEL_TRIM)?,
                per_day: row.money(a::PER_DAY)?,
                ssem_applies: row.yes_no(a::SSEM_APPLIES)?,
                ssem: row.money(a::SSEM)?,
            };
            if t.apc.insert(hrg.clone(), price).is_some() {
                return Err(row.duplicate(a::HRG, &hrg));
            }
        }

        let sheet = Sheet::parse(
            files.op.0,
            files.op.1,
            &[op_columns::TFC, op_columns::FIRST, op_columns::FOLLOW_UP],
        )?;
        for row in sheet.rows() {
            let tfc = row.required(op_columns::TFC)?;
            let price = OpPrice {
                first: row.money(op_columns::FIRST)?,
                follow_up: row.money(op_columns::FOLLOW_UP)?,
            };
            if t.op.insert(tfc.clone(), price).is_some() {
                return Err(row.duplicate(op_columns::TFC, &tfc));
            }
        }

        let sheet = Sheet::parse(
            files.ec.0,
            files.ec.1,
            &[
                ec_columns::HRG,
                ec_columns::TYPES_1_2,
                ec_columns::TYPES_3_4,
            ],
        )?;
        for row in sheet.rows() {
            let hrg = row.required(ec_columns::HRG)?;
            let price = EcPrice {
                types_1_2: row.money(ec_columns::TYPES_1_2)?,
                types_3_4: row.money(ec_columns::TYPES_3_4)?,
            };
            if t.ec.insert(hrg.clone(), price).is_some() {
                return Err(row.duplicate(ec_columns::HRG, &hrg));
            }
        }

        let sheet = Sheet::parse(
            files.mff.0,
            files.mff.1,
            &[mff_columns::ORG, mff_columns::INDEX],
        )?;
        for row in sheet.rows() {
            let org = row.required(mff_columns::ORG)?;
            let index = row.mff(mff_columns::INDEX)?;
            if t.mff.insert(org.clone(), index).is_some() {
                return Err(row.duplicate(mff_columns::ORG, &org));
            }
        }
        Ok(t)
    }

    /// The "APC & OPROC" row of an HRG.
    pub fn apc_price(&self, hrg: &str) -> Option<&ApcPrice> {
        self.apc.get(hrg)
    }

    /// The outpatient procedure price of an HRG, if it has one.
    pub fn op_procedure_price(&self, hrg: &str) -> Option<Pence> {
        self.apc.get(hrg).and_then(|p| p.op_procedure)
    }

    /// The "OP" row of a treatment function.
    pub fn op_price(&self, tfc: &str) -> Option<&OpPrice> {
        self.op.get(tfc)
    }

    /// The "Emergency care" row of an HRG.
    pub fn ec_price(&self, hrg: &str) -> Option<&EcPrice> {
        self.ec.get(hrg)
    }

    /// The provider's MFF payment index; a provider absent from the sheet gets 1.000000.
    pub fn mff(&self, provider: &str) -> MffMicros {
        self.mff.get(provider).copied().unwrap_or(MFF_ONE)
    }
}
