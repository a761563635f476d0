//! Node lifecycle controller (upstream's pkg/controller/nodelifecycle and its taint-eviction
//! manager):
//! - a node whose Lease (kube-node-lease) and Ready heartbeat stop renewing for
//!   `--node-monitor-grace-period` has its conditions set to Unknown;
//! - nodes get the condition taints (`node.kubernetes.io/not-ready`, `unreachable`,
//!   pressure and `unschedulable` as NoSchedule; not-ready/unreachable also NoExecute);
//! - pods on a node that is not Ready get Ready=False;
//! - pods on a node with NoExecute taints are evicted once their tolerations run out. Pods
//!   without a toleration for not-ready/unreachable are treated as tolerating them for the
//!   default seconds, as upstream's DefaultTolerationSeconds admission arranges.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::common::rounds::{watch, Rounds};
use crate::common::taint::tolerates;
use crate::ControllerContext;

/// Taint of a node whose Ready condition is False.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint of a node whose Ready condition is Unknown.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const TAINT_MEMORY_PRESSURE: &str = "node.kubernetes.io/memory-pressure";
const TAINT_DISK_PRESSURE: &str = "node.kubernetes.io/disk-pressure";
const TAINT_PID_PRESSURE: &str = "node.kubernetes.io/pid-pressure";
const TAINT_NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";
const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const MANAGED: &[&str] = &[
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_MEMORY_PRESSURE,
    TAINT_DISK_PRESSURE,
    TAINT_PID_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
    TAINT_UNSCHEDULABLE,
];
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Parses a duration flag: `40s`, `500ms`, `5m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration {s:?}: unit must be ms, s, m or h"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Flags of the node lifecycle controller.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How long a node may go without a heartbeat (Lease or Ready condition) before it is
    /// marked Unknown
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How long a node that never reported status may take before it is marked Unknown
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub node_startup_grace_period: Duration,
    /// How often node health is checked
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// Seconds a pod without its own toleration stays on a not-ready node
    #[arg(long, default_value_t = 300)]
    pub default_not_ready_toleration_seconds: i64,
    /// Seconds a pod without its own toleration stays on an unreachable node
    #[arg(long, default_value_t = 300)]
    pub default_unreachable_toleration_seconds: i64,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            node_monitor_grace_period: Duration::from_secs(40),
            node_startup_grace_period: Duration::from_secs(60),
            node_monitor_period: Duration::from_secs(5),
            default_not_ready_toleration_seconds: 300,
            default_unreachable_toleration_seconds: 300,
        }
    }
}

/// What the controller last saw of a node's heartbeats, and when (by its own clock).
struct Health {
    probe: Instant,
    lease_renew: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
}

struct Controller {
    client: Client,
    cfg: NodeLifecycleConfig,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    health: HashMap<String, Health>,
}

/// Runs the node lifecycle controller until `shutdown`.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let shutdown = ctx.shutdown.clone();
    let cfg = ctx.config.node_lifecycle.clone();
    let wake = Arc::new(Notify::new());
    let nodes = watch::<Node>(&ctx.informers, &wake, &ctx.shutdown).await;
    let leases = watch::<Lease>(&ctx.informers, &wake, &ctx.shutdown).await;
    let pods = watch::<Pod>(&ctx.informers, &wake, &ctx.shutdown).await;
    let period = cfg.node_monitor_period.max(Duration::from_millis(100));
    let mut c = Controller {
        client,
        cfg,
        nodes,
        leases,
        pods,
        health: HashMap::new(),
    };
    // Node and lease events come often (every heartbeat): checking on the monitor period
    // alone is enough and keeps this loop cheap, so the caches' wake-ups go unheard.
    let tick = Arc::new(Notify::new());
    drop(wake);
    let mut rounds = Rounds::new("nodelifecycle", tick, period, shutdown);
    while rounds.next().await {
        rounds.report(c.sync().await);
    }
    Ok(())
}

fn condition<'a>(n: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn condition_status<'a>(n: &'a Node, type_: &str) -> Option<&'a str> {
    condition(n, type_).map(|c| c.status.as_str())
}

/// The taints the node's conditions and spec call for.
fn desired_taints(n: &Node) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    match condition_status(n, "Ready") {
        Some("False") => {
            out.push((TAINT_NOT_READY, "NoSchedule"));
            out.push((TAINT_NOT_READY, "NoExecute"));
        }
        Some("True") => {}
        // Unknown, or never reported.
        _ => {
            out.push((TAINT_UNREACHABLE, "NoSchedule"));
            out.push((TAINT_UNREACHABLE, "NoExecute"));
        }
    }
    for (cond, key) in [
        ("MemoryPressure", TAINT_MEMORY_PRESSURE),
        ("DiskPressure", TAINT_DISK_PRESSURE),
        ("PIDPressure", TAINT_PID_PRESSURE),
        ("NetworkUnavailable", TAINT_NETWORK_UNAVAILABLE),
    ] {
        if condition_status(n, cond) == Some("True") {
            out.push((key, "NoSchedule"));
        }
    }
    if n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        out.push((TAINT_UNSCHEDULABLE, "NoSchedule"));
    }
    out
}

/// The node's taints with the managed ones brought in line with `desired`; None when unchanged.
fn reconcile_taints(current: &[Taint], desired: &[(&str, &str)]) -> Option<Vec<Taint>> {
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            !MANAGED.contains(&t.key.as_str())
                || desired.contains(&(t.key.as_str(), t.effect.as_str()))
        })
        .cloned()
        .collect();
    for (key, effect) in desired {
        if !out.iter().any(|t| t.key == *key && t.effect == *effect) {
            out.push(Taint {
                key: key.to_string(),
                effect: effect.to_string(),
                time_added: (*effect == "NoExecute").then(|| Time(Timestamp::now())),
                value: None,
            });
        }
    }
    (out != current).then_some(out)
}

/// How long after `taints` were added the pod must go, given its tolerations: None when it
/// may stay for good, Some(0) when it must go now.
fn eviction_delay(
    pod: &Pod,
    taints: &[&Taint],
    not_ready_default: i64,
    unreachable_default: i64,
) -> Option<i64> {
    let mut tols: Vec<Toleration> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    for (key, secs) in [
        (TAINT_NOT_READY, not_ready_default),
        (TAINT_UNREACHABLE, unreachable_default),
    ] {
        let probe = Taint {
            key: key.into(),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        if !tols.iter().any(|t| tolerates(t, &probe)) {
            tols.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(secs),
                value: None,
            });
        }
    }
    let mut min: Option<i64> = None;
    for taint in taints {
        let matching: Vec<&Toleration> = tols.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        for t in matching {
            if let Some(s) = t.toleration_seconds {
                min = Some(min.map_or(s.max(0), |m| m.min(s.max(0))));
            }
        }
    }
    min
}

impl Controller {
    async fn sync(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        let nodes = self.nodes.state();
        self.health
            .retain(|name, _| nodes.iter().any(|n| &n.name_any() == name));
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in self.pods.state() {
            if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                by_node.entry(n).or_default().push(p);
            }
        }
        for n in nodes {
            let pods = by_node.remove(&n.name_any()).unwrap_or_default();
            if let Err(e) = self.sync_node(&n, &pods).await {
                tracing::debug!(node = %n.name_any(), error = %format!("{e:#}"), "node lifecycle");
                result = Err(e);
            }
        }
        result
    }

    async fn sync_node(&mut self, n: &Node, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        let name = n.name_any();
        let lease_renew = self
            .leases
            .find(|l| l.namespace().as_deref() == Some(LEASE_NAMESPACE) && l.name_any() == name)
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
        let ready_cond = condition(n, "Ready");
        let heartbeat = ready_cond.and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
        let now = Instant::now();
        let h = self.health.entry(name.clone()).or_insert(Health {
            probe: now,
            lease_renew,
            heartbeat,
        });
        if h.lease_renew != lease_renew || h.heartbeat != heartbeat {
            h.lease_renew = lease_renew;
            h.heartbeat = heartbeat;
            h.probe = now;
        }
        let grace = if ready_cond.is_none() {
            self.cfg.node_startup_grace_period
        } else {
            self.cfg.node_monitor_grace_period
        };
        let mut node = n.clone();
        if now.duration_since(h.probe) > grace {
            if let Some(updated) = self.mark_unknown(&name).await? {
                node = updated;
            }
        }
        let node = self.apply_taints(node).await?;
        if condition_status(&node, "Ready") != Some("True") {
            self.mark_pods_not_ready(&name, pods).await?;
        }
        self.evict(&node, pods).await
    }

    /// Sets every standard condition to Unknown (once), as upstream does when the kubelet
    /// stops posting status; returns the updated node.
    async fn mark_unknown(&self, name: &str) -> anyhow::Result<Option<Node>> {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut node = api.get_status(name).await?;
        let created = node.metadata.creation_timestamp.clone();
        let status = node.status.get_or_insert_with(Default::default);
        let conds = status.conditions.get_or_insert_with(Vec::new);
        let now = Time(Timestamp::now());
        let mut changed = false;
        for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            match conds.iter_mut().find(|c| c.type_ == type_) {
                Some(c) if c.status == "Unknown" => {}
                Some(c) => {
                    c.status = "Unknown".into();
                    c.reason = Some("NodeStatusUnknown".into());
                    c.message = Some("Kubelet stopped posting node status.".into());
                    c.last_transition_time = Some(now.clone());
                    changed = true;
                }
                None => {
                    conds.push(NodeCondition {
                        type_: type_.into(),
                        status: "Unknown".into(),
                        reason: Some("NodeStatusNeverUpdated".into()),
                        message: Some("Kubelet never posted node status.".into()),
                        last_heartbeat_time: created.clone(),
                        last_transition_time: Some(now.clone()),
                    });
                    changed = true;
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        tracing::info!(node = %name, "node stopped posting status: conditions set to Unknown");
        Ok(Some(
            api.replace_status(name, &PostParams::default(), &node)
                .await?,
        ))
    }

    async fn apply_taints(&self, node: Node) -> anyhow::Result<Node> {
        let current = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let desired = desired_taints(&node);
        let Some(taints) = reconcile_taints(&current, &desired) else {
            return Ok(node);
        };
        let name = node.name_any();
        tracing::info!(node = %name, ?desired, "updating node condition taints");
        let patch = json!({
            "metadata": {"resourceVersion": node.metadata.resource_version},
            "spec": {"taints": if taints.is_empty() { serde_json::Value::Null } else { json!(taints) }},
        });
        let api: Api<Node> = Api::all(self.client.clone());
        Ok(api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?)
    }

    async fn mark_pods_not_ready(&self, node: &str, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        for p in pods {
            let Some(conds) = p.status.as_ref().and_then(|s| s.conditions.clone()) else {
                continue;
            };
            if !conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
            {
                continue;
            }
            let conds: Vec<PodCondition> = conds
                .into_iter()
                .map(|mut c| {
                    if c.type_ == "Ready" {
                        c.status = "False".into();
                        c.last_transition_time = Some(Time(Timestamp::now()));
                    }
                    c
                })
                .collect();
            let patch = json!({
                "metadata": {"resourceVersion": p.metadata.resource_version},
                "status": {"conditions": conds},
            });
            let ns = p.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match api
                .patch_status(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(namespace = %ns, pod = %p.name_any(), %node, "marked pod not ready")
                }
                Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn evict(&self, node: &Node, pods: &[Arc<Pod>]) -> anyhow::Result<()> {
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let no_execute: Vec<&Taint> = taints.iter().filter(|t| t.effect == "NoExecute").collect();
        if no_execute.is_empty() {
            return Ok(());
        }
        // The clock starts when the newest NoExecute taint went on.
        let since = no_execute
            .iter()
            .filter_map(|t| t.time_added.as_ref().map(|t| t.0))
            .max()
            .unwrap_or_else(Timestamp::now);
        let elapsed_ms = Timestamp::now().as_millisecond() - since.as_millisecond();
        for p in pods {
            if p.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(delay) = eviction_delay(
                p,
                &no_execute,
                self.cfg.default_not_ready_toleration_seconds,
                self.cfg.default_unreachable_toleration_seconds,
            ) else {
                continue;
            };
            if elapsed_ms < delay.saturating_mul(1000) {
                continue;
            }
            self.evict_pod(p).await?;
        }
        Ok(())
    }

    async fn evict_pod(&self, p: &Pod) -> anyhow::Result<()> {
        let ns = p.namespace().unwrap_or_default();
        let name = p.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let conds = crate::common::pod::with_disruption_target(
            p,
            "DeletionByTaintManager",
            "Taint manager: deleting due to NoExecute taint",
        );
        let patch = json!({"status": {"conditions": conds}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
        tracing::info!(namespace = %ns, pod = %name, "evicting pod from a node with NoExecute taints");
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
