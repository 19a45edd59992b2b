//! Group keys: text interned per field, dictionary codes remembered per dictionary, and the
//! keyed digests of patients for distinct counts.

use super::read::Chunk;
use super::spec::PatientKey;
use crate::{Error, Result};
use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int32Type};
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// Lookups hash per row or per chunk: a fast hasher (the keys are our own codes and labels, not
/// attacker-chosen in a way that matters for a query's own memory).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Text → code for one group-by field.
#[derive(Default)]
pub(super) struct Interner {
    codes: HashMap<String, u32>,
    null: Option<u32>,
    pub labels: Vec<Option<String>>,
}

impl Interner {
    pub(super) fn code(&mut self, label: Option<&str>) -> u32 {
        match label {
            Some(s) => {
                if let Some(c) = self.codes.get(s) {
                    return *c;
                }
                let c = self.labels.len() as u32;
                self.labels.push(Some(s.to_string()));
                self.codes.insert(s.to_string(), c);
                c
            }
            None => *self.null.get_or_insert_with(|| {
                self.labels.push(None);
                (self.labels.len() - 1) as u32
            }),
        }
    }
}

/// A field's keys over one chunk.
pub(super) enum Keys {
    /// Every row has this code.
    Const(u32),
    /// Per-row local codes and each local code's interned code.
    Local { codes: Vec<u32>, global: Vec<u32> },
}

/// Dictionaries recently seen by one field, with the interned code of each value (and of null,
/// last). Chunks sliced from one column share its dictionary, so each is interned once; holding
/// the dictionary keeps its address from being reused by another while it is in the list.
#[derive(Default)]
pub(super) struct DictCodes {
    recent: Vec<(ArrayRef, std::sync::Arc<Vec<u32>>)>,
}

/// How many dictionaries a field remembers.
pub(super) const RECENT_DICTIONARIES: usize = 4;

impl DictCodes {
    pub(super) fn global(
        &mut self,
        dict_values: &ArrayRef,
        interner: &mut Interner,
        label: &dyn Fn(&str) -> String,
    ) -> Result<std::sync::Arc<Vec<u32>>> {
        if let Some((_, g)) = self
            .recent
            .iter()
            .find(|(v, _)| std::sync::Arc::ptr_eq(v, dict_values))
        {
            return Ok(g.clone());
        }
        let names = cast(dict_values, &DataType::Utf8)?;
        let names = names.as_string::<i32>();
        let mut global: Vec<u32> = (0..names.len())
            .map(|i| {
                if names.is_valid(i) {
                    interner.code(Some(&label(names.value(i))))
                } else {
                    interner.code(None)
                }
            })
            .collect();
        global.push(interner.code(None));
        let global = std::sync::Arc::new(global);
        if self.recent.len() == RECENT_DICTIONARIES {
            self.recent.remove(0);
        }
        self.recent.push((dict_values.clone(), global.clone()));
        Ok(global)
    }
}

/// Keys through a dictionary: each dictionary value's label (by `label`) interned once.
pub(super) fn dictionary_keys(
    values: &ArrayRef,
    interner: &mut Interner,
    dicts: &mut DictCodes,
    label: &dyn Fn(&str) -> String,
) -> Option<Result<Keys>> {
    let dict = values.as_dictionary_opt::<Int32Type>()?;
    Some((|| {
        let global = dicts.global(dict.values(), interner, label)?;
        let null = (global.len() - 1) as u32;
        let keys = dict.keys();
        let codes = if keys.null_count() == 0 {
            keys.values().iter().map(|k| *k as u32).collect()
        } else {
            (0..keys.len())
                .map(|i| {
                    if keys.is_valid(i) {
                        keys.value(i) as u32
                    } else {
                        null
                    }
                })
                .collect()
        };
        Ok(Keys::Local {
            codes,
            global: global.to_vec(),
        })
    })())
}

/// Keys of any field through its text (dates, numbers and flags as Arrow prints them).
pub(super) fn generic_keys(values: &ArrayRef, interner: &mut Interner) -> Result<Keys> {
    let text = cast(values, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut local: HashMap<Option<&str>, u32> = HashMap::default();
    let mut global = Vec::new();
    let codes = text
        .iter()
        .map(|v| {
            *local.entry(v).or_insert_with(|| {
                global.push(interner.code(v));
                (global.len() - 1) as u32
            })
        })
        .collect();
    Ok(Keys::Local { codes, global })
}

/// A patient's keyed 128-bit digest per listed row: the NHS number, else the provider and
/// local patient identifier; `None` for a row with neither.
pub(super) fn patient_digests(
    chunk: &Chunk<'_>,
    rows: &[u32],
    key: &PatientKey,
) -> Result<Vec<Option<u128>>> {
    let text = |name: &str| -> Result<ArrayRef> {
        let col = chunk
            .batch
            .column_by_name(name)
            .ok_or_else(|| Error::InvalidArgument(format!("internal: chunk lacks {name}")))?;
        Ok(cast(col, &DataType::Utf8)?)
    };
    let nhs = text("nhs_number")?;
    let local = text("local_patient_id")?;
    let (nhs, local) = (nhs.as_string::<i32>(), local.as_string::<i32>());
    // The keyed initial state, made once and copied per row.
    let keyed = SipHasher13::new_with_key(&key.0);
    Ok(rows
        .iter()
        .map(|&row| {
            let row = row as usize;
            let mut h = keyed;
            if nhs.is_valid(row) {
                h.write(b"n");
                h.write(nhs.value(row).as_bytes());
            } else if local.is_valid(row) {
                h.write(b"l");
                h.write(chunk.provider.as_bytes());
                h.write_u8(0x1f);
                h.write(local.value(row).as_bytes());
            } else {
                return None;
            }
            Some(h.finish128().as_u128())
        })
        .collect())
}
