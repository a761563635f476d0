//! RBAC escalation prevention (upstream `pkg/registry/rbac`): a Role or ClusterRole may only
//! be written by someone who holds every rule in it (or may `escalate`), and a binding only
//! by someone who holds the bound role's rules (or may `bind` it). system:masters may do both.

use serde_json::Value;

use super::rbac::{Attributes, PolicyRule, GROUP, MASTERS_GROUP};
use crate::admission::Attributes as Admission;
use crate::error::Result;
use crate::handlers::ApiState;

fn allowed(state: &ApiState, a: &Admission<'_>, verb: &str, resource: &str, name: &str) -> bool {
    state
        .security
        .authorize(
            a.user,
            &Attributes {
                verb: verb.into(),
                resource_request: true,
                namespace: a.namespace.into(),
                api_group: GROUP.into(),
                api_version: "v1".into(),
                resource: resource.into(),
                name: name.into(),
                ..Default::default()
            },
        )
        .is_ok()
}

/// Upstream `rbacv1helpers.CompactString`.
fn compact(r: &PolicyRule) -> String {
    let q = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut parts = Vec::new();
    if !r.api_groups.is_empty() {
        parts.push(format!("APIGroups:[{}]", q(&r.api_groups)));
    }
    if !r.resources.is_empty() {
        parts.push(format!("Resources:[{}]", q(&r.resources)));
    }
    if !r.resource_names.is_empty() {
        parts.push(format!("ResourceNames:[{}]", q(&r.resource_names)));
    }
    if !r.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:[{}]", q(&r.non_resource_urls)));
    }
    parts.push(format!("Verbs:[{}]", q(&r.verbs)));
    format!("{{{}}}", parts.join(", "))
}

/// The rules of `requested` the user does not hold, merged by group/resource/name.
fn missing(owner: &[PolicyRule], requested: &[PolicyRule]) -> Vec<PolicyRule> {
    let mut out: Vec<PolicyRule> = Vec::new();
    for r in requested {
        for verb in &r.verbs {
            let groups = if r.api_groups.is_empty() {
                vec![None]
            } else {
                r.api_groups.iter().map(Some).collect()
            };
            let mut singles = Vec::new();
            if r.non_resource_urls.is_empty() {
                for g in &groups {
                    for res in &r.resources {
                        let names: Vec<Option<&String>> = if r.resource_names.is_empty() {
                            vec![None]
                        } else {
                            r.resource_names.iter().map(Some).collect()
                        };
                        for n in names {
                            singles.push(PolicyRule {
                                verbs: vec![verb.clone()],
                                api_groups: g.map(|g| vec![g.clone()]).unwrap_or_default(),
                                resources: vec![res.clone()],
                                resource_names: n.map(|n| vec![n.clone()]).unwrap_or_default(),
                                ..Default::default()
                            });
                        }
                    }
                }
            } else {
                for u in &r.non_resource_urls {
                    singles.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        non_resource_urls: vec![u.clone()],
                        ..Default::default()
                    });
                }
            }
            for s in singles {
                if PolicyRule::covers(owner, &s) {
                    continue;
                }
                match out.iter_mut().find(|o| {
                    o.api_groups == s.api_groups
                        && o.resources == s.resources
                        && o.resource_names == s.resource_names
                        && o.non_resource_urls == s.non_resource_urls
                }) {
                    Some(o) if !o.verbs.contains(verb) => o.verbs.push(verb.clone()),
                    Some(_) => {}
                    None => out.push(s),
                }
            }
        }
    }
    out.sort_by_key(compact);
    out
}

fn forbid(a: &Admission<'_>, obj: &Value, missing: &[PolicyRule]) -> crate::error::Error {
    let groups = a
        .user
        .groups
        .iter()
        .map(|g| format!("{g:?}"))
        .collect::<Vec<_>>()
        .join(" ");
    let lines: Vec<String> = missing.iter().map(compact).collect();
    a.forbidden(
        obj,
        format!(
            "user {:?} (groups=[{groups}]) is attempting to grant RBAC permissions not currently held:\n{}",
            a.user.name,
            lines.join("\n")
        ),
    )
}

/// Checks a write of a role or binding for escalation.
pub fn check(state: &ApiState, a: &Admission<'_>, obj: &Value) -> Result<()> {
    if a.user.groups.iter().any(|g| g == MASTERS_GROUP) {
        return Ok(());
    }
    let Some(rbac) = &state.security.rbac else {
        return Ok(());
    };
    let plural = a.resource.plural;
    let name = crate::object::meta_str(obj, "name");
    match plural {
        "roles" | "clusterroles" => {
            if allowed(state, a, "escalate", plural, name) {
                return Ok(());
            }
            let rules: Vec<PolicyRule> = obj
                .get("rules")
                .cloned()
                .and_then(|r| serde_json::from_value(r).ok())
                .unwrap_or_default();
            let owner = rbac.rules_for(a.user, a.namespace);
            let m = missing(&owner, &rules);
            if m.is_empty() {
                Ok(())
            } else {
                Err(forbid(a, obj, &m))
            }
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref = obj.get("roleRef").cloned().unwrap_or(Value::Null);
            let kind = role_ref.get("kind").and_then(Value::as_str).unwrap_or("");
            let role_name = role_ref.get("name").and_then(Value::as_str).unwrap_or("");
            let role_resource = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            if allowed(state, a, "bind", role_resource, role_name) {
                return Ok(());
            }
            let rules = rbac
                .rules_of_ref(&role_ref, a.namespace)
                .unwrap_or_default();
            let owner = rbac.rules_for(a.user, a.namespace);
            let m = missing(&owner, &rules);
            if m.is_empty() {
                Ok(())
            } else {
                Err(forbid(a, obj, &m))
            }
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn missing_rules_print_compactly() {
        let owner = vec![PolicyRule {
            verbs: vec!["get".into(), "list".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        }];
        let requested = vec![PolicyRule {
            verbs: vec!["get".into(), "create".into(), "delete".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        }];
        let m = missing(&owner, &requested);
        assert_eq!(
            m.iter().map(compact).collect::<Vec<_>>(),
            vec!["{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"create\" \"delete\"]}"]
        );
    }
}
