//! Typed round-trips through the k8s-openapi types, used to find fields a built-in kind
//! does not declare (strict field validation: `fieldValidation=Strict|Warn`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
    certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};

fn rt<T: DeserializeOwned + Serialize>(v: &Value) -> Option<Result<Value, String>> {
    Some(match serde_json::from_value::<T>(v.clone()) {
        Ok(t) => serde_json::to_value(t).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    })
}

/// The object as the typed model of `group`/`version`/`kind` sees it: `None` for kinds without one,
/// `Some(Err(..))` when the object does not decode (a field of the wrong type).
pub fn roundtrip(
    group: &str,
    version: &str,
    kind: &str,
    v: &Value,
) -> Option<Result<Value, String>> {
    match (group, version, kind) {
        ("autoscaling", "v1", "HorizontalPodAutoscaler") => {
            rt::<k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler>(v)
        }
        ("", _, "Namespace") => rt::<core::Namespace>(v),
        ("", _, "Pod") => rt::<core::Pod>(v),
        ("", _, "Service") => rt::<core::Service>(v),
        ("", _, "Endpoints") => rt::<core::Endpoints>(v),
        ("", _, "ConfigMap") => rt::<core::ConfigMap>(v),
        ("", _, "Secret") => rt::<core::Secret>(v),
        ("", _, "Node") => rt::<core::Node>(v),
        ("", _, "Event") => rt::<core::Event>(v),
        ("", _, "ServiceAccount") => rt::<core::ServiceAccount>(v),
        ("", _, "PersistentVolume") => rt::<core::PersistentVolume>(v),
        ("", _, "PersistentVolumeClaim") => rt::<core::PersistentVolumeClaim>(v),
        ("", _, "ResourceQuota") => rt::<core::ResourceQuota>(v),
        ("", _, "LimitRange") => rt::<core::LimitRange>(v),
        ("", _, "PodTemplate") => rt::<core::PodTemplate>(v),
        ("", _, "ReplicationController") => rt::<core::ReplicationController>(v),
        ("apps", _, "Deployment") => rt::<apps::Deployment>(v),
        ("apps", _, "ReplicaSet") => rt::<apps::ReplicaSet>(v),
        ("apps", _, "StatefulSet") => rt::<apps::StatefulSet>(v),
        ("apps", _, "DaemonSet") => rt::<apps::DaemonSet>(v),
        ("apps", _, "ControllerRevision") => rt::<apps::ControllerRevision>(v),
        ("batch", _, "Job") => rt::<batch::Job>(v),
        ("batch", _, "CronJob") => rt::<batch::CronJob>(v),
        ("coordination.k8s.io", _, "Lease") => rt::<coordination::Lease>(v),
        ("certificates.k8s.io", _, "CertificateSigningRequest") => {
            rt::<certificates::CertificateSigningRequest>(v)
        }
        ("discovery.k8s.io", _, "EndpointSlice") => rt::<discovery::EndpointSlice>(v),
        ("events.k8s.io", _, "Event") => rt::<events::Event>(v),
        ("autoscaling", _, "HorizontalPodAutoscaler") => {
            rt::<autoscaling::HorizontalPodAutoscaler>(v)
        }
        ("policy", _, "PodDisruptionBudget") => rt::<policy::PodDisruptionBudget>(v),
        ("networking.k8s.io", _, "Ingress") => rt::<networking::Ingress>(v),
        ("networking.k8s.io", _, "NetworkPolicy") => rt::<networking::NetworkPolicy>(v),
        ("rbac.authorization.k8s.io", _, "Role") => rt::<rbac::Role>(v),
        ("rbac.authorization.k8s.io", _, "RoleBinding") => rt::<rbac::RoleBinding>(v),
        ("rbac.authorization.k8s.io", _, "ClusterRole") => rt::<rbac::ClusterRole>(v),
        ("rbac.authorization.k8s.io", _, "ClusterRoleBinding") => rt::<rbac::ClusterRoleBinding>(v),
        ("storage.k8s.io", _, "StorageClass") => rt::<storage::StorageClass>(v),
        ("scheduling.k8s.io", _, "PriorityClass") => rt::<scheduling::PriorityClass>(v),
        _ => None,
    }
}

/// Paths (upstream style: `spec.containers[0].foo`) present in `input` but not in the typed
/// round-trip `typed`. Explicit nulls are not reported.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, typed, "", &mut out);
    out
}

fn walk(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(i), Value::Object(t)) => {
            for (k, v) in i {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match t.get(k) {
                    Some(tv) => walk(v, tv, &p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(t)) => {
            for (n, (iv, tv)) in i.iter().zip(t.iter()).enumerate() {
                walk(iv, tv, &format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields_at_any_depth() {
        let input = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "bogus": 1},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "replicaz": 2,
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicyy": "x"}]}}},
            "status": null
        });
        let typed = roundtrip("apps", "v1", "Deployment", &input)
            .and_then(Result::ok)
            .unwrap_or_default();
        assert_eq!(
            unknown_fields(&input, &typed),
            vec![
                "metadata.bogus",
                "spec.replicaz",
                "spec.template.spec.containers[0].imagePullPolicyy"
            ]
        );
    }

    #[test]
    fn known_objects_have_none() {
        let input = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"a": "b"}}, "data": {"k": "v"}});
        let typed = roundtrip("", "v1", "ConfigMap", &input)
            .and_then(Result::ok)
            .unwrap_or_default();
        let bad =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "three"}});
        assert!(matches!(
            roundtrip("apps", "v1", "Deployment", &bad),
            Some(Err(_))
        ));
        assert!(unknown_fields(&input, &typed).is_empty());
        assert!(roundtrip("example.com", "v1", "Widget", &input).is_none());
    }
}
