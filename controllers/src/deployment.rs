//! Deployment controller: rolls a Deployment's pod template out through ReplicaSets
//! (RollingUpdate within maxSurge/maxUnavailable, or Recreate), keeps revision annotations
//! and the revision history, honours pause and progressDeadlineSeconds, and writes the
//! status and the Available/Progressing conditions with upstream's reasons and messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use crate::common::pod::is_pod_active;
use crate::common::{
    claim, controller_ref, owner, EventRecorder, Harness, Informer, LabelMatcher, Result,
};
use crate::replicaset::api_message;
use crate::{ControllerContext, ControllerFuture};

/// Label that ties a ReplicaSet and its pods to one template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Revision annotation on Deployments and ReplicaSets.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet had (after a rollback).
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Replicas the Deployment wanted when it last scaled this ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// desired + maxSurge at that time.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

const SKIP_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Starts the Deployment controller.
pub fn start(ctx: ControllerContext) -> ControllerFuture {
    Box::pin(run(ctx))
}

struct Ctx {
    cc: ControllerContext,
    replicasets: Informer<ReplicaSet>,
    pods: Informer<Pod>,
    events: EventRecorder,
}

async fn run(cc: ControllerContext) -> anyhow::Result<()> {
    let deployments = cc.informers.get::<Deployment>();
    let replicasets = cc.informers.get::<ReplicaSet>();
    let pods = cc.informers.get::<Pod>();
    let dstore = deployments.store();
    let rs_store = replicasets.store();
    let harness = Harness::new("deployment-controller", &deployments, &cc.shutdown)
        .watches(&replicasets, move |rs: &ReplicaSet| owners_of(&dstore, rs))
        .watches(&pods, move |pod: &Pod| {
            // Recreate waits for old pods to go: a pod's ReplicaSet's Deployment.
            owner::owner_key::<ReplicaSet>(&pod.metadata)
                .and_then(|k| rs_store.get(&k))
                .and_then(|rs| owner::owner_key::<Deployment>(&rs.metadata))
                .into_iter()
                .collect()
        })
        .resync_every(Duration::from_secs(30));
    let ctx = Arc::new(Ctx {
        events: EventRecorder::new(cc.client.clone(), "deployment-controller"),
        cc,
        replicasets,
        pods,
    });
    harness.run(reconcile, ctx).await;
    Ok(())
}

fn owners_of(store: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    if owner::controller_of(&rs.metadata).is_some() {
        return owner::owner_key::<Deployment>(&rs.metadata)
            .into_iter()
            .collect();
    }
    let ns = rs.namespace();
    store
        .state()
        .iter()
        .filter(|d| d.namespace() == ns)
        .filter(|d| {
            LabelMatcher::new(d.spec.as_ref().map(|s| &s.selector))
                .is_ok_and(|m| m.matches(rs.labels()))
        })
        .map(|d| ObjectRef::from_obj(&**d))
        .collect()
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_replicas(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

/// Available pods counted for a ReplicaSet: never more than it is asked to keep, so a
/// scale-down counts at once, before the ReplicaSet reports it.
fn available_of(rs: &ReplicaSet) -> i32 {
    let a = rs
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    a.min(replicas_of(rs))
}

fn revision_of(meta: &kube::api::ObjectMeta) -> i64 {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Resolves an IntOrString against `total` (percentages round up or down).
pub fn resolve(v: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let s = match v {
        Some(IntOrString::Int(i)) => return *i,
        Some(IntOrString::String(s)) => s.as_str(),
        None => default,
    };
    let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
        return s.parse().unwrap_or(0);
    };
    let x = p * i64::from(total);
    (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
}

/// (maxSurge, maxUnavailable) for `d` (upstream's ResolveFenceposts).
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ru = spec
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), "25%", desired, true);
    let unavailable = resolve(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        desired,
        false,
    );
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// The template with the hash label removed, for comparing ReplicaSets with the Deployment.
fn template_key(t: Option<&PodTemplateSpec>) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or_default();
    if let Some(labels) = v
        .pointer_mut("/metadata/labels")
        .and_then(|l| l.as_object_mut())
    {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            if let Some(m) = v.pointer_mut("/metadata").and_then(|m| m.as_object_mut()) {
                m.remove("labels");
            }
        }
    }
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        m.retain(|_, x| !x.is_null());
    }
    v
}

/// The pod-template-hash of a template (FNV-1a over its JSON and the collision count,
/// rendered with upstream's safe alphabet so it never looks like a word).
pub fn template_hash(t: Option<&PodTemplateSpec>, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |b: &[u8]| {
        for x in b {
            h ^= u32::from(*x);
            h = h.wrapping_mul(0x01000193);
        }
    };
    feed(template_key(t).to_string().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHA[usize::from(b) % ALPHA.len()] as char)
        .collect()
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = d.namespace().unwrap_or_default();
    let Some(spec) = d.spec.clone() else {
        return Ok(Action::await_change());
    };
    let matcher = LabelMatcher::new(Some(&spec.selector))?;
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.cc.client.clone(), &ns);
    let candidates = ctx.replicasets.list_namespaced(&ns);
    let owned = claim(&rs_api, &*d, &matcher, candidates).await?;
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let want = template_key(Some(&spec.template));
    let mut new_rs: Option<ReplicaSet> = owned
        .iter()
        .filter(|rs| template_key(rs.spec.as_ref().and_then(|s| s.template.as_ref())) == want)
        .min_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .map(|rs| (**rs).clone());
    let mut olds: Vec<ReplicaSet> = owned
        .iter()
        .filter(|rs| Some(rs.uid()) != new_rs.as_ref().map(|n| n.uid()))
        .map(|rs| (**rs).clone())
        .collect();
    olds.sort_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));

    let desired = spec.replicas.unwrap_or(1);
    let (surge, unavailable) = fenceposts(&d);
    let paused = spec.paused.unwrap_or(false);
    let mut progress: Option<(&'static str, String)> = None;

    if !paused {
        if new_rs.is_none()
            && !(is_recreate(&d)
                && olds
                    .iter()
                    .any(|r| replicas_of(r) > 0 || old_pods_running(&ctx, r)))
        {
            let (rs, created) = create_new_rs(&d, &olds, &rs_api, &ctx, desired, surge).await?;
            progress = Some(if created {
                (
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{}\"", rs.name_any()),
                )
            } else {
                (
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{}\"", rs.name_any()),
                )
            });
            new_rs = Some(rs);
        } else if let Some(rs) = &new_rs {
            new_rs = Some(sync_revision(&d, rs, &olds, &rs_api, desired, surge).await?);
        }
        if is_recreate(&d) {
            rollout_recreate(&d, &mut new_rs, &mut olds, &rs_api, &ctx, desired).await?;
        } else {
            rollout_rolling(
                &d,
                &mut new_rs,
                &mut olds,
                &rs_api,
                &ctx,
                desired,
                surge,
                unavailable,
            )
            .await?;
        }
    } else if let Some(rs) = &new_rs {
        // Paused: only scaling happens, to the full desired count.
        if replicas_of(rs) != desired && olds.iter().all(|o| replicas_of(o) == 0) {
            let rs = scale(&d, rs, desired, &rs_api, &ctx, desired, surge).await?;
            new_rs = Some(rs);
        }
    }

    let complete = new_rs.as_ref().is_some_and(|n| {
        replicas_of(n) == desired
            && status_replicas(n) == desired
            && available_of(n) == desired
            && olds.iter().all(|o| status_replicas(o) == 0)
    });
    if complete && !paused {
        cleanup_history(&d, &olds, &rs_api).await?;
    }
    if let Some(rs) = &new_rs {
        let rev = revision_of(&rs.metadata);
        if rev > 0 && revision_of(&d.metadata) != rev {
            let dapi: Api<Deployment> = Api::namespaced(ctx.cc.client.clone(), &ns);
            let patch = json!({"metadata": {"annotations": {REVISION: rev.to_string()}}});
            dapi.patch(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            return Ok(Action::requeue(Duration::from_millis(10)));
        }
    }
    let requeue = write_status(
        &d,
        new_rs.as_ref(),
        &olds,
        &ctx,
        desired,
        unavailable,
        paused,
        complete,
        progress,
    )
    .await?;
    Ok(requeue)
}

fn old_pods_running(ctx: &Ctx, rs: &ReplicaSet) -> bool {
    let uid = rs.uid().unwrap_or_default();
    ctx.pods
        .list_namespaced(&rs.namespace().unwrap_or_default())
        .iter()
        .any(|p| {
            owner::is_controlled_by(&p.metadata, &uid)
                && (is_pod_active(p) || p.metadata.deletion_timestamp.is_some())
        })
}

fn max_revision(olds: &[ReplicaSet]) -> i64 {
    olds.iter()
        .map(|r| revision_of(&r.metadata))
        .max()
        .unwrap_or(0)
}

/// Annotations a ReplicaSet of `d` carries: the Deployment's own (minus the skip list),
/// revision and the replica counts.
fn rs_annotations(
    d: &Deployment,
    revision: i64,
    history: Option<String>,
    desired: i32,
    surge: i32,
) -> BTreeMap<String, String> {
    let mut a: BTreeMap<String, String> = d
        .annotations()
        .iter()
        .filter(|(k, _)| !SKIP_ANNOTATIONS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    a.insert(REVISION.into(), revision.to_string());
    if let Some(h) = history {
        a.insert(REVISION_HISTORY.into(), h);
    }
    a.insert(DESIRED_REPLICAS.into(), desired.to_string());
    a.insert(MAX_REPLICAS.into(), (desired + surge).to_string());
    a
}

/// An existing ReplicaSet that matches the template again (a rollback) takes the next revision.
async fn sync_revision(
    d: &Deployment,
    rs: &ReplicaSet,
    olds: &[ReplicaSet],
    api: &Api<ReplicaSet>,
    desired: i32,
    surge: i32,
) -> Result<ReplicaSet> {
    let current = revision_of(&rs.metadata);
    let max_old = max_revision(olds);
    let revision = if current <= max_old {
        max_old + 1
    } else {
        current
    };
    let mut history = rs.annotations().get(REVISION_HISTORY).cloned();
    if revision != current && current > 0 {
        history = Some(match history {
            Some(h) if !h.is_empty() => format!("{h},{current}"),
            _ => current.to_string(),
        });
    }
    let want = rs_annotations(d, revision, history, desired, surge);
    let have = rs.annotations();
    // The replica-count annotations are kept by `scale`; here only revision and copies.
    let differs = want
        .iter()
        .filter(|(k, _)| k.as_str() != DESIRED_REPLICAS && k.as_str() != MAX_REPLICAS)
        .any(|(k, v)| have.get(k) != Some(v));
    if !differs {
        return Ok(rs.clone());
    }
    let patch = json!({"metadata": {"annotations": want}});
    Ok(api
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?)
}

async fn create_new_rs(
    d: &Deployment,
    olds: &[ReplicaSet],
    api: &Api<ReplicaSet>,
    ctx: &Ctx,
    desired: i32,
    surge: i32,
) -> Result<(ReplicaSet, bool)> {
    let spec = d.spec.clone().unwrap_or_default();
    let collision = d.status.as_ref().and_then(|s| s.collision_count);
    let hash = template_hash(Some(&spec.template), collision);
    let mut template = spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let mut selector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(POD_TEMPLATE_HASH.into(), hash.clone());
    let replicas = if is_recreate(d) {
        desired
    } else {
        let all: i32 = olds.iter().map(replicas_of).sum();
        (desired + surge - all).clamp(0, desired)
    };
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
    let name = format!("{}-{hash}", d.name_any());
    let rs: ReplicaSet = serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "namespace": d.namespace(),
            "labels": labels,
            "annotations": rs_annotations(d, max_revision(olds) + 1, None, desired, surge),
            "ownerReferences": [controller_ref(d)],
        },
        "spec": {
            "replicas": replicas,
            "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
            "selector": selector,
            "template": template,
        }
    }))
    .map_err(|e| crate::common::Error::Other(e.to_string()))?;
    match api.create(&PostParams::default(), &rs).await {
        Ok(created) => {
            if replicas > 0 {
                ctx.events.normal(
                    d,
                    "ScalingReplicaSet",
                    format!("Scaled up replica set {name} from 0 to {replicas}"),
                );
            }
            Ok((created, true))
        }
        Err(e) if crate::common::is_already_exists(&e) => {
            let existing = api.get(&name).await?;
            let same = owner::is_controlled_by(&existing.metadata, &d.uid().unwrap_or_default())
                && template_key(existing.spec.as_ref().and_then(|s| s.template.as_ref()))
                    == template_key(Some(&spec.template));
            if same {
                return Ok((existing, false));
            }
            // A hash collision: bump collisionCount and try again with another name.
            let dapi: Api<Deployment> =
                Api::namespaced(ctx.cc.client.clone(), &d.namespace().unwrap_or_default());
            let patch = json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
            dapi.patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
            Err(crate::common::Error::Other(format!(
                "hash collision on replica set {name}"
            )))
        }
        Err(e) => {
            ctx.events.warning(
                d,
                "FailedCreate",
                format!(
                    "Failed to create new replica set \"{name}\": {}",
                    api_message(&e)
                ),
            );
            Err(e.into())
        }
    }
}

/// Sets a ReplicaSet's replicas (and the replica annotations), with the upstream event.
async fn scale(
    d: &Deployment,
    rs: &ReplicaSet,
    to: i32,
    api: &Api<ReplicaSet>,
    ctx: &Ctx,
    desired: i32,
    surge: i32,
) -> Result<ReplicaSet> {
    let from = replicas_of(rs);
    let patch = json!({
        "metadata": {"annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: (desired + surge).to_string()}},
        "spec": {"replicas": to},
    });
    let updated = api
        .patch(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    if from != to {
        let dir = if to > from { "up" } else { "down" };
        ctx.events.normal(
            d,
            "ScalingReplicaSet",
            format!(
                "Scaled {dir} replica set {} from {from} to {to}",
                rs.name_any()
            ),
        );
    }
    Ok(updated)
}

#[allow(clippy::too_many_arguments)]
async fn rollout_rolling(
    d: &Deployment,
    new_rs: &mut Option<ReplicaSet>,
    olds: &mut [ReplicaSet],
    api: &Api<ReplicaSet>,
    ctx: &Ctx,
    desired: i32,
    surge: i32,
    max_unavailable: i32,
) -> Result<()> {
    let Some(new) = new_rs.clone() else {
        return Ok(());
    };
    let all_spec = |new: &ReplicaSet, olds: &[ReplicaSet]| {
        replicas_of(new) + olds.iter().map(replicas_of).sum::<i32>()
    };
    // Scale the new ReplicaSet up as far as maxSurge allows (or down to desired).
    let current = replicas_of(&new);
    let target = if current > desired {
        desired
    } else {
        let room = desired + surge - all_spec(&new, olds);
        current + room.clamp(0, desired - current)
    };
    let new = if target != current {
        scale(d, &new, target, api, ctx, desired, surge).await?
    } else {
        new
    };
    *new_rs = Some(new.clone());

    // Scale old ReplicaSets down as far as maxUnavailable allows.
    let old_count: i32 = olds.iter().map(replicas_of).sum();
    if old_count == 0 {
        return Ok(());
    }
    let min_available = desired - max_unavailable;
    let new_unavailable = replicas_of(&new) - available_of(&new);
    let mut max_scaled_down = all_spec(&new, olds) - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(());
    }
    // First the old pods that are not available anyway.
    for rs in olds.iter_mut() {
        if max_scaled_down <= 0 {
            break;
        }
        let unhealthy = replicas_of(rs) - available_of(rs);
        if unhealthy <= 0 {
            continue;
        }
        let down = unhealthy.min(max_scaled_down);
        let to = replicas_of(rs) - down;
        *rs = scale(d, rs, to, api, ctx, desired, surge).await?;
        max_scaled_down -= down;
    }
    // Then available ones, keeping minAvailable.
    let available: i32 = available_of(&new) + olds.iter().map(available_of).sum::<i32>();
    let mut budget = available - min_available;
    for rs in olds.iter_mut() {
        if budget <= 0 {
            break;
        }
        let r = replicas_of(rs);
        if r == 0 {
            continue;
        }
        let down = r.min(budget);
        *rs = scale(d, rs, r - down, api, ctx, desired, surge).await?;
        budget -= down;
    }
    Ok(())
}

async fn rollout_recreate(
    d: &Deployment,
    new_rs: &mut Option<ReplicaSet>,
    olds: &mut [ReplicaSet],
    api: &Api<ReplicaSet>,
    ctx: &Ctx,
    desired: i32,
) -> Result<()> {
    for rs in olds.iter_mut() {
        if replicas_of(rs) > 0 {
            *rs = scale(d, rs, 0, api, ctx, desired, 0).await?;
        }
    }
    if olds.iter().any(|r| old_pods_running(ctx, r)) {
        return Ok(());
    }
    if let Some(new) = new_rs.clone() {
        if replicas_of(&new) != desired {
            *new_rs = Some(scale(d, &new, desired, api, ctx, desired, 0).await?);
        }
    }
    Ok(())
}

/// Deletes the oldest fully scaled-down ReplicaSets beyond revisionHistoryLimit.
async fn cleanup_history(d: &Deployment, olds: &[ReplicaSet], api: &Api<ReplicaSet>) -> Result<()> {
    let limit = d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut dead: Vec<&ReplicaSet> = olds
        .iter()
        .filter(|r| {
            replicas_of(r) == 0
                && status_replicas(r) == 0
                && r.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if dead.len() <= limit {
        return Ok(());
    }
    dead.sort_by_key(|r| revision_of(&r.metadata));
    let n = dead.len() - limit;
    for rs in dead.into_iter().take(n) {
        match api
            .delete(&rs.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if crate::common::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn condition<'a>(conds: &'a [Value], type_: &str) -> Option<&'a Value> {
    conds.iter().find(|c| c["type"] == type_)
}

/// Sets a condition, keeping lastTransitionTime when the status does not change.
fn set_condition(
    conds: &mut Vec<Value>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
) {
    let transition = match condition(conds, type_) {
        Some(c) if c["status"] == status => c["lastTransitionTime"].clone(),
        _ => json!(now),
    };
    if let Some(c) = condition(conds, type_) {
        if c["status"] == status && c["reason"] == reason && c["message"] == message {
            return;
        }
    }
    conds.retain(|c| c["type"] != type_);
    conds.push(json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": transition,
    }));
}

#[allow(clippy::too_many_arguments)]
async fn write_status(
    d: &Deployment,
    new_rs: Option<&ReplicaSet>,
    olds: &[ReplicaSet],
    ctx: &Ctx,
    desired: i32,
    max_unavailable: i32,
    paused: bool,
    complete: bool,
    progress: Option<(&'static str, String)>,
) -> Result<Action> {
    let now_ts = ctx.cc.clock.now();
    let now = now_ts.to_string();
    let all: Vec<&ReplicaSet> = new_rs.into_iter().chain(olds.iter()).collect();
    let replicas: i32 = all.iter().map(|r| status_replicas(r)).sum();
    let updated = new_rs.map(status_replicas).unwrap_or(0);
    let ready: i32 = all
        .iter()
        .map(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        })
        .sum();
    let available: i32 = all
        .iter()
        .map(|r| {
            r.status
                .as_ref()
                .and_then(|s| s.available_replicas)
                .unwrap_or(0)
        })
        .sum();
    let old_status = serde_json::to_value(&d.status).unwrap_or_default();
    let mut conds: Vec<Value> = old_status
        .get("conditions")
        .and_then(|c| c.as_array())
        .cloned()
        .unwrap_or_default();

    if available >= desired - max_unavailable {
        set_condition(
            &mut conds,
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
            &now,
        );
    } else {
        set_condition(
            &mut conds,
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            &now,
        );
    }

    let mut requeue = Action::await_change();
    let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds);
    let prog = condition(&conds, "Progressing").cloned();
    let prog_reason = prog
        .as_ref()
        .and_then(|c| c["reason"].as_str().map(String::from));
    let new_name = new_rs.map(|r| r.name_any()).unwrap_or_default();
    if paused {
        if prog_reason.as_deref() != Some("DeploymentPaused") {
            set_condition(
                &mut conds,
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
                &now,
            );
        }
    } else if deadline.is_some() || prog.is_some() {
        if prog_reason.as_deref() == Some("DeploymentPaused") {
            set_condition(
                &mut conds,
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
                &now,
            );
        }
        let prev_updated = d
            .status
            .as_ref()
            .and_then(|s| s.updated_replicas)
            .unwrap_or(0);
        let prev_ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        let prev_available = d
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        let prev_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let moved = updated > prev_updated
            || ready > prev_ready
            || available > prev_available
            || replicas < prev_replicas;
        if complete {
            set_condition(
                &mut conds,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                &now,
            );
        } else if let Some((reason, msg)) = &progress {
            set_condition(&mut conds, "Progressing", "True", reason, msg, &now);
        } else if moved && new_rs.is_some() {
            // Progress refreshes lastUpdateTime even when the reason stays.
            conds.retain(|c| !(c["type"] == "Progressing" && c["reason"] == "ReplicaSetUpdated"));
            set_condition(
                &mut conds,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{new_name}\" is progressing."),
                &now,
            );
        } else if let (Some(secs), Some(c)) = (deadline, condition(&conds, "Progressing")) {
            let reason = c["reason"].as_str().unwrap_or("");
            if c["status"] == "True" && reason != "NewReplicaSetAvailable" {
                let last = c["lastUpdateTime"]
                    .as_str()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .unwrap_or(now_ts);
                let due = last + SignedDuration::from_secs(i64::from(secs));
                if due <= now_ts {
                    set_condition(
                        &mut conds,
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        &format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                        &now,
                    );
                    ctx.events.warning(
                        d,
                        "ProgressDeadlineExceeded",
                        format!("Deployment \"{}\" has timed out progressing.", d.name_any()),
                    );
                } else {
                    let wait = due.duration_since(now_ts).as_secs_f64().max(0.1);
                    requeue = Action::requeue(Duration::from_secs_f64(wait.min(3600.0)));
                }
            }
        }
    }
    conds.sort_by_key(|c| if c["type"] == "Available" { 0 } else { 1 });

    let mut status = json!({
        "observedGeneration": d.metadata.generation.unwrap_or(0),
        "replicas": replicas,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (desired - available).max(0),
        "conditions": conds,
    });
    if let Some(c) = d.status.as_ref().and_then(|s| s.collision_count) {
        status["collisionCount"] = json!(c);
    }
    let mut cmp_old = old_status.clone();
    let mut cmp_new = status.clone();
    for v in [&mut cmp_old, &mut cmp_new] {
        if let Some(m) = v.as_object_mut() {
            m.retain(|_, x| x != &json!(0) && !x.is_null());
        }
    }
    if cmp_old != cmp_new {
        let api: Api<Deployment> =
            Api::namespaced(ctx.cc.client.clone(), &d.namespace().unwrap_or_default());
        let body = json!({"metadata": {"resourceVersion": d.resource_version()}, "status": status});
        api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    Ok(requeue)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fenceposts_round_like_upstream() {
        assert_eq!(resolve(None, "25%", 10, true), 3);
        assert_eq!(resolve(None, "25%", 10, false), 2);
        assert_eq!(resolve(Some(&IntOrString::Int(2)), "25%", 10, true), 2);
        assert_eq!(
            resolve(Some(&IntOrString::String("50%".into())), "25%", 3, true),
            2
        );
        let d: Deployment = serde_json::from_value(json!({"spec": {"replicas": 3, "selector": {},
            "template": {}, "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}))
        .unwrap();
        assert_eq!(fenceposts(&d), (0, 1));
    }

    #[test]
    fn hash_ignores_its_own_label_and_uses_the_safe_alphabet() {
        let t: PodTemplateSpec =
            serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}}})).unwrap();
        let mut t2 = t.clone();
        t2.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), "x".into());
        assert_eq!(
            template_hash(Some(&t), None),
            template_hash(Some(&t2), None)
        );
        assert_ne!(
            template_hash(Some(&t), None),
            template_hash(Some(&t), Some(1))
        );
        assert!(template_hash(Some(&t), None)
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }
}
