//! NodeRestriction (upstream `plugin/pkg/admission/noderestriction`): a node may write only
//! its own Node (no taint changes, no `node-restriction.kubernetes.io/` or unknown
//! `kubernetes.io` labels), its own Lease, the status of pods bound to it, mirror pods of
//! its own, the status of claims its pods use, and tokens bound to its pods.
//!
//! [`check`] is pure (old and new object; a delete has only the old); [`admit`] adds the
//! lookups creates need.

use serde_json::{Map, Value};

use super::{Attributes, Operation};
use crate::auth::node::{node_identity, NODE_LEASE_NAMESPACE};
use crate::auth::User;
use crate::error::{Error, Result};
use crate::handlers::ApiState;

/// Upstream's mirror pod annotation.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// One write, as NodeRestriction sees it.
pub struct Write<'a> {
    pub group: &'a str,
    pub plural: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub operation: Operation,
    pub old: Option<&'a Value>,
    pub new: &'a Value,
}

/// Labels a kubelet may set on its Node (upstream `kubeletapis.IsKubeletLabel`).
fn is_kubelet_label(key: &str) -> bool {
    const LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
    ];
    if LABELS.contains(&key) {
        return true;
    }
    let ns = label_namespace(key);
    ["kubelet.kubernetes.io", "node.kubernetes.io"]
        .iter()
        .any(|allowed| ns == *allowed || ns.ends_with(&format!(".{allowed}")))
}

fn label_namespace(key: &str) -> &str {
    key.split_once('/').map(|(ns, _)| ns).unwrap_or("")
}

fn in_namespace(ns: &str, domain: &str) -> bool {
    ns == domain || ns.ends_with(&format!(".{domain}"))
}

/// The label keys a node may not add, remove or change.
fn forbidden_labels(new: &Value, old: Option<&Value>) -> Vec<String> {
    let empty = Map::new();
    let labels = |o: Option<&Value>| {
        o.and_then(|o| o.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(|| empty.clone())
    };
    let (a, b) = (labels(Some(new)), labels(old));
    let mut modified: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .chain(b.iter().filter(|(k, v)| a.get(*k) != Some(*v)))
        .map(|(k, _)| k.clone())
        .collect();
    modified.sort();
    modified.dedup();
    modified
        .into_iter()
        .filter(|k| {
            let ns = label_namespace(k);
            in_namespace(ns, "node-restriction.kubernetes.io")
                || ((in_namespace(ns, "kubernetes.io") || in_namespace(ns, "k8s.io"))
                    && !is_kubelet_label(k))
        })
        .collect()
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The NodeRestriction decision for a write by `user`: `Err(message)` when forbidden.
pub fn check(user: &User, w: &Write<'_>) -> std::result::Result<(), String> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    if node.is_empty() {
        return Err(format!(
            "could not determine node from user {:?}",
            user.name
        ));
    }
    let name = match w.old {
        Some(o) => crate::object::meta_str(o, "name"),
        None => crate::object::meta_str(w.new, "name"),
    };
    match (w.group, w.plural) {
        ("", "pods") => match (w.subresource, w.operation) {
            ("", Operation::Create) => pod_create(node, w.new),
            // The stored pod decides, mirror or not.
            ("", Operation::Delete) => {
                if str_at(w.old.unwrap_or(&Value::Null), "/spec/nodeName") != node {
                    return Err(format!(
                        "node {node:?} can only delete pods with spec.nodeName set to itself"
                    ));
                }
                Ok(())
            }
            ("", op) => Err(format!(
                "unexpected operation {:?}, node {node:?} can only create and delete mirror pods",
                op.as_str()
            )),
            ("status", Operation::Update) => {
                let old = w.old.unwrap_or(&Value::Null);
                if str_at(old, "/spec/nodeName") != node {
                    return Err(format!("node {node:?} can only update pod status for pods with spec.nodeName set to itself"));
                }
                if old.pointer("/metadata/labels") != w.new.pointer("/metadata/labels") {
                    return Err(format!(
                        "node {node:?} cannot update labels through pod status"
                    ));
                }
                Ok(())
            }
            ("status", op) => Err(format!("unexpected operation {:?}", op.as_str())),
            (sub, _) => Err(format!(
                "unexpected pod subresource {sub:?}, only 'status' and 'eviction' are allowed"
            )),
        },
        ("", "nodes") => {
            if name != node {
                return Err(format!(
                    "node {node:?} is not allowed to modify node {name:?}"
                ));
            }
            match w.operation {
                Operation::Create => {
                    if w.new
                        .pointer("/spec/configSource")
                        .is_some_and(|c| !c.is_null())
                    {
                        return Err(format!("node {node:?} is not allowed to create pods with a non-nil configSource"));
                    }
                    let bad = forbidden_labels(w.new, None);
                    if !bad.is_empty() {
                        return Err(format!(
                            "node {node:?} is not allowed to set the following labels: {}",
                            bad.join(", ")
                        ));
                    }
                }
                Operation::Update => {
                    let old = w.old.unwrap_or(&Value::Null);
                    let taints = |o: &Value| {
                        o.pointer("/spec/taints")
                            .filter(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
                            .cloned()
                    };
                    if taints(w.new) != taints(old) {
                        return Err(format!("node {node:?} is not allowed to modify taints"));
                    }
                    let bad = forbidden_labels(w.new, Some(old));
                    if !bad.is_empty() {
                        return Err(format!(
                            "is not allowed to modify labels: {}",
                            bad.join(", ")
                        ));
                    }
                }
                Operation::Delete => {}
            }
            Ok(())
        }
        ("", "persistentvolumeclaims") => {
            if w.subresource != "status" {
                return Err("may only update PVC status".into());
            }
            let strip = |o: &Value| {
                let mut o = o.clone();
                if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                    m.remove("managedFields");
                }
                if let Some(s) = o.get_mut("status").and_then(Value::as_object_mut) {
                    for f in [
                        "capacity",
                        "conditions",
                        "allocatedResources",
                        "allocatedResourceStatuses",
                    ] {
                        s.remove(f);
                    }
                }
                o
            };
            if strip(w.new) != strip(w.old.unwrap_or(&Value::Null)) {
                return Err(format!("node {node:?} is not allowed to update fields other than status.capacity and status.conditions"));
            }
            Ok(())
        }
        ("coordination.k8s.io", "leases") => {
            if w.namespace != NODE_LEASE_NAMESPACE {
                return Err(format!(
                    "can only access leases in the {NODE_LEASE_NAMESPACE:?} system namespace"
                ));
            }
            if name != node {
                return Err(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        ("storage.k8s.io", "csinodes") => {
            if name != node {
                return Err(
                    "can only access CSINode with the same name as the requesting node".into(),
                );
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn pod_create(node: &str, pod: &Value) -> std::result::Result<(), String> {
    if pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR_POD_ANNOTATION))
        .is_none()
    {
        return Err(format!("pod does not have {MIRROR_POD_ANNOTATION:?} annotation, node {node:?} can only create mirror pods"));
    }
    if str_at(pod, "/spec/nodeName") != node {
        return Err(format!(
            "node {node:?} can only create pods with spec.nodeName set to itself"
        ));
    }
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match owners.as_slice() {
        [] => {
            return Err(format!(
                "node {node:?} can only create pods with an owner reference set to itself"
            ))
        }
        [o] => {
            if str_at(o, "/apiVersion") != "v1"
                || str_at(o, "/kind") != "Node"
                || str_at(o, "/name") != node
            {
                return Err(format!(
                    "node {node:?} can only create pods with an owner reference set to itself"
                ));
            }
            if o.get("controller").and_then(Value::as_bool) != Some(true) {
                return Err(format!("node {node:?} can only create pods with a controller owner reference set to itself"));
            }
            if o.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                return Err(format!(
                    "node {node:?} must not set blockOwnerDeletion on an owner reference"
                ));
            }
        }
        _ => {
            return Err(format!(
                "node {node:?} can only create pods with a single owner reference set to itself"
            ))
        }
    }
    if !str_at(pod, "/spec/serviceAccountName").is_empty() {
        return Err(format!(
            "node {node:?} can not create pods that reference a service account"
        ));
    }
    use crate::auth::node::Kind;
    let refs = crate::auth::node::pod_refs(pod);
    if refs.iter().any(|r| r.0 == Kind::Secret) {
        return Err(format!(
            "node {node:?} can not create pods that reference secrets"
        ));
    }
    if refs.iter().any(|r| r.0 == Kind::ConfigMap) {
        return Err(format!(
            "node {node:?} can not create pods that reference configmaps"
        ));
    }
    let volumes = pod.pointer("/spec/volumes").and_then(Value::as_array);
    if volumes
        .into_iter()
        .flatten()
        .any(|v| v.get("persistentVolumeClaim").is_some())
    {
        return Err(format!(
            "node {node:?} can not create pods that reference persistentvolumeclaims"
        ));
    }
    Ok(())
}

/// NodeRestriction on a create or update from the handlers; a mirror pod's owner must be
/// the node's current uid.
pub async fn admit(state: &ApiState, a: &Attributes<'_>, obj: &Value) -> Result<()> {
    let Some(node) = node_identity(a.user) else {
        return Ok(());
    };
    let w = Write {
        group: a.resource.group,
        plural: a.resource.plural,
        subresource: a.subresource,
        namespace: a.namespace,
        operation: a.operation,
        old: a.old,
        new: obj,
    };
    check(a.user, &w).map_err(|m| a.forbidden(obj, m))?;
    if a.is("", "pods") && a.subresource.is_empty() && a.operation == Operation::Create {
        let uid = str_at(obj, "/metadata/ownerReferences/0/uid");
        let current = match super::store_of(state, "", "nodes") {
            Some(s) => s.get_value("", node).await?,
            None => return Ok(()),
        };
        let want = crate::object::meta_str(&current, "uid");
        if uid != want {
            return Err(a.forbidden(
                obj,
                format!("node {node} UID mismatch: expected {uid} got {want}"),
            ));
        }
    }
    Ok(())
}

/// NodeRestriction on a TokenRequest: a node's tokens must be bound to a pod bound to it.
pub async fn admit_token_request(
    state: &ApiState,
    user: &User,
    namespace: &str,
    name: &str,
    req: &Value,
) -> Result<()> {
    let Some(node) = node_identity(user) else {
        return Ok(());
    };
    let forbidden = |message: String| Error::Forbidden {
        resource: "serviceaccounts".into(),
        name: name.to_string(),
        message,
    };
    let r = req.pointer("/spec/boundObjectRef").unwrap_or(&Value::Null);
    if str_at(r, "/apiVersion") != "v1"
        || str_at(r, "/kind") != "Pod"
        || str_at(r, "/name").is_empty()
    {
        return Err(forbidden("node requested token not bound to a pod".into()));
    }
    let uid = str_at(r, "/uid");
    if uid.is_empty() {
        return Err(forbidden(
            "node requested token with a pod binding without a uid".into(),
        ));
    }
    let Some(pods) = super::store_of(state, "", "pods") else {
        return Ok(());
    };
    let pod = pods.get_value(namespace, str_at(r, "/name")).await?;
    if crate::object::meta_str(&pod, "uid") != uid {
        return Err(forbidden(format!("the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated")));
    }
    if str_at(&pod, "/spec/nodeName") != node {
        return Err(forbidden(
            "node requested token bound to a pod scheduled on a different node".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn node_user(n: &str) -> User {
        User {
            name: format!("system:node:{n}"),
            groups: vec!["system:nodes".into()],
            ..Default::default()
        }
    }

    fn write<'a>(
        plural: &'a str,
        sub: &'a str,
        op: Operation,
        old: Option<&'a Value>,
        new: &'a Value,
    ) -> Write<'a> {
        Write {
            group: "",
            plural,
            subresource: sub,
            namespace: "",
            operation: op,
            old,
            new,
        }
    }

    #[test]
    fn node_labels_taints_and_names() {
        let u = node_user("n1");
        let old = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}});
        let mut new = old.clone();
        new["metadata"]["labels"]["node-restriction.kubernetes.io/x"] = json!("y");
        assert_eq!(
            check(&u, &write("nodes", "", Operation::Update, Some(&old), &new)),
            Err("is not allowed to modify labels: node-restriction.kubernetes.io/x".into())
        );
        let mut new = old.clone();
        new["metadata"]["labels"]["team"] = json!("a");
        new["metadata"]["labels"]["node.kubernetes.io/pool"] = json!("b");
        assert_eq!(
            check(&u, &write("nodes", "", Operation::Update, Some(&old), &new)),
            Ok(())
        );
        new["metadata"]["labels"]["node-role.kubernetes.io/control-plane"] = json!("");
        assert!(check(&u, &write("nodes", "", Operation::Update, Some(&old), &new)).is_err());
        let mut new = old.clone();
        new["spec"] = json!({"taints": [{"key": "k", "effect": "NoSchedule"}]});
        assert_eq!(
            check(
                &u,
                &write("nodes", "status", Operation::Update, Some(&old), &new)
            ),
            Err("node \"n1\" is not allowed to modify taints".into())
        );
        let other = json!({"metadata": {"name": "n2"}});
        assert_eq!(
            check(
                &u,
                &write("nodes", "", Operation::Update, Some(&other), &other)
            ),
            Err("node \"n1\" is not allowed to modify node \"n2\"".into())
        );
        let alice = User {
            name: "alice".into(),
            ..Default::default()
        };
        assert_eq!(
            check(
                &alice,
                &write("nodes", "", Operation::Update, Some(&other), &other)
            ),
            Ok(())
        );
    }

    #[test]
    fn pod_status_and_mirror_pods() {
        let u = node_user("n1");
        let mine = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}});
        let theirs = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n2"}});
        assert_eq!(
            check(
                &u,
                &write("pods", "status", Operation::Update, Some(&mine), &mine)
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &u,
                &write("pods", "status", Operation::Update, Some(&theirs), &theirs)
            ),
            Err(
                "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
                    .into()
            )
        );
        assert_eq!(
            check(&u, &write("pods", "", Operation::Create, None, &mine)),
            Err("pod does not have \"kubernetes.io/config.mirror\" annotation, node \"n1\" can only create mirror pods".into())
        );
        let mirror = json!({"metadata": {"name": "p", "annotations": {MIRROR_POD_ANNOTATION: "x"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "u", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]}]}});
        assert_eq!(
            check(&u, &write("pods", "", Operation::Create, None, &mirror)),
            Err("node \"n1\" can not create pods that reference secrets".into())
        );
    }
}
