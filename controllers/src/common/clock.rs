//! Time as controllers see it: the system clock, or a clock a test moves by hand so that
//! CronJob schedules and deadlines are checked without waiting real minutes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

/// A future that completes at a point in a clock's time.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> Timestamp;

    /// Completes once the clock shows `at` or later.
    fn sleep_until(&self, at: Timestamp) -> Sleep;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let wait = at.duration_since(Timestamp::now());
        let wait = std::time::Duration::try_from(wait).unwrap_or_default();
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that stands still until [`TestClock::advance`] or [`TestClock::set`].
#[derive(Debug, Clone)]
pub struct TestClock(Arc<watch::Sender<Timestamp>>);

impl TestClock {
    /// A clock showing `at`.
    pub fn new(at: Timestamp) -> Self {
        TestClock(Arc::new(watch::Sender::new(at)))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: SignedDuration) {
        self.0
            .send_modify(|t| *t = t.saturating_add(by).unwrap_or(*t));
    }

    /// Sets the clock to `at`.
    pub fn set(&self, at: Timestamp) {
        self.0.send_replace(at);
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        *self.0.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|t| *t >= at).await;
        })
    }
}
