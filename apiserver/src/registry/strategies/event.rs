//! Events: core/v1 `Event` and events.k8s.io/v1 `Event`, stored together in the core form.

use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event as EventsV1Event;
use serde_json::{Map, Value};

use super::{fields_at, validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{is_qualified_name, FieldError, FieldErrors, NameRule};

/// events.k8s.io/v1 field name -> core/v1 field name, for fields that differ.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

/// Length limits upstream applies to event strings.
const REPORTING_INSTANCE_LIMIT: usize = 128;
const ACTION_LIMIT: usize = 128;
const REASON_LIMIT: usize = 128;
const NOTE_LIMIT: usize = 1024;

fn rename(obj: Value, api_version: &str, to_core: bool) -> Value {
    let Value::Object(mut m) = obj else {
        return obj;
    };
    let mut out = Map::new();
    for (k, v) in std::mem::take(&mut m) {
        let renamed = RENAMES.iter().find_map(|(v1, core)| {
            let (from, to) = if to_core { (v1, core) } else { (core, v1) };
            (*from == k).then_some(*to)
        });
        out.insert(renamed.map_or(k, str::to_string), v);
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// Converts an events.k8s.io/v1 Event into its stored core/v1 form.
pub fn events_v1_to_core(obj: Value) -> Value {
    rename(obj, "v1", true)
}

/// Converts a stored core/v1 Event into events.k8s.io/v1.
pub fn core_to_events_v1(obj: Value) -> Value {
    rename(obj, "events.k8s.io/v1", false)
}

fn event_time_set(v: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>) -> bool {
    v.is_some()
}

/// Upstream `legacyValidateEvent`; `controller_field` is how the request's version names
/// the reporting controller.
fn legacy_validate(e: &CoreEvent, controller_field: &str, note_field: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let ns = e.metadata.namespace.as_deref().unwrap_or("");
    let obj_ns = e.involved_object.namespace.as_deref().unwrap_or("");
    let mismatch = || {
        FieldError::invalid(
            "involvedObject.namespace",
            obj_ns,
            "does not match event.namespace",
        )
    };
    if !event_time_set(&e.event_time) {
        if obj_ns.is_empty() {
            if !ns.is_empty() && ns != "default" {
                errs.push(mismatch());
            }
        } else if ns != obj_ns {
            errs.push(mismatch());
        }
        return errs;
    }
    if obj_ns.is_empty() && ns != "default" && ns != "kube-system" {
        errs.push(mismatch());
    }
    let controller = e.reporting_component.as_deref().unwrap_or("");
    if controller.is_empty() {
        errs.push(FieldError::required(controller_field, ""));
    }
    for m in is_qualified_name(controller) {
        errs.push(FieldError::invalid(controller_field, controller, m));
    }
    let instance = e.reporting_instance.as_deref().unwrap_or("");
    if instance.is_empty() {
        errs.push(FieldError::required("reportingInstance", ""));
    } else if instance.len() > REPORTING_INSTANCE_LIMIT {
        errs.push(FieldError::invalid(
            "reportingInstance",
            "",
            "can have at most 128 characters",
        ));
    }
    let action = e.action.as_deref().unwrap_or("");
    if action.is_empty() {
        errs.push(FieldError::required("action", ""));
    } else if action.len() > ACTION_LIMIT {
        errs.push(FieldError::invalid(
            "action",
            "",
            "can have at most 128 characters",
        ));
    }
    let reason = e.reason.as_deref().unwrap_or("");
    if reason.is_empty() {
        errs.push(FieldError::required("reason", ""));
    } else if reason.len() > REASON_LIMIT {
        errs.push(FieldError::invalid(
            "reason",
            "",
            "can have at most 128 characters",
        ));
    }
    if e.message.as_deref().unwrap_or("").len() > NOTE_LIMIT {
        errs.push(FieldError::invalid(
            note_field,
            "",
            "can have at most 1024 characters",
        ));
    }
    errs
}

fn validate_series(count: Option<i32>, last_observed_set: bool, has_series: bool) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if has_series {
        if count.unwrap_or(0) < 2 {
            errs.push(FieldError::invalid(
                "series.count",
                "",
                "should be at least 2",
            ));
        }
        if !last_observed_set {
            errs.push(FieldError::required("series.lastObservedTime", ""));
        }
    }
    errs
}

const CORE_FIELDS: &[(&str, &str)] = &[
    ("involvedObject.kind", "/involvedObject/kind"),
    ("involvedObject.namespace", "/involvedObject/namespace"),
    ("involvedObject.name", "/involvedObject/name"),
    ("involvedObject.uid", "/involvedObject/uid"),
    ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
    (
        "involvedObject.resourceVersion",
        "/involvedObject/resourceVersion",
    ),
    ("involvedObject.fieldPath", "/involvedObject/fieldPath"),
    ("reason", "/reason"),
    ("reportingComponent", "/reportingComponent"),
    ("source", "/source/component"),
    ("type", "/type"),
];

const V1_FIELDS: &[(&str, &str)] = &[
    ("regarding.kind", "/regarding/kind"),
    ("regarding.namespace", "/regarding/namespace"),
    ("regarding.name", "/regarding/name"),
    ("regarding.uid", "/regarding/uid"),
    ("regarding.apiVersion", "/regarding/apiVersion"),
    ("regarding.resourceVersion", "/regarding/resourceVersion"),
    ("regarding.fieldPath", "/regarding/fieldPath"),
    ("reason", "/reason"),
    ("reportingController", "/reportingController"),
    ("type", "/type"),
];

/// core/v1 Event.
pub struct EventStrategy;

fn validate_core(e: &CoreEvent) -> FieldErrors {
    let mut errs = legacy_validate(e, "reportingComponent", "message");
    if let Some(s) = &e.series {
        errs.extend(validate_series(
            s.count,
            s.last_observed_time.is_some(),
            true,
        ));
    }
    errs
}

impl Strategy for EventStrategy {
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<CoreEvent>(obj, true, NameRule::Subdomain, validate_core)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<CoreEvent>(new, old, |n, _| validate_core(n))
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        fields_at(obj, CORE_FIELDS)
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ]
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn allowed_in_terminating_namespace(&self) -> bool {
        true
    }
}

/// events.k8s.io/v1 Event: validated strictly as upstream does for that group, stored as core/v1.
pub struct EventsV1Strategy;

fn validate_events_v1(obj: &Value, e: &EventsV1Event) -> FieldErrors {
    let mut errs = FieldErrors::new();
    // The legacy checks are worded in core terms, like upstream (which validates the internal type).
    match crate::validation::decode_typed::<CoreEvent>(&events_v1_to_core(obj.clone())) {
        Ok(core) => errs.extend(legacy_validate(&core, "reportingController", "note")),
        Err(e) => errs.push(crate::validation::decode_error(&e)),
    }
    if let Some(s) = &e.series {
        errs.extend(validate_series(Some(s.count), true, true));
    }
    if obj.get("eventTime").is_none_or(Value::is_null) {
        errs.push(FieldError::required("eventTime", ""));
    }
    let ty = e.type_.as_deref().unwrap_or("");
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            "",
            format!("has invalid value: {ty}"),
        ));
    }
    errs
}

impl Strategy for EventsV1Strategy {
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<EventsV1Event>(obj, true, NameRule::Subdomain, |e| {
            validate_events_v1(obj, e)
        })
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        validate_update_with::<EventsV1Event>(new, old, |n, _| validate_events_v1(new, n))
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        fields_at(obj, V1_FIELDS)
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "regarding.apiVersion",
            "regarding.resourceVersion",
            "regarding.fieldPath",
            "reason",
            "reportingController",
            "type",
        ]
    }
    fn tracks_generation(&self) -> bool {
        false
    }
    fn storage_resource(&self) -> Option<&'static str> {
        Some("events")
    }
    fn to_storage(&self, obj: Value) -> Value {
        events_v1_to_core(obj)
    }
    fn from_storage(&self, obj: Value) -> Value {
        core_to_events_v1(obj)
    }
    fn has_conversion(&self) -> bool {
        true
    }
    fn allowed_in_terminating_namespace(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(pairs: &'static [(&'static str, &'static str)]) -> Vec<&'static str> {
        pairs.iter().map(|(n, _)| *n).collect()
    }

    #[test]
    fn names_lists_match_field_tables() {
        assert_eq!(names(CORE_FIELDS), EventStrategy.selectable_field_names());
        assert_eq!(names(V1_FIELDS), EventsV1Strategy.selectable_field_names());
    }

    #[test]
    fn conversion_round_trip() {
        let v1 = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1", "namespace": "default"},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
            "note": "hello", "reason": "Started", "type": "Normal", "action": "Start",
            "reportingController": "kubelet", "reportingInstance": "node-1",
            "deprecatedCount": 2, "deprecatedSource": {"component": "kubelet"},
            "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z", "deprecatedLastTimestamp": "2024-01-01T00:00:01Z"
        });
        let core = EventsV1Strategy.to_storage(v1.clone());
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["count"], 2);
        assert_eq!(core["source"]["component"], "kubelet");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["firstTimestamp"], "2024-01-01T00:00:00Z");
        assert!(core.get("regarding").is_none());
        assert_eq!(EventsV1Strategy.from_storage(core.clone()), v1);
        assert!(
            EventStrategy.validate(&core).is_empty(),
            "{:?}",
            EventStrategy.validate(&core)
        );
        assert!(
            EventsV1Strategy.validate(&v1).is_empty(),
            "{:?}",
            EventsV1Strategy.validate(&v1)
        );
    }

    #[test]
    fn selectors() {
        let core = json!({"involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"}, "type": "Normal"});
        let f = EventStrategy.selectable_fields(&core);
        assert!(f.contains(&("involvedObject.kind", "Pod".to_string())));
        assert!(f.contains(&("source", "kubelet".to_string())));
        assert!(f.contains(&("reason", String::new())));
    }

    #[test]
    fn validation_messages() {
        let e = json!({"metadata": {"name": "e", "namespace": "a"}, "involvedObject": {"namespace": "b"}});
        let errs: Vec<String> = EventStrategy
            .validate(&e)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errs,
            vec!["involvedObject.namespace: Invalid value: \"b\": does not match event.namespace"]
        );
        let e = json!({"metadata": {"name": "e", "namespace": "default"}, "regarding": {"namespace": "default"}, "type": "Bad"});
        let errs: Vec<String> = EventsV1Strategy
            .validate(&e)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errs.contains(&"eventTime: Required value".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(&"type: Invalid value: \"\": has invalid value: Bad".to_string()),
            "{errs:?}"
        );
    }
}
