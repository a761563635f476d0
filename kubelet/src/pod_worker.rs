//! One worker per pod on the Docker runtime: it drives the pod's sandbox and containers
//! towards the spec (upstream's SyncPod), runs probes and hooks, terminates the pod
//! gracefully when it is deleted and reports its status.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, PortBinding};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::docker::{self, ContainerInfo, Docker};
use crate::events::{field_path, Recorder};
use crate::pod_manager::Settings;
use crate::probe::{self, ProbeState, Report};
use crate::status::{self, Summary};
use crate::{credentials, env, labels, volumes};

/// Why a container is waiting, shown in its status.
#[derive(Debug, Clone)]
struct Waiting {
    reason: String,
    message: String,
}

struct Probes {
    stop: CancellationToken,
    state: Arc<Mutex<ProbeState>>,
}

/// The worker of one pod.
pub struct PodWorker {
    client: kube::Client,
    docker: Docker,
    settings: Arc<Settings>,
    events: Recorder,
    uid: String,
    pod_rx: watch::Receiver<(Pod, bool)>,
    wake: Arc<Notify>,
    backoff: Backoff,
    pull_backoff: Backoff,
    /// Restart keys already reported with a BackOff event (container name + attempt).
    backoff_reported: std::collections::HashSet<String>,
    waiting: HashMap<String, Waiting>,
    probes: HashMap<String, Probes>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports_rx: mpsc::UnboundedReceiver<Report>,
    /// Inspections of exited containers (they no longer change).
    exited: HashMap<String, ContainerInfo>,
    messages: HashMap<String, String>,
    volumes: Option<HashMap<String, volumes::Prepared>>,
    volumes_synced: Option<tokio::time::Instant>,
    tokens: volumes::TokenCache,
    last_status: Option<Value>,
    next_wake: Option<tokio::time::Instant>,
    start_time: Option<String>,
}

/// The pod's containers on the node, newest first per name.
#[derive(Default)]
struct Observed {
    sandbox: Option<ContainerInfo>,
    old_sandboxes: Vec<ContainerInfo>,
    by_name: HashMap<String, Vec<ContainerInfo>>,
}

impl Observed {
    fn latest(&self, name: &str) -> Option<&ContainerInfo> {
        self.by_name.get(name).and_then(|v| v.first())
    }
    fn previous(&self, name: &str) -> Option<&ContainerInfo> {
        self.by_name.get(name).and_then(|v| v.get(1))
    }
}

fn restart_policy(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into())
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0)
}

/// Docker's name for a container: unique per node, attempt and pod.
fn container_name(node: &str, c: &str, pod: &Pod, attempt: i32) -> String {
    format!(
        "k8s_{c}_{}_{}_{}_{attempt}_{node}",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
    )
}

impl PodWorker {
    pub fn new(
        client: kube::Client,
        docker: Docker,
        settings: Arc<Settings>,
        events: Recorder,
        uid: String,
        pod_rx: watch::Receiver<(Pod, bool)>,
        wake: Arc<Notify>,
    ) -> PodWorker {
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        PodWorker {
            client,
            docker,
            settings,
            events,
            uid,
            pod_rx,
            wake,
            backoff: Backoff::default(),
            pull_backoff: Backoff::default(),
            backoff_reported: Default::default(),
            waiting: HashMap::new(),
            probes: HashMap::new(),
            reports_tx,
            reports_rx,
            exited: HashMap::new(),
            messages: HashMap::new(),
            volumes: None,
            volumes_synced: None,
            tokens: volumes::TokenCache::default(),
            last_status: None,
            next_wake: None,
            start_time: None,
        }
    }

    /// Runs until the pod is gone from this node (or `shutdown`, leaving containers running).
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let (pod, deleted) = self.pod_rx.borrow_and_update().clone();
            match pod {
                pod if deleted => {
                    self.remove_everything(&pod).await;
                    return;
                }
                pod if pod.metadata.deletion_timestamp.is_some() => {
                    if self.terminate(&pod).await {
                        return;
                    }
                }
                pod => {
                    if let Err(e) = self.sync(&pod).await {
                        tracing::warn!(pod = %pod_key(&pod), error = %e, "syncing pod");
                        self.wake_in(Duration::from_secs(2));
                    }
                }
            }
            let until = self
                .next_wake
                .take()
                .unwrap_or_else(|| tokio::time::Instant::now() + self.settings.sync_frequency);
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.stop_probes();
                    return;
                }
                r = self.pod_rx.changed() => {
                    if r.is_err() {
                        self.stop_probes();
                        return;
                    }
                }
                _ = self.wake.notified() => {}
                Some(rep) = self.reports_rx.recv() => self.handle_report(rep).await,
                _ = tokio::time::sleep_until(until) => {}
            }
            while let Ok(rep) = self.reports_rx.try_recv() {
                self.handle_report(rep).await;
            }
        }
    }

    fn wake_in(&mut self, d: Duration) {
        let at = tokio::time::Instant::now() + d;
        self.next_wake = Some(match self.next_wake {
            Some(w) if w < at => w,
            _ => at,
        });
    }

    fn current_pod(&self) -> Option<Pod> {
        let (pod, deleted) = self.pod_rx.borrow().clone();
        (!deleted).then_some(pod)
    }

    async fn handle_report(&mut self, rep: Report) {
        let Some(pod) = self.current_pod() else {
            return;
        };
        match rep {
            Report::Changed => {}
            Report::Unhealthy {
                container,
                kind,
                message,
            } => {
                self.events.pod(
                    &pod,
                    Some(field_path(false, &container)),
                    true,
                    "Unhealthy",
                    format!("{} probe failed: {}", kind.name(), message.trim_end()),
                );
            }
            Report::Kill {
                container_id,
                container,
                kind,
                grace,
            } => {
                let what = match kind {
                    probe::Kind::Startup => "startup",
                    _ => "liveness",
                };
                self.events.pod(
                    &pod,
                    Some(field_path(false, &container)),
                    false,
                    "Killing",
                    format!("Container {container} failed {what} probe, will be restarted"),
                );
                if let Some(p) = self.probes.remove(&container_id) {
                    p.stop.cancel();
                }
                let grace = grace.unwrap_or_else(|| grace_seconds(&pod));
                if let Some(c) = find_container(&pod, &container) {
                    self.run_pre_stop(&pod, &c, &container_id, Duration::from_secs(grace as u64))
                        .await;
                }
                if let Err(e) = self
                    .docker
                    .stop(&container_id, Duration::from_secs(grace as u64))
                    .await
                {
                    tracing::warn!(container = %container, error = %e, "killing unhealthy container");
                }
            }
        }
    }

    fn stop_probes(&mut self) {
        for (_, p) in self.probes.drain() {
            p.stop.cancel();
        }
    }

    async fn observe(&mut self) -> docker::Result<Observed> {
        let mut obs = Observed::default();
        let listed = self.docker.list(Some(&self.uid)).await?;
        let mut all = Vec::new();
        for (id, _) in listed {
            if let Some(c) = self.exited.get(&id) {
                all.push(c.clone());
                continue;
            }
            if let Some(c) = self.docker.inspect(&id).await? {
                if !c.running && !c.never_started {
                    self.exited.insert(id.clone(), c.clone());
                }
                all.push(c);
            }
        }
        all.sort_by(|a, b| {
            b.attempt
                .cmp(&a.attempt)
                .then(b.created_at.cmp(&a.created_at))
        });
        for c in all {
            if c.name == labels::SANDBOX {
                if obs.sandbox.is_none() {
                    obs.sandbox = Some(c);
                } else {
                    obs.old_sandboxes.push(c);
                }
            } else {
                obs.by_name.entry(c.name.clone()).or_default().push(c);
            }
        }
        Ok(obs)
    }

    /// Removes exited containers beyond the newest two of each name, and old sandboxes.
    async fn collect_garbage(&mut self, obs: &Observed) {
        let mut doomed: Vec<String> = obs
            .old_sandboxes
            .iter()
            .filter(|c| !c.running)
            .map(|c| c.id.clone())
            .collect();
        for list in obs.by_name.values() {
            doomed.extend(
                list.iter()
                    .skip(2)
                    .filter(|c| !c.running)
                    .map(|c| c.id.clone()),
            );
        }
        for id in doomed {
            if let Err(e) = self.docker.remove(&id).await {
                tracing::debug!(id, error = %e, "removing old container");
            }
            self.exited.remove(&id);
            self.messages.remove(&id);
        }
    }

    async fn prepare_volumes(&mut self, pod: &Pod, pod_ip: &str) -> Result<(), String> {
        let fresh = self
            .volumes_synced
            .is_some_and(|t| t.elapsed() < self.settings.sync_frequency);
        if fresh && self.volumes.is_some() {
            return Ok(());
        }
        let ctx = volumes::VolumeContext {
            client: &self.client,
            docker: &self.docker,
            root: &self.settings.root_dir,
            pod,
            pod_ip,
            host_ip: &self.settings.host_ip,
            allocatable: self.settings.allocatable,
            tokens: &self.tokens,
        };
        match volumes::prepare(&ctx).await {
            Ok(v) => {
                self.volumes = Some(v);
                self.volumes_synced = Some(tokio::time::Instant::now());
                Ok(())
            }
            Err(e) => {
                self.events.pod(
                    pod,
                    None,
                    true,
                    "FailedMount",
                    format!("MountVolume.SetUp failed: {e}"),
                );
                Err(e)
            }
        }
    }

    async fn start_sandbox(&mut self, pod: &Pod, attempt: i32) -> Result<ContainerInfo, String> {
        let image = self.settings.infra_image.clone();
        self.docker
            .ensure_infra_image(&image)
            .await
            .map_err(|e| format!("infra image {image}: {}", docker::message(&e)))?;
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network == Some(true);
        let mut port_bindings = HashMap::new();
        let mut exposed = Vec::new();
        for c in spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
        {
            for p in c.ports.iter().flatten() {
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_lowercase();
                let key = format!("{}/{proto}", p.container_port);
                if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                    if !host_network {
                        exposed.push(key.clone());
                        port_bindings.insert(
                            key,
                            Some(vec![PortBinding {
                                host_ip: p.host_ip.clone(),
                                host_port: Some(hp.to_string()),
                            }]),
                        );
                    }
                }
            }
        }
        let hostname = spec
            .hostname
            .clone()
            .or_else(|| pod.metadata.name.clone())
            .unwrap_or_default();
        let attachment = if host_network {
            None
        } else {
            self.settings
                .pod_network
                .attachment()
                .await
                .map_err(|e| format!("pod network: {e}"))?
        };
        let body = ContainerCreateBody {
            image: Some(image),
            hostname: (!host_network).then_some(hostname.chars().take(63).collect()),
            labels: Some(self.labels(pod, labels::SANDBOX, "sandbox", attempt, None)),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(HostConfig {
                network_mode: Some(match (&attachment, host_network) {
                    (_, true) => "host".into(),
                    (Some(a), false) => a.network.clone(),
                    (None, false) => "bridge".into(),
                }),
                ipc_mode: Some(if spec.host_ipc == Some(true) {
                    "host".into()
                } else {
                    "shareable".into()
                }),
                pid_mode: (spec.host_pid == Some(true)).then(|| "host".into()),
                port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = container_name(&self.settings.node_name, labels::SANDBOX, pod, attempt);
        let id = self
            .docker
            .create(&name, body)
            .await
            .map_err(|e| docker::message(&e))?;
        self.docker
            .start(&id)
            .await
            .map_err(|e| docker::message(&e))?;
        if let Some(a) = &attachment {
            self.settings.pod_network.sandbox_started(a).await;
        }
        self.docker
            .inspect(&id)
            .await
            .map_err(|e| docker::message(&e))?
            .ok_or_else(|| "sandbox vanished after start".to_string())
    }

    fn labels(
        &self,
        pod: &Pod,
        name: &str,
        kind: &str,
        attempt: i32,
        c: Option<&Container>,
    ) -> HashMap<String, String> {
        let mut l = HashMap::from([
            (labels::NODE.to_string(), self.settings.node_name.clone()),
            (
                labels::POD_NAMESPACE.to_string(),
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
            (
                labels::POD_NAME.to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (labels::POD_UID.to_string(), self.uid.clone()),
            (labels::CONTAINER_NAME.to_string(), name.to_string()),
            (labels::CONTAINER_KIND.to_string(), kind.to_string()),
            (labels::ATTEMPT.to_string(), attempt.to_string()),
            (
                labels::GRACE_PERIOD.to_string(),
                grace_seconds(pod).to_string(),
            ),
        ]);
        if !self.docker.cluster().is_empty() {
            l.insert(
                labels::CLUSTER.to_string(),
                self.docker.cluster().to_string(),
            );
        }
        if let Some(c) = c {
            l.insert(
                labels::TERMINATION_MESSAGE_PATH.to_string(),
                c.termination_message_path
                    .clone()
                    .unwrap_or_else(|| "/dev/termination-log".into()),
            );
        }
        l
    }

    /// The container's image is present, pulled as its policy says. Err: (reason, message).
    async fn ensure_image(&mut self, pod: &Pod, c: &Container, init: bool) -> Result<(), Waiting> {
        let image = c.image.clone().unwrap_or_default();
        let fp = Some(field_path(init, &c.name));
        let (_, tag) = docker::split_image(&image);
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if tag == "latest" {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = self.docker.image_id(&image).await.map_err(|e| Waiting {
            reason: "ErrImagePull".into(),
            message: docker::message(&e),
        })?;
        if policy == "Never" || (policy == "IfNotPresent" && present.is_some()) {
            if present.is_some() {
                self.events.pod(
                    pod,
                    fp,
                    false,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                return Ok(());
            }
            let message =
                format!("Container image \"{image}\" is not present with pull policy of Never");
            self.events
                .pod(pod, fp, true, "ErrImageNeverPull", message.clone());
            return Err(Waiting {
                reason: "ErrImageNeverPull".into(),
                message,
            });
        }
        let now = Utc::now();
        if let Some(until) = self.pull_backoff.in_backoff_until(&image, now, now) {
            let prev = self
                .waiting
                .get(&c.name)
                .map(|w| w.message.clone())
                .unwrap_or_default();
            let inner = prev
                .split_once(": ErrImagePull: ")
                .map(|(_, m)| m.to_string())
                .unwrap_or(prev);
            let _ = until;
            self.events.pod(
                pod,
                fp,
                false,
                "BackOff",
                format!("Back-off pulling image \"{image}\""),
            );
            return Err(Waiting {
                reason: "ImagePullBackOff".into(),
                message: format!("Back-off pulling image \"{image}\": ErrImagePull: {inner}"),
            });
        }
        self.events.pod(
            pod,
            fp.clone(),
            false,
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let started = std::time::Instant::now();
        let keyring = self.pull_secrets(pod).await;
        match self.pull(&image, &keyring).await {
            Ok(()) => {
                self.pull_backoff.reset(&image);
                self.events.pod(
                    pod,
                    fp,
                    false,
                    "Pulled",
                    format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(())
            }
            Err(e) => {
                let msg = docker::message(&e);
                self.pull_backoff.next(&image, Utc::now());
                self.wake_in(self.pull_backoff.current(&image));
                self.events.pod(
                    pod,
                    fp.clone(),
                    true,
                    "Failed",
                    format!("Failed to pull image \"{image}\": {msg}"),
                );
                self.events
                    .pod(pod, fp, true, "Failed", "Error: ErrImagePull".into());
                Err(Waiting {
                    reason: "ErrImagePull".into(),
                    message: msg,
                })
            }
        }
    }

    /// The registry logins of the pod's image pull secrets. Secrets that cannot be read are
    /// named in a FailedToRetrieveImagePullSecret event, and the pull goes on without them.
    async fn pull_secrets(&mut self, pod: &Pod) -> credentials::Keyring {
        let mut keyring = credentials::Keyring::default();
        let names: Vec<String> = pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.as_ref())
            .into_iter()
            .flatten()
            .map(|r| r.name.clone())
            .filter(|n| !n.is_empty())
            .collect();
        if names.is_empty() {
            return keyring;
        }
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let mut failed = Vec::new();
        for name in names {
            match api.get_opt(&name).await {
                Ok(Some(secret)) => {
                    if let Err(e) = keyring.add_secret(&secret) {
                        tracing::warn!(namespace = %ns, secret = %name, error = %e, "unusable image pull secret");
                        failed.push(name);
                    }
                }
                Ok(None) => failed.push(name),
                Err(e) => {
                    tracing::warn!(namespace = %ns, secret = %name, error = %e, "reading an image pull secret");
                    failed.push(name);
                }
            }
        }
        if !failed.is_empty() {
            self.events.pod(
                pod,
                None,
                true,
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    failed.join(", ")
                ),
            );
        }
        keyring
    }

    /// Pulls `image` with each login `keyring` has for it in turn (most specific first) until
    /// one works, anonymously when it has none, as upstream's kubelet does.
    async fn pull(&self, image: &str, keyring: &credentials::Keyring) -> docker::Result<()> {
        let logins = keyring.lookup(image);
        if logins.is_empty() {
            return self.docker.pull(image, None).await;
        }
        let mut last = None;
        for login in logins {
            match self.docker.pull(image, Some(login.docker())).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Starts (or restarts, honouring the back-off) one container. Returns whether it runs now.
    async fn start_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        kind: &str,
        obs: &Observed,
        sandbox: &ContainerInfo,
        pod_ip: &str,
    ) -> bool {
        let init = kind != "app";
        let fp = Some(field_path(init, &c.name));
        let latest = obs.latest(&c.name);
        let attempt = latest.map(|l| l.attempt + 1).unwrap_or(0);
        let key = c.name.clone();
        if let Some(l) = latest {
            let now = Utc::now();
            let finished = l.finished_at.unwrap_or(now);
            if let (Some(s), Some(f)) = (l.started_at, l.finished_at) {
                if (f - s).to_std().unwrap_or_default() >= crate::backoff::RESET_AFTER {
                    self.backoff.reset(&key);
                }
            }
            if let Some(until) = self.backoff.in_backoff_until(&key, finished, now) {
                let secs = self.backoff.current(&key).as_secs();
                let reported = format!("{key}/{attempt}");
                if self.backoff_reported.insert(reported) {
                    self.events.pod(
                        pod,
                        fp,
                        true,
                        "BackOff",
                        format!(
                            "Back-off restarting failed container {} in pod {}",
                            c.name,
                            pod_key(pod)
                        ),
                    );
                }
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: format!(
                            "back-off {secs}s restarting failed container={} pod={}",
                            c.name,
                            pod_key(pod)
                        ),
                    },
                );
                let wait = (until - now).to_std().unwrap_or_default();
                self.wake_in(wait + Duration::from_millis(50));
                return false;
            }
            self.backoff.next(&key, now);
        }
        if let Err(w) = self.ensure_image(pod, c, init).await {
            self.waiting.insert(c.name.clone(), w);
            return false;
        }
        let env_ctx = env::EnvContext {
            client: &self.client,
            pod,
            pod_ip,
            host_ip: &self.settings.host_ip,
            allocatable: self.settings.allocatable,
        };
        let envs = match env::container_env(&env_ctx, c).await {
            Ok(e) => e,
            Err(msg) => {
                self.events
                    .pod(pod, fp, true, "Failed", format!("Error: {msg}"));
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: msg,
                    },
                );
                self.wake_in(Duration::from_secs(2));
                return false;
            }
        };
        let mut mounts = match volumes::container_mounts(
            c,
            self.volumes.as_ref().unwrap_or(&HashMap::new()),
            &envs,
        )
        .await
        {
            Ok(m) => m,
            Err(msg) => {
                self.events
                    .pod(pod, fp, true, "Failed", format!("Error: {msg}"));
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message: msg,
                    },
                );
                return false;
            }
        };
        match self.termination_log(c, attempt).await {
            Ok(m) => mounts.push(m),
            Err(e) => tracing::warn!(container = %c.name, error = %e, "termination-log file"),
        }
        let (root, dns) = (&self.settings.root_dir, &self.settings.dns);
        match crate::dns::container_mounts(dns, root, &self.uid, pod, pod_ip, c).await {
            Ok(m) => mounts.extend(m),
            Err(msg) => {
                self.events
                    .pod(pod, fp, true, "DNSConfigForming", msg.clone());
                let reason = "CreateContainerConfigError".into();
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason,
                        message: msg,
                    },
                );
                return false;
            }
        }
        let body = self.container_body(pod, c, kind, attempt, &envs, mounts, sandbox);
        let name = container_name(&self.settings.node_name, &c.name, pod, attempt);
        let id = match self.docker.create(&name, body).await {
            Ok(id) => id,
            Err(e) => {
                let msg = docker::message(&e);
                self.events
                    .pod(pod, fp, true, "Failed", format!("Error: {msg}"));
                self.waiting.insert(
                    c.name.clone(),
                    Waiting {
                        reason: "CreateContainerError".into(),
                        message: msg,
                    },
                );
                self.wake_in(Duration::from_secs(2));
                return false;
            }
        };
        self.events.pod(
            pod,
            fp.clone(),
            false,
            "Created",
            format!("Created container: {}", c.name),
        );
        if let Err(e) = self.docker.start(&id).await {
            let msg = docker::message(&e);
            self.events
                .pod(pod, fp, true, "Failed", format!("Error: {msg}"));
            self.waiting.insert(
                c.name.clone(),
                Waiting {
                    reason: "RunContainerError".into(),
                    message: msg,
                },
            );
            self.wake_in(Duration::from_secs(1));
            return false;
        }
        self.waiting.remove(&c.name);
        self.events.pod(
            pod,
            fp.clone(),
            false,
            "Started",
            format!("Started container {}", c.name),
        );
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            if let Err(msg) = self.run_hook(h, c, &id, pod_ip).await {
                self.events.pod(
                    pod,
                    fp,
                    true,
                    "FailedPostStartHook",
                    format!("PostStartHook failed: {msg}"),
                );
                let _ = self
                    .docker
                    .stop(&id, Duration::from_secs(grace_seconds(pod) as u64))
                    .await;
                return false;
            }
        }
        true
    }

    async fn termination_log(&self, c: &Container, attempt: i32) -> std::io::Result<Mount> {
        let dir = volumes::pod_dir(&self.settings.root_dir, &self.uid)
            .join("containers")
            .join(&c.name);
        tokio::fs::create_dir_all(&dir).await?;
        let file: PathBuf = dir.join(attempt.to_string());
        tokio::fs::write(&file, b"").await?;
        tokio::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .await?;
        Ok(Mount {
            target: Some(
                c.termination_message_path
                    .clone()
                    .unwrap_or_else(|| "/dev/termination-log".into()),
            ),
            source: Some(file.to_string_lossy().into_owned()),
            typ: Some(MountType::BIND),
            ..Default::default()
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn container_body(
        &self,
        pod: &Pod,
        c: &Container,
        kind: &str,
        attempt: i32,
        envs: &[(String, String)],
        mounts: Vec<Mount>,
        sandbox: &ContainerInfo,
    ) -> ContainerCreateBody {
        let spec = pod.spec.clone().unwrap_or_default();
        let vars: HashMap<String, String> = envs.iter().cloned().collect();
        let expand = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map(|v| v.iter().map(|s| env::expand(s, &vars)).collect::<Vec<_>>())
        };
        let psc = spec.security_context.clone().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(psc.run_as_user);
        let gid = sc.run_as_group.or(psc.run_as_group);
        let user = match (uid, gid) {
            (Some(u), Some(g)) => Some(format!("{u}:{g}")),
            (Some(u), None) => Some(u.to_string()),
            (None, Some(g)) => Some(format!("0:{g}")),
            (None, None) => None,
        };
        let (cpu_limit, mem_limit) = env::limits(c);
        let caps = sc.capabilities.clone().unwrap_or_default();
        let sandbox_ref = format!("container:{}", sandbox.id);
        ContainerCreateBody {
            image: c.image.clone(),
            entrypoint: expand(&c.command),
            cmd: expand(&c.args),
            env: Some(envs.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: c.working_dir.clone(),
            user,
            tty: c.tty,
            open_stdin: c.stdin,
            stdin_once: c.stdin_once,
            attach_stdin: c.stdin,
            labels: Some(self.labels(pod, &c.name, kind, attempt, Some(c))),
            host_config: Some(HostConfig {
                network_mode: Some(sandbox_ref.clone()),
                ipc_mode: Some(sandbox_ref.clone()),
                pid_mode: if spec.share_process_namespace == Some(true) {
                    Some(sandbox_ref)
                } else if spec.host_pid == Some(true) {
                    Some("host".into())
                } else {
                    None
                },
                mounts: Some(mounts),
                memory: mem_limit,
                cpu_period: cpu_limit.map(|_| 100_000),
                cpu_quota: cpu_limit.map(|m| (m * 100).max(1000)),
                cpu_shares: env::cpu_request(c).map(|m| (m * 1024 / 1000).max(2)),
                privileged: sc.privileged,
                readonly_rootfs: sc.read_only_root_filesystem,
                cap_add: caps.add.clone(),
                cap_drop: caps.drop.clone(),
                group_add: psc
                    .supplemental_groups
                    .as_ref()
                    .map(|g| g.iter().map(|g| g.to_string()).collect()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Runs a lifecycle hook (exec, httpGet or sleep). Err: its failure message.
    async fn run_hook(
        &self,
        h: &LifecycleHandler,
        c: &Container,
        id: &str,
        pod_ip: &str,
    ) -> Result<(), String> {
        if let Some(s) = &h.sleep {
            tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64)).await;
            return Ok(());
        }
        if let Some(e) = &h.exec {
            let cmd = e.command.clone().unwrap_or_default();
            return match self.docker.exec(id, &cmd).await {
                Ok((0, _)) => Ok(()),
                Ok((code, out)) => Err(format!(
                    "command '{}' exited with {code}: {out}",
                    cmd.join(" ")
                )),
                Err(e) => Err(docker::message(&e)),
            };
        }
        if let Some(g) = &h.http_get {
            let p = k8s_openapi::api::core::v1::Probe {
                http_get: Some(g.clone()),
                timeout_seconds: Some(30),
                ..Default::default()
            };
            return match probe::run_once(&p, c, &self.docker, id, pod_ip).await {
                probe::Outcome::Success => Ok(()),
                probe::Outcome::Failure(m) => Err(m),
            };
        }
        Ok(())
    }

    async fn run_pre_stop(&self, pod: &Pod, c: &Container, id: &str, within: Duration) {
        let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
            return;
        };
        let ip = self
            .last_status
            .as_ref()
            .and_then(|s| s["podIP"].as_str())
            .unwrap_or_default()
            .to_string();
        match tokio::time::timeout(within, self.run_hook(h, c, id, &ip)).await {
            Ok(Ok(())) => {}
            Ok(Err(msg)) => self.events.pod(
                pod,
                Some(field_path(false, &c.name)),
                true,
                "FailedPreStopHook",
                format!("PreStopHook failed: {msg}"),
            ),
            Err(_) => {
                tracing::info!(container = %c.name, "preStop hook did not finish within the grace period")
            }
        }
    }

    fn ensure_probes(&mut self, c: &Container, info: &ContainerInfo, pod_ip: &str) {
        if self.probes.contains_key(&info.id) {
            return;
        }
        let state = Arc::new(Mutex::new(ProbeState {
            started: c.startup_probe.is_none(),
            ready: c.readiness_probe.is_none(),
        }));
        let stop = CancellationToken::new();
        for (kind, p) in [
            (probe::Kind::Startup, &c.startup_probe),
            (probe::Kind::Liveness, &c.liveness_probe),
            (probe::Kind::Readiness, &c.readiness_probe),
        ] {
            if let Some(p) = p {
                let w = probe::Worker {
                    kind,
                    probe: p.clone(),
                    container: c.clone(),
                    container_id: info.id.clone(),
                    pod_ip: pod_ip.to_string(),
                    docker: self.docker.clone(),
                    state: state.clone(),
                    reports: self.reports_tx.clone(),
                    wake: self.wake.clone(),
                };
                tokio::spawn(w.run(stop.clone()));
            }
        }
        self.probes.insert(info.id.clone(), Probes { stop, state });
    }

    fn probe_state(&self, id: &str) -> ProbeState {
        self.probes
            .get(id)
            .map(|p| p.state.lock().clone())
            .unwrap_or_default()
    }

    /// Drops probe workers of containers that no longer run.
    fn prune_probes(&mut self, obs: &Observed) {
        let running: std::collections::HashSet<&str> = obs
            .by_name
            .values()
            .filter_map(|v| v.first())
            .filter(|c| c.running)
            .map(|c| c.id.as_str())
            .collect();
        self.probes.retain(|id, p| {
            let keep = running.contains(id.as_str());
            if !keep {
                p.stop.cancel();
            }
            keep
        });
    }

    /// One pass of SyncPod.
    async fn sync(&mut self, pod: &Pod) -> Result<(), String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = restart_policy(pod);
        let prev_phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let mut obs = self.observe().await.map_err(|e| docker::message(&e))?;
        self.collect_garbage(&obs).await;
        if prev_phase == "Succeeded" || prev_phase == "Failed" {
            // A finished pod keeps its record; its containers stay stopped.
            self.stop_all(&obs, Duration::from_secs(1)).await;
            return Ok(());
        }
        if self.start_time.is_none() {
            self.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| v.as_str().map(str::to_string))
                .or_else(|| Some(ts(Utc::now())));
            let _ = self
                .report_status(pod, &obs, None, false, false, false)
                .await;
        }

        // The sandbox.
        let sandbox_ok = obs.sandbox.as_ref().is_some_and(|s| s.running);
        if !sandbox_ok {
            if let Err(e) = self.prepare_volumes(pod, "").await {
                self.wake_in(Duration::from_secs(2));
                let _ = self
                    .report_status(pod, &obs, None, false, false, false)
                    .await;
                return Err(e);
            }
            let attempt = obs.sandbox.as_ref().map(|s| s.attempt + 1).unwrap_or(0);
            if obs.sandbox.is_some() {
                // The sandbox died: every container goes with it, then the pod starts over.
                self.events.pod(
                    pod,
                    None,
                    false,
                    "SandboxChanged",
                    "Pod sandbox changed, it will be killed and re-created.".into(),
                );
                self.stop_all(&obs, Duration::from_secs(grace_seconds(pod) as u64))
                    .await;
            }
            match self.start_sandbox(pod, attempt).await {
                Ok(s) => {
                    obs.sandbox = Some(s);
                }
                Err(e) => {
                    self.events.pod(
                        pod,
                        None,
                        true,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    self.wake_in(Duration::from_secs(5));
                    let _ = self
                        .report_status(pod, &obs, None, false, false, false)
                        .await;
                    return Err(e);
                }
            }
            obs = self.observe().await.map_err(|e| docker::message(&e))?;
        }
        let Some(sandbox) = obs.sandbox.clone() else {
            return Err("sandbox missing after start".into());
        };
        let pod_ip = if spec.host_network == Some(true) {
            self.settings.host_ip.clone()
        } else {
            sandbox.ip.clone()
        };
        if let Err(e) = self.prepare_volumes(pod, &pod_ip).await {
            self.wake_in(Duration::from_secs(2));
            let _ = self
                .report_status(pod, &obs, Some(&pod_ip), true, false, false)
                .await;
            return Err(e);
        }

        // Init containers, in order; sidecars keep running.
        let mut init_done = true;
        let mut init_failed = false;
        let mut started_any = false;
        for ic in spec.init_containers.iter().flatten() {
            let latest = obs.latest(&ic.name).cloned();
            if is_sidecar(ic) {
                match latest {
                    Some(l) if l.running => {
                        self.ensure_probes(ic, &l, &pod_ip);
                        if !self.probe_state(&l.id).started {
                            init_done = false;
                            break;
                        }
                    }
                    _ => {
                        started_any |= self
                            .start_container(pod, ic, "sidecar", &obs, &sandbox, &pod_ip)
                            .await;
                        init_done = false;
                        break;
                    }
                }
                continue;
            }
            match latest {
                Some(l) if !l.running && !l.never_started && l.exit_code == 0 => continue,
                Some(l) if l.running => {
                    init_done = false;
                    break;
                }
                Some(l) if !l.never_started && policy == "Never" => {
                    let _ = l;
                    init_failed = true;
                    init_done = false;
                    break;
                }
                _ => {
                    started_any |= self
                        .start_container(pod, ic, "init", &obs, &sandbox, &pod_ip)
                        .await;
                    init_done = false;
                    break;
                }
            }
        }

        if init_done && !init_failed {
            for c in &spec.containers {
                let latest = obs.latest(&c.name).cloned();
                let restart = match &latest {
                    None => true,
                    Some(l) if l.running => {
                        self.ensure_probes(c, l, &pod_ip);
                        false
                    }
                    Some(l) if l.never_started => true,
                    Some(l) => match policy.as_str() {
                        "Always" => true,
                        "OnFailure" => l.exit_code != 0,
                        _ => false,
                    },
                };
                if restart {
                    started_any |= self
                        .start_container(pod, c, "app", &obs, &sandbox, &pod_ip)
                        .await;
                }
            }
            // Sidecars that die after initialization restart too.
            for ic in spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| is_sidecar(c))
            {
                if !obs.latest(&ic.name).is_some_and(|l| l.running) {
                    started_any |= self
                        .start_container(pod, ic, "sidecar", &obs, &sandbox, &pod_ip)
                        .await;
                }
            }
        }
        if started_any {
            obs = self.observe().await.map_err(|e| docker::message(&e))?;
            for c in env::all_containers(pod) {
                if let Some(l) = obs.latest(&c.name).filter(|l| l.running).cloned() {
                    self.ensure_probes(c, &l, &pod_ip);
                }
            }
        }
        self.prune_probes(&obs);
        let phase = self
            .report_status(pod, &obs, Some(&pod_ip), true, init_done, init_failed)
            .await?;
        if phase == "Succeeded" || phase == "Failed" {
            self.stop_all(&obs, Duration::from_secs(grace_seconds(pod) as u64))
                .await;
        }
        Ok(())
    }

    async fn stop_all(&mut self, obs: &Observed, grace: Duration) {
        self.stop_probes();
        let mut stops = Vec::new();
        for list in obs.by_name.values() {
            for c in list.iter().filter(|c| c.running) {
                stops.push(self.docker.stop(&c.id, grace));
            }
        }
        futures::future::join_all(stops).await;
        if let Some(s) = obs.sandbox.as_ref().filter(|s| s.running) {
            let _ = self.docker.stop(&s.id, Duration::from_secs(2)).await;
        }
    }

    async fn termination_message(&mut self, c: &Container, info: &ContainerInfo) -> String {
        if info.running {
            return String::new();
        }
        if let Some(m) = self.messages.get(&info.id) {
            return m.clone();
        }
        let file = volumes::pod_dir(&self.settings.root_dir, &self.uid)
            .join("containers")
            .join(&c.name)
            .join(info.attempt.to_string());
        let mut msg = tokio::fs::read(&file)
            .await
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).into_owned())
            .unwrap_or_default();
        if msg.is_empty()
            && info.exit_code != 0
            && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
        {
            let logs = self
                .docker
                .tail_logs(&info.id, 80)
                .await
                .unwrap_or_default();
            let start = logs.len().saturating_sub(2048);
            let start = (start..logs.len())
                .find(|i| logs.is_char_boundary(*i))
                .unwrap_or(logs.len());
            msg = logs[start..].to_string();
        }
        self.messages.insert(info.id.clone(), msg.clone());
        msg
    }

    async fn terminated_state(&mut self, c: &Container, info: &ContainerInfo) -> Value {
        let reason = if info.oom_killed {
            "OOMKilled"
        } else if info.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let mut t = json!({
            "exitCode": info.exit_code,
            "reason": reason,
            "startedAt": info.started_at.map(ts),
            "finishedAt": info.finished_at.map(ts),
            "containerID": format!("docker://{}", info.id),
        });
        let msg = self.termination_message(c, info).await;
        if !msg.is_empty() {
            t["message"] = json!(msg);
        }
        json!({"terminated": t})
    }

    /// One container's status and its phase summary.
    async fn container_status(
        &mut self,
        c: &Container,
        obs: &Observed,
        policy: &str,
        init: bool,
    ) -> (Value, Summary, bool) {
        let latest = obs.latest(&c.name).cloned();
        let previous = obs.previous(&c.name).cloned();
        let image = c.image.clone().unwrap_or_default();
        let mut st = json!({
            "name": c.name, "image": image, "imageID": "", "ready": false,
            "restartCount": latest.as_ref().map(|l| l.attempt).unwrap_or(0),
            "started": false, "lastState": {},
        });
        let Some(l) = latest else {
            let w = self.waiting.get(&c.name).cloned().unwrap_or(Waiting {
                reason: if init {
                    "PodInitializing".into()
                } else {
                    "ContainerCreating".into()
                },
                message: String::new(),
            });
            let mut wj = json!({"reason": w.reason});
            if !w.message.is_empty() {
                wj["message"] = json!(w.message);
            }
            st["state"] = json!({"waiting": wj});
            return (st, Summary::Waiting, false);
        };
        st["imageID"] = json!(format!("docker://{}", l.image_id));
        st["containerID"] = json!(format!("docker://{}", l.id));
        if let Some(p) = &previous {
            st["lastState"] = self.terminated_state(c, p).await;
        }
        if l.running {
            let ps = self.probe_state(&l.id);
            let probes_known = self.probes.contains_key(&l.id);
            let started = if probes_known {
                ps.started
            } else {
                c.startup_probe.is_none()
            };
            let ready = started
                && if probes_known {
                    ps.ready
                } else {
                    c.readiness_probe.is_none()
                };
            st["state"] = json!({"running": {"startedAt": l.started_at.map(ts)}});
            st["started"] = json!(started);
            st["ready"] = json!(ready);
            return (st, Summary::Running, ready);
        }
        if l.never_started {
            let w = self.waiting.get(&c.name).cloned().unwrap_or(Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            });
            st["state"] = json!({"waiting": {"reason": w.reason, "message": w.message}});
            return (st, Summary::Waiting, false);
        }
        let term = self.terminated_state(c, &l).await;
        let will_restart = is_sidecar(c)
            || match policy {
                "Always" => !init,
                "OnFailure" => l.exit_code != 0,
                _ => false,
            }
            || (init && policy != "Never" && l.exit_code != 0);
        if will_restart {
            if let Some(w) = self.waiting.get(&c.name).filter(|w| {
                w.reason == "CrashLoopBackOff"
                    || w.reason == "ErrImagePull"
                    || w.reason == "ImagePullBackOff"
                    || w.reason == "CreateContainerConfigError"
            }) {
                st["state"] = json!({"waiting": {"reason": w.reason, "message": w.message}});
                st["lastState"] = term;
                return (st, Summary::WaitingRestart, false);
            }
        }
        st["state"] = term;
        if let Some(p) = &previous {
            st["lastState"] = self.terminated_state(c, p).await;
        } else {
            st["lastState"] = json!({});
        }
        (
            st,
            Summary::Terminated {
                exit_code: l.exit_code,
            },
            false,
        )
    }

    /// Computes and (when changed) patches the pod's status. Returns the phase.
    async fn report_status(
        &mut self,
        pod: &Pod,
        obs: &Observed,
        pod_ip: Option<&str>,
        sandbox_ready: bool,
        init_done: bool,
        init_failed: bool,
    ) -> Result<String, String> {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = restart_policy(pod);
        let mut init_statuses = Vec::new();
        let mut pending_init = Vec::new();
        for ic in spec.init_containers.iter().flatten() {
            let (st, sum, _) = self.container_status(ic, obs, &policy, true).await;
            let done = if is_sidecar(ic) {
                st["started"] == true
            } else {
                matches!(sum, Summary::Terminated { exit_code: 0 })
            };
            if !done {
                pending_init.push(ic.name.clone());
            }
            init_statuses.push(st);
        }
        let mut statuses = Vec::new();
        let mut summaries = Vec::new();
        let mut unready = Vec::new();
        for c in &spec.containers {
            let (st, sum, ready) = self.container_status(c, obs, &policy, false).await;
            if !ready {
                unready.push(c.name.clone());
            }
            summaries.push(sum);
            statuses.push(st);
        }
        for ic in spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c))
        {
            if let Some(st) = init_statuses.iter().find(|s| s["name"] == ic.name.as_str()) {
                if st["ready"] != true {
                    unready.push(ic.name.clone());
                }
            }
        }
        let phase = status::phase(&policy, init_failed, init_done, &summaries).to_string();
        let prev: Vec<Value> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default();
        let conditions = status::conditions(
            &prev,
            &phase,
            sandbox_ready,
            init_done,
            &pending_init,
            &unready,
        );
        let host_ip = self.settings.host_ip.clone();
        let mut st = json!({
            "phase": phase,
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "startTime": self.start_time,
            "containerStatuses": statuses,
        });
        if !init_statuses.is_empty() {
            st["initContainerStatuses"] = json!(init_statuses);
        }
        if let Some(ip) = pod_ip.filter(|ip| !ip.is_empty()) {
            st["podIP"] = json!(ip);
            st["podIPs"] = json!([{"ip": ip}]);
        }
        self.patch_status(pod, st).await?;
        Ok(phase)
    }

    async fn patch_status(&mut self, pod: &Pod, st: Value) -> Result<(), String> {
        if self.last_status.as_ref() == Some(&st) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        let body = json!({"status": st});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {
                self.last_status = Some(st);
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(format!("patching pod status: {e}")),
        }
    }

    /// Graceful termination of a deleted pod: preStop hooks, stop signal, SIGKILL at the end
    /// of the grace period, final status, then the pod object is deleted. True when done.
    async fn terminate(&mut self, pod: &Pod) -> bool {
        let grace = Duration::from_secs(grace_seconds(pod) as u64);
        let deadline = tokio::time::Instant::now() + grace;
        let obs = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(pod = %pod_key(pod), error = %e, "listing containers of a deleted pod");
                self.wake_in(Duration::from_secs(1));
                return false;
            }
        };
        self.stop_probes();
        let spec = pod.spec.clone().unwrap_or_default();
        let stop_group = |list: Vec<(Container, ContainerInfo)>| {
            let me = &*self;
            async move {
                let futs = list.into_iter().map(|(c, info)| async move {
                    me.events.pod(
                        pod,
                        Some(field_path(false, &c.name)),
                        false,
                        "Killing",
                        format!("Stopping container {}", c.name),
                    );
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    me.run_pre_stop(pod, &c, &info.id, left).await;
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if let Err(e) = me.docker.stop(&info.id, left).await {
                        tracing::warn!(container = %c.name, error = %e, "stopping container");
                    }
                });
                futures::future::join_all(futs).await;
            }
        };
        let running = |cs: Vec<&Container>| -> Vec<(Container, ContainerInfo)> {
            cs.into_iter()
                .filter_map(|c| {
                    obs.latest(&c.name)
                        .filter(|l| l.running)
                        .map(|l| (c.clone(), l.clone()))
                })
                .collect()
        };
        let apps = running(spec.containers.iter().collect());
        let mut sidecars = running(spec.init_containers.iter().flatten().collect());
        stop_group(apps).await;
        sidecars.reverse();
        stop_group(sidecars).await;
        if let Some(s) = obs.sandbox.as_ref().filter(|s| s.running) {
            let _ = self.docker.stop(&s.id, Duration::from_secs(2)).await;
        }
        // Final status: every container terminated, the pod in a terminal phase.
        if let Ok(obs) = self.observe().await {
            let ip = self
                .last_status
                .as_ref()
                .and_then(|s| s["podIP"].as_str())
                .map(str::to_string);
            let policy = restart_policy(pod);
            let mut statuses = Vec::new();
            let mut all_ok = true;
            for c in &spec.containers {
                let (mut st, sum, _) = self.container_status(c, &obs, "Never", false).await;
                if !matches!(sum, Summary::Terminated { exit_code: 0 }) {
                    all_ok = false;
                }
                st["ready"] = json!(false);
                st["started"] = json!(false);
                statuses.push(st);
            }
            let _ = policy;
            let phase = if all_ok { "Succeeded" } else { "Failed" };
            let prev: Vec<Value> = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .map(|c| {
                    c.iter()
                        .filter_map(|c| serde_json::to_value(c).ok())
                        .collect()
                })
                .unwrap_or_default();
            let conditions = status::conditions(&prev, phase, false, true, &[], &[]);
            let mut st =
                json!({"phase": phase, "conditions": conditions, "containerStatuses": statuses});
            if let Some(ip) = ip {
                st["podIP"] = json!(ip);
            }
            if let Err(e) = self.patch_status(pod, st).await {
                tracing::warn!(pod = %pod_key(pod), error = %e, "final status");
            }
        }
        self.remove_everything(pod).await;
        let api: Api<Pod> = Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or_default(),
        );
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api
            .delete(pod.metadata.name.as_deref().unwrap_or_default(), &dp)
            .await
        {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                tracing::warn!(pod = %pod_key(pod), error = %e, "deleting terminated pod");
                self.wake_in(Duration::from_secs(1));
                false
            }
        }
    }

    /// Removes all containers and volumes of the pod.
    async fn remove_everything(&mut self, pod: &Pod) {
        self.stop_probes();
        match self.docker.list(Some(&self.uid)).await {
            Ok(list) => {
                let futs = list.iter().map(|(id, _)| self.docker.remove(id));
                for r in futures::future::join_all(futs).await {
                    if let Err(e) = r {
                        tracing::warn!(uid = %self.uid, error = %e, "removing container");
                    }
                }
            }
            Err(e) => tracing::warn!(uid = %self.uid, error = %e, "listing containers to remove"),
        }
        volumes::cleanup(&self.settings.root_dir, &self.docker, Some(pod), &self.uid).await;
    }
}

fn find_container(pod: &Pod, name: &str) -> Option<Container> {
    env::all_containers(pod).find(|c| c.name == name).cloned()
}
