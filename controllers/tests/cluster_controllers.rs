//! Integration tests of the cluster controllers (garbage collector, endpoints, service accounts,
//! root CA, node lifecycle and IPAM, pod GC, quota, disruption budgets, HPA) against the real
//! API server started in-process. No kubelet runs: the tests drive pod and node status.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Cluster {
    client: Client,
    kubeconfig: std::path::PathBuf,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let server = apiserver::start(
            apiserver::Config::for_test(dir.path().into()),
            shutdown.clone(),
        )
        .await?;
        let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
        let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(Cluster {
            client: Client::try_from(conf)?,
            kubeconfig: server.kubeconfig.clone(),
            shutdown,
            _dir: dir,
        })
    }

    /// Runs one controller in the background until the cluster stops.
    fn spawn<F>(&self, f: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        tokio::spawn(async move {
            if let Err(e) = f.await {
                panic!("controller failed: {e:#}");
            }
        });
    }

    async fn namespace(&self, name: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        api.create(&PostParams::default(), &ns).await?;
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Polls `f` until it yields `Some`, failing after `secs` seconds with the last state seen.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => tracing::debug!("{what}: {e:#}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn owner_ref(
    kind: &str,
    api_version: &str,
    name: &str,
    uid: &str,
    block: bool,
) -> serde_json::Value {
    json!({"apiVersion": api_version, "kind": kind, "name": name, "uid": uid, "blockOwnerDeletion": block})
}

async fn configmap(
    api: &Api<ConfigMap>,
    name: &str,
    owners: Vec<serde_json::Value>,
) -> Result<ConfigMap> {
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": name, "ownerReferences": owners}, "data": {"k": "v"}}),
    )?;
    Ok(api.create(&PostParams::default(), &cm).await?)
}

async fn gone<K>(api: &Api<K>, name: &str) -> Result<Option<()>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api.get_opt(name).await?.is_none().then_some(()))
}

#[tokio::test]
async fn garbage_collector_background_foreground_orphan() -> Result<()> {
    let c = Cluster::start().await?;
    c.spawn(controllers::garbage_collector::run(
        c.client.clone(),
        Default::default(),
        c.shutdown.clone(),
    ));
    c.namespace("gc").await?;
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "gc");
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "gc");

    // Background: the owner goes at once, then its dependents (a pod and a config map).
    let owner = configmap(&cms, "bg-owner", vec![]).await?;
    let uid = owner.uid().context("uid")?;
    configmap(
        &cms,
        "bg-dep",
        vec![owner_ref("ConfigMap", "v1", "bg-owner", &uid, false)],
    )
    .await?;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "bg-pod", "ownerReferences": [owner_ref("ConfigMap", "v1", "bg-owner", &uid, false)]},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    // A dependent with a second, live owner only loses the dead reference.
    let other = configmap(&cms, "bg-other", vec![]).await?;
    let other_uid = other.uid().context("uid")?;
    configmap(
        &cms,
        "bg-shared",
        vec![
            owner_ref("ConfigMap", "v1", "bg-owner", &uid, false),
            owner_ref("ConfigMap", "v1", "bg-other", &other_uid, false),
        ],
    )
    .await?;
    cms.delete("bg-owner", &DeleteParams::background()).await?;
    wait_for("background dependent deleted", 20, || gone(&cms, "bg-dep")).await?;
    wait_for("background pod deleted", 20, || gone(&pods, "bg-pod")).await?;
    wait_for("shared dependent keeps its live owner only", 20, || async {
        let cm = cms.get("bg-shared").await?;
        let refs = cm.metadata.owner_references.unwrap_or_default();
        Ok((refs.len() == 1 && refs[0].uid == other_uid).then_some(()))
    })
    .await?;

    // Foreground: the owner stays (with the finalizer) until its blocking dependents are gone.
    let owner = configmap(&cms, "fg-owner", vec![]).await?;
    let uid = owner.uid().context("uid")?;
    configmap(
        &cms,
        "fg-block",
        vec![owner_ref("ConfigMap", "v1", "fg-owner", &uid, true)],
    )
    .await?;
    // The blocking dependent has a finalizer of its own, so the test controls when it goes.
    cms.patch(
        "fg-block",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": ["test.minik8s.io/hold"]}})),
    )
    .await?;
    configmap(
        &cms,
        "fg-free",
        vec![owner_ref("ConfigMap", "v1", "fg-owner", &uid, false)],
    )
    .await?;
    cms.delete("fg-owner", &DeleteParams::foreground()).await?;
    wait_for("non-blocking dependent deleted", 20, || {
        gone(&cms, "fg-free")
    })
    .await?;
    wait_for("blocking dependent marked for deletion", 20, || async {
        let cm = cms.get("fg-block").await?;
        Ok(cm.metadata.deletion_timestamp.is_some().then_some(()))
    })
    .await?;
    let held = cms.get("fg-owner").await?;
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(held.finalizers().iter().any(|f| f == "foregroundDeletion"));
    cms.patch(
        "fg-block",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    wait_for("blocking dependent gone", 20, || gone(&cms, "fg-block")).await?;
    wait_for("foreground owner deleted", 20, || gone(&cms, "fg-owner")).await?;

    // Orphan: the dependents survive without the owner reference, then the owner goes.
    let owner = configmap(&cms, "or-owner", vec![]).await?;
    let uid = owner.uid().context("uid")?;
    configmap(
        &cms,
        "or-dep",
        vec![owner_ref("ConfigMap", "v1", "or-owner", &uid, true)],
    )
    .await?;
    cms.delete(
        "or-owner",
        &DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
            ..Default::default()
        },
    )
    .await?;
    wait_for("orphaning owner deleted", 20, || gone(&cms, "or-owner")).await?;
    let dep = cms.get("or-dep").await?;
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
    assert!(dep.metadata.deletion_timestamp.is_none());
    Ok(())
}
