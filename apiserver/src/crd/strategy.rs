//! The CustomResourceDefinition kind: defaulting, validation, and the status the API server
//! keeps (`acceptedNames`, `storedVersions`, conditions NamesAccepted and Established).

use serde_json::{json, Value};

use super::CLEANUP_FINALIZER;
use crate::object;
use crate::registry::strategies::{child, set_default};
use crate::registry::Strategy;
use crate::validation::FieldErrors;

/// Strategy of `customresourcedefinitions`.
pub struct CrdStrategy;

/// The status a write keeps: `storedVersions` grows with the storage version; the accepted
/// names and the conditions are the naming controller's (`controller::names`), kept from
/// the old object (a new CRD starts with none, as upstream's).
fn set_status(obj: &mut Value, old: Option<&Value>) {
    let storage = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| vs.iter().find(|v| v["storage"] == true))
        .and_then(|v| v["name"].as_str())
        .map(str::to_string);
    let old_status = old.and_then(|o| o.get("status"));
    let mut stored: Vec<Value> = old_status
        .and_then(|s| s.get("storedVersions"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(s) = storage {
        if !stored.contains(&json!(s)) {
            stored.push(json!(s));
        }
    }
    let names = old_status
        .and_then(|s| s.get("acceptedNames"))
        .cloned()
        .unwrap_or_else(|| json!({"plural": "", "kind": ""}));
    let conditions = old_status
        .and_then(|s| s.get("conditions"))
        .cloned()
        .unwrap_or_else(|| json!([]));
    if let Some(m) = obj.as_object_mut() {
        m.insert(
            "status".into(),
            json!({"conditions": conditions, "acceptedNames": names, "storedVersions": stored}),
        );
    }
}

impl Strategy for CrdStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(spec) = child(obj, "spec") else {
            return;
        };
        if let Some(conv) = spec
            .entry("conversion")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            set_default(conv, "strategy", json!("None"));
        }
        if let Some(names) = spec.get_mut("names").and_then(Value::as_object_mut) {
            let kind = names
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if !kind.is_empty() {
                set_default(names, "singular", json!(kind.to_lowercase()));
                set_default(names, "listKind", json!(format!("{kind}List")));
            }
        }
        // Printer columns keep what was sent: upstream's `priority` is omitempty, so a
        // defaulted 0 never shows (and a second `kubectl apply` of the CRD is a no-op).
    }

    fn prepare_for_create(&self, obj: &mut Value) {
        let m = object::meta_mut(obj);
        let finalizers = m
            .entry("finalizers")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(f) = finalizers.as_array_mut() {
            if !f.contains(&json!(CLEANUP_FINALIZER)) {
                f.push(json!(CLEANUP_FINALIZER));
            }
        }
        set_status(obj, None);
    }

    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        set_status(new, Some(old));
    }

    fn validate(&self, obj: &Value) -> FieldErrors {
        super::validation::validate(obj)
    }

    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        super::validation::validate_update(new, old)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn create_sets_status_finalizer_and_defaults() {
        let mut c = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                     "names": {"plural": "widgets", "kind": "Widget"},
                     "versions": [{"name": "v1", "served": true, "storage": true}]},
            "status": {"storedVersions": ["bogus"]},
        });
        CrdStrategy.default(&mut c);
        CrdStrategy.prepare_for_create(&mut c);
        assert_eq!(c["spec"]["names"]["singular"], "widget");
        assert_eq!(c["spec"]["names"]["listKind"], "WidgetList");
        assert_eq!(c["spec"]["conversion"]["strategy"], "None");
        assert_eq!(c["metadata"]["finalizers"], json!([CLEANUP_FINALIZER]));
        assert_eq!(c["status"]["storedVersions"], json!(["v1"]));
        assert_eq!(
            c["status"]["acceptedNames"],
            json!({"plural": "", "kind": ""})
        );
        assert_eq!(c["status"]["conditions"], json!([]));
        let mut old = c.clone();
        old["status"]["conditions"] = json!([{"type": "Established", "status": "True"}]);
        c["spec"]["versions"] = json!([{"name": "v1", "served": true, "storage": false},
                                       {"name": "v2", "served": true, "storage": true}]);
        CrdStrategy.prepare_for_update(&mut c, &old);
        assert_eq!(c["status"]["storedVersions"], json!(["v1", "v2"]));
        assert_eq!(c["status"]["conditions"], old["status"]["conditions"]);
    }
}
