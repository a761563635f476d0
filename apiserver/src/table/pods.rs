//! Pods and pod templates (upstream `printPod`, `printPodTemplate`).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::format::{
    arr_at, format_labels, get, int_at, layout_containers, name, opt_bool, or_none, since, str_at,
    time_at,
};
use super::{col, wide, Column, Printer, AGE, CONTAINERS_DOC, IMAGES_DOC, NAME};

const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName."),
    wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\""),
];

const POD_TEMPLATE_COLUMNS: &[Column] = &[
    NAME,
    col("Containers", "string", CONTAINERS_DOC),
    col("Images", "string", IMAGES_DOC),
    col("Pod Labels", "string", "The labels for the pod template."),
];

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    match (group, kind) {
        ("", "Pod") => Some(Printer {
            columns: POD_COLUMNS,
            cells: pod_cells,
            conditions: Some(pod_conditions),
        }),
        ("", "PodTemplate") => Some(Printer::new(POD_TEMPLATE_COLUMNS, pod_template_cells)),
        _ => None,
    }
}

/// Upstream marks finished pods with a `Completed` row condition.
fn pod_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_at(pod, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

/// The `state.terminated` reason text upstream shows: reason, else Signal:n, else ExitCode:n.
fn terminated_reason(term: &Value) -> String {
    let reason = str_at(term, &["reason"]);
    if !reason.is_empty() {
        return reason.to_string();
    }
    let signal = int_at(term, &["signal"]);
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int_at(term, &["exitCode"]))
    }
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Ready, Status and Restarts as upstream `printPod` computes them.
pub(crate) fn pod_summary(pod: &Value, now: DateTime<Utc>) -> (String, String, String) {
    let containers = arr_at(pod, &["spec", "containers"]);
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    let restartable = |name: &str| {
        init_specs
            .iter()
            .rev()
            .find(|c| str_at(c, &["name"]) == name)
            .is_some_and(|c| str_at(c, &["restartPolicy"]) == "Always")
    };
    let total = containers.len()
        + init_specs
            .iter()
            .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_restartable_restart: Option<DateTime<Utc>> = None;

    let phase = str_at(pod, &["status", "phase"]);
    let status_reason = str_at(pod, &["status", "reason"]);
    let mut reason = if status_reason.is_empty() {
        phase
    } else {
        status_reason
    }
    .to_string();
    let conditions = arr_at(pod, &["status", "conditions"]);
    if conditions.iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    for (i, status) in arr_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int_at(status, &["restartCount"]);
        let finished = time_at(status, &["lastState", "terminated", "finishedAt"]);
        restarts += count;
        last_restart = later(last_restart, finished);
        let is_restartable = restartable(str_at(status, &["name"]));
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, finished);
        }
        let terminated = get(status, &["state", "terminated"]);
        let waiting_reason = get(status, &["state", "waiting"]).map(|w| str_at(w, &["reason"]));
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]) == 0) {
            continue;
        }
        if is_restartable && opt_bool(status, &["started"]) == Some(true) {
            if opt_bool(status, &["ready"]) == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = match (terminated, waiting_reason) {
            (Some(t), _) => format!("Init:{}", terminated_reason(t)),
            (None, Some(w)) if !w.is_empty() && w != "PodInitializing" => format!("Init:{w}"),
            _ => format!("Init:{}/{}", i, init_specs.len()),
        };
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .find(|c| str_at(c, &["type"]) == "Initialized")
        .is_some_and(|c| str_at(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for status in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(status, &["restartCount"]);
            last_restart = later(
                last_restart,
                time_at(status, &["lastState", "terminated", "finishedAt"]),
            );
            let waiting_reason = get(status, &["state", "waiting"])
                .map(|w| str_at(w, &["reason"]))
                .unwrap_or("");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = get(status, &["state", "terminated"]) {
                reason = terminated_reason(t);
            } else if opt_bool(status, &["ready"]) == Some(true)
                && get(status, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| str_at(c, &["type"]) == "Ready" && str_at(c, &["status"]) == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.to_string();
        }
    }

    let deleting = get(pod, &["metadata", "deletionTimestamp"]).is_some();
    if deleting && status_reason == "NodeLost" {
        reason = "Unknown".to_string();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(t), now)),
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts_text)
}

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (ready, reason, restarts) = pod_summary(pod, now);
    let pod_ip = arr_at(pod, &["status", "podIPs"])
        .first()
        .map(|ip| str_at(ip, &["ip"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| str_at(pod, &["status", "podIP"]));
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr_at(pod, &["status", "conditions"]);
        let true_conditions = gates
            .iter()
            .filter(|g| {
                let wanted = str_at(g, &["conditionType"]);
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == wanted)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{true_conditions}/{}", gates.len())
    };
    vec![
        name(pod),
        Value::from(ready),
        Value::from(reason),
        Value::from(restarts),
        super::format::age(pod, now),
        Value::from(or_none(pod_ip)),
        Value::from(or_none(str_at(pod, &["spec", "nodeName"]))),
        Value::from(or_none(str_at(pod, &["status", "nominatedNodeName"]))),
        Value::from(readiness_gates),
    ]
}

fn pod_template_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = layout_containers(arr_at(obj, &["template", "spec", "containers"]));
    vec![
        name(obj),
        names,
        images,
        Value::from(format_labels(get(obj, &["template", "metadata", "labels"]))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T01:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts, "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}})
    }

    #[test]
    fn pod_status_reasons() {
        let cases: Vec<(&str, Value, (&str, &str, &str))> = vec![
            (
                "pending, nothing reported",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending"}}),
                ("0/1", "Pending", "0"),
            ),
            (
                "running and ready",
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]},
                "status": {"phase": "Running", "containerStatuses": [running("a", true, 0), running("b", false, 0)]}}),
                ("1/2", "Running", "0"),
            ),
            (
                "status reason wins over phase",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Failed", "reason": "Evicted"}}),
                ("0/1", "Evicted", "0"),
            ),
            (
                "scheduling gated",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}}),
                ("0/1", "SchedulingGated", "0"),
            ),
            (
                "crash loop with restarts",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
                "containerStatuses": [{"name": "a", "ready": false, "restartCount": 2,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:55:00Z"}}}]}}),
                ("0/1", "CrashLoopBackOff", "2 (5m ago)"),
            ),
            (
                "completed",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Succeeded",
                "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
                ("0/1", "Completed", "0"),
            ),
            (
                "completed but one still running and ready",
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, running("b", true, 0)]}}),
                ("1/2", "Running", "0"),
            ),
            (
                "completed, running, pod not ready",
                json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Running",
                "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}, running("b", true, 0)]}}),
                ("1/2", "NotReady", "0"),
            ),
            (
                "terminated by signal",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
                "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}}),
                ("0/1", "Signal:9", "0"),
            ),
            (
                "terminated with exit code",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
                "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 3}}}]}}),
                ("0/1", "ExitCode:3", "0"),
            ),
            (
                "init 1/3",
                json!({"spec": {"initContainers": [{"name": "i0"}, {"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [
                    {"name": "i0", "state": {"terminated": {"exitCode": 0}}},
                    {"name": "i1", "state": {"running": {}}},
                    {"name": "i2", "state": {"waiting": {"reason": "PodInitializing"}}}],
                    "containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "PodInitializing"}}}]}}),
                ("0/1", "Init:1/3", "0"),
            ),
            (
                "init crash loop",
                json!({"spec": {"initContainers": [{"name": "i0"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [
                    {"name": "i0", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}}),
                ("0/1", "Init:CrashLoopBackOff", "4"),
            ),
            (
                "init failed with exit code",
                json!({"spec": {"initContainers": [{"name": "i0"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i0", "state": {"terminated": {"exitCode": 2}}}]}}),
                ("0/1", "Init:ExitCode:2", "0"),
            ),
            (
                "init failed by signal",
                json!({"spec": {"initContainers": [{"name": "i0"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i0", "state": {"terminated": {"exitCode": 1, "signal": 15}}}]}}),
                ("0/1", "Init:Signal:15", "0"),
            ),
            (
                "init failed with reason",
                json!({"spec": {"initContainers": [{"name": "i0"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i0", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}}),
                ("0/1", "Init:Error", "0"),
            ),
            (
                "sidecar counted in total and ready",
                json!({"spec": {"initContainers": [{"name": "side", "restartPolicy": "Always"}], "containers": [{"name": "a"}]},
                "status": {"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                    "initContainerStatuses": [{"name": "side", "started": true, "ready": true, "restartCount": 1,
                        "lastState": {"terminated": {"finishedAt": "2024-01-01T00:30:00Z"}}, "state": {"running": {}}}],
                    "containerStatuses": [running("a", true, 0)]}}),
                ("2/2", "Running", "1 (30m ago)"),
            ),
            (
                "terminating",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:59:00Z"}, "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Running", "containerStatuses": [running("a", true, 0)]}}),
                ("1/1", "Terminating", "0"),
            ),
            (
                "deleted after success keeps reason",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:59:00Z"}, "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Succeeded", "containerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}}),
                ("0/1", "Completed", "0"),
            ),
            (
                "node lost",
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:59:00Z"}, "spec": {"containers": [{"name": "a"}]},
                "status": {"phase": "Running", "reason": "NodeLost"}}),
                ("0/1", "Unknown", "0"),
            ),
            (
                "restarts without a finish time",
                json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running",
                "containerStatuses": [running("a", true, 3)]}}),
                ("1/1", "Running", "3"),
            ),
        ];
        for (what, pod, (ready, status, restarts)) in cases {
            let got = pod_summary(&pod, now());
            assert_eq!(
                (got.0.as_str(), got.1.as_str(), got.2.as_str()),
                (ready, status, restarts),
                "{what}"
            );
        }
    }

    #[test]
    fn pod_row_wide_cells() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "a"}], "nodeName": "n1", "readinessGates": [{"conditionType": "x"}, {"conditionType": "y"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "conditions": [{"type": "x", "status": "True"}, {"type": "y", "status": "False"}],
                "containerStatuses": [running("a", true, 0)]}});
        assert_eq!(
            pod_cells(&pod, now()),
            vec![
                json!("p"),
                json!("1/1"),
                json!("Running"),
                json!("0"),
                json!("60m"),
                json!("10.0.0.9"),
                json!("n1"),
                json!("<none>"),
                json!("1/2")
            ]
        );
        let bare = json!({"metadata": {"name": "q"}});
        assert_eq!(
            pod_cells(&bare, now())[4..],
            [
                json!("<unknown>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let ips = json!({"status": {"podIPs": [{"ip": "fd00::1"}, {"ip": "10.1.1.1"}], "podIP": "10.1.1.1"}});
        assert_eq!(pod_cells(&ips, now())[5], json!("fd00::1"));
    }

    #[test]
    fn pod_row_conditions() {
        assert!(pod_conditions(&json!({"status": {"phase": "Running"}})).is_none());
        assert_eq!(
            pod_conditions(&json!({"status": {"phase": "Failed"}})),
            Some(
                json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}])
            )
        );
    }

    #[test]
    fn pod_template_cells_lay_out_containers() {
        let t = json!({"metadata": {"name": "t"}, "template": {"metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "a", "image": "ia"}, {"name": "b", "image": "ib"}]}}});
        assert_eq!(
            pod_template_cells(&t, now()),
            vec![json!("t"), json!("a,b"), json!("ia,ib"), json!("app=x")]
        );
    }
}
