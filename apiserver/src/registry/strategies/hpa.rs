//! autoscaling/v1 HorizontalPodAutoscaler: a view of the autoscaling/v2 objects (stored as
//! v2), converted as upstream's `pkg/apis/autoscaling/v1/conversion.go` does. v1 has one
//! target, `targetCPUUtilizationPercentage` (a v2 `Resource` cpu `Utilization` metric);
//! what v1 cannot hold is kept in upstream's annotations so that a write through v1 loses
//! nothing: the other metrics (`autoscaling.alpha.kubernetes.io/metrics`), the behavior
//! (`.../behavior`), the status conditions (`.../conditions`) and the other current metrics
//! (`.../current-metrics`). kubectl before 1.33 creates HPAs through v1 (`kubectl autoscale`).

use serde_json::{json, Map, Value};

use super::{set_default, validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{FieldErrors, NameRule};

use k8s_openapi::api::autoscaling::v1::HorizontalPodAutoscaler as HpaV1;

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

/// The autoscaling/v1 view of HorizontalPodAutoscalers.
pub struct HpaV1Strategy;

/// Whether a v2 metric is the one v1 holds: cpu utilization of the pods.
fn is_cpu_utilization(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && m.pointer("/resource/target/type").and_then(Value::as_str) == Some("Utilization")
}

fn is_cpu_current(m: &Value) -> bool {
    m.get("type").and_then(Value::as_str) == Some("Resource")
        && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && m.pointer("/resource/current/averageUtilization").is_some()
}

fn annotations(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let meta = obj.get_mut("metadata")?.as_object_mut()?;
    meta.entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
}

/// Copies the `keys` `from` has into `to`.
fn copy(from: &Value, to: &mut Map<String, Value>, keys: &[&str]) {
    for k in keys {
        if let Some(v) = from.get(*k) {
            to.insert((*k).into(), v.clone());
        }
    }
}

const SPEC_KEYS: &[&str] = &["scaleTargetRef", "minReplicas", "maxReplicas"];
const STATUS_KEYS: &[&str] = &[
    "observedGeneration",
    "lastScaleTime",
    "currentReplicas",
    "desiredReplicas",
];

/// A stored (v2) object as autoscaling/v1.
pub fn v2_to_v1(mut obj: Value) -> Value {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let status = obj.get("status").cloned();
    let metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut v1_spec = Map::new();
    copy(&spec, &mut v1_spec, SPEC_KEYS);
    let mut others = Vec::new();
    for m in metrics {
        match m.pointer("/resource/target/averageUtilization") {
            Some(u)
                if is_cpu_utilization(&m)
                    && !v1_spec.contains_key("targetCPUUtilizationPercentage") =>
            {
                v1_spec.insert("targetCPUUtilizationPercentage".into(), u.clone());
            }
            _ => others.push(m),
        }
    }
    let mut notes: Vec<(&str, Value)> = Vec::new();
    if !others.is_empty() {
        notes.push((METRICS, Value::Array(others)));
    }
    if let Some(b) = spec.get("behavior").filter(|b| !b.is_null()) {
        notes.push((BEHAVIOR, b.clone()));
    }
    let mut v1_status = Map::new();
    if let Some(st) = status.as_ref().and_then(Value::as_object) {
        copy(
            &status.clone().unwrap_or(Value::Null),
            &mut v1_status,
            STATUS_KEYS,
        );
        let mut other_current = Vec::new();
        for m in st
            .get("currentMetrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match m.pointer("/resource/current/averageUtilization") {
                Some(u)
                    if is_cpu_current(m)
                        && !v1_status.contains_key("currentCPUUtilizationPercentage") =>
                {
                    v1_status.insert("currentCPUUtilizationPercentage".into(), u.clone());
                }
                _ => other_current.push(m.clone()),
            }
        }
        if !other_current.is_empty() {
            notes.push((CURRENT_METRICS, Value::Array(other_current)));
        }
        if let Some(c) = st
            .get("conditions")
            .filter(|c| c.as_array().is_some_and(|a| !a.is_empty()))
        {
            notes.push((CONDITIONS, c.clone()));
        }
    }
    if !notes.is_empty() {
        if let Some(a) = annotations(&mut obj) {
            for (k, v) in notes {
                a.insert(k.into(), Value::String(v.to_string()));
            }
        }
    }
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!("autoscaling/v1"));
        o.insert("spec".into(), Value::Object(v1_spec));
        match status {
            Some(_) => {
                o.insert("status".into(), Value::Object(v1_status));
            }
            None => {
                o.remove("status");
            }
        }
    }
    obj
}

/// An autoscaling/v1 object as stored (v2); inverse of [`v2_to_v1`].
pub fn v1_to_v2(mut obj: Value) -> Value {
    let mut taken: Map<String, Value> = Map::new();
    if let Some(a) = obj
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        for k in [METRICS, BEHAVIOR, CONDITIONS, CURRENT_METRICS] {
            if let Some(v) = a.remove(k) {
                let parsed = v
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .unwrap_or(Value::Null);
                taken.insert(k.into(), parsed);
            }
        }
        if a.is_empty() {
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("annotations");
            }
        }
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let mut v2_spec = Map::new();
    copy(&spec, &mut v2_spec, SPEC_KEYS);
    let mut metrics = Vec::new();
    if let Some(u) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|u| !u.is_null())
    {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": u}}}));
    }
    if let Some(Value::Array(others)) = taken.get(METRICS) {
        metrics.extend(others.iter().cloned());
    }
    if !metrics.is_empty() {
        v2_spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(b) = taken.get(BEHAVIOR).filter(|b| !b.is_null()) {
        v2_spec.insert("behavior".into(), b.clone());
    }
    let status = obj.get("status").cloned();
    let mut v2_status = Map::new();
    if let Some(st) = status.as_ref().and_then(Value::as_object) {
        copy(
            &status.clone().unwrap_or(Value::Null),
            &mut v2_status,
            STATUS_KEYS,
        );
        let mut current = Vec::new();
        if let Some(u) = st
            .get("currentCPUUtilizationPercentage")
            .filter(|u| !u.is_null())
        {
            current.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": u}}}));
        }
        if let Some(Value::Array(others)) = taken.get(CURRENT_METRICS) {
            current.extend(others.iter().cloned());
        }
        if !current.is_empty() {
            v2_status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(c) = taken.get(CONDITIONS).filter(|c| !c.is_null()) {
            v2_status.insert("conditions".into(), c.clone());
        }
    }
    if let Some(o) = obj.as_object_mut() {
        o.insert("apiVersion".into(), json!("autoscaling/v2"));
        o.insert("spec".into(), Value::Object(v2_spec));
        if status.is_some() {
            o.insert("status".into(), Value::Object(v2_status));
        }
    }
    obj
}

/// Upstream's v1 checks (`ValidateHorizontalPodAutoscaler` on the v1 fields).
fn check_v1(obj: &Value) -> FieldErrors {
    let mut errs = super::storage::check_hpa(obj);
    if let Some(t) = obj
        .pointer("/spec/targetCPUUtilizationPercentage")
        .and_then(Value::as_i64)
    {
        if t < 1 {
            errs.push(crate::validation::FieldError::invalid_raw(
                "spec.targetCPUUtilizationPercentage",
                t,
                "must be greater than or equal to 1",
            ));
        }
    }
    errs
}

impl Strategy for HpaV1Strategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            set_default(spec, "minReplicas", json!(1));
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<HpaV1>(obj, true, NameRule::Subdomain, |_| check_v1(obj))
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<HpaV1>(new, old, |_, _| check_v1(new))
    }
    fn tracks_generation(&self) -> bool {
        true
    }
    fn storage_resource(&self) -> Option<&'static str> {
        Some("autoscaling/horizontalpodautoscalers")
    }
    fn to_storage(&self, obj: Value) -> Value {
        v1_to_v2(obj)
    }
    fn from_storage(&self, obj: Value) -> Value {
        v2_to_v1(obj)
    }
    fn has_conversion(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn v1_and_v2_convert_both_ways_without_loss() {
        let v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "n"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 42}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}});
        let v1 = v2_to_v1(v2.clone());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 80);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 42);
        assert!(v1["spec"].get("metrics").is_none());
        let notes = &v1["metadata"]["annotations"];
        assert!(notes[METRICS].as_str().unwrap().contains("memory"));
        assert!(notes[BEHAVIOR]
            .as_str()
            .unwrap()
            .contains("stabilizationWindowSeconds"));
        assert!(notes[CONDITIONS].as_str().unwrap().contains("AbleToScale"));
        assert_eq!(v1_to_v2(v1), v2);

        // A v1 object as kubectl 1.32's `autoscale` sends it.
        let made = v1_to_v2(
            json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 80}}),
        );
        assert_eq!(
            made["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}])
        );
        assert!(made.get("status").is_none());
        assert!(made["metadata"].get("annotations").is_none());
    }
}
