//! Shared informers and the controller-manager's lifecycle against a real API server.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use controllers::common::informer::Informers;
use controllers::common::SystemClock;
use k8s_openapi::api::core::v1::Node;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use support::Cluster;

/// Several controllers wait for the same cache at once; every one of them wakes when the
/// first list lands, also next to a waiter that gives up and retries (kube-runtime's
/// one-shot readiness signal woke only the last task that polled it).
#[tokio::test]
async fn every_task_waiting_for_an_informer_wakes() -> Result<()> {
    let c = Cluster::start(&[]).await?;
    let stop = CancellationToken::new();
    let informers = Informers::new(c.client.clone(), stop.clone());
    let nodes = informers.get::<Node>();
    let mut waiters = JoinSet::new();
    for _ in 0..3 {
        let n = nodes.clone();
        waiters.spawn(async move { n.wait_ready().await });
    }
    let n = nodes.clone();
    waiters.spawn(async move {
        while tokio::time::timeout(Duration::from_millis(2), n.wait_ready())
            .await
            .is_err()
        {}
    });
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(r) = waiters.join_next().await {
            r?;
        }
        anyhow::Ok(())
    })
    .await
    .context("a task waiting for the node informer was never woken")??;
    assert!(nodes.is_ready());
    stop.cancel();
    Ok(())
}

/// A subscriber that comes after the first list still gets the objects listed: a controller
/// whose trigger stream was set up just after its informer's InitDone never reconciled
/// the objects that were there (a Job created before the controller-manager started got no
/// pods).
#[tokio::test]
async fn a_late_subscriber_gets_the_objects_already_listed() -> Result<()> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    let c = Cluster::start(&[]).await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "early"}}))?;
    cms.create(&PostParams::default(), &cm).await?;
    let stop = CancellationToken::new();
    let informers = Informers::new(c.client.clone(), stop.clone());
    let all = informers.get::<ConfigMap>();
    tokio::time::timeout(Duration::from_secs(10), all.wait_ready())
        .await
        .context("the ConfigMap informer never became ready")?;
    let mut late = Box::pin(all.subscribe());
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match late.next().await {
                Some(o) if o.metadata.name.as_deref() == Some("early") => return Some(o),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .context("a subscriber after the first list never got the listed ConfigMap")?;
    assert!(first.is_some());
    stop.cancel();
    Ok(())
}

/// The controller-manager returns soon after its shutdown: right after it started (while
/// controllers still wait for their caches) and once everything runs.
#[tokio::test]
async fn the_controller_manager_stops_soon_after_shutdown() -> Result<()> {
    let c = Cluster::start(&[]).await?;
    for settle in [
        Duration::ZERO,
        Duration::from_millis(300),
        Duration::from_secs(2),
    ] {
        let stop = CancellationToken::new();
        let cfg = support::manager_config(&["*"]);
        let run = tokio::spawn(controllers::run_with(
            c.client.clone(),
            Arc::new(SystemClock),
            cfg,
            stop.clone(),
        ));
        // Not a wait for a condition: how long the manager runs before its shutdown.
        tokio::time::sleep(settle).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .with_context(|| {
                format!("still running 10s after a shutdown {settle:?} after start")
            })???;
    }
    Ok(())
}
