//! Resync-style reconcile loops: a controller that recomputes everything it owns from its
//! caches whenever any watched kind changes (and on a period), instead of per-object queues.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::informer::{Cached, Informer};

/// Wakes `wake` on every change `informer` announces, until `shutdown`.
pub fn wake_on<K: Cached>(informer: &Informer<K>, wake: Arc<Notify>, shutdown: CancellationToken) {
    let changes = informer.subscribe();
    tokio::spawn(async move {
        let mut changes = std::pin::pin!(changes);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                c = changes.next() => match c {
                    Some(_) => wake.notify_one(),
                    None => return,
                },
            }
        }
    });
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

/// The shared cache of kind `K`, once it holds its first list (or shutdown began), with
/// every change to it waking `wake`.
pub async fn watch<K: Cached>(
    informers: &super::Informers,
    wake: &Arc<Notify>,
    shutdown: &CancellationToken,
) -> kube::runtime::reflector::Store<K> {
    let informer = informers.get::<K>();
    wake_on(&informer, wake.clone(), shutdown.clone());
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = informer.wait_ready() => {}
    }
    informer.store()
}
