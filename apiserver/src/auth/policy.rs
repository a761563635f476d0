//! The bootstrap RBAC policy (cluster roles and bindings created at start when missing) and
//! the ClusterRole aggregation loop (upstream's clusterrole-aggregation controller).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use super::rbac::{PolicyRule, GROUP};
use crate::error::{Error, Result};
use crate::registry::store::WriteOptions;
use crate::registry::stores::Registry;
use crate::selector::LabelSelector;

const POLICY: &str = include_str!("bootstrap_policy.txt");

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|p| {
            if p == "\"\"" {
                String::new()
            } else {
                p.to_string()
            }
        })
        .collect()
}

fn bootstrap_meta(name: &str, labels: Map<String, Value>) -> Value {
    let mut labels = labels;
    labels.insert("kubernetes.io/bootstrapping".into(), json!("rbac-defaults"));
    json!({
        "name": name,
        "labels": labels,
        "annotations": {AUTOUPDATE: "true"},
    })
}

/// The bootstrap ClusterRoles (and the few namespaced Roles) and their bindings as objects.
pub fn objects() -> (Vec<Value>, Vec<Value>) {
    let mut roles: Vec<Value> = Vec::new();
    let mut bindings = Vec::new();
    for line in POLICY.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        match words.as_slice() {
            ["role", ns_name, ..] => {
                // A namespaced Role (`<namespace>/<name>`), as upstream's NamespaceRoles.
                let (ns, name) = ns_name.split_once('/').unwrap_or(("default", ns_name));
                let mut meta = bootstrap_meta(name, Map::new());
                meta["namespace"] = json!(ns);
                roles.push(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": meta,
                    "rules": [],
                }));
            }
            ["clusterrole", name, rest @ ..] => {
                let mut labels = Map::new();
                let mut selectors = Vec::new();
                for w in rest {
                    let (agg, kv) = match w.strip_prefix("aggregate:") {
                        Some(kv) => (true, kv),
                        None => (false, *w),
                    };
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    if agg {
                        selectors.push(json!({"matchLabels": {k: v}}));
                    } else {
                        labels.insert(k.to_string(), json!(v));
                    }
                }
                let mut role = json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "ClusterRole",
                    "metadata": bootstrap_meta(name, labels),
                    "rules": [],
                });
                if !selectors.is_empty() {
                    role["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
                }
                roles.push(role);
            }
            ["url", verbs, urls] => {
                let rule = PolicyRule {
                    verbs: list(verbs),
                    non_resource_urls: list(urls),
                    ..Default::default()
                };
                push_rule(&mut roles, rule);
            }
            [verbs, groups, resources, names @ ..]
                if !line.starts_with("binding") && !line.starts_with("rolebinding") =>
            {
                let rule = PolicyRule {
                    verbs: list(verbs),
                    api_groups: list(groups),
                    resources: list(resources),
                    resource_names: names.first().map(|n| list(n)).unwrap_or_default(),
                    ..Default::default()
                };
                push_rule(&mut roles, rule);
            }
            [kw @ ("binding" | "rolebinding"), name, role, subjects @ ..] => {
                let subjects: Vec<Value> = subjects
                    .iter()
                    .filter_map(|s| s.split_once(':'))
                    .map(|(kind, n)| match kind {
                        "ServiceAccount" => {
                            let (ns, n) = n.split_once('/').unwrap_or(("default", n));
                            json!({"kind": kind, "name": n, "namespace": ns})
                        }
                        _ => json!({"kind": kind, "apiGroup": GROUP, "name": n}),
                    })
                    .collect();
                let (kind, role_kind, ns, name) = match name.split_once('/') {
                    Some((ns, n)) if *kw == "rolebinding" => ("RoleBinding", "Role", Some(ns), n),
                    _ => ("ClusterRoleBinding", "ClusterRole", None, *name),
                };
                let mut meta = bootstrap_meta(name, Map::new());
                if let Some(ns) = ns {
                    meta["namespace"] = json!(ns);
                }
                bindings.push(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": kind,
                    "metadata": meta,
                    "roleRef": {"apiGroup": GROUP, "kind": role_kind, "name": role},
                    "subjects": subjects,
                }));
            }
            _ => {}
        }
    }
    (roles, bindings)
}

/// The rules of bootstrap ClusterRole `name` (empty when there is none).
pub fn role_rules(name: &str) -> Vec<PolicyRule> {
    objects()
        .0
        .into_iter()
        .find(|r| r["kind"] == "ClusterRole" && crate::object::meta_str(r, "name") == name)
        .and_then(|r| r.get("rules").cloned())
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

fn push_rule(roles: &mut [Value], rule: PolicyRule) {
    if let Some(rules) = roles
        .last_mut()
        .and_then(|r| r.get_mut("rules"))
        .and_then(Value::as_array_mut)
    {
        rules.push(serde_json::to_value(rule).unwrap_or(Value::Null));
    }
}

/// The annotation that, set to `"false"`, stops the server from reconciling a bootstrap object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// Creates the bootstrap roles and bindings and reconciles existing ones as upstream's
/// `rbac/bootstrap-roles` post-start hook does: missing rules, aggregation selectors,
/// subjects, labels and annotations are added (nothing is removed) unless the object is
/// annotated `rbac.authorization.k8s.io/autoupdate: "false"`.
pub async fn bootstrap(registry: &Registry) -> Result<()> {
    let (roles, bindings) = objects();
    for (objs, merge) in [
        (roles, reconcile_role as fn(&Value, &Value) -> Option<Value>),
        (bindings, reconcile_binding),
    ] {
        for o in objs {
            let plural = match o["kind"].as_str() {
                Some("Role") => "roles",
                Some("RoleBinding") => "rolebindings",
                Some("ClusterRoleBinding") => "clusterrolebindings",
                _ => "clusterroles",
            };
            let Some(store) = registry.store(GROUP, "v1", plural) else {
                continue;
            };
            reconcile(store, o, merge).await?;
        }
    }
    Ok(())
}

async fn reconcile(
    store: &crate::registry::store::Store,
    expected: Value,
    merge: fn(&Value, &Value) -> Option<Value>,
) -> Result<()> {
    let name = crate::object::meta_str(&expected, "name").to_string();
    let ns = crate::object::meta_str(&expected, "namespace").to_string();
    match store
        .create(
            &ns,
            expected.clone(),
            &WriteOptions::internal(crate::registry::store::APISERVER),
        )
        .await
    {
        Ok(_) => return Ok(()),
        Err(Error::AlreadyExists { .. }) => {}
        Err(e) => return Err(e),
    }
    let updated = store
        .guaranteed_update(
            &ns,
            &name,
            None,
            &WriteOptions::internal(crate::registry::store::APISERVER),
            |old| Ok(merge(old, &expected).unwrap_or_else(|| old.clone())),
        )
        .await;
    match updated {
        Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn protected(o: &Value) -> bool {
    o.pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE))
        .and_then(Value::as_str)
        == Some("false")
}

/// Adds the expected labels and annotations the object lacks (its own values win).
fn merge_meta(out: &mut Value, expected: &Value) {
    for field in ["labels", "annotations"] {
        let Some(want) = expected
            .pointer(&format!("/metadata/{field}"))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let meta = crate::object::meta_mut(out);
        let have = meta.entry(field).or_insert_with(|| json!({}));
        if !have.is_object() {
            *have = json!({});
        }
        if let Some(have) = have.as_object_mut() {
            for (k, v) in want {
                have.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
    }
}

/// The reconciled form of an existing bootstrap ClusterRole, `None` when it is protected.
pub fn reconcile_role(existing: &Value, expected: &Value) -> Option<Value> {
    if protected(existing) {
        return None;
    }
    let mut out = existing.clone();
    merge_meta(&mut out, expected);
    if let Some(want) = expected
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
    {
        // Aggregated roles get their rules from the aggregator; only selectors are reconciled.
        let mut have: Vec<Value> = out
            .pointer("/aggregationRule/clusterRoleSelectors")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for s in want {
            if !have.contains(s) {
                have.push(s.clone());
            }
        }
        out["aggregationRule"] = json!({"clusterRoleSelectors": have});
        return Some(out);
    }
    let mut have: Vec<PolicyRule> = out
        .get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    let want: Vec<PolicyRule> = expected
        .get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    for rule in want {
        if !PolicyRule::covers(&have, &rule) {
            have.push(rule);
        }
    }
    out["rules"] = serde_json::to_value(have).unwrap_or_else(|_| json!([]));
    Some(out)
}

/// The reconciled form of an existing bootstrap ClusterRoleBinding (missing subjects
/// added), `None` when it is protected or points at another role (left for an admin).
pub fn reconcile_binding(existing: &Value, expected: &Value) -> Option<Value> {
    if protected(existing) {
        return None;
    }
    if existing.get("roleRef") != expected.get("roleRef") {
        tracing::warn!(
            binding = crate::object::meta_str(existing, "name"),
            "bootstrap ClusterRoleBinding refers to another role; not reconciled"
        );
        return None;
    }
    let mut out = existing.clone();
    merge_meta(&mut out, expected);
    let mut have: Vec<Value> = out
        .get("subjects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for s in expected
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        fn key(s: &Value) -> [&str; 3] {
            ["kind", "name", "namespace"].map(|f| s.get(f).and_then(Value::as_str).unwrap_or(""))
        }
        if !have.iter().any(|h| key(h) == key(s)) {
            have.push(s.clone());
        }
    }
    if !have.is_empty() {
        out["subjects"] = json!(have);
    }
    Some(out)
}

/// The rules an aggregated ClusterRole should hold: the union, in order and without
/// duplicates, of the rules of every ClusterRole its selectors match.
pub fn aggregate(role: &Value, all: &[Value]) -> Option<Vec<Value>> {
    let selectors = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)?;
    let name = crate::object::meta_str(role, "name");
    let selectors: Vec<LabelSelector> = selectors
        .iter()
        .filter_map(|s| LabelSelector::from_label_selector_json(s).ok())
        .collect();
    let mut others: Vec<&Value> = all
        .iter()
        .filter(|o| crate::object::meta_str(o, "name") != name)
        .collect();
    others.sort_by_key(|o| crate::object::meta_str(o, "name").to_string());
    let mut rules: Vec<Value> = Vec::new();
    for o in others {
        let empty = Map::new();
        let labels = o
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if !selectors
            .iter()
            .any(|s| !s.is_nothing() && s.matches(labels))
        {
            continue;
        }
        for r in o
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !rules.contains(r) {
                rules.push(r.clone());
            }
        }
    }
    Some(rules)
}

/// Keeps the rules of aggregated ClusterRoles up to date (every 500 ms, from the cache).
pub fn spawn_aggregator(
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(store) = registry.store(GROUP, "v1", "clusterroles").cloned() else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut seen = -1;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let rev = store.cache.revision();
            if rev == seen {
                continue;
            }
            seen = rev;
            let (items, _, _) = store.cache.list(&Default::default(), "", 0);
            let all: Vec<Value> = items
                .iter()
                .filter_map(|o| serde_json::from_slice(&o.bytes).ok())
                .collect();
            for role in &all {
                let Some(rules) = aggregate(role, &all) else {
                    continue;
                };
                let current = role.get("rules").cloned().unwrap_or(json!([]));
                if current == json!(rules) || (current.is_null() && rules.is_empty()) {
                    continue;
                }
                let name = crate::object::meta_str(role, "name").to_string();
                let rules = json!(rules);
                let r = store
                    .guaranteed_update(
                        "",
                        &name,
                        None,
                        &WriteOptions::internal(crate::registry::store::CONTROLLER_MANAGER),
                        |old| {
                            let mut new = old.clone();
                            new["rules"] = rules.clone();
                            Ok(new)
                        },
                    )
                    .await;
                if let Err(e) = r {
                    tracing::warn!(role = %name, error = %e, "aggregating cluster role");
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn policy_parses_into_upstream_roles() {
        let (roles, bindings) = objects();
        let names: Vec<&str> = roles
            .iter()
            .map(|r| crate::object::meta_str(r, "name"))
            .collect();
        for want in [
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:basic-user",
            "system:discovery",
            "system:public-info-viewer",
            "system:node",
            "system:node-proxier",
            "system:kube-scheduler",
            "system:kube-controller-manager",
            "system:auth-delegator",
        ] {
            assert!(names.contains(&want), "{want} missing");
        }
        let ca = &roles[0];
        assert_eq!(ca["rules"][1]["nonResourceURLs"], json!(["*"]));
        let sched = roles
            .iter()
            .find(|r| crate::object::meta_str(r, "name") == "system:kube-scheduler")
            .unwrap();
        assert_eq!(
            sched["rules"][2],
            json!({"verbs": ["get", "update"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kube-scheduler"]})
        );
        assert_eq!(sched["rules"][0]["apiGroups"], json!(["", "events.k8s.io"]));
        let cleaner = roles.iter().find(|r| r["kind"] == "Role").unwrap();
        assert_eq!(cleaner["metadata"]["namespace"], "kube-system");
        assert_eq!(
            cleaner["metadata"]["name"],
            "system:controller:token-cleaner"
        );
        assert_eq!(cleaner["rules"][0]["resources"], json!(["secrets"]));
        let b = bindings
            .iter()
            .find(|b| b["kind"] == "RoleBinding")
            .unwrap();
        assert_eq!(b["metadata"]["namespace"], "kube-system");
        assert_eq!(
            b["roleRef"],
            json!({"apiGroup": GROUP, "kind": "Role", "name": "system:controller:token-cleaner"})
        );
        assert_eq!(b["subjects"][0]["name"], "token-cleaner");
        let piv = bindings
            .iter()
            .find(|b| crate::object::meta_str(b, "name") == "system:public-info-viewer")
            .unwrap();
        assert_eq!(piv["subjects"][1]["name"], "system:unauthenticated");
        // view aggregates into edit, edit into admin.
        let view_rules = aggregate(
            roles
                .iter()
                .find(|r| r["metadata"]["name"] == "view")
                .unwrap(),
            &roles,
        )
        .unwrap();
        assert!(!view_rules.is_empty());
        let admin = roles
            .iter()
            .find(|r| r["metadata"]["name"] == "admin")
            .unwrap();
        assert!(admin["aggregationRule"].is_object());
    }
}

#[cfg(test)]
mod reconcile_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn protected_roles_are_not_reconciled() {
        let (roles, _) = objects();
        let expected = roles
            .iter()
            .find(|r| r["metadata"]["name"] == "system:basic-user")
            .unwrap();
        let mut existing = expected.clone();
        existing["rules"] = json!([]);
        let fixed = reconcile_role(&existing, expected).unwrap();
        assert_eq!(fixed["rules"], expected["rules"]);
        existing["metadata"]["annotations"][AUTOUPDATE] = json!("false");
        assert!(reconcile_role(&existing, expected).is_none());
        existing["metadata"]["annotations"] = json!({AUTOUPDATE: "false"});
        assert!(reconcile_role(&existing, expected).is_none());
    }
}
