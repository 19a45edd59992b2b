//! HRG grouping behind one trait, so that the output of a licensed HRG4+ grouper can replace our
//! simplified table grouper without touching spells or pricing.
//!
//! ```text
//!  APC episode ──► OPCS4 rules on primary_procedure ──(none)──► ICD10 rules on primary_diagnosis
//!                    longest prefix; cc_split: 0 secondary dx → C, 1-2 → B, 3+ → A; none → UZ01Z
//!  OP attendance ─► OP OPCS4 rules on primary_procedure (the caller checks it has a price)
//!  EC attendance ─► department type 01-04? no → VB99Z
//!                   yes → ec_hrg[max investigation category, max treatment category]
//! ```
//!
//! The tables are those of the financial year of the record's activity date (APC: of the spell's
//! discharge date, which the caller passes). The rule that a record
//! with W06/W07 is not grouped at all is applied by the caller ([`crate::derive`]), from the record's
//! warnings; the table grouper also refuses malformed codes itself so that it is correct alone.

use crate::model::{ApcItems, EcItems, OpItems, Record, UNGROUPED_HRG};
use crate::refdata::{GrouperOutput, RefData};
use crate::validate::{icd10_is_well_formed, opcs4_is_well_formed};

/// The HRG of EC attendances whose department type is not `01`-`04`: not groupable, price 0.
pub const EC_UNGROUPABLE_HRG: &str = "VB99Z";

/// The department types an EC HRG can be priced for.
pub const EC_DEPARTMENT_TYPES: [&str; 4] = ["01", "02", "03", "04"];

/// Assigns HRGs to activity. Implementations must be deterministic: the same record gives the same
/// HRG on every node.
pub trait Grouper {
    /// The HRG of one APC episode with the grouper of financial year `year` (`YYYY-YY`: the
    /// spell's discharge year, or the episode's own while its spell is unfinished), or
    /// [`UNGROUPED_HRG`] when it does not group.
    fn episode_hrg(&self, record: &Record, episode: &ApcItems, year: &str) -> String;

    /// The procedure HRG of an outpatient attendance when its primary procedure maps (`None`
    /// otherwise). Whether that HRG has an outpatient procedure price is the pricing's business.
    fn op_procedure_hrg(&self, record: &Record, attendance: &OpItems) -> Option<String>;

    /// The HRG of an emergency care attendance: `VB01Z`..`VB11Z`, [`EC_UNGROUPABLE_HRG`] for a
    /// department type that is not `01`-`04`, or [`UNGROUPED_HRG`] when no table applies.
    fn ec_hrg(&self, record: &Record, attendance: &EcItems) -> String;
}

/// The simplified grouper of `refdata/README.md` over the tables of each tariff year.
#[derive(Debug, Clone, Copy)]
pub struct TableGrouper<'a> {
    refdata: &'a RefData,
}

impl<'a> TableGrouper<'a> {
    /// A grouper over the grouper tables of `refdata`.
    pub fn new(refdata: &'a RefData) -> TableGrouper<'a> {
        TableGrouper { refdata }
    }
}

impl Grouper for TableGrouper<'_> {
    fn episode_hrg(&self, _record: &Record, episode: &ApcItems, year: &str) -> String {
        let Some(year) = self.refdata.year(year) else {
            return UNGROUPED_HRG.to_string();
        };
        let table = &year.grouper;
        let by_procedure = episode
            .primary_procedure
            .as_deref()
            .filter(|p| opcs4_is_well_formed(p))
            .and_then(|p| table.apc_procedure(p));
        let rule = by_procedure.or_else(|| {
            episode
                .primary_diagnosis
                .as_deref()
                .filter(|d| icd10_is_well_formed(d))
                .and_then(|d| table.apc_diagnosis(d))
        });
        match rule {
            Some(rule) => rule.hrg_for(episode.secondary_diagnoses.len()),
            None => UNGROUPED_HRG.to_string(),
        }
    }

    fn op_procedure_hrg(&self, record: &Record, attendance: &OpItems) -> Option<String> {
        let year = self.refdata.year_of(record.activity_date()?)?;
        let procedure = attendance
            .primary_procedure
            .as_deref()
            .filter(|p| opcs4_is_well_formed(p))?;
        year.grouper
            .op_procedure(procedure)
            .map(|rule| rule.hrg_for(0))
    }

    fn ec_hrg(&self, record: &Record, attendance: &EcItems) -> String {
        let department = attendance.department_type.as_deref().unwrap_or("");
        if !EC_DEPARTMENT_TYPES.contains(&department) {
            return EC_UNGROUPABLE_HRG.to_string();
        }
        let Some(year) = record.activity_date().and_then(|d| self.refdata.year_of(d)) else {
            return UNGROUPED_HRG.to_string();
        };
        let table = &year.ec_grouper;
        // Categories are the highest of the attendance's codes, 0 with none; unknown codes ignored.
        let investigation = attendance
            .investigations
            .iter()
            .filter_map(|c| table.investigation_category(c))
            .max()
            .unwrap_or(0);
        let treatment = attendance
            .treatments
            .iter()
            .filter_map(|c| table.treatment_category(c))
            .max()
            .unwrap_or(0);
        table
            .hrg(investigation, treatment)
            .unwrap_or(UNGROUPED_HRG)
            .to_string()
    }
}

/// A licensed grouper's output ([`crate::refdata::GrouperOutput`]) for the records it lists, and
/// the table grouper for the others. The W06/W07 rule still applies (the caller's).
#[derive(Debug, Clone, Copy)]
pub struct OutputGrouper<'a> {
    output: &'a GrouperOutput,
    tables: TableGrouper<'a>,
}

impl<'a> OutputGrouper<'a> {
    /// A grouper answering from `output`, and from the tables of `refdata` for other records.
    pub fn new(output: &'a GrouperOutput, refdata: &'a RefData) -> OutputGrouper<'a> {
        OutputGrouper {
            output,
            tables: TableGrouper::new(refdata),
        }
    }

    fn listed(&self, record: &Record) -> Option<&'a str> {
        self.output
            .hrg(record.dataset(), &record.common.cds_unique_id)
    }
}

impl Grouper for OutputGrouper<'_> {
    fn episode_hrg(&self, record: &Record, episode: &ApcItems, year: &str) -> String {
        match self.listed(record) {
            Some("") => UNGROUPED_HRG.to_string(),
            Some(hrg) => hrg.to_string(),
            None => self.tables.episode_hrg(record, episode, year),
        }
    }

    fn op_procedure_hrg(&self, record: &Record, attendance: &OpItems) -> Option<String> {
        match self.listed(record) {
            Some("") => None,
            Some(hrg) => Some(hrg.to_string()),
            None => self.tables.op_procedure_hrg(record, attendance),
        }
    }

    fn ec_hrg(&self, record: &Record, attendance: &EcItems) -> String {
        match self.listed(record) {
            Some("") => EC_UNGROUPABLE_HRG.to_string(),
            Some(hrg) => hrg.to_string(),
            None => self.tables.ec_hrg(record, attendance),
        }
    }
}

/// The grouper `refdata` was configured with: a licensed grouper's output when one was loaded,
/// else the table grouper.
pub fn configured(refdata: &RefData) -> Box<dyn Grouper + '_> {
    match refdata.grouper_output() {
        Some(output) => Box::new(OutputGrouper::new(output, refdata)),
        None => Box::new(TableGrouper::new(refdata)),
    }
}
