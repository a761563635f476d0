//! Expectations: what a controller has written but not yet seen in its cache, so a lagging
//! cache never makes it create (or delete) the same pods twice.
//!
//! Upstream counts adds and deletes observed by event handlers. Here the cache itself is
//! asked: a controller records the names it created and the UIDs it deleted, and is
//! satisfied once every created name is cached (or the informer has seen a revision at or
//! past the one the create returned, so a pod deleted before the controller looked does not
//! hold it back) and every deleted UID is gone (or terminating). Like upstream, an
//! expectation expires after [`EXPECTATION_TTL`] so a lost event cannot wedge a controller
//! for ever.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long an unmet expectation holds a controller back (upstream's ExpectationsTimeout).
pub const EXPECTATION_TTL: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, Default)]
struct Pending {
    /// Created names, with the resourceVersion the create returned (0: unknown).
    creations: HashMap<String, u64>,
    deletions: HashSet<String>,
    since: Option<Instant>,
}

/// Pending creations and deletions per controller key (`namespace/name`).
#[derive(Clone, Default, Debug)]
pub struct Expectations {
    inner: Arc<Mutex<HashMap<String, Pending>>>,
    /// The newest resourceVersion the watched kind's informer has applied.
    seen: Option<Arc<AtomicU64>>,
}

impl Expectations {
    /// Expectations over objects whose informer reports the newest revision it applied in
    /// `seen` (see `Informer::seen_revision`).
    pub fn tracking(seen: Arc<AtomicU64>) -> Self {
        Expectations {
            inner: Arc::default(),
            seen: Some(seen),
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Pending>) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// Records that `key` is creating an object called `name`.
    pub fn expect_creation(&self, key: &str, name: &str) {
        self.expect_creation_at(key, name, None);
    }

    /// Records that `key` created an object called `name` at `resource_version` (what the
    /// create returned).
    pub fn expect_creation_at(&self, key: &str, name: &str, resource_version: Option<&str>) {
        let rv = resource_version
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0);
        self.with(|m| {
            let p = m.entry(key.to_string()).or_default();
            p.since.get_or_insert_with(Instant::now);
            let at = p.creations.entry(name.to_string()).or_insert(0);
            *at = (*at).max(rv);
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
        let seen = self
            .seen
            .as_ref()
            .map(|s| s.load(Ordering::Acquire))
            .unwrap_or(0);
        self.with(|m| {
            let Some(p) = m.get_mut(key) else {
                return true;
            };
            p.creations
                .retain(|n, rv| !cached_name(n) && (*rv == 0 || seen < *rv));
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

    /// [`Expectations::satisfied`] against a cache listing: created names are looked up among
    /// `cached`, deleted UIDs among the objects for which `live` holds.
    pub fn satisfied_by<K: kube::ResourceExt>(
        &self,
        key: &str,
        cached: &[Arc<K>],
        live: impl Fn(&K) -> bool,
    ) -> bool {
        let names: HashSet<String> = cached.iter().map(|o| o.name_any()).collect();
        let uids: HashSet<String> = cached
            .iter()
            .filter(|o| live(o))
            .filter_map(|o| o.uid())
            .collect();
        self.satisfied(key, |n| names.contains(n), |u| uids.contains(u))
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

    #[test]
    fn a_creation_is_seen_once_the_informer_passes_its_revision() {
        let seen = Arc::new(AtomicU64::new(10));
        let e = Expectations::tracking(seen.clone());
        e.expect_creation_at("ns/a", "p1", Some("15"));
        // Not cached and the informer is behind: wait.
        assert!(!e.satisfied("ns/a", |_| false, |_| true));
        // The pod came and went before the controller looked: its revision has been seen.
        seen.store(17, Ordering::Release);
        assert!(e.satisfied("ns/a", |_| false, |_| true));
        // Without a revision only the cache counts.
        e.expect_creation("ns/a", "p2");
        assert!(!e.satisfied("ns/a", |_| false, |_| true));
        assert!(e.satisfied("ns/a", |n| n == "p2", |_| true));
    }
}
