//! The commands a shard's Raft entry carries, and their encoding.
//!
//! A shard entry is a prepared submission ([`ingest::Command`]: the leader-derived upserts as an
//! Arrow IPC stream (zstd), the deletion keys and the report; replicas decode and commit it, they
//! never re-derive), a freeze point, or a compaction. Freezes and compactions go through the log
//! so that every replica takes them at the same position of its history. Envelope and report travel as JSON because their serde shapes use
//! `#[serde(flatten)]`, which bincode cannot decode.

use crate::ingest::Command;
use crate::model::SubmissionMeta;
use crate::report::SubmissionReport;
use crate::schema::stored_schema;
use crate::store::{Change, DeleteKey, Precondition, SpellKey};
use crate::{Error, Result};
use arrow::array::RecordBatch;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use serde::{Deserialize, Serialize};

/// Version of the shard command encoding; a replica refuses an entry of any other.
const COMMAND_FORMAT: u32 = 3;

/// What a shard entry asks of every replica.
#[derive(Debug, Clone)]
pub enum ShardCommand {
    Submission(Box<Command>),
    /// Record the store's current version as freeze point `name` (answered with the version).
    Freeze {
        name: String,
    },
    /// Merge segments smaller than `target_rows` (answered with the counts).
    Compact {
        target_rows: u32,
    },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    format: u32,
    entry: WireEntry,
}

#[derive(Serialize, Deserialize)]
enum WireEntry {
    Submission(Box<Wire>),
    Freeze { name: String },
    Compact { target_rows: u32 },
}

#[derive(Serialize, Deserialize)]
struct Wire {
    meta_json: String,
    report_json: Vec<u8>,
    body: WireBody,
}

#[derive(Serialize, Deserialize)]
enum WireBody {
    Reject,
    Apply {
        upserts_ipc: Vec<u8>,
        ordinals: Vec<u64>,
        deletes: Vec<(String, i64, u64)>,
        stored_report: Vec<u8>,
        spell_keys: Vec<Option<SpellKey>>,
        rederived: Vec<u64>,
        precondition: Option<Precondition>,
    },
}

/// Encodes a shard command for the Raft log.
pub fn encode(command: &ShardCommand) -> Result<Vec<u8>> {
    let entry = match command {
        ShardCommand::Submission(c) => WireEntry::Submission(Box::new(encode_submission(c)?)),
        ShardCommand::Freeze { name } => WireEntry::Freeze { name: name.clone() },
        ShardCommand::Compact { target_rows } => WireEntry::Compact {
            target_rows: *target_rows,
        },
    };
    bincode::serialize(&Envelope {
        format: COMMAND_FORMAT,
        entry,
    })
    .map_err(codec)
}

fn encode_submission(command: &Command) -> Result<Wire> {
    let (meta, report, body) = match command {
        Command::Reject { meta, report } => (meta, report, WireBody::Reject),
        Command::Apply { change, report } => {
            let deletes = change
                .deletes
                .iter()
                .map(|d| {
                    (
                        d.cds_unique_id.clone(),
                        d.applicable.and_utc().timestamp(),
                        d.ordinal,
                    )
                })
                .collect();
            (
                &change.meta,
                report,
                WireBody::Apply {
                    upserts_ipc: batch_to_ipc(&change.upserts)?,
                    ordinals: change.upsert_ordinals.clone(),
                    deletes,
                    stored_report: change.report.clone(),
                    spell_keys: change.spell_keys.clone(),
                    rederived: change.rederived.clone(),
                    precondition: change.precondition.clone(),
                },
            )
        }
    };
    Ok(Wire {
        meta_json: serde_json::to_string(meta).map_err(codec)?,
        report_json: report.to_json(),
        body,
    })
}

/// Decodes a shard entry. The bytes came from our own leader's log, but are still checked: a
/// malformed entry is corruption, never a panic.
pub fn decode(bytes: &[u8]) -> Result<ShardCommand> {
    let envelope: Envelope = bincode::deserialize(bytes).map_err(codec)?;
    if envelope.format != COMMAND_FORMAT {
        return Err(corrupt(format!(
            "command format {} (this node reads {COMMAND_FORMAT})",
            envelope.format
        )));
    }
    Ok(match envelope.entry {
        WireEntry::Submission(wire) => {
            ShardCommand::Submission(Box::new(decode_submission(*wire)?))
        }
        WireEntry::Freeze { name } => ShardCommand::Freeze { name },
        WireEntry::Compact { target_rows } => ShardCommand::Compact { target_rows },
    })
}

fn decode_submission(wire: Wire) -> Result<Command> {
    let meta: SubmissionMeta = serde_json::from_str(&wire.meta_json).map_err(codec)?;
    let report = SubmissionReport::from_json(&wire.report_json).map_err(codec)?;
    Ok(match wire.body {
        WireBody::Reject => Command::Reject { meta, report },
        WireBody::Apply {
            upserts_ipc,
            ordinals,
            deletes,
            stored_report,
            spell_keys,
            rederived,
            precondition,
        } => {
            let upserts = ipc_to_batch(&upserts_ipc, &meta)?;
            let deletes = deletes
                .into_iter()
                .map(|(cds_unique_id, secs, ordinal)| {
                    let applicable = chrono::DateTime::from_timestamp(secs, 0)
                        .ok_or_else(|| corrupt(format!("delete time {secs} out of range")))?
                        .naive_utc();
                    Ok(DeleteKey {
                        cds_unique_id,
                        applicable,
                        ordinal,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Command::Apply {
                change: Box::new(Change {
                    meta,
                    upserts,
                    upsert_ordinals: ordinals,
                    deletes,
                    report: stored_report,
                    spell_keys,
                    rederived,
                    precondition,
                }),
                report,
            }
        }
    })
}

fn batch_to_ipc(batch: &RecordBatch) -> Result<Vec<u8>> {
    let options = IpcWriteOptions::default().try_with_compression(Some(CompressionType::ZSTD))?;
    let mut out = Vec::new();
    let mut writer = StreamWriter::try_new_with_options(&mut out, &batch.schema(), options)?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

fn ipc_to_batch(bytes: &[u8], meta: &SubmissionMeta) -> Result<RecordBatch> {
    let schema = stored_schema(meta.dataset);
    let reader = StreamReader::try_new(bytes, None)?;
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    let batch = arrow::compute::concat_batches(&schema, &batches)?;
    Ok(batch)
}

fn codec(e: impl std::fmt::Display) -> Error {
    corrupt(format!("undecodable command: {e}"))
}

fn corrupt(message: String) -> Error {
    Error::Corruption {
        what: "raft command".into(),
        message,
    }
}
