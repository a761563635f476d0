//! ResourceQuota: a create, or an update (PUT or PATCH) that raises usage (a Service turned
//! NodePort or LoadBalancer, a larger claim), that would take a namespace's usage over a
//! quota's `hard` limits is refused with upstream's message; an update is charged only what
//! it adds, as upstream's evaluators do. Usage is counted from the store at admission time.
//! A quota with scopes (`spec.scopes`, `spec.scopeSelector`) covers only the pods in all of
//! its scopes (upstream's pod evaluator): Terminating, NotTerminating, BestEffort,
//! NotBestEffort, PriorityClass (In, NotIn, Exists, DoesNotExist) and
//! CrossNamespacePodAffinity; it covers nothing else.

use std::collections::BTreeMap;

use serde_json::Value;

use super::quantity;
use super::{cached, Attributes};
use crate::error::Result;
use crate::handlers::ApiState;

/// The compute resources a pod uses, in milli-units (upstream: max of the sum over
/// containers and the largest init container).
fn pod_compute(pod: &Value) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    for (field, prefix) in [("requests", "requests."), ("limits", "limits.")] {
        let sum_of = |key: &str| -> BTreeMap<String, i128> {
            let mut m: BTreeMap<String, i128> = BTreeMap::new();
            for c in pod
                .pointer(&format!("/spec/{key}"))
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for (r, q) in c
                    .pointer(&format!("/resources/{field}"))
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    let q = quantity::of(q).unwrap_or(0);
                    let e = m.entry(r.clone()).or_default();
                    if key == "containers" {
                        *e += q;
                    } else {
                        *e = (*e).max(q);
                    }
                }
            }
            m
        };
        let sums = sum_of("containers");
        let inits = sum_of("initContainers");
        let mut all: BTreeMap<String, i128> = sums.clone();
        for (r, q) in inits {
            let e = all.entry(r).or_default();
            *e = (*e).max(q);
        }
        for (r, q) in all {
            out.insert(format!("{prefix}{r}"), q);
            if field == "requests" {
                out.insert(r, q);
            }
        }
    }
    out
}

fn terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    )
}

/// The quota resource names counting one object of this resource.
fn count_keys(group: &str, plural: &str) -> Vec<String> {
    let mut keys = vec![if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }];
    if group.is_empty()
        && matches!(
            plural,
            "pods"
                | "services"
                | "configmaps"
                | "secrets"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        )
    {
        keys.push(plural.to_string());
    }
    keys
}

fn usage_of(group: &str, plural: &str, obj: &Value) -> BTreeMap<String, i128> {
    let mut u = BTreeMap::new();
    if group.is_empty() && plural == "pods" && terminal(obj) {
        return u;
    }
    for k in count_keys(group, plural) {
        u.insert(k, 1000);
    }
    if group.is_empty() && plural == "pods" {
        u.extend(pod_compute(obj));
    }
    if group.is_empty() && plural == "services" {
        u.extend(service_usage(obj));
    }
    if group.is_empty() && plural == "persistentvolumeclaims" {
        u.extend(claim_usage(obj));
    }
    u
}

/// `services.nodeports` and `services.loadbalancers` (upstream's service evaluator): a
/// NodePort Service takes a node port per port, a LoadBalancer one too unless
/// `allocateLoadBalancerNodePorts: false` (then only the ports that name one).
fn service_usage(svc: &Value) -> BTreeMap<String, i128> {
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let all = ports.len() as i128 * 1000;
    let mut u = BTreeMap::new();
    match svc.pointer("/spec/type").and_then(Value::as_str) {
        Some("NodePort") => {
            u.insert("services.nodeports".to_string(), all);
        }
        Some("LoadBalancer") => {
            let allocate = svc
                .pointer("/spec/allocateLoadBalancerNodePorts")
                .and_then(Value::as_bool)
                != Some(false);
            let node_ports = if allocate {
                all
            } else {
                ports
                    .iter()
                    .filter(|p| p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0)
                    .count() as i128
                    * 1000
            };
            u.insert("services.nodeports".to_string(), node_ports);
            u.insert("services.loadbalancers".to_string(), 1000);
        }
        _ => {}
    }
    u
}

/// `requests.storage` and `<class>.storageclass.storage.k8s.io/requests.storage` of a claim.
fn claim_usage(pvc: &Value) -> BTreeMap<String, i128> {
    let mut u = BTreeMap::new();
    let Some(q) = pvc
        .pointer("/spec/resources/requests/storage")
        .and_then(quantity::of)
    else {
        return u;
    };
    u.insert("requests.storage".to_string(), q);
    if let Some(class) = pvc
        .pointer("/spec/storageClassName")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
    {
        u.insert(
            format!("{class}.storageclass.storage.k8s.io/requests.storage"),
            q,
        );
        u.insert(
            format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"),
            1000,
        );
    }
    u
}

/// A quota's scopes as (scope, operator, values): `spec.scopes` (each as `Exists`) and
/// `spec.scopeSelector.matchExpressions`.
fn scopes(q: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out: Vec<(String, String, Vec<String>)> = q
        .pointer("/spec/scopes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| (s.to_string(), "Exists".to_string(), Vec::new()))
        .collect();
    for e in q
        .pointer("/spec/scopeSelector/matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        out.push((
            text("scopeName"),
            text("operator"),
            crate::object::strings(e.get("values")),
        ));
    }
    out
}

/// Upstream's `qos.GetPodQOS(pod) == BestEffort`: no container asks for or limits cpu or
/// memory.
fn best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().all(|ck| {
        pod.pointer(&format!("/spec/{ck}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .all(|c| {
                ["requests", "limits"].iter().all(|f| {
                    ["cpu", "memory"].iter().all(|r| {
                        c.pointer(&format!("/resources/{f}/{r}"))
                            .and_then(quantity::of)
                            .unwrap_or(0)
                            == 0
                    })
                })
            })
    })
}

/// Whether a pod affinity term names other namespaces (`namespaces` or a
/// `namespaceSelector`).
fn cross_namespace_affinity(pod: &Value) -> bool {
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let Some(a) = pod.pointer(&format!("/spec/affinity/{kind}")) else {
            return false;
        };
        let required = a
            .get("requiredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        let preferred = a
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.get("podAffinityTerm"));
        required.chain(preferred).any(|t| {
            t.get("namespaces")
                .and_then(Value::as_array)
                .is_some_and(|n| !n.is_empty())
                || t.get("namespaceSelector").is_some_and(|s| !s.is_null())
        })
    })
}

/// Whether a pod is in one scope of a quota (upstream's `podMatchesScopeFunc`).
fn pod_in_scope(pod: &Value, scope: &str, op: &str, values: &[String]) -> bool {
    let terminating = pod
        .pointer("/spec/activeDeadlineSeconds")
        .and_then(Value::as_i64)
        .is_some_and(|d| d >= 0);
    let matched = match scope {
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        "BestEffort" => best_effort(pod),
        "NotBestEffort" => !best_effort(pod),
        "CrossNamespacePodAffinity" => cross_namespace_affinity(pod),
        "PriorityClass" => {
            let class = pod
                .pointer("/spec/priorityClassName")
                .and_then(Value::as_str)
                .unwrap_or("");
            return match op {
                "In" => values.iter().any(|v| v == class),
                "NotIn" => !values.iter().any(|v| v == class),
                "Exists" => !class.is_empty(),
                "DoesNotExist" => class.is_empty(),
                _ => false,
            };
        }
        _ => false,
    };
    if op == "DoesNotExist" {
        !matched
    } else {
        matched
    }
}

/// Whether quota `q` covers `obj`: every object when it has no scopes, else the pods in all
/// of its scopes.
fn covers(q: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    let scopes = scopes(q);
    if scopes.is_empty() {
        return true;
    }
    group.is_empty()
        && plural == "pods"
        && scopes
            .iter()
            .all(|(s, op, values)| pod_in_scope(obj, s, op, values))
}

/// What a write adds: all of a create's usage, an update's increases only.
fn requested_usage(
    group: &str,
    plural: &str,
    obj: &Value,
    old: Option<&Value>,
) -> BTreeMap<String, i128> {
    let mut requested = usage_of(group, plural, obj);
    if let Some(old) = old {
        let before = usage_of(group, plural, old);
        for (k, v) in requested.iter_mut() {
            *v = (*v - before.get(k).copied().unwrap_or(0)).max(0);
        }
        requested.retain(|_, v| *v > 0);
    }
    requested
}

fn show(resource: &str, milli: i128) -> String {
    quantity::format(milli, quantity::is_bytes(resource))
}

fn pretty(m: &BTreeMap<String, i128>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", show(k, *v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Refuses a create or update that takes usage over a quota of its namespace.
pub async fn admit(state: &ApiState, a: &Attributes<'_>, obj: &Value) -> Result<()> {
    if a.namespace.is_empty() || !a.resource.namespaced {
        return Ok(());
    }
    let quotas = cached(state, "", "resourcequotas", a.namespace).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let (group, plural) = (a.resource.group, a.resource.plural);
    let old = match a.operation {
        super::Operation::Create => None,
        _ => a.old,
    };
    let requested = requested_usage(group, plural, obj, old);
    if requested.is_empty() {
        return Ok(());
    }
    let existing = cached(state, group, plural, a.namespace).await?;
    for q in &quotas {
        if !covers(q, group, plural, obj) {
            continue;
        }
        let name = crate::object::meta_str(q, "name");
        let hard: BTreeMap<String, i128> = q
            .pointer("/spec/hard")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| quantity::of(v).map(|q| (k.clone(), q)))
            .collect();
        // Compute resources a quota limits must be given by every container.
        if group.is_empty() && plural == "pods" && old.is_none() {
            let mut missing = Vec::new();
            for k in hard.keys() {
                let (field, r) = match k.split_once('.') {
                    Some(("requests", r)) => ("requests", r),
                    Some(("limits", r)) => ("limits", r),
                    None if k == "cpu" || k == "memory" => ("requests", k.as_str()),
                    _ => continue,
                };
                if !matches!(r, "cpu" | "memory" | "ephemeral-storage") {
                    continue;
                }
                let all_set = ["containers", "initContainers"].iter().all(|ck| {
                    obj.pointer(&format!("/spec/{ck}"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .all(|c| c.pointer(&format!("/resources/{field}/{r}")).is_some())
                });
                if !all_set {
                    missing.push(k.clone());
                }
            }
            if !missing.is_empty() {
                return Err(a.forbidden(
                    obj,
                    format!("failed quota: {name}: must specify {}", missing.join(",")),
                ));
            }
        }
        let relevant: Vec<&String> = hard.keys().filter(|k| requested.contains_key(*k)).collect();
        if relevant.is_empty() {
            continue;
        }
        let mut used: BTreeMap<String, i128> = BTreeMap::new();
        for o in existing.iter().filter(|o| covers(q, group, plural, o)) {
            for (k, v) in usage_of(group, plural, o) {
                *used.entry(k).or_default() += v;
            }
        }
        let mut req_x = BTreeMap::new();
        let mut used_x = BTreeMap::new();
        let mut hard_x = BTreeMap::new();
        for k in relevant {
            let r = requested[k];
            let u = used.get(k).copied().unwrap_or(0);
            if u + r > hard[k] {
                req_x.insert(k.clone(), r);
                used_x.insert(k.clone(), u);
                hard_x.insert(k.clone(), hard[k]);
            }
        }
        if !req_x.is_empty() {
            return Err(a.forbidden(
                obj,
                format!(
                    "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                    pretty(&req_x),
                    pretty(&used_x),
                    pretty(&hard_x)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn scopes_select_pods_as_upstream() {
        let quota = |spec: Value| json!({"spec": spec});
        let plain = json!({"spec": {"containers": [{"name": "c"}]}});
        let sized = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}],
            "activeDeadlineSeconds": 30, "priorityClassName": "high"}});
        let cross = json!({"spec": {"containers": [{"name": "c"}], "affinity": {"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                "podAffinityTerm": {"topologyKey": "k", "namespaceSelector": {}}}]}}}});
        let be = quota(json!({"scopes": ["BestEffort"]}));
        assert!(covers(&be, "", "pods", &plain));
        assert!(!covers(&be, "", "pods", &sized));
        assert!(
            !covers(&be, "", "services", &json!({})),
            "scoped quotas cover only pods"
        );
        assert!(covers(
            &quota(json!({"hard": {}})),
            "",
            "services",
            &json!({})
        ));
        let term = quota(json!({"scopes": ["Terminating", "NotBestEffort"]}));
        assert!(covers(&term, "", "pods", &sized));
        assert!(!covers(&term, "", "pods", &plain));
        assert!(covers(
            &quota(json!({"scopes": ["NotTerminating"]})),
            "",
            "pods",
            &plain
        ));
        let pc = |op: &str, values: Value| {
            quota(json!({"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": op, "values": values}]}}))
        };
        assert!(covers(
            &pc("In", json!(["high", "mid"])),
            "",
            "pods",
            &sized
        ));
        assert!(!covers(&pc("In", json!(["low"])), "", "pods", &sized));
        assert!(covers(&pc("NotIn", json!(["low"])), "", "pods", &sized));
        assert!(covers(&pc("Exists", Value::Null), "", "pods", &sized));
        assert!(!covers(&pc("Exists", Value::Null), "", "pods", &plain));
        assert!(covers(&pc("DoesNotExist", Value::Null), "", "pods", &plain));
        let x = quota(json!({"scopes": ["CrossNamespacePodAffinity"]}));
        assert!(covers(&x, "", "pods", &cross));
        assert!(!covers(&x, "", "pods", &plain));
    }

    #[test]
    fn pod_usage_sums_containers_and_takes_max_init() {
        let pod = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"resources": {"requests": {"cpu": "200m"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "500m"}}}],
        }});
        let u = usage_of("", "pods", &pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["requests.cpu"], 500);
        assert_eq!(u["cpu"], 500);
        assert_eq!(u["limits.cpu"], 1000);
        assert_eq!(show("requests.memory", u["requests.memory"]), "64Mi");
        assert_eq!(
            pretty(&u.into_iter().filter(|(k, _)| k == "pods").collect()),
            "pods=1"
        );
    }
}
