//! The Node authorizer (upstream `plugin/pkg/auth/authorizer/node`): a kubelet
//! (`system:node:<name>` in `system:nodes`) may read the secrets, configmaps, claims,
//! volumes and service-account tokens only of pods bound to it, its own Node and Lease,
//! and otherwise what the static `system:node` rules allow.
//!
//! Upstream keeps a graph fed by informers; here an index from node to the objects its
//! pods reference, fed by the pods watch cache. The index may lag the cache by an event:
//! a miss is checked again against the cache itself, so an answer is never stale.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::rbac::{Attributes, PolicyRule};
use super::User;
use crate::registry::stores::Registry;
use crate::selector::FieldSelector;
use crate::watch_cache::{Broadcast, CachedObject, EventType, Filter, WatchCache};

/// The group of every node identity.
pub const NODES_GROUP: &str = "system:nodes";
/// The user name prefix of node identities.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where node leases live.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node a user is, upstream `NodeIdentity`: `Some("")` for an unidentifiable node.
pub fn node_identity(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    user.groups.iter().any(|g| g == NODES_GROUP).then_some(name)
}

/// What a pod refers to, each an edge towards its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Pod,
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

type Ref = (Kind, String, String);

/// The objects `pod` refers to (itself included), as upstream's graph populator adds them.
pub fn pod_refs(pod: &Value) -> Vec<Ref> {
    let ns = crate::object::meta_str(pod, "namespace").to_string();
    let name = crate::object::meta_str(pod, "name").to_string();
    let mut out = vec![(Kind::Pod, ns.clone(), name.clone())];
    let mut add = |kind: Kind, n: Option<&str>| {
        if let Some(n) = n.filter(|n| !n.is_empty()) {
            let r = (kind, ns.clone(), n.to_string());
            if !out.contains(&r) {
                out.push(r);
            }
        }
    };
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
    add(
        Kind::ServiceAccount,
        Some(
            s(spec, "/serviceAccountName")
                .as_deref()
                .unwrap_or("default"),
        ),
    );
    for p in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(Kind::Secret, s(p, "/name").as_deref());
    }
    for c in ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten()
    {
        for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            add(
                Kind::Secret,
                s(e, "/valueFrom/secretKeyRef/name").as_deref(),
            );
            add(
                Kind::ConfigMap,
                s(e, "/valueFrom/configMapKeyRef/name").as_deref(),
            );
        }
        for e in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(Kind::Secret, s(e, "/secretRef/name").as_deref());
            add(Kind::ConfigMap, s(e, "/configMapRef/name").as_deref());
        }
    }
    for v in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add(Kind::Secret, s(v, "/secret/secretName").as_deref());
        add(Kind::ConfigMap, s(v, "/configMap/name").as_deref());
        add(
            Kind::Claim,
            s(v, "/persistentVolumeClaim/claimName").as_deref(),
        );
        if v.get("ephemeral").is_some() {
            if let Some(vol) = s(v, "/name") {
                add(Kind::Claim, Some(&format!("{name}-{vol}")));
            }
        }
        // Volume plugins that name a secret for their credentials.
        for p in [
            "/azureFile/secretName",
            "/cephfs/secretRef/name",
            "/cinder/secretRef/name",
            "/csi/nodePublishSecretRef/name",
            "/flexVolume/secretRef/name",
            "/iscsi/secretRef/name",
            "/rbd/secretRef/name",
            "/scaleIO/secretRef/name",
            "/storageos/secretRef/name",
        ] {
            add(Kind::Secret, s(v, p).as_deref());
        }
        for src in v
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            add(Kind::Secret, s(src, "/secret/name").as_deref());
            add(Kind::ConfigMap, s(src, "/configMap/name").as_deref());
        }
    }
    out
}

#[derive(Default)]
struct Index {
    /// Cache key of a pod -> its node and references.
    pods: HashMap<String, (String, Vec<Ref>)>,
    /// Node -> reference -> how many of its pods hold it.
    nodes: HashMap<String, HashMap<Ref, usize>>,
}

impl Index {
    fn remove(&mut self, key: &str) {
        let Some((node, refs)) = self.pods.remove(key) else {
            return;
        };
        if let Some(m) = self.nodes.get_mut(&node) {
            for r in refs {
                if let Some(n) = m.get_mut(&r) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&r);
                    }
                }
            }
            if m.is_empty() {
                self.nodes.remove(&node);
            }
        }
    }

    fn put(&mut self, o: &CachedObject) {
        self.remove(&o.key);
        let Ok(pod) = serde_json::from_slice::<Value>(&o.bytes) else {
            return;
        };
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if node.is_empty() {
            return;
        }
        let refs = pod_refs(&pod);
        let m = self.nodes.entry(node.to_string()).or_default();
        for r in &refs {
            *m.entry(r.clone()).or_default() += 1;
        }
        self.pods.insert(o.key.clone(), (node.to_string(), refs));
    }
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not allowed here (RBAC may still allow it); the reason goes into the 403.
    NoOpinion(String),
}

use Decision::{Allow, NoOpinion};

fn no(reason: impl Into<String>) -> Decision {
    NoOpinion(reason.into())
}

/// The Node authorizer over the pods and claims caches.
pub struct NodeAuthorizer {
    pods: Arc<WatchCache>,
    claims: Option<Arc<WatchCache>>,
    index: Arc<RwLock<Index>>,
    rules: Vec<PolicyRule>,
}

impl NodeAuthorizer {
    /// `None` when pods are not served. `rules` are upstream's static node rules (the
    /// bootstrap `system:node` role).
    pub fn new(registry: &Registry, rules: Vec<PolicyRule>) -> Option<Self> {
        let pods = registry.store("", "v1", "pods")?.cache.clone();
        let claims = registry
            .store("", "v1", "persistentvolumeclaims")
            .map(|s| s.cache.clone());
        Some(NodeAuthorizer {
            pods,
            claims,
            index: Arc::new(RwLock::new(Index::default())),
            rules,
        })
    }

    /// Keeps the index in step with the pods cache until `shutdown`.
    pub fn spawn_indexer(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let pods = self.pods.clone();
        let index = self.index.clone();
        tokio::spawn(async move {
            loop {
                let start = match pods.watch(None, &Filter::default()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "node authorizer: cannot watch pods");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => continue,
                        }
                    }
                };
                {
                    let mut ix = index.write();
                    *ix = Index::default();
                    for (_, o) in &start.initial {
                        ix.put(o);
                    }
                }
                let mut rx = start.rx;
                loop {
                    let msg = tokio::select! {
                        _ = shutdown.cancelled() => return,
                        m = rx.recv() => m,
                    };
                    match msg {
                        Ok(Broadcast::Event(e)) => {
                            let mut ix = index.write();
                            match e.kind {
                                EventType::Deleted => ix.remove(&e.obj.key),
                                _ => ix.put(&e.obj),
                            }
                        }
                        Ok(Broadcast::Progress(_)) => {}
                        // Missed events or a rebuilt cache: index everything again.
                        Ok(Broadcast::Reset)
                        | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    }
                }
            }
        })
    }

    /// Whether a pod bound to `node` refers to `r`: from the index, else from the cache.
    fn related(&self, node: &str, r: &Ref) -> bool {
        if self
            .index
            .read()
            .nodes
            .get(node)
            .is_some_and(|m| m.contains_key(r))
        {
            return true;
        }
        self.pods_of(node).iter().any(|p| pod_refs(p).contains(r))
    }

    /// The pods bound to `node`, from the cache.
    fn pods_of(&self, node: &str) -> Vec<Value> {
        let filter = Filter {
            fields: FieldSelector::parse(&format!("spec.nodeName={node}")).unwrap_or_default(),
            ..Default::default()
        };
        let (items, _, _) = self.pods.list(&filter, "", 0);
        items
            .iter()
            .filter_map(|o| serde_json::from_slice(&o.bytes).ok())
            .collect()
    }

    /// Whether a claim used by a pod on `node` is bound to the volume `pv`.
    fn related_volume(&self, node: &str, pv: &str) -> bool {
        let Some(claims) = &self.claims else {
            return false;
        };
        let mut refs: Vec<Ref> = self
            .index
            .read()
            .nodes
            .get(node)
            .map(|m| m.keys().filter(|r| r.0 == Kind::Claim).cloned().collect())
            .unwrap_or_default();
        for p in self.pods_of(node) {
            refs.extend(pod_refs(&p).into_iter().filter(|r| r.0 == Kind::Claim));
        }
        refs.iter().any(|(_, ns, name)| {
            claims.get(&claims.key(ns, name)).is_some_and(|o| {
                serde_json::from_slice::<Value>(&o.bytes)
                    .ok()
                    .is_some_and(|c| {
                        c.pointer("/spec/volumeName").and_then(Value::as_str) == Some(pv)
                    })
            })
        })
    }

    /// Upstream `NodeAuthorizer.Authorize`; `None` when the user is not a node.
    pub fn authorize(&self, user: &User, a: &Attributes) -> Option<Decision> {
        let node = node_identity(user)?;
        if node.is_empty() {
            return Some(no(format!("unknown node for user {:?}", user.name)));
        }
        if a.resource_request {
            let d = match (a.api_group.as_str(), a.resource.as_str()) {
                ("", "secrets") => Some(self.read_namespaced(node, Kind::Secret, a)),
                ("", "configmaps") => Some(self.read_namespaced(node, Kind::ConfigMap, a)),
                ("", "persistentvolumeclaims") => Some(if a.subresource == "status" {
                    self.status_update(node, a)
                } else {
                    self.get_related(node, Kind::Claim, a)
                }),
                ("", "persistentvolumes") => Some(self.get_volume(node, a)),
                ("", "serviceaccounts") => Some(self.create_token(node, a)),
                ("coordination.k8s.io", "leases") => Some(lease(node, a)),
                ("storage.k8s.io", "csinodes") => Some(csi_node(node, a)),
                ("storage.k8s.io", "volumeattachments") | ("resource.k8s.io", "resourceclaims") => {
                    Some(no(format!(
                        "no relationship found between node '{node}' and this object"
                    )))
                }
                ("", "nodes") => node_object(node, a),
                ("", "pods") => self.pod(node, a),
                _ => None,
            };
            if let Some(d) = d {
                return Some(d);
            }
        }
        if self.rules.iter().any(|r| r.allows(a)) {
            Some(Allow)
        } else {
            Some(no(""))
        }
    }

    fn graph(&self, node: &str, kind: Kind, a: &Attributes) -> Decision {
        if a.name.is_empty() {
            return no("No Object name found");
        }
        if self.related(node, &(kind, a.namespace.clone(), a.name.clone())) {
            Allow
        } else {
            no(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }

    fn read_namespaced(&self, node: &str, kind: Kind, a: &Attributes) -> Decision {
        if !matches!(a.verb.as_str(), "get" | "list" | "watch") {
            return no("can only read resources of this type");
        }
        if !a.subresource.is_empty() {
            return no("cannot read subresource");
        }
        if a.namespace.is_empty() {
            return no("can only read namespaced object of this type");
        }
        self.graph(node, kind, a)
    }

    fn get_related(&self, node: &str, kind: Kind, a: &Attributes) -> Decision {
        if a.verb != "get" {
            return no("can only get individual resources of this type");
        }
        if !a.subresource.is_empty() {
            return no("cannot get subresource");
        }
        self.graph(node, kind, a)
    }

    fn get_volume(&self, node: &str, a: &Attributes) -> Decision {
        if a.verb != "get" {
            return no("can only get individual resources of this type");
        }
        if !a.subresource.is_empty() {
            return no("cannot get subresource");
        }
        if a.name.is_empty() {
            return no("No Object name found");
        }
        if self.related_volume(node, &a.name) {
            Allow
        } else {
            no(format!(
                "no relationship found between node '{node}' and this object"
            ))
        }
    }

    fn status_update(&self, node: &str, a: &Attributes) -> Decision {
        if !matches!(a.verb.as_str(), "update" | "patch") {
            return no("can only get/update/patch this type");
        }
        self.graph(node, Kind::Claim, a)
    }

    fn create_token(&self, node: &str, a: &Attributes) -> Decision {
        if a.verb != "create" || a.name.is_empty() {
            return no("can only create tokens for individual service accounts");
        }
        if a.subresource != "token" {
            return no("can only create token subresource of serviceaccount");
        }
        self.graph(node, Kind::ServiceAccount, a)
    }

    fn pod(&self, node: &str, a: &Attributes) -> Option<Decision> {
        let d = match (a.subresource.as_str(), a.verb.as_str()) {
            ("", "get") => self.get_related(node, Kind::Pod, a),
            ("", "list" | "watch") => {
                let scoped = FieldSelector::parse(&a.field_selector)
                    .ok()
                    .is_some_and(|f| f.requires_exact_match("spec.nodeName") == Some(node));
                if scoped {
                    Allow
                } else if !a.name.is_empty() {
                    self.graph(node, Kind::Pod, a)
                } else {
                    no("can only list/watch pods with spec.nodeName field selector")
                }
            }
            // NodeRestriction admission limits these to pods bound to the node.
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                Allow
            }
            _ => no(""),
        };
        Some(d)
    }
}

fn node_object(node: &str, a: &Attributes) -> Option<Decision> {
    let d = match (a.subresource.as_str(), a.verb.as_str()) {
        // NodeRestriction admission limits writes to the node's own object.
        ("", "create" | "update" | "patch") | ("status", "update" | "patch") => Allow,
        ("", "get" | "list" | "watch") => {
            if a.name == node {
                Allow
            } else if a.name.is_empty() {
                no(format!(
                    "node '{node}' cannot read all nodes, only its own Node object"
                ))
            } else {
                no(format!(
                    "node '{node}' cannot read '{}', only its own Node object",
                    a.name
                ))
            }
        }
        _ => no(""),
    };
    Some(d)
}

fn lease(node: &str, a: &Attributes) -> Decision {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return no("can only get, create, update, patch, or delete a node lease");
    }
    if a.namespace != NODE_LEASE_NAMESPACE {
        return no(format!(
            "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
        ));
    }
    // The name of a create is checked by NodeRestriction admission.
    if a.verb != "create" && a.name != node {
        return no("can only access node lease with the same name as the requesting node");
    }
    Allow
}

fn csi_node(node: &str, a: &Attributes) -> Decision {
    if !matches!(
        a.verb.as_str(),
        "get" | "create" | "update" | "patch" | "delete"
    ) {
        return no("can only get, create, update, patch, or delete a CSINode");
    }
    if !a.subresource.is_empty() {
        return no("cannot authorize CSINode subresources");
    }
    if a.verb != "create" && a.name != node {
        return no("can only access CSINode with the same name as the requesting node");
    }
    Allow
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_references() {
        let pod = json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {
            "serviceAccountName": "sa",
            "imagePullSecrets": [{"name": "pull"}],
            "containers": [{"name": "c", "env": [
                {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-s", "key": "k"}}},
                {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "from-s"}}, {"configMapRef": {"name": "from-cm"}}]}],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-s"}}]}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol-s"}},
                {"name": "b", "configMap": {"name": "vol-cm"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "claim"}},
                {"name": "d", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}, {"secret": {"name": "proj-s"}}]}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {}}}]}});
        let refs = pod_refs(&pod);
        let has = |k: Kind, n: &str| refs.contains(&(k, "ns".into(), n.into()));
        assert!(has(Kind::Pod, "p"));
        assert!(has(Kind::ServiceAccount, "sa"));
        for s in ["pull", "env-s", "from-s", "init-s", "vol-s", "proj-s"] {
            assert!(has(Kind::Secret, s), "{s}");
        }
        for c in ["env-cm", "from-cm", "vol-cm", "kube-root-ca.crt"] {
            assert!(has(Kind::ConfigMap, c), "{c}");
        }
        assert!(has(Kind::Claim, "claim"));
        assert!(has(Kind::Claim, "p-e"));
        assert!(!has(Kind::Secret, "other"));
        let default_sa =
            pod_refs(&json!({"metadata": {"name": "q", "namespace": "ns"}, "spec": {}}));
        assert!(default_sa.contains(&(Kind::ServiceAccount, "ns".into(), "default".into())));
    }

    #[test]
    fn identities() {
        let u = |name: &str, groups: &[&str]| User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            node_identity(&u("system:node:n1", &[NODES_GROUP])),
            Some("n1")
        );
        assert_eq!(node_identity(&u("system:node:n1", &[])), None);
        assert_eq!(node_identity(&u("alice", &[NODES_GROUP])), None);
        assert_eq!(node_identity(&u("system:node:", &[NODES_GROUP])), Some(""));
    }

    #[test]
    fn leases_and_nodes_by_name() {
        let a = |verb: &str, ns: &str, name: &str| Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: ns.into(),
            api_group: "coordination.k8s.io".into(),
            resource: "leases".into(),
            name: name.into(),
            ..Default::default()
        };
        assert_eq!(lease("n1", &a("patch", NODE_LEASE_NAMESPACE, "n1")), Allow);
        assert_ne!(lease("n1", &a("patch", NODE_LEASE_NAMESPACE, "n2")), Allow);
        assert_ne!(lease("n1", &a("get", "default", "n1")), Allow);
        assert_ne!(lease("n1", &a("list", NODE_LEASE_NAMESPACE, "")), Allow);
        let n = |verb: &str, name: &str| Attributes {
            verb: verb.into(),
            resource_request: true,
            resource: "nodes".into(),
            name: name.into(),
            ..Default::default()
        };
        assert_eq!(node_object("n1", &n("get", "n1")), Some(Allow));
        assert_eq!(
            node_object("n1", &n("get", "n2")),
            Some(no("node 'n1' cannot read 'n2', only its own Node object"))
        );
        assert_ne!(node_object("n1", &n("delete", "n1")), Some(Allow));
    }
}
