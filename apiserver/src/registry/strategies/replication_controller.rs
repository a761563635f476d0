//! core/v1 ReplicationControllers: a plain-map selector, defaulted from the template labels.

use k8s_openapi::api::core::v1::ReplicationController;
use serde_json::{json, Value};

use super::apps::{reset_status, status_replicas_field, validate_replicated_template};
use super::pod_template::{
    default_spec_template, selector_mismatch, template_labels, validate_pod_template,
};
use super::{child, set_default, validate_update_with, validate_with};
use crate::registry::{ScalePaths, Strategy};
use crate::validation::{validate_labels, validate_nonnegative, FieldError, FieldErrors, NameRule};

/// core/v1 ReplicationController.
pub struct ReplicationControllerStrategy;

fn validate_rc(obj: &Value, rc: &ReplicationController) -> FieldErrors {
    let Some(spec) = &rc.spec else {
        return vec![FieldError::required("spec.selector", "")];
    };
    let mut errs = validate_nonnegative(
        spec.min_ready_seconds.map(i64::from),
        "spec.minReadySeconds",
    );
    errs.extend(validate_nonnegative(
        spec.replicas.map(i64::from),
        "spec.replicas",
    ));
    let selector = obj
        .pointer("/spec/selector")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
    match selector {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(sel) => errs.extend(validate_labels(Some(sel), "spec.selector")),
    }
    match &spec.template {
        None => errs.push(FieldError::required("spec.template", "")),
        Some(t) => {
            let labels = template_labels(obj);
            let matches = selector.and_then(Value::as_object).is_some_and(|sel| {
                sel.iter()
                    .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
            });
            if selector.is_some() && !matches {
                errs.push(selector_mismatch(labels));
            }
            errs.extend(validate_pod_template(Some(t), "spec.template"));
            errs.extend(validate_replicated_template(
                Some(t),
                "ReplicationController",
            ));
        }
    }
    errs
}

impl Strategy for ReplicationControllerStrategy {
    fn default(&self, obj: &mut Value) {
        let labels = template_labels(obj)
            .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
            .cloned();
        if let Some(labels) = labels {
            if let Some(spec) = child(obj, "spec") {
                if spec
                    .get("selector")
                    .and_then(Value::as_object)
                    .is_none_or(|m| m.is_empty())
                {
                    spec.insert("selector".into(), labels.clone());
                }
            }
            if let Some(meta) = child(obj, "metadata") {
                if meta
                    .get("labels")
                    .and_then(Value::as_object)
                    .is_none_or(|m| m.is_empty())
                {
                    meta.insert("labels".into(), labels);
                }
            }
        }
        if let Some(spec) = child(obj, "spec") {
            set_default(spec, "replicas", json!(1));
        }
        default_spec_template(obj);
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        reset_status(obj);
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<ReplicationController>(obj, true, NameRule::Subdomain, |rc| {
            validate_rc(obj, rc)
        })
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<ReplicationController>(new, old, |n, _| validate_rc(new, n))
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        status_replicas_field(obj)
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &["status.replicas"]
    }
    fn scale_paths(&self) -> Option<ScalePaths> {
        Some(super::apps::APPS_SCALE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selector_defaults_from_template() {
        let mut rc = json!({"metadata": {"name": "rc", "namespace": "d"}, "spec": {"template": {
            "metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        ReplicationControllerStrategy.default(&mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "a"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "a"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        assert!(ReplicationControllerStrategy.validate(&rc).is_empty());
        rc["spec"]["selector"] = json!({"app": "b"});
        let errs: Vec<String> = ReplicationControllerStrategy
            .validate(&rc)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errs, vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"a\"}: `selector` does not match template `labels`"]);
        assert_eq!(
            ReplicationControllerStrategy.selectable_fields(&rc),
            vec![("status.replicas", "0".to_string())]
        );
    }
}
