//! Pods.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Map, Value};

use super::pod_template::{default_pod_spec, validate_pod_spec};
use super::{each_item, field_at, fields_at, set_default, validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{FieldError, FieldErrors, NameRule};

/// Upstream wording of the pod spec update restriction.
pub const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

const FIELDS: &[(&str, &str)] = &[
    ("spec.nodeName", "/spec/nodeName"),
    ("spec.restartPolicy", "/spec/restartPolicy"),
    ("spec.schedulerName", "/spec/schedulerName"),
    ("spec.serviceAccountName", "/spec/serviceAccountName"),
    ("status.phase", "/status/phase"),
    ("status.podIP", "/status/podIP"),
    ("status.nominatedNodeName", "/status/nominatedNodeName"),
];

/// Pod-only defaults that upstream applies in `SetDefaults_Pod` and in the ServiceAccount,
/// Priority and DefaultTolerationSeconds admission plugins.
fn default_pod_only(spec: &mut Map<String, Value>) {
    set_default(spec, "enableServiceLinks", json!(true));
    let sa = [spec.get("serviceAccountName"), spec.get("serviceAccount")]
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    if spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        set_default(spec, "priority", json!(0));
    }
    set_default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    for key in ["initContainers", "containers"] {
        each_item(spec, key, copy_limits_to_requests);
    }
    default_tolerations(spec);
}

/// Upstream `SetDefaults_Pod`: a limit without a request sets the request.
fn copy_limits_to_requests(c: &mut Map<String, Value>) {
    let Some(res) = c.get_mut("resources").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(limits) = res.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    let requests = res.entry("requests").or_insert_with(|| json!({}));
    if let Some(r) = requests.as_object_mut() {
        for (k, v) in limits {
            r.entry(k).or_insert(v);
        }
    }
}

/// DefaultTolerationSeconds admission: tolerate not-ready/unreachable nodes for 300s.
fn default_tolerations(spec: &mut Map<String, Value>) {
    let list = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = list.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = list.iter().any(|t| {
            let k = t.get("key").and_then(Value::as_str).unwrap_or("");
            let e = t.get("effect").and_then(Value::as_str).unwrap_or("");
            let op = t.get("operator").and_then(Value::as_str).unwrap_or("");
            (k == key || (k.is_empty() && op == "Exists")) && (e.is_empty() || e == "NoExecute")
        });
        if !covered {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

/// Upstream `GetPodQOS` over a JSON pod spec.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = ["initContainers", "containers"]
        .into_iter()
        .filter_map(|k| spec.get(k).and_then(Value::as_array))
        .flatten();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let get = |kind: &str, r: &str| {
            c.pointer(&format!("/resources/{kind}/{r}"))
                .map(|q| match q {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .filter(|q| q != "0")
        };
        for r in ["cpu", "memory"] {
            let (req, lim) = (get("requests", r), get("limits", r));
            any |= req.is_some() || lim.is_some();
            match (req, lim) {
                (Some(a), Some(b)) if a != b => guaranteed = false,
                (_, None) => guaranteed = false,
                _ => {}
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// Upstream `ValidatePodUpdate`'s spec rule: only images, activeDeadlineSeconds, added
/// tolerations, removed scheduling gates and a negative grace period fixed to 1 may change.
pub fn validate_pod_spec_update(new: &Value, old: &Value) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let (Some(ns), Some(os)) = (new.get("spec"), old.get("spec")) else {
        return errs;
    };
    let (Some(mut m), Some(o)) = (ns.as_object().cloned(), os.as_object()) else {
        return errs;
    };
    for key in ["containers", "initContainers"] {
        if let (Some(nc), Some(oc)) = (
            m.get_mut(key).and_then(Value::as_array_mut),
            o.get(key).and_then(Value::as_array),
        ) {
            if nc.len() == oc.len() {
                for (n, o) in nc.iter_mut().zip(oc) {
                    if let (Some(n), Some(img)) = (n.as_object_mut(), o.get("image")) {
                        n.insert("image".into(), img.clone());
                    }
                }
            }
        }
    }
    let new_ads = m.get("activeDeadlineSeconds").and_then(Value::as_i64);
    let old_ads = o.get("activeDeadlineSeconds").and_then(Value::as_i64);
    match (new_ads, old_ads) {
        (Some(n), Some(o)) if n > o => errs.push(FieldError::invalid_raw(
            "spec.activeDeadlineSeconds",
            n,
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => errs.push(FieldError::invalid_raw(
            "spec.activeDeadlineSeconds",
            "null",
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    restore(&mut m, o, "activeDeadlineSeconds");
    let subset = |key: &str, a: &Map<String, Value>, b: &Map<String, Value>| {
        let small = a
            .get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let big = b
            .get(key)
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        small.iter().all(|t| big.contains(t))
    };
    if subset("tolerations", o, &m) {
        restore(&mut m, o, "tolerations");
    }
    if subset("schedulingGates", &m, o) {
        restore(&mut m, o, "schedulingGates");
    }
    let old_grace = o
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    if old_grace.is_some_and(|g| g < 0)
        && m.get("terminationGracePeriodSeconds")
            .and_then(Value::as_i64)
            == Some(1)
    {
        restore(&mut m, o, "terminationGracePeriodSeconds");
    }
    if &m != o {
        let changed: Vec<&str> = m
            .keys()
            .chain(o.keys())
            .filter(|k| m.get(k.as_str()) != o.get(k.as_str()))
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        errs.push(FieldError::forbidden(
            "spec",
            format!(
                "{POD_UPDATE_FORBIDDEN}\n  changed: spec.{}",
                changed.join(", spec.")
            ),
        ));
    }
    errs
}

fn restore(m: &mut Map<String, Value>, old: &Map<String, Value>, key: &str) {
    match old.get(key) {
        Some(v) => m.insert(key.into(), v.clone()),
        None => m.remove(key),
    };
}

fn validate_pod(p: &Pod) -> FieldErrors {
    match &p.spec {
        Some(spec) => validate_pod_spec(spec, "spec"),
        None => vec![FieldError::required("spec.containers", "")],
    }
}

/// core/v1 Pod.
pub struct PodStrategy;

impl Strategy for PodStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            default_pod_spec(spec);
            default_pod_only(spec);
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        let qos = qos_class(obj.get("spec").unwrap_or(&Value::Null));
        if let Some(m) = obj.as_object_mut() {
            m.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": qos}),
            );
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<Pod>(obj, true, NameRule::Subdomain, validate_pod)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_update_with::<Pod>(new, old, |n, _| validate_pod(n));
        errs.extend(validate_pod_spec_update(new, old));
        errs
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let mut f = fields_at(obj, FIELDS);
        let host_network = obj
            .pointer("/spec/hostNetwork")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        f.push(("spec.hostNetwork", host_network.to_string()));
        f
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
            "spec.hostNetwork",
        ]
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn default_grace_period(&self, obj: &Value) -> Option<i64> {
        let scheduled = !field_at(obj, "/spec/nodeName").is_empty();
        let phase = field_at(obj, "/status/phase");
        if !scheduled || phase == "Succeeded" || phase == "Failed" {
            return Some(0);
        }
        Some(
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30)
                .max(0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn defaults_and_status() {
        let mut p = pod(
            json!({"containers": [{"name": "c", "image": "nginx:1.25", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
        );
        PodStrategy.default(&mut p);
        PodStrategy.prepare_for_create(&mut p);
        assert_eq!(p["spec"]["enableServiceLinks"], true);
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(
            p["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
        assert_eq!(p["spec"]["tolerations"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            p["status"],
            json!({"phase": "Pending", "qosClass": "Guaranteed"})
        );
        assert!(
            PodStrategy.validate(&p).is_empty(),
            "{:?}",
            PodStrategy.validate(&p)
        );
        // Defaulting twice changes nothing.
        let again = {
            let mut q = p.clone();
            PodStrategy.default(&mut q);
            q
        };
        assert_eq!(again, p);
    }

    #[test]
    fn qos() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "c"}]})),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&json!({"containers": [{"resources": {"requests": {"cpu": "1"}}}]})),
            "Burstable"
        );
    }

    #[test]
    fn validation_wording() {
        let p = pod(json!({"containers": [{"name": "c"}]}));
        let errs: Vec<String> = PodStrategy
            .validate(&p)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errs, vec!["spec.containers[0].image: Required value"]);
        let p = pod(
            json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": "80"}]}]}),
        );
        let errs = PodStrategy.validate(&p);
        assert!(
            errs[0]
                .detail
                .starts_with("unable to decode object: invalid type: string"),
            "{errs:?}"
        );
    }

    #[test]
    fn update_rules() {
        let mut old = pod(json!({"containers": [{"name": "c", "image": "a"}]}));
        PodStrategy.default(&mut old);
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("b");
        assert!(PodStrategy.validate_update(&new, &old).is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        let errs = PodStrategy.validate_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert!(errs[0]
            .to_string()
            .starts_with(&format!("spec: Forbidden: {POD_UPDATE_FORBIDDEN}")));
    }

    #[test]
    fn field_selectors() {
        let p = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let f = PodStrategy.selectable_fields(&p);
        assert!(f.contains(&("spec.nodeName", "n1".to_string())));
        assert!(f.contains(&("status.phase", "Running".to_string())));
        assert!(f.contains(&("spec.hostNetwork", "false".to_string())));
        let names: Vec<&str> = f.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, PodStrategy.selectable_field_names());
    }
}
