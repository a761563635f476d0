//! The cluster zone: every name under `--cluster-domain` that Services and EndpointSlices
//! define, built in one pass and looked up without I/O. Names follow the Kubernetes DNS
//! specification (kubernetes/dns `docs/specification.md`) as CoreDNS's kubernetes plugin
//! answers them.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What a name under the cluster domain holds.
#[derive(Debug, Default, Clone, PartialEq)]
struct Node {
    addrs: Vec<IpAddr>,
    cname: Option<String>,
    srv: Vec<Srv>,
}

#[derive(Debug, Clone, PartialEq)]
struct Srv {
    port: u16,
    weight: u16,
    target: String,
}

/// An answer from the zone.
// Built once per query and consumed at once: boxing the large variant would only add an
// allocation to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The name is ours: a response code, answer records and additional records. An
    /// empty answer (NODATA) or NXDOMAIN carries the zone's SOA in the authority section.
    Authoritative {
        code: ResponseCode,
        answers: Vec<Record>,
        additionals: Vec<Record>,
        soa: Option<Record>,
        /// The target of a CNAME answer, when it lies outside the cluster zone (the
        /// server resolves it upstream).
        external_cname: Option<Name>,
    },
    /// Not a cluster name: the server forwards it.
    Forward,
}

/// The cluster zone at one moment.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, no trailing dot.
    domain: String,
    ttl: u32,
    serial: u32,
    names: HashMap<String, Node>,
    reverse: HashMap<IpAddr, Vec<String>>,
}

impl Zone {
    /// Builds the zone of `domain` from Services and their EndpointSlices. `dns_ip` is the
    /// address of the cluster DNS Service, published as the zone's name server.
    pub fn build(
        domain: &str,
        ttl: u32,
        serial: u32,
        dns_ip: Option<IpAddr>,
        services: &[&Service],
        slices: &[&EndpointSlice],
    ) -> Zone {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut z = Zone {
            names: HashMap::new(),
            reverse: HashMap::new(),
            domain,
            ttl,
            serial,
        };
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let ns = s.metadata.namespace.as_deref().unwrap_or_default();
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                by_service.entry((ns, svc.as_str())).or_default().push(s);
            }
        }
        for svc in services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let slices = by_service
                .get(&(ns, name))
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            z.add_service(svc, ns, name, slices);
        }
        let ns_name = format!("ns.dns.{}", z.domain);
        let apex = z.domain.clone();
        z.names.entry(apex).or_default();
        if let Some(ip) = dns_ip {
            z.names.entry(ns_name).or_default().addrs.push(ip);
        }
        for fixed in ["svc", "pod"] {
            let n = format!("{fixed}.{}", z.domain);
            z.names.entry(n).or_default();
        }
        z.add_empty_non_terminals();
        z
    }

    fn add_service(&mut self, svc: &Service, ns: &str, name: &str, slices: &[&EndpointSlice]) {
        let Some(spec) = &svc.spec else { return };
        let base = format!("{}.{}.svc.{}", name, ns, self.domain).to_ascii_lowercase();
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                let target = target.trim_end_matches('.').to_ascii_lowercase();
                self.names.entry(base).or_default().cname = Some(target);
            }
            return;
        }
        let ips: Vec<&str> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        let headless = ips.contains(&"None");
        if !headless {
            let addrs: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
            if addrs.is_empty() {
                return;
            }
            for ip in &addrs {
                self.reverse.entry(*ip).or_default().push(base.clone());
            }
            self.names.entry(base.clone()).or_default().addrs = addrs;
            for p in spec.ports.iter().flatten() {
                let Some(pname) = p.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let proto = p.protocol.as_deref().unwrap_or("TCP");
                let Ok(port) = u16::try_from(p.port) else {
                    continue;
                };
                let srv_name = srv_owner(pname, proto, &base);
                self.names.entry(srv_name).or_default().srv.push(Srv {
                    port,
                    weight: 100,
                    target: base.clone(),
                });
            }
            return;
        }
        // Headless: the ready endpoints (all of them with publishNotReadyAddresses).
        let all = spec.publish_not_ready_addresses == Some(true);
        self.names.entry(base.clone()).or_default();
        let mut srv: HashMap<String, Vec<(u16, String)>> = HashMap::new();
        for slice in slices {
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !all {
                    continue;
                }
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<IpAddr>() else {
                        continue;
                    };
                    let label = ep
                        .hostname
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(str::to_ascii_lowercase)
                        .unwrap_or_else(|| dashed(ip));
                    let ep_name = format!("{label}.{base}");
                    push_unique(&mut self.names.entry(base.clone()).or_default().addrs, ip);
                    push_unique(
                        &mut self.names.entry(ep_name.clone()).or_default().addrs,
                        ip,
                    );
                    let rev = self.reverse.entry(ip).or_default();
                    if !rev.contains(&ep_name) {
                        rev.push(ep_name.clone());
                    }
                    for p in slice.ports.iter().flatten() {
                        let (Some(pname), Some(port)) = (
                            p.name.as_deref().filter(|n| !n.is_empty()),
                            p.port.and_then(|p| u16::try_from(p).ok()),
                        ) else {
                            continue;
                        };
                        let proto = p.protocol.as_deref().unwrap_or("TCP");
                        let targets = srv.entry(srv_owner(pname, proto, &base)).or_default();
                        if !targets.contains(&(port, ep_name.clone())) {
                            targets.push((port, ep_name.clone()));
                        }
                    }
                }
            }
        }
        for (owner, targets) in srv {
            let weight = (100 / targets.len()).max(1) as u16;
            let node = self.names.entry(owner).or_default();
            node.srv
                .extend(targets.into_iter().map(|(port, target)| Srv {
                    port,
                    weight,
                    target,
                }));
        }
    }

    /// Every ancestor of a name down to the apex exists too (it answers NODATA, not NXDOMAIN).
    fn add_empty_non_terminals(&mut self) {
        let suffix = format!(".{}", self.domain);
        let mut parents = Vec::new();
        for name in self.names.keys() {
            let mut rest = name.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if !parent.ends_with(&suffix) || self.names.contains_key(parent) {
                    break;
                }
                parents.push(parent.to_string());
                rest = parent;
            }
        }
        for p in parents {
            self.names.entry(p).or_default();
        }
    }

    /// The cluster domain, lowercase without the trailing dot.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// How many names the zone holds.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the zone holds no name (never: the apex always exists).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Answers a query for `qname` of type `qtype`.
    pub fn answer(&self, qname: &Name, qtype: RecordType) -> Answer {
        let key = qname.to_ascii().to_ascii_lowercase();
        let key = key.trim_end_matches('.');
        if let Some(ip) = parse_reverse(key) {
            return match self.reverse.get(&ip) {
                Some(names) if qtype == RecordType::PTR || qtype == RecordType::ANY => {
                    let answers = names
                        .iter()
                        .filter_map(|n| fqdn(n))
                        .map(|n| Record::from_rdata(qname.clone(), self.ttl, RData::PTR(PTR(n))))
                        .collect();
                    self.authoritative(ResponseCode::NoError, answers, Vec::new())
                }
                Some(_) => self.authoritative(ResponseCode::NoError, Vec::new(), Vec::new()),
                None => Answer::Forward,
            };
        }
        let in_zone = key == self.domain
            || (key.len() > self.domain.len()
                && key.ends_with(self.domain.as_str())
                && key.as_bytes()[key.len() - self.domain.len() - 1] == b'.');
        if !in_zone {
            return Answer::Forward;
        }
        let Some(node) = self.names.get(key) else {
            return match self.pod_record(key) {
                Some(ip) => {
                    let answers = self.address_records(qname, &[ip], qtype);
                    self.authoritative(ResponseCode::NoError, answers, Vec::new())
                }
                None => self.authoritative(ResponseCode::NXDomain, Vec::new(), Vec::new()),
            };
        };
        if let Some(target) = &node.cname {
            let Some(t) = fqdn(target) else {
                return self.authoritative(ResponseCode::ServFail, Vec::new(), Vec::new());
            };
            let answers = vec![Record::from_rdata(
                qname.clone(),
                self.ttl,
                RData::CNAME(CNAME(t.clone())),
            )];
            let external = qtype != RecordType::CNAME;
            return Answer::Authoritative {
                code: ResponseCode::NoError,
                answers,
                additionals: Vec::new(),
                soa: None,
                external_cname: external.then_some(t),
            };
        }
        let mut answers = self.address_records(qname, &node.addrs, qtype);
        let mut additionals = Vec::new();
        if matches!(qtype, RecordType::SRV | RecordType::ANY) {
            for s in &node.srv {
                let Some(target) = fqdn(&s.target) else {
                    continue;
                };
                answers.push(Record::from_rdata(
                    qname.clone(),
                    self.ttl,
                    RData::SRV(SRV::new(0, s.weight, s.port, target.clone())),
                ));
                if let Some(t) = self.names.get(&s.target) {
                    for r in self.address_records(&target, &t.addrs, RecordType::ANY) {
                        if !additionals.contains(&r) {
                            additionals.push(r);
                        }
                    }
                }
            }
        }
        if key == self.domain {
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                answers.push(self.soa_record());
            }
            if matches!(qtype, RecordType::NS | RecordType::ANY) {
                if let Some(ns) = fqdn(&format!("ns.dns.{}", self.domain)) {
                    answers.push(Record::from_rdata(
                        qname.clone(),
                        self.ttl,
                        RData::NS(NS(ns)),
                    ));
                }
            }
        }
        self.authoritative(ResponseCode::NoError, answers, additionals)
    }

    fn authoritative(
        &self,
        code: ResponseCode,
        answers: Vec<Record>,
        additionals: Vec<Record>,
    ) -> Answer {
        let soa = answers.is_empty().then(|| self.soa_record());
        Answer::Authoritative {
            code,
            answers,
            additionals,
            soa,
            external_cname: None,
        }
    }

    fn address_records(&self, owner: &Name, addrs: &[IpAddr], qtype: RecordType) -> Vec<Record> {
        addrs
            .iter()
            .filter_map(|ip| match (ip, qtype) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(*v4))),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .map(|rd| Record::from_rdata(owner.clone(), self.ttl, rd))
            .collect()
    }

    /// The zone's SOA record, as CoreDNS shapes it.
    pub fn soa_record(&self) -> Record {
        let apex = fqdn(&self.domain).unwrap_or_else(Name::root);
        let mname = fqdn(&format!("ns.dns.{}", self.domain)).unwrap_or_else(Name::root);
        let rname = fqdn(&format!("hostmaster.{}", self.domain)).unwrap_or_else(Name::root);
        Record::from_rdata(
            apex,
            self.ttl,
            RData::SOA(SOA::new(
                mname,
                rname,
                self.serial,
                7200,
                1800,
                86400,
                self.ttl,
            )),
        )
    }

    /// `a-b-c-d.<ns>.pod.<domain>`: the address the name spells (CoreDNS `pods insecure`).
    fn pod_record(&self, key: &str) -> Option<IpAddr> {
        let rest = key.strip_suffix(&format!(".pod.{}", self.domain))?;
        let (label, ns) = rest.split_once('.')?;
        if ns.is_empty() || ns.contains('.') {
            return None;
        }
        undashed(label)
    }
}

fn srv_owner(port_name: &str, proto: &str, base: &str) -> String {
    format!(
        "_{}._{}.{}",
        port_name.to_ascii_lowercase(),
        proto.to_ascii_lowercase(),
        base
    )
}

fn push_unique(v: &mut Vec<IpAddr>, ip: IpAddr) {
    if !v.contains(&ip) {
        v.push(ip);
    }
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

/// `10.244.1.5` → `10-244-1-5`; `fd00::1` → `fd00--1`.
pub fn dashed(ip: IpAddr) -> String {
    ip.to_string().replace(['.', ':'], "-")
}

/// The inverse of [`dashed`].
fn undashed(label: &str) -> Option<IpAddr> {
    if label.matches('-').count() == 3 && !label.contains("--") {
        if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
            return Some(IpAddr::V4(v4));
        }
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The address a full `in-addr.arpa` / `ip6.arpa` name stands for.
fn parse_reverse(key: &str) -> Option<IpAddr> {
    if let Some(rest) = key.strip_suffix(".in-addr.arpa") {
        let mut octets = rest
            .split('.')
            .map(|o| o.parse::<u8>().ok())
            .collect::<Option<Vec<u8>>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]));
    }
    let rest = key.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, n) in nibbles.iter().rev().enumerate() {
        let v = u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1)?;
        bytes[i / 2] |= if i % 2 == 0 { v << 4 } else { v };
    }
    Some(IpAddr::from(bytes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }
    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }
    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }
    fn zone(services: &[Service], slices: &[EndpointSlice]) -> Zone {
        let s: Vec<&Service> = services.iter().collect();
        let e: Vec<&EndpointSlice> = slices.iter().collect();
        Zone::build(
            "cluster.local",
            5,
            1,
            Some("10.96.0.10".parse().unwrap()),
            &s,
            &e,
        )
    }
    fn rdata(a: &Answer) -> (ResponseCode, Vec<String>, Vec<String>, bool) {
        match a {
            Answer::Authoritative {
                code,
                answers,
                additionals,
                soa,
                ..
            } => (
                *code,
                answers.iter().map(|r| r.data.to_string()).collect(),
                additionals.iter().map(|r| r.data.to_string()).collect(),
                soa.is_some(),
            ),
            Answer::Forward => panic!("forwarded"),
        }
    }

    fn fixtures() -> Zone {
        zone(
            &[
                svc(json!({"metadata": {"name": "web", "namespace": "default"},
                    "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}})),
                svc(json!({"metadata": {"name": "db", "namespace": "prod"},
                    "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}})),
                svc(json!({"metadata": {"name": "ext", "namespace": "default"},
                    "spec": {"type": "ExternalName", "externalName": "example.com"}})),
                svc(json!({"metadata": {"name": "v6", "namespace": "default"},
                    "spec": {"clusterIP": "fd00::10", "clusterIPs": ["fd00::10"]}})),
            ],
            &[slice(json!({
            "metadata": {"name": "db-abc", "namespace": "prod",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {}},
                {"addresses": ["10.244.0.7"], "conditions": {"ready": false}}
            ]}))],
        )
    }

    #[test]
    fn cluster_ip_service_a_and_aaaa() {
        let z = fixtures();
        let (code, ans, _, soa) =
            rdata(&z.answer(&name("Web.Default.svc.cluster.local."), RecordType::A));
        assert_eq!(
            (code, ans, soa),
            (ResponseCode::NoError, vec!["10.96.0.20".into()], false)
        );
        // An IPv4 Service has no AAAA: NODATA with the SOA.
        let (code, ans, _, soa) =
            rdata(&z.answer(&name("web.default.svc.cluster.local."), RecordType::AAAA));
        assert_eq!((code, ans.len(), soa), (ResponseCode::NoError, 0, true));
        let (_, ans, _, _) =
            rdata(&z.answer(&name("v6.default.svc.cluster.local."), RecordType::AAAA));
        assert_eq!(ans, vec!["fd00::10".to_string()]);
    }

    #[test]
    fn headless_service_lists_ready_endpoints() {
        let z = fixtures();
        let (_, mut ans, _, _) =
            rdata(&z.answer(&name("db.prod.svc.cluster.local."), RecordType::A));
        ans.sort();
        assert_eq!(ans, vec!["10.244.0.5".to_string(), "10.244.0.6".into()]);
        let (_, ans, _, _) =
            rdata(&z.answer(&name("db-0.db.prod.svc.cluster.local."), RecordType::A));
        assert_eq!(ans, vec!["10.244.0.5".to_string()]);
        let (_, ans, _, _) = rdata(&z.answer(
            &name("10-244-0-6.db.prod.svc.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(ans, vec!["10.244.0.6".to_string()]);
        let (code, _, _, soa) = rdata(&z.answer(
            &name("10-244-0-7.db.prod.svc.cluster.local."),
            RecordType::A,
        ));
        assert_eq!((code, soa), (ResponseCode::NXDomain, true));
    }

    #[test]
    fn srv_records_for_named_ports() {
        let z = fixtures();
        let (_, ans, add, _) = rdata(&z.answer(
            &name("_http._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ));
        assert_eq!(
            ans,
            vec!["0 100 80 web.default.svc.cluster.local.".to_string()]
        );
        assert_eq!(add, vec!["10.96.0.20".to_string()]);
        let (_, mut ans, _, _) = rdata(&z.answer(
            &name("_pg._tcp.db.prod.svc.cluster.local."),
            RecordType::SRV,
        ));
        ans.sort();
        assert_eq!(
            ans,
            vec![
                "0 50 5432 10-244-0-6.db.prod.svc.cluster.local.".to_string(),
                "0 50 5432 db-0.db.prod.svc.cluster.local.".into()
            ]
        );
        // The intermediate name exists (NODATA), an unknown port does not.
        let (code, _, _, _) = rdata(&z.answer(
            &name("_tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ));
        assert_eq!(code, ResponseCode::NoError);
        let (code, _, _, _) = rdata(&z.answer(
            &name("_nope._tcp.web.default.svc.cluster.local."),
            RecordType::SRV,
        ));
        assert_eq!(code, ResponseCode::NXDomain);
    }

    #[test]
    fn external_name_is_a_cname() {
        let z = fixtures();
        match z.answer(&name("ext.default.svc.cluster.local."), RecordType::A) {
            Answer::Authoritative {
                answers,
                external_cname,
                ..
            } => {
                assert_eq!(answers[0].data.to_string(), "example.com.");
                assert_eq!(external_cname, Some(name("example.com.")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pod_records() {
        let z = fixtures();
        let (_, ans, _, _) = rdata(&z.answer(
            &name("10-244-1-9.default.pod.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(ans, vec!["10.244.1.9".to_string()]);
        let (_, ans, _, _) = rdata(&z.answer(
            &name("fd00--9.default.pod.cluster.local."),
            RecordType::AAAA,
        ));
        assert_eq!(ans, vec!["fd00::9".to_string()]);
        let (code, _, _, _) =
            rdata(&z.answer(&name("not-an-ip.default.pod.cluster.local."), RecordType::A));
        assert_eq!(code, ResponseCode::NXDomain);
    }

    #[test]
    fn ptr_records() {
        let z = fixtures();
        let (_, ans, _, _) = rdata(&z.answer(&name("20.0.96.10.in-addr.arpa."), RecordType::PTR));
        assert_eq!(ans, vec!["web.default.svc.cluster.local.".to_string()]);
        let (_, ans, _, _) = rdata(&z.answer(&name("5.0.244.10.in-addr.arpa."), RecordType::PTR));
        assert_eq!(ans, vec!["db-0.db.prod.svc.cluster.local.".to_string()]);
        let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
        let (_, ans, _, _) = rdata(&z.answer(&name(v6), RecordType::PTR));
        assert_eq!(ans, vec!["v6.default.svc.cluster.local.".to_string()]);
        // Unknown addresses are not ours.
        assert_eq!(
            z.answer(&name("1.1.168.192.in-addr.arpa."), RecordType::PTR),
            Answer::Forward
        );
    }

    #[test]
    fn missing_names_are_nxdomain_with_soa_and_others_forward() {
        let z = fixtures();
        let (code, ans, _, soa) =
            rdata(&z.answer(&name("nope.default.svc.cluster.local."), RecordType::A));
        assert_eq!((code, ans.len(), soa), (ResponseCode::NXDomain, 0, true));
        // Search-path expansions of outside names end here too.
        let (code, _, _, _) = rdata(&z.answer(
            &name("example.com.default.svc.cluster.local."),
            RecordType::A,
        ));
        assert_eq!(code, ResponseCode::NXDomain);
        // Namespaces with Services and the fixed subtrees exist.
        for n in [
            "default.svc.cluster.local.",
            "svc.cluster.local.",
            "cluster.local.",
        ] {
            let (code, _, _, soa) = rdata(&z.answer(&name(n), RecordType::A));
            assert_eq!((code, soa), (ResponseCode::NoError, true), "{n}");
        }
        let (_, ans, _, _) = rdata(&z.answer(&name("cluster.local."), RecordType::SOA));
        assert_eq!(
            ans,
            vec!["ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5".to_string()]
        );
        assert_eq!(
            z.answer(&name("example.com."), RecordType::A),
            Answer::Forward
        );
        assert_eq!(
            z.answer(&name("notcluster.local."), RecordType::A),
            Answer::Forward
        );
    }

    #[test]
    fn dashes_round_trip() {
        for ip in ["10.244.0.5", "fd00::1", "2001:db8::a:1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(undashed(&dashed(ip)), Some(ip));
        }
    }
}
