//! LimitRanger: Container defaults from the namespace's LimitRanges, then min/max and
//! limit/request ratio checks per Container and per Pod, with upstream's messages.

use serde_json::{json, Map, Value};

use super::quantity;
use super::{cached, Attributes};
use crate::error::Result;
use crate::handlers::ApiState;

async fn limit_items(state: &ApiState, ns: &str, kind: &str) -> Result<Vec<Value>> {
    Ok(cached(state, "", "limitranges", ns)
        .await?
        .into_iter()
        .flat_map(|lr| {
            lr.pointer("/spec/limits")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter(|item| item.get("type").and_then(Value::as_str) == Some(kind))
        .collect())
}

fn containers_mut(pod: &mut Value) -> Vec<&mut Map<String, Value>> {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, list) in spec.iter_mut() {
        if key != "containers" && key != "initContainers" {
            continue;
        }
        for c in list.as_array_mut().into_iter().flatten() {
            if let Some(c) = c.as_object_mut() {
                out.push(c);
            }
        }
    }
    out
}

fn containers(pod: &Value) -> Vec<&Value> {
    ["containers", "initContainers"]
        .iter()
        .flat_map(|k| {
            pod.pointer(&format!("/spec/{k}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .collect()
}

/// Sets unset container requests and limits from `defaultRequest` and `default`, and
/// records what it set in the `kubernetes.io/limit-ranger` annotation.
pub async fn default_pod(state: &ApiState, a: &Attributes<'_>, pod: &mut Value) -> Result<()> {
    let items = limit_items(state, a.namespace, "Container").await?;
    if items.is_empty() {
        return Ok(());
    }
    let mut notes = Vec::new();
    for c in containers_mut(pod) {
        let cname = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let res = c.entry("resources").or_insert_with(|| json!({}));
        let Some(res) = res.as_object_mut() else {
            continue;
        };
        for (field, default_key, what) in [
            ("requests", "defaultRequest", "request"),
            ("limits", "default", "limit"),
        ] {
            let mut set = Vec::new();
            for item in &items {
                let Some(defaults) = item.get(default_key).and_then(Value::as_object) else {
                    continue;
                };
                let target = res.entry(field).or_insert_with(|| json!({}));
                let Some(target) = target.as_object_mut() else {
                    continue;
                };
                for (k, v) in defaults {
                    if !target.contains_key(k) {
                        target.insert(k.clone(), v.clone());
                        set.push(k.clone());
                    }
                }
            }
            if res
                .get(field)
                .and_then(Value::as_object)
                .is_some_and(Map::is_empty)
            {
                res.remove(field);
            }
            if !set.is_empty() {
                notes.push(format!("{} {what} for container {cname}", set.join(", ")));
            }
        }
        // A defaulted limit without a request sets the request, as pod defaulting does.
        let limits = res.get("limits").and_then(Value::as_object).cloned();
        if let Some(limits) = limits {
            let req = res.entry("requests").or_insert_with(|| json!({}));
            if let Some(req) = req.as_object_mut() {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
    if !notes.is_empty() {
        let m = crate::object::meta_mut(pod);
        let ann = m.entry("annotations").or_insert_with(|| json!({}));
        if let Some(ann) = ann.as_object_mut() {
            ann.insert(
                "kubernetes.io/limit-ranger".into(),
                json!(format!("LimitRanger plugin set: {}", notes.join("; "))),
            );
        }
    }
    Ok(())
}

fn get_q(res: &Value, field: &str, key: &str) -> Option<(i128, String)> {
    let v = res.get(field)?.get(key)?;
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    quantity::of(v).map(|q| (q, s))
}

/// Checks `min`, `max` and `maxLimitRequestRatio` of one item against one set of
/// requests/limits (a container's, or a pod's sums).
fn check(item: &Value, res: &Value, kind: &str, errs: &mut Vec<String>) {
    let bounds = |k: &str| item.get(k).and_then(Value::as_object).cloned();
    if let Some(min) = bounds("min") {
        for (r, v) in &min {
            let Some(minq) = quantity::of(v) else {
                continue;
            };
            let shown = v.as_str().map(str::to_string).unwrap_or(v.to_string());
            // Upstream reports the first failed bound of a resource only.
            match (get_q(res, "requests", r), get_q(res, "limits", r)) {
                (None, _) => errs.push(format!(
                    "minimum {r} usage per {kind} is {shown}.  No request is specified"
                )),
                (Some((q, s)), _) if q < minq => errs.push(format!(
                    "minimum {r} usage per {kind} is {shown}, but request is {s}"
                )),
                (_, Some((q, s))) if q < minq => errs.push(format!(
                    "minimum {r} usage per {kind} is {shown}, but limit is {s}"
                )),
                _ => {}
            }
        }
    }
    if let Some(max) = bounds("max") {
        for (r, v) in &max {
            let Some(maxq) = quantity::of(v) else {
                continue;
            };
            let shown = v.as_str().map(str::to_string).unwrap_or(v.to_string());
            match (get_q(res, "limits", r), get_q(res, "requests", r)) {
                (None, _) => errs.push(format!(
                    "maximum {r} usage per {kind} is {shown}.  No limit is specified"
                )),
                (Some((q, s)), _) if q > maxq => errs.push(format!(
                    "maximum {r} usage per {kind} is {shown}, but limit is {s}"
                )),
                (_, Some((q, s))) if q > maxq => errs.push(format!(
                    "maximum {r} usage per {kind} is {shown}, but request is {s}"
                )),
                _ => {}
            }
        }
    }
    if let Some(ratio) = bounds("maxLimitRequestRatio") {
        for (r, v) in &ratio {
            let Some(maxr) = quantity::of(v) else {
                continue;
            };
            let shown = v.as_str().map(str::to_string).unwrap_or(v.to_string());
            let (Some((lim, _)), Some((req, _))) =
                (get_q(res, "limits", r), get_q(res, "requests", r))
            else {
                continue;
            };
            if req == 0 {
                errs.push(format!(
                    "{r} max limit to request ratio per {kind} is {shown}, but no request is specified or request is 0"
                ));
                continue;
            }
            let actual = lim as f64 / req as f64;
            if actual * 1000.0 > maxr as f64 {
                errs.push(format!(
                    "{r} max limit to request ratio per {kind} is {shown}, but provided ratio is {actual:.6}"
                ));
            }
        }
    }
}

/// Validates a pod against the namespace's Container and Pod limits.
pub async fn validate_pod(state: &ApiState, a: &Attributes<'_>, pod: &Value) -> Result<()> {
    let mut errs = Vec::new();
    let container_items = limit_items(state, a.namespace, "Container").await?;
    for c in containers(pod) {
        let res = c.get("resources").cloned().unwrap_or(json!({}));
        for item in &container_items {
            check(item, &res, "Container", &mut errs);
        }
    }
    let pod_items = limit_items(state, a.namespace, "Pod").await?;
    if !pod_items.is_empty() {
        let mut sums: Map<String, Value> = Map::new();
        for field in ["requests", "limits"] {
            let mut total: std::collections::BTreeMap<String, i128> = Default::default();
            for c in containers(pod) {
                for (k, v) in c
                    .pointer(&format!("/resources/{field}"))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    *total.entry(k.clone()).or_default() += quantity::of(v).unwrap_or(0);
                }
            }
            let m: Map<String, Value> = total
                .into_iter()
                .map(|(k, v)| {
                    let s = quantity::format(v, quantity::is_bytes(&k));
                    (k, json!(s))
                })
                .collect();
            sums.insert(field.into(), Value::Object(m));
        }
        let sums = Value::Object(sums);
        for item in &pod_items {
            check(item, &sums, "Pod", &mut errs);
        }
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(a.forbidden(pod, errs.remove(0))),
        _ => Err(a.forbidden(pod, format!("[{}]", errs.join(", ")))),
    }
}
