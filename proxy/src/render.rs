//! Pure rendering of Services + EndpointSlices into `iptables-restore` input, following the
//! chain layout of upstream's iptables proxier (KUBE-SERVICES, KUBE-SVC-*, KUBE-SEP-*,
//! KUBE-EXT-*, KUBE-NODEPORTS, KUBE-MARK-MASQ, KUBE-POSTROUTING; filter-table REJECTs).
//!
//! Like upstream, a sync always rewrites the dispatch chains (KUBE-SERVICES, KUBE-NODEPORTS,
//! the filter chains) but only the per-service chains of Services that changed since the last
//! applied sync; a full sync rewrites them all. [`Renderer`] keeps which chains each Service
//! had when last applied, to delete the ones no longer rendered.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt::Write as _;
use std::ops::Range;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{Model, ServiceInfo, ServiceKey, ServicePort, SliceInfo};

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
/// Per-service chains declared in one `iptables-restore` input at most. iptables-nft-restore
/// (1.8.9) spends time quadratic in the chains one input declares (measured in a fresh
/// network namespace: 1,000 chains 17 ms, 8,000 chains 600 ms), so a sync that rewrites more
/// goes in several inputs; see [`Plan::batches`].
pub const MAX_CHAINS_PER_RESTORE: usize = 1000;

/// Bytes of each text buffer kept after a full sync.
pub const KEEP_BUFFER: usize = 256 * 1024;

/// Settings that shape the rendered rules.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Cluster pod CIDR: traffic to a cluster IP from outside it is masqueraded.
    /// None = do not masquerade off-cluster cluster-IP traffic.
    pub cluster_cidr: Option<String>,
}

/// The `iptables-restore` input of a full sync for both tables (see [`render`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    /// `*nat ... COMMIT`
    pub nat: String,
    /// `*filter ... COMMIT`
    pub filter: String,
    /// Every per-service nat chain the input declares.
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

/// Endpoints (`ip`, `ip:port`) of the service port `port`: the ready ones, or when none is
/// ready the serving-and-terminating ones; and whether there are any.
fn endpoints_for(slices: &[&SliceInfo], port: &ServicePort) -> (Vec<(String, String)>, bool) {
    let mut ready = BTreeSet::new();
    let mut fallback = BTreeSet::new();
    for slice in slices {
        let Some(sp) = slice
            .ports
            .iter()
            .find(|p| p.name == port.name && p.protocol == port.protocol)
        else {
            continue;
        };
        for ep in &slice.endpoints {
            let pair = (ep.ip.clone(), format!("{}:{}", ep.ip, sp.port));
            if ep.ready {
                ready.insert(pair);
            } else if ep.serving && ep.terminating {
                fallback.insert(pair);
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

/// What one sync writes: always the dispatch rules and filter table, the per-service chains
/// of the Services being written, and the deletion of stale chains. Its buffers are reused
/// from sync to sync.
#[derive(Debug, Default)]
pub struct Plan {
    /// Whether every Service's chains are written.
    pub full: bool,
    /// Services whose chains are written.
    pub services_written: usize,
    /// `*filter ... COMMIT`.
    filter: String,
    /// Declarations of the per-service chains written.
    svc_decls: String,
    /// Their rules.
    svc_rules: String,
    /// Per written Service: end offsets in `svc_decls` and `svc_rules`, chains declared.
    groups: Vec<(usize, usize, usize)>,
    /// KUBE-SERVICES and KUBE-NODEPORTS rules.
    dispatch: String,
    /// Per-service chains to flush and delete.
    stale: Vec<String>,
}

impl Plan {
    fn clear(&mut self) {
        self.full = false;
        self.services_written = 0;
        self.filter.clear();
        self.svc_decls.clear();
        self.svc_rules.clear();
        self.groups.clear();
        self.dispatch.clear();
        self.stale.clear();
    }

    /// Gives back the memory a full sync's text needed (partial syncs need far less).
    fn shrink(&mut self) {
        for b in [
            &mut self.filter,
            &mut self.svc_decls,
            &mut self.svc_rules,
            &mut self.dispatch,
        ] {
            b.shrink_to(KEEP_BUFFER);
        }
        self.groups.shrink_to(64);
        self.stale.shrink_to(64);
    }

    /// Per-service chains written.
    pub fn chains_written(&self) -> usize {
        self.groups.iter().map(|g| g.2).sum()
    }

    /// Per-service chains deleted.
    pub fn stale(&self) -> &[String] {
        &self.stale
    }

    /// Ranges of written Services to apply as separate inputs of at most `max_chains` chains
    /// (a single Service's chains are never split) before the final input; empty when the
    /// whole sync fits in one input. Each input is atomic and the order keeps every jump
    /// pointing at a chain that exists: new and changed chains first (nothing jumps to a new
    /// chain until the final input writes KUBE-SERVICES), stale ones deleted last.
    pub fn batches(&self, max_chains: usize) -> Vec<Range<usize>> {
        if self.chains_written() <= max_chains {
            return Vec::new();
        }
        let mut out = Vec::new();
        let (mut start, mut n) = (0, 0);
        for (i, g) in self.groups.iter().enumerate() {
            if n > 0 && n + g.2 > max_chains {
                out.push(start..i);
                (start, n) = (i, 0);
            }
            n += g.2;
        }
        if start < self.groups.len() {
            out.push(start..self.groups.len());
        }
        out
    }

    /// Byte ranges in `svc_decls` and `svc_rules` of the written Services `r`.
    fn spans(&self, r: Range<usize>) -> (Range<usize>, Range<usize>) {
        let (d0, r0) = match r.start {
            0 => (0, 0),
            i => (self.groups[i - 1].0, self.groups[i - 1].1),
        };
        let (d1, r1) = match r.end {
            0 => (0, 0),
            i => (self.groups[i - 1].0, self.groups[i - 1].1),
        };
        (d0..d1, r0..r1)
    }

    /// The input that writes the chains of the written Services `r` only (into `buf`).
    pub fn write_batch(&self, r: Range<usize>, buf: &mut String) {
        let (decls, rules) = self.spans(r);
        buf.clear();
        buf.push_str("*nat\n:KUBE-MARK-MASQ - [0:0]\n");
        buf.push_str(&self.svc_decls[decls]);
        let _ = writeln!(buf, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
        buf.push_str(&self.svc_rules[rules]);
        buf.push_str("COMMIT\n");
    }

    /// The final input (into `buf`): filter table, nat dispatch, stale chains deleted, and
    /// with `with_chains` every written Service's chains (the whole sync in one input).
    pub fn write_final(&self, with_chains: bool, buf: &mut String) {
        buf.clear();
        buf.push_str(&self.filter);
        buf.push_str("*nat\n");
        for c in NAT_BASE_CHAINS {
            let _ = writeln!(buf, ":{c} - [0:0]");
        }
        if with_chains {
            buf.push_str(&self.svc_decls);
        }
        for c in &self.stale {
            let _ = writeln!(buf, ":{c} - [0:0]");
        }
        let _ = writeln!(
            buf,
            "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
        );
        let _ = writeln!(buf, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
        let _ = writeln!(
            buf,
            "-A KUBE-POSTROUTING {} -j MASQUERADE --random-fully",
            comment("kubernetes service traffic requiring SNAT")
        );
        let _ = writeln!(buf, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
        buf.push_str(&self.dispatch);
        if with_chains {
            buf.push_str(&self.svc_rules);
        }
        for c in &self.stale {
            let _ = writeln!(buf, "-X {c}");
        }
        buf.push_str("COMMIT\n");
    }

    /// The whole sync as one `iptables-restore` input.
    pub fn text(&self) -> String {
        let mut buf = String::new();
        self.write_final(true, &mut buf);
        buf
    }
}

/// Renders syncs and remembers what was last applied, like upstream's Proxier: which
/// per-service chains each Service had, and whether the next sync must be full.
#[derive(Debug)]
pub struct Renderer {
    opts: Options,
    /// Per-service chains of each Service as last applied.
    applied: BTreeMap<ServiceKey, Vec<String>>,
    /// Changes to `applied` once the current plan is applied.
    pending: Vec<(ServiceKey, Option<Vec<String>>)>,
    need_full: bool,
    plan: Plan,
}

impl Renderer {
    /// A renderer whose first sync is full.
    pub fn new(opts: Options) -> Self {
        Renderer {
            opts,
            applied: BTreeMap::new(),
            pending: Vec::new(),
            need_full: true,
            plan: Plan::default(),
        }
    }

    /// Whether the next sync must be full (the first one, or after a failed one).
    pub fn needs_full(&self) -> bool {
        self.need_full
    }

    /// Renders a sync of `model`: the dispatch for every Service, the chains of the Services
    /// in `changed` (of every Service when `full` or [`Renderer::needs_full`]). Per-service
    /// chains that were applied, or are listed in `existing` (the table's, read on full
    /// syncs), and are no longer rendered are deleted.
    pub fn render(
        &mut self,
        model: &Model,
        changed: &BTreeSet<ServiceKey>,
        full: bool,
        existing: &[String],
    ) -> &Plan {
        let full = full || self.need_full;
        self.plan.clear();
        self.pending.clear();
        self.plan.full = full;
        let mut nodeport_jump = false;
        let mut filter_rules = std::mem::take(&mut self.plan.filter);
        filter_rules.clear();
        for (key, svc) in model.services() {
            let write = full || changed.contains(key) || !self.applied.contains_key(key);
            let slices: Vec<&SliceInfo> = model.slices_of(key).collect();
            let mut chains = Vec::new();
            nodeport_jump |= self.render_service(
                key,
                svc,
                &slices,
                write.then_some(&mut chains),
                &mut filter_rules,
            );
            if write {
                self.plan.services_written += 1;
                self.plan.groups.push((
                    self.plan.svc_decls.len(),
                    self.plan.svc_rules.len(),
                    chains.len(),
                ));
                if !full {
                    if let Some(old) = self.applied.get(key) {
                        let stale = old.iter().filter(|c| !chains.contains(c)).cloned();
                        self.plan.stale.extend(stale);
                    }
                }
                self.pending.push((key.clone(), Some(chains)));
            }
        }
        if nodeport_jump {
            let _ = writeln!(
                self.plan.dispatch,
                "-A KUBE-SERVICES {} -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS",
                comment(
                    "kubernetes service nodeports; NOTE: this must be the last rule in this chain"
                )
            );
        }
        let mut filter = String::with_capacity(filter_rules.len() + 80);
        filter.push_str("*filter\n");
        for c in FILTER_CHAINS {
            let _ = writeln!(filter, ":{c} - [0:0]");
        }
        filter.push_str(&filter_rules);
        filter.push_str("COMMIT\n");
        self.plan.filter = filter;

        // Services gone from the model: all their chains are stale.
        let gone: Vec<&ServiceKey> = if full {
            self.applied.keys().collect()
        } else {
            changed.iter().collect()
        };
        let present: HashSet<&ServiceKey> = self.pending.iter().map(|(k, _)| k).collect();
        let mut deleted = Vec::new();
        for key in gone {
            if !present.contains(key) && self.applied.contains_key(key) {
                deleted.push(key.clone());
            }
        }
        for key in deleted {
            if !full {
                self.plan.stale.extend(self.applied[&key].iter().cloned());
            }
            self.pending.push((key, None));
        }
        if full {
            let active: HashSet<&String> = self
                .pending
                .iter()
                .filter_map(|(_, c)| c.as_ref())
                .flatten()
                .collect();
            let candidates = existing.iter().chain(self.applied.values().flatten());
            let stale: BTreeSet<&String> = candidates
                .filter(|c| NAT_CHAIN_PREFIXES.iter().any(|p| c.starts_with(p)))
                .filter(|c| !active.contains(c))
                .collect();
            self.plan.stale = stale.into_iter().cloned().collect();
        }
        &self.plan
    }

    /// Writes the rules of one Service (its chains into the plan when `chains` is given, which
    /// collects their names); returns whether it has a NodePort with endpoints.
    fn render_service(
        &mut self,
        (ns, name): &ServiceKey,
        svc: &ServiceInfo,
        slices: &[&SliceInfo],
        mut chains: Option<&mut Vec<String>>,
        filter: &mut String,
    ) -> bool {
        let plan = &mut self.plan;
        let mut nodeport_jump = false;
        for port in &svc.ports {
            let protocol = &port.protocol;
            let spn = if port.name.is_empty() {
                format!("{ns}/{name}")
            } else {
                format!("{ns}/{name}:{}", port.name)
            };
            let (eps, has) = endpoints_for(slices, port);
            let proto = format!("-m {protocol} -p {protocol}");
            let dst = format!("-d {} --dport {}", svc.cluster_ip, port.port);
            if !has {
                let c = comment(&format!("{spn} has no endpoints"));
                let _ = writeln!(filter, "-A KUBE-SERVICES {c} {proto} {dst} -j REJECT");
                if let Some(np) = port.node_port {
                    let _ = writeln!(
                        filter,
                        "-A KUBE-EXTERNAL-SERVICES {c} -m addrtype --dst-type LOCAL {proto} --dport {np} -j REJECT"
                    );
                }
                continue;
            }
            let svc_chain = service_chain(&spn, protocol);
            let cip_comment = comment(&format!("{spn} cluster IP"));
            let _ = writeln!(
                plan.dispatch,
                "-A KUBE-SERVICES {cip_comment} {proto} {dst} -j {svc_chain}"
            );
            let ext = port.node_port.map(|np| {
                nodeport_jump = true;
                let ext = external_chain(&spn, protocol);
                let _ = writeln!(
                    plan.dispatch,
                    "-A KUBE-NODEPORTS {} {proto} --dport {np} -j {ext}",
                    comment(&spn)
                );
                ext
            });
            let Some(chains) = chains.as_deref_mut() else {
                continue;
            };
            let rules = &mut plan.svc_rules;
            chains.push(svc_chain.clone());
            if let Some(ext) = ext {
                let _ = writeln!(
                    rules,
                    "-A {ext} {} -j KUBE-MARK-MASQ",
                    comment(&format!(
                        "masquerade traffic for {spn} external destinations"
                    ))
                );
                let _ = writeln!(rules, "-A {ext} -j {svc_chain}");
                chains.push(ext);
            }
            if let Some(cidr) = &self.opts.cluster_cidr {
                let _ = writeln!(
                    rules,
                    "-A {svc_chain} {cip_comment} {proto} {dst} ! -s {cidr} -j KUBE-MARK-MASQ"
                );
            }
            let seps: Vec<String> = eps
                .iter()
                .map(|(_, ep)| endpoint_chain(&spn, protocol, ep))
                .collect();
            if let Some(seconds) = svc.affinity_seconds {
                for ((_, ep), sep) in eps.iter().zip(&seps) {
                    let _ = writeln!(
                        rules,
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
                        rules,
                        "-A {svc_chain} {c} -m statistic --mode random --probability {p:.10} -j {sep}"
                    );
                } else {
                    let _ = writeln!(rules, "-A {svc_chain} {c} -j {sep}");
                }
            }
            let c = comment(&spn);
            let recent = |sep: &str| {
                if svc.affinity_seconds.is_some() {
                    format!(" -m recent --name {sep} --set")
                } else {
                    String::new()
                }
            };
            for ((ip, ep), sep) in eps.iter().zip(seps) {
                let _ = writeln!(rules, "-A {sep} {c} -s {ip} -j KUBE-MARK-MASQ");
                let _ = writeln!(
                    rules,
                    "-A {sep} {c}{} {proto} -j DNAT --to-destination {ep}",
                    recent(&sep)
                );
                chains.push(sep);
            }
        }
        for c in chains.into_iter().flatten() {
            let _ = writeln!(plan.svc_decls, ":{c} - [0:0]");
        }
        nodeport_jump
    }

    /// The last rendered plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Records the last rendered plan as applied.
    pub fn applied(&mut self) {
        if self.plan.full {
            self.plan.shrink();
        }
        for (key, chains) in self.pending.drain(..) {
            match chains {
                Some(c) => self.applied.insert(key, c),
                None => self.applied.remove(&key),
            };
        }
        self.need_full = false;
    }

    /// The last rendered plan failed to apply: the next sync is full.
    pub fn failed(&mut self) {
        self.pending.clear();
        self.need_full = true;
    }
}

/// Renders the full rule set for `services` and `slices` (one input, no stale chains).
pub fn render(services: &[Service], slices: &[EndpointSlice], opts: &Options) -> Rendered {
    let model = Model::from_objects(services, slices);
    let mut r = Renderer::new(opts.clone());
    let text = r.render(&model, &BTreeSet::new(), true, &[]).text();
    let nat_chains = r
        .pending
        .iter()
        .filter_map(|(_, c)| c.as_ref())
        .flatten()
        .cloned()
        .collect();
    let (filter, nat) = text.split_at(text.find("*nat\n").unwrap_or(0));
    Rendered {
        nat: nat.to_string(),
        filter: filter.to_string(),
        nat_chains,
    }
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
        want += "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n";
        want += &format!("-A {ext} -m comment --comment \"masquerade traffic for ns2/svc2:p80 external destinations\" -j KUBE-MARK-MASQ\n");
        want += &format!("-A {ext} -j {svc}\n");
        want += &format!(
            "-A {svc} -m comment --comment \"ns2/svc2:p80 -> 10.180.0.2:8080\" -j {sep}\n"
        );
        want += &format!(
            "-A {sep} -m comment --comment ns2/svc2:p80 -s 10.180.0.2 -j KUBE-MARK-MASQ\n"
        );
        want += &format!("-A {sep} -m comment --comment ns2/svc2:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.2:8080\n");
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

    fn one_endpoint(name: &str, cip: &str, ip: &str) -> (Service, EndpointSlice) {
        let sl = slice(
            "ns1",
            name,
            json!([{"name": "p80", "port": 80}]),
            json!([ep(ip, true, true, false)]),
        );
        (cluster_ip(name, cip), sl)
    }

    /// A model of svc1 (10.180.0.1) and svc2 (10.180.0.2), fully rendered and applied.
    fn applied_two() -> (Model, Renderer) {
        let (s1, e1) = one_endpoint("svc1", "172.30.0.1", "10.180.0.1");
        let (s2, e2) = one_endpoint("svc2", "172.30.0.2", "10.180.0.2");
        let mut model = Model::from_objects(&[s1, s2], &[e1, e2]);
        let mut r = Renderer::new(Options::default());
        let changed = model.take_changed();
        assert!(
            r.render(&model, &changed, false, &[]).full,
            "first sync is full"
        );
        assert_eq!(r.plan().chains_written(), 4);
        r.applied();
        (model, r)
    }

    fn dispatch(name: &str, cip: &str) -> String {
        format!(
            "-A KUBE-SERVICES -m comment --comment \"ns1/{name}:p80 cluster IP\" -m tcp -p tcp -d {cip} --dport 80 -j {}\n",
            service_chain(&format!("ns1/{name}:p80"), "tcp")
        )
    }

    fn chains_of(name: &str, ip: &str) -> (String, String, String) {
        let spn = format!("ns1/{name}:p80");
        let svc = service_chain(&spn, "tcp");
        let sep = endpoint_chain(&spn, "tcp", &format!("{ip}:80"));
        let rules = format!(
            "-A {svc} -m comment --comment \"{spn} -> {ip}:80\" -j {sep}\n\
             -A {sep} -m comment --comment {spn} -s {ip} -j KUBE-MARK-MASQ\n\
             -A {sep} -m comment --comment {spn} -m tcp -p tcp -j DNAT --to-destination {ip}:80\n"
        );
        (svc, sep, rules)
    }

    #[test]
    fn endpoint_change_rewrites_only_its_service() {
        let (mut model, mut r) = applied_two();
        // Nothing changed: only the dispatch is rewritten.
        let changed = model.take_changed();
        let plan = r.render(&model, &changed, false, &[]);
        assert_eq!(plan.services_written, 0);
        assert_eq!(
            plan.text(),
            format!(
                "{FILTER_EMPTY}{NAT_HEAD}{NAT_MASQ}{}{}COMMIT\n",
                dispatch("svc1", "172.30.0.1"),
                dispatch("svc2", "172.30.0.2")
            )
        );
        r.applied();

        // svc2's endpoint moves from 10.180.0.2 to 10.180.0.3.
        let (_, e2) = one_endpoint("svc2", "172.30.0.2", "10.180.0.3");
        model.apply_slice(&e2);
        let changed = model.take_changed();
        assert_eq!(changed.len(), 1);
        let plan = r.render(&model, &changed, false, &[]);
        let (svc2, new_sep, rules) = chains_of("svc2", "10.180.0.3");
        let (_, old_sep, _) = chains_of("svc2", "10.180.0.2");
        assert_eq!(
            plan.text(),
            format!(
                "{FILTER_EMPTY}{NAT_HEAD}:{svc2} - [0:0]\n:{new_sep} - [0:0]\n:{old_sep} - [0:0]\n\
                 {NAT_MASQ}{}{}{rules}-X {old_sep}\nCOMMIT\n",
                dispatch("svc1", "172.30.0.1"),
                dispatch("svc2", "172.30.0.2"),
            )
        );
        assert_eq!(plan.stale(), [old_sep]);
        r.applied();
    }

    #[test]
    fn deleted_service_chains_are_flushed_then_deleted() {
        let (mut model, mut r) = applied_two();
        let (s1, _) = one_endpoint("svc1", "172.30.0.1", "10.180.0.1");
        model.delete_service(&s1);
        let changed = model.take_changed();
        let plan = r.render(&model, &changed, false, &[]);
        let (svc1, sep1, _) = chains_of("svc1", "10.180.0.1");
        assert_eq!(
            plan.text(),
            format!(
                "{FILTER_EMPTY}{NAT_HEAD}:{svc1} - [0:0]\n:{sep1} - [0:0]\n{NAT_MASQ}{}-X {svc1}\n-X {sep1}\nCOMMIT\n",
                dispatch("svc2", "172.30.0.2"),
            )
        );
        r.applied();
        // Once deleted, they are not deleted again.
        let changed = model.take_changed();
        let plan = r.render(&model, &changed, false, &[]);
        assert!(plan.stale().is_empty());
    }

    #[test]
    fn full_sync_deletes_leftover_chains_found_in_the_table() {
        let (model, mut r) = applied_two();
        let (svc1, sep1, _) = chains_of("svc1", "10.180.0.1");
        let existing = [
            svc1.clone(),
            sep1,
            "KUBE-SEP-LEFTOVER".to_string(),
            "KUBE-SVC-LEFTOVER".to_string(),
            "DOCKER-USER".to_string(),
        ];
        let plan = r.render(&model, &BTreeSet::new(), true, &existing);
        assert_eq!(plan.services_written, 2);
        assert_eq!(plan.stale(), ["KUBE-SEP-LEFTOVER", "KUBE-SVC-LEFTOVER"]);
        let text = plan.text();
        assert!(text.contains(":KUBE-SEP-LEFTOVER - [0:0]\n"), "{text}");
        assert!(
            text.ends_with("-X KUBE-SEP-LEFTOVER\n-X KUBE-SVC-LEFTOVER\nCOMMIT\n"),
            "{text}"
        );
        assert!(!text.contains("-X DOCKER"), "{text}");
    }

    #[test]
    fn full_sync_after_partial_ones_equals_a_fresh_render() {
        let opts = Options {
            cluster_cidr: Some("10.244.0.0/16".into()),
        };
        let svc_n = |i: usize| {
            svc(
                json!({"metadata": {"namespace": "ns1", "name": format!("s{i}")},
                "spec": {"type": if i.is_multiple_of(3) { "NodePort" } else { "ClusterIP" },
                         "clusterIP": format!("172.30.1.{i}"),
                         "ports": [{"name": "p80", "port": 80, "nodePort": 30000 + i}]}}),
            )
        };
        let slice_n = |i: usize, ips: &[String]| {
            let eps: Vec<_> = ips.iter().map(|ip| ep(ip, true, true, false)).collect();
            slice(
                "ns1",
                &format!("s{i}"),
                json!([{"name": "p80", "port": 8080}]),
                json!(eps),
            )
        };
        let mut services: BTreeMap<usize, Service> = BTreeMap::new();
        let mut slices: BTreeMap<usize, EndpointSlice> = BTreeMap::new();
        let mut model = Model::default();
        let mut r = Renderer::new(opts.clone());
        for step in 0..40usize {
            let i = step * 7 % 11;
            match step % 5 {
                0 | 1 => {
                    let s = svc_n(i);
                    model.apply_service(&s);
                    services.insert(i, s);
                }
                2 | 3 => {
                    let ips: Vec<String> = (0..(step % 4))
                        .map(|k| format!("10.9.{i}.{}", step + k))
                        .collect();
                    let sl = slice_n(i, &ips);
                    model.apply_slice(&sl);
                    slices.insert(i, sl);
                }
                _ => {
                    if let Some(s) = services.remove(&i) {
                        model.delete_service(&s);
                    }
                    if let Some(sl) = slices.remove(&(i + 1)) {
                        model.delete_slice(&sl);
                    }
                }
            }
            let changed = model.take_changed();
            r.render(&model, &changed, false, &[]);
            r.applied();
        }
        let svcs: Vec<Service> = services.into_values().collect();
        let sls: Vec<EndpointSlice> = slices.into_values().collect();
        let fresh = render(&svcs, &sls, &opts);
        assert!(fresh.nat_chains.len() > 10, "{}", fresh.nat);
        let plan = r.render(&model, &BTreeSet::new(), true, &[]);
        assert!(plan.stale().is_empty(), "{:?}", plan.stale());
        assert_eq!(plan.text(), fresh.text());
    }

    #[test]
    fn large_syncs_split_into_batches_of_whole_services() {
        let (model, mut r) = applied_two();
        let plan = r.render(&model, &BTreeSet::new(), true, &[]);
        // 2 chains per service.
        assert!(plan.batches(4).is_empty());
        assert_eq!(plan.batches(3), [0..1, 1..2]);
        assert_eq!(plan.batches(1), [0..1, 1..2], "a service is never split");
        let (svc1, sep1, rules1) = chains_of("svc1", "10.180.0.1");
        let mut buf = String::new();
        plan.write_batch(0..1, &mut buf);
        assert_eq!(
            buf,
            format!(
                "*nat\n:KUBE-MARK-MASQ - [0:0]\n:{svc1} - [0:0]\n:{sep1} - [0:0]\n\
                 -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n{rules1}COMMIT\n"
            )
        );
        plan.write_final(false, &mut buf);
        assert_eq!(
            buf,
            format!(
                "{FILTER_EMPTY}{NAT_HEAD}{NAT_MASQ}{}{}COMMIT\n",
                dispatch("svc1", "172.30.0.1"),
                dispatch("svc2", "172.30.0.2")
            )
        );
    }

    #[test]
    fn unchanged_updates_mark_nothing() {
        let (mut model, _) = applied_two();
        let (mut s1, mut e1) = one_endpoint("svc1", "172.30.0.1", "10.180.0.1");
        s1.metadata.resource_version = Some("99".into());
        e1.metadata.resource_version = Some("99".into());
        model.apply_service(&s1);
        model.apply_slice(&e1);
        assert!(!model.has_changes());
        // The slice now labelled for svc2: both services change.
        e1.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("kubernetes.io/service-name".into(), "svc2".into());
        model.apply_slice(&e1);
        let changed = model.take_changed();
        assert_eq!(changed.len(), 2, "{changed:?}");
    }
}
