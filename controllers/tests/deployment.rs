//! Deployment controller (with the ReplicaSet controller) against a real API server.

#![allow(clippy::unwrap_used)]

mod support;

use anyhow::Result;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use support::{ready, wait_for, Cluster, T};

fn deployment(name: &str, replicas: i32, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": strategy,
            "progressDeadlineSeconds": 600,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}
            }
        }
    }))
    .unwrap()
}

async fn active(c: &Cluster, ns: &str, sel: &str) -> Result<Vec<Pod>> {
    Ok(c.pods(ns, sel)
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect())
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

async fn rolled_out(
    c: &Cluster,
    ns: &str,
    name: &str,
    replicas: i32,
) -> Result<Option<Deployment>> {
    let d = c.api::<Deployment>(ns).get(name).await?;
    let s = d.status.clone().unwrap_or_default();
    let done = s.observed_generation == d.metadata.generation
        && s.updated_replicas == Some(replicas)
        && s.replicas == Some(replicas)
        && s.available_replicas == Some(replicas);
    Ok(done.then_some(d))
}

fn condition(d: &Deployment, t: &str) -> (String, String, String) {
    let c = d
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == t)
        .unwrap();
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    )
}

async fn replicasets(c: &Cluster, ns: &str, sel: &str) -> Result<Vec<ReplicaSet>> {
    Ok(c.api::<ReplicaSet>(ns)
        .list(&ListParams::default().labels(sel))
        .await?
        .items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_respects_surge_and_unavailable_then_rolls_back() -> Result<()> {
    let c = Cluster::start(&["replicaset", "deployment"]).await?;
    c.namespace("dep").await?;
    let api = c.api::<Deployment>("dep");
    let strategy =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}});
    api.create(&PostParams::default(), &deployment("web", 4, strategy))
        .await?;
    wait_for("4 pods", T, || async {
        Ok((active(&c, "dep", "app=web").await?.len() == 4).then_some(()))
    })
    .await?;
    c.ready_all("dep", "app=web").await?;
    let d = wait_for("rolled out", T, || rolled_out(&c, "dep", "web", 4)).await?;
    assert_eq!(
        d.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("1")
    );
    let (st, reason, msg) = condition(&d, "Progressing");
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("True", "NewReplicaSetAvailable")
    );
    let rs1 = replicasets(&c, "dep", "app=web").await?;
    assert_eq!(rs1.len(), 1);
    assert_eq!(
        msg,
        format!(
            "ReplicaSet \"{}\" has successfully progressed.",
            rs1[0].name_any()
        )
    );
    assert_eq!(condition(&d, "Available").1, "MinimumReplicasAvailable");
    let hash = rs1[0].labels()["pod-template-hash"].clone();
    assert_eq!(rs1[0].name_any(), format!("web-{hash}"));

    // Roll out a new image, making new pods ready one at a time; check the bounds throughout.
    api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}}))).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut max_total = 0;
    let mut min_ready = 4;
    loop {
        let pods = active(&c, "dep", "app=web").await?;
        let ready_n = pods.iter().filter(|p| ready(p)).count();
        max_total = max_total.max(pods.len());
        min_ready = min_ready.min(ready_n);
        assert!(pods.len() <= 5, "maxSurge exceeded: {} pods", pods.len());
        assert!(ready_n >= 3, "maxUnavailable exceeded: {ready_n} ready");
        if rolled_out(&c, "dep", "web", 4).await?.is_some()
            && pods.iter().all(|p| image(p) == "busybox:2")
        {
            break;
        }
        if let Some(p) = pods.iter().find(|p| image(p) == "busybox:2" && !ready(p)) {
            c.make_ready("dep", &p.name_any()).await?;
        }
        if tokio::time::Instant::now() > deadline {
            for rs in replicasets(&c, "dep", "app=web").await? {
                eprintln!(
                    "RS {} {:?} spec={:?} {:?}",
                    rs.name_any(),
                    rs.annotations(),
                    rs.spec.as_ref().unwrap().replicas,
                    rs.status
                );
            }
            for p in &pods {
                eprintln!(
                    "POD {} {} ready={} owner={:?}",
                    p.name_any(),
                    image(p),
                    ready(p),
                    p.owner_references().first().map(|r| &r.name)
                );
            }
            let d = api.get("web").await?;
            eprintln!("D {:?} {:?}", d.annotations(), d.status);
            panic!("rollout did not finish");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(max_total, 5, "the rollout should use its surge");
    let d = api.get("web").await?;
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "2");
    let rss = replicasets(&c, "dep", "app=web").await?;
    assert_eq!(rss.len(), 2);

    // Rollback as kubectl rollout undo does: the template of revision 1 is written back.
    let old = rss
        .iter()
        .find(|r| r.labels()["pod-template-hash"] == hash)
        .unwrap();
    let mut template = serde_json::to_value(old.spec.as_ref().unwrap().template.as_ref().unwrap())?;
    template["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("pod-template-hash");
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": template}})),
    )
    .await?;
    let r = wait_for("old pods back", T, || async {
        c.ready_all("dep", "app=web").await?;
        let pods = active(&c, "dep", "app=web").await?;
        let done = rolled_out(&c, "dep", "web", 4).await?.is_some();
        Ok((done && pods.len() == 4 && pods.iter().all(|p| image(p) == "busybox:1")).then_some(()))
    })
    .await;
    if r.is_err() {
        for rs in replicasets(&c, "dep", "app=web").await? {
            eprintln!(
                "RS {} {:?} {:?} {}",
                rs.name_any(),
                rs.annotations(),
                rs.status,
                serde_json::to_string(&rs.spec.as_ref().unwrap().template)?
            );
        }
        let d = api.get("web").await?;
        eprintln!(
            "D {:?} {:?} {}",
            d.annotations(),
            d.status,
            serde_json::to_string(&d.spec.as_ref().unwrap().template)?
        );
    }
    r?;
    let back = c.api::<ReplicaSet>("dep").get(&old.name_any()).await?;
    assert_eq!(back.annotations()["deployment.kubernetes.io/revision"], "3");
    assert_eq!(
        back.annotations()["deployment.kubernetes.io/revision-history"],
        "1"
    );
    wait_for("deployment revision 3", T, || async {
        let d = api.get("web").await?;
        Ok((d
            .annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str)
            == Some("3"))
        .then_some(()))
    })
    .await?;

    // Scale through the scale subresource.
    // (The server does not yet retry a patch internally on a write conflict; the test does.)
    wait_for("scaled", T, || async {
        api.patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 6}})),
        )
        .await?;
        Ok(Some(()))
    })
    .await?;
    wait_for("6 pods", T, || async {
        Ok((active(&c, "dep", "app=web").await?.len() == 6).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_removes_old_pods_before_creating_new_ones() -> Result<()> {
    let c = Cluster::start(&["replicaset", "deployment"]).await?;
    c.namespace("rec").await?;
    let api = c.api::<Deployment>("rec");
    api.create(
        &PostParams::default(),
        &deployment("db", 2, json!({"type": "Recreate"})),
    )
    .await?;
    wait_for("2 pods", T, || async {
        Ok((active(&c, "rec", "app=db").await?.len() == 2).then_some(()))
    })
    .await?;
    c.ready_all("rec", "app=db").await?;
    wait_for("rolled out", T, || rolled_out(&c, "rec", "db", 2)).await?;
    api.patch("db", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}}))).await?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pods = c.pods("rec", "app=db").await?;
        let images: std::collections::HashSet<String> = pods.iter().map(image).collect();
        assert!(images.len() <= 1, "old and new pods at once: {images:?}");
        if pods.len() == 2 && images.contains("busybox:2") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "recreate did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployment_does_not_roll_out_and_deadline_is_reported() -> Result<()> {
    let c = Cluster::start(&["replicaset", "deployment"]).await?;
    c.namespace("pause").await?;
    let api = c.api::<Deployment>("pause");
    let mut d = deployment("app", 1, json!({"type": "RollingUpdate"}));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
    api.create(&PostParams::default(), &d).await?;
    // Nothing becomes ready: after 1 s the rollout is reported stuck.
    let d = wait_for("deadline exceeded", T, || async {
        let d = api.get("app").await?;
        let hit = d
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.type_ == "Progressing"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
            });
        Ok(hit.then_some(d))
    })
    .await?;
    assert!(condition(&d, "Progressing")
        .2
        .ends_with("has timed out progressing."));

    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await?;
    wait_for("paused condition", T, || async {
        let d = api.get("app").await?;
        Ok((d
            .status
            .as_ref()
            .is_some_and(|s| s.observed_generation == d.metadata.generation)
            && condition(&d, "Progressing")
                == (
                    "Unknown".into(),
                    "DeploymentPaused".into(),
                    "Deployment is paused".into(),
                ))
            .then_some(()))
    })
    .await?;
    api.patch("app", &PatchParams::default(), &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}}}}))).await?;
    wait_for("observed", T, || async {
        let d = api.get("app").await?;
        Ok(d.status
            .as_ref()
            .is_some_and(|s| s.observed_generation == d.metadata.generation)
            .then_some(()))
    })
    .await?;
    assert_eq!(
        replicasets(&c, "pause", "app=app").await?.len(),
        1,
        "a paused deployment made a new replica set"
    );
    api.patch(
        "app",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": false}})),
    )
    .await?;
    wait_for("new replica set after resume", T, || async {
        Ok((replicasets(&c, "pause", "app=app").await?.len() == 2).then_some(()))
    })
    .await?;
    Ok(())
}
