//! Integration tests of the cluster controllers (garbage collector, endpoints, service accounts,
//! root CA, node lifecycle and IPAM, pod GC, quota, disruption budgets, HPA) against the real
//! API server started in-process. No kubelet runs: the tests drive pod and node status.
#![allow(clippy::unwrap_used, clippy::panic)]

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
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
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

    /// Runs the controller-manager in the background with these flags until the cluster stops.
    fn run(&self, flags: &[&str]) -> Result<()> {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            cfg: controllers::Config,
        }
        let mut args = vec!["controller-manager".to_string()];
        args.push(format!("--kubeconfig={}", self.kubeconfig.display()));
        args.extend(flags.iter().map(|s| s.to_string()));
        let cli = <Cli as clap::Parser>::try_parse_from(args)?;
        let (client, shutdown) = (self.client.clone(), self.shutdown.clone());
        tokio::spawn(async move {
            let clock = std::sync::Arc::new(controllers::common::SystemClock);
            if let Err(e) = controllers::run_with(client, clock, cli.cfg, shutdown).await {
                panic!("controller-manager failed: {e:#}");
            }
        });
        Ok(())
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
    c.run(&["--controllers=garbagecollector"])?;
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
    // Several dependents, so that a collector acting on its cached (still owned) copies
    // after the owner is gone would delete some.
    let owner = configmap(&cms, "or-owner", vec![]).await?;
    let uid = owner.uid().context("uid")?;
    configmap(
        &cms,
        "or-dep",
        vec![owner_ref("ConfigMap", "v1", "or-owner", &uid, true)],
    )
    .await?;
    for i in 0..40 {
        configmap(
            &cms,
            &format!("or-dep-{i}"),
            vec![owner_ref("ConfigMap", "v1", "or-owner", &uid, true)],
        )
        .await?;
    }
    cms.delete(
        "or-owner",
        &DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Orphan),
            ..Default::default()
        },
    )
    .await?;
    wait_for("orphaning owner deleted", 20, || gone(&cms, "or-owner")).await?;
    // A later background deletion completing shows the collector has looked again since.
    let later = configmap(&cms, "later-owner", vec![]).await?;
    let later_uid = later.uid().context("uid")?;
    configmap(
        &cms,
        "later-dep",
        vec![owner_ref(
            "ConfigMap",
            "v1",
            "later-owner",
            &later_uid,
            true,
        )],
    )
    .await?;
    cms.delete("later-owner", &DeleteParams::background())
        .await?;
    wait_for("later dependent collected", 20, || gone(&cms, "later-dep")).await?;
    for name in std::iter::once("or-dep".to_string()).chain((0..40).map(|i| format!("or-dep-{i}")))
    {
        let dep = cms
            .get(&name)
            .await
            .with_context(|| format!("orphan {name} was deleted"))?;
        assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
        assert!(dep.metadata.deletion_timestamp.is_none());
    }
    Ok(())
}

fn pod_json(name: &str, labels: serde_json::Value, ip: &str, ready: bool) -> serde_json::Value {
    json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"name": "http", "containerPort": if name.ends_with('b') { 8081 } else { 8080 }}]}]},
        "status": {"phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    })
}

async fn create_pod_with_status(pods: &Api<Pod>, v: serde_json::Value) -> Result<Pod> {
    let p: Pod = serde_json::from_value(v.clone())?;
    let created = pods.create(&PostParams::default(), &p).await?;
    let status = json!({"status": v["status"].clone()});
    Ok(pods
        .patch_status(
            &created.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?)
}

async fn set_ready(pods: &Api<Pod>, name: &str, ready: bool) -> Result<()> {
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

#[tokio::test]
async fn endpoints_and_slices_follow_pods() -> Result<()> {
    use k8s_openapi::api::core::v1::{Endpoints, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    let c = Cluster::start().await?;
    c.run(&["--controllers=endpoint,endpointslice,garbagecollector"])?;
    c.namespace("ep").await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "ep");
    let svcs: Api<Service> = Api::namespaced(c.client.clone(), "ep");
    let eps: Api<Endpoints> = Api::namespaced(c.client.clone(), "ep");
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "ep");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))?;
    svcs.create(&PostParams::default(), &svc).await?;
    let manual: Service = serde_json::from_value(json!({
        "metadata": {"name": "manual"}, "spec": {"ports": [{"port": 80}]}
    }))?;
    svcs.create(&PostParams::default(), &manual).await?;
    create_pod_with_status(
        &pods,
        pod_json("web-a", json!({"app": "web"}), "10.244.0.5", true),
    )
    .await?;
    create_pod_with_status(
        &pods,
        pod_json("web-b", json!({"app": "web"}), "10.244.0.6", false),
    )
    .await?;
    create_pod_with_status(
        &pods,
        pod_json("other", json!({"app": "db"}), "10.244.0.7", true),
    )
    .await?;

    // Named target ports resolve per pod: web-a serves http on 8080, web-b on 8081.
    let ep = wait_for(
        "endpoints with a ready and a not-ready address",
        20,
        || async {
            let Some(ep) = eps.get_opt("web").await? else {
                return Ok(None);
            };
            let subsets = ep.subsets.clone().unwrap_or_default();
            let ready: Vec<_> = subsets
                .iter()
                .flat_map(|s| s.addresses.clone().unwrap_or_default())
                .collect();
            let not_ready: Vec<_> = subsets
                .iter()
                .flat_map(|s| s.not_ready_addresses.clone().unwrap_or_default())
                .collect();
            Ok((ready.len() == 1 && not_ready.len() == 1).then_some(ep))
        },
    )
    .await?;
    assert_eq!(ep.labels().get("tier").map(String::as_str), Some("front"));
    let subsets = ep.subsets.unwrap_or_default();
    for s in &subsets {
        let port = s.ports.as_ref().unwrap()[0].port;
        if let Some(a) = &s.addresses {
            assert_eq!((a[0].ip.as_str(), port), ("10.244.0.5", 8080));
            assert_eq!(
                a[0].target_ref.as_ref().unwrap().name.as_deref(),
                Some("web-a")
            );
        }
        if let Some(a) = &s.not_ready_addresses {
            assert_eq!((a[0].ip.as_str(), port), ("10.244.0.6", 8081));
        }
    }
    let list = wait_for("endpointslices with both pods", 20, || async {
        let l = slices
            .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?;
        let n: usize = l.items.iter().map(|s| s.endpoints.len()).sum();
        Ok((n == 2).then_some(l.items))
    })
    .await?;
    for s in &list {
        assert_eq!(
            s.labels()
                .get("endpointslice.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("endpointslice-controller.k8s.io")
        );
        assert_eq!(s.owner_references()[0].name, "web");
        let e = &s.endpoints[0];
        let cond = e.conditions.clone().unwrap();
        let port = s.ports.as_ref().unwrap()[0].port;
        match e.addresses[0].as_str() {
            "10.244.0.5" => {
                assert_eq!(
                    (cond.ready, cond.serving, port),
                    (Some(true), Some(true), Some(8080))
                )
            }
            _ => assert_eq!(
                (cond.ready, cond.serving, port),
                (Some(false), Some(false), Some(8081))
            ),
        }
    }

    // Readiness flips move the addresses.
    set_ready(&pods, "web-b", true).await?;
    set_ready(&pods, "web-a", false).await?;
    wait_for("web-b ready, web-a not ready", 20, || async {
        let ep = eps.get("web").await?;
        let subsets = ep.subsets.unwrap_or_default();
        let ready: Vec<String> = subsets
            .iter()
            .flat_map(|s| s.addresses.clone().unwrap_or_default())
            .map(|a| a.ip)
            .collect();
        let not_ready: Vec<String> = subsets
            .iter()
            .flat_map(|s| s.not_ready_addresses.clone().unwrap_or_default())
            .map(|a| a.ip)
            .collect();
        Ok((ready == ["10.244.0.6"] && not_ready == ["10.244.0.5"]).then_some(()))
    })
    .await?;
    wait_for("slices follow readiness", 20, || async {
        let l = slices
            .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?;
        let ready: Vec<String> = l
            .items
            .iter()
            .flat_map(|s| s.endpoints.clone())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
            .map(|e| e.addresses[0].clone())
            .collect();
        Ok((ready == ["10.244.0.6"]).then_some(()))
    })
    .await?;

    // publishNotReadyAddresses lists every pod as ready.
    svcs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"publishNotReadyAddresses": true}})),
    )
    .await?;
    wait_for("all addresses ready", 20, || async {
        let ep = eps.get("web").await?;
        let subsets = ep.subsets.unwrap_or_default();
        let ready = subsets
            .iter()
            .flat_map(|s| s.addresses.clone().unwrap_or_default())
            .count();
        Ok((ready == 2).then_some(()))
    })
    .await?;
    // The service without a selector is left alone.
    assert!(eps.get_opt("manual").await?.is_none());

    // Deleting the service removes its Endpoints and (through the GC) its slices.
    svcs.delete("web", &DeleteParams::default()).await?;
    wait_for("endpoints removed", 20, || gone(&eps, "web")).await?;
    wait_for("slices removed", 20, || async {
        let l = slices
            .list(&kube::api::ListParams::default().labels("kubernetes.io/service-name=web"))
            .await?;
        Ok(l.items.is_empty().then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn new_namespace_gets_default_service_account_and_root_ca() -> Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let c = Cluster::start().await?;
    c.run(&["--controllers=serviceaccount,root-ca-cert-publisher"])?;
    c.namespace("fresh").await?;
    let sas: Api<ServiceAccount> = Api::namespaced(c.client.clone(), "fresh");
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "fresh");
    wait_for("default service account", 20, || async {
        Ok(sas.get_opt("default").await?)
    })
    .await?;
    let ca = wait_for("kube-root-ca.crt", 20, || async {
        Ok(cms.get_opt("kube-root-ca.crt").await?)
    })
    .await?;
    let pem = ca
        .data
        .unwrap_or_default()
        .remove("ca.crt")
        .unwrap_or_default();
    assert!(pem.contains("-----BEGIN CERTIFICATE-----"), "{pem}");
    // Deleted: re-created; edited: restored.
    sas.delete("default", &DeleteParams::default()).await?;
    cms.patch(
        "kube-root-ca.crt",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ca.crt": "junk"}})),
    )
    .await?;
    wait_for("default service account re-created", 20, || async {
        Ok(sas.get_opt("default").await?)
    })
    .await?;
    wait_for("root CA restored", 20, || async {
        let cm = cms.get("kube-root-ca.crt").await?;
        Ok((cm.data.unwrap_or_default().get("ca.crt") == Some(&pem)).then_some(()))
    })
    .await?;
    // Existing namespaces are covered too.
    let kube_system: Api<ConfigMap> = Api::namespaced(c.client.clone(), "kube-system");
    wait_for("root CA in kube-system", 20, || async {
        Ok(kube_system.get_opt("kube-root-ca.crt").await?)
    })
    .await?;
    Ok(())
}

async fn create_node(c: &Cluster, name: &str, ready: bool) -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let n: Node = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    nodes.create(&PostParams::default(), &n).await?;
    heartbeat(c, name, ready).await
}

async fn heartbeat(c: &Cluster, name: &str, ready: bool) -> Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::Node;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let nodes: Api<Node> = Api::all(c.client.clone());
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
        "reason": "KubeletReady", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name}, "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
    match leases.get_opt(name).await? {
        Some(_) => {
            leases
                .patch(name, &PatchParams::default(), &Patch::Merge(&lease))
                .await?;
        }
        None => {
            leases
                .create(&PostParams::default(), &serde_json::from_value(lease)?)
                .await?;
        }
    }
    Ok(())
}

#[tokio::test]
async fn unreachable_node_is_tainted_and_its_pods_evicted() -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let c = Cluster::start().await?;
    c.run(&[
        "--controllers=nodelifecycle",
        "--node-monitor-grace-period=2s",
        "--node-monitor-period=200ms",
        "--default-unreachable-toleration-seconds=2",
        "--default-not-ready-toleration-seconds=2",
    ])?;
    c.namespace("nl").await?;
    create_node(&c, "n1", true).await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "nl");
    let mk = |name: &str, tolerations: serde_json::Value| {
        json!({
            "metadata": {"name": name},
            "spec": {"nodeName": "n1", "tolerations": tolerations,
                "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "podIP": "10.244.0.9",
                "conditions": [{"type": "Ready", "status": "True"}]}
        })
    };
    // The API server's DefaultTolerationSeconds admission gives pods 300 s; this one asks for 2.
    create_pod_with_status(&pods, mk("short", json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2}]))).await?;
    create_pod_with_status(&pods, mk("forever", json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}]))).await?;
    create_pod_with_status(&pods, mk("long", json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 3600}]))).await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    // While the heartbeat renews, the node stays Ready and untainted.
    for _ in 0..6 {
        heartbeat(&c, "n1", true).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let n = nodes.get("n1").await?;
    assert!(n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .is_empty());
    // Heartbeats stop: Unknown, tainted, pods not ready, then evicted per toleration.
    let n = wait_for("node Ready=Unknown", 20, || async {
        let n = nodes.get("n1").await?;
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Ready");
        Ok(ready.filter(|r| r.status == "Unknown").map(|r| (n, r)))
    })
    .await?;
    assert_eq!(n.1.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        n.1.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    wait_for("unreachable taints", 20, || async {
        let n = nodes.get("n1").await?;
        let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        let has = |e: &str| {
            taints
                .iter()
                .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == e)
        };
        Ok((has("NoSchedule") && has("NoExecute")).then_some(()))
    })
    .await?;
    wait_for("pods marked not ready", 20, || async {
        let p = pods.get("long").await?;
        let ready = p
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Ready" && c.status == "False");
        Ok(ready.then_some(()))
    })
    .await?;
    let evicted = |p: Option<Pod>| p.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
    wait_for("pod with a 2 s toleration evicted", 20, || async {
        Ok(evicted(pods.get_opt("short").await?).then_some(()))
    })
    .await?;
    assert!(!evicted(pods.get_opt("forever").await?));
    assert!(!evicted(pods.get_opt("long").await?));
    // The node comes back: taints go.
    heartbeat(&c, "n1", true).await?;
    wait_for("taints removed", 20, || async {
        let n = nodes.get("n1").await?;
        Ok(n.spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn pod_cidrs_are_unique_across_nodes_and_restarts() -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let c = Cluster::start().await?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    // Two nodes hold CIDRs before the allocator starts: it must not hand those out again.
    for (name, cidr) in [("pre-0", "10.244.0.0/24"), ("pre-1", "10.244.3.0/24")] {
        let n: Node = serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
        )?;
        nodes.create(&PostParams::default(), &n).await?;
    }
    c.run(&[
        "--controllers=nodeipam",
        "--cluster-cidr=10.244.0.0/16",
        "--node-cidr-mask-size=24",
    ])?;
    for i in 0..20 {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": format!("n{i}")}}))?;
        nodes.create(&PostParams::default(), &n).await?;
    }
    let cidrs = wait_for("every node has a pod CIDR", 30, || async {
        let l = nodes.list(&Default::default()).await?;
        let cidrs: Vec<String> = l
            .items
            .iter()
            .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
            .collect();
        Ok((cidrs.len() == 22).then_some((l.items, cidrs)))
    })
    .await?;
    let unique: std::collections::HashSet<&String> = cidrs.1.iter().collect();
    assert_eq!(unique.len(), 22, "{:?}", cidrs.1);
    for n in &cidrs.0 {
        let spec = n.spec.clone().unwrap();
        assert_eq!(spec.pod_cidrs, Some(vec![spec.pod_cidr.clone().unwrap()]));
        assert!(spec.pod_cidr.unwrap().starts_with("10.244."));
    }
    Ok(())
}

#[tokio::test]
async fn podgc_removes_excess_terminated_and_orphaned_pods() -> Result<()> {
    use k8s_openapi::api::core::v1::Node;
    let c = Cluster::start().await?;
    c.namespace("pgc").await?;
    create_node(&c, "alive", true).await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "pgc");
    let mk = |name: &str, node: &str, phase: &str| {
        json!({"metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": phase}})
    };
    for i in 0..4 {
        create_pod_with_status(&pods, mk(&format!("done-{i}"), "alive", "Succeeded")).await?;
    }
    create_pod_with_status(&pods, mk("running", "alive", "Running")).await?;
    create_pod_with_status(&pods, mk("orphan", "gone-node", "Running")).await?;
    c.run(&["--controllers=podgc", "--terminated-pod-gc-threshold=2"])?;
    wait_for("orphaned pod deleted", 20, || gone(&pods, "orphan")).await?;
    wait_for("oldest terminated pods deleted", 20, || async {
        let names: Vec<String> = pods
            .list(&Default::default())
            .await?
            .items
            .iter()
            .map(|p| p.name_any())
            .collect();
        Ok((names.iter().filter(|n| n.starts_with("done-")).count() == 2).then_some(names))
    })
    .await
    .map(|names| {
        assert!(
            names.contains(&"done-2".to_string()) && names.contains(&"done-3".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"running".to_string()));
    })?;
    let nodes: Api<Node> = Api::all(c.client.clone());
    assert!(nodes.get_opt("alive").await?.is_some());
    Ok(())
}

#[tokio::test]
async fn pdb_status_counts_healthy_pods() -> Result<()> {
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    let c = Cluster::start().await?;
    c.namespace("pdb").await?;
    c.run(&["--controllers=disruption"])?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "pdb");
    for (i, ready) in [true, true, false].iter().enumerate() {
        create_pod_with_status(
            &pods,
            pod_json(
                &format!("p{i}"),
                json!({"app": "x"}),
                &format!("10.244.1.{i}"),
                *ready,
            ),
        )
        .await?;
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.client.clone(), "pdb");
    let pdb: PodDisruptionBudget = serde_json::from_value(json!({
        "metadata": {"name": "x"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}}
    }))?;
    pdbs.create(&PostParams::default(), &pdb).await?;
    let st = wait_for("pdb status", 20, || async {
        let p = pdbs.get("x").await?;
        Ok(p.status.filter(|s| s.expected_pods == 3))
    })
    .await?;
    assert_eq!(
        (
            st.current_healthy,
            st.desired_healthy,
            st.disruptions_allowed
        ),
        (2, 1, 1)
    );
    let cond = &st.conditions.unwrap()[0];
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_str()
        ),
        ("DisruptionAllowed", "True", "SufficientPods")
    );
    set_ready(&pods, "p0", false).await?;
    let st = wait_for("pdb without room", 20, || async {
        let p = pdbs.get("x").await?;
        Ok(p.status.filter(|s| s.current_healthy == 1))
    })
    .await?;
    assert_eq!(st.disruptions_allowed, 0);
    assert_eq!(st.conditions.unwrap()[0].reason, "InsufficientPods");
    Ok(())
}

#[tokio::test]
async fn resource_quota_tracks_usage() -> Result<()> {
    use k8s_openapi::api::core::v1::ResourceQuota;
    let c = Cluster::start().await?;
    c.namespace("rq").await?;
    c.run(&["--controllers=resourcequota"])?;
    let quotas: Api<ResourceQuota> = Api::namespaced(c.client.clone(), "rq");
    let q: ResourceQuota = serde_json::from_value(json!({"metadata": {"name": "q"},
        "spec": {"hard": {"pods": "10", "requests.cpu": "4", "limits.memory": "1Gi", "configmaps": "5"}}}))?;
    quotas.create(&PostParams::default(), &q).await?;
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "rq");
    for (name, cpu) in [("a", "250m"), ("b", "1")] {
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"containers": [{
            "name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu, "memory": "128Mi"}}}]}}),
        )?;
        pods.create(&PostParams::default(), &p).await?;
    }
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), "rq");
    configmap(&cms, "one", vec![]).await?;
    wait_for("quota usage", 20, || async {
        let q = quotas.get("q").await?;
        let used = q.status.and_then(|s| s.used).unwrap_or_default();
        let get = |k: &str| used.get(k).map(|v| v.0.clone()).unwrap_or_default();
        let want = (get("pods"), get("requests.cpu"), get("limits.memory"));
        Ok((want == ("2".into(), "1250m".into(), "256Mi".into())
            && get("configmaps").parse::<u32>().unwrap_or(0) >= 1)
            .then_some(()))
    })
    .await?;

    // Scoped quotas count only the pods in their scopes (and nothing but pods).
    c.namespace("rq2").await?;
    let scoped: Api<ResourceQuota> = Api::namespaced(c.client.clone(), "rq2");
    let be: ResourceQuota = serde_json::from_value(json!({"metadata": {"name": "be"},
        "spec": {"scopes": ["BestEffort"], "hard": {"pods": "10"}}}))?;
    scoped.create(&PostParams::default(), &be).await?;
    let nbe: ResourceQuota = serde_json::from_value(json!({"metadata": {"name": "nbe"},
        "spec": {"scopeSelector": {"matchExpressions": [{"scopeName": "NotBestEffort", "operator": "Exists"}]},
            "hard": {"pods": "10", "requests.cpu": "4", "configmaps": "5"}}}))?;
    scoped.create(&PostParams::default(), &nbe).await?;
    let pods2: Api<Pod> = Api::namespaced(c.client.clone(), "rq2");
    for (name, resources) in [
        ("plain", json!({})),
        ("x", json!({"requests": {"cpu": "300m"}})),
        ("y", json!({"requests": {"cpu": "200m"}})),
    ] {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": resources}]}}))?;
        pods2.create(&PostParams::default(), &p).await?;
    }
    configmap(&Api::namespaced(c.client.clone(), "rq2"), "cm", vec![]).await?;
    let used = |q: ResourceQuota| {
        let used = q.status.and_then(|s| s.used).unwrap_or_default();
        used.into_iter()
            .map(|(k, v)| format!("{k}={}", v.0))
            .collect::<Vec<_>>()
            .join(",")
    };
    wait_for("scoped quota usage", 20, || async {
        let (be, nbe) = (
            used(scoped.get("be").await?),
            used(scoped.get("nbe").await?),
        );
        Ok((be == "pods=1" && nbe == "configmaps=0,pods=2,requests.cpu=500m").then_some(()))
    })
    .await?;
    pods.delete("b", &DeleteParams::default()).await?;
    wait_for("usage drops", 20, || async {
        let q = quotas.get("q").await?;
        let used = q.status.and_then(|s| s.used).unwrap_or_default();
        Ok((used.get("pods").map(|v| v.0.as_str()) == Some("1")
            && used.get("requests.cpu").map(|v| v.0.as_str()) == Some("250m"))
        .then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn hpa_without_metrics_says_so() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    let c = Cluster::start().await?;
    c.namespace("hpa").await?;
    c.run(&["--controllers=horizontalpodautoscaling"])?;
    let deps: Api<Deployment> = Api::namespaced(c.client.clone(), "hpa");
    let d: Deployment = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    )?;
    deps.create(&PostParams::default(), &d).await?;
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(c.client.clone(), "hpa");
    let h: HorizontalPodAutoscaler = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1, "maxReplicas": 5,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}}),
    )?;
    hpas.create(&PostParams::default(), &h).await?;
    let st = wait_for("hpa conditions", 20, || async {
        Ok(hpas
            .get("web")
            .await?
            .status
            .filter(|s| s.conditions.is_some()))
    })
    .await?;
    assert_eq!(st.current_replicas, Some(3));
    let conds = st.conditions.unwrap();
    let active = conds.iter().find(|c| c.type_ == "ScalingActive").unwrap();
    assert_eq!(
        (active.status.as_str(), active.reason.as_deref()),
        ("False", Some("FailedGetResourceMetric"))
    );
    assert!(active.message.as_deref().unwrap().starts_with(
        "the HPA was unable to compute the replica count: failed to get cpu utilization"
    ));
    Ok(())
}
