//! Fault-injection harness and invariant checkers against real multi-node sus clusters.
//!
//! A run ([`run::run`]) starts a cluster ([`cluster::TestCluster`]: local processes, or
//! containers of the project's image on a private network), runs a workload of concurrent
//! submitters, linearizable readers and a freeze-point taker ([`workload`]) over generated data
//! whose every intermediate state the generator's oracle knows ([`plan`]), injects faults on a
//! seeded schedule ([`faults`]), heals, and checks ([`check`]):
//! 1. every submission acknowledged to a client is present exactly once, with its latest version;
//! 2. nothing unacknowledged appears partially (a submission is all or nothing);
//! 3. all replicas of each shard hold identical content;
//! 4. national and per-provider price totals equal those recomputed from the acknowledged
//!    submissions;
//! 5. reads after an acknowledgement see it (linearizable reads are never stale);
//! 6. freeze points taken during the run still return their original results.
//!
//! Violation 0 is the harness's own: the cluster did not recover from a fault.

pub mod check;
pub mod cluster;
pub mod faults;
pub mod http;
pub mod plan;
pub mod run;
pub mod workload;
