//! Planning one change: which rows become live, which stored rows are superseded, the counts.
//!
//! The plan reads the catalog (under the writer lock) but writes nothing; [`super::Store`] then
//! writes the planned segments and commits the plan in one catalog transaction.

use super::catalog::{Batch, Reader};
use super::change::DeleteKey;
use super::keys::{self, Live, RecState};
use super::outcome::ApplyCounts;
use super::segment;
use super::spells::{SpellKey, SpellReader, reindex};
use crate::model::Dataset;
use crate::{Error, Result};
use arrow::array::{Array, AsArray, Date32Array, RecordBatch, StringArray, TimestampSecondArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, TimestampSecondType};
use chrono::{Datelike, NaiveDate};
use std::collections::{BTreeMap, HashMap};

/// Days since 1970 of a date (the Date32 encoding).
pub(super) fn days(date: NaiveDate) -> i32 {
    // 1970-01-01 is day 719_163 of the common era; every NaiveDate is within i32 days of it.
    date.num_days_from_ce() - 719_163
}

/// `YYYY-MM` of a Date32 value.
pub(super) fn month(days: i32) -> Result<String> {
    NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
        // Not `format("%Y-%m")`: this runs per stored row, and strftime parsing was visible.
        .map(|d| format!("{:04}-{:02}", d.year(), d.month()))
        .ok_or_else(|| Error::Internal(format!("activity date {days} is out of range")))
}

/// The key columns of the upserts, typed.
pub(super) struct Columns<'a> {
    pub ids: &'a StringArray,
    pub applicable: &'a TimestampSecondArray,
    pub activity: &'a Date32Array,
    pub providers: StringArray,
}

impl<'a> Columns<'a> {
    pub fn new(batch: &'a RecordBatch) -> Result<Columns<'a>> {
        let col = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::Internal(format!("upserts lack column {name}")))
        };
        let ids = segment::ids(batch)?;
        let applicable = col("cds_applicable_datetime")?
            .as_primitive_opt::<TimestampSecondType>()
            .ok_or_else(|| Error::Internal("cds_applicable_datetime type".into()))?;
        let activity = col("activity_date")?
            .as_primitive_opt::<Date32Type>()
            .ok_or_else(|| Error::Internal("activity_date type".into()))?;
        let providers = cast(col("provider_code")?, &DataType::Utf8)?
            .as_string_opt::<i32>()
            .cloned()
            .ok_or_else(|| Error::Internal("provider_code type".into()))?;
        // The stored schema makes these non-nullable, but the plan indexes them blindly.
        for (name, nulls) in [
            ("cds_unique_id", ids.null_count()),
            ("cds_applicable_datetime", applicable.null_count()),
            ("activity_date", activity.null_count()),
            ("provider_code", providers.null_count()),
        ] {
            if nulls > 0 {
                return Err(Error::Internal(format!("{nulls} upserts have no {name}")));
            }
        }
        // The provider is a path component of the segment: refuse anything that could escape it.
        if let Some(bad) = providers
            .iter()
            .flatten()
            .find(|p| p.is_empty() || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(Error::Internal(format!(
                "provider code '{bad}' is not 1-16 ASCII letters and digits"
            )));
        }
        Ok(Columns {
            ids,
            applicable,
            activity,
            providers,
        })
    }
}

/// Where a record's current row is: already in a segment, or in this change's upserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    Stored(Live),
    Pending { row: usize, activity: i32 },
}

#[derive(Debug, Clone)]
struct State {
    applicable: i64,
    version: u64,
    sender: String,
    live: Option<Loc>,
}

/// A row to write: (id, upsert row, activity date).
pub(super) type PartRow = (String, usize, i32);

/// One provider's rows of the upserts (one segment): by activity month, then `cds_unique_id`.
pub(super) struct PartitionRows {
    pub provider: String,
    /// (`YYYY-MM`, rows) runs of `rows`, in order.
    pub months: Vec<(String, u32)>,
    pub rows: Vec<PartRow>,
}

pub(super) struct Plan {
    dataset: Dataset,
    version: u64,
    sender: String,
    pub counts: ApplyCounts,
    /// Final state of every id this change touches.
    states: HashMap<String, State>,
    /// Catalog state of those ids before the change.
    original: HashMap<String, Option<RecState>>,
    /// Stored rows this change supersedes.
    pub deletions: Vec<(u64, u32)>,
    /// Counts per partition (provider, `YYYY-MM`): inserted, replaced, deleted, bulk deleted,
    /// stale. A stale deletion of a record never held has no partition and is not in it.
    pub activity: BTreeMap<(String, String), [u64; 5]>,
    /// Provider of each stored segment looked up (for counts of superseded rows).
    segment_providers: HashMap<u64, String>,
    /// APC: every changed record's spell before and after the change.
    spell_moves: Vec<(String, Option<SpellKey>, Option<SpellKey>)>,
}

const INSERTED: usize = 0;
const REPLACED: usize = 1;
const DELETED: usize = 2;
const BULK_DELETED: usize = 3;
const STALE: usize = 4;

impl Plan {
    pub fn new(dataset: Dataset, version: u64, sender: &str) -> Plan {
        Plan {
            dataset,
            version,
            sender: sender.to_string(),
            counts: ApplyCounts {
                version,
                ..ApplyCounts::default()
            },
            states: HashMap::new(),
            original: HashMap::new(),
            deletions: Vec::new(),
            activity: BTreeMap::new(),
            segment_providers: HashMap::new(),
            spell_moves: Vec::new(),
        }
    }

    /// The partition of a record's current row.
    fn partition_of(
        &mut self,
        db: &Reader,
        cols: &Columns,
        loc: Loc,
    ) -> Result<Option<(String, String)>> {
        Ok(match loc {
            Loc::Pending { row, activity } => {
                Some((cols.providers.value(row).to_string(), month(activity)?))
            }
            Loc::Stored(l) => {
                if !self.segment_providers.contains_key(&l.segment) {
                    let entry = db
                        .get(&keys::segment(self.dataset, l.segment))?
                        .map(|v| super::keys::SegmentEntry::decode(&v))
                        .transpose()?
                        .ok_or_else(|| {
                            keys::corrupt("record index", &format!("segment {} unknown", l.segment))
                        })?;
                    self.segment_providers.insert(l.segment, entry.provider);
                }
                let provider = self.segment_providers[&l.segment].clone();
                Some((provider, month(l.activity)?))
            }
        })
    }

    fn tally(&mut self, part: Option<(String, String)>, what: usize) {
        if let Some(p) = part {
            self.activity.entry(p).or_default()[what] += 1;
        }
    }

    /// The current state of `id`, reading the catalog the first time.
    fn current(&mut self, db: &Reader, id: &str) -> Result<Option<State>> {
        if let Some(s) = self.states.get(id) {
            return Ok(Some(s.clone()));
        }
        if self.original.contains_key(id) {
            return Ok(None);
        }
        let stored = db
            .get(&keys::record(self.dataset, id))?
            .map(|v| RecState::decode(&v))
            .transpose()?;
        let state = stored.as_ref().map(|s| State {
            applicable: s.applicable,
            version: s.version,
            sender: s.sender.clone(),
            live: s.live.map(Loc::Stored),
        });
        self.original.insert(id.to_string(), stored);
        if let Some(s) = &state {
            self.states.insert(id.to_string(), s.clone());
        }
        Ok(state)
    }

    /// Marks the row a state points at as superseded (a pending row simply never gets written).
    fn supersede(&mut self, live: Option<Loc>) {
        if let Some(Loc::Stored(l)) = live {
            self.deletions.push((l.segment, l.row));
        }
    }

    fn set(&mut self, id: &str, applicable: i64, live: Option<Loc>) {
        self.states.insert(
            id.to_string(),
            State {
                applicable,
                version: self.version,
                sender: self.sender.clone(),
                live,
            },
        );
    }

    /// Stores upsert `row`; `check_stale` is false for Bulk Replacement, which stores regardless.
    fn upsert(&mut self, db: &Reader, cols: &Columns, row: usize, check_stale: bool) -> Result<()> {
        let id = cols.ids.value(row);
        let applicable = cols.applicable.value(row);
        let pending = Loc::Pending {
            row,
            activity: cols.activity.value(row),
        };
        let part = Some((
            cols.providers.value(row).to_string(),
            month(cols.activity.value(row))?,
        ));
        match self.current(db, id)? {
            Some(s) if check_stale && applicable <= s.applicable => {
                self.counts.stale += 1;
                self.tally(part, STALE);
            }
            Some(s) if s.live.is_some() => {
                self.supersede(s.live);
                self.counts.replaced += 1;
                self.tally(part, REPLACED);
                self.set(id, applicable, Some(pending));
            }
            _ => {
                self.counts.inserted += 1;
                self.tally(part, INSERTED);
                self.set(id, applicable, Some(pending));
            }
        }
        Ok(())
    }

    fn delete(&mut self, db: &Reader, cols: &Columns, key: &DeleteKey) -> Result<()> {
        let id = key.cds_unique_id.as_str();
        let applicable = key.applicable.and_utc().timestamp();
        let current = self.current(db, id)?;
        let part = match current.as_ref().and_then(|s| s.live) {
            Some(loc) => self.partition_of(db, cols, loc)?,
            None => None,
        };
        match current {
            Some(s) if applicable <= s.applicable => {
                self.counts.stale += 1;
                self.tally(part, STALE);
            }
            Some(s) if s.live.is_some() => {
                self.supersede(s.live);
                self.counts.deleted += 1;
                self.tally(part, DELETED);
                self.set(id, applicable, None);
            }
            // Nothing live to delete: keep the later time so that an older upsert stays stale.
            _ => {
                self.counts.stale += 1;
                self.set(id, applicable, None);
            }
        }
        Ok(())
    }

    /// Net Change: upserts and deletions together in (applicable date-time, file ordinal) order.
    pub fn net_change(
        &mut self,
        db: &Reader,
        cols: &Columns,
        ordinals: &[u64],
        deletes: &[DeleteKey],
    ) -> Result<()> {
        enum Op {
            Upsert(usize),
            Delete(usize),
        }
        let mut ops: Vec<(i64, u64, Op)> = Vec::with_capacity(ordinals.len() + deletes.len());
        ops.extend(
            ordinals
                .iter()
                .enumerate()
                .map(|(row, &ord)| (cols.applicable.value(row), ord, Op::Upsert(row))),
        );
        ops.extend(
            deletes
                .iter()
                .enumerate()
                .map(|(i, d)| (d.applicable.and_utc().timestamp(), d.ordinal, Op::Delete(i))),
        );
        ops.sort_by_key(|(t, ord, _)| (*t, *ord));
        for (_, _, op) in ops {
            match op {
                Op::Upsert(row) => self.upsert(db, cols, row, true)?,
                Op::Delete(i) => self.delete(db, cols, &deletes[i])?,
            }
        }
        Ok(())
    }

    /// Bulk Replacement: delete the sender's live records dated in `[start, end]` (days), then
    /// store every upsert, later (applicable, ordinal) winning within the submission.
    pub fn bulk(
        &mut self,
        db: &Reader,
        cols: &Columns,
        ordinals: &[u64],
        start: i32,
        end: i32,
    ) -> Result<()> {
        let (from, to) = keys::by_sender_range(self.dataset, &self.sender, start, end);
        let mut ids = Vec::new();
        for (key, _) in db.range(&from, Some(&to))? {
            ids.push(keys::by_sender_id(self.dataset, &self.sender, &key)?);
        }
        for id in ids {
            match self.current(db, &id)? {
                Some(s) if s.live.is_some() => {
                    let part = match s.live {
                        Some(loc) => self.partition_of(db, cols, loc)?,
                        None => None,
                    };
                    self.tally(part, BULK_DELETED);
                    self.supersede(s.live);
                    self.counts.bulk_deleted += 1;
                    // The tombstone keeps the deleted version's time: replaying an old Net Change
                    // after the bulk replacement must not resurrect what it removed.
                    self.set(&id, s.applicable, None);
                }
                _ => {
                    return Err(keys::corrupt(
                        "sender index",
                        &format!("{} {id} is indexed as live but is not", self.dataset),
                    ));
                }
            }
        }
        let mut order: Vec<usize> = (0..ordinals.len()).collect();
        order.sort_by_key(|&row| (cols.applicable.value(row), ordinals[row]));
        for row in order {
            self.upsert(db, cols, row, false)?;
        }
        Ok(())
    }

    /// Whether each of the first `upserts` rows became live as the change's derivation expected.
    pub fn check_live(
        &self,
        cols: &Columns,
        upserts: usize,
        expected: &[bool],
    ) -> std::result::Result<(), String> {
        if expected.len() != upserts {
            return Err(format!(
                "{} liveness expectations for {upserts} upserts",
                expected.len()
            ));
        }
        for (row, &want) in expected.iter().enumerate() {
            let id = cols.ids.value(row);
            let live = matches!(
                self.states.get(id).and_then(|s| s.live),
                Some(Loc::Pending { row: r, .. }) if r == row
            );
            if live != want {
                return Err(format!(
                    "record {id} {} stored: the store changed while the submission was derived",
                    if live { "is" } else { "is not" }
                ));
            }
        }
        Ok(())
    }

    /// Stores upsert `row` as a new version of a live record derived again (its spell changed):
    /// same items, applicable time and sender, new derived fields. `expected` is the version of
    /// the row it replaces; any other state is a conflict.
    pub fn rederive(
        &mut self,
        db: &Reader,
        cols: &Columns,
        row: usize,
        expected: u64,
    ) -> Result<std::result::Result<(), String>> {
        let id = cols.ids.value(row);
        let state = self.current(db, id)?;
        let Some(s) =
            state.filter(|s| s.version == expected && matches!(s.live, Some(Loc::Stored(_))))
        else {
            return Ok(Err(format!(
                "episode {id} changed while its spell was derived again"
            )));
        };
        self.supersede(s.live);
        self.states.insert(
            id.to_string(),
            State {
                applicable: s.applicable,
                version: self.version,
                sender: s.sender,
                live: Some(Loc::Pending {
                    row,
                    activity: cols.activity.value(row),
                }),
            },
        );
        self.counts.rederived += 1;
        Ok(Ok(()))
    }

    /// APC: reads the spells of the changed records before the change and notes their spells
    /// after it (`keys[row]` for a row written now), for the spell index.
    pub fn load_spells(&mut self, db: &Reader, keys: &[Option<SpellKey>]) -> Result<()> {
        let index = SpellReader { db };
        let mut moves = Vec::new();
        for (id, s) in &self.states {
            if s.version != self.version {
                continue;
            }
            let was_live = matches!(self.original.get(id), Some(Some(o)) if o.live.is_some());
            let old = if was_live { index.spell_of(id)? } else { None };
            let new = match s.live {
                Some(Loc::Pending { row, .. }) => keys.get(row).cloned().flatten(),
                _ => None,
            };
            moves.push((id.clone(), old, new));
        }
        self.spell_moves = moves;
        Ok(())
    }

    /// The rows to write: one segment per provider, rows by month then id.
    pub fn partitions(&self, cols: &Columns) -> Result<Vec<PartitionRows>> {
        let mut parts: BTreeMap<String, BTreeMap<String, Vec<PartRow>>> = BTreeMap::new();
        for (id, state) in &self.states {
            if let Some(Loc::Pending { row, activity }) = state.live {
                parts
                    .entry(cols.providers.value(row).to_string())
                    .or_default()
                    .entry(month(activity)?)
                    .or_default()
                    .push((id.clone(), row, activity));
            }
        }
        Ok(parts
            .into_iter()
            .map(|(provider, by_month)| {
                let mut months = Vec::with_capacity(by_month.len());
                let mut rows = Vec::new();
                for (m, mut part) in by_month {
                    part.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                    months.push((m, part.len() as u32));
                    rows.extend(part);
                }
                PartitionRows {
                    provider,
                    months,
                    rows,
                }
            })
            .collect())
    }

    /// Records where a pending row was written.
    pub fn place(&mut self, id: &str, live: Live) {
        if let Some(s) = self.states.get_mut(id) {
            s.live = Some(Loc::Stored(live));
        }
    }

    /// The catalog writes of the record index: states, the sender index, deletion marks.
    pub fn write_to(&self, batch: &mut Batch) -> Result<()> {
        let ds = self.dataset;
        let version = self.version.to_be_bytes();
        for &(seg, row) in &self.deletions {
            batch.insert(keys::deleted(seg, row), version);
        }
        // Ids read but left alone (stale operations) keep their state and index entries.
        let changed = || {
            self.states
                .iter()
                .filter(|(_, s)| s.version == self.version)
        };
        // Removals first: a batch keeps the last write of a key, so a record that stays under
        // the same sender and date keeps its index entry.
        for (id, _) in changed() {
            if let Some(Some(RecState {
                sender,
                live: Some(l),
                ..
            })) = self.original.get(id)
            {
                batch.remove(keys::by_sender(ds, sender, l.activity, id));
            }
        }
        for (id, s) in changed() {
            let live = match s.live {
                None => None,
                Some(Loc::Stored(l)) => Some(l),
                Some(Loc::Pending { .. }) => {
                    return Err(Error::Internal(format!(
                        "record {id} was planned but not written"
                    )));
                }
            };
            if let Some(l) = live {
                batch.insert(keys::by_sender(ds, &s.sender, l.activity, id), []);
            }
            let state = RecState {
                applicable: s.applicable,
                version: s.version,
                sender: s.sender.clone(),
                live,
            };
            batch.insert(keys::record(ds, id), state.encode());
        }
        for (id, old, new) in &self.spell_moves {
            reindex(batch, id, old.as_ref(), new.as_ref())?;
        }
        Ok(())
    }
}
