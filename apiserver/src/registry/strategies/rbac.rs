//! rbac.authorization.k8s.io/v1: Roles, ClusterRoles and their bindings.

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use serde_json::{json, Value};

use super::{each_item, set_default, validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{is_path_segment_name, FieldError, FieldErrors, NameRule};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Upstream `ValidatePolicyRule`.
fn validate_rules(rules: &[PolicyRule], namespaced: bool) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (i, r) in rules.iter().enumerate() {
        let p = format!("rules[{i}]");
        if r.verbs.is_empty() {
            errs.push(FieldError::required(
                format!("{p}.verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = r.non_resource_urls.as_deref().unwrap_or(&[]);
        let len = |v: &Option<Vec<String>>| v.as_ref().map_or(0, Vec::len);
        if !urls.is_empty() {
            let rendered = format!(
                "[]string{{{}}}",
                urls.iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if namespaced {
                errs.push(FieldError::invalid_raw(
                    format!("{p}.nonResourceURLs"),
                    &rendered,
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if len(&r.api_groups) > 0 || len(&r.resources) > 0 || len(&r.resource_names) > 0 {
                errs.push(FieldError::invalid_raw(
                    format!("{p}.nonResourceURLs"),
                    &rendered,
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if len(&r.api_groups) == 0 {
            errs.push(FieldError::required(
                format!("{p}.apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if len(&r.resources) == 0 {
            errs.push(FieldError::required(
                format!("{p}.resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    errs
}

fn validate_role_ref(r: &RoleRef, kinds: &[&str]) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if r.api_group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &r.api_group,
            &[RBAC_GROUP],
        ));
    }
    if !kinds.contains(&r.kind.as_str()) {
        errs.push(FieldError::not_supported("roleRef.kind", &r.kind, kinds));
    }
    if r.name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        for m in is_path_segment_name(&r.name, false) {
            errs.push(FieldError::invalid("roleRef.name", &r.name, m));
        }
    }
    errs
}

/// Upstream `ValidateRoleBindingSubject`.
fn validate_subjects(subjects: &[Subject], namespaced: bool) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for (i, s) in subjects.iter().enumerate() {
        let p = format!("subjects[{i}]");
        if s.name.is_empty() {
            errs.push(FieldError::required(format!("{p}.name"), ""));
        }
        let group = s.api_group.as_deref().unwrap_or("");
        match s.kind.as_str() {
            "ServiceAccount" => {
                if !s.name.is_empty() {
                    for m in crate::validation::is_dns1123_subdomain(&s.name) {
                        errs.push(FieldError::invalid(format!("{p}.name"), &s.name, m));
                    }
                }
                if !group.is_empty() {
                    errs.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        group,
                        &[""],
                    ));
                }
                if !namespaced && s.namespace.as_deref().unwrap_or("").is_empty() {
                    errs.push(FieldError::required(format!("{p}.namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        format!("{p}.apiGroup"),
                        group,
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                format!("{p}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

/// Upstream `SetDefaults_Subject` and `SetDefaults_RoleRef`-like defaults on a binding.
fn default_binding(obj: &mut Value) {
    let Some(m) = obj.as_object_mut() else { return };
    each_item(m, "subjects", |s| {
        let kind = s
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "ServiceAccount" => set_default(s, "apiGroup", json!("")),
            "User" | "Group" => set_default(s, "apiGroup", json!(RBAC_GROUP)),
            _ => {}
        }
    });
}

fn go_role_ref(r: &Value) -> String {
    let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or("").to_string();
    format!(
        "rbac.RoleRef{{APIGroup:{:?}, Kind:{:?}, Name:{:?}}}",
        s("apiGroup"),
        s("kind"),
        s("name")
    )
}

/// The role a binding points to cannot change.
fn validate_role_ref_update(new: &Value, old: &Value) -> FieldErrors {
    let (n, o) = (
        new.get("roleRef").unwrap_or(&Value::Null),
        old.get("roleRef").unwrap_or(&Value::Null),
    );
    if n == o {
        Vec::new()
    } else {
        vec![FieldError::invalid_raw(
            "roleRef",
            go_role_ref(n),
            "cannot change roleRef",
        )]
    }
}

/// A Role or ClusterRole.
pub struct RoleStrategy {
    /// Role (true) or ClusterRole (false).
    pub namespaced: bool,
}

fn role_rules(v: &Value, namespaced: bool) -> FieldErrors {
    let rules = if namespaced {
        crate::validation::decode_typed::<Role>(v).map(|r| r.rules.unwrap_or_default())
    } else {
        crate::validation::decode_typed::<ClusterRole>(v).map(|r| r.rules.unwrap_or_default())
    };
    rules
        .map(|r| validate_rules(&r, namespaced))
        .unwrap_or_default()
}

impl Strategy for RoleStrategy {
    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errs = if self.namespaced {
            validate_with::<Role>(obj, true, NameRule::PathSegment, |_| Vec::new())
        } else {
            validate_with::<ClusterRole>(obj, false, NameRule::PathSegment, |_| Vec::new())
        };
        errs.extend(role_rules(obj, self.namespaced));
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = if self.namespaced {
            validate_update_with::<Role>(new, old, |_, _| Vec::new())
        } else {
            validate_update_with::<ClusterRole>(new, old, |_, _| Vec::new())
        };
        errs.extend(role_rules(new, self.namespaced));
        errs
    }
    fn tracks_generation(&self) -> bool {
        false
    }
}

/// A RoleBinding or ClusterRoleBinding.
pub struct BindingStrategy {
    /// RoleBinding (true) or ClusterRoleBinding (false).
    pub namespaced: bool,
}

impl BindingStrategy {
    fn check(&self, obj: &Value) -> FieldErrors {
        if self.namespaced {
            match crate::validation::decode_typed::<RoleBinding>(obj) {
                Ok(b) => {
                    let mut e = validate_role_ref(&b.role_ref, &["Role", "ClusterRole"]);
                    e.extend(validate_subjects(
                        b.subjects.as_deref().unwrap_or(&[]),
                        true,
                    ));
                    e
                }
                Err(_) => Vec::new(),
            }
        } else {
            match crate::validation::decode_typed::<ClusterRoleBinding>(obj) {
                Ok(b) => {
                    let mut e = validate_role_ref(&b.role_ref, &["ClusterRole"]);
                    e.extend(validate_subjects(
                        b.subjects.as_deref().unwrap_or(&[]),
                        false,
                    ));
                    e
                }
                Err(_) => Vec::new(),
            }
        }
    }
}

impl Strategy for BindingStrategy {
    fn default(&self, obj: &mut Value) {
        default_binding(obj);
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        let mut errs = if self.namespaced {
            validate_with::<RoleBinding>(obj, true, NameRule::PathSegment, |_| Vec::new())
        } else {
            validate_with::<ClusterRoleBinding>(obj, false, NameRule::PathSegment, |_| Vec::new())
        };
        errs.extend(self.check(obj));
        errs
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = if self.namespaced {
            validate_update_with::<RoleBinding>(new, old, |_, _| Vec::new())
        } else {
            validate_update_with::<ClusterRoleBinding>(new, old, |_, _| Vec::new())
        };
        errs.extend(self.check(new));
        errs.extend(validate_role_ref_update(new, old));
        errs
    }
    fn tracks_generation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::msgs;
    use super::*;

    #[test]
    fn roles() {
        let r = json!({"metadata": {"name": "system:r", "namespace": "d"}, "rules": [{"apiGroups": [""], "resources": ["pods"]}]});
        assert_eq!(
            msgs(RoleStrategy { namespaced: true }.validate(&r)),
            vec!["rules[0].verbs: Required value: verbs must contain at least one value"]
        );
        let cr = json!({"metadata": {"name": "a/b"}, "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        assert_eq!(
            msgs(RoleStrategy { namespaced: false }.validate(&cr)),
            vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
        );
    }

    #[test]
    fn bindings() {
        let s = BindingStrategy { namespaced: true };
        let mut b = json!({"metadata": {"name": "b", "namespace": "d"},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "default", "namespace": "d"}]});
        s.default(&mut b);
        assert_eq!(b["subjects"][0]["apiGroup"], RBAC_GROUP);
        assert!(s.validate(&b).is_empty(), "{:?}", s.validate(&b));
        let mut new = b.clone();
        new["roleRef"]["name"] = json!("other");
        assert_eq!(
            msgs(s.validate_update(&new, &b)),
            vec!["roleRef: Invalid value: rbac.RoleRef{APIGroup:\"rbac.authorization.k8s.io\", Kind:\"Role\", Name:\"other\"}: cannot change roleRef"]
        );
        let crb = json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "x"}]});
        assert_eq!(
            msgs(BindingStrategy { namespaced: false }.validate(&crb)),
            vec![
                "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
                "subjects[0].namespace: Required value"
            ]
        );
    }
}
