//! Shared informers: one watch and one cache per kind for the whole controller-manager,
//! with any number of subscribers that are told about every change (deletions included).
//!
//! kube-runtime's shared reflector does not announce deletions, which a ReplicaSet needs
//! to replace a deleted pod, so the fan-out is done here: the cache is kube-runtime's
//! `Store`, the fan-out a bounded broadcast channel. A subscriber that falls more than
//! [`BUFFER`] changes behind is handed the whole cache again (a resync), so being slow
//! costs work, never correctness or memory.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Changes a subscriber may lag behind before it is resynced from the cache. Small on
/// purpose: every buffered change keeps a superseded object alive.
pub const BUFFER: usize = 256;

/// What the informers of this crate can cache.
pub trait Cached:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Cached for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// Drops the parts of a pod that no controller reads, before it is cached (pods are the
/// bulk of a controller-manager's memory). What stays: all of metadata but managedFields and
/// the last-applied annotation; nodeName, hostname, subdomain, tolerations, affinity,
/// nodeSelector, hostNetwork, overhead, restartPolicy, priority; each (init) container's name,
/// image, ports and resources (quota, named target ports); the whole status. Cached pods
/// are never written back, only patched, so nothing dropped here can be lost on the server.
pub fn slim_pod(pod: &mut Pod) {
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
        if a.is_empty() {
            pod.metadata.annotations = None;
        }
    }
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    let slim = |c: &mut Container| {
        *c = Container {
            name: std::mem::take(&mut c.name),
            image: c.image.take(),
            ports: c.ports.take(),
            resources: c.resources.take(),
            ..Default::default()
        };
    };
    spec.containers.iter_mut().for_each(slim);
    spec.init_containers.iter_mut().flatten().for_each(slim);
    spec.ephemeral_containers = None;
    spec.volumes = None;
    spec.security_context = None;
    spec.dns_config = None;
    spec.dns_policy = None;
    spec.host_aliases = None;
    spec.image_pull_secrets = None;
    spec.readiness_gates = None;
    spec.scheduling_gates = None;
    spec.resource_claims = None;
    spec.topology_spread_constraints = None;
    spec.termination_grace_period_seconds = None;
    spec.active_deadline_seconds = None;
    spec.enable_service_links = None;
    spec.automount_service_account_token = None;
    spec.service_account = None;
    spec.service_account_name = None;
    spec.scheduler_name = None;
    spec.preemption_policy = None;
    spec.runtime_class_name = None;
}

/// One kind's cache and change feed.
pub struct Informer<K: Cached> {
    store: Store<K>,
    tx: broadcast::Sender<Arc<K>>,
    seen: Arc<AtomicU64>,
    /// True once the first list is in the cache. kube-runtime's `Store::wait_until_ready`
    /// cannot be shared: its one-shot receiver keeps only the last poller's waker, so of
    /// two controllers waiting on one store, the first may never wake.
    ready: watch::Receiver<bool>,
}

impl<K: Cached> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Informer {
            store: self.store.clone(),
            tx: self.tx.clone(),
            seen: self.seen.clone(),
            ready: self.ready.clone(),
        }
    }
}

impl<K: Cached> Informer<K> {
    /// Starts watching `api` (all namespaces) until `shutdown`.
    pub fn start(api: Api<K>, shutdown: CancellationToken) -> Self {
        let (store, mut writer) = reflector::store::<K>();
        let (tx, _) = broadcast::channel(BUFFER);
        let feed = tx.clone();
        let seen = Arc::new(AtomicU64::new(0));
        let seen_by_feed = seen.clone();
        let (ready_tx, ready) = watch::channel(false);
        let cfg = watcher::Config::default().any_semantic().page_size(500);
        tokio::spawn(async move {
            let stream = watcher(api, cfg).default_backoff().modify(|o| {
                // managedFields are the largest part of most objects and no controller reads them.
                o.meta_mut().managed_fields = None;
                if let Some(pod) = (o as &mut dyn Any).downcast_mut::<Pod>() {
                    slim_pod(pod);
                }
            });
            let mut stream = std::pin::pin!(stream);
            // Objects cached before a relist, to announce the ones that vanished meanwhile.
            let mut before: Vec<Arc<K>> = Vec::new();
            // The newest revision among a relist's objects, published at InitDone.
            let mut init_rv = 0u64;
            let reader = writer.as_reader();
            loop {
                let event = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    e = stream.next() => e,
                };
                let Some(event) = event else { break };
                let event = match event {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying");
                        continue;
                    }
                };
                // The revision is published only once the cache holds the object (a relist's
                // objects become visible at InitDone).
                let rv = match &event {
                    watcher::Event::Apply(o)
                    | watcher::Event::Delete(o)
                    | watcher::Event::InitApply(o) => o
                        .meta()
                        .resource_version
                        .as_deref()
                        .and_then(|r| r.parse::<u64>().ok())
                        .unwrap_or(0),
                    _ => 0,
                };
                let publish = |rv: u64| {
                    seen_by_feed.fetch_max(rv, Ordering::AcqRel);
                };
                match &event {
                    watcher::Event::Init => before = reader.state(),
                    watcher::Event::Delete(o) => {
                        writer.apply_watcher_event(&event);
                        publish(rv);
                        let _ = feed.send(Arc::new(o.clone()));
                        continue;
                    }
                    watcher::Event::InitApply(_) => init_rv = init_rv.max(rv),
                    _ => {}
                }
                writer.apply_watcher_event(&event);
                match event {
                    watcher::Event::Apply(o) => {
                        publish(rv);
                        let key = ObjectRef::from_obj(&o);
                        if let Some(cached) = reader.get(&key) {
                            let _ = feed.send(cached);
                        }
                    }
                    watcher::Event::InitDone => {
                        ready_tx.send_replace(true);
                        publish(std::mem::take(&mut init_rv));
                        for old in std::mem::take(&mut before) {
                            if reader.get(&ObjectRef::from_obj(&*old)).is_none() {
                                let _ = feed.send(old);
                            }
                        }
                        for o in reader.state() {
                            let _ = feed.send(o);
                        }
                    }
                    _ => {}
                }
            }
        });
        Informer {
            store,
            tx,
            seen,
            ready,
        }
    }

    /// The newest resourceVersion this informer has applied to its cache (0 before the
    /// first object; resourceVersions that are not numbers are not counted).
    pub fn seen_revision(&self) -> Arc<AtomicU64> {
        self.seen.clone()
    }

    /// The cache (may lag the server; never write back what it returns without a resourceVersion).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Waits until the first list is in the cache (any number of tasks may wait at once),
    /// or the informer stopped.
    pub async fn wait_ready(&self) {
        let _ = self.ready.clone().wait_for(|r| *r).await;
    }

    /// Whether the first list is in the cache.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Every object in the cache, then every object that changes from now on (a deleted
    /// object arrives in its last state). Falling behind yields the whole cache again.
    ///
    /// A subscriber that comes after the first list still gets its objects: the informer
    /// announces them once, at InitDone, so a later subscriber starts from the cache.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let rx = self.tx.subscribe();
        let store = self.store.clone();
        // After subscribing: an object that changes meanwhile comes twice, none is missed.
        let backlog = if self.is_ready() {
            store.state()
        } else {
            Vec::new()
        };
        futures::stream::unfold(
            (rx, store, backlog),
            |(mut rx, store, mut backlog)| async move {
                loop {
                    if let Some(o) = backlog.pop() {
                        return Some((o, (rx, store, backlog)));
                    }
                    match rx.recv().await {
                        Ok(o) => return Some((o, (rx, store, backlog))),
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!(kind = %K::kind(&()), missed = n, "subscriber lagged; resyncing");
                            backlog = store.state();
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            },
        )
    }

    /// Objects in `namespace` from the cache.
    pub fn list_namespaced(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store
            .state_filter(|o| o.namespace().as_deref() == Some(namespace))
    }
}

/// The informers of one controller-manager, created on first use and shared by every controller.
#[derive(Clone)]
pub struct Informers {
    client: Client,
    shutdown: CancellationToken,
    started: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl Informers {
    /// Informers that watch through `client` until `shutdown`.
    pub fn new(client: Client, shutdown: CancellationToken) -> Self {
        Informers {
            client,
            shutdown,
            started: Arc::default(),
        }
    }

    /// The informer of kind `K`, started on first call.
    pub fn get<K: Cached>(&self) -> Informer<K> {
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = started
            .get(&TypeId::of::<K>())
            .and_then(|b| b.downcast_ref::<Informer<K>>())
        {
            return i.clone();
        }
        let i = Informer::start(Api::<K>::all(self.client.clone()), self.shutdown.clone());
        started.insert(TypeId::of::<K>(), Box::new(i.clone()));
        i
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_slim_pod_keeps_what_controllers_read() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "a"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                    "uid": "r", "controller": true}]},
            "spec": {
                "nodeName": "n1", "hostname": "h", "subdomain": "s", "restartPolicy": "Never",
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "serviceAccountName": "default", "dnsPolicy": "ClusterFirst",
                "containers": [{"name": "c", "image": "busybox", "command": ["sh"],
                    "env": [{"name": "E", "value": "1"}],
                    "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                    "ports": [{"name": "http", "containerPort": 80}],
                    "resources": {"requests": {"cpu": "10m"}}}],
                "initContainers": [{"name": "i", "image": "busybox", "args": ["x"],
                    "resources": {"limits": {"memory": "1Mi"}}}]
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "ready": true, "restartCount": 2, "image": "busybox", "imageID": ""}]}
        }))
        .unwrap();
        let status = pod.status.clone();
        slim_pod(&mut pod);
        let v = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            v["metadata"]["annotations"],
            serde_json::json!({"keep": "me"})
        );
        assert_eq!(v["metadata"]["ownerReferences"][0]["name"], "rs");
        assert_eq!(v["metadata"]["labels"]["app"], "a");
        let spec = &v["spec"];
        assert_eq!(spec["nodeName"], "n1");
        assert_eq!(spec["hostname"], "h");
        assert_eq!(spec["subdomain"], "s");
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["tolerations"][0]["key"], "k");
        assert!(spec.get("volumes").is_none());
        assert!(spec.get("serviceAccountName").is_none());
        assert_eq!(
            spec["containers"][0],
            serde_json::json!({"name": "c", "image": "busybox",
                "ports": [{"name": "http", "containerPort": 80}],
                "resources": {"requests": {"cpu": "10m"}}})
        );
        assert_eq!(
            spec["initContainers"][0],
            serde_json::json!({"name": "i", "image": "busybox",
                "resources": {"limits": {"memory": "1Mi"}}})
        );
        assert_eq!(pod.status, status);
    }
}
