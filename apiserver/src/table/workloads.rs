//! Controllers and their companions: deployments, replica sets, replication controllers,
//! stateful sets, daemon sets, jobs, cron jobs, controller revisions, HPAs and PDBs.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::format::{
    age, arr_at, bool_ptr, deleting, format_label_selector, format_labels, get, has_condition,
    human_duration, int_at, label_selector_string, layout_containers, name, opt_int, opt_str,
    scalar_string, since, str_at, time_at,
};
use super::{col, wide, Column, Printer, AGE, CONTAINERS_DOC, IMAGES_DOC, NAME};

const CONTAINERS: Column = wide("Containers", "string", CONTAINERS_DOC);
const IMAGES: Column = wide("Images", "string", IMAGES_DOC);
const SELECTOR_DOC: &str = "A label query over pods that should match the replica count. It must match the pod template's labels.";

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment."),
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "Replicas is the number of desired replicas. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1."),
    col("Current", "integer", "Replicas is the most recently observed number of replicas."),
    col("Ready", "integer", "The number of ready replicas for this replica set."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", SELECTOR_DOC),
];

const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod)."),
    col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
    col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
    col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)"),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels."),
];

const JOB_SELECTOR: Column = wide("Selector", "string", "A label query over pods that should match the pod count. Normally, the system sets this field for you.");

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    JOB_SELECTOR,
];

const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
    col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions. Defaults to false."),
    col("Active", "integer", "A list of pointers to currently running jobs."),
    col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    JOB_SELECTOR,
];

const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

const HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "string", "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource."),
    col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count (the maximum replica count across all metrics will be used)."),
    col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
    col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
    col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler."),
    AGE,
];

const PDB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let p = match (group, kind) {
        ("apps" | "extensions", "Deployment") => Printer::new(DEPLOYMENT_COLUMNS, deployment_cells),
        ("apps" | "extensions", "ReplicaSet") => {
            Printer::new(REPLICA_SET_COLUMNS, replica_set_cells)
        }
        ("", "ReplicationController") => {
            Printer::new(REPLICA_SET_COLUMNS, replication_controller_cells)
        }
        ("apps", "StatefulSet") => Printer::new(STATEFUL_SET_COLUMNS, stateful_set_cells),
        ("apps" | "extensions", "DaemonSet") => Printer::new(DAEMON_SET_COLUMNS, daemon_set_cells),
        ("batch", "Job") => Printer::new(JOB_COLUMNS, job_cells),
        ("batch", "CronJob") => Printer::new(CRON_JOB_COLUMNS, cron_job_cells),
        ("apps", "ControllerRevision") => {
            Printer::new(CONTROLLER_REVISION_COLUMNS, controller_revision_cells)
        }
        ("autoscaling", "HorizontalPodAutoscaler") => Printer::new(HPA_COLUMNS, hpa_cells),
        ("policy", "PodDisruptionBudget") => Printer::new(PDB_COLUMNS, pdb_cells),
        _ => return None,
    };
    Some(p)
}

fn template_containers(obj: &Value, path: &[&str]) -> (Value, Value) {
    layout_containers(arr_at(obj, path))
}

fn deployment_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let selector = label_selector_string(get(obj, &["spec", "selector"]))
        .unwrap_or_else(|()| "<invalid>".to_string());
    let (names, images) = template_containers(obj, &["spec", "template", "spec", "containers"]);
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            int_at(obj, &["status", "readyReplicas"]),
            int_at(obj, &["spec", "replicas"])
        )),
        Value::from(int_at(obj, &["status", "updatedReplicas"])),
        Value::from(int_at(obj, &["status", "availableReplicas"])),
        age(obj, now),
        names,
        images,
        Value::from(selector),
    ]
}

fn replica_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let selector = format_label_selector(get(obj, &["spec", "selector"]));
    replica_cells(obj, now, selector)
}

/// ReplicationControllers select with a plain label map.
fn replication_controller_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let selector = format_labels(get(obj, &["spec", "selector"]));
    replica_cells(obj, now, selector)
}

/// Desired, Current, Ready, Age, then (wide) Containers, Images, Selector.
fn replica_cells(obj: &Value, now: DateTime<Utc>, selector: String) -> Vec<Value> {
    let (names, images) = template_containers(obj, &["spec", "template", "spec", "containers"]);
    vec![
        name(obj),
        Value::from(int_at(obj, &["spec", "replicas"])),
        Value::from(int_at(obj, &["status", "replicas"])),
        Value::from(int_at(obj, &["status", "readyReplicas"])),
        age(obj, now),
        names,
        images,
        Value::from(selector),
    ]
}

fn stateful_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj, &["spec", "template", "spec", "containers"]);
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            int_at(obj, &["status", "readyReplicas"]),
            int_at(obj, &["spec", "replicas"])
        )),
        age(obj, now),
        names,
        images,
    ]
}

fn daemon_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj, &["spec", "template", "spec", "containers"]);
    vec![
        name(obj),
        Value::from(int_at(obj, &["status", "desiredNumberScheduled"])),
        Value::from(int_at(obj, &["status", "currentNumberScheduled"])),
        Value::from(int_at(obj, &["status", "numberReady"])),
        Value::from(int_at(obj, &["status", "updatedNumberScheduled"])),
        Value::from(int_at(obj, &["status", "numberAvailable"])),
        Value::from(format_labels(get(
            obj,
            &["spec", "template", "spec", "nodeSelector"],
        ))),
        age(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

/// Upstream job Status column.
pub(crate) fn job_status(obj: &Value) -> &'static str {
    let conditions = arr_at(obj, &["status", "conditions"]);
    if has_condition(conditions, "Complete") {
        "Complete"
    } else if has_condition(conditions, "Failed") {
        "Failed"
    } else if deleting(obj) {
        "Terminating"
    } else if has_condition(conditions, "Suspended") {
        "Suspended"
    } else if has_condition(conditions, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

fn job_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int_at(obj, &["status", "succeeded"]);
    let completions = match opt_int(obj, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match opt_int(obj, &["spec", "parallelism"]).unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(obj, &["status", "startTime"]),
        time_at(obj, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.signed_duration_since(start)),
        (Some(start), Some(end)) => human_duration(end.signed_duration_since(start)),
    };
    let (names, images) = template_containers(obj, &["spec", "template", "spec", "containers"]);
    vec![
        name(obj),
        Value::from(job_status(obj)),
        Value::from(completions),
        Value::from(duration),
        age(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(obj, &["spec", "selector"]))),
    ]
}

fn cron_job_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last_schedule = match get(obj, &["status", "lastScheduleTime"]) {
        Some(_) => since(time_at(obj, &["status", "lastScheduleTime"]), now),
        None => "<none>".to_string(),
    };
    let (names, images) = template_containers(
        obj,
        &[
            "spec",
            "jobTemplate",
            "spec",
            "template",
            "spec",
            "containers",
        ],
    );
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "schedule"])),
        Value::from(opt_str(obj, &["spec", "timeZone"]).unwrap_or("<none>")),
        Value::from(bool_ptr(super::format::opt_bool(obj, &["spec", "suspend"]))),
        Value::from(arr_at(obj, &["status", "active"]).len()),
        Value::from(last_schedule),
        age(obj, now),
        names,
        images,
        Value::from(format_label_selector(get(
            obj,
            &["spec", "jobTemplate", "spec", "selector"],
        ))),
    ]
}

/// Upstream `formatResourceName(gvk.GroupKind(), name, true)` for the controlling owner.
fn controller_name(obj: &Value) -> String {
    let Some(owner) = arr_at(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| super::format::opt_bool(r, &["controller"]) == Some(true))
    else {
        return "<none>".to_string();
    };
    let api_version = str_at(owner, &["apiVersion"]);
    let group = match api_version.split_once('/') {
        Some((g, _)) => g,
        None => "",
    };
    let kind = str_at(owner, &["kind"]);
    let owner_name = str_at(owner, &["name"]);
    if kind.is_empty() && group.is_empty() {
        return owner_name.to_string();
    }
    let group_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    format!("{}/{owner_name}", group_kind.to_lowercase())
}

fn controller_revision_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(controller_name(obj)),
        Value::from(int_at(obj, &["revision"])),
        age(obj, now),
    ]
}

/// A Quantity pointer's Go `String()`: `<nil>` when absent.
fn quantity_ptr(v: Option<&Value>) -> String {
    scalar_string(v).unwrap_or_else(|| "<nil>".to_string())
}

/// The HPA metric specs and statuses in autoscaling/v2 shape (v1 objects are converted).
fn hpa_metrics(obj: &Value) -> (Vec<Value>, Vec<Value>) {
    if str_at(obj, &["apiVersion"]) == "autoscaling/v1" {
        let specs = match opt_int(obj, &["spec", "targetCPUUtilizationPercentage"]) {
            Some(t) => vec![json!({"type": "Resource", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": t}}})],
            None => Vec::new(),
        };
        let statuses = match opt_int(obj, &["status", "currentCPUUtilizationPercentage"]) {
            Some(c) => vec![json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": c}}})],
            None => Vec::new(),
        };
        return (specs, statuses);
    }
    (
        arr_at(obj, &["spec", "metrics"]).to_vec(),
        arr_at(obj, &["status", "currentMetrics"]).to_vec(),
    )
}

/// Upstream `formatHPAMetrics`.
pub(crate) fn format_hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 2;
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        let current_at = |source: &str, path: &[&str]| -> Option<String> {
            let s = status.and_then(|s| get(s, &[source]))?;
            Some(quantity_ptr(get(s, path)))
        };
        let entry = match str_at(spec, &["type"]) {
            t @ ("External" | "Object") => {
                let source = if t == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = get(spec, &[source, "target"]);
                let target_avg = target.and_then(|t| get(t, &["averageValue"]));
                if target_avg.is_some() {
                    let current = status
                        .and_then(|s| get(s, &[source, "current", "averageValue"]))
                        .map(|q| quantity_ptr(Some(q)))
                        .unwrap_or_else(|| "<unknown>".to_string());
                    format!("{current}/{} (avg)", quantity_ptr(target_avg))
                } else {
                    let current = current_at(source, &["current", "value"])
                        .unwrap_or_else(|| "<unknown>".to_string());
                    let value = target.and_then(|t| get(t, &["value"]));
                    format!("{current}/{}", quantity_ptr(value))
                }
            }
            "Pods" => {
                let current = current_at("pods", &["current", "averageValue"])
                    .unwrap_or_else(|| "<unknown>".to_string());
                format!(
                    "{current}/{}",
                    quantity_ptr(get(spec, &["pods", "target", "averageValue"]))
                )
            }
            t @ ("Resource" | "ContainerResource") => {
                let source = if t == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let resource = str_at(spec, &[source, "name"]);
                if let Some(avg) = get(spec, &[source, "target", "averageValue"]) {
                    let current = current_at(source, &["current", "averageValue"])
                        .unwrap_or_else(|| "<unknown>".to_string());
                    format!("{resource}: {current}/{}", quantity_ptr(Some(avg)))
                } else {
                    let current = status
                        .and_then(|s| opt_int(s, &[source, "current", "averageUtilization"]))
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<unknown>".to_string());
                    let target = opt_int(spec, &[source, "target", "averageUtilization"])
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<auto>".to_string());
                    format!("{resource}: {current}/{target}")
                }
            }
            _ => "<unknown type>".to_string(),
        };
        list.push(entry);
    }
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        return format!("{} + {} more...", list.join(", "), count - MAX);
    }
    list.join(", ")
}

fn hpa_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // An autoscaling/v1 object prints like its v2 form, as upstream prints the internal one.
    let v2;
    let obj = if obj.get("apiVersion").and_then(Value::as_str) == Some("autoscaling/v1") {
        v2 = crate::registry::strategies::hpa::v1_to_v2(obj.clone());
        &v2
    } else {
        obj
    };
    let (specs, statuses) = hpa_metrics(obj);
    let min_pods = opt_int(obj, &["spec", "minReplicas"])
        .map(|m| m.to_string())
        .unwrap_or_else(|| "<unset>".to_string());
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            str_at(obj, &["spec", "scaleTargetRef", "kind"]),
            str_at(obj, &["spec", "scaleTargetRef", "name"])
        )),
        Value::from(format_hpa_metrics(&specs, &statuses)),
        Value::from(min_pods),
        Value::from(int_at(obj, &["spec", "maxReplicas"])),
        Value::from(int_at(obj, &["status", "currentReplicas"])),
        age(obj, now),
    ]
}

fn pdb_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let or_na = |path: &[&str]| scalar_string(get(obj, path)).unwrap_or_else(|| "N/A".to_string());
    vec![
        name(obj),
        Value::from(or_na(&["spec", "minAvailable"])),
        Value::from(or_na(&["spec", "maxUnavailable"])),
        Value::from(int_at(obj, &["status", "disruptionsAllowed"])),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-02T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn deployment_row() {
        let d = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            deployment_cells(&d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("24h"),
                json!("nginx"),
                json!("nginx:1"),
                json!("app=web")
            ]
        );
        let no_selector = json!({"metadata": {"name": "x"}});
        assert_eq!(deployment_cells(&no_selector, now())[7], json!(""));
        assert_eq!(deployment_cells(&no_selector, now())[1], json!("0/0"));
    }

    #[test]
    fn replica_counts() {
        let rs = json!({"metadata": {"name": "rs"}, "spec": {"replicas": 2}, "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            replica_set_cells(&rs, now())[1..4],
            [json!(2), json!(2), json!(1)]
        );
        assert_eq!(replica_set_cells(&rs, now())[7], json!("<none>"));
        let rc =
            json!({"metadata": {"name": "rc"}, "spec": {"replicas": 1, "selector": {"app": "a"}}});
        assert_eq!(replication_controller_cells(&rc, now())[7], json!("app=a"));
        let sts = json!({"metadata": {"name": "s"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(stateful_set_cells(&sts, now())[1], json!("3/3"));
        let ds = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"nodeSelector": {"os": "linux"}}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1}});
        assert_eq!(
            daemon_set_cells(&ds, now())[1..7],
            [
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("os=linux")
            ]
        );
    }

    #[test]
    fn job_rows() {
        let cases = [
            (
                json!({"spec": {"completions": 3}, "status": {"succeeded": 1, "startTime": "2024-01-01T23:55:00Z"}}),
                ("Running", "1/3", "5m"),
            ),
            (
                json!({"spec": {"parallelism": 4}, "status": {"succeeded": 0}}),
                ("Running", "0/1 of 4", ""),
            ),
            (
                json!({"spec": {}, "status": {"succeeded": 1, "startTime": "2024-01-01T00:00:00Z", "completionTime": "2024-01-01T00:00:42Z",
                "conditions": [{"type": "Complete", "status": "True"}]}}),
                ("Complete", "1/1", "42s"),
            ),
            (
                json!({"status": {"conditions": [{"type": "Failed", "status": "True"}]}}),
                ("Failed", "0/1", ""),
            ),
            (
                json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
                ("Terminating", "0/1", ""),
            ),
            (
                json!({"status": {"conditions": [{"type": "Suspended", "status": "True"}]}}),
                ("Suspended", "0/1", ""),
            ),
            (
                json!({"status": {"conditions": [{"type": "FailureTarget", "status": "True"}]}}),
                ("FailureTarget", "0/1", ""),
            ),
            (
                json!({"status": {"conditions": [{"type": "Complete", "status": "False"}]}}),
                ("Running", "0/1", ""),
            ),
        ];
        for (job, (status, completions, duration)) in cases {
            let cells = job_cells(&job, now());
            assert_eq!(
                cells[1..4],
                [json!(status), json!(completions), json!(duration)],
                "{job}"
            );
        }
    }

    #[test]
    fn cron_job_row() {
        let cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *", "suspend": false},
            "status": {"active": [{}, {}], "lastScheduleTime": "2024-01-01T23:58:00Z"}});
        assert_eq!(
            cron_job_cells(&cj, now())[..6],
            [
                json!("c"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(2),
                json!("2m")
            ]
        );
        let bare = json!({"spec": {"timeZone": "Etc/UTC"}});
        assert_eq!(
            cron_job_cells(&bare, now())[2..6],
            [
                json!("Etc/UTC"),
                json!("<unset>"),
                json!(0),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn controller_revision_names_its_owner() {
        let cr = json!({"metadata": {"name": "web-1", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 4});
        assert_eq!(
            controller_revision_cells(&cr, now())[1..3],
            [json!("statefulset.apps/web"), json!(4)]
        );
        let orphan = json!({"metadata": {"name": "x"}, "revision": 1});
        assert_eq!(
            controller_revision_cells(&orphan, now())[1],
            json!("<none>")
        );
    }

    #[test]
    fn hpa_v1_prints_like_v2() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
                "maxReplicas": 5, "targetCPUUtilizationPercentage": 80},
            "status": {"currentReplicas": 2, "currentCPUUtilizationPercentage": 40}});
        assert_eq!(
            hpa_cells(&v1, now())[1..6],
            [
                json!("Deployment/web"),
                json!("cpu: 40%/80%"),
                json!("1"),
                json!(5),
                json!(2)
            ]
        );
    }

    #[test]
    fn hpa_targets() {
        let cpu = |t: Option<i64>, cur: Option<i64>| {
            let mut spec = json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization"}}});
            if let Some(t) = t {
                spec["resource"]["target"]["averageUtilization"] = json!(t);
            }
            let status = cur.map(|c| json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": c}}}));
            (spec, status)
        };
        let (s1, st1) = cpu(Some(80), Some(50));
        assert_eq!(
            format_hpa_metrics(std::slice::from_ref(&s1), &[st1.unwrap_or_default()]),
            "cpu: 50%/80%"
        );
        let (s2, _) = cpu(Some(80), None);
        assert_eq!(format_hpa_metrics(&[s2], &[]), "cpu: <unknown>/80%");
        let (s3, _) = cpu(None, None);
        assert_eq!(format_hpa_metrics(&[s3], &[]), "cpu: <unknown>/<auto>");
        assert_eq!(format_hpa_metrics(&[], &[]), "<none>");
        let mem = json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}});
        let pods = json!({"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"averageValue": "1k"}}});
        let ext = json!({"type": "External", "external": {"target": {"value": "10"}}});
        assert_eq!(
            format_hpa_metrics(&[s1, mem, pods, ext], &[]),
            "cpu: <unknown>/80%, memory: <unknown>/100Mi + 2 more..."
        );
        let v1 = json!({"apiVersion": "autoscaling/v1", "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70},
            "status": {"currentReplicas": 2, "currentCPUUtilizationPercentage": 35}});
        assert_eq!(
            hpa_cells(&v1, now())[..6],
            [
                json!("h"),
                json!("Deployment/web"),
                json!("cpu: 35%/70%"),
                json!("<unset>"),
                json!(5),
                json!(2)
            ]
        );
    }

    #[test]
    fn pdb_row() {
        let pdb = json!({"metadata": {"name": "p"}, "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            pdb_cells(&pdb, now())[1..4],
            [json!("50%"), json!("N/A"), json!(1)]
        );
        let pdb = json!({"spec": {"maxUnavailable": 1}});
        assert_eq!(pdb_cells(&pdb, now())[1..3], [json!("N/A"), json!("1")]);
    }
}
