//! `pods/<name>/binding` and the namespaced `bindings` resource (upstream's BindingREST):
//! a v1 Binding assigns a pending pod to a node by setting `spec.nodeName` and the
//! PodScheduled=True condition in one compare-and-swap write.

use serde_json::{json, Map, Value};

use super::store::{Store, WriteOptions};
use super::Subresource;
use crate::error::{Error, Result};
use crate::object;
use crate::validation::FieldError;

/// The Status a successful binding answers with (HTTP 201).
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// Binds the pod `ns/name` (the URL's name; empty for `POST bindings`) as `binding` says.
pub async fn create(
    pods: &Store,
    ns: &str,
    url_name: &str,
    binding: Value,
    opts: &WriteOptions,
) -> Result<()> {
    check_kind(&binding)?;
    let name = object::meta_str(&binding, "name").to_string();
    if !url_name.is_empty() && name != url_name {
        return Err(Error::BadRequest(
            "name in URL does not match name in Binding object".into(),
        ));
    }
    let body_ns = object::meta_str(&binding, "namespace");
    if !body_ns.is_empty() && body_ns != ns {
        return Err(Error::BadRequest(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    let target = binding.get("target").cloned().unwrap_or(Value::Null);
    let target_kind = target.get("kind").and_then(Value::as_str).unwrap_or("");
    let node = target
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let mut errs = Vec::new();
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    }
    if !target_kind.is_empty() && target_kind != "Node" {
        errs.push(FieldError::invalid(
            "target.kind",
            target_kind,
            "must be empty or 'Node'",
        ));
    }
    if node.is_empty() {
        errs.push(FieldError::required("target.name", ""));
    }
    if !errs.is_empty() {
        return Err(Error::Invalid {
            kind: "Binding".into(),
            name,
            errors: errs,
        });
    }
    let uid = object::meta_str(&binding, "uid").to_string();
    let rv = object::meta_str(&binding, "resourceVersion").to_string();
    let annotations = object::meta(&binding)
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let conflict = |resource: &str, message: String| Error::Conflict {
        resource: resource.into(),
        name: name.clone(),
        message,
    };
    pods.guaranteed_update(ns, &name, Some(Subresource::Binding), opts, |old| {
        let have_uid = object::meta_str(old, "uid");
        if !uid.is_empty() && uid != have_uid {
            return Err(conflict(
                "pods",
                format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have_uid}"),
            ));
        }
        let have_rv = object::meta_str(old, "resourceVersion");
        if !rv.is_empty() && rv != have_rv {
            return Err(conflict(
                "pods",
                format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have_rv}"),
            ));
        }
        if object::meta(old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return Err(conflict(
                "pods/binding",
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let assigned = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !assigned.is_empty() {
            return Err(conflict(
                "pods/binding",
                format!("pod {name} is already assigned to node {assigned:?}"),
            ));
        }
        if old
            .pointer("/spec/schedulingGates")
            .and_then(Value::as_array)
            .is_some_and(|g| !g.is_empty())
        {
            return Err(conflict(
                "pods/binding",
                format!("pod {name} has non-empty .spec.schedulingGates"),
            ));
        }
        let mut pod = old.clone();
        object::meta_mut(&mut pod).remove("resourceVersion");
        if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("nodeName".into(), Value::String(node.clone()));
        }
        if !annotations.is_empty() {
            let m = object::meta_mut(&mut pod);
            let a = m
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(a) = a.as_object_mut() {
                a.extend(annotations.clone());
            }
        }
        set_scheduled(&mut pod);
        Ok(pod)
    })
    .await?;
    Ok(())
}

fn check_kind(binding: &Value) -> Result<()> {
    if let Some(av) = binding.get("apiVersion").and_then(Value::as_str) {
        if av != "v1" {
            return Err(Error::BadRequest(format!(
                "the API version in the data ({av}) does not match the expected API version (v1)"
            )));
        }
    }
    if let Some(k) = binding.get("kind").and_then(Value::as_str) {
        if k != "Binding" {
            return Err(Error::BadRequest(format!(
                "the kind in the data ({k}) does not match the expected kind (Binding)"
            )));
        }
    }
    Ok(())
}

/// PodScheduled=True, as upstream's UpdatePodCondition: the transition time moves only
/// when the status changes.
fn set_scheduled(pod: &mut Value) {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let Some(p) = pod.as_object_mut() else {
        return;
    };
    let status = p
        .entry("status")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(status) = status.as_object_mut() else {
        return;
    };
    let conds = status
        .entry("conditions")
        .or_insert_with(|| Value::Array(Vec::new()));
    let Some(conds) = conds.as_array_mut() else {
        return;
    };
    let existing = conds
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("PodScheduled"));
    match existing {
        Some(c) => {
            if c.get("status").and_then(Value::as_str) != Some("True") {
                c["lastTransitionTime"] = json!(now);
            }
            if let Some(o) = c.as_object_mut() {
                o.insert("status".into(), json!("True"));
                o.remove("reason");
                o.remove("message");
            }
        }
        None => conds.push(json!({
            "type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now,
        })),
    }
}
