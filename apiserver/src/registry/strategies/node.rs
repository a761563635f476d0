//! core/v1 Nodes.

use k8s_openapi::api::core::v1::Node;
use serde_json::Value;

use super::{str_at, validate_update_with, validate_with};
use crate::registry::Strategy;
use crate::validation::{FieldError, FieldErrors, NameRule};

const TAINT_EFFECTS: &[&str] = &["NoExecute", "NoSchedule", "PreferNoSchedule"];

fn is_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, bits)) => {
            let max = if ip.contains(':') { 128 } else { 32 };
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= max)
        }
        None => false,
    }
}

fn validate_node(n: &Node) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let Some(spec) = &n.spec else { return errs };
    for (i, c) in spec.pod_cidrs.iter().flatten().enumerate() {
        if !is_cidr(c) {
            errs.push(FieldError::invalid(
                format!("spec.podCIDRs[{i}]"),
                c,
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
        }
    }
    for (i, t) in spec.taints.iter().flatten().enumerate() {
        let tp = format!("spec.taints[{i}]");
        if !TAINT_EFFECTS.contains(&t.effect.as_str()) {
            if t.effect.is_empty() {
                errs.push(FieldError::required(format!("{tp}.effect"), ""));
            } else {
                errs.push(FieldError::not_supported(
                    format!("{tp}.effect"),
                    &t.effect,
                    TAINT_EFFECTS,
                ));
            }
        }
        for m in crate::validation::is_qualified_name(&t.key) {
            errs.push(FieldError::invalid(format!("{tp}.key"), &t.key, m));
        }
    }
    errs
}

/// core/v1 Node. Nodes are created by kubelets with their status, so it is kept on create.
pub struct NodeStrategy;

impl Strategy for NodeStrategy {
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<Node>(obj, false, NameRule::Subdomain, validate_node)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_update_with::<Node>(new, old, |n, _| validate_node(n));
        let old_cidr = str_at(old, "/spec/podCIDR");
        if !old_cidr.is_empty() && str_at(new, "/spec/podCIDR") != old_cidr {
            errs.push(FieldError::forbidden(
                "spec.podCIDRs",
                "node updates may not change podCIDR except from \"\" to valid",
            ));
        }
        let old_pid = str_at(old, "/spec/providerID");
        if !old_pid.is_empty() && str_at(new, "/spec/providerID") != old_pid {
            errs.push(FieldError::forbidden(
                "spec.providerID",
                "node updates may not change providerID except from \"\" to valid",
            ));
        }
        errs
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let u = obj
            .pointer("/spec/unschedulable")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        vec![("spec.unschedulable", u.to_string())]
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }
    fn tracks_generation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_checks() {
        let n = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.244.1.0/24"], "taints": [{"key": "k", "effect": "Bad"}]}});
        let errs: Vec<String> = NodeStrategy
            .validate(&n)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(errs, vec!["spec.taints[0].effect: Unsupported value: \"Bad\": supported values: \"NoExecute\", \"NoSchedule\", \"PreferNoSchedule\""]);
        assert_eq!(
            NodeStrategy.selectable_fields(&n),
            vec![("spec.unschedulable", "false".to_string())]
        );
        let old = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24"}});
        let new = json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.2.0/24"}});
        assert_eq!(NodeStrategy.validate_update(&new, &old).len(), 1);
    }
}
