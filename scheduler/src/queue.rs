//! The scheduling queue, as upstream's PriorityQueue: an active heap ordered by priority
//! then arrival, a backoff heap (1 s doubling to 10 s per failed attempt), and the
//! unschedulable pods that wait for a cluster change (or 5 minutes) before another try.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

/// Upstream's `podInitialBackoffDuration`.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Upstream's `podMaxBackoffDuration`.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Upstream's `podMaxInUnschedulablePodsDuration`.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

/// A pod popped for one scheduling attempt.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub priority: i32,
    pub attempts: u32,
    /// The last FailedScheduling message, so a repeat is not written again.
    pub last_message: String,
}

/// A waiting pod. It is kept as compact JSON (without managedFields) and decoded when
/// popped: 10,000 pending pods then cost a few MB instead of tens.
#[derive(Debug)]
struct Waiting {
    raw: Box<[u8]>,
    spec_hash: u64,
    priority: i32,
    attempts: u32,
    last_message: String,
    seq: u64,
    at: Where,
    since: Instant,
    backoff_until: Instant,
    /// The move cycle when the pod was popped.
    popped_cycle: u64,
}

/// What is kept of a pending pod, and a hash of what decides where it fits.
fn compact(pod: &Pod) -> (Box<[u8]>, u64) {
    use std::hash::{Hash, Hasher};
    let mut p = pod.clone();
    p.metadata.managed_fields = None;
    p.metadata.annotations = None;
    if let Some(st) = p.status.as_mut() {
        st.container_statuses = None;
        st.init_container_statuses = None;
    }
    let raw = serde_json::to_vec(&p)
        .unwrap_or_default()
        .into_boxed_slice();
    let key = serde_json::to_vec(&(&p.spec, &p.metadata.labels)).unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (raw, h.finish())
}

#[derive(PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    seq: u64,
    uid: String,
}

impl Ord for ActiveEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

/// The queue. Not thread-safe by itself: the scheduler keeps it under its state lock.
#[derive(Default)]
pub struct Queue {
    pods: HashMap<String, Waiting>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
    move_cycle: u64,
}

fn backoff_for(attempts: u32) -> Duration {
    let mut d = INITIAL_BACKOFF;
    for _ in 1..attempts {
        d *= 2;
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d
}

impl Queue {
    fn push_active(&mut self, uid: &str) {
        if let Some(q) = self.pods.get_mut(uid) {
            q.at = Where::Active;
            self.active.push(ActiveEntry {
                priority: q.priority,
                seq: q.seq,
                uid: uid.to_string(),
            });
        }
    }

    fn push_backoff(&mut self, uid: &str) {
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        if q.backoff_until <= Instant::now() {
            self.push_active(uid);
            return;
        }
        q.at = Where::Backoff;
        self.seq += 1;
        self.backoff
            .push(Reverse((q.backoff_until, self.seq, uid.to_string())));
    }

    /// Adds a new pending pod, or updates one already queued. An update of a pod that
    /// waits as unschedulable makes it try again (its spec may now fit).
    pub fn add_or_update(&mut self, pod: &Pod, priority: i32) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (raw, spec_hash) = compact(pod);
        if let Some(q) = self.pods.get_mut(&uid) {
            let changed_spec = q.spec_hash != spec_hash;
            q.raw = raw;
            q.spec_hash = spec_hash;
            q.priority = priority;
            if q.at == Where::Unschedulable && changed_spec {
                self.push_backoff(&uid);
            }
            return;
        }
        self.seq += 1;
        let now = Instant::now();
        self.pods.insert(
            uid.clone(),
            Waiting {
                raw,
                spec_hash,
                priority,
                attempts: 0,
                last_message: String::new(),
                seq: self.seq,
                at: Where::Active,
                since: now,
                backoff_until: now,
                popped_cycle: 0,
            },
        );
        self.push_active(&uid);
    }

    /// Forgets a pod (deleted, or bound by someone).
    pub fn remove(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    /// Whether the queue holds `uid` (in any sub-queue, or in flight).
    pub fn contains(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Moves expired backoffs and long-waiting unschedulable pods to active; returns when
    /// the next backoff expires.
    pub fn flush(&mut self) -> Option<Instant> {
        let now = Instant::now();
        while let Some(Reverse((at, _, uid))) = self.backoff.peek().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop();
            if self.pods.get(&uid).is_some_and(|q| q.at == Where::Backoff) {
                self.push_active(&uid);
            }
        }
        let stale: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, q)| q.at == Where::Unschedulable && now - q.since >= MAX_UNSCHEDULABLE)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in stale {
            self.push_backoff(&uid);
        }
        self.backoff.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Takes the most important active pod.
    pub fn pop(&mut self) -> Option<QueuedPod> {
        while let Some(e) = self.active.pop() {
            let Some(q) = self.pods.get_mut(&e.uid) else {
                continue;
            };
            if q.at != Where::Active || q.seq != e.seq {
                continue;
            }
            let pod: Pod = match serde_json::from_slice(&q.raw) {
                Ok(p) => p,
                Err(err) => {
                    tracing::warn!(uid = %e.uid, error = %err, "undecodable queued pod dropped");
                    self.pods.remove(&e.uid);
                    continue;
                }
            };
            q.at = Where::InFlight;
            q.attempts += 1;
            q.popped_cycle = self.move_cycle;
            return Some(QueuedPod {
                pod: Arc::new(pod),
                priority: q.priority,
                attempts: q.attempts,
                last_message: q.last_message.clone(),
            });
        }
        None
    }

    /// The attempt failed: the pod waits for a cluster change, or backs off when one came
    /// while it was being scheduled.
    pub fn requeue_unschedulable(&mut self, uid: &str, message: &str) {
        let cycle = self.move_cycle;
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        q.last_message = message.to_string();
        q.backoff_until = Instant::now() + backoff_for(q.attempts);
        q.since = Instant::now();
        if q.popped_cycle < cycle {
            self.push_backoff(uid);
        } else {
            q.at = Where::Unschedulable;
        }
    }

    /// The attempt hit an error (e.g. the binding failed): retry after backoff.
    pub fn requeue_backoff(&mut self, uid: &str) {
        let Some(q) = self.pods.get_mut(uid) else {
            return;
        };
        q.backoff_until = Instant::now() + backoff_for(q.attempts);
        self.push_backoff(uid);
    }

    /// A successful attempt: the pod leaves the queue.
    pub fn done(&mut self, uid: &str) {
        self.pods.remove(uid);
    }

    /// A cluster change that may make unschedulable pods fit: they go to backoff (or active
    /// once their backoff is over).
    pub fn move_all_to_active_or_backoff(&mut self) {
        self.move_cycle += 1;
        let waiting: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, q)| q.at == Where::Unschedulable)
            .map(|(u, _)| u.clone())
            .collect();
        for uid in waiting {
            self.push_backoff(&uid);
        }
    }

    /// Number of pods queued (any state).
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// True when no pod is queued.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.uid = Some(uid.into());
        p
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        assert_eq!(backoff_for(1), Duration::from_secs(1));
        assert_eq!(backoff_for(2), Duration::from_secs(2));
        assert_eq!(backoff_for(4), Duration::from_secs(8));
        assert_eq!(backoff_for(5), Duration::from_secs(10));
        assert_eq!(backoff_for(30), Duration::from_secs(10));
    }

    #[test]
    fn higher_priority_first_then_arrival() {
        let mut q = Queue::default();
        q.add_or_update(&pod("a"), 0);
        q.add_or_update(&pod("b"), 10);
        q.add_or_update(&pod("c"), 0);
        let order: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|p| p.pod.metadata.uid.clone().unwrap_or_default())
            .collect();
        assert_eq!(order, ["b", "a", "c"]);
    }

    #[test]
    fn unschedulable_waits_for_a_cluster_change() {
        let mut q = Queue::default();
        q.add_or_update(&pod("a"), 0);
        assert!(q.pop().is_some());
        q.requeue_unschedulable("a", "no");
        q.flush();
        assert!(q.pop().is_none());
        q.move_all_to_active_or_backoff();
        // Still backing off for 1 s.
        assert!(q.pop().is_none());
        assert!(q.flush().is_some());
    }
}
