//! TLS listener and the server's lifecycle.

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::Config;

/// A started API server.
pub struct Server {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Waits until the server has shut down.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Starts the API server and returns once it listens.
pub async fn start(_cfg: Config, _shutdown: CancellationToken) -> anyhow::Result<Server> {
    anyhow::bail!("not yet")
}

/// Runs the API server until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(cfg, shutdown).await?.wait().await
}
