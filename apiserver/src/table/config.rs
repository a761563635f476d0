//! Configuration and access kinds: config maps, secrets, service accounts, resource quotas
//! and RBAC bindings. Roles, cluster roles and limit ranges have no upstream printer and
//! use the default table.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{age, arr_at, get, len_at, name, quantity, str_at};
use super::{col, wide, Column, Printer, AGE, NAME};

const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "string", "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process."),
    AGE,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types"),
    col("Data", "string", "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4"),
    AGE,
];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
];

const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
    col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    AGE,
];

const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error."),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
];

const CLUSTER_ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", "RoleRef can only reference a ClusterRole in the global namespace. If the RoleRef cannot be resolved, the Authorizer must return an error."),
    AGE,
    wide("Users", "string", "Users in the clusterRoleBinding"),
    wide("Groups", "string", "Groups in the clusterRoleBinding"),
    wide("ServiceAccounts", "string", "ServiceAccounts in the clusterRoleBinding"),
];

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let p = match (group, kind) {
        ("", "ConfigMap") => Printer::new(CONFIG_MAP_COLUMNS, config_map_cells),
        ("", "Secret") => Printer::new(SECRET_COLUMNS, secret_cells),
        ("", "ServiceAccount") => Printer::new(SERVICE_ACCOUNT_COLUMNS, service_account_cells),
        ("", "ResourceQuota") => Printer::new(RESOURCE_QUOTA_COLUMNS, resource_quota_cells),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            Printer::new(ROLE_BINDING_COLUMNS, binding_cells)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            Printer::new(CLUSTER_ROLE_BINDING_COLUMNS, binding_cells)
        }
        _ => return None,
    };
    Some(p)
}

fn config_map_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(len_at(obj, &["data"]) + len_at(obj, &["binaryData"])),
        age(obj, now),
    ]
}

fn secret_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["type"])),
        Value::from(len_at(obj, &["data"])),
        age(obj, now),
    ]
}

fn service_account_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(len_at(obj, &["secrets"])),
        age(obj, now),
    ]
}

/// Upstream `printResourceQuota`: `resource: used/hard` pairs split into requests and limits.
pub(crate) fn resource_quota_columns(obj: &Value) -> (String, String) {
    let Some(hard) = get(obj, &["status", "hard"]).and_then(Value::as_object) else {
        return (String::new(), String::new());
    };
    let mut resources: Vec<&String> = hard.keys().collect();
    resources.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for resource in resources {
        let used = quantity(get(obj, &["status", "used", resource.as_str()]));
        let entry = format!(
            "{resource}: {used}/{}",
            quantity(hard.get(resource.as_str()))
        );
        let pieces: Vec<&str> = resource.split('.').collect();
        if pieces.len() > 1 && pieces[0] == "limits" {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    (requests.join(", "), limits.join(", "))
}

fn resource_quota_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (requests, limits) = resource_quota_columns(obj);
    vec![
        name(obj),
        Value::from(requests),
        Value::from(limits),
        age(obj, now),
    ]
}

/// Upstream `rbac.SubjectsStrings`: users, groups and `namespace/name` service accounts.
fn subjects(obj: &Value) -> (String, String, String) {
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for s in arr_at(obj, &["subjects"]) {
        let subject_name = str_at(s, &["name"]);
        match str_at(s, &["kind"]) {
            "ServiceAccount" => sas.push(format!("{}/{subject_name}", str_at(s, &["namespace"]))),
            "User" => users.push(subject_name.to_string()),
            "Group" => groups.push(subject_name.to_string()),
            _ => {}
        }
    }
    (users.join(", "), groups.join(", "), sas.join(", "))
}

fn binding_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (users, groups, sas) = subjects(obj);
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            str_at(obj, &["roleRef", "kind"]),
            str_at(obj, &["roleRef", "name"])
        )),
        age(obj, now),
        Value::from(users),
        Value::from(groups),
        Value::from(sas),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:10Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn data_counts() {
        let cm = json!({"metadata": {"name": "c", "creationTimestamp": "2024-01-01T00:00:00Z"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            config_map_cells(&cm, now()),
            vec![json!("c"), json!(3), json!("10s")]
        );
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            secret_cells(&secret, now())[..3],
            [json!("s"), json!("Opaque"), json!(1)]
        );
        let sa = json!({"metadata": {"name": "default"}});
        assert_eq!(
            service_account_cells(&sa, now())[..2],
            [json!("default"), json!(0)]
        );
    }

    #[test]
    fn quota_columns() {
        let rq = json!({"status": {"hard": {"pods": "10", "limits.cpu": "2", "requests.memory": "1Gi", "limits.memory": "2Gi"},
            "used": {"pods": "3", "limits.cpu": "500m"}}});
        assert_eq!(
            resource_quota_columns(&rq),
            (
                "pods: 3/10, requests.memory: 0/1Gi".to_string(),
                "limits.cpu: 500m/2, limits.memory: 0/2Gi".to_string()
            )
        );
        assert_eq!(
            resource_quota_columns(&json!({})),
            (String::new(), String::new())
        );
    }

    #[test]
    fn binding_row() {
        let rb = json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                {"kind": "ServiceAccount", "namespace": "ns", "name": "sa"}, {"kind": "User", "name": "bob"}]});
        assert_eq!(
            binding_cells(&rb, now()),
            vec![
                json!("b"),
                json!("ClusterRole/view"),
                json!("<unknown>"),
                json!("alice, bob"),
                json!("devs"),
                json!("ns/sa")
            ]
        );
    }
}
