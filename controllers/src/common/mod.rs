//! What every controller shares: informers, owner references and adoption, expectations,
//! pod readiness, events, a clock and the reconcile harness.

pub mod batch;
pub mod clock;
pub mod cron;
pub mod events;
pub mod expectations;
pub mod harness;
pub mod informer;
pub mod owner;
pub mod pod;
pub mod revision;
pub mod rounds;
pub mod taint;

pub use clock::{Clock, SystemClock, TestClock};
pub use events::EventRecorder;
pub use expectations::Expectations;
pub use harness::Harness;
pub use informer::{Informer, Informers};
pub use owner::{claim, controller_ref, LabelMatcher};

/// Errors of a reconcile; each is logged and the object retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API request failed.
    #[error(transparent)]
    Kube(#[from] kube::Error),
    /// An object's selector does not parse.
    #[error("invalid selector: {0}")]
    Selector(String),
    /// Anything else worth retrying.
    #[error("{0}")]
    Other(String),
}

/// Result of controller operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `namespace/name` of an object: the key for expectations and logs.
pub fn key_of<K: kube::Resource>(obj: &K) -> String {
    let m = obj.meta();
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or(""),
        m.name.as_deref().unwrap_or("")
    )
}

/// Whether an API error is a NotFound.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Whether an API error is an AlreadyExists (409 with that reason).
pub fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Whether a computed status differs from the stored one, ignoring nulls and zero counters
/// (the API may omit those; a merge patch still sends them, so zeros are written).
pub fn status_differs(old: &serde_json::Value, new: &serde_json::Value) -> bool {
    fn normalize(v: &serde_json::Value) -> serde_json::Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.retain(|_, x| !(x.is_null() || x == &serde_json::json!(0)));
        }
        v
    }
    normalize(old) != normalize(new)
}
