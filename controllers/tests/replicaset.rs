//! ReplicaSet and ReplicationController controllers against a real API server.

#![allow(clippy::unwrap_used)]

mod support;

use anyhow::Result;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use support::{wait_for, Cluster, T};

fn rs(name: &str, replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    }))
    .unwrap()
}

async fn active(c: &Cluster, ns: &str, sel: &str) -> Result<Vec<Pod>> {
    Ok(c.pods(ns, sel)
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_scales_up_and_down_adopts_and_reports_status() -> Result<()> {
    let c = Cluster::start(&["replicaset"]).await?;
    c.namespace("rs").await?;
    let api = c.api::<ReplicaSet>("rs");

    // An orphan that matches is adopted instead of creating a third pod.
    let orphan: Pod = serde_json::from_value(json!({
        "metadata": {"name": "orphan", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))?;
    c.api::<Pod>("rs")
        .create(&PostParams::default(), &orphan)
        .await?;

    let created = api.create(&PostParams::default(), &rs("web", 3)).await?;
    let pods = wait_for("3 pods", T, || async {
        let p = active(&c, "rs", "app=web").await?;
        Ok((p.len() == 3).then_some(p))
    })
    .await?;
    for p in &pods {
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str(), r.controller),
            ("ReplicaSet", created.uid().unwrap().as_str(), Some(true))
        );
    }
    assert!(pods.iter().any(|p| p.name_any() == "orphan"));
    assert!(pods
        .iter()
        .filter(|p| p.name_any() != "orphan")
        .all(|p| p.name_any().starts_with("web-")));

    c.ready_all("rs", "app=web").await?;
    wait_for("status ready 3", T, || async {
        let s = api.get("web").await?.status.unwrap_or_default();
        Ok((s.replicas == 3
            && s.ready_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.fully_labeled_replicas == Some(3)
            && s.observed_generation == Some(1))
        .then_some(()))
    })
    .await?;

    // A deleted pod is replaced.
    c.api::<Pod>("rs")
        .delete("orphan", &DeleteParams::default())
        .await?;
    wait_for("replacement", T, || async {
        let p = active(&c, "rs", "app=web").await?;
        Ok((p.len() == 3 && p.iter().all(|p| p.name_any() != "orphan")).then_some(()))
    })
    .await?;

    // Scale down removes the not-ready pod first.
    let fresh = active(&c, "rs", "app=web").await?;
    let unready: Vec<String> = fresh
        .iter()
        .filter(|p| !support::ready(p))
        .map(|p| p.name_any())
        .collect();
    assert_eq!(unready.len(), 1);
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await?;
    let left = wait_for("2 pods", T, || async {
        let p = active(&c, "rs", "app=web").await?;
        Ok((p.len() == 2).then_some(p))
    })
    .await?;
    assert!(left.iter().all(|p| p.name_any() != unready[0]));

    // A pod relabelled out of the selector is released and replaced.
    let victim = left[0].name_any();
    c.api::<Pod>("rs")
        .patch(
            &victim,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
        )
        .await?;
    wait_for("released", T, || async {
        let p = c.api::<Pod>("rs").get(&victim).await?;
        Ok(p.owner_references().is_empty().then_some(()))
    })
    .await?;
    wait_for("2 again", T, || async {
        Ok((active(&c, "rs", "app=web").await?.len() == 2).then_some(()))
    })
    .await?;

    // Scale to zero.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 0}})),
    )
    .await?;
    wait_for("0 pods and status", T, || async {
        let s = api.get("web").await?.status.unwrap_or_default();
        Ok((active(&c, "rs", "app=web").await?.is_empty()
            && s.replicas == 0
            && s.observed_generation == Some(3))
        .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicationcontroller_keeps_replicas() -> Result<()> {
    let c = Cluster::start(&["replicationcontroller"]).await?;
    c.namespace("rc").await?;
    let api = c.api::<ReplicationController>("rc");
    let rc: ReplicationController = serde_json::from_value(json!({
        "metadata": {"name": "old"},
        "spec": {
            "replicas": 2,
            "selector": {"app": "old"},
            "template": {"metadata": {"labels": {"app": "old"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        }
    }))?;
    api.create(&PostParams::default(), &rc).await?;
    wait_for("2 pods", T, || async {
        Ok((active(&c, "rc", "app=old").await?.len() == 2).then_some(()))
    })
    .await?;
    c.ready_all("rc", "app=old").await?;
    wait_for("status", T, || async {
        let s = api.get("old").await?.status.unwrap_or_default();
        Ok(
            (s.replicas == 2 && s.ready_replicas == Some(2) && s.available_replicas == Some(2))
                .then_some(()),
        )
    })
    .await?;
    Ok(())
}
