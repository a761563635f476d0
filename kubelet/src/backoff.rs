//! Upstream's container and image-pull back-off: the first retry is immediate, then 10 s
//! doubling to 5 min; a container that ran 10 min resets it.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before exiting starts over at [`INITIAL`].
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy)]
struct Entry {
    backoff: Duration,
    last_update: DateTime<Utc>,
}

/// Back-off per key (a container of a pod, or an image).
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// When the event at `since` (a container's exit, a failed pull) is still inside the
    /// key's back-off, the time it ends.
    pub fn in_backoff_until(
        &self,
        key: &str,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let e = self.entries.get(key)?;
        // An entry unused for twice the maximum has expired.
        if (now - e.last_update).to_std().unwrap_or_default() > MAX * 2 {
            return None;
        }
        let end = since + chrono::Duration::from_std(e.backoff).unwrap_or_default();
        (now < end).then_some(end)
    }

    /// Records a retry now: the next back-off doubles (first one: [`INITIAL`]).
    pub fn next(&mut self, key: &str, now: DateTime<Utc>) {
        let e = self.entries.entry(key.to_string()).or_insert(Entry {
            backoff: Duration::ZERO,
            last_update: now,
        });
        e.backoff = if e.backoff.is_zero() {
            INITIAL
        } else {
            (e.backoff * 2).min(MAX)
        };
        e.last_update = now;
    }

    /// The current back-off of a key (zero when none).
    pub fn current(&self, key: &str) -> Duration {
        self.entries.get(key).map(|e| e.backoff).unwrap_or_default()
    }

    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_maximum() {
        let mut b = Backoff::default();
        let t0 = Utc::now();
        assert_eq!(
            b.in_backoff_until("c", t0, t0),
            None,
            "first retry is immediate"
        );
        b.next("c", t0);
        assert_eq!(b.current("c"), INITIAL);
        let exit = t0 + chrono::Duration::seconds(1);
        let until = b.in_backoff_until("c", exit, exit).expect("in back-off");
        assert_eq!(until, exit + chrono::Duration::seconds(10));
        assert_eq!(b.in_backoff_until("c", exit, until), None);
        for _ in 0..10 {
            b.next("c", until);
        }
        assert_eq!(b.current("c"), MAX);
        b.reset("c");
        assert_eq!(b.current("c"), Duration::ZERO);
    }
}
