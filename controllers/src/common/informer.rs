//! Informers for resync-style controllers: a reflector cache per kind that wakes one
//! reconcile loop whenever anything it watches changes.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Starts a reflector over `api` that notifies `wake` on every change, and returns its cache.
/// The watch restarts with backoff on errors until `shutdown` is cancelled.
pub fn reflect<K>(
    api: Api<K>,
    cfg: watcher::Config,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) -> Store<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + Hash + Clone + Send + Sync,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, cfg)).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => match ev {
                    Some(Ok(_)) => wake.notify_one(),
                    Some(Err(e)) => tracing::debug!(error = %e, kind = %K::kind(&Default::default()), "watch error"),
                    None => return,
                },
            }
        }
    });
    reader
}

/// Waits until `store` has its first list; false when `shutdown` came first.
pub async fn ready<K>(store: &Store<K>, shutdown: &CancellationToken) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    tokio::select! {
        _ = shutdown.cancelled() => false,
        r = store.wait_until_ready() => r.is_ok(),
    }
}

/// The rounds of a resync-style reconcile loop: the first at once, then one after every
/// wake-up and at least every `resync`, until shutdown.
pub struct Rounds {
    name: &'static str,
    wake: Arc<Notify>,
    resync: Duration,
    shutdown: CancellationToken,
    started: bool,
}

impl Rounds {
    /// Rounds of the controller `name`.
    pub fn new(
        name: &'static str,
        wake: Arc<Notify>,
        resync: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Rounds {
            name,
            wake,
            resync,
            shutdown,
            started: false,
        }
    }

    /// Waits for the next round; false once shutdown has begun.
    pub async fn next(&mut self) -> bool {
        if !self.started {
            self.started = true;
            return !self.shutdown.is_cancelled();
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => false,
            _ = self.wake.notified() => true,
            _ = tokio::time::sleep(self.resync) => true,
        }
    }

    /// Logs a failed round; the next round retries.
    pub fn report(&self, r: anyhow::Result<()>) {
        if let Err(e) = r {
            tracing::warn!(controller = self.name, error = %format!("{e:#}"), "reconcile failed");
        }
    }
}
