//! RBAC as upstream `plugin/pkg/auth/authorizer/rbac`: policy rules, subject matching, the
//! rule-coverage check behind escalation prevention, and the authorizer over the
//! Role/ClusterRole/RoleBinding/ClusterRoleBinding watch caches.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::User;
use crate::registry::stores::Registry;
use crate::watch_cache::{Filter, WatchCache};

/// The RBAC API group.
pub const GROUP: &str = "rbac.authorization.k8s.io";
/// Members of this group are allowed everything, as upstream.
pub const MASTERS_GROUP: &str = "system:masters";

/// An rbac.authorization.k8s.io/v1 PolicyRule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        default,
        rename = "nonResourceURLs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

/// What a request asks to do (upstream `authorizer.Attributes`, minus the user).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub resource_request: bool,
    pub namespace: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
    /// The path, for non-resource requests.
    pub path: String,
    /// The raw `fieldSelector` of a list or watch (the Node authorizer scopes pods by it).
    pub field_selector: String,
}

fn has_all_or(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

fn resource_matches(rule: &PolicyRule, combined: &str, sub: &str) -> bool {
    rule.resources.iter().any(|r| {
        r == "*"
            || r == combined
            || (!sub.is_empty()
                && r.len() == sub.len() + 2
                && r.starts_with("*/")
                && r.ends_with(sub))
    })
}

fn non_resource_url_matches(rule: &PolicyRule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|u| {
        u == "*" || u == path || (u.ends_with('*') && path.starts_with(u.trim_end_matches('*')))
    })
}

impl PolicyRule {
    /// Whether this rule allows the request (upstream `RuleAllows`).
    pub fn allows(&self, a: &Attributes) -> bool {
        if a.resource_request {
            let combined = if a.subresource.is_empty() {
                a.resource.clone()
            } else {
                format!("{}/{}", a.resource, a.subresource)
            };
            has_all_or(&self.verbs, &a.verb)
                && has_all_or(&self.api_groups, &a.api_group)
                && resource_matches(self, &combined, &a.subresource)
                && (self.resource_names.is_empty() || self.resource_names.contains(&a.name))
        } else {
            has_all_or(&self.verbs, &a.verb) && non_resource_url_matches(self, &a.path)
        }
    }

    /// Whether this rule grants everything `other` grants (upstream `ruleCovers`, applied
    /// to `other` broken down to one verb, group, resource and name at a time).
    pub fn covers(owner: &[PolicyRule], requested: &PolicyRule) -> bool {
        breakdown(requested).iter().all(|sub| {
            owner.iter().any(|o| {
                has_all_or(&o.verbs, &sub.verbs[0])
                    && (sub.api_groups.is_empty() || has_all_or(&o.api_groups, &sub.api_groups[0]))
                    && (sub.resources.is_empty() || covers_resource(o, &sub.resources[0]))
                    && (sub.non_resource_urls.is_empty()
                        || covers_url(o, &sub.non_resource_urls[0]))
                    && (o.resource_names.is_empty()
                        || (!sub.resource_names.is_empty()
                            && o.resource_names.contains(&sub.resource_names[0])))
            })
        })
    }
}

fn covers_resource(owner: &PolicyRule, requested: &str) -> bool {
    owner.resources.iter().any(|r| {
        if r == "*" || r == requested {
            return true;
        }
        // `pods/*` covers every subresource of pods, `*/status` every status.
        match (r.split_once('/'), requested.split_once('/')) {
            (Some((ro, "*")), Some((qo, _))) => ro == qo,
            (Some(("*", rs)), Some((_, qs))) => rs == qs,
            _ => false,
        }
    })
}

fn covers_url(owner: &PolicyRule, requested: &str) -> bool {
    owner.non_resource_urls.iter().any(|u| {
        u == "*"
            || u == requested
            || (u.ends_with('*') && requested.starts_with(u.trim_end_matches('*')))
    })
}

/// One rule per verb, group, resource and name (upstream `BreakdownRule`).
fn breakdown(rule: &PolicyRule) -> Vec<PolicyRule> {
    let mut out = Vec::new();
    for verb in &rule.verbs {
        for group in &rule.api_groups {
            for res in &rule.resources {
                if rule.resource_names.is_empty() {
                    out.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        api_groups: vec![group.clone()],
                        resources: vec![res.clone()],
                        ..Default::default()
                    });
                }
                for n in &rule.resource_names {
                    out.push(PolicyRule {
                        verbs: vec![verb.clone()],
                        api_groups: vec![group.clone()],
                        resources: vec![res.clone()],
                        resource_names: vec![n.clone()],
                        ..Default::default()
                    });
                }
            }
        }
        for url in &rule.non_resource_urls {
            out.push(PolicyRule {
                verbs: vec![verb.clone()],
                non_resource_urls: vec![url.clone()],
                ..Default::default()
            });
        }
    }
    out
}

/// Whether a binding subject names the user (upstream `appliesToUser`). `binding_ns` is the
/// namespace of a RoleBinding, the default for service account subjects.
pub fn subject_matches(subject: &Value, user: &User, binding_ns: &str) -> bool {
    let kind = subject.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = subject.get("name").and_then(Value::as_str).unwrap_or("");
    match kind {
        "User" => user.name == name,
        "Group" => user.groups.iter().any(|g| g == name),
        "ServiceAccount" => {
            let ns = subject
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .unwrap_or(binding_ns);
            user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// Rules of one role, with a description of where they came from.
pub struct Grant {
    /// `RoleBinding "x" of ClusterRole "y" to User "z"` style text for reasons.
    pub source: String,
    pub rules: Vec<PolicyRule>,
}

/// Reads the RBAC objects from the watch caches and evaluates them.
pub struct Rbac {
    roles: Arc<WatchCache>,
    cluster_roles: Arc<WatchCache>,
    bindings: Arc<WatchCache>,
    cluster_bindings: Arc<WatchCache>,
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

fn rules_of(role: &Value) -> Vec<PolicyRule> {
    role.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

fn subject_text(s: &Value) -> String {
    let kind = s.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
    match s.get("namespace").and_then(Value::as_str) {
        Some(ns) if kind == "ServiceAccount" => format!("{kind} \"{name}/{ns}\""),
        _ => format!("{kind} \"{name}\""),
    }
}

impl Rbac {
    /// The authorizer over the registry's RBAC caches; `None` if RBAC is not served.
    pub fn new(registry: &Registry) -> Option<Self> {
        let cache = |plural: &str| registry.store(GROUP, "v1", plural).map(|s| s.cache.clone());
        Some(Rbac {
            roles: cache("roles")?,
            cluster_roles: cache("clusterroles")?,
            bindings: cache("rolebindings")?,
            cluster_bindings: cache("clusterrolebindings")?,
        })
    }

    fn role_rules(&self, role_ref: &Value, binding_ns: &str) -> Option<(String, Vec<PolicyRule>)> {
        let kind = role_ref.get("kind").and_then(Value::as_str)?;
        let name = role_ref.get("name").and_then(Value::as_str)?;
        let obj = match kind {
            "ClusterRole" => self.cluster_roles.get(&self.cluster_roles.key("", name)),
            "Role" if !binding_ns.is_empty() => self.roles.get(&self.roles.key(binding_ns, name)),
            _ => None,
        }?;
        Some((format!("{kind} \"{name}\""), rules_of(&parse(&obj.bytes))))
    }

    /// The rules of a role reference, for the `bind` check of a binding write.
    pub fn rules_of_ref(&self, role_ref: &Value, binding_ns: &str) -> Option<Vec<PolicyRule>> {
        self.role_rules(role_ref, binding_ns).map(|(_, r)| r)
    }

    /// Every grant that applies to `user` in `namespace` (cluster-wide bindings first).
    /// An empty namespace means cluster-wide grants only.
    pub fn grants(&self, user: &User, namespace: &str) -> Vec<Grant> {
        let mut out = Vec::new();
        let (cbs, _, _) = self.cluster_bindings.list(&Filter::default(), "", 0);
        let mut add = |b: &Value, ns: &str, what: &str| {
            let subjects = b.get("subjects").and_then(Value::as_array);
            let Some(subject) = subjects
                .into_iter()
                .flatten()
                .find(|s| subject_matches(s, user, ns))
            else {
                return;
            };
            let Some(role_ref) = b.get("roleRef") else {
                return;
            };
            if let Some((role, rules)) = self.role_rules(role_ref, ns) {
                let bname = crate::object::meta_str(b, "name");
                let at = if ns.is_empty() {
                    String::new()
                } else {
                    format!(" in namespace \"{ns}\"")
                };
                out.push(Grant {
                    source: format!(
                        "{what} \"{bname}\" of {role} to {}{at}",
                        subject_text(subject)
                    ),
                    rules,
                });
            }
        };
        for b in cbs {
            add(&parse(&b.bytes), "", "ClusterRoleBinding");
        }
        if !namespace.is_empty() {
            let filter = Filter {
                namespace: Some(namespace.to_string()),
                ..Default::default()
            };
            let (rbs, _, _) = self.bindings.list(&filter, "", 0);
            for b in rbs {
                add(&parse(&b.bytes), namespace, "RoleBinding");
            }
        }
        out
    }

    /// Upstream `RBACAuthorizer.Authorize`: `Ok(reason)` when allowed.
    pub fn authorize(&self, user: &User, a: &Attributes) -> Result<String, String> {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(String::new());
        }
        for g in self.grants(user, &a.namespace) {
            if g.rules.iter().any(|r| r.allows(a)) {
                return Ok(format!("RBAC: allowed by {}", g.source));
            }
        }
        Err(String::new())
    }

    /// All rules the user holds in a namespace (cluster-wide grants included).
    pub fn rules_for(&self, user: &User, namespace: &str) -> Vec<PolicyRule> {
        self.grants(user, namespace)
            .into_iter()
            .flat_map(|g| g.rules)
            .collect()
    }
}

/// Upstream's forbidden text for a denied request (without the resource prefix).
pub fn forbidden_message(user: &str, a: &Attributes) -> String {
    if !a.resource_request {
        return format!("User {user:?} cannot {} path {:?}", a.verb, a.path);
    }
    let mut resource = a.resource.clone();
    if !a.subresource.is_empty() {
        resource = format!("{resource}/{}", a.subresource);
    }
    if a.namespace.is_empty() {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            a.verb, a.api_group
        )
    } else {
        format!(
            "User {user:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            a.verb, a.api_group, a.namespace
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn rule(verbs: &[&str], groups: &[&str], res: &[&str], names: &[&str]) -> PolicyRule {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect();
        PolicyRule {
            verbs: s(verbs),
            api_groups: s(groups),
            resources: s(res),
            resource_names: s(names),
            ..Default::default()
        }
    }

    fn req(verb: &str, group: &str, res: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            namespace: "default".into(),
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn allows_matches_like_upstream() {
        let r = rule(&["get", "list"], &[""], &["pods", "*/status"], &[]);
        assert!(r.allows(&req("get", "", "pods", "", "x")));
        assert!(!r.allows(&req("get", "", "pods", "log", "x")));
        assert!(r.allows(&req("get", "", "deployments", "status", "x")));
        assert!(!r.allows(&req("delete", "", "pods", "", "x")));
        assert!(!r.allows(&req("get", "apps", "pods", "", "x")));
        let named = rule(&["*"], &["*"], &["configmaps"], &["a"]);
        assert!(named.allows(&req("update", "", "configmaps", "", "a")));
        assert!(!named.allows(&req("update", "", "configmaps", "", "b")));
        assert!(!named.allows(&req("list", "", "configmaps", "", "")));
        let url = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/api/*".into(), "/healthz".into()],
            ..Default::default()
        };
        let path = |p: &str| Attributes {
            verb: "get".into(),
            path: p.into(),
            ..Default::default()
        };
        assert!(url.allows(&path("/api/v1")));
        assert!(url.allows(&path("/healthz")));
        assert!(!url.allows(&path("/healthz/etcd")));
        assert!(!url.allows(&path("/apis")));
    }

    #[test]
    fn covers_breaks_rules_down() {
        let owner = vec![
            rule(&["get", "list"], &[""], &["pods", "pods/*"], &[]),
            rule(&["update"], &[""], &["configmaps"], &["a"]),
        ];
        assert!(PolicyRule::covers(
            &owner,
            &rule(&["get"], &[""], &["pods/log"], &[])
        ));
        assert!(PolicyRule::covers(
            &owner,
            &rule(&["list"], &[""], &["pods"], &["p"])
        ));
        assert!(!PolicyRule::covers(
            &owner,
            &rule(&["delete"], &[""], &["pods"], &[])
        ));
        assert!(PolicyRule::covers(
            &owner,
            &rule(&["update"], &[""], &["configmaps"], &["a"])
        ));
        assert!(!PolicyRule::covers(
            &owner,
            &rule(&["update"], &[""], &["configmaps"], &[])
        ));
        let all = vec![rule(&["*"], &["*"], &["*"], &[])];
        assert!(PolicyRule::covers(
            &all,
            &rule(&["escalate"], &["x"], &["y/z"], &["n"])
        ));
    }

    #[test]
    fn forbidden_wording() {
        assert_eq!(
            forbidden_message("alice", &req("list", "", "pods", "", "")),
            "User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        let mut a = req("get", "apps", "deployments", "scale", "x");
        a.namespace.clear();
        assert_eq!(
            forbidden_message("bob", &a),
            "User \"bob\" cannot get resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
        );
    }
}
