//! Storage kinds: persistent volumes and claims, storage classes and the CSI objects.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{
    age, arr_at, deleting, get, len_at, name, opt_bool, opt_str, quantity, scalar_string, str_at,
};
use super::{col, wide, Column, Printer, AGE, NAME};

const PV_COLUMNS: &[Column] = &[
    NAME,
    col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
    col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
    col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
    col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
    col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
    col("StorageClass", "string", "StorageClass of the pv"),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
    col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state. Value of Filesystem is implied when not included in spec."),
];

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
    col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
    col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
    col("StorageClass", "string", "StorageClass of the pvc"),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim. Value of Filesystem is implied when not included in claim spec."),
];

const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
    col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class. Defaults to Delete."),
    col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.  When unset, VolumeBindingImmediate is used."),
    col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
    AGE,
];

const VOLUME_ATTRIBUTES_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("DriverName", "string", "Name of the CSI driver"),
    AGE,
];

const CSI_DRIVER_COLUMNS: &[Column] = &[
    NAME,
    col("AttachRequired", "boolean", "attachRequired indicates this CSI volume driver requires an attach operation."),
    col("PodInfoOnMount", "boolean", "podInfoOnMount indicates this CSI volume driver requires additional pod information (like podName, podUID, etc.) during mount operations."),
    col("StorageCapacity", "boolean", "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider the storage capacity that the driver deployment will report."),
    col("TokenRequests", "string", "tokenRequests indicates the CSI driver needs pods' service account tokens it is mounting volume for to do necessary authentication."),
    col("RequiresRepublish", "boolean", "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically called to reflect any possible change in the mounted volume."),
    col("Modes", "string", "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports."),
    AGE,
];

const CSI_NODE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Drivers",
        "integer",
        "Drivers indicates the number of CSI drivers registered on the node",
    ),
    AGE,
];

const VOLUME_ATTACHMENT_COLUMNS: &[Column] = &[
    NAME,
    Column {
        format: "name",
        ..col("Attacher", "string", "attacher indicates the name of the volume driver that MUST handle this request. This is the name returned by GetPluginName().")
    },
    col("PV", "string", "persistentVolumeName represents the name of the persistent volume to attach."),
    col("Node", "string", "nodeName represents the node that the volume should be attached to."),
    col("Attached", "boolean", "attached indicates the volume is successfully attached."),
    AGE,
];

const CSI_STORAGE_CAPACITY_COLUMNS: &[Column] = &[
    NAME,
    col("StorageClassName", "string", "storageClassName represents the name of the StorageClass that the reported capacity applies to."),
    col("Capacity", "string", "capacity is the value reported by the CSI driver in its GetCapacityResponse for a GetCapacityRequest with topology and parameters that match the previous fields."),
];

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let p = match (group, kind) {
        ("", "PersistentVolume") => Printer::new(PV_COLUMNS, pv_cells),
        ("", "PersistentVolumeClaim") => Printer::new(PVC_COLUMNS, pvc_cells),
        ("storage.k8s.io", "StorageClass") => {
            Printer::new(STORAGE_CLASS_COLUMNS, storage_class_cells)
        }
        ("storage.k8s.io", "VolumeAttributesClass") => Printer::new(
            VOLUME_ATTRIBUTES_CLASS_COLUMNS,
            volume_attributes_class_cells,
        ),
        ("storage.k8s.io", "CSIDriver") => Printer::new(CSI_DRIVER_COLUMNS, csi_driver_cells),
        ("storage.k8s.io", "CSINode") => Printer::new(CSI_NODE_COLUMNS, csi_node_cells),
        ("storage.k8s.io", "VolumeAttachment") => {
            Printer::new(VOLUME_ATTACHMENT_COLUMNS, volume_attachment_cells)
        }
        ("storage.k8s.io", "CSIStorageCapacity") => {
            Printer::new(CSI_STORAGE_CAPACITY_COLUMNS, csi_storage_capacity_cells)
        }
        _ => return None,
    };
    Some(p)
}

/// Upstream `helper.GetAccessModesAsString`: deduplicated, in a fixed order.
pub(crate) fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta storage-class annotation wins over `spec.storageClassName`, as upstream.
fn storage_class_name(obj: &Value) -> &str {
    get(
        obj,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    )
    .and_then(Value::as_str)
    .unwrap_or_else(|| str_at(obj, &["spec", "storageClassName"]))
}

fn pv_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = match get(obj, &["spec", "claimRef"]) {
        Some(c) => format!("{}/{}", str_at(c, &["namespace"]), str_at(c, &["name"])),
        None => String::new(),
    };
    let phase = if deleting(obj) {
        "Terminating"
    } else {
        str_at(obj, &["status", "phase"])
    };
    vec![
        name(obj),
        Value::from(quantity(get(obj, &["spec", "capacity", "storage"]))),
        Value::from(access_modes(arr_at(obj, &["spec", "accessModes"]))),
        Value::from(str_at(obj, &["spec", "persistentVolumeReclaimPolicy"])),
        Value::from(phase),
        Value::from(claim),
        Value::from(storage_class_name(obj)),
        Value::from(opt_str(obj, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        Value::from(str_at(obj, &["status", "reason"])),
        age(obj, now),
        Value::from(opt_str(obj, &["spec", "volumeMode"]).unwrap_or("<unset>")),
    ]
}

fn pvc_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = if deleting(obj) {
        "Terminating"
    } else {
        str_at(obj, &["status", "phase"])
    };
    let volume = str_at(obj, &["spec", "volumeName"]);
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(get(obj, &["status", "capacity", "storage"])),
            access_modes(arr_at(obj, &["status", "accessModes"])),
        )
    };
    vec![
        name(obj),
        Value::from(phase),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(storage_class_name(obj)),
        Value::from(opt_str(obj, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        age(obj, now),
        Value::from(opt_str(obj, &["spec", "volumeMode"]).unwrap_or("<unset>")),
    ]
}

fn is_default(obj: &Value, annotations: &[&str]) -> bool {
    annotations
        .iter()
        .any(|a| get(obj, &["metadata", "annotations", a]).and_then(Value::as_str) == Some("true"))
}

fn storage_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut class_name = str_at(obj, &["metadata", "name"]).to_string();
    if is_default(
        obj,
        &[
            "storageclass.kubernetes.io/is-default-class",
            "storageclass.beta.kubernetes.io/is-default-class",
        ],
    ) {
        class_name.push_str(" (default)");
    }
    vec![
        Value::from(class_name),
        Value::from(str_at(obj, &["provisioner"])),
        Value::from(opt_str(obj, &["reclaimPolicy"]).unwrap_or("Delete")),
        Value::from(opt_str(obj, &["volumeBindingMode"]).unwrap_or("Immediate")),
        Value::from(opt_bool(obj, &["allowVolumeExpansion"]).unwrap_or(false)),
        age(obj, now),
    ]
}

fn volume_attributes_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut class_name = str_at(obj, &["metadata", "name"]).to_string();
    if is_default(
        obj,
        &["volumeattributesclass.kubernetes.io/is-default-class"],
    ) {
        class_name.push_str(" (default)");
    }
    vec![
        Value::from(class_name),
        Value::from(str_at(obj, &["driverName"])),
        age(obj, now),
    ]
}

fn csi_driver_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let modes: Vec<&str> = arr_at(obj, &["spec", "volumeLifecycleModes"])
        .iter()
        .map(|m| m.as_str().unwrap_or(""))
        .collect();
    let token_requests = match get(obj, &["spec", "tokenRequests"]).and_then(Value::as_array) {
        Some(reqs) => reqs
            .iter()
            .map(|t| str_at(t, &["audience"]))
            .collect::<Vec<_>>()
            .join(","),
        None => "<unset>".to_string(),
    };
    vec![
        name(obj),
        Value::from(opt_bool(obj, &["spec", "attachRequired"]).unwrap_or(true)),
        Value::from(opt_bool(obj, &["spec", "podInfoOnMount"]).unwrap_or(false)),
        Value::from(opt_bool(obj, &["spec", "storageCapacity"]).unwrap_or(false)),
        Value::from(token_requests),
        Value::from(opt_bool(obj, &["spec", "requiresRepublish"]).unwrap_or(false)),
        Value::from(if modes.is_empty() {
            "<none>".to_string()
        } else {
            modes.join(",")
        }),
        age(obj, now),
    ]
}

fn csi_node_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(len_at(obj, &["spec", "drivers"])),
        age(obj, now),
    ]
}

fn volume_attachment_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "attacher"])),
        Value::from(str_at(obj, &["spec", "source", "persistentVolumeName"])),
        Value::from(str_at(obj, &["spec", "nodeName"])),
        Value::from(opt_bool(obj, &["status", "attached"]).unwrap_or(false)),
        age(obj, now),
    ]
}

fn csi_storage_capacity_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, &["storageClassName"])),
        Value::from(
            scalar_string(get(obj, &["capacity"])).unwrap_or_else(|| "<unset>".to_string()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:10Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn access_mode_strings() {
        assert_eq!(access_modes(&[]), "");
        assert_eq!(
            access_modes(&[
                json!("ReadWriteMany"),
                json!("ReadWriteOnce"),
                json!("ReadWriteOnce"),
                json!("ReadWriteOncePod")
            ]),
            "RWO,RWX,RWOP"
        );
    }

    #[test]
    fn pv_and_pvc_rows() {
        let pv = json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "ns", "name": "data"}, "storageClassName": "fast"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            pv_cells(&pv, now()),
            vec![
                json!("pv1"),
                json!("10Gi"),
                json!("RWO"),
                json!("Retain"),
                json!("Bound"),
                json!("ns/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("<unknown>"),
                json!("<unset>")
            ]
        );
        let pending = json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        assert_eq!(
            pvc_cells(&pending, now())[1..6],
            [
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("fast")
            ]
        );
        let bound = json!({"metadata": {"name": "data", "deletionTimestamp": "2024-01-01T00:00:00Z",
                "annotations": {"volume.beta.kubernetes.io/storage-class": "old"}},
            "spec": {"volumeName": "pv1", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(
            pvc_cells(&bound, now())[1..9],
            [
                json!("Terminating"),
                json!("pv1"),
                json!("10Gi"),
                json!("RWO"),
                json!("old"),
                json!("<unset>"),
                json!("<unknown>"),
                json!("Filesystem")
            ]
        );
    }

    #[test]
    fn storage_class_row() {
        let sc = json!({"metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            storage_class_cells(&sc, now())[..5],
            [
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false)
            ]
        );
    }
}
