//! Section `pki` of the security suite (see `main.rs`): runs on a cluster of its own.

use crate::fixture::Cases;

pub async fn run(_cases: &mut Cases) {}
