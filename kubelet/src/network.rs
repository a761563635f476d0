//! The node's pod network (upstream's kubenet on Docker): a Docker bridge network on the node's
//! `spec.podCIDR` that every pod sandbox joins, and the host rules that make the bridges of all
//! nodes one flat cluster network:
//!
//! - Docker isolates its bridge networks from each other (DOCKER-ISOLATION chains): a rule in
//!   DOCKER-USER accepts traffic from the cluster CIDR to the cluster CIDR, so pods of several
//!   nodes sharing one Docker Engine reach each other by pod IP.
//! - The bridge is created with Docker's masquerading off; one rule masquerades only what leaves
//!   the cluster CIDR, so pod-to-pod traffic keeps its source address.
//! - Hairpin mode on the bridge ports: with `bridge-nf-call-iptables` a pod's packet to its own
//!   Service is DNATed back out the port it came in on, which a bridge drops without hairpin.
//! - host-gw: every other node's podCIDR is routed via that node's InternalIP when the two
//!   nodes are on different hosts.
//!
//! Without a podCIDR (no node IPAM) pods start on Docker's default bridge, as before.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;
use kube::Api;
use tokio::process::Command;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::labels;

/// Errors setting up the pod network.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid CIDR {0:?}: want a.b.c.d/n")]
    Cidr(String),
    #[error("pod network {name}: {source}")]
    Docker {
        name: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("pod network {name} has subnet {have} with containers attached, but the node's podCIDR is {want}")]
    Mismatch {
        name: String,
        have: String,
        want: String,
    },
    #[error("running {cmd}: {message}")]
    Command { cmd: String, message: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Label on the networks the kubelet creates: the pod CIDR they were made for.
const POD_CIDR_LABEL: &str = "io.minik8s.pod-cidr";
/// Route protocol number marking the host-gw routes the kubelet installs (`ip route ... proto`),
/// so it can find and remove its own routes without touching anyone else's.
const ROUTE_PROTO: &str = "77";

/// An IPv4 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, normalising the address to the network address.
    pub fn parse(s: &str) -> Result<Cidr> {
        let bad = || Error::Cidr(s.to_string());
        let (a, p) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 30 {
            return Err(bad());
        }
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        Ok(Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }

    /// The first host address: the bridge's (gateway's) address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The Docker network name of a node's pod network.
pub fn network_name(node: &str) -> String {
    format!("minik8s-{node}")
}

/// Where a sandbox joins the pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The Docker network (`network_mode` of the sandbox).
    pub network: String,
    /// The Linux bridge behind it.
    pub bridge: String,
}

/// The pod network of one node.
pub struct PodNetwork {
    docker: bollard::Docker,
    node: String,
    cluster: String,
    cluster_cidr: Option<Cidr>,
    pod_cidr: watch::Receiver<Option<String>>,
    wait: Duration,
    ready: tokio::sync::Mutex<Option<(String, Attachment)>>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("node", &self.node)
            .field("cluster_cidr", &self.cluster_cidr)
            .field("pod_cidr", &*self.pod_cidr.borrow())
            .finish()
    }
}

impl PodNetwork {
    /// The pod network of `node`; `pod_cidr` follows the Node's `spec.podCIDR`. A sandbox
    /// waits up to `wait` for a podCIDR before it starts on Docker's default bridge.
    pub fn new(
        docker: bollard::Docker,
        node: &str,
        cluster: &str,
        cluster_cidr: &str,
        pod_cidr: watch::Receiver<Option<String>>,
        wait: Duration,
    ) -> Result<PodNetwork> {
        let cluster_cidr = if cluster_cidr.is_empty() {
            None
        } else {
            Some(Cidr::parse(cluster_cidr)?)
        };
        Ok(PodNetwork {
            docker,
            node: node.to_string(),
            cluster: cluster.to_string(),
            cluster_cidr,
            pod_cidr,
            wait,
            ready: tokio::sync::Mutex::new(None),
        })
    }

    /// The network a new sandbox joins: the node's pod network (created, with its host rules,
    /// when missing), or `None` for Docker's default bridge when the node has no podCIDR.
    pub async fn attachment(&self) -> Result<Option<Attachment>> {
        let mut rx = self.pod_cidr.clone();
        let current = rx.borrow().clone();
        let cidr = match current {
            Some(c) => Some(c),
            None if self.wait.is_zero() => None,
            None => {
                let got = tokio::time::timeout(self.wait, rx.wait_for(|c| c.is_some())).await;
                match got {
                    Ok(Ok(c)) => c.clone(),
                    _ => None,
                }
            }
        };
        let Some(cidr) = cidr else {
            return Ok(None);
        };
        let cidr = Cidr::parse(&cidr)?;
        // The network is looked up for every sandbox (one Docker call), so one removed by
        // hand comes back; the lock keeps two workers from creating it at once.
        let mut ready = self.ready.lock().await;
        let attachment = self.ensure_network(cidr).await?;
        if ready.as_ref() != Some(&(cidr.to_string(), attachment.clone())) {
            ensure_sysctls().await;
            tracing::info!(node = %self.node, network = %attachment.network, bridge = %attachment.bridge, pod_cidr = %cidr, "pod network ready");
            *ready = Some((cidr.to_string(), attachment.clone()));
        }
        drop(ready);
        // Rules are checked on every sandbox: cheap, and they come back after someone
        // flushed them (a Docker Engine restart, an admin).
        if let Some(cc) = self.cluster_cidr {
            if let Err(e) = ensure_host_rules(cc).await {
                tracing::warn!(error = %e, "pod network host rules");
            }
        }
        Ok(Some(attachment))
    }

    /// Sets the pod network up as soon as the node has a podCIDR, not only at the first
    /// sandbox, and says when it is: `true` once pods can join it (or, when no podCIDR came
    /// within the wait, once they go on Docker's default bridge). The node reports
    /// NetworkUnavailable until then, as upstream nodes do until their routes exist.
    pub fn watch_ready(
        self: &std::sync::Arc<Self>,
        shutdown: CancellationToken,
    ) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let me = self.clone();
        tokio::spawn(async move {
            let mut retry = Duration::from_millis(200);
            loop {
                let r = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = me.attachment() => r,
                };
                match r {
                    Ok(_) => {
                        let _ = tx.send(true);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(node = %me.node, error = %e, "setting up the pod network");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(retry) => {}
                        }
                        retry = (retry * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        rx
    }

    /// Called after a sandbox on `a` started: its bridge port gets hairpin mode.
    pub async fn sandbox_started(&self, a: &Attachment) {
        if let Err(e) = set_hairpin(&a.bridge).await {
            tracing::warn!(bridge = %a.bridge, error = %e, "setting hairpin mode on the pod network's ports");
        }
    }

    /// Creates (or finds) the Docker bridge network on `cidr`.
    async fn ensure_network(&self, cidr: Cidr) -> Result<Attachment> {
        let name = network_name(&self.node);
        let err = |source| Error::Docker {
            name: name.clone(),
            source,
        };
        for _ in 0..3 {
            match self.docker.inspect_network(&name, None).await {
                Ok(n) => {
                    let subnet = n
                        .ipam
                        .as_ref()
                        .and_then(|i| i.config.as_ref())
                        .and_then(|c| c.iter().find_map(|c| c.subnet.clone()))
                        .unwrap_or_default();
                    let id = n.id.clone().unwrap_or_default();
                    if Cidr::parse(&subnet).ok() == Some(cidr) {
                        return Ok(Attachment {
                            network: name.clone(),
                            bridge: bridge_name(&id, n.options.as_ref()),
                        });
                    }
                    if n.containers.as_ref().is_some_and(|c| !c.is_empty()) {
                        return Err(Error::Mismatch {
                            name: name.clone(),
                            have: subnet,
                            want: cidr.to_string(),
                        });
                    }
                    tracing::info!(network = %name, old = %subnet, new = %cidr, "re-creating the pod network for a new podCIDR");
                    match self.docker.remove_network(&name).await {
                        Ok(()) => {}
                        Err(e) if status(&e) == Some(404) => {}
                        Err(e) => return Err(err(e)),
                    }
                }
                Err(e) if status(&e) == Some(404) => {}
                Err(e) => return Err(err(e)),
            }
            let mut labels = HashMap::from([
                (labels::NODE.to_string(), self.node.clone()),
                (POD_CIDR_LABEL.to_string(), cidr.to_string()),
            ]);
            if !self.cluster.is_empty() {
                labels.insert(labels::CLUSTER.to_string(), self.cluster.clone());
            }
            let req = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(cidr.to_string()),
                        gateway: Some(cidr.gateway().to_string()),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                options: Some(HashMap::from([
                    // Masquerading is ours: only traffic leaving the cluster CIDR.
                    (
                        "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                        "false".to_string(),
                    ),
                    (
                        "com.docker.network.bridge.enable_icc".to_string(),
                        "true".to_string(),
                    ),
                ])),
                labels: Some(labels),
                ..Default::default()
            };
            match self.docker.create_network(req).await {
                Ok(r) => {
                    return Ok(Attachment {
                        network: name.clone(),
                        bridge: bridge_name(&r.id, None),
                    })
                }
                // Created meanwhile by someone else: inspect it again.
                Err(e) if status(&e) == Some(409) => continue,
                Err(e) => return Err(err(e)),
            }
        }
        Err(Error::Command {
            cmd: format!("docker network create {name}"),
            message: "the network kept changing under us".into(),
        })
    }
}

fn status(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Docker's Linux bridge name for network `id`: the `bridge.name` option, else `br-<id[..12]>`.
fn bridge_name(id: &str, options: Option<&HashMap<String, String>>) -> String {
    if let Some(n) = options.and_then(|o| o.get("com.docker.network.bridge.name")) {
        return n.clone();
    }
    format!("br-{}", id.chars().take(12).collect::<String>())
}

/// Kernel settings the pod network needs, as upstream's kubenet sets them:
/// `bridge-nf-call-iptables` so that traffic between two pods of one bridge passes iptables
/// (a Service's DNAT is undone on the reply), and IPv4 forwarding. Failures are logged: in a
/// container without br_netfilter Services still work across bridges, not within one.
async fn ensure_sysctls() {
    const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if tokio::fs::metadata(BRIDGE_NF).await.is_err() {
        if let Err(e) = run("modprobe", &["br_netfilter"]).await {
            tracing::warn!(error = %e, "br_netfilter is not loaded and cannot be: Services may not answer pods on the same node");
        }
    }
    for (file, want) in [(BRIDGE_NF, "1"), ("/proc/sys/net/ipv4/ip_forward", "1")] {
        match tokio::fs::read_to_string(file).await {
            Ok(v) if v.trim() == want => {}
            _ => match tokio::fs::write(file, want).await {
                Ok(()) => tracing::info!(
                    file,
                    value = want,
                    "set kernel parameter for the pod network"
                ),
                Err(e) => {
                    tracing::warn!(file, error = %e, "cannot set kernel parameter for the pod network")
                }
            },
        }
    }
}

/// Turns hairpin mode on for every port of `bridge` (the pod network has pods only).
async fn set_hairpin(bridge: &str) -> std::io::Result<()> {
    let dir = format!("/sys/class/net/{bridge}/brif");
    let mut ports = tokio::fs::read_dir(&dir).await?;
    while let Some(port) = ports.next_entry().await? {
        let file = port.path().join("hairpin_mode");
        if tokio::fs::read_to_string(&file).await?.trim() != "1" {
            tokio::fs::write(&file, "1").await?;
        }
    }
    Ok(())
}

/// Runs a command; its stdout, or an error with its stderr.
async fn run(program: &str, args: &[&str]) -> Result<String> {
    let desc = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::Command {
            cmd: desc.clone(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: desc,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The host rules of a cluster CIDR: (table, chain, rule spec).
fn host_rules(cluster_cidr: Cidr) -> [(&'static str, &'static str, Vec<String>); 2] {
    let c = cluster_cidr.to_string();
    let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    let mut accept = words(&format!("-s {c} -d {c} -m comment --comment"));
    accept.push("minik8s: pod traffic within the cluster CIDR".into());
    accept.extend(words("-j ACCEPT"));
    let mut masq = words(&format!("-s {c} ! -d {c} -m comment --comment"));
    masq.push("minik8s: masquerade pod traffic leaving the cluster CIDR".into());
    masq.extend(words("-j MASQUERADE"));
    [
        ("filter", "DOCKER-USER", accept),
        ("nat", "POSTROUTING", masq),
    ]
}

/// Makes sure the rules for `cluster_cidr` exist (inserted first in their chains).
pub async fn ensure_host_rules(cluster_cidr: Cidr) -> Result<()> {
    for (table, chain, spec) in host_rules(cluster_cidr) {
        // Without Docker's iptables integration there is no DOCKER-USER: FORWARD then.
        let chain = if chain == "DOCKER-USER"
            && run("iptables", &["-w", "-t", table, "-S", chain])
                .await
                .is_err()
        {
            "FORWARD"
        } else {
            chain
        };
        let rule = |op: &'static str| {
            let mut a: Vec<&str> = vec!["-w", "-t", table, op, chain];
            a.extend(spec.iter().map(String::as_str));
            a
        };
        if run("iptables", &rule("-C")).await.is_err() {
            let mut insert = rule("-I");
            insert.insert(5, "1");
            run("iptables", &insert).await?;
        }
    }
    Ok(())
}

/// Removes the rules for `cluster_cidr` (tests, and a node leaving the cluster).
pub async fn remove_host_rules(cluster_cidr: Cidr) -> Result<()> {
    for (table, chain, spec) in host_rules(cluster_cidr) {
        let chains: &[&str] = if table == "filter" {
            &[chain, "FORWARD"]
        } else {
            &[chain]
        };
        for chain in chains {
            let mut a: Vec<&str> = vec!["-w", "-t", table, "-D", chain];
            a.extend(spec.iter().map(String::as_str));
            while run("iptables", &a).await.is_ok() {}
        }
    }
    Ok(())
}

/// Removes the pod network of `node` and the host-gw routes it installed (tests).
pub async fn remove_network(docker: &bollard::Docker, node: &str) -> Result<()> {
    let name = network_name(node);
    match docker.remove_network(&name).await {
        Ok(()) => Ok(()),
        Err(e) if status(&e) == Some(404) => Ok(()),
        Err(source) => Err(Error::Docker { name, source }),
    }
}

/// What the node watch learned: this node's podCIDR and the host-gw routes to other nodes.
#[derive(Debug, Default, PartialEq, Eq)]
struct NodeView {
    pod_cidr: Option<String>,
    /// Other nodes' podCIDR -> InternalIP, for nodes on other hosts.
    routes: BTreeMap<String, String>,
}

/// Computes the view of `me` (whose InternalIP is `my_ip`) from all nodes.
fn view<'a>(me: &str, my_ip: &str, nodes: impl Iterator<Item = &'a Node>) -> NodeView {
    let mut v = NodeView::default();
    for n in nodes {
        let name = n.metadata.name.as_deref().unwrap_or_default();
        let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        if name == me {
            v.pod_cidr = cidr;
            continue;
        }
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone());
        if let (Some(cidr), Some(ip)) = (cidr, ip) {
            if ip != my_ip && Cidr::parse(&cidr).is_ok() && ip.parse::<Ipv4Addr>().is_ok() {
                v.routes.insert(cidr, ip);
            }
        }
    }
    v
}

/// Watches the nodes: publishes this node's podCIDR on the returned channel and, with
/// `routes`, keeps a host-gw route to every other node's podCIDR via its InternalIP.
pub fn watch_nodes(
    client: kube::Client,
    me: String,
    my_ip: String,
    routes: bool,
    shutdown: CancellationToken,
) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let api: Api<Node> = Api::all(client);
        let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
        let mut nodes: BTreeMap<String, Node> = BTreeMap::new();
        let mut listing: Option<BTreeMap<String, Node>> = None;
        let mut installed: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => ev,
            };
            let key = |n: &Node| n.metadata.name.clone().unwrap_or_default();
            match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching nodes for the pod network");
                    continue;
                }
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(n))) => {
                    if let Some(l) = listing.as_mut() {
                        l.insert(key(&n), n);
                    }
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    if let Some(l) = listing.take() {
                        nodes = l;
                    }
                }
                Some(Ok(watcher::Event::Apply(n))) => {
                    nodes.insert(key(&n), n);
                }
                Some(Ok(watcher::Event::Delete(n))) => {
                    nodes.remove(&key(&n));
                }
            }
            let v = view(&me, &my_ip, nodes.values());
            tx.send_if_modified(|c| {
                let changed = *c != v.pod_cidr;
                c.clone_from(&v.pod_cidr);
                changed
            });
            if routes && v.routes != installed {
                sync_routes(&installed, &v.routes).await;
                installed = v.routes;
            }
        }
    });
    rx
}

/// Replaces the host-gw routes `old` by `new`.
async fn sync_routes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) {
    for (cidr, via) in new {
        if old.get(cidr) == Some(via) {
            continue;
        }
        let r = run(
            "ip",
            &["route", "replace", cidr, "via", via, "proto", ROUTE_PROTO],
        )
        .await;
        match r {
            Ok(_) => tracing::info!(%cidr, %via, "host-gw route to another node's pods"),
            Err(e) => tracing::warn!(error = %e, "host-gw route"),
        }
    }
    for (cidr, via) in old {
        if !new.contains_key(cidr) {
            let r = run(
                "ip",
                &["route", "del", cidr, "via", via, "proto", ROUTE_PROTO],
            )
            .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "removing a host-gw route");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.244.3.7/24").expect("cidr");
        assert_eq!(c.to_string(), "10.244.3.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        assert!(Cidr::parse("10.244.3.0").is_err());
        assert!(Cidr::parse("10.244.3.0/31").is_err());
        assert!(Cidr::parse("fd00::/64").is_err());
        assert_eq!(
            Cidr::parse("10.0.0.0/0").expect("cidr").to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn bridge_names() {
        assert_eq!(bridge_name("916a75b216f626be50", None), "br-916a75b216f6");
        let o = HashMap::from([(
            "com.docker.network.bridge.name".to_string(),
            "mk0".to_string(),
        )]);
        assert_eq!(bridge_name("916a75b216f626be50", Some(&o)), "mk0");
    }

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "Hostname", "address": name},
                                     {"type": "InternalIP", "address": ip}]},
        }))
        .expect("node")
    }

    #[test]
    fn view_routes_other_hosts_only() {
        let nodes = [
            node("a", Some("10.244.0.0/24"), "192.0.2.2"),
            node("b", Some("10.244.1.0/24"), "192.0.2.2"), // same host: the bridge is local
            node("c", Some("10.244.2.0/24"), "192.0.2.3"),
            node("d", None, "192.0.2.4"), // no podCIDR yet
        ];
        let v = view("a", "192.0.2.2", nodes.iter());
        assert_eq!(v.pod_cidr.as_deref(), Some("10.244.0.0/24"));
        assert_eq!(
            v.routes,
            BTreeMap::from([("10.244.2.0/24".to_string(), "192.0.2.3".to_string())])
        );
        assert_eq!(view("e", "192.0.2.9", nodes.iter()).pod_cidr, None);
    }

    #[test]
    fn host_rules_accept_within_and_masquerade_leaving() {
        let [(t1, c1, accept), (t2, c2, masq)] =
            host_rules(Cidr::parse("10.244.0.0/16").expect("cidr"));
        assert_eq!(
            (t1, c1, t2, c2),
            ("filter", "DOCKER-USER", "nat", "POSTROUTING")
        );
        assert_eq!(
            accept.join(" "),
            "-s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment minik8s: pod traffic within the cluster CIDR -j ACCEPT"
        );
        assert_eq!(
            masq.join(" "),
            "-s 10.244.0.0/16 ! -d 10.244.0.0/16 -m comment --comment minik8s: masquerade pod traffic leaving the cluster CIDR -j MASQUERADE"
        );
    }
}
