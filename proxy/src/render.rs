//! Pure rendering of Services + EndpointSlices into `iptables-restore` input, following the
//! chain layout of upstream's iptables proxier (KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*,
//! KUBE-EXT-*, KUBE-NODEPORTS, KUBE-MARK-MASQ, KUBE-POSTROUTING; filter-table REJECTs).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Chains in the nat table that the proxy owns besides the per-service ones.
pub const NAT_BASE_CHAINS: [&str; 4] = [
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
];
/// Chains in the filter table that the proxy owns.
pub const FILTER_CHAINS: [&str; 2] = ["KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES"];
/// Prefixes of the per-service nat chains the proxy owns.
pub const NAT_CHAIN_PREFIXES: [&str; 3] = ["KUBE-SVC-", "KUBE-SEP-", "KUBE-EXT-"];

/// Packet mark that KUBE-MARK-MASQ sets and KUBE-POSTROUTING masquerades.
const MASQ_MARK: &str = "0x4000";
/// Upstream's default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

/// Settings that shape the rendered rules.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Cluster pod CIDR: traffic to a cluster IP from outside it is masqueraded.
    /// None = do not masquerade off-cluster cluster-IP traffic.
    pub cluster_cidr: Option<String>,
}

/// The `iptables-restore` input for both tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// `*nat ... COMMIT`
    pub nat: String,
    /// `*filter ... COMMIT`
    pub filter: String,
    /// Every per-service nat chain the input declares (to find stale ones).
    pub nat_chains: BTreeSet<String>,
}

impl Rendered {
    /// Both tables, filter first, as one `iptables-restore` input.
    pub fn text(&self) -> String {
        format!("{}{}", self.filter, self.nat)
    }
}

/// Upstream's `portProtoHash`: base32 of the SHA-256 of `s`, first 16 characters.
fn hash16(s: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let enc = data_encoding::BASE32.encode(digest.as_ref());
    enc[..16].to_string()
}

/// `KUBE-SVC-<hash>` for a service port name (`ns/name[:port]`) and lowercase protocol.
pub fn service_chain(svc_port_name: &str, protocol: &str) -> String {
    format!("KUBE-SVC-{}", hash16(&format!("{svc_port_name}{protocol}")))
}

/// `KUBE-EXT-<hash>`: external (NodePort) traffic for a service port.
pub fn external_chain(svc_port_name: &str, protocol: &str) -> String {
    format!("KUBE-EXT-{}", hash16(&format!("{svc_port_name}{protocol}")))
}

/// `KUBE-SEP-<hash>` for one endpoint (`ip:port`) of a service port.
pub fn endpoint_chain(svc_port_name: &str, protocol: &str, endpoint: &str) -> String {
    format!(
        "KUBE-SEP-{}",
        hash16(&format!("{svc_port_name}{protocol}{endpoint}"))
    )
}

/// A `--comment` argument, quoted like upstream when it has spaces.
fn comment(c: &str) -> String {
    if c.contains(' ') {
        format!("-m comment --comment \"{c}\"")
    } else {
        format!("-m comment --comment {c}")
    }
}

/// Endpoint addresses (`ip:port`) that serve the port named `port_name` of the service
/// `ns/name`: the ready ones, or when none is ready the serving-and-terminating ones.
fn endpoints_for(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: &str,
) -> (Vec<(String, String)>, bool) {
    let mut ready = BTreeSet::new();
    let mut fallback = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP").to_lowercase() == protocol
        }) else {
            continue;
        };
        let Some(number) = port.port else { continue };
        for ep in &slice.endpoints {
            let cond = ep.conditions.as_ref();
            let is_ready = cond.and_then(|c| c.ready).unwrap_or(true);
            let serving = cond.and_then(|c| c.serving).unwrap_or(is_ready);
            let terminating = cond.and_then(|c| c.terminating).unwrap_or(false);
            for ip in ep.addresses.iter().take(1) {
                let pair = (ip.clone(), format!("{ip}:{number}"));
                if is_ready {
                    ready.insert(pair);
                } else if serving && terminating {
                    fallback.insert(pair);
                }
            }
        }
    }
    if ready.is_empty() {
        let any = !fallback.is_empty();
        (fallback.into_iter().collect(), any)
    } else {
        (ready.into_iter().collect(), true)
    }
}

/// Renders the full rule set for `services` and `slices`.
pub fn render(services: &[Service], slices: &[EndpointSlice], opts: &Options) -> Rendered {
    // Slices by (namespace, service name).
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        let labels = s.metadata.labels.as_ref();
        let Some(svc) = labels.and_then(|l| l.get("kubernetes.io/service-name")) else {
            continue;
        };
        let ns = s.metadata.namespace.clone().unwrap_or_default();
        by_service.entry((ns, svc.clone())).or_default().push(s);
    }
    let mut services: Vec<&Service> = services.iter().collect();
    services.sort_by_key(|s| {
        (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        )
    });

    let mut nat_chains: Vec<String> = Vec::new();
    let mut nat_rules = String::new();
    let mut filter_rules = String::new();
    let mut nodeport_jump = false;

    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let svc_type = spec.type_.as_deref().unwrap_or("ClusterIP");
        if svc_type == "ExternalName" {
            continue;
        }
        let Some(cluster_ip) = spec.cluster_ip.as_deref() else {
            continue;
        };
        if cluster_ip.is_empty() || cluster_ip == "None" || cluster_ip.contains(':') {
            continue;
        }
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS)
        });
        let empty = Vec::new();
        let svc_slices = by_service
            .get(&(ns.clone(), name.clone()))
            .unwrap_or(&empty);
        for port in spec.ports.iter().flatten() {
            let port_name = port.name.clone().unwrap_or_default();
            let protocol = port.protocol.as_deref().unwrap_or("TCP").to_lowercase();
            let spn = if port_name.is_empty() {
                format!("{ns}/{name}")
            } else {
                format!("{ns}/{name}:{port_name}")
            };
            let node_port = port
                .node_port
                .filter(|_| svc_type == "NodePort" || svc_type == "LoadBalancer");
            let (eps, has) = endpoints_for(svc_slices, &port_name, &protocol);
            let proto = format!("-m {protocol} -p {protocol}");
            let dst = format!("-d {cluster_ip} --dport {}", port.port);
            if !has {
                let c = comment(&format!("{spn} has no endpoints"));
                let _ = writeln!(filter_rules, "-A KUBE-SERVICES {c} {proto} {dst} -j REJECT");
                if let Some(np) = node_port {
                    let _ = writeln!(
                        filter_rules,
                        "-A KUBE-EXTERNAL-SERVICES {c} -m addrtype --dst-type LOCAL {proto} --dport {np} -j REJECT"
                    );
                }
                continue;
            }
            let svc_chain = service_chain(&spn, &protocol);
            nat_chains.push(svc_chain.clone());
            let cip_comment = comment(&format!("{spn} cluster IP"));
            let _ = writeln!(
                nat_rules,
                "-A KUBE-SERVICES {cip_comment} {proto} {dst} -j {svc_chain}"
            );
            if let Some(np) = node_port {
                nodeport_jump = true;
                let ext = external_chain(&spn, &protocol);
                nat_chains.push(ext.clone());
                let _ = writeln!(
                    nat_rules,
                    "-A KUBE-NODEPORTS {} {proto} --dport {np} -j {ext}",
                    comment(&spn)
                );
                let _ = writeln!(
                    nat_rules,
                    "-A {ext} {} -j KUBE-MARK-MASQ",
                    comment(&format!(
                        "masquerade traffic for {spn} external destinations"
                    ))
                );
                let _ = writeln!(nat_rules, "-A {ext} -j {svc_chain}");
            }
            if let Some(cidr) = &opts.cluster_cidr {
                let _ = writeln!(
                    nat_rules,
                    "-A {svc_chain} {cip_comment} {proto} {dst} ! -s {cidr} -j KUBE-MARK-MASQ"
                );
            }
            let seps: Vec<String> = eps
                .iter()
                .map(|(_, ep)| endpoint_chain(&spn, &protocol, ep))
                .collect();
            if let Some(seconds) = affinity {
                for ((_, ep), sep) in eps.iter().zip(&seps) {
                    let _ = writeln!(
                        nat_rules,
                        "-A {svc_chain} {} -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}",
                        comment(&format!("{spn} -> {ep}"))
                    );
                }
            }
            let n = eps.len();
            for (i, ((_, ep), sep)) in eps.iter().zip(&seps).enumerate() {
                let c = comment(&format!("{spn} -> {ep}"));
                if i + 1 < n {
                    let p = 1.0 / (n - i) as f64;
                    let _ = writeln!(
                        nat_rules,
                        "-A {svc_chain} {c} -m statistic --mode random --probability {p:.10} -j {sep}"
                    );
                } else {
                    let _ = writeln!(nat_rules, "-A {svc_chain} {c} -j {sep}");
                }
            }
            for ((ip, ep), sep) in eps.iter().zip(&seps) {
                nat_chains.push(sep.clone());
                let c = comment(&spn);
                let _ = writeln!(nat_rules, "-A {sep} {c} -s {ip} -j KUBE-MARK-MASQ");
                let recent = if affinity.is_some() {
                    format!(" -m recent --name {sep} --set")
                } else {
                    String::new()
                };
                let _ = writeln!(
                    nat_rules,
                    "-A {sep} {c}{recent} {proto} -j DNAT --to-destination {ep}"
                );
            }
        }
    }
    if nodeport_jump {
        let _ = writeln!(
            nat_rules,
            "-A KUBE-SERVICES {} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
            comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
        );
    }

    let mut nat = String::from("*nat\n");
    for c in NAT_BASE_CHAINS {
        let _ = writeln!(nat, ":{c} - [0:0]");
    }
    let mut seen = BTreeSet::new();
    for c in &nat_chains {
        if seen.insert(c.clone()) {
            let _ = writeln!(nat, ":{c} - [0:0]");
        }
    }
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    let _ = writeln!(nat, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    let _ = writeln!(
        nat,
        "-A KUBE-POSTROUTING {} -j MASQUERADE --random-fully",
        comment("kubernetes service traffic requiring SNAT")
    );
    let _ = writeln!(nat, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
    nat.push_str(&nat_rules);
    nat.push_str("COMMIT\n");

    let mut filter = String::from("*filter\n");
    for c in FILTER_CHAINS {
        let _ = writeln!(filter, ":{c} - [0:0]");
    }
    filter.push_str(&filter_rules);
    filter.push_str("COMMIT\n");

    Rendered {
        nat,
        filter,
        nat_chains: seen,
    }
}

/// The nat table text that also deletes `stale` chains (declared, which flushes them,
/// then `-X` after every rule that could jump to them is gone).
pub fn nat_with_stale(rendered: &Rendered, stale: &[String]) -> String {
    let mut text = String::new();
    let mut lines = rendered.nat.lines();
    // Declarations come first: keep them, then declare the stale chains, then the rules.
    let mut rest = Vec::new();
    for l in lines.by_ref() {
        if l.starts_with('*') || l.starts_with(':') {
            text.push_str(l);
            text.push('\n');
        } else if l != "COMMIT" {
            rest.push(l);
        }
    }
    for c in stale {
        let _ = writeln!(text, ":{c} - [0:0]");
    }
    for l in rest {
        text.push_str(l);
        text.push('\n');
    }
    for c in stale {
        let _ = writeln!(text, "-X {c}");
    }
    text.push_str("COMMIT\n");
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn service(v: serde_json::Value) -> Service {
        svc(v)
    }

    fn slice(
        ns: &str,
        svc: &str,
        ports: serde_json::Value,
        eps: serde_json::Value,
    ) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": format!("{svc}-abc"),
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": ports, "endpoints": eps,
        }))
        .unwrap()
    }

    fn ep(ip: &str, ready: bool, serving: bool, terminating: bool) -> serde_json::Value {
        json!({"addresses": [ip], "conditions":
               {"ready": ready, "serving": serving, "terminating": terminating}})
    }

    fn cluster_ip(name: &str, ip: &str) -> Service {
        svc(json!({"metadata": {"namespace": "ns1", "name": name},
                   "spec": {"clusterIP": ip, "ports": [{"name": "p80", "port": 80, "protocol": "TCP"}]}}))
    }

    const NAT_HEAD: &str = "*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-MARK-MASQ - [0:0]\n";
    const NAT_MASQ: &str = "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n";
    const FILTER_EMPTY: &str =
        "*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\nCOMMIT\n";

    #[test]
    fn chain_names_match_upstream() {
        assert_eq!(
            service_chain("default/kubernetes:https", "tcp"),
            "KUBE-SVC-NPX46M4PTMTKRN6Y"
        );
        assert_eq!(
            service_chain("ns1/svc1:p80", "tcp"),
            "KUBE-SVC-XPGD46QRK7WJZT7O"
        );
        assert_eq!(
            endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80"),
            "KUBE-SEP-SXIVWICOYRO3J4NJ"
        );
    }

    #[test]
    fn three_endpoints_split_with_probabilities() {
        let s = cluster_ip("svc1", "172.30.0.41");
        let sl = slice(
            "ns1",
            "svc1",
            json!([{"name": "p80", "port": 80, "protocol": "TCP"}]),
            json!([
                ep("10.180.0.1", true, true, false),
                ep("10.180.0.2", true, true, false),
                ep("10.180.0.3", true, true, false),
                // not ready: left out while ready ones exist
                ep("10.180.0.4", false, true, true),
                ep("10.180.0.5", false, false, false),
            ]),
        );
        let r = render(
            &[s],
            &[sl],
            &Options {
                cluster_cidr: Some("10.0.0.0/8".into()),
            },
        );
        let svc = service_chain("ns1/svc1:p80", "tcp");
        let sep: Vec<String> = (1..=3)
            .map(|i| endpoint_chain("ns1/svc1:p80", "tcp", &format!("10.180.0.{i}:80")))
            .collect();
        let mut want = String::from(NAT_HEAD);
        want += &format!(":{svc} - [0:0]\n");
        for c in &sep {
            want += &format!(":{c} - [0:0]\n");
        }
        want += NAT_MASQ;
        want += &format!("-A KUBE-SERVICES -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j {svc}\n");
        want += &format!("-A {svc} -m comment --comment \"ns1/svc1:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ\n");
        want += &format!("-A {svc} -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -m statistic --mode random --probability 0.3333333333 -j {}\n", sep[0]);
        want += &format!("-A {svc} -m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:80\" -m statistic --mode random --probability 0.5000000000 -j {}\n", sep[1]);
        want += &format!(
            "-A {svc} -m comment --comment \"ns1/svc1:p80 -> 10.180.0.3:80\" -j {}\n",
            sep[2]
        );
        for (i, c) in sep.iter().enumerate() {
            let ip = format!("10.180.0.{}", i + 1);
            want +=
                &format!("-A {c} -m comment --comment ns1/svc1:p80 -s {ip} -j KUBE-MARK-MASQ\n");
            want += &format!("-A {c} -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination {ip}:80\n");
        }
        want += "COMMIT\n";
        assert_eq!(r.nat, want);
        assert_eq!(r.filter, FILTER_EMPTY);
        assert_eq!(r.nat_chains.len(), 4);
    }

    #[test]
    fn terminating_serving_endpoints_only_when_none_ready() {
        let s = cluster_ip("svc1", "172.30.0.41");
        let sl = slice(
            "ns1",
            "svc1",
            json!([{"name": "p80", "port": 80}]),
            json!([
                ep("10.180.0.4", false, true, true),
                ep("10.180.0.5", false, false, true),
            ]),
        );
        let r = render(&[s], &[sl], &Options::default());
        assert!(
            r.nat.contains("--to-destination 10.180.0.4:80\n"),
            "{}",
            r.nat
        );
        assert!(!r.nat.contains("10.180.0.5"), "{}", r.nat);
        assert_eq!(r.filter, FILTER_EMPTY);
    }

    #[test]
    fn nodeport_jumps_through_ext_chain() {
        let s = svc(json!({"metadata": {"namespace": "ns2", "name": "svc2"},
            "spec": {"type": "NodePort", "clusterIP": "172.30.0.42",
                     "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3001}]}}));
        let sl = slice(
            "ns2",
            "svc2",
            json!([{"name": "p80", "port": 8080}]),
            json!([ep("10.180.0.2", true, true, false)]),
        );
        let r = render(&[s], &[sl], &Options::default());
        let svc = service_chain("ns2/svc2:p80", "tcp");
        let ext = external_chain("ns2/svc2:p80", "tcp");
        let sep = endpoint_chain("ns2/svc2:p80", "tcp", "10.180.0.2:8080");
        let mut want = String::from(NAT_HEAD);
        want += &format!(":{svc} - [0:0]\n:{ext} - [0:0]\n:{sep} - [0:0]\n");
        want += NAT_MASQ;
        want += &format!("-A KUBE-SERVICES -m comment --comment \"ns2/svc2:p80 cluster IP\" -m tcp -p tcp -d 172.30.0.42 --dport 80 -j {svc}\n");
        want += &format!("-A KUBE-NODEPORTS -m comment --comment ns2/svc2:p80 -m tcp -p tcp --dport 3001 -j {ext}\n");
        want += &format!("-A {ext} -m comment --comment \"masquerade traffic for ns2/svc2:p80 external destinations\" -j KUBE-MARK-MASQ\n");
        want += &format!("-A {ext} -j {svc}\n");
        want += &format!(
            "-A {svc} -m comment --comment \"ns2/svc2:p80 -> 10.180.0.2:8080\" -j {sep}\n"
        );
        want += &format!(
            "-A {sep} -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ\n"
        );
        want += &format!("-A {sep} -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:8080\n");
        want += "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";
        want += "COMMIT\n";
        assert_eq!(r.nat, want);
    }

    #[test]
    fn client_ip_affinity_uses_recent() {
        let s = svc(json!({"metadata": {"namespace": "ns1", "name": "svc1"},
            "spec": {"clusterIP": "172.30.0.41", "sessionAffinity": "ClientIP",
                     "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                     "ports": [{"name": "p80", "port": 80}]}}));
        let sl = slice(
            "ns1",
            "svc1",
            json!([{"name": "p80", "port": 80}]),
            json!([
                ep("10.180.0.1", true, true, false),
                ep("10.180.0.2", true, true, false)
            ]),
        );
        let r = render(&[s], &[sl], &Options::default());
        let svc = service_chain("ns1/svc1:p80", "tcp");
        let s1 = endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.1:80");
        let s2 = endpoint_chain("ns1/svc1:p80", "tcp", "10.180.0.2:80");
        let want = format!(
            "-A {svc} -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -m recent --name {s1} --rcheck --seconds 600 --reap -j {s1}\n\
             -A {svc} -m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:80\" -m recent --name {s2} --rcheck --seconds 600 --reap -j {s2}\n\
             -A {svc} -m comment --comment \"ns1/svc1:p80 -> 10.180.0.1:80\" -m statistic --mode random --probability 0.5000000000 -j {s1}\n\
             -A {svc} -m comment --comment \"ns1/svc1:p80 -> 10.180.0.2:80\" -j {s2}\n\
             -A {s1} -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ\n\
             -A {s1} -m comment --comment ns1/svc1:p80 -m recent --name {s1} --set -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80\n"
        );
        assert!(r.nat.contains(&want), "{}", r.nat);
        // Default timeout is upstream's 10800 s.
        let s = service(json!({"metadata": {"namespace": "ns1", "name": "svc1"},
            "spec": {"clusterIP": "172.30.0.41", "sessionAffinity": "ClientIP", "ports": [{"name": "p80", "port": 80}]}}));
        let sl = slice(
            "ns1",
            "svc1",
            json!([{"name": "p80", "port": 80}]),
            json!([ep("10.180.0.1", true, true, false)]),
        );
        assert!(render(&[s], &[sl], &Options::default())
            .nat
            .contains("--rcheck --seconds 10800 --reap"));
    }

    #[test]
    fn no_endpoints_rejects_in_filter_table() {
        let s = svc(json!({"metadata": {"namespace": "ns3", "name": "svc3"},
            "spec": {"type": "NodePort", "clusterIP": "172.30.0.43",
                     "ports": [{"name": "p80", "port": 80, "protocol": "TCP", "nodePort": 3003}]}}));
        // A slice whose only endpoint is not ready (and not terminating) counts as none.
        let sl = slice(
            "ns3",
            "svc3",
            json!([{"name": "p80", "port": 80}]),
            json!([ep("10.180.0.9", false, false, false)]),
        );
        let r = render(&[s], &[sl], &Options::default());
        assert_eq!(r.filter, "*filter\n:KUBE-SERVICES - [0:0]\n:KUBE-EXTERNAL-SERVICES - [0:0]\n\
            -A KUBE-SERVICES -m comment --comment \"ns3/svc3:p80 has no endpoints\" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j REJECT\n\
            -A KUBE-EXTERNAL-SERVICES -m comment --comment \"ns3/svc3:p80 has no endpoints\" -m addrtype --dst-type LOCAL -m tcp -p tcp --dport 3003 -j REJECT\n\
            COMMIT\n");
        assert_eq!(r.nat, format!("{NAT_HEAD}{NAT_MASQ}COMMIT\n"));
        assert!(r.nat_chains.is_empty());
    }

    #[test]
    fn headless_and_external_name_get_nothing() {
        let headless = cluster_ip("headless", "None");
        let ext = svc(json!({"metadata": {"namespace": "ns1", "name": "ext"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}));
        let sls = [slice(
            "ns1",
            "headless",
            json!([{"name": "p80", "port": 80}]),
            json!([ep("10.180.0.1", true, true, false)]),
        )];
        let r = render(&[headless, ext], &sls, &Options::default());
        assert_eq!(r.nat, format!("{NAT_HEAD}{NAT_MASQ}COMMIT\n"));
        assert_eq!(r.filter, FILTER_EMPTY);
    }

    #[test]
    fn named_target_port_uses_slice_port_number() {
        // targetPort "http" resolves per pod; the EndpointSlice carries the number under the
        // service port's name, and other-named slice ports are ignored.
        let s = svc(json!({"metadata": {"namespace": "ns1", "name": "web"},
            "spec": {"clusterIP": "172.30.0.50", "ports": [
                {"name": "web", "port": 80, "targetPort": "http"},
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353}]}}));
        let sl = slice(
            "ns1",
            "web",
            json!([
            {"name": "web", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 5353, "protocol": "UDP"}]),
            json!([ep("10.180.0.7", true, true, false)]),
        );
        let r = render(&[s], &[sl], &Options::default());
        assert!(r.nat.contains(&format!(
            "-A {} -m comment --comment ns1/web:web -m tcp -p tcp -j DNAT --to-destination 10.180.0.7:8080\n",
            endpoint_chain("ns1/web:web", "tcp", "10.180.0.7:8080")
        )), "{}", r.nat);
        assert!(r.nat.contains(&format!(
            "-A {} -m comment --comment ns1/web:dns -m udp -p udp -j DNAT --to-destination 10.180.0.7:5353\n",
            endpoint_chain("ns1/web:dns", "udp", "10.180.0.7:5353")
        )), "{}", r.nat);
        assert!(r
            .nat
            .contains("-m udp -p udp -d 172.30.0.50 --dport 53 -j KUBE-SVC-"));
    }

    #[test]
    fn stale_chains_are_flushed_then_deleted() {
        let r = render(&[], &[], &Options::default());
        let text = nat_with_stale(&r, &["KUBE-SVC-OLD".into(), "KUBE-SEP-OLD".into()]);
        assert_eq!(text, format!(
            "{NAT_HEAD}:KUBE-SVC-OLD - [0:0]\n:KUBE-SEP-OLD - [0:0]\n{NAT_MASQ}-X KUBE-SVC-OLD\n-X KUBE-SEP-OLD\nCOMMIT\n"
        ));
    }
}
