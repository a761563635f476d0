//! minik8s proxy: makes Service cluster IPs and NodePorts work on a node by rendering
//! Services + EndpointSlices into iptables rules, like upstream's kube-proxy in iptables mode.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use model::Model;

pub mod iptables;
pub mod model;
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
    /// Longest time between two syncs of the rules (which also re-check the jumps from the
    /// built-in chains); every Service's chains are rewritten once an hour, as upstream
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
    let client = cfg.client.connect_as("kube-proxy").await?;
    let shared = Arc::new(Shared::default());
    spawn_watch::<Service>(client.clone(), shared.clone(), shutdown.clone());
    spawn_watch::<EndpointSlice>(client, shared.clone(), shutdown.clone());
    loop {
        {
            let st = shared.lock();
            if st.services_listed && st.slices_listed {
                break;
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = shared.changed.notified() => {}
        }
    }
    let opts = render::Options {
        cluster_cidr: Some(cfg.cluster_cidr.clone()).filter(|c| !c.is_empty()),
    };
    let mut renderer = render::Renderer::new(opts);
    let mut buf = String::new();
    let mut last_full: Option<Instant> = None;
    loop {
        let started = Instant::now();
        let ok = sync_once(&ipt, &shared, &mut renderer, &mut buf, &mut last_full).await;
        // Upstream's BoundedFrequencyRunner: at most one sync per min-sync-period (changes in
        // between are batched), at once when a change comes later than that; a sync at least
        // every sync-period; a failed sync is retried after min-sync-period.
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep_until(started + cfg.min_sync_period) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = shared.changed.notified() => {}
            _ = tokio::time::sleep_until(started + cfg.sync_period) => {}
            _ = std::future::ready(()), if !ok => {}
        }
    }
}

/// How often every Service's chains are rewritten and the table is read for leftovers
/// (upstream's `FullSyncPeriod`).
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

/// One sync: renders what changed and applies it. Returns whether it worked.
async fn sync_once(
    ipt: &Iptables,
    shared: &Shared,
    renderer: &mut render::Renderer,
    buf: &mut String,
    last_full: &mut Option<Instant>,
) -> bool {
    let started = Instant::now();
    let full = renderer.needs_full() || last_full.is_none_or(|t| started - t >= FULL_SYNC_PERIOD);
    // A full sync also deletes per-service chains left from before (another run, or an
    // earlier failure), so it reads the table first.
    let existing = if full {
        match ipt.service_chains().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "reading the iptables rules failed");
                return false;
            }
        }
    } else {
        Vec::new()
    };
    let read = started.elapsed();
    let (services, changed) = {
        let mut st = shared.lock();
        let changed: BTreeSet<model::ServiceKey> = st.model.take_changed();
        renderer.render(&st.model, &changed, full, &existing);
        (st.model.service_count(), changed.len())
    };
    let rendered = started.elapsed();
    let plan = renderer.plan();
    match ipt.apply(plan, buf).await {
        Ok(restores) => {
            let elapsed = started.elapsed();
            tracing::debug!(
                services,
                changed,
                full = plan.full,
                written = plan.services_written,
                chains = plan.chains_written(),
                stale = plan.stale().len(),
                restores,
                read_ms = read.as_secs_f64() * 1000.0,
                render_ms = (rendered - read).as_secs_f64() * 1000.0,
                apply_ms = (elapsed - rendered).as_secs_f64() * 1000.0,
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                "synced iptables rules"
            );
            if plan.full {
                *last_full = Some(started);
                buf.shrink_to(render::KEEP_BUFFER);
            }
            renderer.applied();
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "syncing iptables rules failed");
            renderer.failed();
            false
        }
    }
}

/// The model the watches keep and the sync loop reads.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Notified on every change (and when a kind is first listed).
    changed: Notify,
}

#[derive(Default)]
struct State {
    model: Model,
    services_listed: bool,
    slices_listed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A kind the proxy watches, and how its events change the model.
trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The compact form a relist buffers.
    type Entry: Send;
    fn entry(&self) -> Self::Entry;
    fn apply(&self, st: &mut State);
    fn delete(&self, st: &mut State);
    fn replace(entries: Vec<Self::Entry>, st: &mut State);
}

impl Watched for Service {
    type Entry = (model::ServiceKey, Option<model::ServiceInfo>);
    fn entry(&self) -> Self::Entry {
        model::service_entry(self)
    }
    fn apply(&self, st: &mut State) {
        st.model.apply_service(self);
    }
    fn delete(&self, st: &mut State) {
        st.model.delete_service(self);
    }
    fn replace(entries: Vec<Self::Entry>, st: &mut State) {
        st.model.replace_services(entries);
        st.services_listed = true;
    }
}

impl Watched for EndpointSlice {
    type Entry = model::SliceEntry;
    fn entry(&self) -> Self::Entry {
        model::slice_entry(self)
    }
    fn apply(&self, st: &mut State) {
        st.model.apply_slice(self);
    }
    fn delete(&self, st: &mut State) {
        st.model.delete_slice(self);
    }
    fn replace(entries: Vec<Self::Entry>, st: &mut State) {
        st.model.replace_slices(entries);
        st.slices_listed = true;
    }
}

/// Watches `K` in all namespaces into the model, keeping only compact summaries (a relist
/// buffers them until it is complete); notifies the sync loop on changes.
fn spawn_watch<K: Watched>(client: kube::Client, shared: Arc<Shared>, shutdown: CancellationToken) {
    let api: Api<K> = Api::all(client);
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut relist: Vec<K::Entry> = Vec::new();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => ev,
            };
            let notify = match ev {
                Some(Ok(watcher::Event::Init)) => {
                    relist.clear();
                    false
                }
                Some(Ok(watcher::Event::InitApply(o))) => {
                    relist.push(o.entry());
                    false
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    K::replace(std::mem::take(&mut relist), &mut shared.lock());
                    true
                }
                Some(Ok(watcher::Event::Apply(o))) => {
                    let mut st = shared.lock();
                    o.apply(&mut st);
                    st.model.has_changes()
                }
                Some(Ok(watcher::Event::Delete(o))) => {
                    let mut st = shared.lock();
                    o.delete(&mut st);
                    st.model.has_changes()
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watch failed");
                    false
                }
                None => return,
            };
            if notify {
                shared.changed.notify_one();
            }
        }
    });
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
