//! Organisations (providers, commissioners, GP practices, senders) and the legally restricted code
//! list: the lookups behind the whole-submission rules R05/R06, the warnings W04/W05 and the
//! restriction of identifiers.

use super::sheet::Sheet;
use crate::error::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// GP practice codes that are always valid: not registered (`V81997`), no fixed abode (`V81998`),
/// not known (`V81999`).
pub const GP_PRACTICE_DEFAULTS: [&str; 3] = ["V81997", "V81998", "V81999"];

/// A provider of `providers.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The organisation's name.
    pub name: String,
    /// `NHS trust` or `Independent`.
    pub org_type: String,
}

/// The organisation lists of `organisations/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Organisations {
    providers: BTreeMap<String, Provider>,
    /// Sub-ICB locations and the ICBs they belong to: both are valid commissioners.
    commissioners: BTreeSet<String>,
    gp_practices: BTreeSet<String>,
    /// (sender, provider) pairs of submitting agencies.
    senders: BTreeSet<(String, String)>,
}

impl Organisations {
    /// Reads the four organisation sheets (contents already read from `dir`).
    pub(crate) fn parse(
        providers: (&Path, &str),
        commissioners: (&Path, &str),
        gp_practices: (&Path, &str),
        senders: (&Path, &str),
    ) -> Result<Organisations> {
        let mut orgs = Organisations::default();

        let sheet = Sheet::parse(
            providers.0,
            providers.1,
            &["org_code", "org_name", "org_type"],
        )?;
        for row in sheet.rows() {
            let code = row.required("org_code")?;
            let provider = Provider {
                name: row.text("org_name").to_string(),
                org_type: row.text("org_type").to_string(),
            };
            if orgs.providers.insert(code.clone(), provider).is_some() {
                return Err(row.duplicate("org_code", &code));
            }
        }

        let sheet = Sheet::parse(commissioners.0, commissioners.1, &["org_code", "icb_code"])?;
        for row in sheet.rows() {
            orgs.commissioners.insert(row.required("org_code")?);
            // A sub-ICB location's ICB is itself a valid commissioner (`Q..` codes).
            let icb = row.text("icb_code");
            if !icb.is_empty() {
                orgs.commissioners.insert(icb.to_string());
            }
        }

        let sheet = Sheet::parse(gp_practices.0, gp_practices.1, &["org_code"])?;
        for row in sheet.rows() {
            orgs.gp_practices.insert(row.required("org_code")?);
        }

        let sheet = Sheet::parse(senders.0, senders.1, &["sender_code", "provider_code"])?;
        for row in sheet.rows() {
            orgs.senders
                .insert((row.required("sender_code")?, row.required("provider_code")?));
        }
        Ok(orgs)
    }

    /// The provider of this code, if listed.
    pub fn provider(&self, code: &str) -> Option<&Provider> {
        self.providers.get(code)
    }

    /// Whether `code` is a listed provider (R05).
    pub fn is_provider(&self, code: &str) -> bool {
        self.providers.contains_key(code)
    }

    /// Whether `code` is a listed sub-ICB location or ICB (W05).
    pub fn is_commissioner(&self, code: &str) -> bool {
        self.commissioners.contains(code)
    }

    /// Whether `code` is a listed GP practice or one of [`GP_PRACTICE_DEFAULTS`] (W04).
    pub fn is_gp_practice(&self, code: &str) -> bool {
        GP_PRACTICE_DEFAULTS.contains(&code) || self.gp_practices.contains(code)
    }

    /// Whether `sender` may submit for `provider` (R06): every provider may send its own data, and
    /// submitting agencies are listed in `senders.csv`.
    pub fn may_send(&self, sender: &str, provider: &str) -> bool {
        sender == provider
            || self
                .senders
                .contains(&(sender.to_string(), provider.to_string()))
    }

    /// The (submitting agency, provider) pairs of `senders.csv`, in order.
    pub fn agency_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.senders.iter().map(|(s, p)| (s.as_str(), p.as_str()))
    }

    /// Provider codes, in order.
    pub fn provider_codes(&self) -> impl Iterator<Item = &str> {
        self.providers.keys().map(String::as_str)
    }
}

/// The classification a code prefix belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CodeType {
    /// ICD-10 diagnoses.
    Icd10,
    /// OPCS-4 procedures.
    Opcs4,
}

impl CodeType {
    /// Reads `ICD10` / `OPCS4` as written in the reference files.
    pub fn parse(s: &str) -> Option<CodeType> {
        match s {
            "ICD10" => Some(CodeType::Icd10),
            "OPCS4" => Some(CodeType::Opcs4),
            _ => None,
        }
    }
}

/// One prefix of `codes/restricted_codes.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestrictedCode {
    /// Which codes the prefix applies to.
    pub code_type: CodeType,
    /// A code starting with this is restricted.
    pub prefix: String,
    /// The list it comes from (`FERTILISATION`, `GENDER_RECOGNITION`).
    pub list: String,
}

/// The legally restricted code prefixes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestrictedCodes {
    codes: Vec<RestrictedCode>,
}

impl RestrictedCodes {
    /// Reads `codes/restricted_codes.csv`.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<RestrictedCodes> {
        let sheet = Sheet::parse(path, text, &["code_type", "code_prefix", "list"])?;
        let mut codes = Vec::new();
        for row in sheet.rows() {
            let code_type = CodeType::parse(row.text("code_type")).ok_or_else(|| {
                row.error(
                    "code_type",
                    format!("'{}' is not ICD10 or OPCS4", row.text("code_type")),
                )
            })?;
            codes.push(RestrictedCode {
                code_type,
                prefix: row.required("code_prefix")?,
                list: row.required("list")?,
            });
        }
        Ok(RestrictedCodes { codes })
    }

    /// The first listed prefix that `code` starts with, if any.
    pub fn find(&self, code_type: CodeType, code: &str) -> Option<&RestrictedCode> {
        self.codes
            .iter()
            .find(|c| c.code_type == code_type && code.starts_with(c.prefix.as_str()))
    }
}
