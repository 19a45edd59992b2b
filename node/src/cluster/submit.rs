//! Submitting a file: routed to the shard of its sender, forwarded once to that shard's leader,
//! derived there against the cluster's reference data, audited, and committed.
//!
//! A write that is not committed within the commit timeout is answered "outcome unknown": the
//! client resends with the same submission id, which is answered with the original outcome if it
//! did commit. A write is never answered "accepted" before its commit.

use super::auth;
use super::command::ShardCommand;
use super::service::{LEADER_WAIT, Services};
use super::shard::ShardReplica;
use crate::access::Caller;
use crate::ingest::{self, Prepared};
use crate::model::SubmissionMeta;
use crate::report::{Outcome, SubmissionReport};
use crate::{Error, Result};
use sus_proto::audit::Record;
use sus_proto::v1::{SubmitReply, SubmitRequest};
use sus_raft::Raft;
use tonic::metadata::MetadataMap;

impl Services {
    /// Submits `req` for `caller` (whose credentials a forwarded call carries): on this node if it
    /// leads the sender's shard, else on that shard's leader, once.
    pub(crate) async fn submit_file(
        &self,
        caller: Caller,
        credentials: &MetadataMap,
        req: SubmitRequest,
    ) -> Result<SubmitReply> {
        if self.cluster.cluster_id().is_none() {
            return Err(Error::Precondition(
                "this node is not part of a cluster yet".into(),
            ));
        }
        let meta: SubmissionMeta = serde_json::from_str(&req.envelope_json).map_err(|e| {
            Error::InvalidArgument(format!("{}: invalid envelope: {e}", req.file_name))
        })?;
        caller.require_submit(&meta.sender)?;
        let state = self.cluster.meta_state();
        if state.shards.is_empty() {
            return Err(Error::Consensus("the cluster has no shard map yet".into()));
        }
        let shard = self
            .cluster
            .routing
            .shard_of(&meta.sender, state.shards.len() as u32);
        let hosted = self.cluster.shard(shard);
        let leader = match &hosted {
            Some((raft, _)) => self.leader(raft, &format!("shard {shard}")).await?,
            // Not hosted here: ask a replica's view via the shard map.
            None => self
                .shard_leader_anywhere(shard)
                .await
                .ok_or_else(|| Error::Consensus(format!("shard {shard} has no leader; retry")))?,
        };
        if leader != self.cluster.id {
            if req.forwarded {
                return Err(Error::Consensus(format!(
                    "shard {shard} leadership moved to node {leader}; retry"
                )));
            }
            let mut forward = req;
            forward.forwarded = true;
            let mut r = auth::forward(credentials, forward);
            r.set_timeout(self.cluster.commit_timeout + LEADER_WAIT);
            return Ok(self.ingest_client(leader)?.submit(r).await?.into_inner());
        }
        let Some((raft, replica)) = hosted else {
            return Err(Error::Consensus("shard moved; retry".into()));
        };
        // Derivation happens once, here: price only with the cluster's reference data.
        let mine = self.cluster.refdata.fingerprint();
        if state.refdata != mine {
            return Err(Error::Precondition(format!(
                "node {} leads shard {shard} but its reference data (version {mine}) is not the \
                 cluster's (version {}); install the cluster's reference data on it, or make its \
                 version the cluster's with `sus cluster set-refdata`",
                self.cluster.id, state.refdata
            )));
        }
        // Every submission is accounted for: its audit entry is committed alongside it, and the
        // report is returned only when both are (a retry after a failed audit write gets the same
        // report and audits it then).
        let mut record = super::audit::record(&caller, self.cluster.id, "submit");
        record.dataset = meta.dataset.name().to_string();
        record.detail = format!(
            "file {}, sender {}, submission {}, shard {shard}",
            req.file_name, meta.sender, meta.submission_id
        );
        // A conflict means another change to the same spells was applied between this one's
        // derivation and its turn in the log: nothing was stored, so derive it again.
        // The first attempt runs beside others; a retry runs alone (no other derivation of this
        // shard is in flight), so it cannot conflict again.
        let mut alone = false;
        let report = loop {
            let (_shared, _exclusive) = if alone {
                (None, Some(replica.derivations.write().await))
            } else {
                (Some(replica.derivations.read().await), None)
            };
            let result = self
                .submit_here(
                    &raft,
                    &replica,
                    meta.clone(),
                    req.file_name.clone(),
                    req.content.clone(),
                    record.clone(),
                )
                .await;
            match result {
                Err(Error::Conflict(m)) if !alone => {
                    tracing::info!(submission = %meta.submission_id, "deriving again: {m}");
                    alone = true;
                }
                other => break other?,
            }
        };
        Ok(SubmitReply {
            accepted: report.outcome == Outcome::Accepted,
            report: Some(super::report::to_wire(&report)),
            shard,
            leader: self.cluster.id,
        })
    }

    /// Prepares and commits a submission to a shard this node leads.
    async fn submit_here(
        &self,
        raft: &Raft,
        replica: &ShardReplica,
        meta: SubmissionMeta,
        file: String,
        content: bytes::Bytes,
        mut audit: Record,
    ) -> Result<SubmissionReport> {
        let store = replica.store();
        let refdata = self.cluster.refdata.clone();
        // The submission's records, decoded, must fit the node's budget beside the others being
        // prepared: its share is reserved (the most its file can decode to) until it is prepared.
        let limits = self.cluster.limits.submission.clone();
        let reservation = self
            .cluster
            .decode_budget
            .reserve(
                ingest::parse::decoded_bound(&content, &limits),
                self.cluster.commit_timeout,
            )
            .await?;
        let prepared = tokio::task::spawn_blocking(move || {
            let prepared = ingest::prepare(&refdata, &store, &meta, &file, &content, &limits);
            drop((content, reservation));
            prepared
        })
        .await
        .map_err(|e| Error::Internal(format!("prepare task: {e}")))??;
        let command = match prepared {
            Prepared::Resent(report) => {
                audit.rows = report.records;
                audit.detail += &format!(", resent: {:?}", report.outcome);
                self.audit(vec![audit]).await?;
                self.cluster.metrics.submission(&report, None);
                return Ok(*report);
            }
            Prepared::Commit(command) => command,
        };
        let prepared = match command.as_ref() {
            ingest::Command::Reject { report, .. } | ingest::Command::Apply { report, .. } => {
                report
            }
        };
        audit.rows = prepared.records;
        audit.detail += &format!(", prepared: {:?}", prepared.outcome);
        if crate::broken::broken("ack-before-commit") {
            let (report, this, raft) = (prepared.clone(), self.clone(), raft.clone());
            let command = ShardCommand::Submission(command);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let _ = this.propose_shard(&raft, &command).await;
            });
            return Ok(report);
        }
        // The audit write and the shard's commit run side by side: one round of latency, not two.
        let command = ShardCommand::Submission(command);
        let started = std::time::Instant::now();
        let (reply, ()) =
            tokio::try_join!(self.propose_shard(raft, &command), self.audit(vec![audit]))
                .inspect_err(|_| self.cluster.metrics.submission_failed())?;
        let took = started.elapsed();
        let report = SubmissionReport::from_json(&reply)
            .map_err(|e| Error::Internal(format!("undecodable report: {e}")))?;
        self.cluster.metrics.submission(&report, Some(took));
        Ok(report)
    }
}
