//! A real API server in-process and the controllers against it; pods' status is driven by
//! the test (no kubelet runs).
#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use controllers::common::{Clock, SystemClock};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub struct Cluster {
    pub client: Client,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Cluster {
    /// A server and the named controllers (`--controllers` syntax) on the system clock.
    pub async fn start(controllers: &[&str]) -> Result<Self> {
        Self::start_with_clock(controllers, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(controllers: &[&str], clock: Arc<dyn Clock>) -> Result<Self> {
        let (cluster, _) = Self::start_server(|_| {}).await?;
        if !controllers.is_empty() {
            cluster.start_manager(controllers, clock, cluster.shutdown.child_token());
        }
        Ok(cluster)
    }

    /// A server writing an audit log (returned) and the named controllers run as the
    /// controller-manager (`system:kube-controller-manager`) with
    /// `--use-service-account-credentials`.
    pub async fn start_with_own_accounts(
        controllers: &[&str],
    ) -> Result<(Self, std::path::PathBuf)> {
        let (cluster, server) = Self::start_server(|cfg| {
            cfg.audit_log_path = Some(cfg.data_dir().join("audit.log"));
        })
        .await?;
        let cfg = controllers::Config {
            client: client::ClientArgs::with_kubeconfig(&server.controller_manager),
            use_service_account_credentials: true,
            ..manager_config(controllers)
        };
        let stop = cluster.shutdown.child_token();
        tokio::spawn(async move {
            if let Err(e) = controllers::run(cfg, stop).await {
                eprintln!("controllers: {e:#}");
            }
        });
        let audit = cluster._dir.path().join("audit.log");
        Ok((cluster, audit))
    }

    /// A server (configured by `tweak`) and an admin client; also the component kubeconfigs.
    async fn start_server(
        tweak: impl FnOnce(&mut apiserver::Config),
    ) -> Result<(Self, apiserver::auth::identities::ComponentKubeconfigs)> {
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let mut cfg = apiserver::Config::for_test(dir.path().to_path_buf());
        tweak(&mut cfg);
        let server = apiserver::start(cfg, shutdown.clone()).await?;
        let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
        let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = Client::try_from(conf)?;
        let components = server.components.clone();
        tokio::spawn(async move { server.wait().await });
        let cluster = Cluster {
            client,
            shutdown,
            _dir: dir,
        };
        Ok((cluster, components))
    }

    /// Runs a controller-manager (with leader election) until `stop`.
    pub fn start_manager(
        &self,
        controllers: &[&str],
        clock: Arc<dyn Clock>,
        stop: CancellationToken,
    ) {
        let cfg = manager_config(controllers);
        let c = self.client.clone();
        tokio::spawn(async move {
            if let Err(e) = controllers::run_with(c, clock, cfg, stop).await {
                eprintln!("controllers: {e:#}");
            }
        });
    }

    pub async fn namespace(&self, name: &str) -> Result<()> {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(())
    }

    pub fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Pods in `ns` with `selector` (a label selector string).
    pub async fn pods(&self, ns: &str, selector: &str) -> Result<Vec<Pod>> {
        let api: Api<Pod> = self.api(ns);
        Ok(api
            .list(&ListParams::default().labels(selector))
            .await?
            .items)
    }

    /// Marks a pod Running and Ready (as a kubelet would).
    pub async fn make_ready(&self, ns: &str, name: &str) -> Result<()> {
        self.set_phase(ns, name, "Running", true).await
    }

    pub async fn set_phase(&self, ns: &str, name: &str, phase: &str, ready: bool) -> Result<()> {
        let api: Api<Pod> = self.api(ns);
        let now = Timestamp::now().to_string();
        let status = if ready { "True" } else { "False" };
        let patch = json!({"status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": now}],
        }});
        api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Marks a pod finished with `exit` (0 Succeeded, else Failed).
    pub async fn finish(&self, ns: &str, name: &str, succeeded: bool) -> Result<()> {
        let phase = if succeeded { "Succeeded" } else { "Failed" };
        self.set_phase(ns, name, phase, false).await
    }

    /// Makes every not-yet-ready active pod matching `selector` ready; returns how many.
    pub async fn ready_all(&self, ns: &str, selector: &str) -> Result<usize> {
        let mut n = 0;
        for p in self.pods(ns, selector).await? {
            if p.metadata.deletion_timestamp.is_none() && !ready(&p) {
                self.make_ready(ns, &p.name_any()).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

pub fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The configuration of a controller-manager running `controllers` (`--controllers`
/// syntax) with every other flag at its default.
pub fn manager_config(controllers: &[&str]) -> controllers::Config {
    controllers::Config {
        client: Default::default(),
        controllers: controllers.iter().map(|s| s.to_string()).collect(),
        use_service_account_credentials: false,
        leader: Default::default(),
        gc: Default::default(),
        endpointslice: Default::default(),
        node_lifecycle: Default::default(),
        node_ipam: Default::default(),
        podgc: Default::default(),
    }
}

/// A controller owner reference to the `kind` named `name` with `uid`.
pub fn controller_ref_to(
    api_version: &str,
    kind: &str,
    name: &str,
    uid: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Polls `f` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if tokio::time::Instant::now() > deadline {
            match last_err {
                Some(e) => bail!("timed out waiting for {what}: last error {e:#}"),
                None => bail!("timed out waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub const T: Duration = Duration::from_secs(20);
