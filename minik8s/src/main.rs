//! `minik8s`: one binary for a Kubernetes-compatible cluster. Parses flags, starts the
//! libraries, waits for a signal, drains.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod agent;
mod token;

/// A Kubernetes-compatible API server and node agent in one binary.
#[derive(Parser)]
#[command(name = "minik8s", version, propagate_version = true)]
struct Cli {
    /// Log filter: a level (error, warn, info, debug, trace) or RUST_LOG directives
    /// such as `info,apiserver=debug`
    #[arg(long, global = true, env = "RUST_LOG", default_value = "info")]
    log_level: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the API server over the embedded store or etcd, the
    /// controller-manager, the scheduler, the cluster DNS and (unless --disable-agent) this
    /// node's kubelet and proxy
    Server(ServerArgs),
    /// Join this machine to a cluster with the server's join token and run its kubelet
    Agent(Box<agent::AgentArgs>),
    /// Manage join tokens for `minik8s agent`: create (with a time to live), list, delete
    Token(token::TokenArgs),
    /// Run only the scheduler against an API server (--kubeconfig)
    Scheduler(scheduler::Config),
    /// Run only the controller-manager against an API server (--kubeconfig)
    ControllerManager(controllers::Config),
    /// Run only a kubelet (node agent) against an API server (--kubeconfig)
    Kubelet(kubelet::Config),
    /// Run only the proxy (Service VIPs as iptables rules) against an API server (--kubeconfig)
    Proxy(proxy::Config),
    /// Run only the cluster DNS server (answers *.cluster.local, forwards the rest) against
    /// an API server (--kubeconfig)
    Dns(dns::Config),
    /// Print the version
    Version,
}

#[derive(clap::Args)]
struct ServerArgs {
    #[command(flatten)]
    api: apiserver::Config,

    /// Also write the admin kubeconfig to this path (mode 0600)
    #[arg(
        long,
        short = 'o',
        value_name = "PATH",
        env = "MINIK8S_WRITE_KUBECONFIG"
    )]
    write_kubeconfig: Option<PathBuf>,

    /// Do not run the node agent (kubelet) in this process
    #[arg(long)]
    disable_agent: bool,

    /// Do not run the proxy (Service VIPs as iptables rules; needs root) in this process
    #[arg(long)]
    disable_proxy: bool,

    /// Do not run the scheduler in this process
    #[arg(long)]
    disable_scheduler: bool,

    /// Do not run the controller-manager in this process
    #[arg(long)]
    disable_controller_manager: bool,

    /// Do not run the cluster DNS server in this process
    #[arg(long)]
    disable_dns: bool,

    /// With the DNS server: the port it listens on (UDP and TCP) on the host's primary
    /// address; the kube-dns Service's endpoints point there
    #[arg(long, default_value_t = 10053)]
    dns_port: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("minik8s: invalid --log-level {:?}: {e}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let result = match cli.command {
        Command::Version => {
            println!("minik8s {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Server(args) => block_on(server(args)),
        Command::Agent(args) => block_on(component("agent", agent::run, *args)),
        Command::Token(args) => block_on(token::run(args)),
        Command::Scheduler(cfg) => block_on(component("scheduler", scheduler::run, cfg)),
        Command::ControllerManager(cfg) => {
            block_on(component("controller-manager", controllers::run, cfg))
        }
        Command::Kubelet(cfg) => block_on(component("kubelet", kubelet::run, cfg)),
        Command::Proxy(cfg) => block_on(component("proxy", proxy::run, cfg)),
        Command::Dns(cfg) => block_on(component("dns", dns::run, cfg)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minik8s: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

/// Runs one component on its own until SIGINT/SIGTERM.
async fn component<C, F, Fut>(name: &'static str, run: F, cfg: C) -> anyhow::Result<()>
where
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let shutdown = CancellationToken::new();
    let task = run(cfg, shutdown.clone());
    tokio::pin!(task);
    tokio::select! {
        result = &mut task => return result.with_context(|| format!("{name} failed")),
        signal = shutdown_signal() => {
            tracing::info!(%signal, "{name} shutting down; a second signal exits at once");
            shutdown.cancel();
        }
    }
    tokio::select! {
        result = task => result,
        signal = shutdown_signal() => anyhow::bail!("{signal} during shutdown: exiting without draining"),
    }
}

/// The defaults of a component's flags, as if it were started with none.
fn default_args<T: clap::Args + clap::FromArgMatches>() -> anyhow::Result<T> {
    let cmd = T::augment_args(clap::Command::new("minik8s"));
    let m = cmd
        .try_get_matches_from(["minik8s"])
        .context("component defaults")?;
    Ok(T::from_arg_matches(&m)?)
}

/// Runs a component inside `minik8s server`: an error is logged and the component started
/// again after a growing pause (1 s doubling to 30 s), until shutdown.
fn supervise<C, F, Fut>(
    name: &'static str,
    cfg: C,
    run: F,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    C: Clone + Send + 'static,
    F: Fn(C, CancellationToken) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut pause = std::time::Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            let result = run(cfg.clone(), shutdown.child_token()).await;
            if shutdown.is_cancelled() {
                if let Err(e) = result {
                    tracing::warn!(component = name, "stopped with an error: {e:#}");
                }
                return;
            }
            match result {
                Ok(()) => {
                    tracing::error!(component = name, "stopped on its own; starting it again")
                }
                Err(e) => tracing::error!(component = name, "failed: {e:#}; starting it again"),
            }
            if started.elapsed() > std::time::Duration::from_secs(60) {
                pause = std::time::Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => return,
            }
            pause = (pause * 2).min(std::time::Duration::from_secs(30));
        }
    })
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let data_dir = args.api.data_dir();
    let server = apiserver::start(args.api, shutdown.clone()).await?;
    let kubeconfig = match &args.write_kubeconfig {
        Some(path) => {
            copy_private(&server.kubeconfig, path)?;
            path.clone()
        }
        None => server.kubeconfig.clone(),
    };
    let components = shutdown.child_token();
    let mut tasks = Vec::new();
    // Each component runs with its own identity (client certificate) and only what RBAC
    // and the Node authorizer grant it; each controller as its own service account.
    if !args.disable_controller_manager {
        let mut cfg: controllers::Config = default_args()?;
        cfg.client = client::ClientArgs::with_kubeconfig(&server.components.controller_manager);
        cfg.use_service_account_credentials = true;
        tasks.push(supervise(
            "controller-manager",
            cfg,
            controllers::run,
            components.clone(),
        ));
    }
    if !args.disable_scheduler {
        let mut cfg: scheduler::Config = default_args()?;
        cfg.client = client::ClientArgs::with_kubeconfig(&server.components.scheduler);
        tasks.push(supervise(
            "scheduler",
            cfg,
            scheduler::run,
            components.clone(),
        ));
    }
    if !args.disable_dns {
        let mut cfg: dns::Config = default_args()?;
        // system:minik8s-dns: reads Services and EndpointSlices, publishes kube-dns.
        cfg.client = client::ClientArgs::with_kubeconfig(&server.components.dns);
        cfg.port = args.dns_port;
        tasks.push(supervise("dns", cfg, dns::run, components.clone()));
    }
    if !args.disable_agent {
        let mut cfg: kubelet::Config = default_args()?;
        cfg.client = client::ClientArgs::with_kubeconfig(server.node_kubeconfig(&cfg.node_name())?);
        // Everything the server keeps lives under its data dir, the kubelet's volumes too.
        cfg.root_dir = data_dir.join("kubelet");
        if !args.disable_controller_manager {
            // Node IPAM runs here: a pod waits for the node's podCIDR rather than start off-network.
            cfg.pod_cidr_timeout = std::time::Duration::from_secs(30);
        }
        tasks.push(supervise("kubelet", cfg, kubelet::run, components.clone()));
    }
    if !args.disable_agent && !args.disable_proxy {
        match proxy::preflight() {
            Ok(()) => {
                let mut cfg: proxy::Config = default_args()?;
                // Its own identity, system:kube-proxy (role system:node-proxier).
                cfg.client = client::ClientArgs::with_kubeconfig(&server.components.proxy);
                tasks.push(supervise("proxy", cfg, proxy::run, components.clone()));
            }
            Err(why) => tracing::warn!(
                "not running the proxy: {why}; Service cluster IPs and NodePorts will not \
                 answer on this node (pass --disable-proxy to silence this)"
            ),
        }
    }

    let addr = server.addr;
    eprintln!("minik8s API server listening on https://{addr}");
    eprintln!("kubeconfig: {}", kubeconfig.display());
    eprintln!("export KUBECONFIG={}; kubectl get ns", kubeconfig.display());
    let node_token = data_dir.join("node-token");
    eprintln!("join token: {}", node_token.display());
    eprintln!(
        "join a node: minik8s agent --server {} --token $(cat {})",
        server.url,
        node_token.display()
    );

    let wait = server.wait();
    tokio::pin!(wait);
    tokio::select! {
        result = &mut wait => {
            result?;
            anyhow::bail!("the API server stopped on its own");
        }
        signal = shutdown_signal() => {
            tracing::info!(%signal, "shutting down; a second signal exits at once");
            // Components stop first, while the API server still answers them.
            components.cancel();
            let stopped = futures::future::join_all(tasks);
            if tokio::time::timeout(std::time::Duration::from_secs(15), stopped).await.is_err() {
                tracing::warn!("components did not stop within 15 s");
            }
            shutdown.cancel();
        }
    }
    tokio::select! {
        result = wait => result,
        signal = shutdown_signal() => anyhow::bail!("{signal} during shutdown: exiting without draining"),
    }
}

/// Waits for SIGINT or SIGTERM and names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Copies `from` to `to` with mode 0600, creating `to`'s parent directories.
fn copy_private(from: &Path, to: &Path) -> anyhow::Result<()> {
    let what = || format!("cannot write kubeconfig to {}", to.display());
    if let Some(parent) = to.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(what)?;
    }
    std::fs::copy(from, to).with_context(what)?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600)).with_context(what)
}
