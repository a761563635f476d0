//! minik8s controller-manager: level-triggered reconcile loops over informers that make
//! workloads, endpoints, namespaces and nodes converge, like upstream's kube-controller-manager.

use tokio_util::sync::CancellationToken;

/// Flags of `minik8s controller-manager`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,
}

/// Runs the controllers until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _client = cfg.client.connect().await?;
    shutdown.cancelled().await;
    Ok(())
}
