//! `bench-proxy`: how fast `minik8s proxy` turns Services and EndpointSlices into iptables
//! rules, and how much memory it needs for them.
//!
//! Against a running API server without controllers (`minik8s server --disable-agent
//! --disable-controller-manager`, so nothing else writes EndpointSlices): creates `--services`
//! Services with `--endpoints` ready endpoints each, starts `minik8s proxy --netns <ns>` as a
//! child process whose rules go into a network namespace this tool creates (the host's
//! iptables are not touched), and reports
//! - the first full sync of every Service (render + iptables-restore, from the proxy's log);
//! - for `--events` endpoint changes, spaced beyond the proxy's minimum sync period: the time
//!   from the API's answer to the patch until the new endpoint's chain exists in the namespace,
//!   and the sync the proxy logged for it;
//! - the proxy's resident memory with everything synced;
//! - the floor: `iptables-restore` alone, in fresh namespaces, for the same rules (the whole
//!   set as one input and as the proxy's batches; one partial sync after an endpoint change).
//!
//! ```text
//! hack/bench-proxy.sh
//! cargo run --release -p hack --bin bench-proxy -- --kubeconfig K --minik8s target/release/minik8s
//! ```

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use hack::{micros, ms, proc_status_kib, require_loopback_url, Latency};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

/// Measures proxy sync times and memory.
#[derive(Parser, Debug)]
#[command(name = "bench-proxy", version)]
struct Args {
    /// Kubeconfig of the server (loopback only)
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The minik8s binary to run `minik8s proxy` from
    #[arg(long, default_value = "target/release/minik8s")]
    minik8s: PathBuf,
    /// Services to create
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Ready endpoints per Service
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// Endpoint changes to time
    #[arg(long, default_value_t = 10)]
    events: usize,
    /// Concurrent creates
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

const NS: &str = "bench-proxy";

/// The network namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn endpoint_ip(svc: usize, ep: usize) -> String {
    format!("10.{}.{}.{}", 128 + svc / 250, svc % 250, 10 + ep)
}

fn slice(i: usize, endpoints: &[String]) -> anyhow::Result<EndpointSlice> {
    let eps: Vec<_> = endpoints
        .iter()
        .map(|ip| serde_json::json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("svc-{i:04}-x"), "labels": {"kubernetes.io/service-name": format!("svc-{i:04}")}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))?)
}

/// Fields of a "synced iptables rules" log line.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sync {
    services: usize,
    elapsed_ms: f64,
    render_ms: f64,
    apply_ms: f64,
    restores: usize,
}

fn parse_sync(line: &str) -> Option<Sync> {
    if !line.contains("synced iptables rules") {
        return None;
    }
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(|v| v.trim_matches(|c: char| !c.is_ascii_digit() && c != '.'))
            .map(str::to_string)
    };
    let num = |name: &str| field(name).and_then(|v| v.parse::<f64>().ok());
    Some(Sync {
        services: field("services=")?.parse().ok()?,
        elapsed_ms: num("elapsed_ms=")?,
        render_ms: num("render_ms=").unwrap_or(0.0),
        apply_ms: num("apply_ms=").unwrap_or(0.0),
        restores: num("restores=").unwrap_or(1.0) as usize,
    })
}

/// Runs `iptables-restore -w --noflush` with `input` inside `netns`; returns how long it took.
async fn restore(netns: &str, input: &str) -> anyhow::Result<Duration> {
    use tokio::io::AsyncWriteExt;
    let t0 = Instant::now();
    let mut child = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            netns,
            "iptables-restore",
            "-w",
            "--noflush",
        ])
        .stdin(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input.as_bytes()).await?;
    drop(stdin);
    if !child.wait().await?.success() {
        bail!("iptables-restore failed in {netns}");
    }
    Ok(t0.elapsed())
}

/// `iptables-restore` alone for the rules of the Services and slices now in the API:
/// the whole set as one input, as the proxy's batches, and one partial sync.
async fn restore_floor(
    svcs: &Api<Service>,
    slices: &Api<EndpointSlice>,
    client: &kube::Client,
    changed_slice: EndpointSlice,
) -> anyhow::Result<()> {
    use proxy::model::Model;
    use proxy::render::{Options, Renderer, MAX_CHAINS_PER_RESTORE};
    use std::collections::BTreeSet;
    let mut all: Vec<Service> = svcs.list(&Default::default()).await?.items;
    all.extend(
        Api::<Service>::namespaced(client.clone(), "default")
            .list(&Default::default())
            .await?
            .items,
    );
    let sls = slices.list(&Default::default()).await?.items;
    let opts = Options {
        cluster_cidr: Some("10.244.0.0/16".into()),
    };
    let mut model = Model::from_objects(&all, &sls);
    let mut buf = String::new();

    let one = Netns(format!("minik8s-bench-floor1-{}", std::process::id()));
    let batched = Netns(format!("minik8s-bench-floor2-{}", std::process::id()));
    for n in [&one, &batched] {
        let st = std::process::Command::new("ip")
            .args(["netns", "add", &n.0])
            .status()?;
        if !st.success() {
            bail!("ip netns add {} failed", n.0);
        }
    }
    let mut r = Renderer::new(opts.clone());
    let plan = r.render(&model, &BTreeSet::new(), true, &[]);
    let text = plan.text();
    let single = restore(&one.0, &text).await?;
    let batches = plan.batches(MAX_CHAINS_PER_RESTORE);
    let t0 = Instant::now();
    for b in &batches {
        plan.write_batch(b.clone(), &mut buf);
        restore(&batched.0, &buf).await?;
    }
    plan.write_final(batches.is_empty(), &mut buf);
    restore(&batched.0, &buf).await?;
    let in_batches = t0.elapsed();
    println!(
        "floor, iptables-restore alone: the whole set ({} chains, {} lines) in one input {:.1} ms; in the proxy's {} inputs {:.1} ms",
        plan.chains_written(),
        text.lines().count(),
        single.as_secs_f64() * 1000.0,
        batches.len() + 1,
        in_batches.as_secs_f64() * 1000.0
    );
    r.applied();
    model.take_changed();
    model.apply_slice(&changed_slice);
    let changed = model.take_changed();
    let plan = r.render(&model, &changed, false, &[]);
    let text = plan.text();
    let mut samples = Vec::new();
    for _ in 0..5 {
        samples.push(micros(restore(&one.0, &text).await?));
    }
    if let Some(l) = Latency::from_samples(&mut samples) {
        println!(
            "floor, iptables-restore alone: a partial sync after one endpoint change ({} chains, {} lines) p50 {} max {}",
            plan.chains_written(),
            text.lines().count(),
            ms(l.p50_us),
            ms(l.max_us)
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    require_loopback_url(&cfg.cluster_url.to_string())?;
    let client = kube::Client::try_from(cfg)?;

    let netns = Netns(format!("minik8s-bench-proxy-{}", std::process::id()));
    let st = std::process::Command::new("ip")
        .args(["netns", "add", &netns.0])
        .status()?;
    if !st.success() {
        bail!("ip netns add {} failed (root needed)", netns.0);
    }

    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))?;
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), NS);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NS);
    let started = Instant::now();
    futures::stream::iter(0..args.services)
        .map(|i| {
            let (svcs, slices) = (svcs.clone(), slices.clone());
            let n = args.endpoints;
            async move {
                let svc: Service = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("svc-{i:04}")},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
                }))?;
                svcs.create(&PostParams::default(), &svc).await?;
                let ips: Vec<String> = (0..n).map(|e| endpoint_ip(i, e)).collect();
                slices
                    .create(&PostParams::default(), &slice(i, &ips)?)
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "created {} Services x {} endpoints in {:.1} s",
        args.services,
        args.endpoints,
        started.elapsed().as_secs_f64()
    );

    let mut child = tokio::process::Command::new(&args.minik8s)
        .arg("proxy")
        .arg("--kubeconfig")
        .arg(&args.kubeconfig)
        .args(["--netns", &netns.0])
        .env("RUST_LOG", "warn,proxy=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting minik8s proxy")?;
    let pid = child.id().context("proxy pid")?;
    let stderr = child.stderr.take().context("proxy stderr")?;
    let (tx, mut syncs) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some(s) = parse_sync(&l) {
                let _ = tx.send(s);
            } else if l.contains("ERROR") || l.contains("WARN") {
                eprintln!("proxy: {l}");
            }
        }
    });

    // The first sync with every Service (the `kubernetes` Service is one more).
    let first = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(s) = syncs.recv().await {
            if s.services > args.services {
                return Some(s);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the proxy never synced every Service")?;
    println!(
        "full sync of {} Services x {} endpoints: {:.1} ms (render {:.1} ms, apply {:.1} ms in {} iptables-restore inputs; target <= 300 ms)",
        args.services, args.endpoints, first.elapsed_ms, first.render_ms, first.apply_ms, first.restores
    );

    // Endpoint changes, each after the minimum sync period (1 s) has passed.
    let mut visible = Vec::new();
    let mut synced = Vec::new();
    let mut rendered = Vec::new();
    let mut last_patch = None;
    for k in 0..args.events {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        while syncs.try_recv().is_ok() {}
        let i = (k * 97) % args.services;
        let mut ips: Vec<String> = (0..args.endpoints).map(|e| endpoint_ip(i, e)).collect();
        let new_ip = format!("10.{}.{}.{}", 200, k / 250, k % 250 + 1);
        ips[0] = new_ip.clone();
        let changed = slice(i, &ips)?;
        let patch = serde_json::to_value(&changed)?;
        last_patch = Some(changed);
        slices
            .patch(
                &format!("svc-{i:04}-x"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        let t0 = Instant::now();
        let chain = proxy::render::endpoint_chain(
            &format!("{NS}/svc-{i:04}:http"),
            "tcp",
            &format!("{new_ip}:8080"),
        );
        loop {
            let ok = tokio::process::Command::new("ip")
                .args([
                    "netns", "exec", &netns.0, "iptables", "-w", "-t", "nat", "-S",
                ])
                .arg(&chain)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await?
                .success();
            if ok {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                bail!("endpoint change {k} never reached the rules");
            }
        }
        visible.push(micros(t0.elapsed()));
        if let Ok(Some(s)) = tokio::time::timeout(Duration::from_secs(2), syncs.recv()).await {
            synced.push((s.elapsed_ms * 1000.0) as u64);
            rendered.push((s.render_ms * 1000.0) as u64);
        }
    }
    if let Some(l) = Latency::from_samples(&mut visible) {
        println!(
            "endpoint change -> rules in place (seen from the client, incl. watch delivery): p50 {} p99 {} max {} over {}",
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.count
        );
    }
    if let Some(l) = Latency::from_samples(&mut synced) {
        println!(
            "sync after an endpoint event (render + restore, proxy's log): p50 {} p99 {} max {} (target <= 100 ms)",
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us)
        );
    }
    if let Some(l) = Latency::from_samples(&mut rendered) {
        println!(
            "  of which rendering: p50 {} max {}",
            ms(l.p50_us),
            ms(l.max_us)
        );
    }
    let rss = proc_status_kib(pid, "VmRSS")?;
    let hwm = proc_status_kib(pid, "VmHWM")?;
    println!(
        "proxy resident memory at {} Services: {:.1} MiB (peak {:.1} MiB; target <= 30 MB)",
        args.services,
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    child.kill().await?;
    if let Some(mut changed) = last_patch {
        changed.metadata.namespace = Some(NS.into());
        // One more endpoint change than the proxy saw: the floor's partial sync.
        changed.endpoints[0].addresses = vec!["10.250.0.1".into()];
        restore_floor(&svcs, &slices, &client, changed).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_lines() {
        let l = "2026-12-01T11:00:00.1Z DEBUG proxy: synced iptables rules services=1001 changed=1 full=false written=1 chains=4 stale=1 restores=1 read_ms=0.0 render_ms=2.5 apply_ms=80.0 elapsed_ms=82.5";
        assert_eq!(
            parse_sync(l),
            Some(Sync {
                services: 1001,
                elapsed_ms: 82.5,
                render_ms: 2.5,
                apply_ms: 80.0,
                restores: 1
            })
        );
        let old = "DEBUG proxy: synced iptables rules services=1001 chains=4004 elapsed_ms=212.5";
        assert_eq!(parse_sync(old).map(|s| s.elapsed_ms), Some(212.5));
        assert_eq!(parse_sync("something else"), None);
    }
}
