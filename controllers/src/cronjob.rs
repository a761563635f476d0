//! CronJob controller: creates a Job named `<cronjob>-<scheduled time in minutes>` at each
//! time the schedule names (in `spec.timeZone`), honouring suspend, startingDeadlineSeconds
//! and concurrencyPolicy (Allow, Forbid, Replace); keeps status.active, lastScheduleTime and
//! lastSuccessfulTime; prunes finished Jobs past the history limits, as upstream's
//! `cronjob_controllerv2` does. Waits go by the controller's clock, so tests move time.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

use crate::common::cron::Schedule;
use crate::common::{
    controller_ref, is_already_exists, is_not_found, owner, EventRecorder, Harness, Informer,
    Result,
};
use crate::replicaset::api_message;
use crate::{ControllerContext, ControllerFuture};

/// Annotation on a Job with the time it was scheduled for.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

const NAME: &str = "cronjob-controller";

/// Missed start times beyond which upstream warns.
const TOO_MANY_MISSED: usize = 100;

/// Starts the CronJob controller.
pub fn start(ctx: ControllerContext) -> ControllerFuture {
    Box::pin(run(ctx))
}

/// Wake-ups at schedule times, by the controller's clock (one pending per CronJob and time).
struct Timers {
    cc: ControllerContext,
    tx: mpsc::Sender<ObjectRef<CronJob>>,
    pending: Mutex<HashMap<ObjectRef<CronJob>, Timestamp>>,
}

impl Timers {
    fn wake_at(self: &Arc<Self>, key: ObjectRef<CronJob>, at: Timestamp) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.get(&key) == Some(&at) {
                return;
            }
            p.insert(key.clone(), at);
        }
        let me = self.clone();
        let sleep = self.cc.clock.sleep_until(at);
        let shutdown = self.cc.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep => {}
            }
            {
                let mut p = me.pending.lock().unwrap_or_else(|e| e.into_inner());
                if p.get(&key) == Some(&at) {
                    p.remove(&key);
                }
            }
            // A small margin past the schedule time, as upstream's nextScheduleTimeDuration.
            let _ = me.tx.send(key).await;
        });
    }
}

struct Ctx {
    cc: ControllerContext,
    jobs: Informer<Job>,
    timers: Arc<Timers>,
    events: EventRecorder,
}

async fn run(cc: ControllerContext) -> anyhow::Result<()> {
    let cronjobs = cc.informers.get::<CronJob>();
    let jobs = cc.informers.get::<Job>();
    let (tx, rx) = mpsc::channel(256);
    let wakeups =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|k| (k, rx)) });
    let harness = Harness::new(NAME, &cronjobs, &cc.shutdown)
        .owns(&jobs)
        .triggers(wakeups)
        .resync_every(Duration::from_secs(30));
    let ctx = Arc::new(Ctx {
        events: EventRecorder::new(cc.client.clone(), NAME),
        timers: Arc::new(Timers {
            cc: cc.clone(),
            tx,
            pending: Mutex::default(),
        }),
        cc,
        jobs,
    });
    harness.run(reconcile, ctx).await;
    Ok(())
}

/// "Complete" or "Failed" once the Job has finished.
fn finished(j: &Job) -> Option<&'static str> {
    let conds = j.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"]
        .into_iter()
        .find(|t| conds.iter().any(|c| c.type_ == *t && c.status == "True"))
}

/// The latest schedule time in (earliest, now] and how many there were.
pub fn most_recent(
    sched: &Schedule,
    earliest: Timestamp,
    now: Timestamp,
    tz: &TimeZone,
) -> (Option<Timestamp>, usize) {
    let mut last = None;
    let mut n = 0;
    let mut t = earliest;
    // Bounded: a year of per-minute schedules.
    while n < 600_000 {
        match sched.next(t, tz) {
            Some(x) if x <= now => {
                last = Some(x);
                n += 1;
                t = x;
            }
            _ => break,
        }
    }
    (last, n)
}

/// The time as RFC 3339 in `tz` (`Z` for UTC), as Go's `Format(time.RFC3339)` writes it.
fn rfc3339_in(t: Timestamp, tz: &TimeZone) -> String {
    let offset = tz.to_offset(t);
    if offset.seconds() == 0 {
        return t.to_string();
    }
    t.display_with_offset(offset).to_string()
}

fn job_ref(j: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: j.metadata.name.clone(),
        namespace: j.metadata.namespace.clone(),
        uid: j.metadata.uid.clone(),
        resource_version: j.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    if cj.spec.is_none() {
        return Ok(Action::await_change());
    }
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let uid = cj.uid().unwrap_or_default();
    let now = ctx.cc.clock.now();
    let job_api: Api<Job> = Api::namespaced(ctx.cc.client.clone(), &ns);
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .list_namespaced(&ns)
        .into_iter()
        .filter(|j| owner::is_controlled_by(&j.metadata, &uid))
        .collect();

    let old_status = cj.status.clone().unwrap_or_default();
    let mut active = old_status.active.clone().unwrap_or_default();
    let mut last_schedule = old_status.last_schedule_time.clone().map(|t| t.0);
    let mut last_success = old_status.last_successful_time.clone().map(|t| t.0);
    let children: HashSet<String> = jobs.iter().filter_map(|j| j.uid()).collect();
    // The CronJob as the server has it, read once when the cache may be behind our own
    // status write (upstream reads it the same way).
    let mut live: Option<Option<CronJob>> = None;
    for j in &jobs {
        let mut found = active.iter().any(|a| a.uid == j.uid());
        let done = finished(j);
        if !found && done.is_none() {
            if live.is_none() {
                let api: Api<CronJob> = Api::namespaced(ctx.cc.client.clone(), &ns);
                live = Some(api.get_opt(&name).await?);
            }
            let listed = live
                .as_ref()
                .and_then(|c| c.as_ref())
                .and_then(|c| c.status.as_ref())
                .and_then(|s| s.active.as_ref())
                .is_some_and(|a| a.iter().any(|a| a.uid == j.uid()));
            if listed {
                active.push(job_ref(j));
                found = true;
            } else {
                ctx.events.warning(
                    &*cj,
                    "UnexpectedJob",
                    format!(
                        "Saw a job that the controller did not create or forgot: {}",
                        j.name_any()
                    ),
                );
            }
        }
        if found {
            if let Some(cond) = done {
                active.retain(|a| a.uid != j.uid());
                ctx.events.normal(
                    &*cj,
                    "SawCompletedJob",
                    format!("Saw completed job: {}, condition: {cond}", j.name_any()),
                );
            }
        }
        if done == Some("Complete") {
            let completed = j
                .status
                .as_ref()
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0);
            if let Some(c) = completed {
                if last_success.is_none_or(|l| l < c) {
                    last_success = Some(c);
                }
            }
        }
    }
    // Active references whose Job is gone.
    let mut kept = Vec::new();
    for a in active {
        if a.uid.as_ref().is_some_and(|u| children.contains(u)) {
            kept.push(a);
            continue;
        }
        let job_name = a.name.clone().unwrap_or_default();
        match job_api.get_opt(&job_name).await? {
            Some(j) if j.uid() == a.uid && finished(&j).is_none() => kept.push(a),
            Some(j) if j.uid() == a.uid => {}
            _ => ctx.events.warning(
                &*cj,
                "MissingJob",
                format!("Active job went missing: {job_name}"),
            ),
        }
    }
    let mut active = kept;

    let mut next_wake = None;
    if cj.metadata.deletion_timestamp.is_none() {
        cleanup_finished(&cj, &jobs, &job_api, &ctx).await?;
        next_wake = schedule(
            &cj,
            &jobs,
            &mut active,
            &mut last_schedule,
            now,
            &job_api,
            &ctx,
        )
        .await?;
    }

    let status = json!({
        "active": if active.is_empty() { serde_json::Value::Null } else { json!(active) },
        "lastScheduleTime": last_schedule.map(Time),
        "lastSuccessfulTime": last_success.map(Time),
    });
    let old = serde_json::to_value(&cj.status).unwrap_or_default();
    let normalize = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.retain(|_, x| !x.is_null() && x != &json!([]));
        }
        v
    };
    if normalize(&old) != normalize(&status) {
        let api: Api<CronJob> = Api::namespaced(ctx.cc.client.clone(), &ns);
        let body = json!({
            "metadata": {"resourceVersion": cj.resource_version()},
            "status": status,
        });
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await?;
    }
    if let Some(at) = next_wake {
        ctx.timers.wake_at(ObjectRef::from_obj(&*cj), at);
    }
    Ok(Action::await_change())
}

/// Starts the Job of the most recent unmet schedule time, if it is due; returns the next
/// time to look again.
async fn schedule(
    cj: &Arc<CronJob>,
    jobs: &[Arc<Job>],
    active: &mut Vec<ObjectReference>,
    last_schedule: &mut Option<Timestamp>,
    now: Timestamp,
    job_api: &Api<Job>,
    ctx: &Ctx,
) -> Result<Option<Timestamp>> {
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(None);
    };
    let name = cj.name_any();
    let tz = match spec.time_zone.as_deref() {
        Some(z) => match TimeZone::get(z) {
            Ok(tz) => tz,
            Err(e) => {
                ctx.events.warning(
                    &**cj,
                    "UnknownTimeZone",
                    format!("invalid timeZone: {z:?}: {e}"),
                );
                return Ok(None);
            }
        },
        None => TimeZone::try_system().unwrap_or(TimeZone::UTC),
    };
    let sched = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            ctx.events.warning(
                &**cj,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {e}", spec.schedule),
            );
            return Ok(None);
        }
    };
    let next = sched.next(now, &tz);
    if spec.suspend == Some(true) {
        return Ok(None);
    }
    let created = cj
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(now);
    let mut earliest = last_schedule.unwrap_or(created);
    let deadline = spec.starting_deadline_seconds;
    if let Some(sds) = deadline {
        let cutoff = now - SignedDuration::from_secs(sds);
        if cutoff > earliest {
            earliest = cutoff;
        }
    }
    let (scheduled, missed) = most_recent(&sched, earliest, now, &tz);
    let Some(scheduled) = scheduled else {
        return Ok(next);
    };
    if missed > TOO_MANY_MISSED {
        ctx.events.warning(
            &**cj,
            "TooManyMissedTimes",
            format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
        );
    }
    if let Some(sds) = deadline {
        if scheduled + SignedDuration::from_secs(sds) < now {
            ctx.events.warning(
                &**cj,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.strftime("%a, %d %b %Y %H:%M:%S +0000")
                ),
            );
            return Ok(next);
        }
    }
    let job_name = format!("{name}-{}", scheduled.as_second().div_euclid(60));
    if active.iter().any(|a| a.name.as_deref() == Some(&job_name))
        || jobs.iter().any(|j| j.name_any() == job_name)
    {
        return Ok(next);
    }
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => {
            ctx.events.normal(
                &**cj,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            );
            return Ok(next);
        }
        "Replace" => {
            for a in std::mem::take(active) {
                let n = a.name.clone().unwrap_or_default();
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                };
                match job_api.delete(&n, &dp).await {
                    Ok(_) => {
                        ctx.events
                            .normal(&**cj, "SuccessfulDelete", format!("Deleted job {n}"))
                    }
                    Err(e) if is_not_found(&e) => {}
                    Err(e) => {
                        ctx.events.warning(
                            &**cj,
                            "FailedDelete",
                            format!("Deleted job: {}", api_message(&e)),
                        );
                        active.push(a);
                        return Err(e.into());
                    }
                }
            }
        }
        _ => {}
    }
    let template = spec.job_template.clone();
    let tm = template.metadata.unwrap_or_default();
    let mut annotations = tm.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339_in(scheduled, &tz));
    let job = Job {
        metadata: ObjectMeta {
            name: Some(job_name.clone()),
            namespace: cj.namespace(),
            labels: tm.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref(&**cj)]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    };
    match job_api.create(&PostParams::default(), &job).await {
        Ok(j) => {
            ctx.events
                .normal(&**cj, "SuccessfulCreate", format!("Created job {job_name}"));
            active.push(job_ref(&j));
        }
        Err(e) if is_already_exists(&e) => {
            // Created before (a lagging cache): take it if it is ours.
            let existing = job_api.get(&job_name).await?;
            if !owner::is_controlled_by(&existing.metadata, &cj.uid().unwrap_or_default()) {
                return Ok(next);
            }
            if finished(&existing).is_none() {
                active.push(job_ref(&existing));
            }
        }
        Err(e) => {
            ctx.events.warning(
                &**cj,
                "FailedCreate",
                format!("Error creating job: {}", api_message(&e)),
            );
            return Err(e.into());
        }
    }
    *last_schedule = Some(scheduled);
    Ok(next)
}

/// Deletes the oldest finished Jobs beyond successfulJobsHistoryLimit / failedJobsHistoryLimit.
async fn cleanup_finished(
    cj: &Arc<CronJob>,
    jobs: &[Arc<Job>],
    job_api: &Api<Job>,
    ctx: &Ctx,
) -> Result<()> {
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(());
    };
    let limits = [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ];
    for (kind, limit) in limits {
        let mut done: Vec<&Arc<Job>> = jobs
            .iter()
            .filter(|j| finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
            .collect();
        done.sort_by_key(|j| {
            j.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .or(j.metadata.creation_timestamp.as_ref())
                .map(|t| t.0)
        });
        let excess = done.len().saturating_sub(limit.max(0) as usize);
        for j in done.into_iter().take(excess) {
            let dp = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Background),
                ..DeleteParams::default()
            };
            match job_api.delete(&j.name_any(), &dp).await {
                Ok(_) => ctx.events.normal(
                    &**cj,
                    "SuccessfulDelete",
                    format!("Deleted job {}", j.name_any()),
                ),
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e.into()),
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
    fn most_recent_counts_missed_times() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let e: Timestamp = "2024-01-01T00:05:00Z".parse().unwrap();
        let now: Timestamp = "2024-01-01T00:45:00Z".parse().unwrap();
        let (t, n) = most_recent(&s, e, now, &TimeZone::UTC);
        assert_eq!(t, Some("2024-01-01T00:40:00Z".parse().unwrap()));
        assert_eq!(n, 4);
        let (t, _) = most_recent(&s, now, now, &TimeZone::UTC);
        assert_eq!(t, None);
        let ny = TimeZone::get("America/New_York").unwrap();
        assert_eq!(
            rfc3339_in("2024-01-01T14:00:00Z".parse().unwrap(), &ny),
            "2024-01-01T09:00:00-05:00"
        );
    }
}
