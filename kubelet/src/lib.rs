//! minik8s kubelet: registers a Node, runs the pods bound to it as Docker containers (or
//! simulated ones), reports their status and serves logs, exec, attach and port-forward.

use tokio_util::sync::CancellationToken;

pub mod server;

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
}

/// Flags of `minik8s kubelet`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,
}

/// Runs the kubelet until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _client = cfg.client.connect().await?;
    shutdown.cancelled().await;
    Ok(())
}
