//! The scheduler's cache: nodes and the pods assigned to them (bound, or assumed while
//! their binding is in flight), kept small — a bound pod is held as a compact `PodInfo`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, PodAffinityTerm, Taint};

use crate::resources::{requests_of, Resources};

/// A host port a pod uses: protocol, host IP (`0.0.0.0` when unset), port.
pub type HostPort = (String, String, i32);

/// What the scheduler keeps of an assigned pod.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub priority: i32,
    pub requests: Resources,
    pub non_zero: Resources,
    pub ports: Vec<HostPort>,
    /// Required anti-affinity terms (checked against incoming pods).
    pub anti_affinity: Vec<PodAffinityTerm>,
    /// When the pod started (for preemption's tie-breaks), RFC 3339.
    pub start_time: String,
}

impl PodInfo {
    /// Builds the compact form of `pod` placed on `node`.
    pub fn new(pod: &Pod, node: &str, priority: i32) -> PodInfo {
        let meta = &pod.metadata;
        let anti_affinity = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        PodInfo {
            uid: meta.uid.clone().unwrap_or_default(),
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            node: node.to_string(),
            labels: meta.labels.clone().unwrap_or_default(),
            priority,
            requests: requests_of(pod, false),
            non_zero: requests_of(pod, true),
            ports: host_ports(pod),
            anti_affinity,
            start_time: pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        }
    }
}

/// The host ports a pod's containers ask for.
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let mut out = Vec::new();
    let Some(spec) = &pod.spec else {
        return out;
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        for p in c.ports.iter().flatten() {
            let Some(hp) = p.host_port.filter(|p| *p > 0) else {
                continue;
            };
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let ip = p
                .host_ip
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            out.push((proto, ip, hp));
        }
    }
    out
}

/// One node with what is placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub requested: Resources,
    pub non_zero_requested: Resources,
    pub pods: Vec<Arc<PodInfo>>,
    /// Image names (normalized) to their size in bytes.
    pub images: HashMap<String, i64>,
}

impl NodeInfo {
    fn new(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.to_string(),
            labels: BTreeMap::new(),
            taints: Vec::new(),
            unschedulable: false,
            allocatable: Resources::default(),
            requested: Resources::default(),
            non_zero_requested: Resources::default(),
            pods: Vec::new(),
            images: HashMap::new(),
        }
    }

    fn set_node(&mut self, node: &Node) {
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.clone().unwrap_or_default();
        self.unschedulable = spec.unschedulable.unwrap_or(false);
        self.taints = spec.taints.unwrap_or_default();
        // A node whose Ready condition is not True is treated like upstream's node
        // lifecycle controller taints it, so the message names the taint.
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.clone());
        let implied = match ready.as_deref() {
            Some("False") => Some("node.kubernetes.io/not-ready"),
            Some("Unknown") => Some("node.kubernetes.io/unreachable"),
            _ => None,
        };
        if let Some(key) = implied {
            if !self
                .taints
                .iter()
                .any(|t| t.key == key && t.effect == "NoSchedule")
            {
                self.taints.push(Taint {
                    key: key.into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                });
            }
        }
        let status = node.status.clone().unwrap_or_default();
        self.allocatable =
            Resources::from_list(status.allocatable.as_ref().or(status.capacity.as_ref()));
        self.images.clear();
        for img in status.images.iter().flatten() {
            for n in img.names.iter().flatten() {
                self.images
                    .insert(normalize_image(n), img.size_bytes.unwrap_or(0));
            }
        }
    }

    fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests);
        self.non_zero_requested.add(&p.non_zero);
        self.pods.push(p);
    }

    fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests);
        self.non_zero_requested.sub(&p.non_zero);
        Some(p)
    }

    /// Host ports in use on this node.
    pub fn used_ports(&self) -> impl Iterator<Item = &HostPort> {
        self.pods.iter().flat_map(|p| p.ports.iter())
    }

    /// A copy without the pods in `victims` (for preemption's dry run).
    pub fn without(&self, victims: &[Arc<PodInfo>]) -> NodeInfo {
        let mut n = self.clone();
        for v in victims {
            n.remove_pod(&v.uid);
        }
        n
    }

    /// A copy with `p` added (for preemption's reprieve).
    pub fn with(&self, p: Arc<PodInfo>) -> NodeInfo {
        let mut n = self.clone();
        n.add_pod(p);
        n
    }
}

/// `busybox` and `docker.io/library/busybox:latest` name the same image.
pub fn normalize_image(name: &str) -> String {
    let mut n = name.to_string();
    for p in ["docker.io/library/", "docker.io/", "library/"] {
        if let Some(rest) = n.strip_prefix(p) {
            n = rest.to_string();
        }
    }
    let last = n.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        n.push_str(":latest");
    }
    n
}

/// Nodes and assigned pods.
#[derive(Debug, Default)]
pub struct Cache {
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Every assigned pod by uid.
    pods: HashMap<String, Arc<PodInfo>>,
    /// Pods placed by this scheduler whose binding has not been seen on the watch yet.
    assumed: HashMap<String, Arc<PodInfo>>,
    /// uids of assigned pods with required anti-affinity terms.
    pub anti_affinity_pods: HashMap<String, Arc<PodInfo>>,
    /// Pods nominated to a node by preemption: uid to (node, requests, priority).
    pub nominated: HashMap<String, (String, Resources, i32)>,
}

impl Cache {
    /// Adds or updates a node.
    pub fn set_node(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        self.nodes
            .entry(name.clone())
            .or_insert_with(|| NodeInfo::new(&name))
            .set_node(node);
    }

    /// Removes a node (its pods stay accounted until they go).
    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    /// Adds or replaces an assigned pod (confirming an assumed one).
    pub fn set_pod(&mut self, info: PodInfo) {
        let uid = info.uid.clone();
        self.assumed.remove(&uid);
        self.nominated.remove(&uid);
        self.remove_pod(&uid);
        let info = Arc::new(info);
        self.nodes
            .entry(info.node.clone())
            .or_insert_with(|| NodeInfo::new(&info.node))
            .add_pod(info.clone());
        if !info.anti_affinity.is_empty() {
            self.anti_affinity_pods.insert(uid.clone(), info.clone());
        }
        self.pods.insert(uid, info);
    }

    /// Removes an assigned pod.
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let old = self.pods.remove(uid)?;
        self.anti_affinity_pods.remove(uid);
        if let Some(n) = self.nodes.get_mut(&old.node) {
            n.remove_pod(uid);
        }
        Some(old)
    }

    /// Counts a pod as placed before its binding returns.
    pub fn assume(&mut self, info: PodInfo) {
        let uid = info.uid.clone();
        self.set_pod(info);
        if let Some(p) = self.pods.get(&uid) {
            self.assumed.insert(uid, p.clone());
        }
    }

    /// Undoes `assume` after a failed binding.
    pub fn forget(&mut self, uid: &str) {
        if self.assumed.remove(uid).is_some() {
            self.remove_pod(uid);
        }
    }

    /// True while `uid` is assumed or assigned.
    pub fn is_placed(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// Every assigned pod.
    pub fn all_pods(&self) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.pods.values()
    }

    /// Number of assigned pods.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}
