//! A time-bounded fuzz driver over proptest strategies.
//!
//! proptest's own runner counts cases; a fuzz run is bounded by time (CPU on this machine), so
//! this drives a strategy's value trees directly: generate until the budget is spent, and on the
//! first failure shrink it as proptest would (simplify while it still fails, complicate when it
//! stops failing) and report the smallest input with the seed that reproduces the run.
//!
//! A failure is a panic anywhere under the check (the node's own `catch_unwind` around the
//! Parquet reader included: it is reported by the check as a note, not a failure), a check that
//! returns `Err` (an invariant broken), or one input that takes longer than `max_case`.

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// How long each target runs and from which seed (`SUS_FUZZ_SECONDS`, `SUS_FUZZ_SEED`).
#[derive(Debug, Clone)]
pub struct Budget {
    pub per_target: Duration,
    pub seed: u64,
    /// One input taking longer than this is a failure (a hang or a quadratic path).
    pub max_case: Duration,
}

impl Budget {
    pub fn from_env() -> Budget {
        let seconds = std::env::var("SUS_FUZZ_SECONDS")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(4.0);
        let seed = std::env::var("SUS_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(20_261_207);
        Budget {
            per_target: Duration::from_secs_f64(seconds),
            seed,
            max_case: Duration::from_secs(20),
        }
    }
}

/// Counts of what the inputs became (accepted, rejected by rule, refused), for the report.
#[derive(Debug, Default)]
pub struct Tally(pub BTreeMap<String, u64>);

impl Tally {
    pub fn note(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_default() += 1;
    }
}

/// What one target did.
#[derive(Debug)]
pub struct Report {
    pub target: &'static str,
    pub cases: u64,
    pub cpu: Duration,
    pub wall: Duration,
    pub tally: Tally,
    /// The smallest failing input and why it failed.
    pub failure: Option<String>,
}

thread_local! {
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `check` on inputs of `strategy` until the budget is spent or an input fails.
pub fn run<S, F>(target: &'static str, budget: &Budget, strategy: S, mut check: F) -> Report
where
    S: Strategy,
    S::Value: Debug,
    F: FnMut(&S::Value, &mut Tally) -> Result<(), String>,
{
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&budget.seed.to_le_bytes());
    seed[8..8 + target.len().min(24)].copy_from_slice(&target.as_bytes()[..target.len().min(24)]);
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    // Panics are expected and caught (the node catches the Parquet reader's); keep their
    // message for the report instead of printing thousands of them.
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
    }));

    let mut tally = Tally::default();
    let mut cases = 0;
    let mut failure = None;
    let (cpu0, started) = (cpu_time(), Instant::now());
    while started.elapsed() < budget.per_target {
        let mut tree = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree,
            Err(e) => {
                failure = Some(format!("the strategy could not generate an input: {e}"));
                break;
            }
        };
        cases += 1;
        let Err(why) = attempt(&mut check, &tree.current(), &mut tally, budget.max_case) else {
            continue;
        };
        let (mut smallest, mut why) = (tree.current(), why);
        let mut steps = 0;
        if tree.simplify() {
            while steps < 500 {
                steps += 1;
                match attempt(&mut check, &tree.current(), &mut tally, budget.max_case) {
                    Err(w) => {
                        (smallest, why) = (tree.current(), w);
                        if !tree.simplify() {
                            break;
                        }
                    }
                    Ok(()) => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        let mut input = format!("{smallest:?}");
        if input.len() > 4000 {
            input.truncate(4000);
            input.push('…');
        }
        failure = Some(format!(
            "{why}\n  after {cases} cases and {steps} shrink steps (SUS_FUZZ_SEED={}); smallest input:\n  {input}",
            budget.seed
        ));
        break;
    }
    panic::set_hook(previous_hook);
    Report {
        target,
        cases,
        cpu: cpu_time().saturating_sub(cpu0),
        wall: started.elapsed(),
        tally,
        failure,
    }
}

fn attempt<V, F>(
    check: &mut F,
    value: &V,
    tally: &mut Tally,
    max_case: Duration,
) -> Result<(), String>
where
    F: FnMut(&V, &mut Tally) -> Result<(), String>,
{
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(value, tally)));
    let took = started.elapsed();
    match outcome {
        Ok(Ok(())) if took <= max_case => Ok(()),
        Ok(Ok(())) => Err(format!(
            "one input took {took:?}, over the bound of {max_case:?}"
        )),
        Ok(Err(why)) => Err(why),
        Err(_) => Err(format!(
            "panicked: {}",
            LAST_PANIC
                .with(|p| p.borrow_mut().take())
                .unwrap_or_else(|| "(no message)".into())
        )),
    }
}

/// CPU time of this process (user + system), from `/proc/self/stat` in clock ticks (100 Hz on
/// Linux); zero where that file does not exist.
pub fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces) start at field 3, the state.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}
