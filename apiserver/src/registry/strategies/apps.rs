//! apps/v1 workloads: Deployments, ReplicaSets, StatefulSets and DaemonSets, plus the
//! selector/template checks they share with ReplicationControllers and Jobs.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Map, Value};

use super::pod_template::{
    default_spec_template, selector_mismatch, template_labels, validate_pod_template,
    validate_template_restart_policy,
};
use super::{child, fields_at, set_default, validate_update_with, validate_with};
use crate::registry::{ScalePaths, Strategy};
use crate::validation::{
    go_label_selector, label_selector_is_empty, label_selector_matches, validate_label_selector,
    validate_nonnegative, FieldError, FieldErrors, NameRule, FIELD_IMMUTABLE,
};

/// Scale layout of every apps/v1 kind with `/scale`.
pub const APPS_SCALE: ScalePaths = ScalePaths {
    spec_replicas: "/spec/replicas",
    status_replicas: "/status/replicas",
    selector: "/spec/selector",
};

/// Upstream `ValidatePodTemplateSpecForReplicaSet` plus the selector checks of
/// `ValidateDeploymentSpec`/`ValidateReplicaSetSpec`/...: `kind` words the empty-selector error.
pub fn validate_selector_and_template(
    obj: &Value,
    template: Option<&PodTemplateSpec>,
    kind: &str,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let selector = obj.pointer("/spec/selector").filter(|s| !s.is_null());
    let matches = match selector {
        None => {
            errs.push(FieldError::required("spec.selector", ""));
            false
        }
        Some(sel) => {
            let sel_errs = validate_label_selector(sel, "spec.selector");
            let ok = sel_errs.is_empty();
            errs.extend(sel_errs);
            if label_selector_is_empty(sel) {
                errs.push(FieldError::invalid_raw(
                    "spec.selector",
                    go_label_selector(sel),
                    format!("empty selector is invalid for {kind}"),
                ));
                true
            } else {
                !ok || label_selector_matches(sel, template_labels(obj))
            }
        }
    };
    if template.is_some() && !matches {
        errs.push(selector_mismatch(template_labels(obj)));
    }
    errs.extend(validate_pod_template(template, "spec.template"));
    errs
}

/// The template rules of replicated pods: restart policy `Always`, no activeDeadlineSeconds.
pub fn validate_replicated_template(template: Option<&PodTemplateSpec>, kind: &str) -> FieldErrors {
    let mut errs = validate_template_restart_policy(template, "spec.template", &["Always"]);
    if template
        .and_then(|t| t.spec.as_ref())
        .is_some_and(|s| s.active_deadline_seconds.is_some())
    {
        errs.push(FieldError::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
    errs
}

fn normalized_selector(obj: &Value) -> Value {
    let sel = obj
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(Value::Null);
    let empty_to_null = |v: Option<&Value>| match v {
        Some(Value::Object(m)) if m.is_empty() => Value::Null,
        Some(Value::Array(a)) if a.is_empty() => Value::Null,
        Some(v) => v.clone(),
        None => Value::Null,
    };
    json!({"matchLabels": empty_to_null(sel.get("matchLabels")), "matchExpressions": empty_to_null(sel.get("matchExpressions"))})
}

/// apps/v1 and batch/v1: `spec.selector` may not change.
pub fn validate_selector_immutable(new: &Value, old: &Value) -> FieldErrors {
    if normalized_selector(new) == normalized_selector(old) {
        return Vec::new();
    }
    let sel = new
        .pointer("/spec/selector")
        .cloned()
        .unwrap_or(Value::Null);
    vec![FieldError::invalid_raw(
        "spec.selector",
        go_label_selector(&sel),
        FIELD_IMMUTABLE,
    )]
}

/// Forbids any change of `spec` outside `allowed` top-level fields, with upstream `message`.
pub fn forbid_spec_changes_except(
    new: &Value,
    old: &Value,
    allowed: &[&str],
    message: &str,
) -> FieldErrors {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v
            .get("spec")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        m.retain(|k, _| !allowed.contains(&k.as_str()));
        m
    };
    if strip(new) == strip(old) {
        Vec::new()
    } else {
        vec![FieldError::forbidden("spec", message)]
    }
}

fn replicas_errors(replicas: Option<i32>) -> FieldErrors {
    validate_nonnegative(replicas.map(i64::from), "spec.replicas")
}

/// Percent or integer checks of `maxUnavailable`/`maxSurge` (upstream `ValidatePositiveIntOrPercent`
/// and `IsNotMoreThan100Percent`).
fn int_or_percent_errors(v: Option<&IntOrString>, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    match v {
        Some(IntOrString::Int(i)) if *i < 0 => errs.push(FieldError::invalid_raw(path, i, crate::validation::IS_NEGATIVE)),
        Some(IntOrString::String(s)) => match s.strip_suffix('%').and_then(|n| n.parse::<i64>().ok()) {
            None => errs.push(FieldError::invalid(path, s, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")),
            Some(n) if n < 0 => errs.push(FieldError::invalid(path, s, crate::validation::IS_NEGATIVE)),
            Some(n) if n > 100 => errs.push(FieldError::invalid(path, s, "must not be greater than 100%")),
            _ => {}
        },
        _ => {}
    }
    errs
}

fn is_zero(v: Option<&IntOrString>) -> bool {
    match v {
        None => true,
        Some(IntOrString::Int(i)) => *i == 0,
        Some(IntOrString::String(s)) => s == "0%",
    }
}

// ------------------------------------------------------------------------------------------
// Deployment

/// apps/v1 Deployment.
pub struct DeploymentStrategy;

fn validate_deployment(obj: &Value, d: &Deployment) -> FieldErrors {
    let Some(spec) = &d.spec else {
        return vec![
            FieldError::required("spec.selector", ""),
            FieldError::required("spec.template", ""),
        ];
    };
    let mut errs = replicas_errors(spec.replicas);
    errs.extend(validate_selector_and_template(
        obj,
        Some(&spec.template),
        "deployment",
    ));
    errs.extend(validate_replicated_template(
        Some(&spec.template),
        "ReplicaSet",
    ));
    if let Some(st) = &spec.strategy {
        match st.type_.as_deref() {
            Some("Recreate") => {
                if st.rolling_update.is_some() {
                    errs.push(FieldError::forbidden(
                        "spec.strategy.rollingUpdate",
                        "may not be specified when strategy `type` is 'Recreate'",
                    ));
                }
            }
            Some("RollingUpdate") | None => {
                if let Some(ru) = &st.rolling_update {
                    let (mu, ms) = (ru.max_unavailable.as_ref(), ru.max_surge.as_ref());
                    errs.extend(int_or_percent_errors(
                        mu,
                        "spec.strategy.rollingUpdate.maxUnavailable",
                    ));
                    errs.extend(int_or_percent_errors(
                        ms,
                        "spec.strategy.rollingUpdate.maxSurge",
                    ));
                    if is_zero(mu) && is_zero(ms) {
                        errs.push(FieldError::invalid_raw(
                            "spec.strategy.rollingUpdate.maxUnavailable",
                            0,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                }
            }
            Some(other) => errs.push(FieldError::not_supported(
                "spec.strategy.type",
                other,
                &["Recreate", "RollingUpdate"],
            )),
        }
    }
    errs.extend(validate_nonnegative(
        spec.revision_history_limit.map(i64::from),
        "spec.revisionHistoryLimit",
    ));
    errs.extend(validate_nonnegative(
        spec.min_ready_seconds.map(i64::from),
        "spec.minReadySeconds",
    ));
    if let Some(pds) = spec.progress_deadline_seconds {
        errs.extend(validate_nonnegative(
            Some(pds.into()),
            "spec.progressDeadlineSeconds",
        ));
        if pds <= spec.min_ready_seconds.unwrap_or(0) {
            errs.push(FieldError::invalid_raw(
                "spec.progressDeadlineSeconds",
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

impl Strategy for DeploymentStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            if let Some(st) = super::child_map(spec, "strategy") {
                set_default(st, "type", json!("RollingUpdate"));
                if st.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    if let Some(ru) = super::child_map(st, "rollingUpdate") {
                        set_default(ru, "maxUnavailable", json!("25%"));
                        set_default(ru, "maxSurge", json!("25%"));
                    }
                }
            }
        }
        default_spec_template(obj);
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj);
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<Deployment>(obj, true, NameRule::Subdomain, |d| {
            validate_deployment(obj, d)
        })
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs =
            validate_update_with::<Deployment>(new, old, |n, _| validate_deployment(new, n));
        errs.extend(validate_selector_immutable(new, old));
        errs
    }
    fn scale_paths(&self) -> Option<ScalePaths> {
        Some(APPS_SCALE)
    }
}

/// Clears `status` on create, like upstream's `PrepareForCreate` of controllers' kinds.
pub fn reset_status(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), json!({}));
    }
}

// ------------------------------------------------------------------------------------------
// ReplicaSet

/// apps/v1 ReplicaSet.
pub struct ReplicaSetStrategy;

fn validate_replica_set(obj: &Value, rs: &ReplicaSet) -> FieldErrors {
    let Some(spec) = &rs.spec else {
        return vec![FieldError::required("spec.selector", "")];
    };
    let mut errs = replicas_errors(spec.replicas);
    errs.extend(validate_nonnegative(
        spec.min_ready_seconds.map(i64::from),
        "spec.minReadySeconds",
    ));
    errs.extend(validate_selector_and_template(
        obj,
        spec.template.as_ref(),
        "deployment",
    ));
    errs.extend(validate_replicated_template(
        spec.template.as_ref(),
        "ReplicaSet",
    ));
    errs
}

impl Strategy for ReplicaSetStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            set_default(spec, "replicas", json!(1));
        }
        default_spec_template(obj);
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj);
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<ReplicaSet>(obj, true, NameRule::Subdomain, |rs| {
            validate_replica_set(obj, rs)
        })
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs =
            validate_update_with::<ReplicaSet>(new, old, |n, _| validate_replica_set(new, n));
        errs.extend(validate_selector_immutable(new, old));
        errs
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        status_replicas_field(obj)
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }
    fn scale_paths(&self) -> Option<ScalePaths> {
        Some(APPS_SCALE)
    }
}

/// The `status.replicas` field selector of ReplicaSets and ReplicationControllers ("0" when unset).
pub fn status_replicas_field(obj: &Value) -> Vec<(&'static str, String)> {
    let mut f = fields_at(obj, &[("status.replicas", "/status/replicas")]);
    for (_, v) in f.iter_mut() {
        if v.is_empty() {
            *v = "0".into();
        }
    }
    f
}

// ------------------------------------------------------------------------------------------
// StatefulSet

/// apps/v1 StatefulSet.
pub struct StatefulSetStrategy;

const STS_UPDATE_FORBIDDEN: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

fn validate_stateful_set(obj: &Value, s: &StatefulSet) -> FieldErrors {
    let Some(spec) = &s.spec else {
        return vec![FieldError::required("spec.selector", "")];
    };
    let mut errs = FieldErrors::new();
    if let Some(p) = spec.pod_management_policy.as_deref() {
        if p != "OrderedReady" && p != "Parallel" {
            errs.push(FieldError::not_supported(
                "spec.podManagementPolicy",
                p,
                &["OrderedReady", "Parallel"],
            ));
        }
    }
    if let Some(t) = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.type_.as_deref())
    {
        if t != "OnDelete" && t != "RollingUpdate" {
            errs.push(FieldError::not_supported(
                "spec.updateStrategy.type",
                t,
                &["OnDelete", "RollingUpdate"],
            ));
        }
    }
    errs.extend(replicas_errors(spec.replicas));
    errs.extend(validate_nonnegative(
        spec.min_ready_seconds.map(i64::from),
        "spec.minReadySeconds",
    ));
    errs.extend(validate_selector_and_template(
        obj,
        Some(&spec.template),
        "statefulset",
    ));
    errs.extend(validate_replicated_template(
        Some(&spec.template),
        "StatefulSet",
    ));
    errs
}

impl Strategy for StatefulSetStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "podManagementPolicy", json!("OrderedReady"));
            if let Some(us) = super::child_map(spec, "updateStrategy") {
                set_default(us, "type", json!("RollingUpdate"));
                if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    if let Some(ru) = super::child_map(us, "rollingUpdate") {
                        set_default(ru, "partition", json!(0));
                    }
                }
            }
            if let Some(p) = super::child_map(spec, "persistentVolumeClaimRetentionPolicy") {
                set_default(p, "whenDeleted", json!("Retain"));
                set_default(p, "whenScaled", json!("Retain"));
            }
            super::each_item(spec, "volumeClaimTemplates", |t| {
                if let Some(s) = super::child_map(t, "spec") {
                    set_default(s, "volumeMode", json!("Filesystem"));
                }
                if let Some(s) = super::child_map(t, "status") {
                    set_default(s, "phase", json!("Pending"));
                }
            });
        }
        default_spec_template(obj);
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj);
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<StatefulSet>(obj, true, NameRule::Subdomain, |s| {
            validate_stateful_set(obj, s)
        })
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs =
            validate_update_with::<StatefulSet>(new, old, |n, _| validate_stateful_set(new, n));
        errs.extend(forbid_spec_changes_except(
            new,
            old,
            &[
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ],
            STS_UPDATE_FORBIDDEN,
        ));
        errs
    }
    fn scale_paths(&self) -> Option<ScalePaths> {
        Some(APPS_SCALE)
    }
}

// ------------------------------------------------------------------------------------------
// DaemonSet

/// apps/v1 DaemonSet.
pub struct DaemonSetStrategy;

fn validate_daemon_set(obj: &Value, d: &DaemonSet) -> FieldErrors {
    let Some(spec) = &d.spec else {
        return vec![FieldError::required("spec.selector", "")];
    };
    let mut errs = validate_selector_and_template(obj, Some(&spec.template), "daemonset");
    errs.extend(validate_replicated_template(
        Some(&spec.template),
        "DaemonSet",
    ));
    errs.extend(validate_nonnegative(
        spec.min_ready_seconds.map(i64::from),
        "spec.minReadySeconds",
    ));
    if let Some(us) = &spec.update_strategy {
        match us.type_.as_deref() {
            Some("OnDelete") | None => {}
            Some("RollingUpdate") => {
                if let Some(ru) = &us.rolling_update {
                    let (mu, ms) = (ru.max_unavailable.as_ref(), ru.max_surge.as_ref());
                    errs.extend(int_or_percent_errors(
                        mu,
                        "spec.updateStrategy.rollingUpdate.maxUnavailable",
                    ));
                    errs.extend(int_or_percent_errors(
                        ms,
                        "spec.updateStrategy.rollingUpdate.maxSurge",
                    ));
                    if is_zero(mu) && is_zero(ms) {
                        errs.push(FieldError::invalid_raw(
                            "spec.updateStrategy.rollingUpdate.maxUnavailable",
                            0,
                            "may not be 0 when `maxSurge` is 0",
                        ));
                    }
                }
            }
            Some(t) => errs.push(FieldError::not_supported(
                "spec.updateStrategy.type",
                t,
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }
    errs
}

impl Strategy for DaemonSetStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            set_default(spec, "revisionHistoryLimit", json!(10));
            if let Some(us) = super::child_map(spec, "updateStrategy") {
                set_default(us, "type", json!("RollingUpdate"));
                if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                    if let Some(ru) = super::child_map(us, "rollingUpdate") {
                        set_default(ru, "maxUnavailable", json!(1));
                        set_default(ru, "maxSurge", json!(0));
                    }
                }
            }
        }
        default_spec_template(obj);
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj);
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<DaemonSet>(obj, true, NameRule::Subdomain, |d| {
            validate_daemon_set(obj, d)
        })
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs =
            validate_update_with::<DaemonSet>(new, old, |n, _| validate_daemon_set(new, n));
        errs.extend(validate_selector_immutable(new, old));
        errs
    }
}

#[cfg(test)]
mod tests {
    use super::super::msgs;
    use super::*;

    fn deploy(spec: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    fn good_spec() -> Value {
        json!({"selector": {"matchLabels": {"app": "web"}},
               "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}})
    }

    #[test]
    fn deployment_defaults() {
        let mut d = deploy(good_spec());
        DeploymentStrategy.default(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
        assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
        assert_eq!(
            d["spec"]["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        assert!(d["spec"]["template"]["spec"]
            .get("enableServiceLinks")
            .is_none());
        assert!(
            DeploymentStrategy.validate(&d).is_empty(),
            "{:?}",
            DeploymentStrategy.validate(&d)
        );
    }

    #[test]
    fn deployment_validation() {
        let mut no_sel = good_spec();
        if let Some(m) = no_sel.as_object_mut() {
            m.remove("selector");
        }
        let mut d = deploy(no_sel);
        DeploymentStrategy.default(&mut d);
        assert_eq!(
            msgs(DeploymentStrategy.validate(&d)),
            vec![
                "spec.selector: Required value".to_string(),
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`".to_string(),
            ]
        );
        let mut d = deploy(good_spec());
        d["spec"]["selector"]["matchLabels"]["app"] = json!("other");
        d["spec"]["replicas"] = json!(-1);
        DeploymentStrategy.default(&mut d);
        assert_eq!(
            msgs(DeploymentStrategy.validate(&d)),
            vec![
                "spec.replicas: Invalid value: -1: must be greater than or equal to 0".to_string(),
                "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`".to_string(),
            ]
        );
    }

    #[test]
    fn selector_immutable() {
        let mut old = deploy(good_spec());
        DeploymentStrategy.default(&mut old);
        let mut new = old.clone();
        new["spec"]["selector"]["matchLabels"] = json!({"app": "web", "x": "y"});
        new["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "x": "y"});
        assert_eq!(
            msgs(DeploymentStrategy.validate_update(&new, &old)),
            vec!["spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\", \"x\":\"y\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable".to_string()]
        );
    }

    #[test]
    fn statefulset_update_forbidden() {
        let mut old = json!({"metadata": {"name": "s", "namespace": "d"}, "spec": good_spec()});
        StatefulSetStrategy.default(&mut old);
        assert_eq!(
            old["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
        );
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        assert!(StatefulSetStrategy.validate_update(&new, &old).is_empty());
        new["spec"]["serviceName"] = json!("x");
        assert_eq!(
            msgs(StatefulSetStrategy.validate_update(&new, &old)),
            vec![format!("spec: Forbidden: {STS_UPDATE_FORBIDDEN}")]
        );
    }

    #[test]
    fn daemonset_restart_policy() {
        let mut d = json!({"metadata": {"name": "s", "namespace": "d"}, "spec": good_spec()});
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        DaemonSetStrategy.default(&mut d);
        assert_eq!(
            d["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
            1
        );
        assert_eq!(
            msgs(DaemonSetStrategy.validate(&d)),
            vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"".to_string()]
        );
    }
}
