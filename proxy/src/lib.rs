//! minik8s proxy: makes Service cluster IPs and NodePorts work on a node by rendering
//! Services + EndpointSlices into iptables rules, like upstream's kube-proxy in iptables mode.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod iptables;
pub mod render;

pub use iptables::Iptables;

/// Flags of `minik8s proxy`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,
    /// Shortest time between two syncs of the rules (Go duration: 1s, 500ms, 1m)
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub min_sync_period: Duration,
    /// Longest time between two full syncs of the rules
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub sync_period: Duration,
    /// Cluster pod CIDR: traffic to a cluster IP from outside it is masqueraded
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// Remove every iptables chain and jump the proxy made, then exit
    #[arg(long)]
    pub cleanup: bool,
    /// Apply the rules inside this network namespace (through `ip netns exec NAME`), not the
    /// proxy's own: to try rules out, or for benchmarks
    #[arg(long, value_name = "NAME")]
    pub netns: Option<String>,
}

/// Parses a Go-style duration such as `1s`, `500ms`, `2m`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?}");
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(total);
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += Duration::from_secs_f64(value * seconds);
        rest = &rest[unit_end..];
    }
    Ok(total)
}

/// Whether this process can run the proxy: it must be root and find `iptables-restore`.
/// Returns why not.
pub fn preflight() -> Result<(), String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        return Err("it needs root to change iptables rules".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .any(|d| d.join("iptables-restore").is_file());
    if !found {
        return Err("iptables-restore is not installed".into());
    }
    Ok(())
}

/// Runs the proxy until `shutdown` is cancelled (or, with `--cleanup`, removes its rules).
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ipt = cfg
        .netns
        .as_deref()
        .map(Iptables::in_netns)
        .unwrap_or_default();
    run_with(cfg, ipt, shutdown).await
}

/// `run` with iptables reached through `ipt` (tests run it inside a network namespace).
pub async fn run_with(
    cfg: Config,
    ipt: Iptables,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if cfg.cleanup {
        ipt.cleanup().await?;
        tracing::info!("removed the proxy's iptables rules");
        return Ok(());
    }
    let client = cfg.client.connect().await?;
    let changed = Arc::new(Notify::new());
    let services = reflect::<Service>(client.clone(), changed.clone(), shutdown.clone());
    let slices = reflect::<EndpointSlice>(client, changed.clone(), shutdown.clone());
    tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = async { services.wait_until_ready().await?; slices.wait_until_ready().await } => r?,
    }
    let opts = render::Options {
        cluster_cidr: Some(cfg.cluster_cidr.clone()).filter(|c| !c.is_empty()),
    };
    let mut last: Option<render::Rendered> = None;
    let mut last_full = tokio::time::Instant::now();
    loop {
        let started = tokio::time::Instant::now();
        let svcs: Vec<Service> = services.state().iter().map(|s| (**s).clone()).collect();
        let eps: Vec<EndpointSlice> = slices.state().iter().map(|s| (**s).clone()).collect();
        let rendered = render::render(&svcs, &eps, &opts);
        let full = started.duration_since(last_full) >= cfg.sync_period;
        if full || last.as_ref() != Some(&rendered) {
            match ipt.sync(&rendered).await {
                Ok(()) => {
                    tracing::debug!(
                        services = svcs.len(),
                        chains = rendered.nat_chains.len(),
                        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                        "synced iptables rules"
                    );
                    last = Some(rendered);
                    last_full = started;
                }
                Err(e) => {
                    tracing::error!(error = %e, "syncing iptables rules failed");
                    last = None;
                }
            }
        }
        // At most one sync per min-sync-period; then wait for a change or the full resync.
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(started + cfg.min_sync_period) => {}
        }
        let next_full = last_full + cfg.sync_period;
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = changed.notified() => {}
            _ = tokio::time::sleep_until(next_full) => {}
            _ = tokio::time::sleep(cfg.min_sync_period), if last.is_none() => {}
        }
    }
}

/// Starts a reflector for `K` in all namespaces; notifies `changed` on every event.
fn reflect<K>(client: kube::Client, changed: Arc<Notify>, shutdown: CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client);
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => match ev {
                    Some(Ok(_)) => changed.notify_one(),
                    Some(Err(e)) => tracing::warn!(error = %e, "watch failed"),
                    None => return,
                },
            }
        }
    });
    reader
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("1x").is_err());
        assert!(parse_duration("").is_err());
    }
}
