//! The domain core stays pure: its dependencies are an allow-list with no async runtime, network,
//! catalog, file-format or clock crate, so that `sus-core` cannot do I/O beyond reading its
//! reference files (Cargo refuses a `use` of anything not declared here).

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Crates the core may depend on (normal dependencies only; dev-dependencies are the tests').
const ALLOWED: [&str; 6] = [
    "chrono",
    "crc32fast",
    "csv",
    "serde",
    "serde_json",
    "thiserror",
];

#[test]
fn the_core_depends_on_nothing_that_does_io() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .expect("core/Cargo.toml");
    let mut section = String::new();
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_string();
            continue;
        }
        if section == "[dependencies]"
            && let Some((name, _)) = line.split_once(['=', '.'])
            && !line.starts_with('#')
            && !name.trim().is_empty()
        {
            deps.push(name.trim().to_string());
        }
    }
    for dep in &deps {
        assert!(
            ALLOWED.contains(&dep.as_str()),
            "sus-core depends on {dep}: the domain core must stay free of runtimes, networks, \
             catalogs and clocks (allowed: {ALLOWED:?})"
        );
    }
    assert!(deps.contains(&"chrono".to_string()), "{deps:?}");
    // chrono's `clock` feature reads the system time: the workspace leaves it off, and crates that
    // need it add it themselves.
    let workspace = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .expect("Cargo.toml");
    let chrono = workspace
        .lines()
        .find(|l| l.starts_with("chrono ="))
        .expect("workspace chrono");
    assert!(!chrono.contains("clock"), "{chrono}");
    let own = manifest
        .lines()
        .find(|l| l.starts_with("chrono"))
        .expect("core chrono");
    assert!(
        !own.contains("clock"),
        "sus-core must not enable chrono's clock: {own}"
    );
}
