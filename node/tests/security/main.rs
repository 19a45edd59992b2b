//! The security suite: attacks on real multi-node TLS clusters from outside, over raw gRPC and
//! Arrow Flight (never only through the client library), each asserting the exact refusal,
//! rounding or suppression that `docs/security.md` and the domain spec (section 8) promise.
//!
//! Sections share one data cluster and run one after another in one test, so that the run
//! prints every case and how many pass (`cargo test -p sus-node --test security -- --nocapture`).
//! Node identity attacks remove and forge nodes, so they get a cluster of their own.
//!
//! | section | what is attacked |
//! |---|---|
//! | `pki` | internal services (Raft, Join, Init, node-only calls) with client and removed-node certificates |
//! | `pseudonym` | identifiers on every path of the pseudonymised tier: rows, keys, filters, distinct counts, errors, Flight metadata |
//! | `disclosure` | the anonymised tier: allow-list, rounding, suppression, differencing through margins and pairs of queries |
//! | `audit` | extracts cut off by the client are audited before their first row |
//! | `limits` | oversized and decompression-bomb input: refused, memory bounded, replicas unchanged |
//! | `login` | password guessing: back-off per user and per source; unknown users cost the same |
//! | `sql` | Flight SQL: tokens, tiers and scope inside SQL's scans, tickets that grant nothing, statements that write or reach files |
//! | `http` | the unauthenticated HTTP port shows nothing about data |

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;
mod fixture;

mod audit;
mod disclosure;
mod http;
mod limits;
mod login;
mod pki;
mod pseudonym;
mod sql;

use fixture::{Cases, Fixture};

/// Every attack on one cluster holding data, section by section; login throttling runs last.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attacks_on_a_cluster_holding_data() {
    let fx = Fixture::start(3_000, 20_261_206).await;
    let mut cases = Cases::default();
    pseudonym::run(&fx, &mut cases).await;
    disclosure::run(&fx, &mut cases).await;
    audit::run(&fx, &mut cases).await;
    sql::run_cases(&fx, &mut cases).await;
    limits::run(&fx, &mut cases).await;
    http::run(&fx, &mut cases).await;
    login::run(&fx, &mut cases).await;
    cases.finish("security: a cluster holding data");
}

/// Node identity: internal services accept only current members, each as itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attacks_on_node_identity() {
    let mut cases = Cases::default();
    pki::run(&mut cases).await;
    cases.finish("security: node identity");
}
