//! Targets `csv_submission` and `parquet_submission`: what a submitter sends, through the whole
//! single-node path (parse within the limits, validate, derive spells and HRGs, price, encode,
//! store) on a real store on disk.
//!
//! Inputs start from valid generated submissions of each dataset and are mutated at three levels:
//! the envelope (dataset, sender, submission id), the table (cells set to boundary values, random
//! text, values borrowed from other columns, long fields; columns dropped, duplicated, renamed;
//! rows duplicated, dropped, swapped) and the bytes (flips, insertions, deletions, truncation,
//! and for Parquet overwritten integers and footer lengths). Parquet files are written with a
//! random physical type per column (text, large text, dictionary, lists, binary, integers,
//! booleans, dates, timestamps, floats, structs), compression, row-group and page sizes.
//!
//! Every input must end as an accepted report, a rejection naming at least one issue, or a
//! refusal (`InvalidArgument`, over a limit); a rejected or refused input must leave the store's
//! totals unchanged (checked on every fourth one); nothing may panic or fail the node.

use crate::engine::{self, Budget, Report, Tally};
use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int64Array,
    LargeListArray, LargeStringArray, ListArray, RecordBatch, RecordBatchOptions, StringArray,
    StructArray, TimestampSecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Int32Type, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use proptest::prelude::*;
use proptest::sample::Index;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use sus_client::generator::{GenConfig, generate};
use sus_node::Error;
use sus_node::ingest::files::read_submission;
use sus_node::ingest::local::{LocalConfig, LocalStore};
use sus_node::model::{Dataset, SubmissionMeta};
use sus_node::report::Outcome;
use sus_node::store::totals::{DatasetSummary, summarise};

/// Boundary and hostile values for a cell.
pub const INTERESTING: &[&str] = &[
    "",
    " ",
    "0",
    "00",
    "-1",
    "+1",
    "1.5",
    "99999999999999999999",
    "2147483648",
    "-9223372036854775809",
    "1e309",
    "NaN",
    "inf",
    "2024-02-30",
    "2024-13-01",
    "2023-02-29",
    "2024-02-29",
    "0000-01-01",
    "9999-12-31",
    "1900-01-01",
    "2024-04-01T00:00:00",
    "2024-03-31T23:59:59",
    "2024-04-01 00:00",
    "2024-04-01T24:00:00",
    "Y",
    "N",
    "y",
    "Z",
    "1",
    "2",
    "5",
    "9",
    "21",
    "2A",
    "31",
    "81",
    "98",
    "99",
    "A01",
    "U051",
    "Z99.9",
    "R69X",
    "A01;B02",
    ";",
    ";;",
    "A01;",
    "\"",
    ",",
    "\n",
    "\r\n",
    "\u{0}",
    "é",
    "\u{202E}",
    "\u{FEFF}",
    "🙂",
    "NULL",
    "'; DROP TABLE x; --",
    "../../etc/passwd",
    "%s%n",
];

/// Valid submissions to mutate, and the reference data.
pub struct Seeds {
    pub files: Vec<(SubmissionMeta, Vec<u8>)>,
    pub refdata: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn refdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

/// Three files of 20 records of each dataset from the generator.
pub fn seeds() -> Seeds {
    use sus_client::generator::model::Dataset as Gen;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for (i, ds) in [Gen::Apc, Gen::Op, Gen::Ec].into_iter().enumerate() {
        let out = dir.path().join(format!("gen{i}"));
        let summary = generate(
            &GenConfig {
                dataset: Some(ds),
                rows: 60,
                seed: 7,
                refdata_dir: refdata(),
                out_dir: out.clone(),
                rows_per_file: 20,
                ..GenConfig::default()
            },
            &mut |_| {},
        )
        .expect("generate");
        for s in summary
            .expected
            .submissions
            .iter()
            .filter(|s| s.outcome == "accepted" && s.duplicate_of.is_none())
            .take(3)
        {
            files.push(read_submission(&out.join(&s.file)).expect("read a generated file"));
        }
    }
    Seeds {
        files,
        refdata: refdata(),
        _dir: dir,
    }
}

/// A node on a fresh store holding the first seed file of each dataset, renewed every few
/// hundred inputs so that the store stays small.
pub struct Bench<'s> {
    seeds: &'s Seeds,
    dir: Option<tempfile::TempDir>,
    node: Option<LocalStore>,
    cases: u64,
    checks: u64,
}

impl<'s> Bench<'s> {
    pub fn new(seeds: &'s Seeds) -> Bench<'s> {
        Bench {
            seeds,
            dir: None,
            node: None,
            cases: 0,
            checks: 0,
        }
    }

    pub fn node(&mut self) -> &LocalStore {
        if self.cases.is_multiple_of(250) || self.node.is_none() {
            self.node = None;
            let dir = tempfile::tempdir().expect("temp dir");
            let node = LocalStore::open(&LocalConfig {
                data_dir: dir.path().join("node"),
                refdata_dir: self.seeds.refdata.clone(),
                grouper_output: None,
            })
            .expect("open a node");
            for (i, (meta, bytes)) in self.seeds.files.iter().enumerate().step_by(3) {
                let report = node
                    .submit(meta, &format!("seed{i}.csv"), bytes)
                    .expect("seed");
                assert_eq!(report.outcome, Outcome::Accepted, "a seed file: {report}");
            }
            self.dir = Some(dir);
            self.node = Some(node);
        }
        self.cases += 1;
        self.node.as_ref().expect("opened above")
    }

    /// Submits and checks the outcome (see the module documentation).
    pub fn submit(
        &mut self,
        meta: &SubmissionMeta,
        file: &str,
        bytes: &[u8],
        tally: &mut Tally,
    ) -> Result<(), String> {
        self.checks += 1;
        let check_store = self.checks.is_multiple_of(4);
        let node = self.node();
        let before = check_store.then(|| snapshot(node)).transpose()?;
        let unchanged = |node: &LocalStore| -> Result<(), String> {
            match &before {
                Some(b) if *b != snapshot(node)? => {
                    Err("a rejected or refused submission changed the store's totals".into())
                }
                _ => Ok(()),
            }
        };
        match node.submit(meta, file, bytes) {
            Ok(report) => match report.outcome {
                Outcome::Accepted if report.resent => tally.note("accepted (a resend)"),
                Outcome::Accepted => {
                    if report.version.is_none() {
                        return Err(format!("accepted with no store version: {report}"));
                    }
                    tally.note("accepted");
                }
                Outcome::Rejected => {
                    let first = report
                        .rejection
                        .as_ref()
                        .and_then(|r| r.issues.first())
                        .ok_or_else(|| format!("rejected naming no issue: {report}"))?;
                    if first.message.trim().is_empty() {
                        return Err(format!("an issue without a message: {report}"));
                    }
                    if first.message.contains("the reader failed on its structure") {
                        tally.note("rejected: the Parquet reader panicked (caught)");
                    } else {
                        tally.note(format!("rejected: {:?}", first.rule));
                    }
                    unchanged(node)?;
                }
            },
            Err(Error::InvalidArgument(m)) => {
                if m.trim().is_empty() {
                    return Err("a refusal without a message".into());
                }
                tally.note("refused (limit or envelope)");
                unchanged(node)?;
            }
            Err(e) => return Err(format!("the node failed on a submitter's input: {e}")),
        }
        Ok(())
    }
}

fn snapshot(node: &LocalStore) -> Result<Vec<DatasetSummary>, String> {
    Dataset::ALL
        .into_iter()
        .map(|ds| summarise(node.store(), ds).map_err(|e| format!("summarise: {e}")))
        .collect()
}

#[derive(Debug, Clone)]
pub enum Cell {
    Interesting(Index),
    Random(String),
    /// The value of another cell (row, column): valid somewhere, perhaps not here.
    Borrow(Index, Index),
    /// `n` copies of one character: field limits.
    Long(u16, char),
}

pub fn cell() -> impl Strategy<Value = Cell> {
    prop_oneof![
        4 => any::<Index>().prop_map(Cell::Interesting),
        2 => "\\PC{0,24}".prop_map(Cell::Random),
        1 => "[ -~]{0,12}".prop_map(Cell::Random),
        3 => (any::<Index>(), any::<Index>()).prop_map(|(r, c)| Cell::Borrow(r, c)),
        1 => (0u16..6000, prop::sample::select(vec!['A', '9', ';', 'é'])).prop_map(|(n, c)| Cell::Long(n, c)),
    ]
}

#[derive(Debug, Clone)]
pub enum Edit {
    Set(Index, Index, Cell),
    DropColumn(Index),
    DupColumn(Index),
    Rename(Index, String),
    DupRow(Index),
    DropRow(Index),
    SwapRows(Index, Index),
}

pub fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        24 => (any::<Index>(), any::<Index>(), cell()).prop_map(|(r, c, v)| Edit::Set(r, c, v)),
        1 => any::<Index>().prop_map(Edit::DropColumn),
        1 => any::<Index>().prop_map(Edit::DupColumn),
        1 => (any::<Index>(), "[a-z_]{0,24}").prop_map(|(c, n)| Edit::Rename(c, n)),
        1 => any::<Index>().prop_map(Edit::DupRow),
        1 => any::<Index>().prop_map(Edit::DropRow),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Edit::SwapRows(a, b)),
    ]
}

#[derive(Debug, Clone)]
pub enum ByteEdit {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, u8),
    Truncate(Index),
    /// A little-endian integer written over four bytes (lengths and offsets in Parquet).
    PutU32(Index, u32),
    /// The footer's length (the four bytes before the trailing magic).
    FooterLen(u32),
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        prop::sample::select(vec![
            0u32,
            1,
            2,
            4,
            8,
            0x7f,
            0xff,
            0x7fff,
            0xffff,
            0x7fff_ffff,
            0xffff_ffff
        ]),
        any::<u32>(),
    ]
}

pub fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(a, m)| ByteEdit::Flip(a, m)),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(a, b)| ByteEdit::Insert(a, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(a, n)| ByteEdit::Delete(a, n)),
        1 => any::<Index>().prop_map(ByteEdit::Truncate),
        2 => (any::<Index>(), interesting_u32()).prop_map(|(a, v)| ByteEdit::PutU32(a, v)),
        1 => interesting_u32().prop_map(ByteEdit::FooterLen),
    ]
}

#[derive(Debug, Clone)]
pub enum MetaEdit {
    Keep,
    Dataset(Index),
    /// The sender of another seed file (a valid organisation that did not send these records).
    OtherSender(Index),
    Sender(String),
    SubmissionId(String),
}

pub fn meta_edit() -> impl Strategy<Value = MetaEdit> {
    prop_oneof![
        12 => Just(MetaEdit::Keep),
        1 => any::<Index>().prop_map(MetaEdit::Dataset),
        1 => any::<Index>().prop_map(MetaEdit::OtherSender),
        1 => "\\PC{0,12}".prop_map(MetaEdit::Sender),
        1 => "\\PC{0,70}".prop_map(MetaEdit::SubmissionId),
    ]
}

/// The seed file `seed` with its envelope edited; the submission id is new for every case unless
/// the edit sets one.
pub fn meta_of(seeds: &Seeds, seed: &Index, edit: &MetaEdit, case: u64) -> SubmissionMeta {
    let mut meta = seeds.files[seed.index(seeds.files.len())].0.clone();
    meta.submission_id = format!("FUZZ-{case}");
    match edit {
        MetaEdit::Keep => {}
        MetaEdit::Dataset(i) => meta.dataset = Dataset::ALL[i.index(Dataset::ALL.len())],
        MetaEdit::OtherSender(i) => {
            meta.sender = seeds.files[i.index(seeds.files.len())].0.sender.clone()
        }
        MetaEdit::Sender(s) => meta.sender = s.clone(),
        MetaEdit::SubmissionId(s) => meta.submission_id = s.clone(),
    }
    meta
}

/// The seed's CSV as a table, header first.
pub fn table(bytes: &[u8]) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes)
        .records()
        .map(|r| {
            r.expect("a generated CSV")
                .iter()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

fn resolve(cell: &Cell, table: &[Vec<String>]) -> String {
    match cell {
        Cell::Interesting(i) => INTERESTING[i.index(INTERESTING.len())].to_string(),
        Cell::Random(s) => s.clone(),
        Cell::Borrow(r, c) => {
            let row = &table[r.index(table.len())];
            if row.is_empty() {
                String::new()
            } else {
                row[c.index(row.len())].clone()
            }
        }
        Cell::Long(n, c) => std::iter::repeat_n(*c, *n as usize).collect(),
    }
}

pub fn apply(table: &mut Vec<Vec<String>>, edits: &[Edit]) {
    for e in edits {
        if table.is_empty() {
            return;
        }
        let rows = table.len();
        match e {
            Edit::Set(r, c, v) => {
                let value = resolve(v, table);
                // Data rows: the header has edits of its own.
                let row = &mut table[if rows > 1 { 1 + r.index(rows - 1) } else { 0 }];
                if !row.is_empty() {
                    let at = c.index(row.len());
                    row[at] = value;
                }
            }
            Edit::DropColumn(c) => {
                let at = c.index(table[0].len().max(1));
                for row in table.iter_mut().filter(|r| r.len() > at) {
                    row.remove(at);
                }
            }
            Edit::DupColumn(c) => {
                let at = c.index(table[0].len().max(1));
                for row in table.iter_mut() {
                    let v = row.get(at).cloned().unwrap_or_default();
                    row.push(v);
                }
            }
            Edit::Rename(c, name) => {
                if !table[0].is_empty() {
                    let at = c.index(table[0].len());
                    table[0][at] = name.clone();
                }
            }
            Edit::DupRow(r) => {
                let row = table[r.index(rows)].clone();
                table.push(row);
            }
            Edit::DropRow(r) => {
                table.remove(r.index(rows));
            }
            Edit::SwapRows(a, b) => table.swap(a.index(rows), b.index(rows)),
        }
    }
}

pub fn write_csv(table: &[Vec<String>]) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .flexible(true)
        .from_writer(Vec::new());
    for row in table {
        w.write_record(row).expect("write to memory");
    }
    w.into_inner().expect("flush to memory")
}

pub fn apply_bytes(bytes: &mut Vec<u8>, edits: &[ByteEdit]) {
    for e in edits {
        let len = bytes.len();
        match e {
            ByteEdit::Flip(at, mask) if len > 0 => bytes[at.index(len)] ^= mask,
            ByteEdit::Insert(at, b) => {
                let at = at.index(len + 1);
                bytes.splice(at..at, b.iter().copied());
            }
            ByteEdit::Delete(at, n) if len > 0 => {
                let at = at.index(len);
                bytes.drain(at..(at + *n as usize).min(len));
            }
            ByteEdit::Truncate(at) => bytes.truncate(at.index(len + 1)),
            ByteEdit::PutU32(at, v) if len >= 4 => {
                let at = at.index(len - 3);
                bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            ByteEdit::FooterLen(v) if len >= 8 => {
                bytes[len - 8..len - 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => {}
        }
    }
}

#[derive(Debug, Clone)]
pub struct CsvCase {
    seed: Index,
    meta: MetaEdit,
    edits: Vec<Edit>,
    bytes: Vec<ByteEdit>,
}

pub fn csv(budget: &Budget, seeds: &Seeds) -> Report {
    let strategy = (
        any::<Index>(),
        meta_edit(),
        prop::collection::vec(edit(), 0..6),
        prop_oneof![4 => Just(Vec::new()), 1 => prop::collection::vec(byte_edit(), 1..4)],
    )
        .prop_map(|(seed, meta, edits, bytes)| CsvCase {
            seed,
            meta,
            edits,
            bytes,
        });
    let mut bench = Bench::new(seeds);
    let mut case = 0;
    engine::run("csv_submission", budget, strategy, |c, tally| {
        case += 1;
        let meta = meta_of(seeds, &c.seed, &c.meta, case);
        let mut table = table(&seeds.files[c.seed.index(seeds.files.len())].1);
        apply(&mut table, &c.edits);
        let mut bytes = write_csv(&table);
        apply_bytes(&mut bytes, &c.bytes);
        bench.submit(&meta, "fuzz.csv", &bytes, tally)
    })
}

#[derive(Debug, Clone)]
pub struct ParquetCase {
    seed: Index,
    meta: MetaEdit,
    edits: Vec<Edit>,
    /// The physical type of each column (cycled).
    kinds: Vec<u8>,
    compression: u8,
    row_group_rows: u8,
    page_rows: u8,
    dictionary: bool,
    bytes: Vec<ByteEdit>,
}

const KINDS: u8 = 12;

/// One column of text cells as an Arrow array of `kind` (a cell that does not convert is null).
fn column(kind: u8, cells: &[Option<&str>]) -> ArrayRef {
    let parse_i64 = |s: &&str| s.parse::<i64>().ok();
    let date = |s: &&str| {
        chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(|d| (d - chrono::NaiveDate::default()).num_days() as i32)
    };
    match kind % KINDS {
        0 => Arc::new(StringArray::from(cells.to_vec())),
        1 => Arc::new(LargeStringArray::from(cells.to_vec())),
        2 => Arc::new(
            cells
                .iter()
                .copied()
                .collect::<DictionaryArray<Int32Type>>(),
        ),
        3 | 4 => {
            let values: Vec<&str> = cells.iter().flatten().flat_map(|c| c.split(';')).collect();
            let mut offsets = vec![0usize];
            for c in cells {
                let n = c.map(|c| c.split(';').count()).unwrap_or(0);
                offsets.push(offsets.last().copied().unwrap_or(0) + n);
            }
            let nulls: Vec<bool> = cells.iter().map(Option::is_some).collect();
            let item = Arc::new(Field::new("item", DataType::Utf8, true));
            let values = Arc::new(StringArray::from(values));
            if kind % KINDS == 3 {
                let offsets = offsets.iter().map(|o| *o as i32).collect::<Vec<_>>();
                Arc::new(ListArray::new(
                    item,
                    OffsetBuffer::new(offsets.into()),
                    values,
                    Some(nulls.into()),
                ))
            } else {
                let offsets = offsets.iter().map(|o| *o as i64).collect::<Vec<_>>();
                Arc::new(LargeListArray::new(
                    item,
                    OffsetBuffer::new(offsets.into()),
                    values,
                    Some(nulls.into()),
                ))
            }
        }
        5 => Arc::new(BinaryArray::from(
            cells
                .iter()
                .map(|c| c.map(str::as_bytes))
                .collect::<Vec<_>>(),
        )),
        6 => Arc::new(Int64Array::from(
            cells
                .iter()
                .map(|c| c.as_ref().and_then(parse_i64))
                .collect::<Vec<_>>(),
        )),
        7 => Arc::new(BooleanArray::from(
            cells
                .iter()
                .map(|c| c.map(|c| c == "Y"))
                .collect::<Vec<_>>(),
        )),
        8 => Arc::new(Date32Array::from(
            cells
                .iter()
                .map(|c| c.as_ref().and_then(date))
                .collect::<Vec<_>>(),
        )),
        9 => Arc::new(TimestampSecondArray::from(
            cells
                .iter()
                .map(|c| {
                    c.and_then(sus_node::ingest::parse::parse_datetime)
                        .map(|t| t.and_utc().timestamp())
                })
                .collect::<Vec<_>>(),
        )),
        10 => Arc::new(Float64Array::from(
            cells
                .iter()
                .map(|c| c.and_then(|c| c.parse::<f64>().ok()))
                .collect::<Vec<_>>(),
        )),
        _ => {
            let inner: ArrayRef = Arc::new(StringArray::from(cells.to_vec()));
            Arc::new(StructArray::from(vec![(
                Arc::new(Field::new("v", DataType::Utf8, true)),
                inner,
            )]))
        }
    }
}

/// The table as a Parquet file with the case's physical types and writer settings; `None` when
/// the writer refuses the table (that is the writer's limit, not an input to the node).
fn parquet_of(table: &[Vec<String>], c: &ParquetCase) -> Option<Vec<u8>> {
    let header = table.first()?;
    let rows = &table[1..];
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (i, name) in header.iter().enumerate() {
        let cells: Vec<Option<&str>> = rows
            .iter()
            .map(|r| r.get(i).map(String::as_str).filter(|s| !s.is_empty()))
            .collect();
        let kind = if c.kinds.is_empty() {
            0
        } else {
            c.kinds[i % c.kinds.len()]
        };
        let array = column(kind, &cells);
        fields.push(Field::new(name, array.data_type().clone(), true));
        columns.push(array);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
    .ok()?;
    let compression = match c.compression % 3 {
        0 => Compression::UNCOMPRESSED,
        1 => Compression::SNAPPY,
        _ => Compression::ZSTD(ZstdLevel::default()),
    };
    let props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(c.row_group_rows.max(1) as usize))
        .set_data_page_row_count_limit(c.page_rows.max(1) as usize)
        .set_dictionary_enabled(c.dictionary)
        .build();
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, schema, Some(props)).ok()?;
    w.write(&batch).ok()?;
    w.close().ok()?;
    Some(out)
}

pub fn parquet(budget: &Budget, seeds: &Seeds) -> Report {
    let strategy = (
        (
            any::<Index>(),
            meta_edit(),
            prop::collection::vec(edit(), 0..5),
        ),
        prop_oneof![2 => Just(vec![0u8]), 3 => prop::collection::vec(0..KINDS, 1..8)],
        (any::<u8>(), any::<u8>(), any::<u8>(), any::<bool>()),
        prop_oneof![3 => Just(Vec::new()), 2 => prop::collection::vec(byte_edit(), 1..4)],
    )
        .prop_map(
            |(
                (seed, meta, edits),
                kinds,
                (compression, row_group_rows, page_rows, dictionary),
                bytes,
            )| {
                ParquetCase {
                    seed,
                    meta,
                    edits,
                    kinds,
                    compression,
                    row_group_rows,
                    page_rows,
                    dictionary,
                    bytes,
                }
            },
        );
    let mut bench = Bench::new(seeds);
    let mut case = 0;
    engine::run("parquet_submission", budget, strategy, |c, tally| {
        case += 1;
        let meta = meta_of(seeds, &c.seed, &c.meta, case);
        let mut table = table(&seeds.files[c.seed.index(seeds.files.len())].1);
        apply(&mut table, &c.edits);
        let Some(mut bytes) = parquet_of(&table, c) else {
            tally.note("not written (the Parquet writer refused the table)");
            return Ok(());
        };
        apply_bytes(&mut bytes, &c.bytes);
        bench.submit(&meta, "fuzz.parquet", &bytes, tally)
    })
}
