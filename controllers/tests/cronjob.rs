//! CronJob controller against a real API server on a clock the test moves; the test plays
//! the Job controller's part by finishing Jobs through their status.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;

use anyhow::Result;
use controllers::common::TestClock;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::{wait_for, Cluster, T};

fn cronjob(name: &str, schedule: &str, extra: serde_json::Value) -> CronJob {
    let mut spec = json!({
        "schedule": schedule,
        "jobTemplate": {
            "metadata": {"labels": {"cron": name}},
            "spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]
            }}}
        }
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn start(ns: &str) -> Result<(Cluster, TestClock)> {
    let clock = TestClock::new(Timestamp::now());
    let c = Cluster::start_with_clock(&["cronjob"], Arc::new(clock.clone())).await?;
    c.namespace(ns).await?;
    Ok((c, clock))
}

/// The first whole minute after the CronJob was created.
async fn first_minute(api: &Api<CronJob>, name: &str) -> Result<i64> {
    let cj = api.get(name).await?;
    let created = cj.metadata.creation_timestamp.unwrap().0.as_second();
    Ok(created.div_euclid(60) + 1)
}

fn at_minute(m: i64, plus_secs: i64) -> Timestamp {
    Timestamp::from_second(m * 60 + plus_secs).unwrap()
}

async fn job_names(c: &Cluster, ns: &str, cron: &str) -> Result<Vec<String>> {
    let api: Api<Job> = c.api(ns);
    let mut n: Vec<String> = api
        .list(&ListParams::default().labels(&format!("cron={cron}")))
        .await?
        .items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .map(|j| j.name_any())
        .collect();
    n.sort();
    Ok(n)
}

async fn wait_jobs(c: &Cluster, ns: &str, cron: &str, want: &[String]) -> Result<()> {
    wait_for(&format!("jobs {want:?}"), T, || async {
        Ok((job_names(c, ns, cron).await? == want).then_some(()))
    })
    .await
}

async fn finish(c: &Cluster, ns: &str, job: &str, at: Timestamp, ok: bool) -> Result<()> {
    let api: Api<Job> = c.api(ns);
    let cond = if ok { "Complete" } else { "Failed" };
    let mut status = json!({
        "startTime": at.to_string(),
        "conditions": [{"type": cond, "status": "True", "lastTransitionTime": at.to_string()}],
    });
    if ok {
        status["completionTime"] = json!(at.to_string());
    }
    api.patch_status(
        job,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await?;
    Ok(())
}

async fn wait_event(c: &Cluster, ns: &str, reason: &str) -> Result<String> {
    let api: Api<Event> = c.api(ns);
    wait_for(&format!("event {reason}"), T, || async {
        Ok(api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .and_then(|e| e.message))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_start_on_schedule_and_history_is_pruned() -> Result<()> {
    let (c, clock) = start("cron").await?;
    let api = c.api::<CronJob>("cron");
    api.create(
        &PostParams::default(),
        &cronjob(
            "tick",
            "* * * * *",
            json!({"successfulJobsHistoryLimit": 2}),
        ),
    )
    .await?;
    let m = first_minute(&api, "tick").await?;
    let mut done: Vec<String> = Vec::new();
    for i in 0..4 {
        clock.set(at_minute(m + i, 1));
        let name = format!("tick-{}", m + i);
        let mut want = done.clone();
        want.push(name.clone());
        wait_jobs(&c, "cron", "tick", &want).await?;
        let cj = wait_for("active job in status", T, || async {
            let cj = api.get("tick").await?;
            let active = cj
                .status
                .as_ref()
                .and_then(|s| s.active.clone())
                .unwrap_or_default();
            Ok((active.len() == 1 && active[0].name.as_deref() == Some(&name)).then_some(cj))
        })
        .await?;
        let st = cj.status.unwrap();
        assert_eq!(st.last_schedule_time.unwrap().0, at_minute(m + i, 0));
        let jobs: Api<Job> = c.api("cron");
        let j = jobs.get(&name).await?;
        assert_eq!(
            j.annotations()["batch.kubernetes.io/cronjob-scheduled-timestamp"],
            at_minute(m + i, 0).to_string()
        );
        let owner = &j.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("CronJob", "tick", Some(true))
        );
        finish(&c, "cron", &name, at_minute(m + i, 30), true).await?;
        wait_for("job leaves active", T, || async {
            let cj = api.get("tick").await?;
            let st = cj.status.unwrap_or_default();
            Ok((st.active.unwrap_or_default().is_empty()
                && st.last_successful_time.map(|t| t.0) == Some(at_minute(m + i, 30)))
            .then_some(()))
        })
        .await?;
        done.push(name);
        // Two successful Jobs are kept.
        if done.len() > 2 {
            done.remove(0);
        }
        wait_jobs(&c, "cron", "tick", &done).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbid_skips_and_replace_replaces_a_running_job() -> Result<()> {
    let (c, clock) = start("conc").await?;
    let api = c.api::<CronJob>("conc");
    api.create(
        &PostParams::default(),
        &cronjob("f", "* * * * *", json!({"concurrencyPolicy": "Forbid"})),
    )
    .await?;
    api.create(
        &PostParams::default(),
        &cronjob("r", "* * * * *", json!({"concurrencyPolicy": "Replace"})),
    )
    .await?;
    let m = first_minute(&api, "r")
        .await?
        .max(first_minute(&api, "f").await?);
    clock.set(at_minute(m, 1));
    wait_jobs(&c, "conc", "f", &[format!("f-{m}")]).await?;
    wait_jobs(&c, "conc", "r", &[format!("r-{m}")]).await?;

    clock.set(at_minute(m + 1, 1));
    let msg = wait_event(&c, "conc", "JobAlreadyActive").await?;
    assert_eq!(
        msg,
        "Not starting job because prior execution is running and concurrency policy is Forbid"
    );
    assert_eq!(job_names(&c, "conc", "f").await?, [format!("f-{m}")]);
    wait_jobs(&c, "conc", "r", &[format!("r-{}", m + 1)]).await?;
    let cj = api.get("r").await?;
    let active = cj.status.unwrap().active.unwrap();
    assert_eq!(active.len(), 1);

    // Once the running Job finishes, Forbid starts the time it skipped (no deadline is set).
    finish(&c, "conc", &format!("f-{m}"), at_minute(m + 1, 10), true).await?;
    wait_jobs(&c, "conc", "f", &[format!("f-{m}"), format!("f-{}", m + 1)]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_and_starting_deadline() -> Result<()> {
    let (c, clock) = start("late").await?;
    let api = c.api::<CronJob>("late");
    api.create(
        &PostParams::default(),
        &cronjob(
            "s",
            "* * * * *",
            json!({"suspend": true, "startingDeadlineSeconds": 20}),
        ),
    )
    .await?;
    api.create(
        &PostParams::default(),
        &cronjob("anchor", "* * * * *", json!({})),
    )
    .await?;
    let m = first_minute(&api, "s")
        .await?
        .max(first_minute(&api, "anchor").await?);
    // A schedule time passes while suspended: the other CronJob starts its Job, this one not.
    clock.set(at_minute(m, 5));
    wait_jobs(&c, "late", "anchor", &[format!("anchor-{m}")]).await?;
    // Resumed 30 s after that time: past the 20 s deadline, so it never starts.
    clock.set(at_minute(m, 30));
    api.patch(
        "s",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"suspend": false}})),
    )
    .await?;
    // The next time is in time.
    clock.set(at_minute(m + 1, 5));
    wait_jobs(&c, "late", "s", &[format!("s-{}", m + 1)]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_follow_the_time_zone() -> Result<()> {
    let (c, clock) = start("tz").await?;
    let api = c.api::<CronJob>("tz");
    api.create(
        &PostParams::default(),
        &cronjob("ny", "30 9 * * *", json!({"timeZone": "America/New_York"})),
    )
    .await?;
    let created = api.get("ny").await?.metadata.creation_timestamp.unwrap().0;
    let local = created.in_tz("America/New_York")?;
    let mut fire = local
        .with()
        .hour(9)
        .minute(30)
        .second(0)
        .subsec_nanosecond(0)
        .build()?;
    if fire <= local {
        fire = fire.tomorrow()?.with().hour(9).minute(30).build()?;
    }
    clock.set(fire.timestamp() + SignedDuration::from_secs(1));
    let name = format!("ny-{}", fire.timestamp().as_second() / 60);
    wait_jobs(&c, "tz", "ny", std::slice::from_ref(&name)).await?;
    let j = c.api::<Job>("tz").get(&name).await?;
    let ts = &j.annotations()["batch.kubernetes.io/cronjob-scheduled-timestamp"];
    assert!(
        ts.starts_with(&fire.strftime("%Y-%m-%dT09:30:00").to_string())
            && (ts.ends_with("-05:00") || ts.ends_with("-04:00")),
        "{ts}"
    );
    Ok(())
}
