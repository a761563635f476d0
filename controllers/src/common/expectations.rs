//! Expectations: what a controller has written but not yet seen in its cache, so a lagging
//! cache never makes it create (or delete) the same pods twice.
//!
//! Upstream counts adds and deletes observed by event handlers. Here the cache itself is
//! asked: a controller records the names it created and the UIDs it deleted, and is
//! satisfied once every created name is cached and every deleted UID is gone (or
//! terminating). Like upstream, an expectation expires after [`EXPECTATION_TTL`] so a lost
//! event cannot wedge a controller forever.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an unmet expectation holds a controller back (upstream's ExpectationsTimeout).
pub const EXPECTATION_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Default)]
struct Pending {
    creations: HashSet<String>,
    deletions: HashSet<String>,
    since: Option<Instant>,
}

/// Pending creations and deletions per controller key (`namespace/name`).
#[derive(Clone, Default, Debug)]
pub struct Expectations {
    inner: Arc<Mutex<HashMap<String, Pending>>>,
}

impl Expectations {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Records that `key` created an object called `name`.
    pub fn expect_creation(&self, key: &str, name: &str) {
        self.with(|m| {
            let p = m.entry(key.to_string()).or_default();
            p.since.get_or_insert_with(Instant::now);
            p.creations.insert(name.to_string());
        });
    }

    /// Records that `key` deleted the object with `uid`.
    pub fn expect_deletion(&self, key: &str, uid: &str) {
        self.with(|m| {
            let p = m.entry(key.to_string()).or_default();
            p.since.get_or_insert_with(Instant::now);
            p.deletions.insert(uid.to_string());
        });
    }

    /// Forgets a creation that failed (nothing will appear).
    pub fn creation_failed(&self, key: &str, name: &str) {
        self.with(|m| {
            if let Some(p) = m.get_mut(key) {
                p.creations.remove(name);
            }
        });
    }

    /// Forgets a deletion that failed (the object stays).
    pub fn deletion_failed(&self, key: &str, uid: &str) {
        self.with(|m| {
            if let Some(p) = m.get_mut(key) {
                p.deletions.remove(uid);
            }
        });
    }

    /// Whether `key` may act on its cache: every creation is visible (`cached_name`) and
    /// every deleted UID is gone (`live_uid` false). Met or expired expectations are dropped.
    pub fn satisfied(
        &self,
        key: &str,
        cached_name: impl Fn(&str) -> bool,
        live_uid: impl Fn(&str) -> bool,
    ) -> bool {
        self.with(|m| {
            let Some(p) = m.get_mut(key) else {
                return true;
            };
            p.creations.retain(|n| !cached_name(n));
            p.deletions.retain(|u| live_uid(u));
            let expired = p.since.is_some_and(|s| s.elapsed() > EXPECTATION_TTL);
            if expired && !(p.creations.is_empty() && p.deletions.is_empty()) {
                tracing::warn!(key, "expectations expired; acting on the cache as it is");
            }
            if expired || (p.creations.is_empty() && p.deletions.is_empty()) {
                m.remove(key);
                return true;
            }
            false
        })
    }

    /// Drops everything about `key` (its owner is gone).
    pub fn forget(&self, key: &str) {
        self.with(|m| {
            m.remove(key);
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_creations_cached_and_deletions_gone() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/a", |_| false, |_| true));
        e.expect_creation("ns/a", "p1");
        e.expect_deletion("ns/a", "u1");
        assert!(!e.satisfied("ns/a", |_| false, |_| true));
        assert!(!e.satisfied("ns/a", |n| n == "p1", |_| true));
        assert!(e.satisfied("ns/a", |_| false, |_| false));
        e.expect_creation("ns/a", "p2");
        e.creation_failed("ns/a", "p2");
        assert!(e.satisfied("ns/a", |_| false, |_| false));
    }
}
