//! StatefulSet controller against a real API server; the test plays the kubelet.

#![allow(clippy::unwrap_used)]

mod support;

use anyhow::Result;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::{wait_for, Cluster, T};

fn sts(name: &str, replicas: i32, extra: serde_json::Value) -> StatefulSet {
    let mut spec = json!({
        "replicas": replicas,
        "serviceName": name,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1"}]}
        }
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// Names of the live (not terminating) pods of the set, sorted.
async fn names(c: &Cluster, ns: &str, app: &str) -> Result<Vec<String>> {
    let mut n: Vec<String> = c
        .pods(ns, &format!("app={app}"))
        .await?
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.name_any())
        .collect();
    n.sort();
    Ok(n)
}

async fn wait_names(c: &Cluster, ns: &str, app: &str, want: &[&str]) -> Result<()> {
    wait_for(&format!("pods {want:?}"), T, || async {
        Ok((names(c, ns, app).await? == want).then_some(()))
    })
    .await
}

/// Waits until the status has caught up with the set's generation and `f` holds.
async fn wait_status(
    api: &Api<StatefulSet>,
    name: &str,
    what: &str,
    f: impl Fn(&k8s_openapi::api::apps::v1::StatefulSetStatus) -> bool,
) -> Result<StatefulSet> {
    wait_for(what, T, || async {
        let s = api.get(name).await?;
        let ok = s
            .status
            .as_ref()
            .is_some_and(|st| st.observed_generation == s.metadata.generation && f(st));
        Ok(ok.then_some(s))
    })
    .await
}

fn revision_label(p: &Pod) -> String {
    p.labels()
        .get("controller-revision-hash")
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_ready_creates_pods_one_at_a_time_with_identity_and_claims() -> Result<()> {
    let c = Cluster::start(&["statefulset"]).await?;
    c.namespace("sts").await?;
    let api = c.api::<StatefulSet>("sts");
    let claim = json!({"volumeClaimTemplates": [{
        "metadata": {"name": "www", "labels": {"tier": "data"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }]});
    api.create(&PostParams::default(), &sts("web", 3, claim))
        .await?;

    wait_names(&c, "sts", "web", &["web-0"]).await?;
    // web-1 waits for web-0 to be Running and Ready.
    wait_status(&api, "web", "status counts web-0", |s| s.replicas == 1).await?;
    assert_eq!(names(&c, "sts", "web").await?, ["web-0"]);

    let pods: Api<Pod> = c.api("sts");
    let p = pods.get("web-0").await?;
    let labels = p.labels();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-0");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "0");
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-0"));
    assert_eq!(spec.subdomain.as_deref(), Some("web"));
    let vol = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name == "www")
        .unwrap();
    assert_eq!(
        vol.persistent_volume_claim.as_ref().unwrap().claim_name,
        "www-web-0"
    );
    let owner = &p.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("StatefulSet", Some(true))
    );

    let claims: Api<PersistentVolumeClaim> = c.api("sts");
    let pvc = claims.get("www-web-0").await?;
    assert_eq!(pvc.labels()["tier"], "data");
    assert_eq!(pvc.labels()["app"], "web");
    assert!(
        pvc.owner_references().is_empty(),
        "Retain keeps claims unowned"
    );

    c.make_ready("sts", "web-0").await?;
    wait_names(&c, "sts", "web", &["web-0", "web-1"]).await?;
    c.make_ready("sts", "web-1").await?;
    wait_names(&c, "sts", "web", &["web-0", "web-1", "web-2"]).await?;
    c.make_ready("sts", "web-2").await?;

    let s = wait_status(&api, "web", "all ready", |s| {
        s.ready_replicas == Some(3) && s.available_replicas == Some(3)
    })
    .await?;
    let st = s.status.unwrap();
    assert_eq!(st.replicas, 3);
    assert_eq!(st.current_replicas, Some(3));
    assert_eq!(st.updated_replicas, Some(3));
    assert_eq!(st.current_revision, st.update_revision);
    let rev = st.update_revision.unwrap();
    for p in c.pods("sts", "app=web").await? {
        assert_eq!(revision_label(&p), rev);
    }
    let revs: Api<ControllerRevision> = c.api("sts");
    let r = revs.get(&rev).await?;
    assert_eq!(r.revision, 1);
    assert!(rev.starts_with("web-"));
    for n in ["www-web-1", "www-web-2"] {
        claims.get(n).await?;
    }

    // Scale down: the highest ordinal goes first, one at a time; claims stay.
    api.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await?;
    wait_names(&c, "sts", "web", &["web-0"]).await?;
    wait_status(&api, "web", "scaled to 1", |s| s.replicas == 1).await?;
    claims.get("www-web-2").await?;

    // A deleted pod comes back under the same name with the same claim.
    let uid = pods.get("web-0").await?.uid();
    pods.delete("web-0", &DeleteParams::default()).await?;
    wait_for("web-0 recreated", T, || async {
        Ok(pods
            .get_opt("web-0")
            .await?
            .filter(|p| p.uid() != uid)
            .map(|_| ()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_waits_for_healthy_pods_and_goes_highest_first() -> Result<()> {
    let c = Cluster::start(&["statefulset"]).await?;
    c.namespace("down").await?;
    let api = c.api::<StatefulSet>("down");
    ready_set(&c, "down", "kv", json!({})).await?;
    // kv-0 is not ready: OrderedReady scales down only over healthy pods.
    c.set_phase("down", "kv-0", "Running", false).await?;
    api.patch(
        "kv",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await?;
    wait_status(&api, "kv", "kv-0 seen unready", |s| {
        s.ready_replicas == Some(2)
    })
    .await?;
    assert_eq!(names(&c, "down", "kv").await?, ["kv-0", "kv-1", "kv-2"]);

    let pods: Api<Pod> = c.api("down");
    let rv = pods
        .list(&ListParams::default().labels("app=kv"))
        .await?
        .metadata
        .resource_version
        .unwrap();
    let mut watch = pods
        .watch(&WatchParams::default().labels("app=kv"), &rv)
        .await?
        .boxed();
    c.make_ready("down", "kv-0").await?;
    let mut deleted = Vec::new();
    let deadline = tokio::time::Instant::now() + T;
    while deleted.len() < 2 {
        let ev = tokio::time::timeout_at(deadline, watch.next()).await?;
        if let Some(WatchEvent::Deleted(p)) = ev.transpose()? {
            deleted.push(p.name_any());
        }
    }
    assert_eq!(deleted, ["kv-2", "kv-1"]);
    wait_names(&c, "down", "kv", &["kv-0"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_creates_all_pods_at_once() -> Result<()> {
    let c = Cluster::start(&["statefulset"]).await?;
    c.namespace("par").await?;
    let api = c.api::<StatefulSet>("par");
    api.create(
        &PostParams::default(),
        &sts("p", 4, json!({"podManagementPolicy": "Parallel"})),
    )
    .await?;
    wait_names(&c, "par", "p", &["p-0", "p-1", "p-2", "p-3"]).await?;
    let s = wait_status(&api, "p", "4 replicas", |s| s.replicas == 4).await?;
    assert_eq!(s.status.unwrap().ready_replicas.unwrap_or(0), 0);
    Ok(())
}

async fn ready_set(c: &Cluster, ns: &str, name: &str, extra: serde_json::Value) -> Result<String> {
    let api = c.api::<StatefulSet>(ns);
    api.create(&PostParams::default(), &sts(name, 3, extra))
        .await?;
    let want: Vec<String> = (0..3).map(|i| format!("{name}-{i}")).collect();
    for n in &want {
        wait_for(n, T, || async {
            Ok(names(c, ns, name).await?.contains(n).then_some(()))
        })
        .await?;
        c.make_ready(ns, n).await?;
    }
    let s = wait_status(&api, name, "ready", |s| s.ready_replicas == Some(3)).await?;
    Ok(s.status.unwrap().update_revision.unwrap())
}

async fn set_image(
    api: &Api<StatefulSet>,
    name: &str,
    image: &str,
    partition: Option<i32>,
) -> Result<()> {
    let mut spec = json!({"template": {"spec": {"containers": [{"name": "c", "image": image}]}}});
    if let Some(p) = partition {
        spec["updateStrategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": p}});
    }
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": spec})),
    )
    .await?;
    Ok(())
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// Waits until pod `name` is a live pod at `image`.
async fn wait_image(c: &Cluster, ns: &str, name: &str, img: &str) -> Result<()> {
    let pods: Api<Pod> = c.api(ns);
    wait_for(&format!("{name} at {img}"), T, || async {
        Ok(pods
            .get_opt(name)
            .await?
            .filter(|p| p.metadata.deletion_timestamp.is_none() && image(p) == img)
            .map(|_| ()))
    })
    .await
}

/// Waits until pod `name` is a live pod at `image`, then makes it ready.
async fn wait_updated(c: &Cluster, ns: &str, name: &str, img: &str) -> Result<()> {
    wait_image(c, ns, name, img).await?;
    c.make_ready(ns, name).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_goes_highest_first_down_to_the_partition() -> Result<()> {
    let c = Cluster::start(&["statefulset"]).await?;
    c.namespace("roll").await?;
    let api = c.api::<StatefulSet>("roll");
    let first = ready_set(&c, "roll", "r", json!({})).await?;

    set_image(&api, "r", "busybox:2", Some(2)).await?;
    wait_updated(&c, "roll", "r-2", "busybox:2").await?;
    let s = wait_status(&api, "r", "partitioned rollout", |s| {
        s.updated_replicas == Some(1) && s.ready_replicas == Some(3)
    })
    .await?;
    let st = s.status.unwrap();
    let second = st.update_revision.unwrap();
    assert_ne!(first, second);
    assert_eq!(st.current_revision.as_deref(), Some(first.as_str()));
    assert_eq!(st.current_replicas, Some(2));
    let pods: Api<Pod> = c.api("roll");
    for n in ["r-0", "r-1"] {
        let p = pods.get(n).await?;
        assert_eq!(
            (image(&p), revision_label(&p)),
            ("busybox:1".into(), first.clone())
        );
    }
    assert_eq!(revision_label(&pods.get("r-2").await?), second);

    // Partition 0: r-1, then r-0, each after the previous one is ready again.
    api.patch(
        "r",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await?;
    wait_image(&c, "roll", "r-1", "busybox:2").await?;
    assert_eq!(image(&pods.get("r-0").await?), "busybox:1");
    c.make_ready("roll", "r-1").await?;
    wait_updated(&c, "roll", "r-0", "busybox:2").await?;
    let s = wait_status(&api, "r", "rollout complete", |s| {
        s.updated_replicas == Some(3) && s.current_revision == s.update_revision
    })
    .await?;
    assert_eq!(s.status.unwrap().current_replicas, Some(3));

    // Rolling back reuses the first revision under a new number.
    set_image(&api, "r", "busybox:1", None).await?;
    wait_updated(&c, "roll", "r-2", "busybox:1").await?;
    let revs: Api<ControllerRevision> = c.api("roll");
    let r = wait_for("first revision renumbered", T, || async {
        let r = revs.get(&first).await?;
        Ok((r.revision == 3).then_some(r))
    })
    .await?;
    assert_eq!(r.revision, 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_updates_only_pods_the_user_deletes() -> Result<()> {
    let c = Cluster::start(&["statefulset"]).await?;
    c.namespace("ondel").await?;
    let api = c.api::<StatefulSet>("ondel");
    ready_set(
        &c,
        "ondel",
        "o",
        json!({"updateStrategy": {"type": "OnDelete"}}),
    )
    .await?;
    set_image(&api, "o", "busybox:2", None).await?;
    let s = wait_status(&api, "o", "new revision", |s| {
        s.update_revision != s.current_revision
    })
    .await?;
    assert_eq!(s.status.unwrap().updated_replicas.unwrap_or(0), 0);
    let pods: Api<Pod> = c.api("ondel");
    for n in ["o-0", "o-1", "o-2"] {
        assert_eq!(image(&pods.get(n).await?), "busybox:1");
    }
    pods.delete("o-1", &DeleteParams::default()).await?;
    wait_updated(&c, "ondel", "o-1", "busybox:2").await?;
    wait_status(&api, "o", "one updated", |s| s.updated_replicas == Some(1)).await?;
    assert_eq!(image(&pods.get("o-0").await?), "busybox:1");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_retention_delete_removes_claims_on_scale_down() -> Result<()> {
    let c = Cluster::start(&["statefulset", "garbagecollector"]).await?;
    c.namespace("ret").await?;
    let api = c.api::<StatefulSet>("ret");
    let extra = json!({
        "podManagementPolicy": "Parallel",
        "persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"},
        "volumeClaimTemplates": [{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }]
    });
    api.create(&PostParams::default(), &sts("d", 2, extra))
        .await?;
    wait_names(&c, "ret", "d", &["d-0", "d-1"]).await?;
    let claims: Api<PersistentVolumeClaim> = c.api("ret");
    claims.get("data-d-1").await?;
    api.patch(
        "d",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await?;
    wait_names(&c, "ret", "d", &["d-0"]).await?;
    wait_for("data-d-1 deleted", T, || async {
        Ok(claims
            .get_opt("data-d-1")
            .await?
            .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
            .then_some(()))
    })
    .await?;
    claims.get("data-d-0").await?;
    Ok(())
}
