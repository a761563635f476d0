//! minik8s scheduler: watches pending pods and nodes through the API and binds each pod to
//! a node with `POST pods/<name>/binding`, like upstream's kube-scheduler.

use tokio_util::sync::CancellationToken;

/// Flags of `minik8s scheduler`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,
}

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let _client = cfg.client.connect().await?;
    shutdown.cancelled().await;
    Ok(())
}
