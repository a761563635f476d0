//! Services, endpoints, endpoint slices, ingresses, ingress classes and network policies.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::format::{
    age, arr_at, format_label_selector, format_labels, get, int_at, list_with_more, name, opt_int,
    opt_str, str_at,
};
use super::{col, wide, Column, Printer, AGE, NAME};

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer."),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    col("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "Selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

const SERVICE_CIDR_COLUMNS: &[Column] = &[
    NAME,
    col(
        "CIDRs",
        "string",
        "CIDRs defines the IP blocks in CIDR notation from which to assign service cluster IPs.",
    ),
    AGE,
];

const IP_ADDRESS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "ParentRef",
        "string",
        "ParentRef references the resource that an IPAddress is attached to.",
    ),
];

pub(super) fn printer(group: &str, kind: &str) -> Option<Printer> {
    let p = match (group, kind) {
        ("", "Service") => Printer::new(SERVICE_COLUMNS, service_cells),
        ("", "Endpoints") => Printer::new(ENDPOINTS_COLUMNS, endpoints_cells),
        ("discovery.k8s.io", "EndpointSlice") => {
            Printer::new(ENDPOINT_SLICE_COLUMNS, endpoint_slice_cells)
        }
        ("networking.k8s.io" | "extensions", "Ingress") => {
            Printer::new(INGRESS_COLUMNS, ingress_cells)
        }
        ("networking.k8s.io", "IngressClass") => {
            Printer::new(INGRESS_CLASS_COLUMNS, ingress_class_cells)
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            Printer::new(NETWORK_POLICY_COLUMNS, network_policy_cells)
        }
        ("networking.k8s.io", "ServiceCIDR") => {
            Printer::new(SERVICE_CIDR_COLUMNS, service_cidr_cells)
        }
        ("networking.k8s.io", "IPAddress") => Printer::new(IP_ADDRESS_COLUMNS, ip_address_cells),
        _ => return None,
    };
    Some(p)
}

/// Upstream `makePortString`: `80/TCP`, `443:30443/TCP`, comma-joined.
pub(crate) fn service_ports(ports: &[Value]) -> String {
    ports
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = str_at(p, &["protocol"]);
            match int_at(p, &["nodePort"]) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Upstream `loadBalancerStatusStringer` with `wide` (the server always prints wide).
fn load_balancer_ingress(status: &Value) -> String {
    let set: BTreeSet<&str> = arr_at(status, &["ingress"])
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, &["ip"]);
            let host = str_at(i, &["hostname"]);
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn strings(values: &[Value]) -> Vec<&str> {
    values.iter().map(|v| v.as_str().unwrap_or("")).collect()
}

/// Upstream `getServiceExternalIP`.
pub(crate) fn service_external_ip(svc: &Value) -> String {
    let external_ips = strings(arr_at(svc, &["spec", "externalIPs"]));
    match str_at(svc, &["spec", "type"]) {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = get(svc, &["status", "loadBalancer"])
                .map(load_balancer_ingress)
                .unwrap_or_default();
            if !external_ips.is_empty() {
                let mut results: Vec<&str> = Vec::new();
                if !lb.is_empty() {
                    results.extend(lb.split(','));
                }
                results.extend(external_ips.iter().copied());
                return results.join(",");
            }
            if lb.is_empty() {
                "<pending>".to_string()
            } else {
                lb
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // The v1 → internal conversion fills clusterIPs from clusterIP.
    let cluster_ip = arr_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_str(svc, &["spec", "clusterIP"]).filter(|ip| !ip.is_empty()))
        .unwrap_or("<none>");
    let ports = service_ports(arr_at(svc, &["spec", "ports"]));
    vec![
        name(svc),
        Value::from(str_at(svc, &["spec", "type"])),
        Value::from(cluster_ip),
        Value::from(service_external_ip(svc)),
        Value::from(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports
        }),
        age(svc, now),
        Value::from(format_labels(get(svc, &["spec", "selector"]))),
    ]
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream `formatEndpoints(endpoints, nil)`.
pub(crate) fn format_endpoints(obj: &Value) -> String {
    let subsets = arr_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr_at(ss, &["addresses"]);
        let ports = arr_at(ss, &["ports"]);
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, &["ip"]), int_at(port, &["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count.saturating_sub(MAX))
    } else {
        ret
    }
}

fn endpoints_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(obj), Value::from(format_endpoints(obj)), age(obj, now)]
}

fn endpoint_slice_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    const MAX: usize = 3;
    let (mut ports, mut more, mut count) = (Vec::new(), false, 0usize);
    for p in arr_at(obj, &["ports"]) {
        if ports.len() < MAX {
            let text = match (opt_int(p, &["port"]), opt_str(p, &["name"])) {
                (Some(n), _) => n.to_string(),
                (None, Some(n)) => n.to_string(),
                (None, None) => "*".to_string(),
            };
            ports.push(text);
        } else if ports.len() == MAX {
            more = true;
        }
        count += 1;
    }
    let ports = list_with_more(&ports, more, count, MAX);
    let (mut addrs, mut more, mut count) = (Vec::new(), false, 0usize);
    for e in arr_at(obj, &["endpoints"]) {
        for a in arr_at(e, &["addresses"]) {
            if addrs.len() < MAX {
                addrs.push(a.as_str().unwrap_or("").to_string());
            } else if addrs.len() == MAX {
                more = true;
            }
            count += 1;
        }
    }
    vec![
        name(obj),
        Value::from(str_at(obj, &["addressType"])),
        Value::from(ports),
        Value::from(list_with_more(&addrs, more, count, MAX)),
        age(obj, now),
    ]
}

/// Upstream `formatHosts`.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len().saturating_sub(MAX))
    } else {
        ret
    }
}

fn ingress_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = if arr_at(obj, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj),
        Value::from(opt_str(obj, &["spec", "ingressClassName"]).unwrap_or("<none>")),
        Value::from(format_hosts(arr_at(obj, &["spec", "rules"]))),
        Value::from(
            get(obj, &["status", "loadBalancer"])
                .map(load_balancer_ingress)
                .unwrap_or_default(),
        ),
        Value::from(ports),
        age(obj, now),
    ]
}

fn ingress_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = match get(obj, &["spec", "parameters"]) {
        Some(p) => {
            let mut s = str_at(p, &["kind"]).to_string();
            if let Some(g) = opt_str(p, &["apiGroup"]) {
                s = format!("{s}.{g}");
            }
            format!("{s}/{}", str_at(p, &["name"]))
        }
        None => "<none>".to_string(),
    };
    vec![
        name(obj),
        Value::from(str_at(obj, &["spec", "controller"])),
        Value::from(parameters),
        age(obj, now),
    ]
}

fn network_policy_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // podSelector is a required struct: absent means the empty selector.
    let empty = Value::Object(Default::default());
    let selector = get(obj, &["spec", "podSelector"]).unwrap_or(&empty);
    vec![
        name(obj),
        Value::from(format_label_selector(Some(selector))),
        age(obj, now),
    ]
}

fn service_cidr_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(strings(arr_at(obj, &["spec", "cidrs"])).join(",")),
        age(obj, now),
    ]
}

fn ip_address_cells(obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    let parent = match get(obj, &["spec", "parentRef"]) {
        Some(p) => {
            let group = str_at(p, &["group"]);
            let resource = str_at(p, &["resource"]);
            let mut s = if group.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}.{group}")
            }
            .to_lowercase();
            let ns = str_at(p, &["namespace"]);
            if !ns.is_empty() {
                s = format!("{s}/{ns}");
            }
            format!("{s}/{}", str_at(p, &["name"]))
        }
        None => "<none>".to_string(),
    };
    // Upstream appends an Age cell beyond its two declared columns; keep rows aligned instead.
    vec![name(obj), Value::from(parent)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T00:00:30Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    #[test]
    fn service_port_strings() {
        let cases = [
            (json!([]), ""),
            (json!([{"port": 80, "protocol": "TCP"}]), "80/TCP"),
            (
                json!([{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]),
                "80/TCP,443:30443/TCP",
            ),
            (
                json!([{"port": 53, "protocol": "UDP", "nodePort": 0}]),
                "53/UDP",
            ),
        ];
        for (ports, want) in cases {
            assert_eq!(
                service_ports(ports.as_array().map(Vec::as_slice).unwrap_or(&[])),
                want
            );
        }
    }

    #[test]
    fn service_rows() {
        let svc = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"],
                "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}});
        assert_eq!(
            service_cells(&svc, now()),
            vec![
                json!("web"),
                json!("ClusterIP"),
                json!("10.0.0.1"),
                json!("<none>"),
                json!("80/TCP"),
                json!("30s"),
                json!("app=web")
            ]
        );
        let headless = json!({"spec": {"type": "ClusterIP", "clusterIP": "None"}});
        assert_eq!(
            service_cells(&headless, now())[2..5],
            [json!("None"), json!("<none>"), json!("<none>")]
        );
        let no_ip = json!({"spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert_eq!(
            service_cells(&no_ip, now())[2..4],
            [json!("<none>"), json!("db.example.com")]
        );
        assert_eq!(service_cells(&no_ip, now())[6], json!("<none>"));
    }

    #[test]
    fn service_external_ips() {
        let cases = [
            (
                json!({"spec": {"type": "NodePort", "externalIPs": ["1.2.3.4", "5.6.7.8"]}}),
                "1.2.3.4,5.6.7.8",
            ),
            (json!({"spec": {"type": "LoadBalancer"}}), "<pending>"),
            (
                json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "9.9.9.9"}, {"hostname": "lb.example.com"}, {"ip": "1.1.1.1"}]}}}),
                "1.1.1.1,9.9.9.9,lb.example.com",
            ),
            (
                json!({"spec": {"type": "LoadBalancer", "externalIPs": ["2.2.2.2"]}, "status": {"loadBalancer": {"ingress": [{"ip": "9.9.9.9"}]}}}),
                "9.9.9.9,2.2.2.2",
            ),
            (json!({"spec": {}}), "<unknown>"),
        ];
        for (svc, want) in cases {
            assert_eq!(service_external_ip(&svc), want, "{svc}");
        }
    }

    #[test]
    fn endpoints_format() {
        let cases = [
            (json!({}), "<none>"),
            (
                json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}], "ports": [{"port": 80}]}]}),
                "10.0.0.1:80,[fd00::1]:80",
            ),
            (
                json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}]}]}),
                "10.0.0.1",
            ),
            (
                json!({"subsets": [{"addresses": [{"ip": "a"}, {"ip": "b"}, {"ip": "c"}], "ports": [{"port": 1}, {"port": 2}]}]}),
                "a:1,b:1,c:1 + 3 more...",
            ),
            (
                json!({"subsets": [{"notReadyAddresses": [{"ip": "a"}], "ports": [{"port": 1}]}]}),
                "",
            ),
        ];
        for (ep, want) in cases {
            assert_eq!(format_endpoints(&ep), want, "{ep}");
        }
    }

    #[test]
    fn endpoint_slice_row() {
        let es = json!({"metadata": {"name": "s"}, "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "http"}, {}, {"port": 1}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        assert_eq!(
            endpoint_slice_cells(&es, now())[1..4],
            [
                json!("IPv4"),
                json!("80,http,* + 1 more..."),
                json!("10.0.0.1,10.0.0.2")
            ]
        );
        let empty = json!({"addressType": "IPv6"});
        assert_eq!(
            endpoint_slice_cells(&empty, now())[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn ingress_row() {
        let ing = json!({"metadata": {"name": "i"}, "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "a.example"}, {}, {"host": "b.example"}, {"host": "c.example"}, {"host": "d.example"}], "tls": [{}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}});
        assert_eq!(
            ingress_cells(&ing, now())[1..5],
            [
                json!("nginx"),
                json!("a.example,b.example,c.example + 2 more..."),
                json!("1.2.3.4"),
                json!("80, 443")
            ]
        );
        let bare = json!({"spec": {}});
        assert_eq!(
            ingress_cells(&bare, now())[1..5],
            [json!("<none>"), json!("*"), json!(""), json!("80")]
        );
    }

    #[test]
    fn network_policy_selector() {
        let np = json!({"spec": {"podSelector": {}}});
        assert_eq!(network_policy_cells(&np, now())[1], json!("<none>"));
        let np = json!({"spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
        assert_eq!(network_policy_cells(&np, now())[1], json!("role=db"));
    }
}
