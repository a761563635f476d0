//! Watches the pods bound to this node (`spec.nodeName=<node>`) and keeps one worker per
//! pod; on the Docker runtime it also wakes workers on container events, removes the
//! containers of pods deleted while the kubelet was down and collects orphans.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::Api;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::docker::Docker;
use crate::events::Recorder;
use crate::labels;
use crate::node::Allocatable;
use crate::pod_worker::PodWorker;

/// What every pod worker of a node shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub node_name: String,
    pub host_ip: String,
    pub root_dir: PathBuf,
    pub infra_image: String,
    pub sync_frequency: Duration,
    pub allocatable: Allocatable,
    /// The node's pod network, which sandboxes join.
    pub pod_network: Arc<crate::network::PodNetwork>,
    pub dns: crate::dns::DnsConfig,
}

/// Starts the worker of one pod: (uid, updates, wake-up, shutdown).
pub type SpawnWorker = Arc<
    dyn Fn(String, watch::Receiver<(Pod, bool)>, Arc<Notify>, CancellationToken) -> JoinHandle<()>
        + Send
        + Sync,
>;

struct Handle {
    tx: watch::Sender<(Pod, bool)>,
    task: JoinHandle<()>,
}

/// The pods of one node.
pub struct PodManager {
    client: kube::Client,
    docker: Option<Docker>,
    node_name: String,
    spawn: SpawnWorker,
    wakes: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl PodManager {
    /// Pods on real Docker containers.
    pub fn new(client: kube::Client, docker: Docker, settings: Settings) -> PodManager {
        let settings = Arc::new(settings);
        let events = Recorder::new(client.clone(), &settings.node_name);
        let (c, d) = (client.clone(), docker.clone());
        let spawn: SpawnWorker = Arc::new(move |uid, rx, wake, shutdown| {
            let w = PodWorker::new(
                c.clone(),
                d.clone(),
                settings.clone(),
                events.clone(),
                uid,
                rx,
                wake,
            );
            tokio::spawn(w.run(shutdown))
        });
        let node_name = docker.node().to_string();
        PodManager {
            client,
            docker: Some(docker),
            node_name,
            spawn,
            wakes: Default::default(),
        }
    }

    /// Pods driven by any worker (the simulated runtime).
    pub fn with_workers(client: kube::Client, node_name: &str, spawn: SpawnWorker) -> PodManager {
        PodManager {
            client,
            docker: None,
            node_name: node_name.to_string(),
            spawn,
            wakes: Default::default(),
        }
    }

    /// Runs until `shutdown`; containers keep running after it.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(docker) = &self.docker {
            tokio::spawn(container_events(
                docker.clone(),
                self.wakes.clone(),
                shutdown.clone(),
            ));
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node_name));
        let mut stream = watcher(api, cfg).boxed();
        let mut workers: HashMap<String, Handle> = HashMap::new();
        let mut listed: HashSet<String> = HashSet::new();
        let mut gc = tokio::time::interval(Duration::from_secs(60));
        gc.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut synced = false;
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = gc.tick(), if synced => {
                    workers.retain(|_, h| !h.task.is_finished());
                    let live: HashSet<String> = workers.keys().cloned().collect();
                    self.wakes.lock().retain(|uid, _| live.contains(uid));
                    if let Some(d) = &self.docker {
                        tokio::spawn(remove_orphans(d.clone(), live));
                    }
                    continue;
                }
                ev = stream.next() => ev,
            };
            let Some(ev) = ev else { break };
            match ev {
                Ok(watcher::Event::Init) => listed.clear(),
                Ok(watcher::Event::InitApply(pod)) => {
                    if let Some(uid) = pod.metadata.uid.clone() {
                        listed.insert(uid);
                    }
                    self.apply(&mut workers, pod, false, &shutdown);
                }
                Ok(watcher::Event::InitDone) => {
                    // Pods gone while we were not watching.
                    for (uid, h) in workers.iter() {
                        if !listed.contains(uid) {
                            let pod = h.tx.borrow().0.clone();
                            let _ = h.tx.send((pod, true));
                        }
                    }
                    if !synced {
                        synced = true;
                        if let Some(d) = &self.docker {
                            tokio::spawn(remove_orphans(d.clone(), listed.clone()));
                        }
                    }
                }
                Ok(watcher::Event::Apply(pod)) => self.apply(&mut workers, pod, false, &shutdown),
                Ok(watcher::Event::Delete(pod)) => self.apply(&mut workers, pod, true, &shutdown),
                Err(e) => {
                    tracing::warn!(node = %self.node_name, error = %e, "watching pods");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        Ok(())
    }

    fn apply(
        &self,
        workers: &mut HashMap<String, Handle>,
        pod: Pod,
        deleted: bool,
        shutdown: &CancellationToken,
    ) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        if let Some(h) = workers.get(&uid) {
            if !h.task.is_finished() {
                let _ = h.tx.send((pod, deleted));
                return;
            }
            if deleted {
                workers.remove(&uid);
                return;
            }
        }
        // Terminal pods whose worker finished and deleted pods need no new worker... unless
        // a deleted pod still has containers here (the kubelet was down): then one cleans up.
        let (tx, rx) = watch::channel((pod, deleted));
        let wake = Arc::new(Notify::new());
        self.wakes.lock().insert(uid.clone(), wake.clone());
        let task = (self.spawn)(uid.clone(), rx, wake, shutdown.child_token());
        workers.insert(uid, Handle { tx, task });
    }
}

/// Wakes a pod's worker when one of its containers starts or dies.
async fn container_events(
    docker: Docker,
    wakes: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    shutdown: CancellationToken,
) {
    loop {
        let mut s = Box::pin(docker.events());
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = s.next() => ev,
            };
            match ev {
                Some(Ok((uid, _action))) => {
                    if let Some(w) = wakes.lock().get(&uid) {
                        w.notify_one();
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "docker events");
                    break;
                }
                None => break,
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Stops (within their pod's grace period, at most 30 s) and removes this node's containers
/// whose pod is not among `live`.
async fn remove_orphans(docker: Docker, live: HashSet<String>) {
    let list = match docker.list(None).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "listing containers for garbage collection");
            return;
        }
    };
    let futs = list.into_iter().filter_map(|(id, l)| {
        let uid = l.get(labels::POD_UID).cloned().unwrap_or_default();
        if live.contains(&uid) {
            return None;
        }
        let grace: u64 = l.get(labels::GRACE_PERIOD).and_then(|g| g.parse().ok()).unwrap_or(30).min(30);
        let docker = docker.clone();
        Some(async move {
            tracing::info!(container = %id, pod_uid = %uid, "removing container of a pod that is gone");
            let _ = docker.stop(&id, Duration::from_secs(grace)).await;
            if let Err(e) = docker.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "removing orphaned container");
            }
        })
    });
    futures::future::join_all(futs).await;
}
