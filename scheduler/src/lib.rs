//! minik8s scheduler: watches pending pods and nodes through the API and binds each pod to
//! a node with `POST pods/<name>/binding`, like upstream's kube-scheduler.

use std::sync::Arc;

use client::leader::{LeaderElectionArgs, LeaderElector};
use tokio_util::sync::CancellationToken;

pub mod cache;
pub mod metrics;
pub mod plugins;
pub mod queue;
pub mod resources;
pub mod scheduler;

pub use metrics::Metrics;

/// Flags of `minik8s scheduler`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,
    #[command(flatten)]
    pub leader: LeaderElectionArgs,
    /// Schedule pods whose spec.schedulerName is this (or unset)
    #[arg(long, default_value = "default-scheduler")]
    pub scheduler_name: String,
    /// Percentage of nodes to find feasible before scoring; 0 = upstream's adaptive default
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub percentage_of_nodes_to_score: u32,
    /// Score plugin weight, `Name=Weight` (NodeResourcesFit, NodeResourcesBalancedAllocation,
    /// ImageLocality, InterPodAffinity, NodeAffinity, PodTopologySpread, TaintToleration); repeatable
    #[arg(long = "plugin-weight", value_name = "NAME=WEIGHT")]
    pub plugin_weights: Vec<String>,
    /// Bindings in flight at once
    #[arg(long, default_value_t = 64)]
    pub parallel_bindings: usize,
}

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_metrics(cfg, shutdown, Arc::new(Metrics::default())).await
}

/// Leader identity as upstream builds it: `<hostname>_<uuid>`.
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// `run`, recording attempt latencies into `metrics`.
pub async fn run_with_metrics(
    cfg: Config,
    shutdown: CancellationToken,
    metrics: Arc<Metrics>,
) -> anyhow::Result<()> {
    let mut weights = plugins::Weights::default();
    for w in &cfg.plugin_weights {
        weights.set(w).map_err(anyhow::Error::msg)?;
    }
    let client = cfg.client.connect_as("kube-scheduler").await?;
    let id = identity();
    let settings = scheduler::Settings {
        scheduler_name: cfg.scheduler_name.clone(),
        percentage_of_nodes_to_score: cfg.percentage_of_nodes_to_score,
        weights,
        identity: id.clone(),
        parallel_bindings: cfg.parallel_bindings,
    };
    if !cfg.leader.leader_elect {
        return scheduler::run(client, settings, metrics, shutdown).await;
    }
    let elector = LeaderElector::from_args(client.clone(), &cfg.leader, "kube-scheduler", &id)?;
    elector
        .run_while_leader(
            move |token| scheduler::run(client.clone(), settings.clone(), metrics.clone(), token),
            shutdown,
        )
        .await
}
