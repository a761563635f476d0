//! The Node object: registration, status (conditions, capacity, node info) and the Lease in
//! kube-node-lease that tells the control plane this kubelet is alive.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Seconds a Lease stays valid without renewal (upstream's default, 4 × 10 s).
const LEASE_DURATION_SECONDS: i32 = 40;

/// What the kubelet reads about its host once at start.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub hostname: String,
    pub ip: IpAddr,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub ephemeral_storage_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
}

/// The host name from the kernel.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .trim()
        .to_string()
}

/// Upstream's GOARCH spelling of this machine's architecture.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

async fn read_trimmed(path: &str) -> String {
    tokio::fs::read_to_string(path)
        .await
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The address the host would use to reach other machines; no packet is sent (a UDP
/// socket only picks a route when connected).
fn primary_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    probe().unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

impl HostFacts {
    /// Reads the host: CPUs, memory, the file system holding `root_dir`, kernel and OS.
    pub async fn read(root_dir: &Path, node_ip: Option<IpAddr>) -> HostFacts {
        let meminfo = read_trimmed("/proc/meminfo").await;
        let memory_bytes = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0);
        let _ = tokio::fs::create_dir_all(root_dir).await;
        let dir = root_dir.to_path_buf();
        let ephemeral_storage_bytes = tokio::task::spawn_blocking(move || {
            rustix::fs::statvfs(&dir)
                .map(|s| s.f_blocks * s.f_frsize)
                .unwrap_or(0)
        })
        .await
        .unwrap_or(0);
        let os_release = read_trimmed("/etc/os-release").await;
        let os_image = os_release
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        HostFacts {
            hostname: hostname(),
            ip: node_ip.unwrap_or_else(primary_ip),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_bytes,
            ephemeral_storage_bytes,
            kernel_version: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            os_image,
            machine_id: read_trimmed("/etc/machine-id").await,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").await,
        }
    }

    /// Capacity as Node status quantities.
    pub fn capacity(&self) -> BTreeMap<String, Quantity> {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpus.to_string())),
            (
                "memory".to_string(),
                Quantity(format!("{}Ki", self.memory_bytes / 1024)),
            ),
            (
                "ephemeral-storage".to_string(),
                Quantity(format!("{}Ki", self.ephemeral_storage_bytes / 1024)),
            ),
            ("pods".to_string(), Quantity("110".into())),
        ])
    }

    /// Allocatable: capacity, with no reservations configured.
    pub fn allocatable(&self) -> Allocatable {
        Allocatable {
            milli_cpu: self.cpus as i64 * 1000,
            memory_bytes: self.memory_bytes as i64,
        }
    }
}

/// What `resourceFieldRef` falls back to when a container sets no limit.
#[derive(Debug, Clone, Copy)]
pub struct Allocatable {
    pub milli_cpu: i64,
    pub memory_bytes: i64,
}

/// Everything the kubelet reports about its node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub addresses: Vec<(String, String)>,
    pub capacity: BTreeMap<String, Quantity>,
    pub node_info: Value,
    pub port: u16,
}

impl NodeSpec {
    /// The node of a real host running containers on Docker `runtime_version`.
    pub fn for_host(name: &str, host: &HostFacts, runtime_version: &str, port: u16) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            labels: default_labels(name),
            addresses: vec![
                ("InternalIP".into(), host.ip.to_string()),
                ("Hostname".into(), name.to_string()),
            ],
            capacity: host.capacity(),
            node_info: json!({
                "machineID": host.machine_id,
                "systemUUID": host.machine_id,
                "bootID": host.boot_id,
                "kernelVersion": host.kernel_version,
                "osImage": host.os_image,
                "containerRuntimeVersion": format!("docker://{runtime_version}"),
                "kubeletVersion": crate::KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": std::env::consts::OS,
                "architecture": arch(),
            }),
            port,
        }
    }
}

/// The well-known labels every kubelet puts on its node.
pub fn default_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".into(), name.to_string()),
        ("kubernetes.io/os".into(), std::env::consts::OS.to_string()),
        ("kubernetes.io/arch".into(), arch().to_string()),
        (
            "beta.kubernetes.io/os".into(),
            std::env::consts::OS.to_string(),
        ),
        ("beta.kubernetes.io/arch".into(), arch().to_string()),
    ])
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The conditions the kubelet owns, with upstream's reasons and messages.
fn conditions(since: &str, network: Option<&(bool, String)>) -> Value {
    let hb = now();
    let c = |t: &str, s: &str, reason: &str, message: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": message,
               "lastHeartbeatTime": hb, "lastTransitionTime": since})
    };
    let mut all = conditions_list(&c);
    if let (Some((ready, changed)), Some(list)) = (network, all.as_array_mut()) {
        // Upstream's wording: the kubelet's "Node created without a route", then the route
        // controller's "RouteController created a route".
        let (status, reason, message) = if *ready {
            ("False", "RouteCreated", "RouteController created a route")
        } else {
            ("True", "NoRouteCreated", "Node created without a route")
        };
        list.insert(
            0,
            json!({"type": "NetworkUnavailable", "status": status, "reason": reason,
                   "message": message, "lastHeartbeatTime": hb, "lastTransitionTime": changed}),
        );
    }
    all
}

fn conditions_list(c: &dyn Fn(&str, &str, &str, &str) -> Value) -> Value {
    json!([
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status"
        ),
    ])
}

fn status_body(spec: &NodeSpec, since: &str, network: Option<&(bool, String)>) -> Value {
    let addresses: Vec<Value> = spec
        .addresses
        .iter()
        .map(|(t, a)| json!({"type": t, "address": a}))
        .collect();
    json!({
        "status": {
            "capacity": spec.capacity,
            "allocatable": spec.capacity,
            "addresses": addresses,
            "conditions": conditions(since, network),
            "daemonEndpoints": {"kubeletEndpoint": {"Port": spec.port}},
            "nodeInfo": spec.node_info,
        }
    })
}

/// Creates the Node, or takes over an existing one of that name (labels merged).
pub async fn register(client: &kube::Client, spec: &NodeSpec) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": spec.labels},
    }))
    .map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {
            tracing::info!(node = %spec.name, "registered node");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = json!({"metadata": {"labels": spec.labels}});
            nodes
                .patch(&spec.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            tracing::info!(node = %spec.name, "node already registered; updated it");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

async fn report_status(
    client: &kube::Client,
    spec: &NodeSpec,
    since: &str,
    network: Option<&(bool, String)>,
) -> kube::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch_status(
            &spec.name,
            &PatchParams::default(),
            &Patch::Merge(&status_body(spec, since, network)),
        )
        .await?;
    Ok(())
}

/// Renews (creating it the first time) the node's Lease.
async fn renew_lease(client: &kube::Client, spec: &NodeSpec, uid: &str) -> kube::Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let body = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": spec.name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": spec.name, "uid": uid}],
        },
        "spec": {"holderIdentity": spec.name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now},
    });
    let patch = json!({"spec": {"holderIdentity": spec.name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}});
    match leases
        .patch(&spec.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Registers the node, then renews its Lease and reports its status every `every` until
/// `shutdown`. API errors are logged and retried: a kubelet never gives up on its node.
/// With `network` (whether the pod network is set up), the node also reports
/// NetworkUnavailable, at once when it changes.
pub async fn run(
    client: kube::Client,
    spec: NodeSpec,
    every: Duration,
    mut network: Option<tokio::sync::watch::Receiver<bool>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let since = now();
    let mut net_state: Option<(bool, String)> =
        network.as_ref().map(|n| (*n.borrow(), since.clone()));
    let mut delay = Duration::from_millis(200);
    loop {
        match register(&client, &spec).await {
            Ok(()) => break,
            Err(e) => tracing::warn!(node = %spec.name, error = %e, "registering node"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(7));
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let mut uid = String::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {}
            changed = async {
                match network.as_mut() {
                    Some(n) => n.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => {
                if !changed {
                    // The sender is gone (shutdown): stop following it.
                    network = None;
                }
            }
        }
        if let (Some(n), Some(state)) = (network.as_ref(), net_state.as_mut()) {
            let ready = *n.borrow();
            if ready != state.0 {
                *state = (ready, now());
            }
        }
        if uid.is_empty() {
            match nodes.get(&spec.name).await {
                Ok(n) => uid = n.metadata.uid.unwrap_or_default(),
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    // Someone deleted the node: register it again.
                    if let Err(e) = register(&client, &spec).await {
                        tracing::warn!(node = %spec.name, error = %e, "re-registering node");
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(node = %spec.name, error = %e, "reading node");
                    continue;
                }
            }
        }
        if let Err(e) = report_status(&client, &spec, &since, net_state.as_ref()).await {
            tracing::warn!(node = %spec.name, error = %e, "reporting node status");
            if matches!(&e, kube::Error::Api(a) if a.code == 404) {
                uid.clear();
                let _ = register(&client, &spec).await;
            }
        }
        if let Err(e) = renew_lease(&client, &spec, &uid).await {
            tracing::warn!(node = %spec.name, error = %e, "renewing node lease");
        }
    }
}
