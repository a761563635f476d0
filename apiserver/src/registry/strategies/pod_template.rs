//! Pod spec defaulting and validation shared by every kind that embeds a pod template
//! (pods, deployments, replica sets, stateful sets, daemon sets, jobs, cron jobs,
//! pod templates, replication controllers), and the PodTemplate kind itself.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplate, PodTemplateSpec};
use serde_json::{json, Map, Value};

use super::{each_item, set_default, validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{
    is_dns1123_label, is_dns1123_subdomain, is_valid_port_name, is_valid_port_num,
    validate_annotations, validate_labels, FieldError, FieldErrorType, FieldErrors, NameRule,
};

/// Upstream `SetDefaults_PodSpec` and the container/volume/probe defaults, on a JSON pod spec.
pub fn default_pod_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    let host_network = spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for key in ["initContainers", "containers"] {
        each_item(spec, key, |c| default_container(c, host_network));
    }
    each_item(spec, "ephemeralContainers", |c| default_container(c, false));
    each_item(spec, "volumes", default_volume);
}

/// Upstream image pull policy default: `Always` for `:latest` or no tag, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (name, digest) = match image.split_once('@') {
        Some((n, _)) => (n, true),
        None => (image, false),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    let tag = last.rsplit_once(':').map(|(_, t)| t);
    match tag {
        Some("latest") => "Always",
        Some(_) => "IfNotPresent",
        None if digest => "IfNotPresent",
        None => "Always",
    }
}

fn default_container(c: &mut Map<String, Value>, host_network: bool) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    set_default(c, "imagePullPolicy", json!(default_pull_policy(&image)));
    set_default(c, "resources", json!({}));
    each_item(c, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        if host_network {
            if let Some(cp) = p.get("containerPort").cloned() {
                set_default(p, "hostPort", cp);
            }
        }
    });
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
            default_probe(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle").and_then(Value::as_object_mut) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(hook).and_then(Value::as_object_mut) {
                default_handler(h);
            }
        }
    }
    each_item(c, "env", |e| {
        if let Some(fr) = e
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            set_default(fr, "apiVersion", json!("v1"));
        }
    });
}

fn default_handler(h: &mut Map<String, Value>) {
    if let Some(g) = h.get_mut("httpGet").and_then(Value::as_object_mut) {
        set_default(g, "scheme", json!("HTTP"));
    }
}

fn default_probe(p: &mut Map<String, Value>) {
    set_default(p, "timeoutSeconds", json!(1));
    set_default(p, "periodSeconds", json!(10));
    set_default(p, "successThreshold", json!(1));
    set_default(p, "failureThreshold", json!(3));
    default_handler(p);
    if let Some(g) = p.get_mut("grpc").and_then(Value::as_object_mut) {
        set_default(g, "service", json!(""));
    }
}

fn default_volume(v: &mut Map<String, Value>) {
    if v.keys().all(|k| k == "name") {
        v.insert("emptyDir".into(), json!({}));
    }
    for source in ["configMap", "secret", "projected", "downwardAPI"] {
        if let Some(s) = v.get_mut(source).and_then(Value::as_object_mut) {
            set_default(s, "defaultMode", json!(420));
        }
    }
    if let Some(s) = v.get_mut("hostPath").and_then(Value::as_object_mut) {
        set_default(s, "type", json!(""));
    }
}

/// Pod template defaults on the object at `template` inside `parent` (e.g. a Deployment's spec).
pub fn default_template(parent: &mut Value, template: &str) {
    if let Some(spec) = parent
        .get_mut(template)
        .and_then(|t| t.as_object_mut())
        .and_then(|t| {
            let v = t.entry("spec").or_insert_with(|| json!({}));
            v.as_object_mut()
        })
    {
        default_pod_spec(spec);
    }
}

/// Pod template defaults for `obj.spec.template`.
pub fn default_spec_template(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec") {
        default_template(spec, "template");
    }
}

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const TOLERATION_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];

/// A `NotFound` field error (`Not found: "x"`).
pub fn not_found(field: String, value: &str) -> FieldError {
    FieldError {
        kind: FieldErrorType::NotFound,
        field,
        value: Some(format!("{value:?}")),
        detail: String::new(),
    }
}

fn check_enum(errs: &mut FieldErrors, field: String, value: Option<&str>, supported: &[&str]) {
    if let Some(v) = value {
        if !supported.contains(&v) {
            errs.push(FieldError::not_supported(field, v, supported));
        }
    }
}

fn validate_container(
    c: &Container,
    path: &str,
    volumes: &HashSet<&str>,
    names: &mut HashSet<String>,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if c.name.is_empty() {
        errs.push(FieldError::required(format!("{path}.name"), ""));
    } else {
        for m in is_dns1123_label(&c.name) {
            errs.push(FieldError::invalid(format!("{path}.name"), &c.name, m));
        }
        if !names.insert(c.name.clone()) {
            errs.push(FieldError::duplicate(format!("{path}.name"), &c.name));
        }
    }
    let image = c.image.as_deref().unwrap_or("");
    if image.is_empty() {
        errs.push(FieldError::required(format!("{path}.image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            format!("{path}.image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    let mut port_names = HashSet::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        for m in is_valid_port_num(p.container_port.into()) {
            errs.push(FieldError::invalid_raw(
                format!("{pp}.containerPort"),
                p.container_port,
                m,
            ));
        }
        if let Some(hp) = p.host_port.filter(|h| *h != 0) {
            for m in is_valid_port_num(hp.into()) {
                errs.push(FieldError::invalid_raw(format!("{pp}.hostPort"), hp, m));
            }
        }
        if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
            for m in is_valid_port_name(n) {
                errs.push(FieldError::invalid(format!("{pp}.name"), n, m));
            }
            if !port_names.insert(n) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), n));
            }
        }
        match p.protocol.as_deref() {
            None | Some("") => errs.push(FieldError::required(format!("{pp}.protocol"), "")),
            v => check_enum(&mut errs, format!("{pp}.protocol"), v, PROTOCOLS),
        }
    }
    errs.extend(validate_resources(c, path));
    for (i, e) in c.env.iter().flatten().enumerate() {
        if e.name.is_empty() {
            errs.push(FieldError::required(format!("{path}.env[{i}].name"), ""));
        }
    }
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        if m.name.is_empty() {
            errs.push(FieldError::required(format!("{mp}.name"), ""));
        } else if !volumes.contains(m.name.as_str()) {
            errs.push(not_found(format!("{mp}.name"), &m.name));
        }
        if m.mount_path.is_empty() {
            errs.push(FieldError::required(format!("{mp}.mountPath"), ""));
        }
        let expr = m.sub_path_expr.as_deref().unwrap_or_default();
        if !expr.is_empty() && !m.sub_path.as_deref().unwrap_or_default().is_empty() {
            errs.push(FieldError::invalid(
                format!("{mp}.subPathExpr"),
                expr,
                "subPathExpr and subPath are mutually exclusive",
            ));
        }
    }
    check_enum(
        &mut errs,
        format!("{path}.imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        PULL_POLICIES,
    );
    check_enum(
        &mut errs,
        format!("{path}.terminationMessagePolicy"),
        c.termination_message_policy.as_deref(),
        TERMINATION_MESSAGE_POLICIES,
    );
    errs
}

/// Upstream `ValidateResourceRequirements`: quantities parse, are not negative, and a
/// request is not above its limit.
fn validate_resources(c: &Container, path: &str) -> FieldErrors {
    use crate::admission::quantity::parse_milli;
    let mut errs = FieldErrors::new();
    let Some(r) = &c.resources else {
        return errs;
    };
    for (field, list) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (k, q) in list.iter().flatten() {
            let fp = format!("{path}.resources.{field}[{k}]");
            match parse_milli(&q.0) {
                None => errs.push(FieldError::invalid(fp, &q.0, "must be a valid quantity")),
                Some(v) if v < 0 => errs.push(FieldError::invalid(
                    fp,
                    &q.0,
                    "must be greater than or equal to 0",
                )),
                _ => {}
            }
        }
    }
    for (k, req) in r.requests.iter().flatten() {
        let lim = r.limits.as_ref().and_then(|l| l.get(k));
        if let (Some(rq), Some(lq)) = (parse_milli(&req.0), lim.and_then(|l| parse_milli(&l.0))) {
            if rq > lq && lq >= 0 {
                errs.push(FieldError::invalid(
                    format!("{path}.resources.requests"),
                    &req.0,
                    format!(
                        "must be less than or equal to {k} limit of {}",
                        lim.map(|l| l.0.as_str()).unwrap_or("")
                    ),
                ));
            }
        }
    }
    errs
}

/// Upstream `ValidatePodSpec` (the parts users hit) at `path` (`spec`, `spec.template.spec`, ...).
pub fn validate_pod_spec(spec: &PodSpec, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let mut volumes = HashSet::new();
    for (i, v) in spec.volumes.iter().flatten().enumerate() {
        let vp = format!("{path}.volumes[{i}].name");
        if v.name.is_empty() {
            errs.push(FieldError::required(vp, ""));
            continue;
        }
        for m in is_dns1123_label(&v.name) {
            errs.push(FieldError::invalid(vp.clone(), &v.name, m));
        }
        if !volumes.insert(v.name.as_str()) {
            errs.push(FieldError::duplicate(vp, &v.name));
        }
    }
    let mut names = HashSet::new();
    if spec.containers.is_empty() {
        errs.push(FieldError::required(format!("{path}.containers"), ""));
    }
    for (i, c) in spec.init_containers.iter().flatten().enumerate() {
        errs.extend(validate_container(
            c,
            &format!("{path}.initContainers[{i}]"),
            &volumes,
            &mut names,
        ));
    }
    for (i, c) in spec.containers.iter().enumerate() {
        errs.extend(validate_container(
            c,
            &format!("{path}.containers[{i}]"),
            &volumes,
            &mut names,
        ));
    }
    check_enum(
        &mut errs,
        format!("{path}.restartPolicy"),
        spec.restart_policy.as_deref(),
        RESTART_POLICIES,
    );
    check_enum(
        &mut errs,
        format!("{path}.dnsPolicy"),
        spec.dns_policy.as_deref(),
        DNS_POLICIES,
    );
    if let Some(a) = spec.active_deadline_seconds {
        if !(1..=i64::from(i32::MAX)).contains(&a) {
            errs.push(FieldError::invalid_raw(
                format!("{path}.activeDeadlineSeconds"),
                a,
                "must be between 1 and 2147483647, inclusive",
            ));
        }
    }
    if let Some(ns) = &spec.node_selector {
        let v = serde_json::to_value(ns).unwrap_or(Value::Null);
        errs.extend(validate_labels(Some(&v), &format!("{path}.nodeSelector")));
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        for m in is_dns1123_subdomain(sa) {
            errs.push(FieldError::invalid(
                format!("{path}.serviceAccountName"),
                sa,
                m,
            ));
        }
    }
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(h) = value.as_deref().filter(|s| !s.is_empty()) {
            for m in is_dns1123_label(h) {
                errs.push(FieldError::invalid(format!("{path}.{field}"), h, m));
            }
        }
    }
    for (i, t) in spec.tolerations.iter().flatten().enumerate() {
        let tp = format!("{path}.tolerations[{i}]");
        match t.operator.as_deref() {
            None | Some("") | Some("Equal") => {}
            Some("Exists") => {
                if t.value.as_deref().is_some_and(|v| !v.is_empty()) {
                    errs.push(FieldError::invalid(
                        format!("{tp}.operator"),
                        t.value.as_deref().unwrap_or(""),
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            Some(op) => errs.push(FieldError::not_supported(
                format!("{tp}.operator"),
                op,
                &["Equal", "Exists"],
            )),
        }
        if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
            check_enum(
                &mut errs,
                format!("{tp}.effect"),
                Some(e),
                TOLERATION_EFFECTS,
            );
        }
    }
    errs
}

/// Upstream `ValidatePodTemplateSpec` at `path` (`spec.template`): template labels and
/// annotations, then the pod spec.
pub fn validate_pod_template(t: Option<&PodTemplateSpec>, path: &str) -> FieldErrors {
    let Some(t) = t else {
        return vec![FieldError::required(path, "")];
    };
    let mut errs = FieldErrors::new();
    if let Some(m) = &t.metadata {
        let labels = m
            .labels
            .as_ref()
            .map(|l| serde_json::to_value(l).unwrap_or(Value::Null));
        errs.extend(validate_labels(
            labels.as_ref(),
            &format!("{path}.metadata.labels"),
        ));
        let ann = m
            .annotations
            .as_ref()
            .map(|a| serde_json::to_value(a).unwrap_or(Value::Null));
        errs.extend(validate_annotations(
            ann.as_ref(),
            &format!("{path}.metadata.annotations"),
        ));
    }
    match &t.spec {
        Some(spec) => errs.extend(validate_pod_spec(spec, &format!("{path}.spec"))),
        None => errs.push(FieldError::required(format!("{path}.spec.containers"), "")),
    }
    errs
}

/// Checks a controller's template restart policy (upstream: `Always` only for replica sets
/// and friends, `OnFailure`/`Never` for jobs).
pub fn validate_template_restart_policy(
    t: Option<&PodTemplateSpec>,
    path: &str,
    allowed: &[&str],
) -> FieldErrors {
    let policy = t
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    if allowed.contains(&policy) {
        Vec::new()
    } else {
        vec![FieldError::not_supported(
            format!("{path}.spec.restartPolicy"),
            policy,
            allowed,
        )]
    }
}

/// The labels of `spec.template.metadata.labels` as JSON (None when absent).
pub fn template_labels(obj: &Value) -> Option<&Value> {
    obj.pointer("/spec/template/metadata/labels")
}

/// The `selector does not match template labels` error, rendered like upstream.
pub fn selector_mismatch(labels: Option<&Value>) -> FieldError {
    FieldError::invalid_raw(
        "spec.template.metadata.labels",
        crate::validation::go_string_map_value(labels),
        "`selector` does not match template `labels`",
    )
}

/// PodTemplate (core/v1 `podtemplates`).
pub struct PodTemplateStrategy;

impl Strategy for PodTemplateStrategy {
    fn default(&self, obj: &mut Value) {
        default_template(obj, "template");
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<PodTemplate>(obj, true, NameRule::Subdomain, |t| {
            validate_pod_template(t.template.as_ref(), "template")
        })
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<PodTemplate>(new, old, |n, _| {
            validate_pod_template(n.template.as_ref(), "template")
        })
    }
    fn tracks_generation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_by_tag() {
        for (image, want) in [
            ("nginx", "Always"),
            ("nginx:latest", "Always"),
            ("nginx:1.25", "IfNotPresent"),
            ("localhost:5000/nginx", "Always"),
            ("localhost:5000/nginx:1", "IfNotPresent"),
            ("nginx@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(default_pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn pod_spec_defaults() {
        let mut spec = json!({
            "containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}],
                            "livenessProbe": {"httpGet": {"port": 80}}}],
            "volumes": [{"name": "v"}, {"name": "s", "secret": {"secretName": "x"}}]
        });
        let m = spec.as_object_mut().map(default_pod_spec);
        assert!(m.is_some());
        assert_eq!(spec["dnsPolicy"], "ClusterFirst");
        assert_eq!(spec["restartPolicy"], "Always");
        assert_eq!(spec["terminationGracePeriodSeconds"], 30);
        assert_eq!(spec["schedulerName"], "default-scheduler");
        assert_eq!(spec["securityContext"], json!({}));
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(c["livenessProbe"]["periodSeconds"], 10);
        assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(spec["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(spec["volumes"][1]["secret"]["defaultMode"], 420);
    }

    fn spec_errors(spec: Value) -> Vec<String> {
        match serde_json::from_value::<PodSpec>(spec) {
            Ok(s) => validate_pod_spec(&s, "spec")
                .iter()
                .map(ToString::to_string)
                .collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn pod_spec_validation() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"containers": []}), "spec.containers: Required value"),
            (json!({"containers": [{"name": "c"}]}), "spec.containers[0].image: Required value"),
            (json!({"containers": [{"image": "x"}]}), "spec.containers[0].name: Required value"),
            (
                json!({"containers": [{"name": "c", "image": "x"}, {"name": "c", "image": "x"}]}),
                "spec.containers[1].name: Duplicate value: \"c\"",
            ),
            (
                json!({"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 70000, "protocol": "TCP"}]}]}),
                "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
            ),
            (
                json!({"containers": [{"name": "c", "image": "x"}], "restartPolicy": "Sometimes"}),
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ),
            (
                json!({"containers": [{"name": "c", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/x"}]}]}),
                "spec.containers[0].volumeMounts[0].name: Not found: \"v\"",
            ),
            (
                json!({"containers": [{"name": "C", "image": "x"}]}),
                "spec.containers[0].name: Invalid value: \"C\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ),
        ];
        for (spec, want) in cases {
            let got = spec_errors(spec);
            assert_eq!(got, vec![want.to_string()]);
        }
    }
}
