//! One strategy per kind (or small family), plus the shared helpers they use.

pub mod apps;
pub mod basic;
pub mod batch;
pub mod configmap;
pub mod event;
pub mod hpa;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod pod_template;
pub mod rbac;
pub mod replication_controller;
pub mod secret;
pub mod service;
pub mod storage;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::validation::{
    decode_error, decode_typed, validate_object_meta, validate_object_meta_update, FieldErrors,
    NameRule,
};

/// ObjectMeta validation plus a typed decode; `spec` validates the decoded object.
pub(crate) fn validate_with<T: DeserializeOwned>(
    obj: &Value,
    namespaced: bool,
    rule: NameRule,
    spec: impl FnOnce(&T) -> FieldErrors,
) -> FieldErrors {
    let mut errs = validate_object_meta(obj, namespaced, rule);
    match decode_typed::<T>(obj) {
        Ok(t) => errs.extend(spec(&t)),
        Err(e) => errs.push(decode_error(&e)),
    }
    errs
}

/// ObjectMeta update validation plus a typed decode of both objects; `spec` validates the pair.
pub(crate) fn validate_update_with<T: DeserializeOwned>(
    new: &Value,
    old: &Value,
    spec: impl FnOnce(&T, &T) -> FieldErrors,
) -> FieldErrors {
    let mut errs = validate_object_meta_update(new, old);
    match (decode_typed::<T>(new), decode_typed::<T>(old)) {
        (Ok(n), Ok(o)) => errs.extend(spec(&n, &o)),
        (Err(e), _) => errs.push(decode_error(&e)),
        // A stored object that no longer decodes: validate the new one alone.
        (Ok(_), Err(_)) => {}
    }
    errs
}

/// The object at `key` inside `v`, created when absent or null; `None` when `v` is not an
/// object or `key` holds something else (validation reports that later).
pub(crate) fn child<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Map<String, Value>> {
    child_map(v.as_object_mut()?, key)
}

/// Sets `key` to `val` when it is absent or null.
pub(crate) fn set_default(m: &mut Map<String, Value>, key: &str, val: Value) {
    match m.get(key) {
        Some(v) if !v.is_null() => {}
        _ => {
            m.insert(key.to_string(), val);
        }
    }
}

/// Applies `f` to each object element of the array at `key`.
pub(crate) fn each_item(
    m: &mut Map<String, Value>,
    key: &str,
    mut f: impl FnMut(&mut Map<String, Value>),
) {
    if let Some(items) = m.get_mut(key).and_then(Value::as_array_mut) {
        for it in items.iter_mut().filter_map(Value::as_object_mut) {
            f(it);
        }
    }
}

/// A field-selector value at a JSON pointer: strings verbatim, booleans and numbers printed,
/// missing as "" (upstream selects on the zero value).
pub(crate) fn field_at(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Field-selector pairs read from JSON pointers.
pub(crate) fn fields_at(v: &Value, pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .map(|(name, ptr)| (*name, field_at(v, ptr)))
        .collect()
}

/// The object at `key` inside map `m`, created when absent or null.
pub(crate) fn child_map<'a>(
    m: &'a mut Map<String, Value>,
    key: &str,
) -> Option<&'a mut Map<String, Value>> {
    let slot = m
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if slot.is_null() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut()
}

/// A string at a JSON pointer, or "".
pub(crate) fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Field errors rendered as upstream prints them, for tests.
#[cfg(test)]
pub(crate) fn msgs(errs: FieldErrors) -> Vec<String> {
    errs.iter().map(ToString::to_string).collect()
}
