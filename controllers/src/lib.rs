//! minik8s controller-manager: level-triggered reconcile loops over informers that make
//! workloads, endpoints, namespaces and nodes converge, like upstream's kube-controller-manager.

use tokio_util::sync::CancellationToken;

pub mod common;
pub mod endpoints;
pub mod endpointslice;
pub mod garbage_collector;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod root_ca;
pub mod serviceaccount;

/// Flags of `minik8s controller-manager`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,

    #[command(flatten)]
    pub gc: garbage_collector::GcConfig,
}

/// Runs the controllers until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = cfg.client.connect().await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(garbage_collector::run(
        client.clone(),
        cfg.gc.clone(),
        shutdown.clone(),
    ));
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}
