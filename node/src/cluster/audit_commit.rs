//! Group commit of the audit log: every audited call on a node hands its records to one queue,
//! and one task commits whatever has gathered as one meta entry while the previous entry is in
//! flight. Many concurrent reads and submissions then share one meta commit instead of queueing
//! for one each, and a caller still answers only once its own records are committed (a failed
//! entry fails every caller whose records it carried: fail closed).

use super::Cluster;
use super::config::LEADER_WAIT;
use super::meta::MetaCommand;
use crate::{Error, Result};
use std::sync::Arc;
use sus_proto::audit::Record;
use sus_proto::v1::AppendAuditRequest;
use sus_proto::v1::admin_client::AdminClient;
use sus_proto::{MAX_MESSAGE_BYTES, WIRE_FORMAT_VERSION};
use tokio::sync::{mpsc, oneshot};

/// Records one meta entry carries at most (a bound on the entry's size; more wait for the next).
const MAX_BATCH: usize = 1024;
/// Calls that may wait in the queue before a caller waits for room (back-pressure).
const QUEUE: usize = 4096;

type Waiter = (
    Vec<Record>,
    oneshot::Sender<std::result::Result<(), String>>,
);

/// The sending side of a node's audit queue.
#[derive(Clone)]
pub(crate) struct AuditQueue {
    tx: mpsc::Sender<Waiter>,
}

impl AuditQueue {
    /// Starts the committing task of `cluster`'s queue. The task ends when every queue handle is
    /// dropped; it holds the cluster only while it commits, so a stopped node is not kept alive.
    pub(crate) fn start(cluster: &Arc<Cluster>) -> AuditQueue {
        let cluster = Arc::downgrade(cluster);
        AuditQueue::with(move |records| {
            let cluster = cluster.clone();
            async move {
                let Some(cluster) = cluster.upgrade() else {
                    return Err(Error::Consensus("audit: the node is stopping".into()));
                };
                cluster.metrics.audit_commit(records.len());
                append(&cluster, records).await
            }
        })
    }

    /// A queue whose task commits each gathered batch with `append`.
    fn with<F, Fut>(append: F) -> AuditQueue
    where
        F: FnMut(Vec<Record>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, append));
        AuditQueue { tx }
    }

    /// Commits `records` through the meta group (in an entry shared with other callers'), and
    /// returns once that entry is applied.
    pub(crate) async fn commit(&self, records: Vec<Record>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        let stopped = || Error::Consensus("audit: the node is stopping".into());
        self.tx.send((records, done)).await.map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(Error::Consensus)
    }
}

async fn run<F, Fut>(mut rx: mpsc::Receiver<Waiter>, mut append: F)
where
    F: FnMut(Vec<Record>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    while let Some(first) = rx.recv().await {
        let mut records = first.0;
        let mut waiters = vec![first.1];
        // Whatever gathered while the last entry was in flight goes in this one.
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((more, done)) => {
                    records.extend(more);
                    waiters.push(done);
                }
                Err(_) => break,
            }
        }
        let answer = append(records).await.map_err(|e| e.into_message());
        for done in waiters {
            // A caller that went away (its request cancelled) needs no answer.
            let _ = done.send(answer.clone());
        }
    }
}

/// Appends `records` through the meta leader: proposed here if this node leads, else sent to it.
async fn append(cluster: &Cluster, records: Vec<Record>) -> Result<()> {
    let leader = Cluster::wait_leader(&cluster.meta, LEADER_WAIT)
        .await
        .ok_or_else(|| Error::Consensus("audit: the meta group has no leader".into()))?;
    if leader == cluster.id {
        return cluster
            .propose_meta(&MetaCommand::Audit { records })
            .await
            .map_err(|e| Error::Consensus(format!("audit: {e}")));
    }
    let request = AppendAuditRequest {
        format: WIRE_FORMAT_VERSION,
        records_json: records.iter().map(Record::to_json).collect(),
    };
    AdminClient::new(cluster.peer_of(leader)?)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .append_audit(tonic::Request::new(request))
        .await
        .map(|_| ())
        .map_err(|s| Error::Consensus(format!("audit: {}", s.message())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Mutex;

    fn record(n: usize) -> Record {
        Record {
            time_ms: 0,
            node: 1,
            user: format!("user{n}"),
            role: "admin".into(),
            org: String::new(),
            purpose: String::new(),
            tier: "identifiable".into(),
            action: "aggregate".into(),
            dataset: "op".into(),
            filter: String::new(),
            view: String::new(),
            rows: 0,
            detail: String::new(),
        }
    }

    #[tokio::test]
    async fn calls_that_gather_while_an_entry_is_in_flight_share_the_next_and_share_its_fate() {
        let batches: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let (release, gate) = oneshot::channel::<()>();
        let gate = Arc::new(tokio::sync::Mutex::new(Some(gate)));
        let seen = batches.clone();
        let queue = AuditQueue::with(move |records: Vec<Record>| {
            let (seen, gate) = (seen.clone(), gate.clone());
            async move {
                let users: Vec<String> = records.iter().map(|r| r.user.clone()).collect();
                let n = seen.lock().unwrap().len();
                seen.lock().unwrap().push(users);
                // The first entry stays in flight until the test releases it.
                if let Some(gate) = gate.lock().await.take() {
                    gate.await.unwrap();
                }
                match n {
                    0 | 1 => Ok(()),
                    _ => Err(Error::Consensus("no quorum".into())),
                }
            }
        });
        let first = tokio::spawn({
            let q = queue.clone();
            async move { q.commit(vec![record(0)]).await }
        });
        // The first record is taken (its entry in flight) before the others queue.
        while batches.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        let others: Vec<_> = (1..=9)
            .map(|n| {
                let q = queue.clone();
                tokio::spawn(async move { q.commit(vec![record(n), record(n + 100)]).await })
            })
            .collect();
        // Every other call waits in the queue (a condition, not a sleep).
        while queue.tx.capacity() > QUEUE - 9 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for call in others {
            call.await.unwrap().unwrap();
        }
        let batches = batches.lock().unwrap().clone();
        assert_eq!(batches.len(), 2, "ten calls, two entries: {batches:?}");
        assert_eq!(batches[0], ["user0"]);
        assert_eq!(batches[1].len(), 18);
        // A failed entry fails every call whose records it carried, and only those.
        let failing: Vec<_> = (0..3)
            .map(|n| {
                let q = queue.clone();
                tokio::spawn(async move { q.commit(vec![record(n)]).await })
            })
            .collect();
        for call in failing {
            let e = call.await.unwrap().unwrap_err();
            assert!(
                matches!(e, Error::Consensus(ref m) if m.contains("no quorum")),
                "{e}"
            );
        }
        assert!(queue.commit(Vec::new()).await.is_ok(), "nothing to record");
    }
}
