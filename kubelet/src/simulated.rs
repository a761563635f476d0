//! The simulated runtime (kwok-like): nodes that register, heartbeat and drive their pods
//! through Running and Ready (and, for restartPolicy Never/OnFailure, to Succeeded after a
//! configured time) without any container. One process holds many such nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::node::{self, NodeSpec};
use crate::pod_manager::{PodManager, SpawnWorker};
use crate::status;

/// Runs `cfg.simulated_nodes` simulated nodes until `shutdown`.
pub async fn run(
    client: kube::Client,
    cfg: crate::Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let base = cfg.node_name();
    let n = cfg.simulated_nodes.max(1);
    let mut tasks = Vec::new();
    for i in 0..n {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{i}")
        };
        let spec = simulated_node(&name, i, cfg.port);
        tasks.push(tokio::spawn(node::run(
            client.clone(),
            spec,
            cfg.node_status_update_frequency,
            None,
            shutdown.clone(),
        )));
        let c = client.clone();
        let complete_after = cfg.simulated_completion_after;
        let node_name = name.clone();
        let index = i;
        let spawn: SpawnWorker = Arc::new(move |_uid, rx, wake, stop| {
            tokio::spawn(sim_worker(
                c.clone(),
                node_name.clone(),
                index,
                complete_after,
                rx,
                wake,
                stop,
            ))
        });
        let pods = PodManager::with_workers(client.clone(), &name, spawn);
        tasks.push(tokio::spawn(pods.run(shutdown.clone())));
    }
    tracing::info!(nodes = n, "simulated kubelet running");
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn simulated_node(name: &str, index: usize, port: u16) -> NodeSpec {
    NodeSpec {
        name: name.to_string(),
        labels: {
            let mut l = node::default_labels(name);
            l.insert("type".into(), "simulated".into());
            l
        },
        addresses: vec![
            ("InternalIP".into(), sim_ip(index, 1)),
            ("Hostname".into(), name.to_string()),
        ],
        capacity: BTreeMap::from([
            ("cpu".to_string(), Quantity("32".into())),
            ("memory".to_string(), Quantity("256Gi".into())),
            ("ephemeral-storage".to_string(), Quantity("1Ti".into())),
            ("pods".to_string(), Quantity("110".into())),
        ]),
        node_info: json!({
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "simulated", "osImage": "simulated",
            "containerRuntimeVersion": "simulated://1.0.0",
            "kubeletVersion": crate::KUBELET_VERSION, "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": node::arch(),
        }),
        port,
    }
}

/// A made-up address in the node's pod range (10.200+i/16 style, wrapped to stay valid).
fn sim_ip(node: usize, host: u32) -> String {
    let n = node as u32;
    format!(
        "10.{}.{}.{}",
        128 + (n / 256) % 128,
        n % 256,
        host % 254 + 1
    )
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn statuses(pod: &Pod, running: bool, started_at: &str) -> Vec<Value> {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers
        .iter()
        .map(|c| {
            let id = format!("simulated://{}-{}", pod.metadata.uid.as_deref().unwrap_or_default(), c.name);
            let state = if running {
                json!({"running": {"startedAt": started_at}})
            } else {
                json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started_at, "finishedAt": now(), "containerID": id}})
            };
            json!({"name": c.name, "image": c.image, "imageID": "", "containerID": id, "ready": running,
                   "started": running, "restartCount": 0, "state": state, "lastState": {}})
        })
        .collect()
}

async fn patch(client: &kube::Client, pod: &Pod, st: Value) -> kube::Result<()> {
    let api: Api<Pod> = Api::namespaced(
        client.clone(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
    );
    match api
        .patch_status(
            pod.metadata.name.as_deref().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": st})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn pod_status(pod: &Pod, phase: &str, node: usize, running: bool, start: &str) -> Value {
    let prev: Vec<Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    let unready: Vec<String> = if running {
        vec![]
    } else {
        pod.spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect()
    };
    let hash = pod
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    let ip = sim_ip(node, hash);
    let host = sim_ip(node, 1);
    json!({
        "phase": phase,
        "conditions": status::conditions(&prev, phase, running, true, &[], &unready),
        "hostIP": host, "hostIPs": [{"ip": host}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": start,
        "containerStatuses": statuses(pod, running, start),
    })
}

async fn sim_worker(
    client: kube::Client,
    node_name: String,
    node: usize,
    complete_after: Duration,
    mut rx: watch::Receiver<(Pod, bool)>,
    _wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut reported: Option<String> = None;
    let mut completes_at: Option<tokio::time::Instant> = None;
    loop {
        let (pod, deleted) = rx.borrow_and_update().clone();
        if deleted {
            return;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let start = pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .and_then(|t| serde_json::to_value(t).ok())
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(now);
        if pod.metadata.deletion_timestamp.is_some() {
            let _ = patch(
                &client,
                &pod,
                pod_status(&pod, "Succeeded", node, false, &start),
            )
            .await;
            let api: Api<Pod> = Api::namespaced(
                client.clone(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
            );
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api
                .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return,
                Err(e) => tracing::warn!(node = %node_name, error = %e, "deleting simulated pod"),
            }
        } else if phase != "Succeeded" && phase != "Failed" {
            let policy = pod
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.clone())
                .unwrap_or_else(|| "Always".into());
            let finite = policy != "Always" && !complete_after.is_zero();
            let due = completes_at.is_some_and(|t| t <= tokio::time::Instant::now());
            let target = if due { "Succeeded" } else { "Running" };
            if reported.as_deref() != Some(target) {
                match patch(&client, &pod, pod_status(&pod, target, node, !due, &start)).await {
                    Ok(()) => reported = Some(target.to_string()),
                    Err(e) => tracing::warn!(node = %node_name, error = %e, "simulated pod status"),
                }
            }
            if finite && completes_at.is_none() {
                completes_at = Some(tokio::time::Instant::now() + complete_after);
            }
        }
        let far = tokio::time::Instant::now() + Duration::from_secs(3600);
        let until = match completes_at {
            Some(t) if reported.as_deref() != Some("Succeeded") => t,
            _ => far,
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
            _ = tokio::time::sleep_until(until) => {}
        }
    }
}
