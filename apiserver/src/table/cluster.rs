//! Cluster-level and bookkeeping kinds: namespaces, nodes, events, leases, priority and
//! runtime classes, component statuses, CSRs and webhook configurations.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::format::{
    age, arr_at, get, human_duration, int_at, len_at, name, opt_bool, opt_int, opt_str, since,
    str_at, time_at,
};
use super::{col, wide, Column, Printer, AGE, NAME};

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available."),
    wide("External-IP", "string", "List of addresses reachable to the node. Queried from cloud provider, if available."),
    wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "string", "The object that this event is about."),
    wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]."),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    wide("Count", "string", "The number of times this event has occurred."),
    NAME.with_priority(1),
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

const LEASE_CANDIDATE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "LeaseName",
        "string",
        "LeaseName is the name of the lease for which this candidate is contending.",
    ),
    col(
        "BinaryVersion",
        "string",
        "BinaryVersion is the binary version.",
    ),
    col(
        "EmulationVersion",
        "string",
        "EmulationVersion is the emulation version.",
    ),
    AGE,
];

const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Value", "integer", "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec."),
    col("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class."),
    AGE,
    col("PreemptionPolicy", "string", "preemptionPolicy is the Policy for preempting pods with lower priority. One of Never, PreemptLowerPriority. Defaults to PreemptLowerPriority if unset."),
];

const RUNTIME_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Handler", "string", "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class."),
    AGE,
];

const COMPONENT_STATUS_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the component conditions"),
    col("Message", "string", "Message of the component conditions"),
    col("Error", "string", "Error of the component conditions"),
];

const CSR_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col("SignerName", "string", "Requested signer for the request."),
    col("Requestor", "string", "Base64-encoded PKCS#10 CSR data"),
    col(
        "RequestedDuration",
        "string",
        "expirationSeconds is the requested duration of validity of the issued certificate.",
    ),
    col(
        "Condition",
        "string",
        "Conditions applied to the request, such as approval or denial.",
    ),
];

const WEBHOOK_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Webhooks",
        "integer",
        "Webhooks indicates the number of webhooks registered in this configuration",
    ),
    AGE,
];

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let p = match (group, kind) {
        ("", "Namespace") => Printer::new(NAMESPACE_COLUMNS, namespace_cells),
        ("", "Node") => Printer::new(NODE_COLUMNS, node_cells),
        ("", "Event") => Printer::new(EVENT_COLUMNS, core_event_cells),
        ("events.k8s.io", "Event") => Printer::new(EVENT_COLUMNS, events_api_event_cells),
        ("coordination.k8s.io", "Lease") => Printer::new(LEASE_COLUMNS, lease_cells),
        ("coordination.k8s.io", "LeaseCandidate") => {
            Printer::new(LEASE_CANDIDATE_COLUMNS, lease_candidate_cells)
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            Printer::new(PRIORITY_CLASS_COLUMNS, priority_class_cells)
        }
        ("node.k8s.io", "RuntimeClass") => Printer::new(RUNTIME_CLASS_COLUMNS, runtime_class_cells),
        ("", "ComponentStatus") => Printer::new(COMPONENT_STATUS_COLUMNS, component_status_cells),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            Printer::new(CSR_COLUMNS, csr_cells)
        }
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => Printer::new(WEBHOOK_COLUMNS, webhook_cells),
        _ => return None,
    };
    Some(p)
}

fn namespace_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["status", "phase"])),
        age(obj, now),
    ]
}

/// Upstream node Status: Ready / NotReady / Unknown, plus SchedulingDisabled.
pub(crate) fn node_status(node: &Value) -> String {
    // Upstream indexes conditions by type, so the last Ready condition wins.
    let ready = arr_at(node, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if opt_bool(node, &["spec", "unschedulable"]) == Some(true) {
        status.push("SchedulingDisabled");
    }
    status.join(",")
}

/// Upstream `findNodeRoles`, joined; `<none>` when there are none.
pub(crate) fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(labels) = get(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    }
}

fn node_address(node: &Value, type_: &str) -> String {
    arr_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == type_)
        .map(|a| str_at(a, &["address"]).to_string())
        .unwrap_or_else(|| "<none>".to_string())
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let info = |field: &str| {
        let v = str_at(node, &["status", "nodeInfo", field]);
        Value::from(if v.is_empty() { "<unknown>" } else { v })
    };
    vec![
        name(node),
        Value::from(node_status(node)),
        Value::from(node_roles(node)),
        age(node, now),
        Value::from(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        Value::from(node_address(node, "InternalIP")),
        Value::from(node_address(node, "ExternalIP")),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

/// The fields the event printer reads, wherever the API version keeps them.
struct EventFields<'a> {
    first: Option<DateTime<Utc>>,
    last: Option<DateTime<Utc>>,
    event_time: Option<DateTime<Utc>>,
    count: i64,
    series: Option<&'a Value>,
    involved: Option<&'a Value>,
    component: &'a str,
    host: &'a str,
    message: &'a str,
}

fn core_event_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let fields = EventFields {
        first: time_at(obj, &["firstTimestamp"]),
        last: time_at(obj, &["lastTimestamp"]),
        event_time: time_at(obj, &["eventTime"]),
        count: int_at(obj, &["count"]),
        series: get(obj, &["series"]),
        involved: get(obj, &["involvedObject"]),
        component: str_at(obj, &["source", "component"]),
        host: str_at(obj, &["source", "host"]),
        message: str_at(obj, &["message"]),
    };
    event_cells(obj, &fields, now)
}

fn events_api_event_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let fields = EventFields {
        first: time_at(obj, &["deprecatedFirstTimestamp"]),
        last: time_at(obj, &["deprecatedLastTimestamp"]),
        event_time: time_at(obj, &["eventTime"]),
        count: int_at(obj, &["deprecatedCount"]),
        series: get(obj, &["series"]),
        involved: get(obj, &["regarding"]),
        component: str_at(obj, &["deprecatedSource", "component"]),
        host: str_at(obj, &["deprecatedSource", "host"]),
        message: str_at(obj, &["note"]),
    };
    event_cells(obj, &fields, now)
}

/// Upstream `printEvent` (wide).
fn event_cells(obj: &Value, f: &EventFields, now: DateTime<Utc>) -> Vec<Value> {
    let first = match f.first {
        Some(t) => since(Some(t), now),
        None => since(f.event_time, now),
    };
    let mut last = match f.last {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = f.count;
    if let Some(series) = f.series {
        last = since(time_at(series, &["lastObservedTime"]), now);
        count = int_at(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let empty = Value::Null;
    let involved = f.involved.unwrap_or(&empty);
    let kind = str_at(involved, &["kind"]).to_lowercase();
    let involved_name = str_at(involved, &["name"]);
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };
    let component = if f.component.is_empty() {
        str_at(obj, &["reportingController"])
    } else {
        f.component
    };
    let host = if f.host.is_empty() {
        str_at(obj, &["reportingInstance"])
    } else {
        f.host
    };
    let source = if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    };
    vec![
        Value::from(last),
        Value::from(str_at(obj, &["type"])),
        Value::from(str_at(obj, &["reason"])),
        Value::from(target),
        Value::from(str_at(involved, &["fieldPath"])),
        Value::from(source),
        Value::from(f.message.trim()),
        Value::from(first),
        Value::from(count),
        name(obj),
    ]
}

fn lease_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "holderIdentity"])),
        age(obj, now),
    ]
}

fn lease_candidate_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "leaseName"])),
        Value::from(str_at(obj, &["spec", "binaryVersion"])),
        Value::from(str_at(obj, &["spec", "emulationVersion"])),
        age(obj, now),
    ]
}

fn priority_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(int_at(obj, &["value"])),
        Value::from(opt_bool(obj, &["globalDefault"]).unwrap_or(false)),
        age(obj, now),
        Value::from(str_at(obj, &["preemptionPolicy"])),
    ]
}

fn runtime_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["handler"])),
        age(obj, now),
    ]
}

fn component_status_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let healthy = arr_at(obj, &["conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == "Healthy");
    let (status, message, error) = match healthy {
        Some(c) => (
            if str_at(c, &["status"]) == "True" {
                "Healthy"
            } else {
                "Unhealthy"
            },
            str_at(c, &["message"]),
            str_at(c, &["error"]),
        ),
        None => ("Unknown", "", ""),
    };
    vec![
        name(obj),
        Value::from(status),
        Value::from(message),
        Value::from(error),
    ]
}

/// Upstream `extractCSRStatus`.
fn csr_status(obj: &Value) -> String {
    let types: Vec<&str> = arr_at(obj, &["status", "conditions"])
        .iter()
        .map(|c| str_at(c, &["type"]))
        .collect();
    let mut status = if types.contains(&"Denied") {
        "Denied"
    } else if types.contains(&"Approved") {
        "Approved"
    } else {
        "Pending"
    }
    .to_string();
    if types.contains(&"Failed") {
        status.push_str(",Failed");
    }
    if opt_str(obj, &["status", "certificate"]).is_some_and(|c| !c.is_empty()) {
        status.push_str(",Issued");
    }
    status
}

fn csr_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let signer = str_at(obj, &["spec", "signerName"]);
    let requested = opt_int(obj, &["spec", "expirationSeconds"])
        .map(|s| human_duration(Duration::seconds(s)))
        .unwrap_or_else(|| "<none>".to_string());
    vec![
        name(obj),
        age(obj, now),
        Value::from(if signer.is_empty() { "<none>" } else { signer }),
        Value::from(str_at(obj, &["spec", "username"])),
        Value::from(requested),
        Value::from(csr_status(obj)),
    ]
}

fn webhook_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(len_at(obj, &["webhooks"])),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn node_status_and_roles() {
        let cases = [
            (json!({}), "Unknown", "<none>"),
            (
                json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                "Ready",
                "<none>",
            ),
            (
                json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                "NotReady",
                "<none>",
            ),
            (
                json!({"spec": {"unschedulable": true}, "status": {"conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]}}),
                "Ready,SchedulingDisabled",
                "<none>",
            ),
            (
                json!({"spec": {"unschedulable": true}}),
                "Unknown,SchedulingDisabled",
                "<none>",
            ),
            (
                json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "", "kubernetes.io/hostname": "n"}}}),
                "Unknown",
                "control-plane,master",
            ),
            (
                json!({"metadata": {"labels": {"kubernetes.io/role": "worker", "node-role.kubernetes.io/": "x"}}}),
                "Unknown",
                "worker",
            ),
            (
                json!({"metadata": {"labels": {"kubernetes.io/role": ""}}}),
                "Unknown",
                "<none>",
            ),
        ];
        for (node, status, roles) in cases {
            assert_eq!(node_status(&node), status, "{node}");
            assert_eq!(node_roles(&node), roles, "{node}");
        }
    }

    #[test]
    fn node_row() {
        let node = json!({"metadata": {"name": "n1", "creationTimestamp": "2023-12-29T01:00:00Z"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian", "containerRuntimeVersion": "containerd://2.0"}}});
        assert_eq!(
            node_cells(&node, now()),
            vec![
                json!("n1"),
                json!("Ready"),
                json!("<none>"),
                json!("3d"),
                json!("v1.33.0"),
                json!("10.0.0.5"),
                json!("<none>"),
                json!("Debian"),
                json!("<unknown>"),
                json!("containerd://2.0")
            ]
        );
    }

    #[test]
    fn event_rows() {
        let ev = json!({"metadata": {"name": "p.1"}, "type": "Warning", "reason": "BackOff",
            "involvedObject": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{a}"},
            "source": {"component": "kubelet", "host": "n1"}, "message": " Back-off restarting \n",
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:58:00Z", "count": 7});
        assert_eq!(
            core_event_cells(&ev, now()),
            vec![
                json!("2m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/p"),
                json!("spec.containers{a}"),
                json!("kubelet, n1"),
                json!("Back-off restarting"),
                json!("60m"),
                json!(7),
                json!("p.1")
            ]
        );
        let new_style = json!({"metadata": {"name": "e"}, "eventTime": "2024-01-01T00:59:30.123456Z",
            "reportingController": "ctrl", "involvedObject": {"kind": "Node"}});
        let cells = core_event_cells(&new_style, now());
        // 29.877s: Go truncates toward zero.
        assert_eq!(cells[0], json!("29s"));
        assert_eq!(cells[3], json!("node"));
        assert_eq!(cells[5], json!("ctrl"));
        assert_eq!(cells[7], json!("29s"));
        assert_eq!(cells[8], json!(1));
        let series = json!({"metadata": {"name": "s"}, "series": {"count": 9, "lastObservedTime": "2024-01-01T00:59:50Z"}});
        let cells = core_event_cells(&series, now());
        assert_eq!(
            (cells[0].clone(), cells[7].clone(), cells[8].clone()),
            (json!("10s"), json!("<unknown>"), json!(9))
        );
        let api = json!({"metadata": {"name": "x"}, "regarding": {"kind": "Deployment", "name": "web"}, "note": "scaled",
            "reportingController": "deployment-controller", "reportingInstance": "cm-1", "eventTime": "2024-01-01T00:00:00.000000Z", "reason": "Scaled"});
        let cells = events_api_event_cells(&api, now());
        assert_eq!(
            cells[2..8],
            [
                json!("Scaled"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller, cm-1"),
                json!("scaled"),
                json!("60m")
            ]
        );
    }

    #[test]
    fn small_kinds() {
        assert_eq!(
            namespace_cells(
                &json!({"metadata": {"name": "d"}, "status": {"phase": "Active"}}),
                now()
            )[1],
            json!("Active")
        );
        assert_eq!(
            lease_cells(&json!({"spec": {"holderIdentity": "me"}}), now())[1],
            json!("me")
        );
        assert_eq!(
            priority_class_cells(
                &json!({"value": 1000, "globalDefault": true, "preemptionPolicy": "Never"}),
                now()
            ),
            vec![
                json!(""),
                json!(1000),
                json!(true),
                json!("<unknown>"),
                json!("Never")
            ]
        );
        assert_eq!(
            csr_status(
                &json!({"status": {"conditions": [{"type": "Approved"}], "certificate": "abc"}})
            ),
            "Approved,Issued"
        );
        assert_eq!(
            csr_status(
                &json!({"status": {"conditions": [{"type": "Approved"}, {"type": "Denied"}, {"type": "Failed"}]}})
            ),
            "Denied,Failed"
        );
        assert_eq!(
            csr_cells(&json!({"spec": {"expirationSeconds": 3600}}), now())[2..6],
            [json!("<none>"), json!(""), json!("60m"), json!("Pending")]
        );
        assert_eq!(
            webhook_cells(&json!({"webhooks": [{}, {}]}), now())[1],
            json!(2)
        );
        assert_eq!(
            component_status_cells(
                &json!({"conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]}),
                now()
            )[1..4],
            [json!("Healthy"), json!("ok"), json!("")]
        );
    }
}
