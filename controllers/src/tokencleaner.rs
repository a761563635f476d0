//! Token cleaner (upstream's pkg/controller/bootstrap/tokencleaner): deletes bootstrap token
//! Secrets (`kube-system`, type `bootstrap.kubernetes.io/token`) once their `expiration` has
//! passed, so an expired join token is gone from the cluster and not only refused.
//!
//! It watches only those Secrets (a field selector on `type`, in `kube-system`, as
//! upstream), and sleeps until the next token expires or one changes.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use tokio::sync::Notify;

use crate::ControllerContext;

/// The namespace of bootstrap tokens.
pub const NAMESPACE: &str = "kube-system";
/// Their Secret type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// How often the cleaner looks again when no token expires sooner.
const RESYNC: Duration = Duration::from_secs(300);

/// Runs the token cleaner until shutdown.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let (store, writer) = reflector::store::<Secret>();
    let wake = Arc::new(Notify::new());
    let cfg = watcher::Config::default().fields(&format!("type={SECRET_TYPE}"));
    let stream = reflector::reflector(writer, watcher(api.clone(), cfg)).default_backoff();
    let notify = wake.clone();
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                e = stream.next() => match e {
                    Some(Ok(_)) => notify.notify_one(),
                    Some(Err(e)) => tracing::debug!(error = %e, "token cleaner watch"),
                    None => return,
                },
            }
        }
    });
    tokio::select! {
        r = store.wait_until_ready() => r?,
        _ = ctx.shutdown.cancelled() => return Ok(()),
    }
    loop {
        let next = clean(&api, &store, ctx.clock.now()).await;
        let wait = next
            .and_then(|at| Duration::try_from(at.duration_since(ctx.clock.now())).ok())
            .map_or(RESYNC, |d| d.min(RESYNC));
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return Ok(()),
            _ = wake.notified() => {}
            _ = ctx.clock.sleep_until(ctx.clock.now() + wait) => {}
        }
    }
}

/// The `expiration` of a bootstrap token Secret (`data`, or `stringData` not yet folded).
pub fn expiration(secret: &Secret) -> Option<Timestamp> {
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get("expiration"))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get("expiration").cloned())
        })?;
    raw.trim().parse::<Timestamp>().ok()
}

/// Deletes the expired tokens (each only if it is still the object seen: a UID
/// precondition); returns when the next one expires.
async fn clean(api: &Api<Secret>, store: &Store<Secret>, now: Timestamp) -> Option<Timestamp> {
    let mut next: Option<Timestamp> = None;
    for secret in store.state() {
        if secret.type_.as_deref() != Some(SECRET_TYPE)
            || secret.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let Some(exp) = expiration(&secret) else {
            continue;
        };
        if exp > now {
            next = Some(next.map_or(exp, |n| n.min(exp)));
            continue;
        }
        let name = secret.name_any();
        tracing::info!(secret = %name, expired = %exp, "deleting expired bootstrap token");
        let dp = DeleteParams {
            preconditions: secret.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {}
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "deleting expired bootstrap token");
                // Try again soon.
                let soon = now + Duration::from_secs(5);
                next = Some(next.map_or(soon, |n| n.min(soon)));
            }
        }
    }
    next
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn expiration_is_read_from_data_or_string_data() {
        let mut s = Secret::default();
        assert_eq!(expiration(&s), None);
        s.data = Some(
            [(
                "expiration".to_string(),
                ByteString(b"2030-01-02T03:04:05Z".to_vec()),
            )]
            .into(),
        );
        assert_eq!(
            expiration(&s).unwrap(),
            "2030-01-02T03:04:05Z".parse::<Timestamp>().unwrap()
        );
        s.data = None;
        s.string_data = Some([("expiration".into(), "garbage".into())].into());
        assert_eq!(expiration(&s), None);
    }
}
