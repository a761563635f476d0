//! minik8s controller-manager: level-triggered reconcile loops over informers that make
//! workloads, endpoints, namespaces and nodes converge, like upstream's kube-controller-manager.
//!
//! Every controller is one entry in [`CONTROLLERS`]; `--controllers` picks which run with
//! upstream's semantics (`*` = all enabled by default, `foo` = enable, `-foo` = disable).

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub mod client_builder;
pub mod common;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbage_collector;
pub mod hpa;
pub mod job;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod root_ca;
pub mod serviceaccount;
pub mod statefulset;
pub mod tokencleaner;

use common::{Clock, Informers, SystemClock};

/// Flags of `minik8s controller-manager`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,

    /// A list of controllers to enable. '*' enables all on-by-default controllers, 'foo'
    /// enables the controller named 'foo', '-foo' disables the controller named 'foo'.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,

    /// Run each controller as its own service account, kube-system/<controller> (bound to
    /// system:controller:<controller>), with a token the manager requests for it; the
    /// manager's own credentials then only serve the shared informers and leader election.
    #[arg(long)]
    pub use_service_account_credentials: bool,

    #[command(flatten)]
    pub gc: garbage_collector::GcConfig,
    #[command(flatten)]
    pub endpointslice: endpointslice::EndpointSliceConfig,
    #[command(flatten)]
    pub node_lifecycle: node_lifecycle::NodeLifecycleConfig,
    #[command(flatten)]
    pub node_ipam: node_ipam::NodeIpamConfig,
    #[command(flatten)]
    pub podgc: podgc::PodGcConfig,
    #[command(flatten)]
    pub leader: client::leader::LeaderElectionArgs,
}

/// What a controller gets to run with.
#[derive(Clone)]
pub struct ControllerContext {
    /// A client of the API server.
    pub client: kube::Client,
    /// The shared informers (one watch per kind for the whole process).
    pub informers: Informers,
    /// The time controllers go by (a test clock in tests).
    pub clock: Arc<dyn Clock>,
    /// The flags.
    pub config: Arc<Config>,
    /// Cancelled when the controller must stop.
    pub shutdown: CancellationToken,
}

/// A controller's future: runs until its context's shutdown.
pub type ControllerFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// One controller the manager can start.
pub struct Descriptor {
    /// Upstream's name (`replicaset-controller`).
    pub name: &'static str,
    /// Upstream's short alias (`replicaset`), also accepted by `--controllers`.
    pub alias: &'static str,
    /// The service account it runs as under `--use-service-account-credentials`
    /// (upstream's name, e.g. `daemon-set-controller`).
    pub account: &'static str,
    /// Only runs when named explicitly.
    pub disabled_by_default: bool,
    /// Starts it.
    pub start: fn(ControllerContext) -> ControllerFuture,
}

/// Every controller, in start order.
pub const CONTROLLERS: &[Descriptor] = &[
    Descriptor {
        name: "garbage-collector-controller",
        account: "generic-garbage-collector",
        alias: "garbagecollector",
        disabled_by_default: false,
        start: |ctx| Box::pin(garbage_collector::run(ctx)),
    },
    Descriptor {
        name: "endpoints-controller",
        account: "endpoint-controller",
        alias: "endpoint",
        disabled_by_default: false,
        start: |ctx| Box::pin(endpoints::run(ctx)),
    },
    Descriptor {
        name: "endpointslice-controller",
        account: "endpointslice-controller",
        alias: "endpointslice",
        disabled_by_default: false,
        start: |ctx| Box::pin(endpointslice::run(ctx)),
    },
    Descriptor {
        name: "serviceaccount-controller",
        account: "service-account-controller",
        alias: "serviceaccount",
        disabled_by_default: false,
        start: |ctx| Box::pin(serviceaccount::run(ctx)),
    },
    Descriptor {
        name: "root-ca-certificate-publisher-controller",
        account: "root-ca-cert-publisher",
        alias: "root-ca-cert-publisher",
        disabled_by_default: false,
        start: |ctx| Box::pin(root_ca::run(ctx)),
    },
    Descriptor {
        // Off by default upstream; on here, as k3s runs it, so expired join tokens go away.
        name: "token-cleaner-controller",
        account: "token-cleaner",
        alias: "tokencleaner",
        disabled_by_default: false,
        start: |ctx| Box::pin(tokencleaner::run(ctx)),
    },
    Descriptor {
        name: "node-lifecycle-controller",
        account: "node-controller",
        alias: "nodelifecycle",
        disabled_by_default: false,
        start: |ctx| Box::pin(node_lifecycle::run(ctx)),
    },
    Descriptor {
        name: "node-ipam-controller",
        account: "node-controller",
        alias: "nodeipam",
        disabled_by_default: false,
        start: |ctx| Box::pin(node_ipam::run(ctx)),
    },
    Descriptor {
        name: "pod-garbage-collector-controller",
        account: "pod-garbage-collector",
        alias: "podgc",
        disabled_by_default: false,
        start: |ctx| Box::pin(podgc::run(ctx)),
    },
    Descriptor {
        name: "disruption-controller",
        account: "disruption-controller",
        alias: "disruption",
        disabled_by_default: false,
        start: |ctx| Box::pin(disruption::run(ctx)),
    },
    Descriptor {
        name: "resourcequota-controller",
        account: "resourcequota-controller",
        alias: "resourcequota",
        disabled_by_default: false,
        start: |ctx| Box::pin(resourcequota::run(ctx)),
    },
    Descriptor {
        name: "horizontal-pod-autoscaler-controller",
        account: "horizontal-pod-autoscaler",
        alias: "horizontalpodautoscaling",
        disabled_by_default: false,
        start: |ctx| Box::pin(hpa::run(ctx)),
    },
    Descriptor {
        name: "replicaset-controller",
        account: "replicaset-controller",
        alias: "replicaset",
        disabled_by_default: false,
        start: replicaset::start_replicaset,
    },
    Descriptor {
        name: "replicationcontroller-controller",
        account: "replication-controller",
        alias: "replicationcontroller",
        disabled_by_default: false,
        start: replicaset::start_replicationcontroller,
    },
    Descriptor {
        name: "deployment-controller",
        account: "deployment-controller",
        alias: "deployment",
        disabled_by_default: false,
        start: deployment::start,
    },
    Descriptor {
        name: "job-controller",
        account: "job-controller",
        alias: "job",
        disabled_by_default: false,
        start: job::start,
    },
    Descriptor {
        name: "statefulset-controller",
        account: "statefulset-controller",
        alias: "statefulset",
        disabled_by_default: false,
        start: statefulset::start,
    },
    Descriptor {
        name: "daemonset-controller",
        account: "daemon-set-controller",
        alias: "daemonset",
        disabled_by_default: false,
        start: daemonset::start,
    },
    Descriptor {
        name: "cronjob-controller",
        account: "cronjob-controller",
        alias: "cronjob",
        disabled_by_default: false,
        start: cronjob::start,
    },
];

/// Why a configuration is refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--controllers` names something unknown.
    #[error("{0:?} is not in the list of known controllers")]
    UnknownController(String),
}

impl Config {
    /// Checks `--controllers` against the known names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for c in &self.controllers {
            let name = c.strip_prefix('-').unwrap_or(c);
            if name == "*" || name.is_empty() {
                continue;
            }
            if !CONTROLLERS
                .iter()
                .any(|d| d.name == name || d.alias == name)
            {
                return Err(ConfigError::UnknownController(c.clone()));
            }
        }
        Ok(())
    }

    /// Whether `d` runs under `--controllers` (upstream's `IsControllerEnabled`: the first
    /// explicit mention wins, then `*` enables what is on by default).
    pub fn is_enabled(&self, d: &Descriptor) -> bool {
        let mut star = false;
        for c in &self.controllers {
            let c = c.trim();
            if c == d.name || c == d.alias {
                return true;
            }
            if let Some(n) = c.strip_prefix('-') {
                if n == d.name || n == d.alias {
                    return false;
                }
            }
            if c == "*" {
                star = true;
            }
        }
        star && !d.disabled_by_default
    }

    /// Names of the controllers that run.
    pub fn enabled(&self) -> BTreeSet<&'static str> {
        CONTROLLERS
            .iter()
            .filter(|d| self.is_enabled(d))
            .map(|d| d.name)
            .collect()
    }
}

/// Runs the controllers until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    cfg.validate()?;
    let client = cfg.client.connect_as(USER_AGENT).await?;
    run_with(client, Arc::new(SystemClock), cfg, shutdown).await
}

/// Runs the enabled controllers with `client` and `clock` until `shutdown` (tests pass a
/// [`common::TestClock`]).
pub async fn run_with(
    client: kube::Client,
    clock: Arc<dyn Clock>,
    cfg: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    cfg.validate()?;
    let cfg = Arc::new(cfg);
    if !cfg.leader.leader_elect {
        return run_controllers(client, clock, cfg, shutdown).await;
    }
    let identity = identity();
    let elector = client::leader::LeaderElector::from_args(
        client.clone(),
        &cfg.leader,
        "kube-controller-manager",
        &identity,
    )?;
    elector
        .run_while_leader(
            move |leading| run_controllers(client.clone(), clock.clone(), cfg.clone(), leading),
            shutdown,
        )
        .await
}

/// Upstream's lock identity: `<hostname>_<uuid>`.
fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// Starts every enabled controller and restarts one that fails, until `shutdown`.
async fn run_controllers(
    client: kube::Client,
    clock: Arc<dyn Clock>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let informers = Informers::new(client.clone(), shutdown.clone());
    let accounts = if config.use_service_account_credentials {
        Some(client_builder::ClientBuilder::new(
            client.clone(),
            kube_config(&config.client).await?,
        ))
    } else {
        None
    };
    let mut tasks = tokio::task::JoinSet::new();
    let mut running: BTreeSet<&str> = BTreeSet::new();
    for d in CONTROLLERS.iter().filter(|d| config.is_enabled(d)) {
        let client = match &accounts {
            Some(b) => match own_client(b, d, &shutdown).await {
                Some(c) => c,
                None => break,
            },
            None => client.clone(),
        };
        let ctx = ControllerContext {
            client,
            informers: informers.clone(),
            clock: clock.clone(),
            config: config.clone(),
            shutdown: shutdown.clone(),
        };
        tracing::info!(controller = d.name, "starting controller");
        running.insert(d.name);
        tasks.spawn(async move {
            supervise(d, ctx).await;
            d.name
        });
    }
    let mut warned = None;
    loop {
        // Once shutdown began, say every few seconds which controllers are still stopping.
        let report = async {
            match warned {
                Some(at) => tokio::time::sleep_until(at).await,
                None => {
                    shutdown.cancelled().await;
                    tokio::time::sleep(STOP_REPORT).await
                }
            }
        };
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(Ok(name)) => { running.remove(name); }
                Some(Err(e)) => tracing::error!(error = %e, "controller supervisor failed"),
                None => break,
            },
            _ = report => {
                tracing::warn!(controllers = ?running, "still stopping after shutdown");
                warned = Some(tokio::time::Instant::now() + STOP_REPORT);
            }
        }
    }
    Ok(())
}

/// How often the controllers still running after a shutdown are reported.
const STOP_REPORT: Duration = Duration::from_secs(5);

/// The API server address and CA of `--kubeconfig` (or kube-rs's defaults).
async fn kube_config(args: &client::ClientArgs) -> anyhow::Result<kube::Config> {
    Ok(args.config_as(USER_AGENT).await?)
}

/// The user agent's command (upstream's), which names the field manager of its writes.
const USER_AGENT: &str = "kube-controller-manager";

/// `d`'s client acting as its service account, retried until it works; `None` on shutdown.
async fn own_client(
    b: &client_builder::ClientBuilder,
    d: &Descriptor,
    shutdown: &CancellationToken,
) -> Option<kube::Client> {
    let mut pause = Duration::from_millis(500);
    loop {
        match b.client_for(d.account, shutdown).await {
            Ok(c) => return Some(c),
            Err(e) => {
                tracing::warn!(controller = d.name, error = %e, "cannot get the controller's credentials; retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// Runs one controller, restarting it after a pause when it fails.
async fn supervise(d: &'static Descriptor, ctx: ControllerContext) {
    let mut pause = Duration::from_secs(1);
    loop {
        let shutdown = ctx.shutdown.clone();
        let result = tokio::spawn((d.start)(ctx.clone())).await;
        if shutdown.is_cancelled() {
            return;
        }
        match result {
            Ok(Ok(())) => tracing::warn!(controller = d.name, "controller stopped; restarting"),
            Ok(Err(e)) => {
                tracing::error!(controller = d.name, error = %e, "controller failed; restarting")
            }
            Err(e) => {
                tracing::error!(controller = d.name, error = %e, "controller panicked; restarting")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cfg(list: &[&str]) -> Config {
        Config {
            client: Default::default(),
            controllers: list.iter().map(|s| s.to_string()).collect(),
            use_service_account_credentials: false,
            gc: Default::default(),
            endpointslice: Default::default(),
            node_lifecycle: Default::default(),
            node_ipam: Default::default(),
            podgc: Default::default(),
            leader: Default::default(),
        }
    }

    fn noop(_: ControllerContext) -> ControllerFuture {
        Box::pin(async { Ok(()) })
    }

    #[test]
    fn controllers_flag_semantics() {
        let on = Descriptor {
            name: "a-controller",
            alias: "a",
            account: "a-controller",
            disabled_by_default: false,
            start: noop,
        };
        let off = Descriptor {
            name: "b-controller",
            alias: "b",
            account: "b-controller",
            disabled_by_default: true,
            start: noop,
        };
        assert!(cfg(&["*"]).is_enabled(&on));
        assert!(!cfg(&["*"]).is_enabled(&off));
        assert!(cfg(&["*", "b"]).is_enabled(&off));
        assert!(!cfg(&["*", "-a-controller"]).is_enabled(&on));
        assert!(!cfg(&["-a", "*"]).is_enabled(&on));
        assert!(!cfg(&["b"]).is_enabled(&on));
        assert!(cfg(&["a"]).is_enabled(&on));
    }

    #[test]
    fn unknown_controllers_are_refused() {
        let e = cfg(&["*", "-nosuch"]).validate().expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "\"-nosuch\" is not in the list of known controllers"
        );
    }
}
