//! Per-controller identities (`--use-service-account-credentials`): each controller writes
//! as `system:serviceaccount:kube-system:<controller>`, authorized by its own bootstrap role.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::{wait_for, Cluster};

const SA: &str = "system:serviceaccount:kube-system:";

/// The audit events written so far.
fn audit(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Whether `user` did `verb` on `resource` with response `code`.
fn did(events: &[Value], user: &str, verb: &str, resource: &str, code: u64) -> bool {
    events.iter().any(|e| {
        e["user"]["username"] == user
            && e["verb"] == verb
            && e["objectRef"]["resource"] == resource
            && e["responseStatus"]["code"] == code
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controllers_write_as_their_own_service_accounts() -> Result<()> {
    let (c, log) = Cluster::start_with_own_accounts(&["deployment", "replicaset"]).await?;
    c.namespace("ids").await?;
    let deploy: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))?;
    let deployments: Api<Deployment> = c.api("ids");
    deployments.create(&PostParams::default(), &deploy).await?;
    wait_for("2 pods", Duration::from_secs(30), || async {
        Ok((c.pods("ids", "app=web").await?.len() == 2).then_some(()))
    })
    .await?;
    let deployment = format!("{SA}deployment-controller");
    let replicaset = format!("{SA}replicaset-controller");
    wait_for(
        "audited writes and events",
        Duration::from_secs(15),
        || async {
            let ev = audit(&log);
            Ok((did(&ev, &deployment, "create", "replicasets", 201)
                && did(&ev, &replicaset, "create", "pods", 201)
                && did(&ev, &replicaset, "create", "events", 201))
            .then_some(()))
        },
    )
    .await?;
    // The manager itself never writes workloads; no controller was refused anything.
    let ev = audit(&log);
    assert!(!did(
        &ev,
        "system:kube-controller-manager",
        "create",
        "pods",
        201
    ));
    let refused: Vec<&Value> = ev
        .iter()
        .filter(|e| {
            e["user"]["username"]
                .as_str()
                .is_some_and(|u| u.starts_with(SA))
                && e["responseStatus"]["code"] == 403
        })
        .collect();
    assert!(refused.is_empty(), "refused: {refused:?}");

    // Without its binding the ReplicaSet controller is refused; the Deployment one is not.
    let bindings: Api<ClusterRoleBinding> = Api::all(c.client.clone());
    bindings
        .delete(
            "system:controller:replicaset-controller",
            &DeleteParams::default(),
        )
        .await?;
    // The authorizer reads bindings from a watch cache: scale only once it has seen the
    // deletion, or the ReplicaSet controller may still be allowed.
    let reviews: Api<SubjectAccessReview> = Api::all(c.client.clone());
    wait_for(
        "the ReplicaSet controller's grant gone",
        Duration::from_secs(10),
        || async {
            let review: SubjectAccessReview = serde_json::from_value(json!({
                "spec": {"user": replicaset, "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
                         "resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "ids"}},
            }))?;
            let r = reviews.create(&PostParams::default(), &review).await?;
            Ok((!r.status.is_some_and(|s| s.allowed)).then_some(()))
        },
    )
    .await?;
    deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    let replicasets: Api<ReplicaSet> = c.api("ids");
    wait_for(
        "the ReplicaSet scaled to 3",
        Duration::from_secs(30),
        || async {
            let rs = replicasets.list(&ListParams::default()).await?.items;
            Ok(rs
                .iter()
                .any(|r| r.spec.as_ref().and_then(|s| s.replicas) == Some(3))
                .then_some(()))
        },
    )
    .await?;
    wait_for("a refused pod create", Duration::from_secs(30), || async {
        Ok(did(&audit(&log), &replicaset, "create", "pods", 403).then_some(()))
    })
    .await?;
    assert_eq!(c.pods("ids", "app=web").await?.len(), 2);
    Ok(())
}
