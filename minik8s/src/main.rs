//! `minik8s`: one binary for a Kubernetes-compatible cluster. Parses flags, starts the
//! libraries, waits for a signal, drains.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

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
    /// Run the control plane: the API server over the embedded store or etcd
    Server(ServerArgs),
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

    /// Do not run the node agent (kubelet, proxy) in this process. No agent exists yet, so
    /// this is accepted and changes nothing today.
    #[arg(long)]
    disable_agent: bool,
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
        Command::Server(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
            .and_then(|rt| rt.block_on(server(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("minik8s: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let server = apiserver::start(args.api, shutdown.clone()).await?;
    let kubeconfig = match &args.write_kubeconfig {
        Some(path) => {
            copy_private(&server.kubeconfig, path)?;
            path.clone()
        }
        None => server.kubeconfig.clone(),
    };
    if !args.disable_agent {
        tracing::info!("no node agent yet: this process runs the API server only");
    }

    let addr = server.addr;
    eprintln!("minik8s API server listening on https://{addr}");
    eprintln!("kubeconfig: {}", kubeconfig.display());
    eprintln!("export KUBECONFIG={}; kubectl get ns", kubeconfig.display());

    let wait = server.wait();
    tokio::pin!(wait);
    tokio::select! {
        result = &mut wait => {
            result?;
            anyhow::bail!("the API server stopped on its own");
        }
        signal = shutdown_signal() => {
            tracing::info!(%signal, "shutting down; a second signal exits at once");
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
