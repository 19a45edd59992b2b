//! Section `pseudonym` of the security suite (see `main.rs`).

use crate::fixture::{Cases, Fixture};

pub async fn run(_fx: &Fixture, _cases: &mut Cases) {}
