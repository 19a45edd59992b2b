//! The store under power cuts (invariant W3 of `docs/design/write-path.md`), on a simulated disk
//! that loses what was not synced: seeded runs of changes and a freeze point, write-through or
//! buffered with checkpoints at random, are cut at a random change of the disk (in the middle
//! of a segment write, a catalog commit, a checkpoint, a directory sync), and the survivor is
//! opened. It must open; its content must be exactly the state after some prefix of the steps,
//! no shorter than what was made durable (every write-through apply that returned; a buffered
//! store's last checkpoint) and no longer than what was attempted; and applying the rest again,
//! as the Raft log would, must give the uncut content. `SUS_POWER_SEED=N` replays one seed.

use super::buffer_tests::{changes, manual, visible};
use super::*;
use crate::query::View;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::sync::Arc;
use sus_disk::{Disk, SimDisk};

enum Step {
    Apply(Box<Change>),
    Freeze(&'static str),
}

fn steps() -> Vec<Step> {
    let mut out: Vec<Step> = changes(0)
        .into_iter()
        .map(|c| Step::Apply(Box::new(c)))
        .collect();
    out.push(Step::Freeze("f1"));
    out.extend(changes(1).into_iter().map(|c| Step::Apply(Box::new(c))));
    out.extend(changes(2).into_iter().map(|c| Step::Apply(Box::new(c))));
    out
}

fn run(store: &Store, step: &Step) -> crate::Result<()> {
    match step {
        Step::Apply(c) => store.apply((**c).clone()).map(|_| ()),
        Step::Freeze(name) => store.freeze(name).map(|_| ()),
    }
}

const DIR: &str = "/data/shard-1";

fn new_disk() -> SimDisk {
    let disk = SimDisk::new();
    disk.create_dir_all(Path::new("/data")).expect("mkdir");
    disk.sync_dir(Path::new("/")).expect("sync");
    disk
}

fn open_on(disk: &SimDisk, buffered: bool) -> crate::Result<Arc<Store>> {
    let store = Arc::new(Store::open_on(
        Arc::new(disk.clone()),
        Path::new(DIR),
        SegmentCache::new(DEFAULT_COLUMN_BYTES, DEFAULT_FOOTER_BYTES),
    )?);
    if buffered {
        store.enable_buffer(manual(), BufferBudget::new(u64::MAX))?;
    }
    Ok(store)
}

/// What one run did before its cut: steps made durable, and steps attempted.
fn cut_run(disk: &SimDisk, buffered: bool, steps: &[Step], rng: &mut ChaCha8Rng) -> (usize, usize) {
    let Ok(store) = open_on(disk, buffered) else {
        return (0, 0);
    };
    let (mut durable, mut attempted) = (0, 0);
    for (i, step) in steps.iter().enumerate() {
        attempted = i + 1;
        if run(&store, step).is_err() {
            break;
        }
        if !buffered {
            durable = i + 1;
        } else if rng.random_bool(0.2) {
            if store.checkpoint().is_err() {
                break;
            }
            durable = i + 1;
        }
    }
    // A cut after the last step still comes before the store is closed.
    disk.cut_power();
    drop(store);
    (durable, attempted)
}

#[test]
fn a_power_cut_anywhere_loses_nothing_made_durable_and_leaves_no_partial_step() {
    let steps = steps();
    // Content digests after each prefix of the steps, from an uncut write-through store.
    let model_disk = new_disk();
    let model = open_on(&model_disk, false).expect("model");
    let mut digests = vec![model.content_digest().expect("digest")];
    for step in &steps {
        run(&model, step).expect("model step");
        digests.push(model.content_digest().expect("digest"));
    }
    let model_visible = visible(&model, &View::Freeze("f1".into()));
    // How many disk changes a whole uncut run makes, per kind of store.
    let total = |buffered: bool| {
        let disk = new_disk();
        cut_run(&disk, buffered, &steps, &mut ChaCha8Rng::seed_from_u64(0));
        disk.changes()
    };
    let totals = [total(false), total(true)];

    let (first, runs) = match std::env::var("SUS_POWER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(seed) => (seed, 1),
        None => (20261208u64, 100),
    };
    let mut rolled_back = 0;
    for seed in first..first + runs {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let buffered = seed % 2 == 1;
        let disk = new_disk();
        let made = disk.changes();
        disk.cut_at_change(made + rng.random_range(1..=totals[usize::from(buffered)]));
        let (durable, attempted) = cut_run(&disk, buffered, &steps, &mut rng);
        let survivor = disk.after_power_loss(seed);
        let recovered = open_on(&survivor, buffered).unwrap_or_else(|e| {
            panic!("seed {seed} (buffered {buffered}): the store does not open after a cut: {e}")
        });
        let digest = recovered.content_digest().expect("digest");
        let Some(at) = (durable..=attempted).find(|j| digests[*j] == digest) else {
            let any = digests.iter().position(|d| *d == digest);
            panic!(
                "seed {seed} (buffered {buffered}): content is not the state after any of steps \
                 {durable}..={attempted} (durable..attempted); it matches prefix {any:?}"
            );
        };
        if at < attempted {
            rolled_back += 1;
        }
        // The rest, again, as the Raft log (or the client's resend) would apply it.
        for step in &steps[at..] {
            run(&recovered, step).unwrap_or_else(|e| panic!("seed {seed}: step again: {e}"));
        }
        assert_eq!(
            recovered.content_digest().expect("digest"),
            digests[steps.len()],
            "seed {seed} (buffered {buffered}): content after the rest applied again"
        );
        assert_eq!(
            visible(&recovered, &View::Freeze("f1".into())),
            model_visible,
            "seed {seed}: rows at the freeze point, read from the survivor's files"
        );
    }
    assert!(
        runs == 1 || rolled_back > runs / 4,
        "only {rolled_back} of {runs} cuts lost an attempted step: the cuts test little"
    );
}
