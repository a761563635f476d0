//! StatefulSet controller: pods with stable names `<set>-<ordinal>` and stable storage
//! (`<claim>-<set>-<ordinal>` PersistentVolumeClaims from volumeClaimTemplates), created in
//! ordinal order and removed highest first (OrderedReady waits for each pod to be Running
//! and Ready; Parallel does not), rolled out through ControllerRevisions highest ordinal
//! first down to the partition (RollingUpdate) or left to the user (OnDelete), as upstream's
//! `StatefulSetController` does.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::common::pod::{is_pod_available, is_pod_ready, is_terminal, is_terminating, phase};
use crate::common::revision::{self, POD_REVISION_LABEL};
use crate::common::{
    claim, controller_ref, is_already_exists, is_not_found, key_of, owner, status_differs,
    EventRecorder, Expectations, Harness, Informer, LabelMatcher, Result,
};
use crate::replicaset::api_message;
use crate::{ControllerContext, ControllerFuture};

/// Label with the pod's own name (a Service can select one replica by it).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

const NAME: &str = "statefulset-controller";

/// Starts the StatefulSet controller.
pub fn start(ctx: ControllerContext) -> ControllerFuture {
    Box::pin(run(ctx))
}

struct Ctx {
    cc: ControllerContext,
    pods: Informer<Pod>,
    revisions: Informer<ControllerRevision>,
    claims: Informer<PersistentVolumeClaim>,
    expectations: Expectations,
    events: EventRecorder,
}

async fn run(cc: ControllerContext) -> anyhow::Result<()> {
    let sets = cc.informers.get::<StatefulSet>();
    let pods = cc.informers.get::<Pod>();
    let seen_pods = pods.seen_revision();
    let revisions = cc.informers.get::<ControllerRevision>();
    let claims = cc.informers.get::<PersistentVolumeClaim>();
    let harness = Harness::new(NAME, &sets, &cc.shutdown)
        .owns(&pods)
        .owns(&revisions)
        .resync_every(Duration::from_secs(30));
    tokio::select! {
        _ = cc.shutdown.cancelled() => return Ok(()),
        _ = claims.wait_ready() => {}
    }
    let ctx = Arc::new(Ctx {
        events: EventRecorder::new(cc.client.clone(), NAME),
        cc,
        pods,
        revisions,
        claims,
        expectations: Expectations::tracking(seen_pods),
    });
    harness.run(reconcile, ctx).await;
    Ok(())
}

/// The ordinal of a pod called `<set>-<n>` (None for any other name).
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// Running with its Ready condition True (upstream's isRunningAndReady).
fn running_and_ready(p: &Pod) -> bool {
    phase(p) == "Running" && is_pod_ready(p)
}

/// What one reconcile works with.
struct Set<'a> {
    set: &'a StatefulSet,
    spec: &'a StatefulSetSpec,
    key: String,
    ns: String,
    name: String,
    monotonic: bool,
    min_ready: i32,
    now: Timestamp,
}

impl Set<'_> {
    fn healthy(&self, p: &Pod) -> bool {
        running_and_ready(p) && is_pod_available(p, self.min_ready, self.now)
    }

    fn claim_name(&self, template: &PersistentVolumeClaim, ordinal: i32) -> String {
        format!(
            "{}-{}-{ordinal}",
            template.metadata.name.as_deref().unwrap_or(""),
            self.name
        )
    }

    fn retention(&self) -> (bool, bool) {
        let p = self.spec.persistent_volume_claim_retention_policy.as_ref();
        let delete = |v: Option<&String>| v.map(String::as_str) == Some("Delete");
        (
            delete(p.and_then(|p| p.when_deleted.as_ref())),
            delete(p.and_then(|p| p.when_scaled.as_ref())),
        )
    }

    /// The pod for `ordinal` made from `template` of revision `rev`.
    fn new_pod(&self, template: &PodTemplateSpec, rev: &str, ordinal: i32) -> Pod {
        let name = format!("{}-{ordinal}", self.name);
        let mut pod = crate::common::pod::pod_from_template(
            template,
            &self.ns,
            controller_ref(self.set),
            Some(name.clone()),
        );
        let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
        labels.insert(POD_NAME_LABEL.into(), name.clone());
        labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
        labels.insert(POD_REVISION_LABEL.into(), rev.to_string());
        let claims = self.spec.volume_claim_templates.clone().unwrap_or_default();
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname = Some(name.clone());
            if let Some(svc) = self.spec.service_name.as_ref().filter(|s| !s.is_empty()) {
                spec.subdomain = Some(svc.clone());
            }
            let volumes = spec.volumes.get_or_insert_with(Vec::new);
            for c in &claims {
                let vname = c.metadata.name.clone().unwrap_or_default();
                volumes.retain(|v| v.name != vname);
                volumes.push(Volume {
                    name: vname,
                    persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                        claim_name: self.claim_name(c, ordinal),
                        read_only: None,
                    }),
                    ..Volume::default()
                });
            }
            if volumes.is_empty() {
                spec.volumes = None;
            }
        }
        pod
    }
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(spec) = set.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let key = key_of(&*set);
    let matcher = LabelMatcher::new(Some(&spec.selector))?;
    let all = ctx.pods.list_namespaced(&ns);
    if !ctx
        .expectations
        .satisfied_by(&key, &all, |p| !is_terminating(p))
    {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let uid = set.uid().unwrap_or_default();
    let candidates: Vec<Arc<Pod>> = all
        .into_iter()
        .filter(|p| {
            owner::is_controlled_by(&p.metadata, &uid) || ordinal_of(&name, &p.name_any()).is_some()
        })
        .collect();
    let pod_api: Api<Pod> = Api::namespaced(ctx.cc.client.clone(), &ns);
    let owned = claim(&pod_api, &*set, &matcher, candidates).await?;

    let rev_api: Api<ControllerRevision> = Api::namespaced(ctx.cc.client.clone(), &ns);
    let status = set.status.clone().unwrap_or_default();
    let history = revision::sync(
        &rev_api,
        &*set,
        &matcher,
        &spec.template,
        status.collision_count.unwrap_or(0),
        ctx.revisions.list_namespaced(&ns),
    )
    .await?;
    let update = history.update.clone();
    let current = status
        .current_revision
        .as_ref()
        .and_then(|n| history.revisions.iter().find(|r| &r.name_any() == n))
        .cloned()
        .unwrap_or_else(|| update.clone());

    let s = Set {
        set: &set,
        spec,
        key,
        ns: ns.clone(),
        name: name.clone(),
        monotonic: spec.pod_management_policy.as_deref() != Some("Parallel"),
        min_ready: spec.min_ready_seconds.unwrap_or(0),
        now: ctx.cc.clock.now(),
    };
    sync_pods(&s, &owned, &current, &update, &pod_api, &ctx).await?;

    let live_revisions: HashSet<String> = owned
        .iter()
        .filter_map(|p| p.labels().get(POD_REVISION_LABEL).cloned())
        .chain([current.name_any(), update.name_any()])
        .collect();
    revision::truncate(
        &rev_api,
        &history,
        &live_revisions,
        spec.revision_history_limit.unwrap_or(10),
    )
    .await?;

    let new_status = compute_status(&s, &owned, &current, &update, history.collision_count);
    let old_status = serde_json::to_value(&set.status).unwrap_or_default();
    if status_differs(&old_status, &new_status) {
        let api: Api<StatefulSet> = Api::namespaced(ctx.cc.client.clone(), &ns);
        let body = json!({
            "metadata": {"resourceVersion": set.resource_version()},
            "status": new_status,
        });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    // Pods turning available after minReadySeconds produce no event: look again then.
    if s.min_ready > 0
        && owned
            .iter()
            .any(|p| running_and_ready(p) && !is_pod_available(p, s.min_ready, s.now))
    {
        return Ok(Action::requeue(Duration::from_secs(s.min_ready as u64)));
    }
    Ok(Action::await_change())
}

/// One round of upstream's `updateStatefulSet`: replace failed pods and create missing ones
/// in ordinal order, delete condemned ones highest first, then roll one pod to the update
/// revision. OrderedReady stops at the first pod that is not yet healthy.
async fn sync_pods(
    s: &Set<'_>,
    owned: &[Arc<Pod>],
    current: &ControllerRevision,
    update: &ControllerRevision,
    api: &Api<Pod>,
    ctx: &Ctx,
) -> Result<()> {
    let replicas = s.spec.replicas.unwrap_or(1).max(0);
    let start = s
        .spec
        .ordinals
        .as_ref()
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0);
    let end = start + replicas;
    let mut slots: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    let mut condemned: Vec<(i32, Arc<Pod>)> = Vec::new();
    for p in owned {
        match ordinal_of(&s.name, &p.name_any()) {
            Some(o) if (start..end).contains(&o) => {
                slots.insert(o, p.clone());
            }
            o => condemned.push((o.unwrap_or(i32::MAX), p.clone())),
        }
    }
    condemned.sort_by_key(|c| std::cmp::Reverse(c.0));

    let rolling = s
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = s
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0));
    let current_replicas = s
        .set
        .status
        .as_ref()
        .and_then(|st| st.current_replicas)
        .unwrap_or(0);
    let current_template =
        revision::template_of(current).unwrap_or_else(|| s.spec.template.clone());

    for ordinal in start..end {
        let index = ordinal - start;
        match slots.get(&ordinal) {
            None => {
                // Below the partition (or among the current replicas) pods keep the current revision.
                let keep_current = rolling
                    && match partition {
                        Some(p) => index < p,
                        None => index < current_replicas,
                    };
                let (template, rev) = if keep_current {
                    (&current_template, current.name_any())
                } else {
                    (&s.spec.template, update.name_any())
                };
                let pod = s.new_pod(template, &rev, ordinal);
                create_pod(s, pod, ordinal, api, ctx).await?;
                if s.monotonic {
                    return Ok(());
                }
            }
            Some(p) if is_terminal(p) && !is_terminating(p) => {
                let verb = if phase(p) == "Failed" {
                    "failed"
                } else {
                    "succeeded"
                };
                tracing::info!(statefulset = %s.key, pod = %p.name_any(), "pod {verb}; recreating");
                delete_pod(s, p, api, ctx).await?;
                if s.monotonic {
                    return Ok(());
                }
            }
            Some(p) if is_terminating(p) => {
                if s.monotonic {
                    return Ok(());
                }
            }
            Some(p) => {
                if s.monotonic && !s.healthy(p) {
                    return Ok(());
                }
                ensure_identity(s, p, ordinal, api, ctx).await?;
            }
        }
    }

    // The lowest-ordinal unhealthy pod may go even when unhealthy; any other waits for it.
    let first_unhealthy = slots
        .values()
        .chain(condemned.iter().rev().map(|(_, p)| p))
        .find(|p| !s.healthy(p))
        .and_then(|p| p.uid());
    let (_, delete_on_scale) = s.retention();
    for (ordinal, p) in &condemned {
        if is_terminating(p) {
            if s.monotonic {
                return Ok(());
            }
            continue;
        }
        if s.monotonic && !running_and_ready(p) && p.uid() != first_unhealthy {
            return Ok(());
        }
        if delete_on_scale && *ordinal != i32::MAX {
            give_claims_to_pod(s, p, *ordinal, ctx).await?;
        }
        delete_pod(s, p, api, ctx).await?;
        if s.monotonic {
            return Ok(());
        }
    }

    if !rolling {
        return Ok(());
    }
    let min = partition.unwrap_or(0).max(0);
    for index in (min..replicas).rev() {
        let Some(p) = slots.get(&(start + index)) else {
            continue;
        };
        if p.labels().get(POD_REVISION_LABEL) != Some(&update.name_any()) && !is_terminating(p) {
            tracing::info!(statefulset = %s.key, pod = %p.name_any(), revision = %update.name_any(), "updating pod");
            delete_pod(s, p, api, ctx).await?;
            return Ok(());
        }
        if !s.healthy(p) {
            return Ok(());
        }
    }
    Ok(())
}

/// Creates the pod's claims that are missing, then the pod.
async fn create_pod(s: &Set<'_>, pod: Pod, ordinal: i32, api: &Api<Pod>, ctx: &Ctx) -> Result<()> {
    let pod_name = pod.name_any();
    create_claims(s, &pod_name, ordinal, ctx).await?;
    ctx.expectations.expect_creation(&s.key, &pod_name);
    match api.create(&PostParams::default(), &pod).await {
        Ok(created) => {
            ctx.expectations.expect_creation_at(
                &s.key,
                &pod_name,
                created.metadata.resource_version.as_deref(),
            );
            ctx.events.normal(
                s.set,
                "SuccessfulCreate",
                format!("create Pod {pod_name} in StatefulSet {} successful", s.name),
            );
            Ok(())
        }
        Err(e) => {
            ctx.expectations.creation_failed(&s.key, &pod_name);
            if is_already_exists(&e) {
                return Ok(());
            }
            ctx.events.warning(
                s.set,
                "FailedCreate",
                format!(
                    "create Pod {pod_name} in StatefulSet {} failed error: {}",
                    s.name,
                    api_message(&e)
                ),
            );
            Err(e.into())
        }
    }
}

/// Creates the claims of `ordinal` that do not exist (never touches existing ones).
async fn create_claims(s: &Set<'_>, pod_name: &str, ordinal: i32, ctx: &Ctx) -> Result<()> {
    let templates = s.spec.volume_claim_templates.clone().unwrap_or_default();
    if templates.is_empty() {
        return Ok(());
    }
    let (delete_with_set, _) = s.retention();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.cc.client.clone(), &s.ns);
    let cached = ctx.claims.list_namespaced(&s.ns);
    for t in &templates {
        let name = s.claim_name(t, ordinal);
        if let Some(c) = cached.iter().find(|c| c.name_any() == name) {
            if c.metadata.deletion_timestamp.is_some() {
                return Err(crate::common::Error::Other(format!(
                    "pvc {name} is being deleted"
                )));
            }
            continue;
        }
        let mut labels = t.metadata.labels.clone().unwrap_or_default();
        if let Some(m) = &s.spec.selector.match_labels {
            labels.extend(m.clone());
        }
        let owners = delete_with_set.then(|| vec![plain_ref(controller_ref(s.set))]);
        let pvc = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(s.ns.clone()),
                labels: Some(labels),
                annotations: t.metadata.annotations.clone(),
                owner_references: owners,
                ..ObjectMeta::default()
            },
            spec: t.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) => ctx.events.normal(
                s.set,
                "SuccessfulCreate",
                format!(
                    "create Claim {name} Pod {pod_name} in StatefulSet {} success",
                    s.name
                ),
            ),
            Err(e) if is_already_exists(&e) => {}
            Err(e) => {
                ctx.events.warning(
                    s.set,
                    "FailedCreate",
                    format!(
                        "create Claim {name} for Pod {pod_name} in StatefulSet {} failed error: {}",
                        s.name,
                        api_message(&e)
                    ),
                );
                return Err(e.into());
            }
        }
    }
    Ok(())
}

/// An owner reference that does not make its holder a controlled object.
fn plain_ref(mut r: OwnerReference) -> OwnerReference {
    r.controller = None;
    r.block_owner_deletion = None;
    r
}

/// whenScaled=Delete: the claims of a condemned pod become owned by the pod, so the
/// garbage collector removes them with it.
async fn give_claims_to_pod(s: &Set<'_>, pod: &Pod, ordinal: i32, ctx: &Ctx) -> Result<()> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.cc.client.clone(), &s.ns);
    let pod_uid = pod.uid().unwrap_or_default();
    for t in s.spec.volume_claim_templates.iter().flatten() {
        let name = s.claim_name(t, ordinal);
        let Some(c) = api.get_opt(&name).await? else {
            continue;
        };
        if c.owner_references().iter().any(|r| r.uid == pod_uid) {
            continue;
        }
        let mut refs = c.owner_references().to_vec();
        refs.push(plain_ref(controller_ref(pod)));
        let patch =
            json!({"metadata": {"ownerReferences": refs, "resourceVersion": c.resource_version()}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Restores the identity labels of a pod someone edited, and its missing claims.
async fn ensure_identity(
    s: &Set<'_>,
    p: &Pod,
    ordinal: i32,
    api: &Api<Pod>,
    ctx: &Ctx,
) -> Result<()> {
    let name = p.name_any();
    let index = ordinal.to_string();
    if p.labels().get(POD_NAME_LABEL) != Some(&name)
        || p.labels().get(POD_INDEX_LABEL) != Some(&index)
    {
        let patch = json!({"metadata": {"labels": {POD_NAME_LABEL: name, POD_INDEX_LABEL: index}}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    create_claims(s, &name, ordinal, ctx).await
}

async fn delete_pod(s: &Set<'_>, p: &Pod, api: &Api<Pod>, ctx: &Ctx) -> Result<()> {
    let name = p.name_any();
    let uid = p.uid();
    if let Some(u) = &uid {
        ctx.expectations.expect_deletion(&s.key, u);
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => {
            ctx.events.normal(
                s.set,
                "SuccessfulDelete",
                format!("delete Pod {name} in StatefulSet {} successful", s.name),
            );
            Ok(())
        }
        Err(e) if is_not_found(&e) => Ok(()),
        Err(e) => {
            if let Some(u) = &uid {
                ctx.expectations.deletion_failed(&s.key, u);
            }
            ctx.events.warning(
                s.set,
                "FailedDelete",
                format!(
                    "delete Pod {name} in StatefulSet {} failed error: {}",
                    s.name,
                    api_message(&e)
                ),
            );
            Err(e.into())
        }
    }
}

/// The status upstream's `computeReplicaStatus` and `completeRollingUpdate` write.
fn compute_status(
    s: &Set<'_>,
    owned: &[Arc<Pod>],
    current: &ControllerRevision,
    update: &ControllerRevision,
    collision_count: i32,
) -> serde_json::Value {
    let (mut ready, mut available, mut current_n, mut updated) = (0, 0, 0, 0);
    for p in owned {
        if running_and_ready(p) {
            ready += 1;
            if is_pod_available(p, s.min_ready, s.now) {
                available += 1;
            }
        }
        if !is_terminating(p) {
            let rev = p.labels().get(POD_REVISION_LABEL);
            if rev == Some(&current.name_any()) {
                current_n += 1;
            }
            if rev == Some(&update.name_any()) {
                updated += 1;
            }
        }
    }
    let replicas = owned.len();
    let mut current_rev = current.name_any();
    let rolling = s
        .spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    // A rollout is complete once every pod is updated and ready.
    if rolling && updated == replicas && ready == replicas {
        current_rev = update.name_any();
        current_n = updated;
    }
    json!({
        "observedGeneration": s.set.metadata.generation.unwrap_or(0),
        "replicas": replicas,
        "readyReplicas": ready,
        "currentReplicas": current_n,
        "updatedReplicas": updated,
        "availableReplicas": available,
        "currentRevision": current_rev,
        "updateRevision": update.name_any(),
        "collisionCount": collision_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_come_from_stable_names() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
        assert_eq!(ordinal_of("web", "web-app-1"), None);
    }
}
