//! Reference data: organisations, the restricted code list, and per financial year the prices, the
//! MFF and the grouper tables (layout and formats in `refdata/README.md`).
//!
//! ```text
//!  refdata/
//!    organisations/{providers,commissioners,gp_practices,senders}.csv ──► Organisations
//!    codes/restricted_codes.csv ──────────────────────────────────────► RestrictedCodes
//!    2023-24/ 2024-25/ ... (every YYYY-YY folder) ─────────────────────► TariffYear (prices, MFF,
//!                                                                         grouper tables)
//! ```
//!
//! Loading is the only I/O of the domain core: [`RefData::load`] reads the files and hands their
//! contents to [`RefData::from_files`], which parses them (and which tests call with in-memory
//! text). Every lookup afterwards is pure. Maps are ordered so nothing depends on hash order.

pub mod grouper_output;
pub mod grouping;
pub mod money;
pub mod orgs;
mod sheet;
pub mod tariff;
#[cfg(any(test, feature = "testdata"))]
pub mod testdata;

pub use grouper_output::GrouperOutput;
pub use grouping::{EcGrouperTable, GrouperRule, GrouperTable};
pub use orgs::{
    CodeType, GP_PRACTICE_DEFAULTS, Organisations, Provider, RestrictedCode, RestrictedCodes,
};
pub use tariff::{ApcPrice, EcPrice, OpPrice, TariffYear};

use crate::error::{Error, Result};
use crate::model::financial_year;
use chrono::NaiveDate;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tariff::YearFiles;

/// `organisations/providers.csv`.
pub const PROVIDERS: &str = "organisations/providers.csv";
/// `organisations/commissioners.csv`.
pub const COMMISSIONERS: &str = "organisations/commissioners.csv";
/// `organisations/gp_practices.csv`.
pub const GP_PRACTICES: &str = "organisations/gp_practices.csv";
/// `organisations/senders.csv`.
pub const SENDERS: &str = "organisations/senders.csv";
/// `codes/restricted_codes.csv`.
pub const RESTRICTED_CODES: &str = "codes/restricted_codes.csv";
/// The files every `YYYY-YY/` folder must hold.
pub const YEAR_FILES: [&str; 7] = [
    "apc_oproc_prices.csv",
    "op_prices.csv",
    "ec_prices.csv",
    "mff.csv",
    "hrg_grouper.csv",
    "ec_grouper.csv",
    "ec_hrg.csv",
];

fn fingerprint(files: &BTreeMap<PathBuf, String>) -> String {
    let mut a = crc32fast::Hasher::new();
    let mut b = crc32fast::Hasher::new_with_initial(0x5553_5553);
    for (path, text) in files {
        let path = path.to_string_lossy();
        for h in [&mut a, &mut b] {
            h.update(path.as_bytes());
            h.update(&[0]);
            h.update(text.as_bytes());
            h.update(&[0]);
        }
    }
    format!("{:08x}{:08x}", a.finalize(), b.finalize())
}

/// All reference data the domain core needs, loaded once and then read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefData {
    orgs: Organisations,
    restricted: RestrictedCodes,
    years: BTreeMap<String, TariffYear>,
    /// A licensed grouper's output, when the node was started with one.
    grouper_output: Option<GrouperOutput>,
    /// Identifies the exact files read (see [`RefData::fingerprint`]).
    fingerprint: String,
}

impl RefData {
    /// Loads the reference folder `dir`: the organisation and code lists, and every `YYYY-YY/`
    /// folder found as a tariff year. Any file that is missing or cannot be read is an
    /// [`Error::RefData`] naming the file, the line and the column.
    pub fn load(dir: &Path) -> Result<RefData> {
        let mut files = BTreeMap::new();
        for rel in [
            PROVIDERS,
            COMMISSIONERS,
            GP_PRACTICES,
            SENDERS,
            RESTRICTED_CODES,
        ] {
            files.insert(PathBuf::from(rel), read(dir, Path::new(rel))?);
        }
        let entries = std::fs::read_dir(dir).map_err(|e| Error::RefData {
            path: dir.to_path_buf(),
            line: 0,
            message: format!("cannot list the reference folder: {e}"),
        })?;
        let mut year_dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::RefData {
                path: dir.to_path_buf(),
                line: 0,
                message: format!("cannot list the reference folder: {e}"),
            })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if looks_like_year(&name) && entry.path().is_dir() {
                year_dirs.push(name);
            }
        }
        year_dirs.sort();
        for year in year_dirs {
            for file in YEAR_FILES {
                let rel = Path::new(&year).join(file);
                let text = read(dir, &rel)?;
                files.insert(rel, text);
            }
        }
        RefData::from_files(dir, &files)
    }

    /// Parses reference data from file contents keyed by path relative to `root` (which is used only
    /// to name files in errors). Tariff years are the first path components shaped `YYYY-YY`.
    pub fn from_files(root: &Path, files: &BTreeMap<PathBuf, String>) -> Result<RefData> {
        let get = |rel: &Path| -> Result<(PathBuf, &str)> {
            let path = root.join(rel);
            match files.get(rel) {
                Some(text) => Ok((path, text.as_str())),
                None => Err(Error::RefData {
                    path,
                    line: 0,
                    message: "file not found".into(),
                }),
            }
        };
        let (p1, t1) = get(Path::new(PROVIDERS))?;
        let (p2, t2) = get(Path::new(COMMISSIONERS))?;
        let (p3, t3) = get(Path::new(GP_PRACTICES))?;
        let (p4, t4) = get(Path::new(SENDERS))?;
        let orgs = Organisations::parse((&p1, t1), (&p2, t2), (&p3, t3), (&p4, t4))?;
        let (p, t) = get(Path::new(RESTRICTED_CODES))?;
        let restricted = RestrictedCodes::parse(&p, t)?;

        let mut year_names: Vec<String> = files
            .keys()
            .filter_map(|k| k.components().next())
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .filter(|n| looks_like_year(n))
            .collect();
        year_names.dedup();
        let mut years = BTreeMap::new();
        for year in year_names {
            check_year_name(root, &year)?;
            let mut loaded = Vec::with_capacity(YEAR_FILES.len());
            for file in YEAR_FILES {
                loaded.push(get(&Path::new(&year).join(file))?);
            }
            let f = |i: usize| (loaded[i].0.as_path(), loaded[i].1);
            let year_files = YearFiles {
                apc: f(0),
                op: f(1),
                ec: f(2),
                mff: f(3),
                hrg_grouper: f(4),
                ec_grouper: f(5),
                ec_hrg: f(6),
            };
            let tariff = TariffYear::parse(&year, &year_files)?;
            years.insert(year, tariff);
        }
        Ok(RefData {
            orgs,
            restricted,
            years,
            grouper_output: None,
            fingerprint: fingerprint(files),
        })
    }

    /// A version of the reference data: a checksum over every file's relative path and content.
    /// The cluster records the version its leaders must price with (two CRC-32s over the files in
    /// path order, seeded differently: a version check, not a security measure).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The organisation lists.
    pub fn organisations(&self) -> &Organisations {
        &self.orgs
    }

    /// Whether `code` is a listed provider (R05).
    pub fn is_provider(&self, code: &str) -> bool {
        self.orgs.is_provider(code)
    }

    /// Whether `code` is a listed sub-ICB location or ICB (W05).
    pub fn is_commissioner(&self, code: &str) -> bool {
        self.orgs.is_commissioner(code)
    }

    /// Whether `code` is a listed GP practice or a default `V81997/8/9` (W04).
    pub fn is_gp_practice(&self, code: &str) -> bool {
        self.orgs.is_gp_practice(code)
    }

    /// Whether `sender` may submit for `provider` (R06).
    pub fn may_send(&self, sender: &str, provider: &str) -> bool {
        self.orgs.may_send(sender, provider)
    }

    /// The (submitting agency, provider) pairs of `senders.csv`.
    pub fn agency_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.orgs.agency_pairs()
    }

    /// The restricted code list.
    pub fn restricted_codes(&self) -> &RestrictedCodes {
        &self.restricted
    }

    /// Whether a code of this type is on a legally restricted list.
    pub fn is_restricted(&self, code_type: CodeType, code: &str) -> bool {
        self.restricted.find(code_type, code).is_some()
    }

    /// The tariff year `YYYY-YY`, if its folder was loaded.
    pub fn year(&self, financial_year: &str) -> Option<&TariffYear> {
        self.years.get(financial_year)
    }

    /// Adds a licensed grouper's output (`path` names it in errors): HRGs of the records it lists
    /// come from it. It becomes part of the fingerprint, so nodes grouping differently never
    /// price for the same cluster.
    pub fn with_grouper_output(mut self, path: &Path, text: &str) -> Result<RefData> {
        let output = GrouperOutput::parse(path, text)?;
        let mut files = BTreeMap::new();
        files.insert(PathBuf::from("(reference data)"), self.fingerprint.clone());
        files.insert(PathBuf::from("(grouper output)"), text.to_string());
        self.fingerprint = fingerprint(&files);
        self.grouper_output = Some(output);
        Ok(self)
    }

    /// The licensed grouper's output, if one was loaded.
    pub fn grouper_output(&self) -> Option<&GrouperOutput> {
        self.grouper_output.as_ref()
    }

    /// The tariff year containing `date` (April to March), if its folder was loaded.
    pub fn year_of(&self, date: NaiveDate) -> Option<&TariffYear> {
        self.years.get(&financial_year(date))
    }

    /// The loaded tariff years, in order.
    pub fn years(&self) -> impl Iterator<Item = &str> {
        self.years.keys().map(String::as_str)
    }
}

/// Reads one file under `dir` as UTF-8.
fn read(dir: &Path, rel: &Path) -> Result<String> {
    let path = dir.join(rel);
    let bytes = std::fs::read(&path).map_err(|e| Error::RefData {
        path: path.clone(),
        line: 0,
        message: if e.kind() == std::io::ErrorKind::NotFound {
            "file not found".into()
        } else {
            format!("cannot read: {e}")
        },
    })?;
    String::from_utf8(bytes).map_err(|e| Error::RefData {
        path,
        line: 0,
        message: format!("not UTF-8 (save the sheet as \"CSV UTF-8\"): {e}"),
    })
}

/// Whether a folder name has the shape `YYYY-YY`.
fn looks_like_year(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 7
        && b[4] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..].iter().all(u8::is_ascii_digit)
}

/// Refuses a year folder whose two halves are not consecutive years (`2023-25`): prices would be
/// applied to the wrong activity.
fn check_year_name(root: &Path, name: &str) -> Result<()> {
    let start: i32 = name[..4].parse().unwrap_or(-1);
    let end: i32 = name[5..].parse().unwrap_or(-1);
    if start >= 0 && end == (start + 1) % 100 {
        Ok(())
    } else {
        Err(Error::RefData {
            path: root.join(name),
            line: 0,
            message: format!("'{name}' is not a financial year folder (e.g. 2024-25)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testdata::{self, files, refdata};
    use super::*;

    /// Loads the fixture with `rel` replaced by `text`.
    fn load_with(rel: &str, text: &str) -> Result<RefData> {
        let mut f = files();
        f.insert(PathBuf::from(rel), text.to_string());
        RefData::from_files(Path::new("/fixture"), &f)
    }

    /// The (path, line, message) of a reference data error.
    fn refdata_error(r: Result<RefData>) -> (PathBuf, u64, String) {
        match r {
            Err(Error::RefData {
                path,
                line,
                message,
            }) => (path, line, message),
            Ok(_) => panic!("expected a reference data error, got Ok"),
        }
    }

    const APC_HEADER: &str = "HRG code,Outpatient procedure tariff (£),Combined day case / ordinary elective spell tariff (£),Day case spell tariff (£),Ordinary elective spell tariff (£),Ordinary elective long stay trim point (days),Non-elective spell tariff (£),Non-elective long stay trim point (days),Per day long stay payment (for days exceeding trim point) (£),Reduced short stay emergency tariff _applicable?,Reduced short stay emergency tariff (£)";

    #[test]
    fn fixture_loads_both_years() {
        let rd = refdata();
        assert_eq!(rd.years().collect::<Vec<_>>(), vec!["2023-24", "2024-25"]);
        assert_eq!(
            rd.year_of(testdata::d(2024, 3, 31))
                .map(|y| y.year.as_str()),
            Some("2023-24")
        );
        assert_eq!(
            rd.year_of(testdata::d(2024, 4, 1)).map(|y| y.year.as_str()),
            Some("2024-25")
        );
        assert!(rd.year_of(testdata::d(2025, 4, 1)).is_none());
    }

    #[test]
    fn apc_rows_read_exactly() {
        let rd = refdata();
        let y = rd.year("2024-25").expect("2024-25 loaded");
        // HN12A: "£8,000" → 800_000; "7,500.00" → 750_000; "9,000" → 900_000; 350.50 → 35_050.
        assert_eq!(
            y.apc_price("HN12A"),
            Some(&ApcPrice {
                op_procedure: None,
                combined: Some(800_000),
                day_case: None,
                elective: Some(750_000),
                el_trim_days: Some(5),
                non_elective: Some(900_000),
                nel_trim_days: Some(10),
                per_day: Some(35_050),
                ssem_applies: false,
                ssem: None,
            })
        );
        // HN12B: "-" DC and EL are blank.
        let b = y.apc_price("HN12B").expect("HN12B");
        assert_eq!(
            (b.combined, b.day_case, b.elective),
            (Some(600_000), None, None)
        );
        // EB10A: 4,500.50 → 450_050; 275.25 → 27_525; SSEM Yes "1,234.56" → 123_456.
        let a = y.apc_price("EB10A").expect("EB10A");
        assert_eq!(
            (a.non_elective, a.per_day, a.ssem_applies, a.ssem),
            (Some(450_050), Some(27_525), true, Some(123_456))
        );
        assert_eq!((a.combined, a.el_trim_days), (None, None));
        // EB99Z NEL trim 0 is a trim point of 0 days, not blank; 500.01 → 50_001.
        let z = y.apc_price("EB99Z").expect("EB99Z");
        assert_eq!((z.nel_trim_days, z.ssem), (Some(0), Some(50_001)));
        assert_eq!(y.op_procedure_price("MA01Z"), Some(15_000));
        assert_eq!(y.op_procedure_price("HN30Z"), None);
        assert_eq!(y.apc_price("WD99Z"), None);
        // 2023-24 has fewer rows and lower prices.
        let y23 = rd.year("2023-24").expect("2023-24 loaded");
        assert_eq!(
            y23.apc_price("HN12C").map(|p| (p.elective, p.per_day)),
            Some((Some(500_000), Some(24_000)))
        );
        assert_eq!(y23.apc_price("HN20Z"), None);
    }

    #[test]
    fn op_ec_and_mff_read_exactly() {
        let rd = refdata();
        let y = rd.year("2024-25").expect("2024-25 loaded");
        // Single-professional prices: "£180.00" → 18_000, "£95.50" → 9_550; "-" → blank.
        assert_eq!(
            y.op_price("110"),
            Some(&OpPrice {
                first: Some(18_000),
                follow_up: Some(9_550)
            })
        );
        assert_eq!(
            y.op_price("100"),
            Some(&OpPrice {
                first: Some(16_000),
                follow_up: None
            })
        );
        assert_eq!(y.op_price("999"), None);
        assert_eq!(
            y.ec_price("VB10Z"),
            Some(&EcPrice {
                types_1_2: Some(12_050),
                types_3_4: Some(6_025)
            })
        );
        assert_eq!(y.ec_price("VB11Z").and_then(|p| p.types_3_4), None);
        assert_eq!(y.mff("RRV"), 1_045_678);
        assert_eq!(y.mff("RX1"), 1_000_005);
        assert_eq!(y.mff("8HA03"), 1_000_000); // absent → 1.000000
        let y23 = rd.year("2023-24").expect("2023-24 loaded");
        assert_eq!(y23.mff("RRV"), 1_040_000); // "1.04"
        assert_eq!(y23.mff("RX1"), 1_000_000);
    }

    #[test]
    fn organisations_and_restricted_codes() {
        let rd = refdata();
        for p in ["RRV", "RX1", "8HA03"] {
            assert!(rd.is_provider(p), "{p}");
        }
        assert!(!rd.is_provider("RRV01"));
        assert!(!rd.is_provider("rrv"));
        for c in ["D4U1Y", "15E", "QMJ", "QHL"] {
            assert!(rd.is_commissioner(c), "{c}");
        }
        assert!(!rd.is_commissioner("QXX"));
        for g in ["A81001", "B82002", "V81997", "V81998", "V81999"] {
            assert!(rd.is_gp_practice(g), "{g}");
        }
        assert!(!rd.is_gp_practice("V81996"));
        assert!(rd.may_send("RRV", "RRV"));
        assert!(rd.may_send("X26", "RRV"));
        assert!(!rd.may_send("X26", "RX1"));
        assert!(!rd.may_send("RRV", "X26"));
        assert_eq!(
            rd.organisations()
                .provider("8HA03")
                .map(|p| p.org_type.as_str()),
            Some("Independent")
        );
        assert!(rd.is_restricted(CodeType::Icd10, "N970"));
        assert!(rd.is_restricted(CodeType::Icd10, "F640"));
        assert!(rd.is_restricted(CodeType::Opcs4, "Q131"));
        assert!(!rd.is_restricted(CodeType::Opcs4, "N970")); // N97 is an ICD10 prefix
        assert!(!rd.is_restricted(CodeType::Icd10, "Q131"));
        assert!(!rd.is_restricted(CodeType::Icd10, "AN97"));
        assert_eq!(
            rd.restricted_codes()
                .find(CodeType::Icd10, "F641")
                .map(|c| c.list.as_str()),
            Some("GENDER_RECOGNITION")
        );
    }

    #[test]
    fn grouper_table_longest_prefix() {
        let rd = refdata();
        let g = &rd.year("2024-25").expect("2024-25").grouper;
        let hrg = |r: Option<&GrouperRule>| r.map(|r| r.hrg.clone());
        assert_eq!(hrg(g.apc_procedure("W371")), Some("HN12".into()));
        assert_eq!(hrg(g.apc_procedure("W301")), Some("HN20Z".into()));
        assert_eq!(hrg(g.apc_procedure("W401")), Some("HN99Z".into()));
        assert_eq!(hrg(g.apc_procedure("A011")), None);
        assert_eq!(hrg(g.apc_diagnosis("I219")), Some("EB10".into()));
        assert_eq!(hrg(g.op_procedure("Q551")), Some("MA01Z".into()));
        assert_eq!(hrg(g.op_procedure("W371")), None);
        let ec = &rd.year("2024-25").expect("2024-25").ec_grouper;
        assert_eq!(ec.investigation_category("1003"), Some(3));
        assert_eq!(ec.investigation_category("2003"), None); // a treatment code
        assert_eq!(ec.treatment_category("2004"), Some(4));
        assert_eq!(ec.hrg(3, 4), Some("VB01Z"));
        assert_eq!(ec.hrg(0, 0), Some("VB11Z"));
        assert_eq!(ec.hrg(4, 0), None);
    }

    #[test]
    fn malformed_money_names_path_line_and_column() {
        // Header line 1, HN12C line 2, HN12B line 3 with a badly grouped amount.
        let text = format!(
            "{APC_HEADER}\nHN12C,,5000,4000,5500,3,6000,6,250,Yes,1500\nHN12B,,6000,\"12,34\",,4,7000,8,300,No,\n"
        );
        let (path, line, message) = refdata_error(load_with("2024-25/apc_oproc_prices.csv", &text));
        assert_eq!(path, PathBuf::from("/fixture/2024-25/apc_oproc_prices.csv"));
        assert_eq!(line, 3);
        assert!(
            message.contains("column 'Day case spell tariff (£)'"),
            "{message}"
        );
        assert!(message.contains("'12,34'"), "{message}");
        // The displayed error reads path:line: column.
        let shown = load_with("2024-25/apc_oproc_prices.csv", &text)
            .expect_err("malformed")
            .to_string();
        assert!(
            shown.starts_with(
                "reference data /fixture/2024-25/apc_oproc_prices.csv:3: column 'Day case spell tariff (£)'"
            ),
            "{shown}"
        );
    }

    #[test]
    fn line_numbers_count_physical_lines() {
        // A quoted name spanning two lines (lines 2-3), a blank line 4 and a row of commas on line 5:
        // the bad row is on line 6.
        let text = "Org code,Org name,MFF payment index\nRRV,\"University College\nLondon\",1.045678\n\n,,\nRX1,Nottingham,1.0000005\n";
        let (path, line, message) = refdata_error(load_with("2024-25/mff.csv", text));
        assert_eq!(path, PathBuf::from("/fixture/2024-25/mff.csv"));
        assert_eq!(line, 6);
        assert!(message.contains("column 'MFF payment index'"), "{message}");
        assert!(message.contains("more than six decimals"), "{message}");
    }

    #[test]
    fn sheet_errors() {
        let year = "2024-25/mff.csv";
        // Missing column: line 1.
        let (_, line, message) = refdata_error(load_with(year, "Org code,Index\nRRV,1.0\n"));
        assert_eq!(line, 1);
        assert!(
            message.contains("missing column 'MFF payment index'"),
            "{message}"
        );
        // Column twice.
        let (_, line, message) = refdata_error(load_with(
            year,
            "Org code,MFF payment index, MFF payment index\nRRV,1.0,1.1\n",
        ));
        assert_eq!(line, 1);
        assert!(message.contains("more than once"), "{message}");
        // A row with too many cells (line 3).
        let (_, line, message) = refdata_error(load_with(
            year,
            "Org code,MFF payment index\nRRV,1.0\nRX1,1.0,extra\n",
        ));
        assert_eq!(line, 3);
        assert!(message.contains("malformed CSV"), "{message}");
        // Duplicate key (line 3).
        let (_, line, message) = refdata_error(load_with(
            year,
            "Org code,MFF payment index\nRRV,1.0\nRRV,1.1\n",
        ));
        assert_eq!(line, 3);
        assert!(message.contains("column 'Org code'"), "{message}");
        assert!(
            message.contains("'RRV' is listed more than once"),
            "{message}"
        );
        // Blank payment index.
        let (_, line, message) =
            refdata_error(load_with(year, "Org code,MFF payment index\nRRV,\n"));
        assert_eq!(line, 2);
        assert!(message.contains("blank payment index"), "{message}");
        // Blank key.
        let (_, line, message) =
            refdata_error(load_with(year, "Org code,MFF payment index\n,1.0\n"));
        assert_eq!(line, 2);
        assert!(message.contains("column 'Org code': blank"), "{message}");
        // Empty file.
        let (_, line, message) = refdata_error(load_with(year, ""));
        assert_eq!(line, 1);
        assert!(message.contains("header"), "{message}");
    }

    #[test]
    fn sheets_accept_bom_reordered_and_extra_columns() {
        let text = "\u{feff}Extra,MFF payment index,Org code\nx,1.5,RRV\n,,\n";
        let rd = load_with("2024-25/mff.csv", text).expect("loads");
        let y = rd.year("2024-25").expect("2024-25");
        assert_eq!(y.mff("RRV"), 1_500_000);
        assert_eq!(y.mff("RX1"), 1_000_000);
    }

    #[test]
    fn apc_sheet_value_errors() {
        let rel = "2024-25/apc_oproc_prices.csv";
        let row = |trim: &str, ssem: &str| {
            format!("{APC_HEADER}\nHN12C,,5000,4000,5500,{trim},6000,6,250,{ssem},1500\n")
        };
        let (_, line, message) = refdata_error(load_with(rel, &row("2.5", "Yes")));
        assert_eq!(line, 2);
        assert!(
            message.contains("column 'Ordinary elective long stay trim point (days)'"),
            "{message}"
        );
        let (_, line, message) = refdata_error(load_with(rel, &row("3", "Maybe")));
        assert_eq!(line, 2);
        assert!(
            message.contains("column 'Reduced short stay emergency tariff _applicable?'"),
            "{message}"
        );
        // Three decimals: refused, never rounded.
        let text = format!("{APC_HEADER}\nHN12C,,5000.001,,,,,,,No,\n");
        let (_, _, message) = refdata_error(load_with(rel, &text));
        assert!(message.contains("more than two decimals"), "{message}");
    }

    #[test]
    fn grouper_file_errors() {
        let rel = "2024-25/hrg_grouper.csv";
        let head = "setting,code_type,code_prefix,hrg,cc_split\n";
        let cases = [
            ("APC,OPCS4,W37,HN12Z,Y", "column 'hrg'"), // split rule needs a 4-character root
            ("APC,OPCS4,W37,HN12,N", "column 'hrg'"),  // unsplit needs 5
            ("APC,SNOMED,W37,HN12Z,N", "column 'code_type'"),
            ("XYZ,OPCS4,W37,HN12Z,N", "column 'setting'"),
            ("OP,ICD10,I21,EB10Z,N", "column 'code_type'"),
            ("OP,OPCS4,Q55,MA01,Y", "column 'cc_split'"),
            ("APC,OPCS4,W37,HN12,maybe", "column 'cc_split'"),
        ];
        for (row, want) in cases {
            let (path, line, message) = refdata_error(load_with(
                rel,
                &format!("{head}APC,OPCS4,W,HN99Z,N\n{row}\n"),
            ));
            assert_eq!(path, PathBuf::from("/fixture/2024-25/hrg_grouper.csv"));
            assert_eq!(line, 3, "{row}");
            assert!(message.contains(want), "{row}: {message}");
        }
        // Duplicate prefix within one setting and code type.
        let (_, line, message) = refdata_error(load_with(
            rel,
            &format!("{head}APC,OPCS4,W,HN99Z,N\nAPC,OPCS4,W,HN98Z,N\n"),
        ));
        assert_eq!(line, 3);
        assert!(
            message.contains("'W' is listed more than once"),
            "{message}"
        );
    }

    #[test]
    fn ec_grouper_file_errors() {
        // Category out of range for its kind (investigations 1-3).
        let (path, line, message) = refdata_error(load_with(
            "2023-24/ec_grouper.csv",
            "snomed_code,kind,category\n1001,investigation,4\n",
        ));
        assert_eq!(path, PathBuf::from("/fixture/2023-24/ec_grouper.csv"));
        assert_eq!(line, 2);
        assert!(message.contains("column 'category'"), "{message}");
        // A missing category pair is a whole-file error.
        let without_3_4 = testdata::EC_HRG.replace("3,4,VB01Z\n", "");
        let (path, line, message) = refdata_error(load_with("2023-24/ec_hrg.csv", &without_3_4));
        assert_eq!(path, PathBuf::from("/fixture/2023-24/ec_hrg.csv"));
        assert_eq!(line, 0);
        assert!(
            message.contains("investigation category 3 and treatment category 4"),
            "{message}"
        );
    }

    #[test]
    fn missing_files_and_bad_year_folders() {
        let mut f = files();
        f.remove(Path::new("2023-24/ec_hrg.csv"));
        let (path, line, message) = refdata_error(RefData::from_files(Path::new("/fixture"), &f));
        assert_eq!(path, PathBuf::from("/fixture/2023-24/ec_hrg.csv"));
        assert_eq!(line, 0);
        assert_eq!(message, "file not found");
        let mut f = files();
        f.remove(Path::new(SENDERS));
        let (path, _, _) = refdata_error(RefData::from_files(Path::new("/fixture"), &f));
        assert_eq!(path, PathBuf::from("/fixture/organisations/senders.csv"));
        // 2024-26 is not a financial year.
        let (path, _, message) = refdata_error(load_with("2024-26/mff.csv", testdata::MFF_2024));
        assert_eq!(path, PathBuf::from("/fixture/2024-26"));
        assert!(message.contains("not a financial year"), "{message}");
        // 1999-00 is.
        let mut f = files();
        for (k, v) in files() {
            if let Ok(rest) = k.strip_prefix("2024-25") {
                f.insert(Path::new("1999-00").join(rest), v);
            }
        }
        let rd = RefData::from_files(Path::new("/fixture"), &f).expect("1999-00 loads");
        assert!(rd.year_of(testdata::d(2000, 3, 31)).is_some());
    }

    #[test]
    fn load_reads_a_folder_from_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (rel, text) in files() {
            let path = dir.path().join(&rel);
            std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
            std::fs::write(&path, text).expect("write");
        }
        // A folder that is not a year is ignored.
        std::fs::create_dir_all(dir.path().join("tools")).expect("mkdir");
        let rd = RefData::load(dir.path()).expect("loads");
        assert_eq!(rd, refdata());
        // Not UTF-8: names the file.
        let bad = dir.path().join("2024-25/op_prices.csv");
        std::fs::write(&bad, b"Treatment function code\xff\n").expect("write");
        match RefData::load(dir.path()) {
            Err(Error::RefData { path, message, .. }) => {
                assert_eq!(path, bad);
                assert!(message.contains("not UTF-8"), "{message}");
            }
            other => panic!("expected a UTF-8 error, got {other:?}"),
        }
        // A missing year file names it.
        std::fs::remove_file(&bad).expect("rm");
        match RefData::load(dir.path()) {
            Err(Error::RefData { path, message, .. }) => {
                assert_eq!(path, bad);
                assert_eq!(message, "file not found");
            }
            other => panic!("expected a missing file error, got {other:?}"),
        }
    }
}
