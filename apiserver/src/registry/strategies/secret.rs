//! core/v1 Secrets.

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{json, Value};

use super::configmap::{validate_data_keys, validate_immutable_data};
use super::{child_map, fields_at, set_default, validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{FieldError, FieldErrors, NameRule, FIELD_IMMUTABLE, MAX_SECRET_SIZE};

fn validate_secret(s: &Secret) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let data = s.data.clone().unwrap_or_default();
    errs.extend(validate_data_keys(data.keys(), "data"));
    let total: usize = data.values().map(|v| v.0.len()).sum();
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let required = |k: &str| FieldError::required(format!("data[{k}]"), "");
    let well_formed_json = |k: &str, errs: &mut FieldErrors| match data.get(k) {
        None => errs.push(required(k)),
        Some(b) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&b.0) {
                errs.push(FieldError::invalid(
                    format!("data[{k}]"),
                    "<secret contents redacted>",
                    e.to_string(),
                ));
            }
        }
    };
    match s.type_.as_deref().unwrap_or("Opaque") {
        "kubernetes.io/service-account-token" => {
            let name = s
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .map_or("", String::as_str);
            if name.is_empty() {
                errs.push(FieldError::required(
                    "metadata.annotations[kubernetes.io/service-account.name]",
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => well_formed_json(".dockercfg", &mut errs),
        "kubernetes.io/dockerconfigjson" => well_formed_json(".dockerconfigjson", &mut errs),
        "kubernetes.io/basic-auth"
            if !data.contains_key("username") && !data.contains_key("password") =>
        {
            errs.push(required("username"));
            errs.push(required("password"));
        }
        "kubernetes.io/ssh-auth" if data.get("ssh-privatekey").is_none_or(|v| v.0.is_empty()) => {
            errs.push(required("ssh-privatekey"));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !data.contains_key(k) {
                    errs.push(required(k));
                }
            }
        }
        _ => {}
    }
    errs
}

/// core/v1 Secret.
pub struct SecretStrategy;

impl Strategy for SecretStrategy {
    fn default(&self, obj: &mut Value) {
        let Some(m) = obj.as_object_mut() else { return };
        set_default(m, "type", json!("Opaque"));
        // Upstream merges stringData into data (base64) when converting to the internal type.
        if let Some(Value::Object(sd)) = m.remove("stringData") {
            if let Some(data) = child_map(m, "data") {
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or("");
                    data.insert(
                        k,
                        json!(base64::engine::general_purpose::STANDARD.encode(s)),
                    );
                }
            }
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<Secret>(obj, true, NameRule::Subdomain, validate_secret)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_update_with::<Secret>(new, old, |n, _| validate_secret(n));
        let (nt, ot) = (super::str_at(new, "/type"), super::str_at(old, "/type"));
        if nt != ot {
            errs.push(FieldError::invalid("type", nt, FIELD_IMMUTABLE));
        }
        errs.extend(validate_immutable_data(new, old, &["data"]));
        errs
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        fields_at(obj, &[("type", "/type")])
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &["type"]
    }
    fn tracks_generation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::msgs;
    use super::*;

    #[test]
    fn defaults_and_types() {
        let mut s = json!({"metadata": {"name": "s", "namespace": "d"}, "stringData": {"a": "hi"}});
        SecretStrategy.default(&mut s);
        assert_eq!(s["type"], "Opaque");
        assert_eq!(s["data"]["a"], "aGk=");
        assert!(s.get("stringData").is_none());
        assert!(SecretStrategy.validate(&s).is_empty());
        let tls = json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls", "data": {"tls.crt": ""}});
        assert_eq!(
            msgs(SecretStrategy.validate(&tls)),
            vec!["data[tls.key]: Required value"]
        );
        let mut new = s.clone();
        new["type"] = json!("kubernetes.io/tls");
        new["data"] = json!({"tls.crt": "", "tls.key": ""});
        assert_eq!(
            msgs(SecretStrategy.validate_update(&new, &s)),
            vec!["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]
        );
        let bad =
            json!({"metadata": {"name": "s", "namespace": "d"}, "data": {"a": "not base64!"}});
        assert_eq!(SecretStrategy.validate(&bad).len(), 1);
    }
}
