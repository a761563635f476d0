//! ReplicaSet and ReplicationController controllers: keep `spec.replicas` active pods that
//! match the selector, adopting orphans and releasing pods that stopped matching, and report
//! replicas / fullyLabeledReplicas / readyReplicas / availableReplicas / observedGeneration
//! as upstream's `ReplicaSetController` does (the RC controller is the same loop).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde_json::json;

use crate::common::batch::slow_start_batch;
use crate::common::informer::Cached;
use crate::common::pod::{is_pod_active, is_pod_available, is_pod_ready, pod_from_template};
use crate::common::{
    claim, controller_ref, key_of, owner, EventRecorder, Expectations, Harness, LabelMatcher,
    Result,
};
use crate::{ControllerContext, ControllerFuture};

/// Most pods one sync creates or deletes (upstream's BurstReplicas).
pub const BURST_REPLICAS: usize = 500;

/// What the controller needs to know about a ReplicaSet-like owner.
pub trait ReplicaOwner:
    Cached + Serialize + Resource<Scope = k8s_openapi::NamespaceResourceScope>
{
    /// `reportingController` of its events.
    const CONTROLLER: &'static str;
    /// Desired replicas (default 1).
    fn replicas(&self) -> i32;
    /// spec.minReadySeconds.
    fn min_ready_seconds(&self) -> i32;
    /// The selector.
    fn matcher(&self) -> Result<LabelMatcher>;
    /// The pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The current status as JSON (to compare with the computed one).
    fn status_json(&self) -> serde_json::Value;
}

impl ReplicaOwner for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn matcher(&self) -> Result<LabelMatcher> {
        LabelMatcher::new(self.spec.as_ref().map(|s| &s.selector))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.status).unwrap_or_default()
    }
}

impl ReplicaOwner for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";
    fn replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn matcher(&self) -> Result<LabelMatcher> {
        Ok(LabelMatcher::from_map(
            self.spec.as_ref().and_then(|s| s.selector.as_ref()),
        ))
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn status_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.status).unwrap_or_default()
    }
}

/// Starts the ReplicaSet controller.
pub fn start_replicaset(ctx: ControllerContext) -> ControllerFuture {
    Box::pin(run::<ReplicaSet>(ctx, "replicaset-controller"))
}

/// Starts the ReplicationController controller.
pub fn start_replicationcontroller(ctx: ControllerContext) -> ControllerFuture {
    Box::pin(run::<ReplicationController>(
        ctx,
        "replicationcontroller-controller",
    ))
}

struct Ctx<K: Cached> {
    cc: ControllerContext,
    _kind: std::marker::PhantomData<fn() -> K>,
    pods: crate::common::Informer<Pod>,
    expectations: Expectations,
    events: EventRecorder,
}

async fn run<K: ReplicaOwner>(cc: ControllerContext, name: &'static str) -> anyhow::Result<()> {
    let owners = cc.informers.get::<K>();
    let pods = cc.informers.get::<Pod>();
    let seen_pods = pods.seen_revision();
    let store = owners.store();
    let harness = Harness::new(name, &owners, &cc.shutdown)
        .watches(&pods, move |pod: &Pod| owners_of(&store, pod))
        .resync_every(Duration::from_secs(30));
    let ctx = Arc::new(Ctx {
        events: EventRecorder::new(cc.client.clone(), K::CONTROLLER),
        cc,
        _kind: std::marker::PhantomData,
        pods,
        expectations: Expectations::tracking(seen_pods),
    });
    harness.run(reconcile::<K>, ctx).await;
    Ok(())
}

/// The owner a pod event concerns: its controller, or for an orphan every owner in its
/// namespace whose selector matches (it may adopt it).
fn owners_of<K: ReplicaOwner>(
    store: &kube::runtime::reflector::Store<K>,
    pod: &Pod,
) -> Vec<ObjectRef<K>> {
    if let Some(r) = owner::controller_of(&pod.metadata) {
        return owner::owner_key::<K>(&pod.metadata)
            .filter(|_| r.kind == K::kind(&()))
            .into_iter()
            .collect();
    }
    let ns = pod.namespace();
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == ns)
        .filter(|o| o.matcher().is_ok_and(|m| m.matches(pod.labels())))
        .map(|o| ObjectRef::from_obj(&**o))
        .collect()
}

async fn reconcile<K: ReplicaOwner>(rs: Arc<K>, ctx: Arc<Ctx<K>>) -> Result<Action> {
    let key = key_of(&*rs);
    let ns = rs.namespace().unwrap_or_default();
    let matcher = rs.matcher()?;
    let all: Vec<Arc<Pod>> = ctx.pods.list_namespaced(&ns);
    let active: Vec<Arc<Pod>> = all.iter().filter(|p| is_pod_active(p)).cloned().collect();

    let satisfied = ctx.expectations.satisfied_by(&key, &all, is_pod_active);

    let pod_api: Api<Pod> = Api::namespaced(ctx.cc.client.clone(), &ns);
    // A fresh look at the owner before adopting, as upstream's canAdopt does.
    let fresh = if rs.meta().deletion_timestamp.is_none()
        && active
            .iter()
            .any(|p| owner::controller_of(&p.metadata).is_none())
    {
        let api: Api<K> = Api::namespaced(ctx.cc.client.clone(), &ns);
        match api.get_opt(&rs.name_any()).await? {
            Some(f) if f.uid() == rs.uid() => Arc::new(f),
            _ => return Ok(Action::await_change()),
        }
    } else {
        rs.clone()
    };
    let owned = claim(&pod_api, &*fresh, &matcher, active).await?;

    let mut failure: Option<String> = None;
    if satisfied && rs.meta().deletion_timestamp.is_none() {
        failure = manage_replicas(&rs, &key, &owned, &pod_api, &ctx).await?;
    }

    let now = ctx.cc.clock.now();
    let status = compute_status(&*rs, &owned, failure.as_deref(), now);
    if status != rs.status_json() {
        let api: Api<K> = Api::namespaced(ctx.cc.client.clone(), &ns);
        let mut body = json!({"status": status});
        body["metadata"] = json!({"resourceVersion": rs.resource_version()});
        api.patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await?;
    }
    // Pods turning available after minReadySeconds produce no event: look again then.
    let mrs = rs.min_ready_seconds();
    if mrs > 0
        && owned
            .iter()
            .any(|p| is_pod_ready(p) && !is_pod_available(p, mrs, now))
    {
        return Ok(Action::requeue(Duration::from_secs(mrs as u64)));
    }
    Ok(Action::await_change())
}

/// Creates or deletes pods towards `replicas`; returns the create error worth a
/// ReplicaFailure condition.
async fn manage_replicas<K: ReplicaOwner>(
    rs: &Arc<K>,
    key: &str,
    owned: &[Arc<Pod>],
    pod_api: &Api<Pod>,
    ctx: &Ctx<K>,
) -> Result<Option<String>> {
    let want = rs.replicas().max(0) as usize;
    let have = owned.len();
    if have < want {
        let Some(template) = rs.template() else {
            return Ok(None);
        };
        let n = (want - have).min(BURST_REPLICAS);
        let ns = rs.namespace().unwrap_or_default();
        let oref = controller_ref(&**rs);
        let (_, err) = slow_start_batch(n, 1, |_| {
            let pod = pod_from_template(template, &ns, oref.clone(), None);
            async move {
                match pod_api.create(&PostParams::default(), &pod).await {
                    Ok(p) => {
                        ctx.expectations.expect_creation_at(
                            key,
                            &p.name_any(),
                            p.metadata.resource_version.as_deref(),
                        );
                        ctx.events.normal(
                            &**rs,
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name_any()),
                        );
                        Ok(())
                    }
                    Err(e) => {
                        ctx.events.warning(
                            &**rs,
                            "FailedCreate",
                            format!("Error creating: {}", api_message(&e)),
                        );
                        Err(e)
                    }
                }
            }
        })
        .await;
        if let Some(e) = err {
            // A namespace being deleted refuses new pods; that is not a failure of ours.
            return Ok(Some(api_message(&e)));
        }
    } else if have > want {
        let n = (have - want).min(BURST_REPLICAS);
        let victims = pods_to_delete(
            owned,
            &ctx.pods
                .list_namespaced(&rs.namespace().unwrap_or_default()),
            n,
        );
        for p in &victims {
            if let Some(uid) = p.uid() {
                ctx.expectations.expect_deletion(key, &uid);
            }
        }
        let deletes = victims.iter().map(|p| async move {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: p.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pod_api.delete(&p.name_any(), &dp).await {
                Ok(_) => {
                    ctx.events.normal(
                        &**rs,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", p.name_any()),
                    );
                    Ok(())
                }
                Err(e) if crate::common::is_not_found(&e) => Ok(()),
                Err(e) => {
                    if let Some(uid) = p.uid() {
                        ctx.expectations.deletion_failed(key, &uid);
                    }
                    ctx.events.warning(
                        &**rs,
                        "FailedDelete",
                        format!("Error deleting: {}", api_message(&e)),
                    );
                    Err(e)
                }
            }
        });
        for r in futures::future::join_all(deletes).await {
            r?;
        }
    }
    Ok(None)
}

/// The message of an API error (what upstream puts in events and conditions).
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        e => e.to_string(),
    }
}

/// Picks `n` pods to delete, the cheapest first (upstream's `getPodsToDelete` with
/// `ActivePodsWithRanks`): unscheduled, pending, not ready, crowded on their node (ranked
/// by related pods sharing it), ready the shortest time, most restarts, newest.
pub fn pods_to_delete(owned: &[Arc<Pod>], related: &[Arc<Pod>], n: usize) -> Vec<Arc<Pod>> {
    let mut per_node: HashMap<&str, i32> = HashMap::new();
    for p in related.iter().filter(|p| is_pod_active(p)) {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let mut ranked: Vec<(DeletionRank, Arc<Pod>)> = owned
        .iter()
        .map(|p| (DeletionRank::of(p, &per_node), p.clone()))
        .collect();
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    ranked.into_iter().take(n).map(|(_, p)| p).collect()
}

/// Sort key: smaller = deleted first.
#[derive(PartialEq, Eq, PartialOrd, Ord, Debug)]
struct DeletionRank {
    assigned: bool,
    phase: u8,
    ready: bool,
    /// Negated co-located count: more pods on the same node go first.
    crowding: i32,
    /// Negated ready time: ready more recently goes first.
    ready_since: std::cmp::Reverse<Timestamp>,
    restarts: std::cmp::Reverse<i32>,
    created: std::cmp::Reverse<Timestamp>,
}

impl DeletionRank {
    fn of(p: &Pod, per_node: &HashMap<&str, i32>) -> Self {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty());
        let phase = match crate::common::pod::phase(p) {
            "Pending" => 0,
            "Unknown" => 1,
            "Running" => 2,
            _ => 0,
        };
        let ready_since = crate::common::pod::ready_since(p);
        let restarts = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).max().unwrap_or(0))
            .unwrap_or(0);
        DeletionRank {
            assigned: node.is_some(),
            phase,
            ready: ready_since.is_some(),
            crowding: -node.and_then(|n| per_node.get(n)).copied().unwrap_or(0),
            ready_since: std::cmp::Reverse(ready_since.unwrap_or(Timestamp::UNIX_EPOCH)),
            restarts: std::cmp::Reverse(restarts),
            created: std::cmp::Reverse(
                p.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(Timestamp::UNIX_EPOCH),
            ),
        }
    }
}

/// The status upstream's `calculateStatus` writes.
fn compute_status<K: ReplicaOwner>(
    rs: &K,
    owned: &[Arc<Pod>],
    failure: Option<&str>,
    now: Timestamp,
) -> serde_json::Value {
    let template_labels: BTreeMap<String, String> = rs
        .template()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let fully_labeled = owned
        .iter()
        .filter(|p| {
            template_labels
                .iter()
                .all(|(k, v)| p.labels().get(k) == Some(v))
        })
        .count();
    let ready = owned.iter().filter(|p| is_pod_ready(p)).count();
    let available = owned
        .iter()
        .filter(|p| is_pod_available(p, rs.min_ready_seconds(), now))
        .count();
    let old = rs.status_json();
    let mut conditions: Vec<serde_json::Value> = old
        .get("conditions")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c["type"] == "ReplicaFailure");
    match failure {
        Some(msg) if !has_failure => conditions.push(json!({
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": msg,
            "lastTransitionTime": now.to_string(),
        })),
        None if has_failure => conditions.retain(|c| c["type"] != "ReplicaFailure"),
        _ => {}
    }
    let mut status = json!({
        "replicas": owned.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.meta().generation.unwrap_or(0),
    });
    if !conditions.is_empty() {
        status["conditions"] = json!(conditions);
    }
    // Zero counters may be absent in what the API returns: compare without them, but
    // send them (a merge patch leaves out what it omits).
    let (mut a, mut b) = (old, status.clone());
    normalize(&mut a);
    normalize(&mut b);
    if a == b {
        return rs.status_json();
    }
    status
}

fn normalize(v: &mut serde_json::Value) {
    if let Some(m) = v.as_object_mut() {
        m.retain(|k, v| !(v.is_null() || (k != "replicas" && v == &json!(0))));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.spec = Some(PodSpec {
            node_name: node.map(Into::into),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(Timestamp::UNIX_EPOCH)),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn deletes_unscheduled_then_pending_then_unready_then_crowded() {
        let owned = vec![
            pod("ready-alone", Some("n1"), "Running", true),
            pod("ready-crowded", Some("n2"), "Running", true),
            pod("unready", Some("n3"), "Running", false),
            pod("pending", Some("n3"), "Pending", false),
            pod("unscheduled", None, "Pending", false),
        ];
        let mut related = owned.clone();
        related.push(pod("other", Some("n2"), "Running", true));
        related.push(pod("other2", Some("n2"), "Running", true));
        let order: Vec<String> = pods_to_delete(&owned, &related, 5)
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "unready",
                "ready-crowded",
                "ready-alone"
            ]
        );
    }
}
