//! The reconcile harness every controller runs in: kube-runtime's `Controller` fed from the
//! shared [`Informers`](super::Informers), with triggers for owned and related kinds, periodic
//! resync, bounded concurrency, requeue on error and a clean stop on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use tokio_util::sync::CancellationToken;

use super::informer::{Cached, Informer};
use super::owner::owner_key;
use super::Error;

/// How long to wait before retrying a failed reconcile.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A controller over kind `K` under construction.
pub struct Harness<K: Cached> {
    name: &'static str,
    controller: Controller<K>,
}

impl<K: Cached> Harness<K>
where
    K: kube::Resource<DynamicType = ()>,
{
    /// A controller named `name` reconciling every `K` in `main` whenever it changes.
    pub fn new(name: &'static str, main: &Informer<K>, shutdown: &CancellationToken) -> Self {
        let controller = Controller::for_stream(futures::stream::pending(), main.store())
            .reconcile_on(main.subscribe().map(|o| ObjectRef::from_obj(&*o)))
            .graceful_shutdown_on(shutdown.clone().cancelled_owned())
            .with_config(controller::Config::default().concurrency(5));
        Harness { name, controller }
    }

    /// Also reconciles the `K` that controls a changed `C` (its controllerRef).
    pub fn owns<C: Cached>(self, child: &Informer<C>) -> Self {
        self.watches(child, |c: &C| {
            owner_key::<K>(c.meta()).into_iter().collect()
        })
    }

    /// Also reconciles the `K`s `mapper` names for a changed `O`.
    pub fn watches<O: Cached>(
        mut self,
        other: &Informer<O>,
        mapper: impl Fn(&O) -> Vec<ObjectRef<K>> + Send + Sync + 'static,
    ) -> Self {
        let refs = other
            .subscribe()
            .flat_map(move |o| futures::stream::iter(mapper(&o)));
        self.controller = self.controller.reconcile_on(refs);
        self
    }

    /// Also reconciles the objects `refs` names (timers of the controller's own).
    pub fn triggers(
        mut self,
        refs: impl futures::Stream<Item = ObjectRef<K>> + Send + 'static,
    ) -> Self {
        self.controller = self.controller.reconcile_on(refs);
        self
    }

    /// Reconciles every `K` each `period` as well (upstream's resync).
    pub fn resync_every(mut self, period: Duration) -> Self {
        let ticks = tokio_stream_interval(period);
        self.controller = self.controller.reconcile_all_on(ticks);
        self
    }

    /// Runs `reconcile` until shutdown. An error is logged and the object retried after
    /// [`RETRY_AFTER`]; conflicts (a stale cache) are retried quietly.
    pub async fn run<Ctx, F, Fut>(self, reconcile: F, ctx: Arc<Ctx>)
    where
        Ctx: Send + Sync + 'static,
        F: FnMut(Arc<K>, Arc<Ctx>) -> Fut,
        Fut: Future<Output = Result<Action, Error>> + Send + 'static,
    {
        let name = self.name;
        self.controller
            .run(reconcile, move |_, e, _| error_policy(name, e), ctx)
            .for_each(|r| async move {
                if let Err(e) = r {
                    match e {
                        controller::Error::ObjectNotFound(_) => {}
                        controller::Error::ReconcilerFailed(..) => {}
                        e => tracing::debug!(controller = name, error = %e, "controller"),
                    }
                }
            })
            .await;
    }
}

fn error_policy(name: &str, e: &Error) -> Action {
    match e {
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => {
            tracing::debug!(controller = name, error = %e, "conflict; retrying")
        }
        e => tracing::warn!(controller = name, error = %e, "reconcile failed; retrying"),
    }
    Action::requeue(RETRY_AFTER)
}

fn tokio_stream_interval(period: Duration) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        |mut i| async move {
            i.tick().await;
            Some(((), i))
        },
    )
}
