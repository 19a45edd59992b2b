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

pub mod grouping;
pub mod money;
pub mod orgs;
mod sheet;
pub mod tariff;
#[cfg(test)]
pub(crate) mod testdata;

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

/// All reference data the domain core needs, loaded once and then read-only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefData {
    orgs: Organisations,
    restricted: RestrictedCodes,
    years: BTreeMap<String, TariffYear>,
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
        })
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
