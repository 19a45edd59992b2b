//! The generator's own reader of the reference data folder (`refdata/README.md`). It reads only what
//! the generator and its oracle need, with its own small structs: the client does not depend on the
//! node.

use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Integer pence.
pub type Pence = i64;
/// An MFF payment index in millionths (1.045678 → 1_045_678).
pub type MffMicros = i64;
/// MFF of a provider absent from the sheet.
pub const MFF_ONE: MffMicros = 1_000_000;

/// One row of "APC & OPROC".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApcTariff {
    pub op_procedure: Option<Pence>,
    pub combined: Option<Pence>,
    pub day_case: Option<Pence>,
    pub elective: Option<Pence>,
    pub el_trim: Option<i64>,
    pub non_elective: Option<Pence>,
    pub nel_trim: Option<i64>,
    pub per_day: Option<Pence>,
    pub ssem_applies: bool,
    pub ssem: Option<Pence>,
}

/// One grouper rule's target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// A 4-character root when `cc_split`, else the whole HRG.
    pub hrg: String,
    pub cc_split: bool,
}

/// One financial year folder.
#[derive(Debug, Clone, Default)]
pub struct Year {
    pub apc: BTreeMap<String, ApcTariff>,
    /// TFC → (first, follow-up) single-professional prices.
    pub op: BTreeMap<String, (Option<Pence>, Option<Pence>)>,
    /// HRG → (types 1-2, types 3-4).
    pub ec: BTreeMap<String, (Option<Pence>, Option<Pence>)>,
    pub mff: BTreeMap<String, MffMicros>,
    pub apc_procedure_rules: BTreeMap<String, Rule>,
    pub apc_diagnosis_rules: BTreeMap<String, Rule>,
    pub op_procedure_rules: BTreeMap<String, Rule>,
    pub ec_investigations: BTreeMap<String, u8>,
    pub ec_treatments: BTreeMap<String, u8>,
    pub ec_hrg: BTreeMap<(u8, u8), String>,
}

/// A restricted code prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restricted {
    pub icd10: bool,
    pub prefix: String,
}

/// The reference data as the generator sees it.
#[derive(Debug, Clone, Default)]
pub struct RefData {
    /// Providers in file order: (code, independent?).
    pub providers: Vec<String>,
    /// Sub-ICB locations in file order with their ICB.
    pub commissioners: Vec<(String, String)>,
    /// Every valid commissioner code (sub-ICB and ICB).
    pub commissioner_codes: BTreeSet<String>,
    /// GP practices in file order with their commissioner.
    pub gp_practices: Vec<(String, String)>,
    pub gp_codes: BTreeSet<String>,
    /// (sender, provider) pairs of submitting agencies.
    pub senders: BTreeSet<(String, String)>,
    pub restricted: Vec<Restricted>,
    pub years: BTreeMap<String, Year>,
}

/// Practice codes that are always valid (not registered / not known).
pub const GP_DEFAULTS: [&str; 3] = ["V81997", "V81998", "V81999"];

impl RefData {
    /// Reads the folder.
    pub fn load(dir: &Path) -> Result<RefData> {
        let mut r = RefData::default();
        let t = Table::read(&dir.join("organisations/providers.csv"))?;
        for row in &t.rows {
            r.providers.push(t.required(row, "org_code")?);
        }
        let t = Table::read(&dir.join("organisations/commissioners.csv"))?;
        for row in &t.rows {
            let code = t.required(row, "org_code")?;
            let icb = t.cell(row, "icb_code")?.to_string();
            r.commissioner_codes.insert(code.clone());
            if !icb.is_empty() {
                r.commissioner_codes.insert(icb.clone());
            }
            r.commissioners.push((code, icb));
        }
        let t = Table::read(&dir.join("organisations/gp_practices.csv"))?;
        for row in &t.rows {
            let code = t.required(row, "org_code")?;
            let comm = t.cell(row, "commissioner_code")?.to_string();
            r.gp_codes.insert(code.clone());
            r.gp_practices.push((code, comm));
        }
        let t = Table::read(&dir.join("organisations/senders.csv"))?;
        for row in &t.rows {
            r.senders.insert((
                t.required(row, "sender_code")?,
                t.required(row, "provider_code")?,
            ));
        }
        let t = Table::read(&dir.join("codes/restricted_codes.csv"))?;
        for row in &t.rows {
            let icd10 = match t.cell(row, "code_type")? {
                "ICD10" => true,
                "OPCS4" => false,
                other => return Err(t.error(row, format!("code_type '{other}'"))),
            };
            r.restricted.push(Restricted {
                icd10,
                prefix: t.required(row, "code_prefix")?,
            });
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let b = name.as_bytes();
            if b.len() == 7
                && b[4] == b'-'
                && b[..4].iter().all(u8::is_ascii_digit)
                && b[5..].iter().all(u8::is_ascii_digit)
                && entry.path().is_dir()
            {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let year = Year::load(&dir.join(&name))?;
            r.years.insert(name, year);
        }
        if r.providers.is_empty() {
            return Err(Error::RefData {
                path: dir.join("organisations/providers.csv"),
                line: 0,
                message: "no providers".into(),
            });
        }
        Ok(r)
    }

    /// Whether `sender` may submit for `provider`.
    pub fn may_send(&self, sender: &str, provider: &str) -> bool {
        sender == provider
            || self
                .senders
                .contains(&(sender.to_string(), provider.to_string()))
    }

    /// Whether a practice code is valid (listed or a default).
    pub fn is_gp(&self, code: &str) -> bool {
        GP_DEFAULTS.contains(&code) || self.gp_codes.contains(code)
    }

    /// Whether a diagnosis (ICD-10) or procedure (OPCS-4) code is legally restricted.
    pub fn is_restricted(&self, icd10: bool, code: &str) -> bool {
        self.restricted
            .iter()
            .any(|r| r.icd10 == icd10 && code.starts_with(r.prefix.as_str()))
    }
}

impl Year {
    fn load(dir: &Path) -> Result<Year> {
        let mut y = Year::default();
        let t = Table::read(&dir.join("apc_oproc_prices.csv"))?;
        for row in &t.rows {
            let hrg = t.required(row, "HRG code")?;
            let tariff = ApcTariff {
                op_procedure: t.money(row, "Outpatient procedure tariff (£)")?,
                combined: t.money(
                    row,
                    "Combined day case / ordinary elective spell tariff (£)",
                )?,
                day_case: t.money(row, "Day case spell tariff (£)")?,
                elective: t.money(row, "Ordinary elective spell tariff (£)")?,
                el_trim: t.days(row, "Ordinary elective long stay trim point (days)")?,
                non_elective: t.money(row, "Non-elective spell tariff (£)")?,
                nel_trim: t.days(row, "Non-elective long stay trim point (days)")?,
                per_day: t.money(
                    row,
                    "Per day long stay payment (for days exceeding trim point) (£)",
                )?,
                ssem_applies: matches!(
                    t.cell(row, "Reduced short stay emergency tariff _applicable?")?
                        .to_ascii_uppercase()
                        .as_str(),
                    "YES" | "Y"
                ),
                ssem: t.money(row, "Reduced short stay emergency tariff (£)")?,
            };
            y.apc.insert(hrg, tariff);
        }
        let t = Table::read(&dir.join("op_prices.csv"))?;
        for row in &t.rows {
            let tfc = t.required(row, "Treatment function code")?;
            let first = t.money(row, "First attendance - single professional (£)")?;
            let fu = t.money(row, "Follow-up attendance - single professional (£)")?;
            y.op.insert(tfc, (first, fu));
        }
        let t = Table::read(&dir.join("ec_prices.csv"))?;
        for row in &t.rows {
            let hrg = t.required(row, "HRG code")?;
            let a = t.money(row, "Type 1 and 2 departments (£)")?;
            let b = t.money(row, "Type 3 and 4 departments (£)")?;
            y.ec.insert(hrg, (a, b));
        }
        let t = Table::read(&dir.join("mff.csv"))?;
        for row in &t.rows {
            let org = t.required(row, "Org code")?;
            let raw = t.cell(row, "MFF payment index")?;
            let m = parse_mff(raw).ok_or_else(|| t.error(row, format!("MFF '{raw}'")))?;
            y.mff.insert(org, m);
        }
        let t = Table::read(&dir.join("hrg_grouper.csv"))?;
        for row in &t.rows {
            let prefix = t.required(row, "code_prefix")?;
            let rule = Rule {
                hrg: t.required(row, "hrg")?,
                cc_split: t.cell(row, "cc_split")? == "Y",
            };
            let map = match (t.cell(row, "setting")?, t.cell(row, "code_type")?) {
                ("APC", "OPCS4") => &mut y.apc_procedure_rules,
                ("APC", "ICD10") => &mut y.apc_diagnosis_rules,
                ("OP", "OPCS4") => &mut y.op_procedure_rules,
                (s, c) => return Err(t.error(row, format!("setting/code_type '{s}/{c}'"))),
            };
            map.insert(prefix, rule);
        }
        let t = Table::read(&dir.join("ec_grouper.csv"))?;
        for row in &t.rows {
            let code = t.required(row, "snomed_code")?;
            let cat: u8 = t
                .cell(row, "category")?
                .parse()
                .map_err(|_| t.error(row, "category"))?;
            match t.cell(row, "kind")? {
                "investigation" => y.ec_investigations.insert(code, cat),
                "treatment" => y.ec_treatments.insert(code, cat),
                k => return Err(t.error(row, format!("kind '{k}'"))),
            };
        }
        let t = Table::read(&dir.join("ec_hrg.csv"))?;
        for row in &t.rows {
            let i: u8 = t
                .cell(row, "investigation_category")?
                .parse()
                .map_err(|_| t.error(row, "investigation_category"))?;
            let tr: u8 = t
                .cell(row, "treatment_category")?
                .parse()
                .map_err(|_| t.error(row, "treatment_category"))?;
            y.ec_hrg.insert((i, tr), t.required(row, "hrg")?);
        }
        Ok(y)
    }

    /// MFF of a provider (1.000000 when absent).
    pub fn mff_of(&self, provider: &str) -> MffMicros {
        self.mff.get(provider).copied().unwrap_or(MFF_ONE)
    }
}

/// Money in pounds (`1234`, `1,234.5`, `£1,234.56`) into pence; blank or `-` is `None`.
pub fn parse_money(raw: &str) -> Option<Option<Pence>> {
    let s = raw.trim();
    if s.is_empty() || s == "-" {
        return Some(None);
    }
    let s = s.strip_prefix('£').unwrap_or(s);
    let (int_part, frac) = match s.split_once('.') {
        Some((i, f)) => (i, f),
        None => (s, ""),
    };
    if frac.len() > 2
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || (s.contains('.') && frac.is_empty())
    {
        return None;
    }
    let digits: String = int_part.chars().filter(|c| *c != ',').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pounds: i64 = digits.parse().ok()?;
    let mut pence: i64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    if frac.len() == 1 {
        pence *= 10;
    }
    Some(Some(pounds.checked_mul(100)?.checked_add(pence)?))
}

/// An MFF index with up to six decimals into millionths.
pub fn parse_mff(raw: &str) -> Option<MffMicros> {
    let s = raw.trim();
    let (i, f) = s.split_once('.').unwrap_or((s, ""));
    if i.is_empty() || f.len() > 6 || !i.bytes().chain(f.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: i64 = i.parse().ok()?;
    let mut frac: i64 = if f.is_empty() { 0 } else { f.parse().ok()? };
    for _ in f.len()..6 {
        frac *= 10;
    }
    Some(whole * 1_000_000 + frac)
}

/// A CSV read into memory with its header names (trimmed).
struct Table {
    path: PathBuf,
    columns: BTreeMap<String, usize>,
    rows: Vec<(u64, Vec<String>)>,
}

type Row = (u64, Vec<String>);

impl Table {
    fn read(path: &Path) -> Result<Table> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8_lossy(&bytes);
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| Error::csv(path, e))?.clone();
        let columns = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_string(), i))
            .collect();
        let mut rows = Vec::new();
        for (n, rec) in reader.records().enumerate() {
            let rec = rec.map_err(|e| Error::csv(path, e))?;
            if rec.iter().all(|c| c.trim().is_empty()) {
                continue;
            }
            rows.push((
                n as u64 + 2,
                rec.iter().map(|c| c.trim().to_string()).collect(),
            ));
        }
        Ok(Table {
            path: path.to_path_buf(),
            columns,
            rows,
        })
    }

    fn error(&self, row: &Row, message: impl Into<String>) -> Error {
        Error::RefData {
            path: self.path.clone(),
            line: row.0,
            message: message.into(),
        }
    }

    fn cell<'a>(&self, row: &'a Row, column: &str) -> Result<&'a str> {
        let i = self.columns.get(column).ok_or_else(|| Error::RefData {
            path: self.path.clone(),
            line: 1,
            message: format!("no column '{column}'"),
        })?;
        Ok(row.1.get(*i).map_or("", String::as_str))
    }

    fn required(&self, row: &Row, column: &str) -> Result<String> {
        let v = self.cell(row, column)?;
        if v.is_empty() {
            Err(self.error(row, format!("'{column}' is blank")))
        } else {
            Ok(v.to_string())
        }
    }

    fn money(&self, row: &Row, column: &str) -> Result<Option<Pence>> {
        let v = self.cell(row, column)?;
        parse_money(v).ok_or_else(|| self.error(row, format!("'{column}': '{v}' is not money")))
    }

    fn days(&self, row: &Row, column: &str) -> Result<Option<i64>> {
        let v = self.cell(row, column)?;
        if v.is_empty() || v == "-" {
            return Ok(None);
        }
        v.parse()
            .map(Some)
            .map_err(|_| self.error(row, format!("'{column}': '{v}' is not days")))
    }
}
