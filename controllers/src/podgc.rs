//! Pod garbage collector (upstream's pkg/controller/podgc): keeps the number of terminated
//! pods under `--terminated-pod-gc-threshold` (oldest go first), and force-deletes pods
//! bound to nodes that no longer exist and terminating pods that were never scheduled.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::common::pod;
use crate::common::rounds::{watch, Rounds};
use crate::ControllerContext;

/// Flags of the pod garbage collector.
#[derive(clap::Args, Debug, Clone)]
pub struct PodGcConfig {
    /// Number of terminated pods that can exist before the pod garbage collector starts
    /// deleting them; 0 disables this
    #[arg(long, default_value_t = 12500)]
    pub terminated_pod_gc_threshold: usize,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_pod_gc_threshold: 12500,
        }
    }
}

/// Runs the pod garbage collector until shutdown.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let threshold = ctx.config.podgc.terminated_pod_gc_threshold;
    let wake = Arc::new(Notify::new());
    let pods = watch::<Pod>(&ctx.informers, &wake, &ctx.shutdown).await;
    let nodes = watch::<Node>(&ctx.informers, &wake, &ctx.shutdown).await;
    let mut rounds = Rounds::new("podgc", wake, Duration::from_secs(20), ctx.shutdown.clone());
    let mut deleted = HashSet::new();
    while rounds.next().await {
        rounds.report(sync(&ctx.client, &pods, &nodes, threshold, &mut deleted).await);
    }
    Ok(())
}

async fn force_delete(
    client: &Client,
    p: &Pod,
    deleted: &mut HashSet<String>,
) -> anyhow::Result<()> {
    if let Some(uid) = p.uid() {
        deleted.insert(uid);
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: p.uid().map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&p.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn sync(
    client: &Client,
    pods: &Store<Pod>,
    nodes: &Store<Node>,
    threshold: usize,
    deleted: &mut HashSet<String>,
) -> anyhow::Result<()> {
    let mut all = pods.state();
    // Pods this collector deleted that the cache still shows are not counted twice.
    deleted.retain(|uid| all.iter().any(|p| p.uid().as_ref() == Some(uid)));
    all.retain(|p| p.uid().is_none_or(|u| !deleted.contains(&u)));
    // Terminated pods over the threshold, oldest first.
    if threshold > 0 {
        let mut terminated: Vec<&Arc<Pod>> = all
            .iter()
            .filter(|p| pod::is_terminal(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        if terminated.len() > threshold {
            terminated.sort_by_key(|p| {
                (
                    p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    p.name_any(),
                )
            });
            let excess = terminated.len() - threshold;
            tracing::info!(
                count = excess,
                threshold,
                "garbage collecting terminated pods"
            );
            for p in terminated.into_iter().take(excess) {
                force_delete(client, p, deleted).await?;
            }
        }
    }
    // Pods bound to nodes that are gone (checked live, so a lagging cache deletes nothing).
    let known: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    let node_api: Api<Node> = Api::all(client.clone());
    let mut missing: HashSet<String> = HashSet::new();
    for p in &all {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            // Terminating pods that were never scheduled have no kubelet to finish them.
            if p.metadata.deletion_timestamp.is_some() {
                force_delete(client, p, deleted).await?;
            }
            continue;
        };
        if known.contains(&node) {
            continue;
        }
        if !missing.contains(&node) {
            if node_api.get_opt(&node).await?.is_some() {
                continue;
            }
            missing.insert(node.clone());
        }
        tracing::info!(namespace = ?p.namespace(), pod = %p.name_any(), %node, "deleting orphaned pod of a deleted node");
        mark_failed(client, p).await?;
        force_delete(client, p, deleted).await?;
    }
    Ok(())
}

/// Upstream marks an orphaned pod Failed with a DisruptionTarget condition before deleting it.
async fn mark_failed(client: &Client, p: &Pod) -> anyhow::Result<()> {
    if pod::is_terminal(p) {
        return Ok(());
    }
    let conds = pod::with_disruption_target(p, "DeletionByPodGC", "PodGC: node no longer exists");
    let patch = json!({"status": {"phase": "Failed", "conditions": conds}});
    let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
    match api
        .patch_status(
            &p.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
