//! minik8s kubelet: registers a Node, runs the pods bound to it as Docker containers (or
//! simulated ones), reports their status and serves logs, exec, attach and port-forward.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

mod backoff;
pub mod credentials;
pub mod dns;
pub mod docker;
mod env;
mod events;
pub mod network;
pub mod node;
mod pod_manager;
mod pod_worker;
mod probe;
pub mod server;
mod simulated;
mod status;
mod volumes;

/// Labels on every container the kubelet creates, so a restarted kubelet (and the streaming
/// server) find a pod's containers again. Names as upstream's dockershim used them.
pub mod labels {
    /// The node (kubelet `--node-name`) that owns the container.
    pub const NODE: &str = "io.minik8s.node";
    /// Namespace of the pod.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// Name of the pod.
    pub const POD_NAME: &str = "io.kubernetes.pod.name";
    /// UID of the pod.
    pub const POD_UID: &str = "io.kubernetes.pod.uid";
    /// Name of the container in the pod spec; `POD` for the sandbox (infra) container.
    pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
    /// How many times this container of the pod was started before (its restart count).
    pub const ATTEMPT: &str = "io.kubernetes.container.restartCount";
    /// The pod's termination grace period, for killing containers of pods deleted while the
    /// kubelet was down.
    pub const GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
    /// The file inside the container holding its termination message.
    pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
    /// `init`, `sidecar` or `app`: which list of the pod spec the container comes from.
    pub const CONTAINER_KIND: &str = "io.minik8s.container.kind";
    /// Which cluster (API server CA) the container belongs to: kubelets of different
    /// clusters that share a Docker Engine and a node name never touch each other's containers.
    pub const CLUSTER: &str = "io.minik8s.cluster";
    /// Value of [`CONTAINER_NAME`] for the sandbox container.
    pub const SANDBOX: &str = "POD";
}

/// Kubernetes version the kubelet reports in `nodeInfo.kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.33.0";

/// Which container runtime runs the pods.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Runtime {
    /// Real containers on the Docker Engine.
    #[default]
    Docker,
    /// No containers: pods go through their lifecycle on paper (kwok-like), for scale tests.
    Simulated,
}

/// Flags of `minik8s kubelet`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,
    /// Name of the Node object [default: the host name]
    #[arg(long)]
    pub node_name: Option<String>,
    /// IP address the kubelet's server listens on
    #[arg(long, default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// Port of the kubelet's server (0: any free port)
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// IP address reported as the node's InternalIP [default: the host's primary address]
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Image of the pod sandbox (infra) container; built locally when it cannot be pulled
    #[arg(long, default_value = "minik8s/pause:3.10")]
    pub pod_infra_container_image: String,
    /// Directory for pod volumes and termination-message files
    #[arg(long, default_value = "/var/lib/minik8s/kubelet")]
    pub root_dir: PathBuf,
    /// Docker Engine endpoint (unix:///path or tcp://host:port)
    #[arg(long, default_value = "unix:///var/run/docker.sock")]
    pub docker_endpoint: String,
    /// Container runtime
    #[arg(long, value_enum, default_value_t = Runtime::Docker)]
    pub runtime: Runtime,
    /// With --runtime=simulated: how many nodes this process runs (named <node-name>-<i> when > 1)
    #[arg(long, default_value_t = 1)]
    pub simulated_nodes: usize,
    /// With --runtime=simulated: how long a pod with restartPolicy Never/OnFailure runs before it succeeds (0: forever)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub simulated_completion_after: Duration,
    /// How often the node's Lease is renewed and its status reported
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub node_status_update_frequency: Duration,
    /// How often every pod is re-synced without a change (config map and secret volumes refresh then)
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub sync_frequency: Duration,
    /// Cluster pod CIDR: pod traffic within it is allowed between the nodes' bridges and
    /// not masqueraded; traffic leaving it is (empty: no host rules)
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// How long a new pod sandbox waits for the node's spec.podCIDR before it starts on
    /// Docker's default bridge instead (0s: it does not wait)
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub pod_cidr_timeout: Duration,
    /// Route the other nodes' podCIDRs via their InternalIPs (host-gw) when they are on other hosts
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub host_gw: bool,
    #[command(flatten)]
    pub dns: dns::DnsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client: Default::default(),
            node_name: None,
            address: IpAddr::from([0, 0, 0, 0]),
            port: 10250,
            node_ip: None,
            pod_infra_container_image: "minik8s/pause:3.10".into(),
            root_dir: "/var/lib/minik8s/kubelet".into(),
            docker_endpoint: "unix:///var/run/docker.sock".into(),
            runtime: Runtime::Docker,
            simulated_nodes: 1,
            simulated_completion_after: Duration::ZERO,
            node_status_update_frequency: Duration::from_secs(10),
            sync_frequency: Duration::from_secs(10),
            cluster_cidr: "10.244.0.0/16".into(),
            pod_cidr_timeout: Duration::ZERO,
            host_gw: true,
            dns: Default::default(),
        }
    }
}

/// Parses `10s`, `500ms`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: want e.g. 10s, 500ms, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl Config {
    /// The node name: `--node-name`, else the host name in lower case.
    pub fn node_name(&self) -> String {
        match &self.node_name {
            Some(n) => n.clone(),
            None => node::hostname().to_lowercase(),
        }
    }
}

/// Runs the kubelet until `shutdown` is cancelled. Containers keep running when it stops;
/// the next kubelet adopts them.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = cfg.client.connect_as("kubelet").await?;
    run_with_client(client, cfg, shutdown).await
}

/// [`run`] with a client made by the caller (the agent's, whose credentials it rotates);
/// `cfg.client` still names the kubeconfig, which holds the cluster CA.
pub async fn run_with_client(
    client: kube::Client,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    match cfg.runtime {
        Runtime::Docker => run_docker(client, cfg, shutdown).await,
        Runtime::Simulated => simulated::run(client, cfg, shutdown).await,
    }
}

async fn run_docker(
    client: kube::Client,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let node_name = cfg.node_name();
    let cluster = client_ca_pem(&cfg.client)
        .map(|pem| cluster_id(&pem))
        .unwrap_or_default();
    let docker = docker::Docker::connect(&cfg.docker_endpoint, &node_name)
        .await?
        .with_cluster(&cluster);
    let listener = bind(cfg.address, cfg.port).await?;
    let port = listener.local_addr()?.port();
    let host = node::HostFacts::read(&cfg.root_dir, cfg.node_ip).await;
    let spec = node::NodeSpec::for_host(&node_name, &host, docker.version(), port);
    tracing::info!(node = %node_name, port, runtime = docker.version(), "kubelet starting");

    let pod_cidr = network::watch_nodes(
        client.clone(),
        node_name.clone(),
        host.ip.to_string(),
        cfg.host_gw,
        shutdown.clone(),
    );
    let pod_network = std::sync::Arc::new(network::PodNetwork::new(
        docker.api().clone(),
        &node_name,
        &cluster,
        &cfg.cluster_cidr,
        pod_cidr,
        cfg.pod_cidr_timeout,
    )?);
    let network_ready = pod_network.watch_ready(shutdown.clone());
    let node_task = tokio::spawn(node::run(
        client.clone(),
        spec,
        cfg.node_status_update_frequency,
        Some(network_ready),
        shutdown.clone(),
    ));
    let pods = pod_manager::PodManager::new(
        client.clone(),
        docker.clone(),
        pod_manager::Settings {
            node_name: node_name.clone(),
            host_ip: host.ip.to_string(),
            root_dir: cfg.root_dir.clone(),
            infra_image: cfg.pod_infra_container_image.clone(),
            sync_frequency: cfg.sync_frequency,
            allocatable: host.allocatable(),
            pod_network,
            dns: cfg.dns.clone(),
        },
    );
    let pods_task = tokio::spawn(pods.run(shutdown.clone()));
    let names = vec![
        node_name.clone(),
        host.ip.to_string(),
        "localhost".into(),
        "127.0.0.1".into(),
    ];
    let server_cfg = cfg.clone();
    let server_client = client.clone();
    let server_shutdown = shutdown.clone();
    let server_task = tokio::spawn(async move {
        let r = serve(
            listener,
            &server_cfg,
            server_client,
            docker,
            names,
            server_shutdown.clone(),
        )
        .await;
        if let Err(e) = r {
            // Pods run without it; only logs, exec, attach and port-forward are lost.
            tracing::error!(error = %e, "kubelet streaming server failed");
            server_shutdown.cancelled().await;
        }
        anyhow::Ok(())
    });

    let (n, p, s) = tokio::join!(node_task, pods_task, server_task);
    n??;
    p??;
    s??;
    Ok(())
}

/// Binds the kubelet's listener. When the default port is taken (another kubelet on this
/// machine), a free port is used instead: the Node status publishes the real one.
async fn bind(address: IpAddr, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    match tokio::net::TcpListener::bind((address, port)).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port == 10250 => {
            let l = tokio::net::TcpListener::bind((address, 0)).await?;
            tracing::warn!(
                port,
                chosen = l.local_addr()?.port(),
                "kubelet port in use; serving on a free port"
            );
            Ok(l)
        }
        Err(e) => Err(anyhow::anyhow!(
            "binding the kubelet server to {address}:{port}: {e}"
        )),
    }
}

/// A short stable id of the cluster (FNV-1a of its CA certificate).
fn cluster_id(ca_pem: &str) -> String {
    let h = ca_pem.trim().bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    format!("{h:016x}")
}

/// The streaming server (logs, exec, attach, port-forward) on the kubelet's listener.
async fn serve(
    listener: tokio::net::TcpListener,
    cfg: &Config,
    client: kube::Client,
    docker: docker::Docker,
    names: Vec<String>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut ctx = server::Context::new(
        docker.api().clone(),
        docker.node(),
        &client_ca_pem(&cfg.client)?,
        Some(client),
    );
    ctx.serving_names = names;
    ctx.root_dir = cfg.root_dir.clone();
    server::serve(listener, ctx, shutdown).await?;
    Ok(())
}

/// The cluster CA (PEM) from the kubeconfig: the API server's client certificates chain to it.
fn client_ca_pem(args: &client::ClientArgs) -> anyhow::Result<String> {
    use base64::Engine;
    let kc = match &args.kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p)?,
        None => kube::config::Kubeconfig::read()?,
    };
    let current = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref())
        .or_else(|| kc.clusters.first())
        .and_then(|c| c.cluster.clone())
        .ok_or_else(|| anyhow::anyhow!("the kubeconfig names no cluster"))?;
    if let Some(data) = cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD.decode(data.trim())?;
        return Ok(String::from_utf8(pem)?);
    }
    if let Some(file) = cluster.certificate_authority {
        return Ok(std::fs::read_to_string(file)?);
    }
    anyhow::bail!(
        "the kubeconfig has no certificate authority to verify the API server's client certificate"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
    }
}
