//! The simplified grouper's tables of one financial year: `hrg_grouper.csv` (code prefix → HRG, with
//! an optional complication split), `ec_grouper.csv` (SNOMED CT code → category) and `ec_hrg.csv`
//! (category pair → HRG). The rules that use them live in [`crate::derive::grouper`].

use super::orgs::CodeType;
use super::sheet::Sheet;
use crate::error::Result;
use std::collections::BTreeMap;
use std::path::Path;

/// Highest EC investigation category.
pub const EC_MAX_INVESTIGATION: u8 = 3;
/// Highest EC treatment category.
pub const EC_MAX_TREATMENT: u8 = 4;

/// What a matching grouper rule gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrouperRule {
    /// The whole HRG, or with `cc_split` its 4-character root.
    pub hrg: String,
    /// Whether the last character comes from the count of secondary diagnoses.
    pub cc_split: bool,
}

impl GrouperRule {
    /// The HRG for an episode with `secondary_diagnoses` secondary diagnoses: 0 → `C`, 1-2 → `B`,
    /// 3 or more → `A` when split, the HRG itself otherwise.
    pub fn hrg_for(&self, secondary_diagnoses: usize) -> String {
        if !self.cc_split {
            return self.hrg.clone();
        }
        let band = match secondary_diagnoses {
            0 => 'C',
            1 | 2 => 'B',
            _ => 'A',
        };
        format!("{}{band}", self.hrg)
    }
}

/// `hrg_grouper.csv`: prefix rules by setting and code type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrouperTable {
    apc_procedures: BTreeMap<String, GrouperRule>,
    apc_diagnoses: BTreeMap<String, GrouperRule>,
    op_procedures: BTreeMap<String, GrouperRule>,
}

impl GrouperTable {
    /// Reads `hrg_grouper.csv`.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<GrouperTable> {
        let sheet = Sheet::parse(
            path,
            text,
            &["setting", "code_type", "code_prefix", "hrg", "cc_split"],
        )?;
        let mut table = GrouperTable::default();
        for row in sheet.rows() {
            let code_type = CodeType::parse(row.text("code_type")).ok_or_else(|| {
                row.error(
                    "code_type",
                    format!("'{}' is not ICD10 or OPCS4", row.text("code_type")),
                )
            })?;
            let prefix = row.required("code_prefix")?;
            let cc_split = row.y_n("cc_split")?;
            let hrg = row.required("hrg")?;
            // HRGs are 5 characters; a split rule gives the 4-character root.
            let want = if cc_split { 4 } else { 5 };
            if hrg.len() != want || !hrg.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(row.error(
                    "hrg",
                    format!(
                        "'{hrg}' is not a {want}-character HRG (cc_split {})",
                        row.text("cc_split")
                    ),
                ));
            }
            let map = match (row.text("setting"), code_type) {
                ("APC", CodeType::Opcs4) => &mut table.apc_procedures,
                ("APC", CodeType::Icd10) => &mut table.apc_diagnoses,
                ("OP", CodeType::Opcs4) if !cc_split => &mut table.op_procedures,
                ("OP", CodeType::Opcs4) => {
                    return Err(row.error("cc_split", "outpatient rules are never split (N)"));
                }
                ("OP", CodeType::Icd10) => {
                    return Err(row.error("code_type", "outpatient rules are OPCS4 only"));
                }
                (other, _) => {
                    return Err(row.error("setting", format!("'{other}' is not APC or OP")));
                }
            };
            if map
                .insert(prefix.clone(), GrouperRule { hrg, cc_split })
                .is_some()
            {
                return Err(row.duplicate("code_prefix", &prefix));
            }
        }
        Ok(table)
    }

    /// The APC procedure rule with the longest prefix of `code`.
    pub fn apc_procedure(&self, code: &str) -> Option<&GrouperRule> {
        longest_prefix(&self.apc_procedures, code)
    }

    /// The APC diagnosis rule with the longest prefix of `code`.
    pub fn apc_diagnosis(&self, code: &str) -> Option<&GrouperRule> {
        longest_prefix(&self.apc_diagnoses, code)
    }

    /// The outpatient procedure rule with the longest prefix of `code`.
    pub fn op_procedure(&self, code: &str) -> Option<&GrouperRule> {
        longest_prefix(&self.op_procedures, code)
    }
}

/// The entry whose key is the longest prefix of `code`.
fn longest_prefix<'a>(
    map: &'a BTreeMap<String, GrouperRule>,
    code: &str,
) -> Option<&'a GrouperRule> {
    (1..=code.len())
        .rev()
        .filter_map(|n| code.get(..n))
        .find_map(|p| map.get(p))
}

/// `ec_grouper.csv` and `ec_hrg.csv`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EcGrouperTable {
    investigations: BTreeMap<String, u8>,
    treatments: BTreeMap<String, u8>,
    hrgs: BTreeMap<(u8, u8), String>,
}

impl EcGrouperTable {
    /// Reads both EC grouper files. Every category pair 0-3 × 0-4 must be listed, so that grouping
    /// a well-formed attendance can never fail for lack of a row.
    pub(crate) fn parse(grouper: (&Path, &str), hrg: (&Path, &str)) -> Result<EcGrouperTable> {
        let mut table = EcGrouperTable::default();
        let sheet = Sheet::parse(grouper.0, grouper.1, &["snomed_code", "kind", "category"])?;
        for row in sheet.rows() {
            let code = row.required("snomed_code")?;
            let (map, max) = match row.text("kind") {
                "investigation" => (&mut table.investigations, EC_MAX_INVESTIGATION),
                "treatment" => (&mut table.treatments, EC_MAX_TREATMENT),
                other => {
                    return Err(row.error(
                        "kind",
                        format!("'{other}' is not investigation or treatment"),
                    ));
                }
            };
            let category = row.small_number("category", 1..=max)?;
            if map.insert(code.clone(), category).is_some() {
                return Err(row.duplicate("snomed_code", &code));
            }
        }
        let sheet = Sheet::parse(
            hrg.0,
            hrg.1,
            &["investigation_category", "treatment_category", "hrg"],
        )?;
        for row in sheet.rows() {
            let i = row.small_number("investigation_category", 0..=EC_MAX_INVESTIGATION)?;
            let t = row.small_number("treatment_category", 0..=EC_MAX_TREATMENT)?;
            let h = row.required("hrg")?;
            if table.hrgs.insert((i, t), h).is_some() {
                return Err(row.duplicate("investigation_category", &format!("{i},{t}")));
            }
        }
        for i in 0..=EC_MAX_INVESTIGATION {
            for t in 0..=EC_MAX_TREATMENT {
                if !table.hrgs.contains_key(&(i, t)) {
                    return Err(sheet.file_error(format!(
                        "no HRG for investigation category {i} and treatment category {t}"
                    )));
                }
            }
        }
        Ok(table)
    }

    /// The category of an investigation code; `None` for codes the table does not list.
    pub fn investigation_category(&self, code: &str) -> Option<u8> {
        self.investigations.get(code).copied()
    }

    /// The category of a treatment code; `None` for codes the table does not list.
    pub fn treatment_category(&self, code: &str) -> Option<u8> {
        self.treatments.get(code).copied()
    }

    /// The HRG of a category pair.
    pub fn hrg(&self, investigation: u8, treatment: u8) -> Option<&str> {
        self.hrgs
            .get(&(investigation, treatment))
            .map(String::as_str)
    }
}
