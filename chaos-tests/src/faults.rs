//! Faults on a seeded, randomised schedule: which fault, on which node, for how long, and the
//! gaps between them all come from one ChaCha RNG, so a seed replays the same schedule (the
//! timing of the cluster's own reactions still varies from run to run).

use crate::cluster::TestCluster;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::time::Duration;

/// The kinds of fault the harness injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// SIGKILL the leader of a random shard (or the meta group), restart it after the hold.
    KillLeader,
    /// SIGKILL a node that does not lead that group, restart it after the hold.
    KillFollower,
    /// SIGKILL every node at one instant, restart them all after the hold: every acknowledged
    /// submission must come back from the nodes' logs and stores alone.
    KillAll,
    /// SIGSTOP a node (freeze its container), SIGCONT it after the hold.
    Pause,
    /// Cut a node off the network in both directions, reconnect it after the hold (containers).
    Partition,
    /// SIGTERM a node and start it again (a clean restart, as in a rolling upgrade).
    Restart,
    /// Kill a node, delete its data, and bring it back as a new node that catches up by
    /// snapshot (the old id is removed: ids are never reused).
    WipeRejoin,
    /// Fill a node's disk until writes fail with ENOSPC, then free it and restart the node.
    DiskFull,
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::KillLeader,
        FaultKind::KillFollower,
        FaultKind::KillAll,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Restart,
        FaultKind::WipeRejoin,
        FaultKind::DiskFull,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillFollower => "kill-follower",
            FaultKind::KillAll => "kill-all",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Restart => "restart",
            FaultKind::WipeRejoin => "wipe-rejoin",
            FaultKind::DiskFull => "disk-full",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Whether `cluster` can have this fault.
    pub fn possible(self, cluster: &TestCluster) -> bool {
        match self {
            FaultKind::Partition => cluster.is_docker(),
            FaultKind::DiskFull => cluster.has_disks(),
            _ => true,
        }
    }
}

/// A schedule's settings.
#[derive(Debug, Clone)]
pub struct ScheduleConfig {
    pub seed: u64,
    pub kinds: Vec<FaultKind>,
    /// Quiet time before each fault, and how long a fault is held (ranges, ms).
    pub gap_ms: (u64, u64),
    pub hold_ms: (u64, u64),
}

/// One injected fault, for the report.
#[derive(Debug, Clone)]
pub struct Injected {
    pub kind: FaultKind,
    pub node: u64,
    pub at: Duration,
    pub held: Duration,
    /// The node that replaced it (wipe and rejoin).
    pub replaced_by: Option<u64>,
}

/// Draws and injects faults, one at a time.
pub struct Injector {
    rng: ChaCha8Rng,
    cfg: ScheduleConfig,
    /// The kinds still to draw in this round: every possible kind once per round, in a shuffled
    /// order, so that even a short schedule has each kind.
    bag: Vec<FaultKind>,
    next_id: u64,
    pub injected: Vec<Injected>,
}

impl Injector {
    pub fn new(cfg: ScheduleConfig, cluster: &TestCluster) -> Injector {
        Injector {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            next_id: cluster.nodes.keys().max().copied().unwrap_or(0) + 1,
            cfg,
            bag: Vec::new(),
            injected: Vec::new(),
        }
    }

    /// How many faults of each kind were injected.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for i in &self.injected {
            *m.entry(i.kind.name()).or_default() += 1;
        }
        m
    }

    /// Waits a drawn gap, injects one drawn fault, holds it, heals it, and waits until every
    /// shard has a leader again. `started` is the run's start, for the record.
    pub async fn step(
        &mut self,
        cluster: &mut TestCluster,
        started: tokio::time::Instant,
    ) -> Result<(), String> {
        let gap = self.rng.random_range(self.cfg.gap_ms.0..=self.cfg.gap_ms.1);
        tokio::time::sleep(Duration::from_millis(gap)).await;
        if self.bag.is_empty() {
            self.bag = self
                .cfg
                .kinds
                .iter()
                .copied()
                .filter(|k| k.possible(cluster))
                .collect();
            self.bag.shuffle(&mut self.rng);
        }
        let kind = self.bag.pop().ok_or("no possible fault kinds")?;
        let hold = Duration::from_millis(
            self.rng
                .random_range(self.cfg.hold_ms.0..=self.cfg.hold_ms.1),
        );
        let up: Vec<u64> = cluster
            .nodes
            .keys()
            .copied()
            .filter(|id| cluster.is_up(*id))
            .collect();
        let group = self
            .rng
            .random_range(0..=cluster.status_of(up[0]).await?.shards.len() as u64);
        let leader = cluster.leader_of(group).await;
        let node = match kind {
            FaultKind::KillLeader => leader.unwrap_or(up[0]),
            FaultKind::KillFollower => {
                let others: Vec<u64> = up.iter().copied().filter(|n| Some(*n) != leader).collect();
                *others.choose(&mut self.rng).unwrap_or(&up[0])
            }
            _ => *up.choose(&mut self.rng).ok_or("no node is up")?,
        };
        let at = started.elapsed();
        tracing::info!(kind = kind.name(), node, ?hold, "fault");
        let new_id = self.next_id;
        let inject = async {
            let mut replaced_by = None;
            match kind {
                FaultKind::KillLeader | FaultKind::KillFollower => {
                    cluster.kill(node).await;
                    tokio::time::sleep(hold).await;
                    cluster.restart(node).await?;
                }
                FaultKind::KillAll => {
                    cluster.kill_all(&up).await;
                    tokio::time::sleep(hold).await;
                    for id in &up {
                        cluster.restart(*id).await?;
                    }
                }
                FaultKind::Pause => {
                    cluster.signal(node, "STOP")?;
                    tokio::time::sleep(hold).await;
                    cluster.signal(node, "CONT")?;
                }
                FaultKind::Partition => {
                    cluster.isolate(node)?;
                    tokio::time::sleep(hold).await;
                    cluster.reconnect(node)?;
                }
                FaultKind::Restart => {
                    cluster.stop(node).await;
                    cluster.restart(node).await?;
                }
                FaultKind::WipeRejoin => {
                    let new = new_id;
                    cluster.wipe(node).await?;
                    tokio::time::sleep(hold).await;
                    let addr = cluster.spawn(new, "127.0.0.1:0").await?;
                    let others: Vec<u64> = up.iter().copied().filter(|n| *n != node).collect();
                    let admin = cluster.client(&others);
                    admin
                        .add_node(new, &addr, true)
                        .await
                        .map_err(|e| format!("adding node {new}: {e}"))?;
                    admin
                        .remove_node(node)
                        .await
                        .map_err(|e| format!("removing node {node}: {e}"))?;
                    cluster.forget(node);
                    replaced_by = Some(new);
                }
                FaultKind::DiskFull => {
                    let bytes = cluster.fill_disk(node)?;
                    tracing::info!(node, bytes, "disk full");
                    tokio::time::sleep(hold).await;
                    cluster.free_disk(node)?;
                    // A replica whose write failed stops its group; an operator restarts the node.
                    cluster.kill(node).await;
                    cluster.restart(node).await?;
                }
            }
            Ok::<_, String>(replaced_by)
        };
        // A fault and its healing that hang are a failure to recover, not a stuck run.
        let replaced_by = tokio::time::timeout(Duration::from_secs(180), inject)
            .await
            .map_err(|_| format!("{} of node {node} did not heal within 180 s", kind.name()))??;
        if replaced_by.is_some() {
            self.next_id += 1;
        }
        self.injected.push(Injected {
            kind,
            node,
            at,
            held: hold,
            replaced_by,
        });
        cluster
            .wait_for(
                "every shard to have a leader after the fault",
                Duration::from_secs(60),
                async |c| c.all_shards_led().await,
            )
            .await
    }
}
