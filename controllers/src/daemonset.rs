//! DaemonSet controller: one pod on every node the template fits (nodeSelector, required
//! node affinity, taints against the template's tolerations plus the ones upstream adds to
//! every daemon pod), pinned to its node with a `metadata.name` node affinity for the
//! scheduler to bind, rolled out through ControllerRevisions within maxUnavailable/maxSurge
//! (RollingUpdate) or on deletion (OnDelete), with upstream's status counters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::common::pod::{is_pod_available, is_pod_ready, is_terminal, is_terminating};
use crate::common::revision::{self, POD_REVISION_LABEL};
use crate::common::taint::tolerates;
use crate::common::{
    claim, controller_ref, is_not_found, key_of, status_differs, EventRecorder, Expectations,
    Harness, Informer, LabelMatcher, Result,
};
use crate::replicaset::api_message;
use crate::{ControllerContext, ControllerFuture};

/// Deprecated label upstream still puts on daemon pods: the DaemonSet's generation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";

const NAME: &str = "daemonset-controller";

/// Tolerations every daemon pod gets (upstream's `AddOrUpdateDaemonPodTolerations`):
/// key, effect.
const DEFAULT_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

/// Starts the DaemonSet controller.
pub fn start(ctx: ControllerContext) -> ControllerFuture {
    Box::pin(run(ctx))
}

struct Ctx {
    cc: ControllerContext,
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    revisions: Informer<ControllerRevision>,
    expectations: Expectations,
    events: EventRecorder,
}

async fn run(cc: ControllerContext) -> anyhow::Result<()> {
    let sets = cc.informers.get::<DaemonSet>();
    let pods = cc.informers.get::<Pod>();
    let seen_pods = pods.seen_revision();
    let nodes = cc.informers.get::<Node>();
    let revisions = cc.informers.get::<ControllerRevision>();
    let store = sets.store();
    let harness = Harness::new(NAME, &sets, &cc.shutdown)
        .owns(&pods)
        .owns(&revisions)
        .watches(&nodes, move |_: &Node| all_sets(&store))
        .resync_every(Duration::from_secs(30));
    tokio::select! {
        _ = cc.shutdown.cancelled() => return Ok(()),
        _ = nodes.wait_ready() => {}
    }
    let ctx = Arc::new(Ctx {
        events: EventRecorder::new(cc.client.clone(), NAME),
        cc,
        pods,
        nodes,
        revisions,
        expectations: Expectations::tracking(seen_pods),
    });
    harness.run(reconcile, ctx).await;
    Ok(())
}

fn all_sets(store: &Store<DaemonSet>) -> Vec<ObjectRef<DaemonSet>> {
    store
        .state()
        .iter()
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

/// The template's tolerations plus the daemon defaults (and network-unavailable for
/// host-network pods).
pub fn daemon_tolerations(spec: Option<&PodSpec>) -> Vec<Toleration> {
    let mut tols = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    let extra = host_network.then_some(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    for (key, effect) in DEFAULT_TOLERATIONS.iter().copied().chain(extra) {
        // Upstream replaces a toleration with the same key and effect.
        tols.retain(|t| !(t.key.as_deref() == Some(key) && t.effect.as_deref() == Some(effect)));
        tols.push(Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Toleration::default()
        });
    }
    tols
}

/// The required node affinity of a daemon pod for `node`: its one term selects the node by
/// name (any other required terms are replaced, as upstream does).
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let mut affinity = affinity.unwrap_or_default();
    let mut na = affinity.node_affinity.take().unwrap_or_default();
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            match_expressions: None,
        }],
    });
    affinity.node_affinity = Some(na);
    affinity
}

/// The node a daemon pod is bound or pinned to.
pub fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(n.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|r| {
            let values = r.values.as_deref().unwrap_or(&[]);
            (r.key == "metadata.name" && r.operator == "In" && values.len() == 1)
                .then(|| values[0].clone())
        })
    })
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (
            value.and_then(|v| number(v)),
            values.first().and_then(|b| number(b)),
        ) {
            (Some(v), Some(b)) => (r.operator == "Gt" && v > b) || (r.operator == "Lt" && v < b),
            _ => false,
        },
        _ => false,
    }
}

/// Whether `node` passes the template's nodeSelector and required node affinity.
pub fn fits_node(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.labels();
    if !spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let Some(required) = required else {
        return true;
    };
    let name = node.name_any();
    required.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
        let fields = t.match_fields.as_deref().unwrap_or(&[]);
        (!exprs.is_empty() || !fields.is_empty())
            && exprs
                .iter()
                .all(|r| requirement_matches(r, labels.get(&r.key)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
    })
}

/// Upstream's `NodeShouldRunDaemonPod`: (should run a new pod, may keep a running one).
pub fn should_run(template: &PodTemplateSpec, node: &Node) -> (bool, bool) {
    let Some(spec) = template.spec.as_ref() else {
        return (false, false);
    };
    if let Some(n) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        if *n != node.name_any() {
            return (false, false);
        }
    }
    if !fits_node(spec, node) {
        return (false, false);
    }
    let tols = daemon_tolerations(Some(spec));
    let taints: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    let untolerated = |effect: &str| {
        taints
            .iter()
            .filter(|t| t.effect == effect)
            .any(|t| !tols.iter().any(|tol| tolerates(tol, t)))
    };
    if untolerated("NoExecute") {
        return (false, false);
    }
    (!untolerated("NoSchedule"), true)
}

/// A percentage or count of `total`, rounded up (upstream's GetScaledValueFromIntOrPercent).
fn scaled(v: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match v {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(p) => ((p * i64::from(total) + 99) / 100) as i32,
                None => default,
            }
        }
    }
}

struct Daemon<'a> {
    ds: &'a DaemonSet,
    spec: &'a DaemonSetSpec,
    key: String,
    hash: String,
    min_ready: i32,
    now: Timestamp,
}

impl Daemon<'_> {
    fn updated(&self, p: &Pod) -> bool {
        p.labels().get(POD_REVISION_LABEL) == Some(&self.hash)
    }
    fn available(&self, p: &Pod) -> bool {
        is_pod_available(p, self.min_ready, self.now)
    }
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let ns = ds.namespace().unwrap_or_default();
    let key = key_of(&*ds);
    let matcher = LabelMatcher::new(Some(&spec.selector))?;
    let all = ctx.pods.list_namespaced(&ns);
    if !ctx
        .expectations
        .satisfied_by(&key, &all, |p| !is_terminating(p))
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pod_api: Api<Pod> = Api::namespaced(ctx.cc.client.clone(), &ns);
    let owned = claim(&pod_api, &*ds, &matcher, all).await?;

    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.cc.client.clone(), &ns);
    let status = ds.status.clone().unwrap_or_default();
    let history = revision::sync(
        &rev_api,
        &*ds,
        &matcher,
        &spec.template,
        status.collision_count.unwrap_or(0),
        ctx.revisions.list_namespaced(&ns),
    )
    .await?;
    let d = Daemon {
        ds: &ds,
        spec,
        key,
        hash: revision::hash_of(&history.update),
        min_ready: spec.min_ready_seconds.unwrap_or(0),
        now: ctx.cc.clock.now(),
    };

    // Pods per node (bound or pinned), oldest first.
    let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
    let mut nodeless = Vec::new();
    for p in &owned {
        match target_node(p) {
            Some(n) => by_node.entry(n).or_default().push(p.clone()),
            None => nodeless.push(p.clone()),
        }
    }
    for pods in by_node.values_mut() {
        pods.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    }
    let nodes = ctx.nodes.store().state();
    let surge = rolling_surge(&d, nodes.len() as i32);

    let mut create_on: Vec<String> = Vec::new();
    let mut delete: Vec<Arc<Pod>> = nodeless;
    for node in &nodes {
        let name = node.name_any();
        let (run, keep) = should_run(&spec.template, node);
        let pods: Vec<Arc<Pod>> = by_node
            .get(&name)
            .map(|v| v.iter().filter(|p| !is_terminating(p)).cloned().collect())
            .unwrap_or_default();
        if run && pods.is_empty() {
            create_on.push(name);
        } else if keep && !pods.is_empty() {
            // Failed pods are replaced; duplicates go (the oldest stays; with surge, the
            // oldest old and oldest updated pods stay).
            let mut kept_old = false;
            let mut kept_new = false;
            for p in &pods {
                if is_terminal(p) {
                    ctx.events.warning(
                        &*ds,
                        "FailedDaemonPod",
                        format!(
                            "Found failed daemon pod {ns}/{} on node {name}, will try to kill it",
                            p.name_any()
                        ),
                    );
                    delete.push(p.clone());
                    continue;
                }
                let slot = if surge > 0 && d.updated(p) {
                    &mut kept_new
                } else {
                    &mut kept_old
                };
                if *slot {
                    delete.push(p.clone());
                } else {
                    *slot = true;
                }
            }
        } else if !keep {
            delete.extend(pods);
        }
    }
    // Pods pinned to nodes that no longer exist.
    let known: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    for (node, pods) in &by_node {
        if !known.contains(node) {
            delete.extend(
                pods.iter()
                    .filter(|p| !is_terminating(p))
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
                    .cloned(),
            );
        }
    }
    sync_nodes(&d, &create_on, &delete, &pod_api, &ctx).await?;

    let on_delete = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        == Some("OnDelete");
    if create_on.is_empty() && delete.is_empty() && !on_delete {
        let desired = nodes
            .iter()
            .filter(|n| should_run(&spec.template, n).0)
            .count() as i32;
        let (deletes, creates) = rolling_update(&d, &by_node, &known, desired);
        sync_nodes(&d, &creates, &deletes, &pod_api, &ctx).await?;
    }

    let hashes: HashSet<&String> = owned
        .iter()
        .filter_map(|p| p.labels().get(POD_REVISION_LABEL))
        .collect();
    let live_revisions: HashSet<String> = history
        .revisions
        .iter()
        .filter(|r| hashes.contains(&revision::hash_of(r)))
        .map(|r| r.name_any())
        .collect();
    revision::truncate(
        &rev_api,
        &history,
        &live_revisions,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    let new_status = compute_status(&d, &nodes, &by_node, history.collision_count);
    let old_status = serde_json::to_value(&ds.status).unwrap_or_default();
    if status_differs(&old_status, &new_status) {
        let api: Api<DaemonSet> = Api::namespaced(ctx.cc.client.clone(), &ns);
        let body = json!({
            "metadata": {"resourceVersion": ds.resource_version()},
            "status": new_status,
        });
        api.patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await?;
    }
    if d.min_ready > 0
        && owned
            .iter()
            .any(|p| is_pod_ready(p) && !is_pod_available(p, d.min_ready, d.now))
    {
        return Ok(Action::requeue(Duration::from_secs(d.min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// maxSurge of a RollingUpdate DaemonSet (0 for OnDelete).
fn rolling_surge(d: &Daemon<'_>, total: i32) -> i32 {
    let ru = d
        .spec
        .update_strategy
        .as_ref()
        .filter(|u| u.type_.as_deref() != Some("OnDelete"))
        .and_then(|u| u.rolling_update.as_ref());
    scaled(ru.and_then(|r| r.max_surge.as_ref()), total, 0).max(0)
}

/// Upstream's `rollingUpdate`: old pods to delete and nodes to surge onto this round.
fn rolling_update(
    d: &Daemon<'_>,
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    known: &HashSet<String>,
    desired: i32,
) -> (Vec<Arc<Pod>>, Vec<String>) {
    let ru = d
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref());
    let max_surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired, 0).max(0);
    let mut max_unavailable =
        scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired, 1).max(0);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let mut deletes = Vec::new();
    let mut creates = Vec::new();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut candidates = Vec::new();
        for (node, pods) in by_node.iter().filter(|(n, _)| known.contains(*n)) {
            let live: Vec<&Arc<Pod>> = pods.iter().filter(|p| !is_terminating(p)).collect();
            let new: Vec<&&Arc<Pod>> = live.iter().filter(|p| d.updated(p)).collect();
            let old: Vec<&&Arc<Pod>> = live.iter().filter(|p| !d.updated(p)).collect();
            if new.len() > 1 || old.len() > 1 {
                unavailable += 1;
                continue;
            }
            match (old.first(), new.first()) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (None, Some(n)) => {
                    if !d.available(n) {
                        unavailable += 1;
                    }
                }
                (Some(o), None) => {
                    if !d.available(o) {
                        tracing::debug!(daemonset = %d.key, node = %node, "replacing unavailable old pod");
                        deletes.push((**o).clone());
                    } else if unavailable < max_unavailable {
                        candidates.push((**o).clone());
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).max(0) as usize;
        deletes.extend(candidates.into_iter().take(room));
        return (deletes, creates);
    }
    let mut surged = 0;
    let mut candidates = Vec::new();
    for (node, pods) in by_node.iter().filter(|(n, _)| known.contains(*n)) {
        let live: Vec<&Arc<Pod>> = pods.iter().filter(|p| !is_terminating(p)).collect();
        let new = live.iter().find(|p| d.updated(p));
        let old = live.iter().find(|p| !d.updated(p));
        match (old, new) {
            (None, _) => {}
            (Some(o), None) => {
                if !d.available(o) {
                    creates.push(node.clone());
                } else if surged < max_surge {
                    candidates.push(node.clone());
                }
            }
            (Some(o), Some(n)) => {
                if d.available(n) {
                    deletes.push((**o).clone());
                } else {
                    surged += 1;
                }
            }
        }
    }
    let room = (max_surge - surged).max(0) as usize;
    creates.extend(candidates.into_iter().take(room));
    (deletes, creates)
}

/// Creates a pod on each node of `create_on` and deletes `delete`.
async fn sync_nodes(
    d: &Daemon<'_>,
    create_on: &[String],
    delete: &[Arc<Pod>],
    api: &Api<Pod>,
    ctx: &Ctx,
) -> Result<()> {
    let ns = d.ds.namespace().unwrap_or_default();
    let generation = d.ds.metadata.generation.unwrap_or(0).to_string();
    let mut first_err = None;
    for node in create_on {
        let mut pod = crate::common::pod::pod_from_template(
            &d.spec.template,
            &ns,
            controller_ref(d.ds),
            None,
        );
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(POD_REVISION_LABEL.into(), d.hash.clone());
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.clone());
        if let Some(spec) = pod.spec.as_mut() {
            spec.tolerations = Some(daemon_tolerations(Some(&*spec)));
            spec.affinity = Some(pin_to_node(spec.affinity.take(), node));
        }
        match api.create(&PostParams::default(), &pod).await {
            Ok(p) => {
                ctx.expectations.expect_creation_at(
                    &d.key,
                    &p.name_any(),
                    p.metadata.resource_version.as_deref(),
                );
                ctx.events.normal(
                    d.ds,
                    "SuccessfulCreate",
                    format!("Created pod: {}", p.name_any()),
                );
            }
            Err(e) => {
                ctx.events.warning(
                    d.ds,
                    "FailedCreate",
                    format!("Error creating: {}", api_message(&e)),
                );
                first_err.get_or_insert(e);
            }
        }
    }
    for p in delete {
        let uid = p.uid();
        if let Some(u) = &uid {
            ctx.expectations.expect_deletion(&d.key, u);
        }
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&p.name_any(), &dp).await {
            Ok(_) => ctx.events.normal(
                d.ds,
                "SuccessfulDelete",
                format!("Deleted pod: {}", p.name_any()),
            ),
            Err(e) if is_not_found(&e) => {}
            Err(e) => {
                if let Some(u) = &uid {
                    ctx.expectations.deletion_failed(&d.key, u);
                }
                ctx.events.warning(
                    d.ds,
                    "FailedDelete",
                    format!("Error deleting: {}", api_message(&e)),
                );
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// The counters upstream's `updateDaemonSetStatus` writes.
fn compute_status(
    d: &Daemon<'_>,
    nodes: &[Arc<Node>],
    by_node: &BTreeMap<String, Vec<Arc<Pod>>>,
    collision_count: i32,
) -> serde_json::Value {
    let (mut desired, mut scheduled, mut misscheduled) = (0, 0, 0);
    let (mut ready, mut available, mut updated) = (0, 0, 0);
    let empty = Vec::new();
    let per_node: HashMap<&str, &Vec<Arc<Pod>>> =
        by_node.iter().map(|(k, v)| (k.as_str(), v)).collect();
    for node in nodes {
        let name = node.name_any();
        let (run, _) = should_run(&d.spec.template, node);
        let pods: Vec<&Arc<Pod>> = per_node
            .get(name.as_str())
            .copied()
            .unwrap_or(&empty)
            .iter()
            .filter(|p| !is_terminating(p))
            .collect();
        if run {
            desired += 1;
            if let Some(p) = pods.first() {
                scheduled += 1;
                if is_pod_ready(p) {
                    ready += 1;
                    if d.available(p) {
                        available += 1;
                    }
                }
                if pods.iter().any(|p| d.updated(p)) {
                    updated += 1;
                }
            }
        } else if !pods.is_empty() {
            misscheduled += 1;
        }
    }
    json!({
        "observedGeneration": d.ds.metadata.generation.unwrap_or(0),
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": misscheduled,
        "numberReady": ready,
        "updatedNumberScheduled": updated,
        "numberAvailable": available,
        "numberUnavailable": (desired - available).max(0),
        "collisionCount": collision_count,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node(labels: serde_json::Value, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "labels": labels},
            "spec": {"taints": taints}
        }))
        .unwrap()
    }

    fn template(spec: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(json!({"spec": spec})).unwrap()
    }

    #[test]
    fn daemon_pods_tolerate_node_conditions_but_not_other_taints() {
        let t = template(json!({"containers": [{"name": "c"}]}));
        let n = node(
            json!({}),
            json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
        );
        assert_eq!(should_run(&t, &n), (true, true));
        let n = node(
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        assert_eq!(should_run(&t, &n), (true, true));
        let n = node(
            json!({}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
        );
        assert_eq!(should_run(&t, &n), (false, true));
        let n = node(
            json!({}),
            json!([{"key": "dedicated", "value": "db", "effect": "NoExecute"}]),
        );
        assert_eq!(should_run(&t, &n), (false, false));
        let t = template(json!({"containers": [{"name": "c"}],
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db"}]}));
        assert_eq!(should_run(&t, &n), (true, true));
    }

    #[test]
    fn selectors_and_affinity_pick_nodes() {
        let n = node(json!({"disk": "ssd", "zone": "a"}), json!(null));
        let t = template(json!({"containers": [], "nodeSelector": {"disk": "ssd"}}));
        assert!(should_run(&t, &n).0);
        let t = template(json!({"containers": [], "nodeSelector": {"disk": "hdd"}}));
        assert!(!should_run(&t, &n).0);
        let t = template(json!({"containers": [], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}
        ]}}}}));
        assert!(should_run(&t, &n).0);
    }

    #[test]
    fn pinned_pods_name_their_node() {
        let a = pin_to_node(None, "n7");
        let p = Pod {
            spec: Some(PodSpec {
                affinity: Some(a),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        assert_eq!(target_node(&p).as_deref(), Some("n7"));
        assert_eq!(scaled(Some(&IntOrString::String("25%".into())), 10, 1), 3);
        assert_eq!(scaled(None, 10, 1), 1);
    }
}
