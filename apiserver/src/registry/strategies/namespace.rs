//! core/v1 Namespaces.

use k8s_openapi::api::core::v1::Namespace;
use serde_json::{json, Value};

use super::{child, fields_at, validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{is_qualified_name, FieldError, FieldErrors, NameRule};

/// Finalizer names upstream accepts without a domain prefix.
const STANDARD_FINALIZERS: &[&str] = &["kubernetes", "orphan", "foregroundDeletion"];

fn validate_namespace(ns: &Namespace) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for f in ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .into_iter()
        .flatten()
    {
        let msgs = is_qualified_name(f);
        for m in &msgs {
            errs.push(FieldError::invalid("spec.finalizers", f, m.clone()));
        }
        if msgs.is_empty() && !f.contains('/') && !STANDARD_FINALIZERS.contains(&f.as_str()) {
            errs.push(FieldError::invalid(
                "spec.finalizers",
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

/// core/v1 Namespace.
pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn default(&self, obj: &mut Value) {
        let name = super::str_at(obj, "/metadata/name").to_string();
        if name.is_empty() {
            return;
        }
        if let Some(labels) = child(obj, "metadata").and_then(|m| super::child_map(m, "labels")) {
            labels.insert("kubernetes.io/metadata.name".into(), json!(name));
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            let list = spec.entry("finalizers").or_insert_with(|| json!([]));
            if !list.is_array() {
                *list = json!([]);
            }
            if let Some(a) = list.as_array_mut() {
                if !a.iter().any(|f| f == "kubernetes") {
                    a.push(json!("kubernetes"));
                }
            }
        }
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), json!({"phase": "Active"}));
        }
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // spec.finalizers changes only through the finalize subresource.
        let old_fin = old.pointer("/spec/finalizers").cloned();
        if let Some(spec) = child(new, "spec") {
            match old_fin {
                Some(f) => spec.insert("finalizers".into(), f),
                None => spec.remove("finalizers"),
            };
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<Namespace>(obj, false, NameRule::Label, validate_namespace)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<Namespace>(new, old, |n, _| validate_namespace(n))
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        fields_at(obj, &[("status.phase", "/status/phase")])
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &["status.phase"]
    }
    fn tracks_generation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_defaults() {
        let mut ns = json!({"metadata": {"name": "team-a"}});
        NamespaceStrategy.default(&mut ns);
        NamespaceStrategy.prepare_for_create(&mut ns);
        assert_eq!(
            ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "team-a"
        );
        assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
        assert_eq!(ns["status"]["phase"], "Active");
        assert!(NamespaceStrategy.validate(&ns).is_empty());
        let bad = json!({"metadata": {"name": "a.b"}});
        let errs = NamespaceStrategy.validate(&bad);
        assert!(errs[0]
            .to_string()
            .starts_with("metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label"));
        assert_eq!(
            NamespaceStrategy.selectable_fields(&ns),
            vec![("status.phase", "Active".to_string())]
        );
    }
}
