//! Deliberate bugs, for proving that the chaos checker (`chaos-tests`) can fail.
//!
//! A build with the cargo feature `fault-injection` (the workspace's tests turn it on; nothing
//! else does) reads `SUS_TEST_BROKEN` (comma-separated names) once; any other build has no
//! switch at all, so no deployed node can be broken this way. Each bug breaks one promise the
//! checker verifies:
//! - `ack-before-commit`: a submission is acknowledged once prepared and proposed in the
//!   background after a delay, so a leader lost in that window loses an acknowledged write;
//! - `diverge`: the node with id 2 skips every fifth submission entry it applies (answering with
//!   the prepared report), so its replicas differ from the others';
//! - `stale-read`: reads (linearizable ones too) see the store one version behind;
//! - `freeze-drift`: a read at a freeze point reads the latest data instead;
//! - `partial-apply`: every replica applies only the first half of a submission's records;
//! - `internal-apply`: the node with id 2 meets an internal error applying a submission whose id
//!   begins `break-` (its shard replica must stop, not record a refusal);
//! - `refuse-apply`: every replica refuses a submission whose id begins `refuse-` as it applies
//!   it (a deterministic refusal, recorded alike everywhere).

/// Whether the bug `name` is switched on (always false without the `fault-injection` feature).
pub fn broken(name: &str) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        static SWITCHES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        SWITCHES
            .get_or_init(|| {
                let v = std::env::var("SUS_TEST_BROKEN").unwrap_or_default();
                if !v.is_empty() {
                    tracing::warn!(switches = %v, "deliberately broken build (SUS_TEST_BROKEN)");
                }
                v.split(',').map(|s| s.trim().to_string()).collect()
            })
            .iter()
            .any(|s| s == name)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = name;
        false
    }
}

static NODE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records this process's node id (for bugs that break one node only).
pub fn set_node(id: u64) {
    NODE.store(id, std::sync::atomic::Ordering::Relaxed);
}

/// This process's node id, once serving (0 before).
pub fn node() -> u64 {
    NODE.load(std::sync::atomic::Ordering::Relaxed)
}

/// What a switched-on apply fault makes a replica do instead of applying a submission entry.
#[derive(Debug)]
pub enum ApplyFault {
    /// Answer with the prepared report, applying nothing.
    AnswerPrepared,
    /// Fail with this error.
    Fail(crate::Error),
}

/// The fault switched on for submission entry `index` (`submission_id`: `None` for a rejected
/// submission), if any. Always `None` without the `fault-injection` feature.
pub fn apply_fault(index: u64, submission_id: Option<&str>) -> Option<ApplyFault> {
    #[cfg(feature = "fault-injection")]
    {
        let id_starts = |prefix: &str| submission_id.is_some_and(|id| id.starts_with(prefix));
        if index.is_multiple_of(5) && node() == 2 && broken("diverge") {
            return Some(ApplyFault::AnswerPrepared);
        }
        if id_starts("break-") && node() == 2 && broken("internal-apply") {
            return Some(ApplyFault::Fail(crate::Error::Internal(
                "deliberate internal error on node 2 (fault switch internal-apply)".into(),
            )));
        }
        if id_starts("refuse-") && broken("refuse-apply") {
            return Some(ApplyFault::Fail(crate::Error::InvalidArgument(
                "deliberate refusal on every replica (fault switch refuse-apply)".into(),
            )));
        }
        None
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = (index, submission_id);
        None
    }
}

/// Not a bug but a stretch of time: with `SUS_TEST_COMPACTION_PAUSE_MS` set, a compaction waits
/// that long after planning, so that tests can show writes and reads going on while one runs.
/// Always `None` without the `fault-injection` feature.
pub fn compaction_pause() -> Option<std::time::Duration> {
    #[cfg(feature = "fault-injection")]
    {
        std::env::var("SUS_TEST_COMPACTION_PAUSE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        None
    }
}
