//! Job controller: runs pods to `completions` with at most `parallelism` active, retries
//! failures up to `backoffLimit`, enforces `activeDeadlineSeconds`, supports Indexed
//! completion, writes the status and the SuccessCriteriaMet/Complete and
//! FailureTarget/Failed conditions as upstream does, and deletes finished Jobs after
//! `ttlSecondsAfterFinished` (upstream's ttl-after-finished controller, here in the same loop).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::{json, Value};

use crate::common::pod::{is_pod_active, is_pod_ready, phase, pod_from_template};
use crate::common::{
    claim, controller_ref, key_of, owner, EventRecorder, Expectations, Harness, Informer,
    LabelMatcher, Result,
};
use crate::replicaset::api_message;
use crate::{ControllerContext, ControllerFuture};

/// Annotation and label with an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// Starts the Job controller.
pub fn start(ctx: ControllerContext) -> ControllerFuture {
    Box::pin(run(ctx))
}

struct Ctx {
    cc: ControllerContext,
    pods: Informer<Pod>,
    expectations: Expectations,
    events: EventRecorder,
}

async fn run(cc: ControllerContext) -> anyhow::Result<()> {
    let jobs = cc.informers.get::<Job>();
    let pods = cc.informers.get::<Pod>();
    let seen_pods = pods.seen_revision();
    let harness = Harness::new("job-controller", &jobs, &cc.shutdown)
        .owns(&pods)
        .resync_every(Duration::from_secs(30));
    let ctx = Arc::new(Ctx {
        events: EventRecorder::new(cc.client.clone(), "job-controller"),
        cc,
        pods,
        expectations: Expectations::tracking(seen_pods),
    });
    harness.run(reconcile, ctx).await;
    Ok(())
}

fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn index_of(p: &Pod) -> Option<i32> {
    p.annotations().get(COMPLETION_INDEX)?.parse().ok()
}

/// The active pods of an Indexed Job that should not run: all but one of the pods of an
/// index (the ready one, else the oldest, stays), and pods whose index is missing, out of
/// `0..total` or in `done`.
fn surplus_indexed<'a>(
    active: &[&'a Arc<Pod>],
    total: i32,
    done: &BTreeSet<i32>,
) -> Vec<&'a Arc<Pod>> {
    let mut surplus = Vec::new();
    let mut by_index: std::collections::BTreeMap<i32, Vec<&'a Arc<Pod>>> = Default::default();
    for p in active {
        match index_of(p) {
            Some(i) if (0..total).contains(&i) && !done.contains(&i) => {
                by_index.entry(i).or_default().push(*p)
            }
            _ => surplus.push(*p),
        }
    }
    for (_, mut pods) in by_index {
        pods.sort_by_key(|p| {
            (
                !is_pod_ready(p),
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.name_any(),
            )
        });
        surplus.extend(pods.into_iter().skip(1));
    }
    surplus
}

/// "1,3-5" for {1,3,4,5} (upstream's completedIndexes format).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let v: Vec<i32> = set.iter().copied().collect();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            v[i].to_string()
        } else {
            format!("{}-{}", v[i], v[j])
        });
        i = j + 1;
    }
    out.join(",")
}

fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in s.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    set.extend(a..=b);
                }
            }
            None => {
                if let Ok(a) = part.parse() {
                    set.insert(a);
                }
            }
        }
    }
    set
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = job.namespace().unwrap_or_default();
    let key = key_of(&*job);
    let now = ctx.cc.clock.now();
    let job_api: Api<Job> = Api::namespaced(ctx.cc.client.clone(), &ns);
    let status = job.status.clone().unwrap_or_default();
    let finished = has_condition(&job, "Complete") || has_condition(&job, "Failed");
    if finished {
        return ttl_after_finished(&job, &job_api, now).await;
    }
    let Some(spec) = job.spec.clone() else {
        return Ok(Action::await_change());
    };
    let matcher = LabelMatcher::new(spec.selector.as_ref())?;
    let pod_api: Api<Pod> = Api::namespaced(ctx.cc.client.clone(), &ns);
    let all = ctx.pods.list_namespaced(&ns);
    let satisfied = ctx.expectations.satisfied_by(&key, &all, is_pod_active);
    let pods = claim(&pod_api, &*job, &matcher, all).await?;

    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let active: Vec<&Arc<Pod>> = pods.iter().filter(|p| is_pod_active(p)).collect();
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let mut done_indexes: BTreeSet<i32> =
        parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    let succeeded_pods: Vec<&Arc<Pod>> = pods.iter().filter(|p| phase(p) == "Succeeded").collect();
    if indexed {
        done_indexes.extend(
            succeeded_pods
                .iter()
                .filter_map(|p| index_of(p))
                .filter(|i| completions.is_none_or(|c| *i < c)),
        );
    }
    let succeeded = if indexed {
        done_indexes.len() as i32
    } else {
        (succeeded_pods.len() as i32).max(status.succeeded.unwrap_or(0))
    };
    let failed = failed.max(status.failed.unwrap_or(0));
    let start_time = status.start_time.as_ref().map(|t| t.0).unwrap_or(now);

    let mut conditions: Vec<Value> = serde_json::to_value(&status.conditions)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let mut add_condition = |type_: &str, reason: &str, message: &str| {
        if !conditions.iter().any(|c| c["type"] == type_) {
            conditions.push(
                json!({"type": type_, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now.to_string(), "lastTransitionTime": now.to_string()}),
            );
        }
    };

    // Decide whether the Job has failed or succeeded.
    let mut failure: Option<(&str, &str)> = None;
    if has_condition(&job, "FailureTarget") {
        let c = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "FailureTarget");
        failure = c.map(|c| match c.reason.as_deref() {
            Some("DeadlineExceeded") => (
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ),
            _ => (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ),
        });
    } else if failed > backoff_limit {
        failure = Some((
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    } else if let Some(ads) = spec.active_deadline_seconds {
        if now >= start_time + SignedDuration::from_secs(ads) {
            failure = Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        }
    }
    let complete = failure.is_none()
        && match completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };

    let mut requeue = Action::await_change();
    if let Some((reason, message)) = failure {
        add_condition("FailureTarget", reason, message);
        if !has_condition(&job, "FailureTarget") {
            ctx.events.warning(&*job, reason, message.to_string());
        }
        delete_pods(&job, &key, &active, &pod_api, &ctx).await?;
        if active.is_empty() {
            add_condition("Failed", reason, message);
        }
    } else if complete {
        add_condition(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        delete_pods(&job, &key, &active, &pod_api, &ctx).await?;
        if active.is_empty() {
            add_condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
            ctx.events
                .normal(&*job, "Completed", "Job completed".into());
        }
    } else if satisfied && !spec.suspend.unwrap_or(false) {
        let mut active = active.clone();
        if indexed {
            // As upstream: an index run by more than one pod keeps one (ready first, then the
            // oldest); a pod of an index out of range or already completed goes.
            let total = completions.unwrap_or(parallelism);
            let surplus = surplus_indexed(&active, total, &done_indexes);
            if !surplus.is_empty() {
                delete_pods(&job, &key, &surplus, &pod_api, &ctx).await?;
                let gone: HashSet<String> = surplus.iter().filter_map(|p| p.uid()).collect();
                active.retain(|p| p.uid().is_none_or(|u| !gone.contains(&u)));
            }
        }
        let want = match completions {
            Some(c) => parallelism.min(c - succeeded),
            None if succeeded > 0 => 0,
            None => parallelism,
        }
        .max(0) as usize;
        if active.len() > want {
            let mut extra: Vec<&Arc<Pod>> = active.clone();
            extra.sort_by_key(|p| {
                (
                    is_pod_ready(p),
                    std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                )
            });
            extra.truncate(active.len() - want);
            delete_pods(&job, &key, &extra, &pod_api, &ctx).await?;
        } else if active.len() < want {
            let mut to_create: Vec<Option<i32>> = Vec::new();
            if indexed {
                let busy: HashSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
                let total = completions.unwrap_or(parallelism);
                to_create.extend(
                    (0..total)
                        .filter(|i| !done_indexes.contains(i) && !busy.contains(i))
                        .take(want - active.len())
                        .map(Some),
                );
            } else {
                to_create.resize(want - active.len(), None);
            }
            create_pods(&job, &key, &to_create, &pod_api, &ctx).await?;
        }
        if let Some(ads) = spec.active_deadline_seconds {
            let due = start_time + SignedDuration::from_secs(ads);
            let wait = due.duration_since(now).as_secs_f64().max(0.05);
            requeue = Action::requeue(Duration::from_secs_f64(wait));
        }
    }

    let finished_now = conditions
        .iter()
        .any(|c| c["type"] == "Complete" || c["type"] == "Failed");
    let ready = active.iter().filter(|p| is_pod_ready(p)).count();
    let mut new_status = json!({
        "active": if finished_now { 0 } else { active.len() },
        "ready": if finished_now { 0 } else { ready },
        "succeeded": succeeded,
        "failed": failed,
        "startTime": start_time.to_string(),
        "conditions": conditions,
    });
    if indexed {
        new_status["completedIndexes"] = json!(format_indexes(&done_indexes));
    }
    if conditions.iter().any(|c| c["type"] == "Complete") {
        new_status["completionTime"] = json!(status
            .completion_time
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(now)
            .to_string());
    }
    let old = serde_json::to_value(&job.status).unwrap_or_default();
    let changed = [
        "active",
        "ready",
        "succeeded",
        "failed",
        "completedIndexes",
        "completionTime",
    ]
    .iter()
    .any(|k| old.get(*k).unwrap_or(&json!(0)) != new_status.get(*k).unwrap_or(&json!(0)))
        || old.get("startTime").is_none()
        || old
            .get("conditions")
            .and_then(|c| c.as_array())
            .map(|c| c.len())
            .unwrap_or(0)
            != conditions.len();
    if changed {
        let body =
            json!({"metadata": {"resourceVersion": job.resource_version()}, "status": new_status});
        job_api
            .patch_status(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await?;
    }
    Ok(requeue)
}

async fn ttl_after_finished(job: &Job, api: &Api<Job>, now: Timestamp) -> Result<Action> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let status = job.status.clone().unwrap_or_default();
    let finished_at = status
        .conditions
        .iter()
        .flatten()
        .filter(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .filter_map(|c| c.last_transition_time.as_ref().map(|t| t.0))
        .next()
        .or(status.completion_time.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let due = finished_at + SignedDuration::from_secs(i64::from(ttl));
    if now < due {
        let wait = due.duration_since(now).as_secs_f64().max(0.05);
        return Ok(Action::requeue(Duration::from_secs_f64(wait)));
    }
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.uid(),
            resource_version: None,
        }),
        ..DeleteParams::foreground()
    };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => Ok(Action::await_change()),
        Err(e) if crate::common::is_not_found(&e) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

async fn create_pods(
    job: &Arc<Job>,
    key: &str,
    indexes: &[Option<i32>],
    api: &Api<Pod>,
    ctx: &Ctx,
) -> Result<()> {
    let Some(spec) = job.spec.as_ref() else {
        return Ok(());
    };
    let ns = job.namespace().unwrap_or_default();
    let oref = controller_ref(&**job);
    let (_, err) = crate::common::batch::slow_start_batch(indexes.len(), 1, |i| {
        let mut pod = pod_from_template(&spec.template, &ns, oref.clone(), None);
        if let Some(index) = indexes[i] {
            let idx = index.to_string();
            pod.metadata.generate_name = Some(format!("{}-{idx}-", job.name_any()));
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), idx.clone());
            pod.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), idx.clone());
            if let Some(ps) = pod.spec.as_mut() {
                if ps.hostname.is_none() {
                    ps.hostname = Some(format!("{}-{idx}", job.name_any()));
                }
                for c in ps
                    .containers
                    .iter_mut()
                    .chain(ps.init_containers.iter_mut().flatten())
                {
                    c.env.get_or_insert_with(Vec::new).push(EnvVar {
                        name: "JOB_COMPLETION_INDEX".into(),
                        value: Some(idx.clone()),
                        value_from: None,
                    });
                }
            }
        }
        async move {
            match api.create(&PostParams::default(), &pod).await {
                Ok(p) => {
                    ctx.expectations.expect_creation_at(
                        key,
                        &p.name_any(),
                        p.metadata.resource_version.as_deref(),
                    );
                    ctx.events.normal(
                        &**job,
                        "SuccessfulCreate",
                        format!("Created pod: {}", p.name_any()),
                    );
                    Ok(())
                }
                Err(e) => {
                    ctx.events.warning(
                        &**job,
                        "FailedCreate",
                        format!("Error creating: {}", api_message(&e)),
                    );
                    Err(e)
                }
            }
        }
    })
    .await;
    match err {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn delete_pods(
    job: &Arc<Job>,
    key: &str,
    pods: &[&Arc<Pod>],
    api: &Api<Pod>,
    ctx: &Ctx,
) -> Result<()> {
    for p in pods {
        if p.metadata.deletion_timestamp.is_some()
            || !owner::is_controlled_by(&p.metadata, &job.uid().unwrap_or_default())
        {
            continue;
        }
        if let Some(uid) = p.uid() {
            ctx.expectations.expect_deletion(key, &uid);
        }
        match api.delete(&p.name_any(), &DeleteParams::background()).await {
            Ok(_) => ctx.events.normal(
                &**job,
                "SuccessfulDelete",
                format!("Deleted pod: {}", p.name_any()),
            ),
            Err(e) if crate::common::is_not_found(&e) => {}
            Err(e) => {
                if let Some(uid) = p.uid() {
                    ctx.expectations.deletion_failed(key, &uid);
                }
                return Err(e.into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_round_trip() {
        let s: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format_indexes(&s), "0-2,4,6-7");
        assert_eq!(parse_indexes("0-2,4,6-7"), s);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }
}
