//! Defaults and checks of the storage, scheduling, coordination and autoscaling kinds that
//! otherwise need only ObjectMeta validation (used with `Basic`).

use serde_json::{json, Value};

use super::{child, set_default, str_at};
use crate::validation::{FieldError, FieldErrors, NOT_POSITIVE};

/// PersistentVolume: reclaim policy Retain, volume mode Filesystem.
pub fn default_pv(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
}

/// PersistentVolumeClaim: volume mode Filesystem.
pub fn default_pvc(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
}

/// New volumes and claims start Pending.
pub fn pending_status(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.insert("status".into(), json!({"phase": "Pending"}));
    }
}

/// PersistentVolumeClaim: at least one access mode and a storage request.
pub fn check_pvc(obj: &Value) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if obj
        .pointer("/spec/accessModes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        errs.push(FieldError::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    if obj.pointer("/spec/resources/requests/storage").is_none() {
        errs.push(FieldError::required("spec.resources[storage]", ""));
    }
    errs
}

/// StorageClass: reclaim policy Delete, binding mode Immediate.
pub fn default_storage_class(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        set_default(m, "reclaimPolicy", json!("Delete"));
        set_default(m, "volumeBindingMode", json!("Immediate"));
    }
}

/// StorageClass: a provisioner is required.
pub fn check_storage_class(obj: &Value) -> FieldErrors {
    if str_at(obj, "/provisioner").is_empty() {
        vec![FieldError::required("provisioner", "")]
    } else {
        Vec::new()
    }
}

/// PriorityClass: preemption policy PreemptLowerPriority.
pub fn default_priority_class(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        set_default(m, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
}

/// Lease: durations must be positive.
pub fn check_lease(obj: &Value) -> FieldErrors {
    match obj
        .pointer("/spec/leaseDurationSeconds")
        .and_then(Value::as_i64)
    {
        Some(d) if d <= 0 => vec![FieldError::invalid_raw(
            "spec.leaseDurationSeconds",
            d,
            NOT_POSITIVE,
        )],
        _ => Vec::new(),
    }
}

/// HorizontalPodAutoscaler: minReplicas 1.
pub fn default_hpa(obj: &mut Value) {
    if let Some(spec) = child(obj, "spec") {
        set_default(spec, "minReplicas", json!(1));
    }
}

/// HorizontalPodAutoscaler: replica bounds and a scale target.
pub fn check_hpa(obj: &Value) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let min = obj
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let max = obj
        .pointer("/spec/maxReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if min < 1 {
        errs.push(FieldError::invalid_raw(
            "spec.minReplicas",
            min,
            "must be greater than or equal to 1",
        ));
    }
    if max < 1 {
        errs.push(FieldError::invalid_raw(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to 1",
        ));
    } else if max < min {
        errs.push(FieldError::invalid_raw(
            "spec.maxReplicas",
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    for f in ["kind", "name"] {
        if str_at(obj, &format!("/spec/scaleTargetRef/{f}")).is_empty() {
            errs.push(FieldError::required(format!("spec.scaleTargetRef.{f}"), ""));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::super::msgs;
    use super::*;

    #[test]
    fn checks() {
        let hpa = json!({"spec": {"minReplicas": 3, "maxReplicas": 2, "scaleTargetRef": {"kind": "Deployment", "name": "w"}}});
        assert_eq!(msgs(check_hpa(&hpa)), vec!["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"]);
        assert_eq!(
            msgs(check_pvc(
                &json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}})
            )),
            vec!["spec.accessModes: Required value: at least 1 access mode is required"]
        );
        let mut sc = json!({"provisioner": "x"});
        default_storage_class(&mut sc);
        assert_eq!(sc["reclaimPolicy"], "Delete");
        assert!(check_storage_class(&sc).is_empty());
    }
}
