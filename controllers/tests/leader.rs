//! Two controller-managers on one server: one leads through the Lease, the other takes
//! over when the leader stops.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use anyhow::Result;
use controllers::common::SystemClock;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::Api;
use serde_json::json;
use support::{wait_for, Cluster, T};
use tokio_util::sync::CancellationToken;

fn holder(l: &Lease) -> Option<String> {
    l.spec.as_ref()?.holder_identity.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_manager_takes_over_when_the_leader_stops() -> Result<()> {
    let c = Cluster::start(&[]).await?;
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-system");
    let first = CancellationToken::new();
    c.start_manager(&["replicaset"], Arc::new(SystemClock), first.clone());
    let a = wait_for("a leader", T, || async {
        Ok(leases
            .get_opt("kube-controller-manager")
            .await?
            .and_then(|l| holder(&l))
            .filter(|h| !h.is_empty()))
    })
    .await?;
    let second = CancellationToken::new();
    c.start_manager(&["replicaset"], Arc::new(SystemClock), second.clone());
    first.cancel();
    let b = wait_for(
        "a new leader",
        std::time::Duration::from_secs(40),
        || async {
            Ok(leases
                .get_opt("kube-controller-manager")
                .await?
                .and_then(|l| holder(&l))
                .filter(|h| !h.is_empty() && *h != a))
        },
    )
    .await?;
    assert_ne!(a, b);
    // The new leader reconciles.
    c.namespace("lead").await?;
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {"name": "r"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "r"}},
            "template": {"metadata": {"labels": {"app": "r"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))?;
    c.api::<ReplicaSet>("lead")
        .create(&PostParams::default(), &rs)
        .await?;
    wait_for("a pod from the new leader", T, || async {
        Ok((c.pods("lead", "app=r").await?.len() == 1).then_some(()))
    })
    .await?;
    second.cancel();
    Ok(())
}
