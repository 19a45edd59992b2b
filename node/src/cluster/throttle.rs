//! Back-off of password guessing: failed logins are counted per user name and per source address,
//! and past a few free failures each further attempt waits twice as long as the last (from 1 s,
//! up to a cap) before its password is even checked.
//!
//! ```text
//!  attempt ─► user or source backing off? ── yes ─► RESOURCE_EXHAUSTED "retry in N s"
//!     │ no                                           (no password work; not counted)
//!     ▼ counted as a failure before the password is checked (parallel guesses cannot race it)
//!  verify ─► right: the user's failures are forgotten, the source's attempt given back
//!         └► wrong: stays counted
//! ```
//!
//! State is per node and in memory: a restart forgets it, and each node counts the attempts it
//! answers (`docs/security.md`, "Logins"). Each table holds at most [`TABLE_CAP`] entries; when
//! full, entries quiet for the forget period go first, then the least recently failed.

use crate::Error;
use crate::limits::{LoginLimits, keys, setting};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries per table (user names, source addresses).
pub const TABLE_CAP: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

#[derive(Debug)]
struct Table<K> {
    entries: HashMap<K, Entry>,
    free: u32,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(free: u32) -> Table<K> {
        Table {
            entries: HashMap::new(),
            free,
        }
    }

    /// How long `key` must still wait at `now`, if at all.
    fn wait(&mut self, key: &K, now: Instant, limits: &LoginLimits) -> Option<Duration> {
        let e = *self.entries.get(key)?;
        let quiet = now.saturating_duration_since(e.last);
        if quiet >= limits.forget_after {
            self.entries.remove(key);
            return None;
        }
        let backoff = backoff(e.failures, self.free, limits.max_backoff)?;
        backoff.checked_sub(quiet).filter(|w| !w.is_zero())
    }

    fn fail(&mut self, key: &K, now: Instant, limits: &LoginLimits) {
        if !self.entries.contains_key(key) && self.entries.len() >= TABLE_CAP {
            self.entries
                .retain(|_, e| now.saturating_duration_since(e.last) < limits.forget_after);
            if self.entries.len() >= TABLE_CAP
                && let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.last)
                    .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            last: now,
        });
        e.failures = e.failures.saturating_add(1);
        e.last = now;
    }

    fn forget(&mut self, key: &K) {
        self.entries.remove(key);
    }

    fn give_back(&mut self, key: &K) {
        if let Some(e) = self.entries.get_mut(key) {
            e.failures = e.failures.saturating_sub(1);
            if e.failures == 0 {
                self.entries.remove(key);
            }
        }
    }
}

/// The wait after `failures` failures when `free` are free: none before `free` failures, then
/// 1 s, 2 s, 4 s ... up to `cap`.
pub fn backoff(failures: u32, free: u32, cap: Duration) -> Option<Duration> {
    let over = failures.checked_sub(free)?;
    let secs = 1u64.checked_shl(over).unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(cap))
}

/// Failed logins of one node, by user name and by source address.
#[derive(Debug)]
pub struct LoginThrottle {
    limits: LoginLimits,
    users: Mutex<Table<String>>,
    sources: Mutex<Table<IpAddr>>,
}

/// A login attempt let through: say how it ended with [`LoginThrottle::succeeded`] (a failure
/// needs nothing: it was counted when the attempt began).
#[derive(Debug)]
pub struct Attempt {
    user: String,
    source: Option<IpAddr>,
}

impl LoginThrottle {
    pub fn new(limits: LoginLimits) -> LoginThrottle {
        LoginThrottle {
            users: Mutex::new(Table::new(limits.free_failures)),
            sources: Mutex::new(Table::new(limits.free_failures_per_source)),
            limits,
        }
    }

    /// Lets an attempt for `user` from `source` through, counted as a failure until it
    /// succeeds; [`Error::Throttled`] naming the wait if the user or the source must wait.
    pub fn begin(&self, user: &str, source: Option<IpAddr>) -> Result<Attempt, Error> {
        self.begin_at(user, source, Instant::now())
    }

    fn begin_at(&self, user: &str, source: Option<IpAddr>, now: Instant) -> Result<Attempt, Error> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
        let user_key = user.to_string();
        if let Some(wait) = users.wait(&user_key, now, &self.limits) {
            return Err(refusal(
                &format!("for user {user}"),
                wait,
                keys::LOGIN_FREE_FAILURES,
            ));
        }
        if let Some(ip) = source
            && let Some(wait) = sources.wait(&ip, now, &self.limits)
        {
            return Err(refusal(
                &format!("from {ip}"),
                wait,
                keys::LOGIN_FREE_FAILURES_PER_SOURCE,
            ));
        }
        users.fail(&user_key, now, &self.limits);
        if let Some(ip) = source {
            sources.fail(&ip, now, &self.limits);
        }
        Ok(Attempt {
            user: user_key,
            source,
        })
    }

    /// The attempt's password was right: the user's failures are forgotten, and the attempt no
    /// longer counts against its source (whose earlier failures stay: one good account must not
    /// reset a guessing source).
    pub fn succeeded(&self, attempt: Attempt) {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.forget(&attempt.user);
        drop(users);
        if let Some(ip) = attempt.source {
            let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
            sources.give_back(&ip);
        }
    }
}

fn refusal(who: &str, wait: Duration, free_setting: &str) -> Error {
    // Whole seconds, rounded up: retrying after the time given always gets through.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    Error::Throttled(format!(
        "too many failed logins {who}; retry in {secs} s (failures allowed before back-off: \
         setting {free_setting}; longest wait: setting {})",
        setting(keys::LOGIN_MAX_BACKOFF_SECS)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> LoginThrottle {
        LoginThrottle::new(LoginLimits {
            free_failures: 3,
            free_failures_per_source: 6,
            max_backoff: Duration::from_secs(8),
            forget_after: Duration::from_secs(60),
        })
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    // The back-off doubles after the free failures and stops at the cap.
    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let cap = secs(8);
        let waits: Vec<_> = (0..9).map(|f| backoff(f, 3, cap)).collect();
        assert_eq!(
            waits,
            vec![
                None,
                None,
                None,
                Some(secs(1)),
                Some(secs(2)),
                Some(secs(4)),
                Some(secs(8)),
                Some(secs(8)),
                Some(secs(8))
            ]
        );
        assert_eq!(backoff(u32::MAX, 0, cap), Some(cap));
        assert_eq!(backoff(64, 0, cap), Some(cap), "no overflow");
    }

    // A user guessed at: free failures, then a wait that says how long and names the setting;
    // after the wait one more attempt, and a success forgets the failures.
    #[test]
    fn a_user_backs_off_and_a_success_resets_it() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..3 {
            t.begin_at("alice", None, t0).expect("free failures");
        }
        let e = t.begin_at("alice", None, t0).expect_err("backing off");
        let text = e.to_string();
        assert!(
            text.contains("too many failed logins for user alice; retry in 1 s"),
            "{text}"
        );
        assert!(text.contains("login_free_failures"), "{text}");
        // Another user is not affected.
        t.begin_at("bob", None, t0).expect("bob");
        let a = t
            .begin_at("alice", None, t0 + secs(1))
            .expect("after the wait");
        assert!(t.begin_at("alice", None, t0 + secs(2)).is_err(), "now 2 s");
        t.succeeded(a);
        t.begin_at("alice", None, t0 + secs(2))
            .expect("a success forgot the failures");
    }

    // A source trying many user names backs off too; a success does not clear its failures.
    #[test]
    fn a_source_backs_off_across_user_names() {
        let t = throttle();
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.7".parse().expect("ip");
        for i in 0..6 {
            t.begin_at(&format!("user{i}"), Some(ip), t0).expect("free");
        }
        let e = t
            .begin_at("someone", Some(ip), t0)
            .expect_err("the source backs off");
        assert!(
            e.to_string().contains("from 192.0.2.7; retry in 1 s"),
            "{e}"
        );
        let other: IpAddr = "192.0.2.8".parse().expect("ip");
        let ok = t
            .begin_at("carol", Some(other), t0)
            .expect("another source");
        t.succeeded(ok);
        let a = t
            .begin_at("dave", Some(ip), t0 + secs(1))
            .expect("after 1 s");
        t.succeeded(a);
        assert!(
            t.begin_at("erin", Some(ip), t0 + secs(1)).is_err(),
            "a success from the source does not reset it"
        );
    }

    // Failures are forgotten after the quiet period; the tables stay within their cap.
    #[test]
    fn quiet_periods_forget_and_tables_are_bounded() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..3 {
            t.begin_at("alice", None, t0).expect("3 free");
        }
        assert!(
            t.begin_at("alice", None, t0 + Duration::from_millis(500))
                .is_err()
        );
        t.begin_at("alice", None, t0 + secs(61))
            .expect("forgotten after a quiet minute");
        assert_eq!(
            t.users.lock().expect("lock").entries["alice"].failures,
            1,
            "counting starts again"
        );
        for i in 0..(TABLE_CAP + 50) {
            let _ = t.begin_at(&format!("u{i}"), None, t0 + secs(61));
        }
        let users = t.users.lock().expect("lock");
        assert!(users.entries.len() <= TABLE_CAP);
    }
}
