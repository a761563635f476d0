//! core/v1 ConfigMaps, and the data-key and `immutable` checks Secrets share.

use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

use super::{validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{is_config_map_key, FieldError, FieldErrors, NameRule, MAX_SECRET_SIZE};

/// Upstream `IsConfigMapKey` errors for every key of `keys`, at `path[key]`.
pub fn validate_data_keys<'a>(
    keys: impl IntoIterator<Item = &'a String>,
    path: &str,
) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for k in keys {
        for m in is_config_map_key(k) {
            errs.push(FieldError::invalid(format!("{path}[{k}]"), k, m));
        }
    }
    errs
}

/// Upstream `immutable: true` enforcement: once set it stays set, and `fields` stay unchanged.
pub fn validate_immutable_data(new: &Value, old: &Value, fields: &[&str]) -> FieldErrors {
    const MSG: &str = "field is immutable when `immutable` is set";
    let mut errs = FieldErrors::new();
    if old.get("immutable").and_then(Value::as_bool) != Some(true) {
        return errs;
    }
    if new.get("immutable").and_then(Value::as_bool) != Some(true) {
        errs.push(FieldError::forbidden("immutable", MSG));
    }
    let empty = Value::Object(Default::default());
    let field = |v: &Value, f: &str| v.get(f).filter(|x| !x.is_null()).unwrap_or(&empty).clone();
    for f in fields {
        if field(new, f) != field(old, f) {
            errs.push(FieldError::forbidden(*f, MSG));
        }
    }
    errs
}

fn validate_config_map(c: &ConfigMap) -> FieldErrors {
    let data = c.data.as_ref();
    let binary = c.binary_data.as_ref();
    let mut errs = validate_data_keys(data.into_iter().flat_map(|d| d.keys()), "data");
    errs.extend(validate_data_keys(
        binary.into_iter().flat_map(|d| d.keys()),
        "binaryData",
    ));
    for k in data.into_iter().flat_map(|d| d.keys()) {
        if binary.is_some_and(|b| b.contains_key(k)) {
            errs.push(FieldError::invalid(
                format!("data[{k}]"),
                k,
                "duplicate of key present in binaryData",
            ));
        }
    }
    let total: usize = data
        .into_iter()
        .flat_map(|d| d.values())
        .map(String::len)
        .sum::<usize>()
        + binary
            .into_iter()
            .flat_map(|b| b.values())
            .map(|v| v.0.len())
            .sum::<usize>();
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
    errs
}

/// core/v1 ConfigMap.
pub struct ConfigMapStrategy;

impl Strategy for ConfigMapStrategy {
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<ConfigMap>(obj, true, NameRule::Subdomain, validate_config_map)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_update_with::<ConfigMap>(new, old, |n, _| validate_config_map(n));
        errs.extend(validate_immutable_data(new, old, &["data", "binaryData"]));
        errs
    }
    fn tracks_generation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::msgs;
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_and_immutability() {
        let cm = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"bad key": "v"}});
        assert_eq!(
            msgs(ConfigMapStrategy.validate(&cm)),
            vec!["data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"]
        );
        let old = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "1"}, "immutable": true});
        let new = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "2"}});
        assert_eq!(
            msgs(ConfigMapStrategy.validate_update(&new, &old)),
            vec![
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set"
            ]
        );
        let big = json!({"metadata": {"name": "c", "namespace": "d"}, "data": {"a": "x".repeat(MAX_SECRET_SIZE + 1)}});
        assert_eq!(
            msgs(ConfigMapStrategy.validate(&big)),
            vec!["Too long: may not be more than 1048576 bytes"]
        );
    }
}
