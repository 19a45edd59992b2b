//! Data for the micro benchmarks: the project's generator, small under `cargo bench -- --test`
//! (CI runs every benchmark once that way).
#![allow(dead_code)]

// As in sus-node: the allocator is part of what the kernels cost.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use sus_client::generator::{Dataset, GenConfig, generate};

pub fn refdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../refdata")
}

/// Whether criterion runs in test mode (each benchmark once).
pub fn test_mode() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Generated submission files of `rows` records (of `dataset`, or all three mixed), in order.
pub fn submissions(
    dir: &Path,
    dataset: Option<Dataset>,
    rows: u64,
    rows_per_file: u64,
) -> Vec<PathBuf> {
    let summary = generate(
        &GenConfig {
            dataset,
            rows,
            seed: 11,
            refdata_dir: refdata(),
            out_dir: dir.to_path_buf(),
            rows_per_file,
            ..GenConfig::default()
        },
        &mut |_| {},
    )
    .expect("generate");
    summary
        .expected
        .submissions
        .iter()
        .map(|s| dir.join(&s.file))
        .collect()
}
