//! core/v1 Services.

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Map, Value};

use super::{
    child, each_item, fields_at, set_default, str_at, validate_update_with, validate_with,
};
use crate::registry::Strategy;
use crate::validation::{
    is_dns1123_label, is_dns1123_subdomain, is_valid_ip, is_valid_port_name, is_valid_port_num,
    validate_labels, FieldError, FieldErrors, NameRule,
};

const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn uses_node_ports(ty: &str) -> bool {
    ty == "NodePort" || ty == "LoadBalancer"
}

/// Upstream `SetDefaults_Service`.
pub fn default_service_spec(spec: &mut Map<String, Value>) {
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    each_item(spec, "ports", |p| {
        set_default(p, "protocol", json!("TCP"));
        let unset = match p.get("targetPort") {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            Some(_) => false,
        };
        if unset {
            if let Some(port) = p.get("port").cloned() {
                p.insert("targetPort".into(), port);
            }
        }
    });
    if ty != "ExternalName" {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if uses_node_ports(&ty) {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if spec.get("sessionAffinity").and_then(Value::as_str) == Some("ClientIP") {
        if let Some(c) = super::child_map(spec, "sessionAffinityConfig")
            .and_then(|c| super::child_map(c, "clientIP"))
        {
            set_default(c, "timeoutSeconds", json!(10800));
        }
    }
}

/// IP family fields for a service that has a cluster IP (upstream sets them at allocation).
fn default_ip_families(spec: &mut Map<String, Value>) {
    if spec.get("type").and_then(Value::as_str) == Some("ExternalName") {
        return;
    }
    let ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if !ip.is_empty() {
        set_default(spec, "clusterIPs", json!([ip]));
    }
    let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
    set_default(spec, "ipFamilies", json!([family]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
}

fn go_service_port_key(protocol: &str, port: i32) -> String {
    format!("core.ServicePort{{Name:\"\", Protocol:{protocol:?}, AppProtocol:(*string)(nil), Port:{port}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}")
}

fn validate_spec(spec: &ServiceSpec) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !TYPES.contains(&ty) {
        errs.push(FieldError::not_supported("spec.type", ty, TYPES));
    }
    let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
    let headless = cluster_ip == "None";
    let ports = spec.ports.as_deref().unwrap_or(&[]);
    if ty == "ExternalName" {
        let name = spec.external_name.as_deref().unwrap_or("");
        let clean = name.strip_suffix('.').unwrap_or(name);
        if clean.is_empty() {
            errs.push(FieldError::required("spec.externalName", ""));
        } else {
            for m in is_dns1123_subdomain(clean) {
                errs.push(FieldError::invalid("spec.externalName", clean, m));
            }
        }
    } else if ports.is_empty() && !headless {
        errs.push(FieldError::required("spec.ports", ""));
    }
    if !cluster_ip.is_empty() && !headless {
        for m in is_valid_ip(cluster_ip) {
            errs.push(FieldError::invalid("spec.clusterIPs[0]", cluster_ip, m));
        }
    }
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        let name = p.name.as_deref().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(format!("{pp}.name"), ""));
        } else if !name.is_empty() {
            for m in is_dns1123_label(name) {
                errs.push(FieldError::invalid(format!("{pp}.name"), name, m));
            }
            if !names.insert(name) {
                errs.push(FieldError::duplicate(format!("{pp}.name"), name));
            }
        }
        for m in is_valid_port_num(p.port.into()) {
            errs.push(FieldError::invalid_raw(format!("{pp}.port"), p.port, m));
        }
        let protocol = p.protocol.as_deref().unwrap_or("");
        match protocol {
            "" => errs.push(FieldError::required(format!("{pp}.protocol"), "")),
            "TCP" | "UDP" | "SCTP" => {}
            other => errs.push(FieldError::not_supported(
                format!("{pp}.protocol"),
                other,
                &["SCTP", "TCP", "UDP"],
            )),
        }
        match &p.target_port {
            Some(IntOrString::Int(t)) => {
                for m in is_valid_port_num((*t).into()) {
                    errs.push(FieldError::invalid_raw(format!("{pp}.targetPort"), t, m));
                }
            }
            Some(IntOrString::String(s)) => {
                for m in is_valid_port_name(s) {
                    errs.push(FieldError::invalid(format!("{pp}.targetPort"), s, m));
                }
            }
            None => {}
        }
        if let Some(np) = p.node_port.filter(|n| *n != 0) {
            if !uses_node_ports(ty) {
                errs.push(FieldError::forbidden(
                    format!("{pp}.nodePort"),
                    format!("may not be used when `type` is '{ty}'"),
                ));
            }
            for m in is_valid_port_num(np.into()) {
                errs.push(FieldError::invalid_raw(format!("{pp}.nodePort"), np, m));
            }
        }
        if !keys.insert((protocol, p.port)) {
            errs.push(FieldError {
                kind: crate::validation::FieldErrorType::Duplicate,
                field: pp,
                value: Some(go_service_port_key(protocol, p.port)),
                detail: String::new(),
            });
        }
    }
    if let Some(sa) = spec.session_affinity.as_deref() {
        if sa != "ClientIP" && sa != "None" {
            errs.push(FieldError::not_supported(
                "spec.sessionAffinity",
                sa,
                &["ClientIP", "None"],
            ));
        }
    }
    if let Some(etp) = spec
        .external_traffic_policy
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        if !uses_node_ports(ty) {
            errs.push(FieldError::invalid(
                "spec.externalTrafficPolicy",
                etp,
                "may only be set when `type` is 'NodePort' or 'LoadBalancer'",
            ));
        } else if etp != "Cluster" && etp != "Local" {
            errs.push(FieldError::not_supported(
                "spec.externalTrafficPolicy",
                etp,
                &["Cluster", "Local"],
            ));
        }
    }
    if let Some(sel) = &spec.selector {
        let v = serde_json::to_value(sel).unwrap_or(Value::Null);
        errs.extend(validate_labels(Some(&v), "spec.selector"));
    }
    errs
}

fn validate_service(s: &Service) -> FieldErrors {
    match &s.spec {
        Some(spec) => validate_spec(spec),
        None => vec![FieldError::required("spec.ports", "")],
    }
}

/// core/v1 Service.
pub struct ServiceStrategy;

impl Strategy for ServiceStrategy {
    fn default(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            default_service_spec(spec);
        }
    }
    fn prepare_for_create(&self, obj: &mut Value) {
        if let Some(spec) = child(obj, "spec") {
            default_ip_families(spec);
        }
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), json!({"loadBalancer": {}}));
        }
    }
    fn prepare_for_update(&self, new: &mut Value, old: &Value) {
        // Allocated values the client did not send are kept (upstream `patchAllocatedValues`).
        let old_ty = str_at(old, "/spec/type");
        let Some(spec) = child(new, "spec") else {
            return;
        };
        let ty = spec
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        // Upstream `dropTypeDependentFields`: values that only the old type needed go, unless
        // the client changed them.
        if ty == "ExternalName" && old_ty != "ExternalName" {
            for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                if spec.get(f) == old.pointer(&format!("/spec/{f}")) {
                    spec.remove(f);
                }
            }
        }
        if !uses_node_ports(&ty) && uses_node_ports(old_ty) {
            let old_ports = old
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            each_item(spec, "ports", |p| {
                let np = p.get("nodePort").cloned();
                if np.is_some() && old_ports.iter().any(|o| o.get("nodePort") == np.as_ref()) {
                    p.remove("nodePort");
                }
            });
            if spec.get("healthCheckNodePort") == old.pointer("/spec/healthCheckNodePort") {
                spec.remove("healthCheckNodePort");
            }
        }
        if ty != "ExternalName" && old_ty != "ExternalName" {
            for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
                let missing = match spec.get(f) {
                    None | Some(Value::Null) => true,
                    Some(Value::String(s)) => s.is_empty(),
                    _ => false,
                };
                if missing {
                    if let Some(v) = old.pointer(&format!("/spec/{f}")) {
                        spec.insert(f.into(), v.clone());
                    }
                }
            }
        }
        if uses_node_ports(&ty) {
            let old_ports = old
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            each_item(spec, "ports", |p| {
                if p.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                    return;
                }
                let same = old_ports.iter().find(|o| {
                    o.get("port") == p.get("port") && o.get("protocol") == p.get("protocol")
                });
                if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                    p.insert("nodePort".into(), np.clone());
                }
            });
            if spec.get("healthCheckNodePort").is_none() {
                if let Some(h) = old.pointer("/spec/healthCheckNodePort") {
                    spec.insert("healthCheckNodePort".into(), h.clone());
                }
            }
        }
        if ty != "ExternalName" {
            default_ip_families(spec);
        }
    }
    fn validate(&self, obj: &Value) -> FieldErrors {
        validate_with::<Service>(obj, true, NameRule::Dns1035Label, validate_service)
    }
    fn validate_update(&self, new: &Value, old: &Value) -> FieldErrors {
        let mut errs = validate_update_with::<Service>(new, old, |n, _| validate_service(n));
        let (old_ip, new_ip) = (
            str_at(old, "/spec/clusterIP"),
            str_at(new, "/spec/clusterIP"),
        );
        let external = str_at(new, "/spec/type") == "ExternalName"
            || str_at(old, "/spec/type") == "ExternalName";
        if !external && !old_ip.is_empty() && old_ip != new_ip {
            let ips: Vec<String> = new
                .pointer("/spec/clusterIPs")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(|s| format!("{s:?}"))
                        .collect()
                })
                .unwrap_or_default();
            errs.push(FieldError::invalid_raw(
                "spec.clusterIPs[0]",
                format!("[]string{{{}}}", ips.join(", ")),
                "may not change once set",
            ));
        }
        errs
    }
    fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        fields_at(
            obj,
            &[
                ("spec.clusterIP", "/spec/clusterIP"),
                ("spec.type", "/spec/type"),
            ],
        )
    }
    fn selectable_field_names(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }
    fn tracks_generation(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::msgs;
    use super::*;

    fn svc(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn defaults() {
        let mut s = svc(json!({"ports": [{"port": 80}], "selector": {"app": "web"}}));
        ServiceStrategy.default(&mut s);
        ServiceStrategy.prepare_for_create(&mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(
            s["spec"]["ports"][0],
            json!({"port": 80, "protocol": "TCP", "targetPort": 80})
        );
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert!(ServiceStrategy.validate(&s).is_empty());
    }

    #[test]
    fn validation() {
        let cases = vec![
            (json!({}), "spec.ports: Required value"),
            (json!({"ports": [{"port": 0, "targetPort": 80}]}), "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive"),
            (json!({"type": "Weird", "clusterIP": "None"}), "spec.type: Unsupported value: \"Weird\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
            (json!({"type": "ExternalName"}), "spec.externalName: Required value"),
            (json!({"ports": [{"port": 80}, {"port": 81, "name": "b"}]}), "spec.ports[0].name: Required value"),
        ];
        for (spec, want) in cases {
            let mut s = svc(spec);
            ServiceStrategy.default(&mut s);
            assert_eq!(msgs(ServiceStrategy.validate(&s)), vec![want.to_string()]);
        }
        let bad_name =
            json!({"metadata": {"name": "1web", "namespace": "d"}, "spec": {"clusterIP": "None"}});
        assert!(msgs(ServiceStrategy.validate(&bad_name))[0].contains("a DNS-1035 label"));
    }

    #[test]
    fn cluster_ip_immutable_and_kept() {
        let mut old = svc(json!({"ports": [{"port": 80}], "clusterIP": "10.96.0.5"}));
        ServiceStrategy.default(&mut old);
        ServiceStrategy.prepare_for_create(&mut old);
        let mut new = svc(json!({"ports": [{"port": 80}]}));
        ServiceStrategy.default(&mut new);
        ServiceStrategy.prepare_for_update(&mut new, &old);
        assert_eq!(new["spec"]["clusterIP"], "10.96.0.5");
        assert!(ServiceStrategy.validate_update(&new, &old).is_empty());
        new["spec"]["clusterIP"] = json!("10.96.0.6");
        new["spec"]["clusterIPs"] = json!(["10.96.0.6"]);
        assert_eq!(
            msgs(ServiceStrategy.validate_update(&new, &old)),
            vec!["spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.6\"}: may not change once set"]
        );
    }
}
