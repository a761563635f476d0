//! ServiceAccount controller: every namespace has a `default` ServiceAccount, re-created
//! when deleted (upstream's pkg/controller/serviceaccount).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::common::rounds::{watch, Rounds};
use crate::ControllerContext;

/// Name of the ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// Runs the ServiceAccount controller until `shutdown`.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let shutdown = ctx.shutdown.clone();
    let wake = Arc::new(Notify::new());
    let namespaces = watch::<Namespace>(&ctx.informers, &wake, &ctx.shutdown).await;
    let accounts = watch::<ServiceAccount>(&ctx.informers, &wake, &ctx.shutdown).await;
    let mut rounds = Rounds::new("serviceaccount", wake, Duration::from_secs(30), shutdown);
    while rounds.next().await {
        rounds.report(sync(&client, &namespaces, &accounts).await);
    }
    Ok(())
}

async fn sync(
    client: &Client,
    namespaces: &Store<Namespace>,
    accounts: &Store<ServiceAccount>,
) -> anyhow::Result<()> {
    let mut result = Ok(());
    for ns in namespaces.state() {
        // A terminating namespace refuses new objects.
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = ns.name_any();
        let present = accounts
            .find(|sa| {
                sa.namespace().as_deref() == Some(name.as_str())
                    && sa.name_any() == DEFAULT_SERVICE_ACCOUNT
            })
            .is_some();
        if present {
            continue;
        }
        let mut sa = ServiceAccount::default();
        sa.metadata.name = Some(DEFAULT_SERVICE_ACCOUNT.into());
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        match api.create(&PostParams::default(), &sa).await {
            Ok(_) => tracing::info!(namespace = %name, "created the default ServiceAccount"),
            // 409: it exists already (the cache lags); 403/404: the namespace is going away.
            Err(kube::Error::Api(s)) if matches!(s.code, 409 | 403 | 404) => {}
            Err(e) => result = Err(e.into()),
        }
    }
    result
}
