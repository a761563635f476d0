//! Job controller against a real API server; the test plays the kubelet.

#![allow(clippy::unwrap_used)]

mod support;

use anyhow::Result;
use controllers::job::COMPLETION_INDEX;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::ResourceExt;
use serde_json::json;
use support::{wait_for, Cluster, T};

fn job(name: &str, spec: serde_json::Value) -> Job {
    let mut s = json!({
        "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
    });
    s.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": s})).unwrap()
}

async fn running(c: &Cluster, ns: &str, job: &str) -> Result<Vec<Pod>> {
    Ok(c.pods(ns, &format!("batch.kubernetes.io/job-name={job}"))
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .collect())
}

fn cond(j: &Job, t: &str) -> Option<(String, String)> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == t && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_runs_to_completions_with_parallelism() -> Result<()> {
    let c = Cluster::start(&["job"]).await?;
    c.namespace("jobs").await?;
    let api = c.api::<Job>("jobs");
    api.create(
        &PostParams::default(),
        &job("pi", json!({"completions": 3, "parallelism": 2})),
    )
    .await?;
    let mut finished = 0;
    while finished < 3 {
        let pods = wait_for("active pods", T, || async {
            let p = running(&c, "jobs", "pi").await?;
            let want = (3 - finished).min(2);
            Ok((p.len() == want).then_some(p))
        })
        .await?;
        assert!(pods.len() <= 2, "parallelism exceeded");
        c.finish("jobs", &pods[0].name_any(), true).await?;
        finished += 1;
    }
    let j = wait_for("complete", T, || async {
        let j = api.get("pi").await?;
        Ok(cond(&j, "Complete").is_some().then_some(j))
    })
    .await?;
    assert_eq!(
        cond(&j, "Complete").unwrap(),
        (
            "CompletionsReached".into(),
            "Reached expected number of succeeded pods".into()
        )
    );
    assert!(cond(&j, "SuccessCriteriaMet").is_some());
    let s = j.status.unwrap();
    assert_eq!((s.succeeded, s.active.unwrap_or(0)), (Some(3), 0));
    assert!(s.completion_time.is_some() && s.start_time.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_retries_failed_pods_until_backoff_limit() -> Result<()> {
    let c = Cluster::start(&["job"]).await?;
    c.namespace("retry").await?;
    let api = c.api::<Job>("retry");
    api.create(
        &PostParams::default(),
        &job("flaky", json!({"backoffLimit": 1})),
    )
    .await?;
    for attempt in 0..2 {
        let pods = wait_for("a pod", T, || async {
            let p = running(&c, "retry", "flaky").await?;
            Ok((p.len() == 1).then_some(p))
        })
        .await?;
        c.finish("retry", &pods[0].name_any(), false).await?;
        if attempt == 0 {
            wait_for("retried", T, || async {
                Ok(
                    (api.get("flaky").await?.status.and_then(|s| s.failed) == Some(1))
                        .then_some(()),
                )
            })
            .await?;
        }
    }
    let j = wait_for("failed", T, || async {
        let j = api.get("flaky").await?;
        Ok(cond(&j, "Failed").is_some().then_some(j))
    })
    .await?;
    assert_eq!(
        cond(&j, "Failed").unwrap(),
        (
            "BackoffLimitExceeded".into(),
            "Job has reached the specified backoff limit".into()
        )
    );
    assert!(cond(&j, "FailureTarget").is_some());
    assert_eq!(j.status.unwrap().failed, Some(2));
    assert!(running(&c, "retry", "flaky").await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_deadline_and_ttl() -> Result<()> {
    let c = Cluster::start(&["job"]).await?;
    c.namespace("idx").await?;
    let api = c.api::<Job>("idx");
    api.create(&PostParams::default(), &job("ix", json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "ttlSecondsAfterFinished": 0}))).await?;
    let pods = wait_for("3 pods", T, || async {
        let p = running(&c, "idx", "ix").await?;
        Ok((p.len() == 3).then_some(p))
    })
    .await?;
    let mut idx: Vec<String> = pods
        .iter()
        .map(|p| p.annotations()["batch.kubernetes.io/job-completion-index"].clone())
        .collect();
    idx.sort();
    assert_eq!(idx, ["0", "1", "2"]);
    for p in &pods {
        let i = &p.annotations()["batch.kubernetes.io/job-completion-index"];
        assert!(p.name_any().starts_with(&format!("ix-{i}-")));
        let env = p.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
        assert!(env
            .iter()
            .any(|e| e.name == "JOB_COMPLETION_INDEX" && e.value.as_deref() == Some(i.as_str())));
    }
    for p in &pods[..2] {
        c.finish("idx", &p.name_any(), true).await?;
    }
    wait_for("2 indexes", T, || async {
        let s = api.get("ix").await?.status.unwrap_or_default();
        Ok((s.succeeded == Some(2)
            && s.completed_indexes
                .as_deref()
                .is_some_and(|x| x.len() == 3 || x == "0-1"))
        .then_some(()))
    })
    .await?;
    c.finish("idx", &pods[2].name_any(), true).await?;
    // ttlSecondsAfterFinished: 0 deletes the Job once it is complete.
    // (in the foreground, as upstream does: with no garbage collector running here the Job
    // stays terminating).
    wait_for("job deleted", T, || async {
        let j = api.get_opt("ix").await?;
        Ok(j.is_none_or(|j| j.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;

    api.create(
        &PostParams::default(),
        &job("slow", json!({"activeDeadlineSeconds": 1})),
    )
    .await?;
    let j = wait_for("deadline", T, || async {
        let j = api.get("slow").await?;
        Ok(cond(&j, "Failed").is_some().then_some(j))
    })
    .await?;
    assert_eq!(
        cond(&j, "Failed").unwrap(),
        (
            "DeadlineExceeded".into(),
            "Job was active longer than specified deadline".into()
        )
    );
    Ok(())
}

/// A second pod of one index (as a lagging cache could make) is removed; the index keeps
/// the pod it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexed_job_removes_a_duplicate_index() -> Result<()> {
    let c = Cluster::start(&["job"]).await?;
    c.namespace("dup").await?;
    let api = c.api::<Job>("dup");
    let made = api
        .create(
            &PostParams::default(),
            &job(
                "dx",
                json!({"completions": 2, "parallelism": 2, "completionMode": "Indexed"}),
            ),
        )
        .await?;
    let pods = wait_for("2 pods", T, || async {
        let p = running(&c, "dup", "dx").await?;
        Ok((p.len() == 2).then_some(p))
    })
    .await?;
    let first = pods
        .iter()
        .find(|p| p.annotations()[COMPLETION_INDEX] == "1")
        .unwrap()
        .name_any();
    // Index 1's pod runs and is ready; a copy of it, owned by the Job, is not.
    c.make_ready("dup", &first).await?;
    let mut dup = pods.iter().find(|p| p.name_any() == first).unwrap().clone();
    dup.metadata = kube::api::ObjectMeta {
        name: Some("dx-1-duplicate".into()),
        labels: dup.metadata.labels.clone(),
        annotations: dup.metadata.annotations.clone(),
        owner_references: made
            .uid()
            .map(|uid| vec![support::controller_ref_to("batch/v1", "Job", "dx", &uid)]),
        ..Default::default()
    };
    dup.status = None;
    c.api::<Pod>("dup")
        .create(&PostParams::default(), &dup)
        .await?;
    wait_for("the duplicate removed", T, || async {
        let p = running(&c, "dup", "dx").await?;
        let names: Vec<String> = p.iter().map(|p| p.name_any()).collect();
        Ok((p.len() == 2 && !names.contains(&"dx-1-duplicate".to_string())).then_some(()))
    })
    .await?;
    let mut idx: Vec<String> = running(&c, "dup", "dx")
        .await?
        .iter()
        .map(|p| p.annotations()[COMPLETION_INDEX].clone())
        .collect();
    idx.sort();
    assert_eq!(idx, ["0", "1"]);
    assert!(running(&c, "dup", "dx")
        .await?
        .iter()
        .any(|p| p.name_any() == first));
    Ok(())
}
