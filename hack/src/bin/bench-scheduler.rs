//! `bench-scheduler`: how fast `minik8s scheduler` places pods, end to end through the API.
//!
//! Against a running API server without a scheduler (`minik8s server --disable-scheduler`):
//! creates `--nodes` Node objects and `--pods` pending pods, starts `minik8s scheduler` as a
//! child process and watches every pod get bound (throughput). Then creates `--paced-pods`
//! more at a steady rate and measures each one from its create response to its binding
//! seen on a watch (per-pod latency). Finally reads the scheduler's resident memory with
//! everything in its cache.
//!
//! ```text
//! hack/bench.sh   # runs it in its scheduler section
//! cargo run --release -p hack --bin bench-scheduler -- --kubeconfig K --minik8s target/release/minik8s
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use hack::{micros, ms, proc_cpu_seconds, proc_status_kib, require_loopback_url, Latency};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;

/// Measures scheduling throughput, latency and memory.
#[derive(Parser, Debug)]
#[command(name = "bench-scheduler", version)]
struct Args {
    /// Kubeconfig of the server (loopback only)
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// The minik8s binary to run `minik8s scheduler` from
    #[arg(long, default_value = "target/release/minik8s")]
    minik8s: PathBuf,
    /// Node objects to create
    #[arg(long, default_value_t = 1000)]
    nodes: usize,
    /// Pending pods created before the scheduler starts
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Pods created afterwards at a steady rate, each timed
    #[arg(long, default_value_t = 1000)]
    paced_pods: usize,
    /// Creation rate of the paced pods, per second
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Concurrent creates
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Give up after this many seconds per phase
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

const NS: &str = "bench-scheduler";

fn node(i: usize) -> anyhow::Result<Node> {
    let name = format!("bench-node-{i:04}");
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))?)
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    }))?)
}

async fn create_all<K, F>(api: &Api<K>, n: usize, conc: usize, make: F) -> anyhow::Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    F: Fn(usize) -> anyhow::Result<K>,
{
    let objs: Vec<K> = (0..n).map(&make).collect::<anyhow::Result<_>>()?;
    futures::stream::iter(objs.into_iter().map(|o| {
        let api = api.clone();
        async move { api.create(&PostParams::default(), &o).await.map(|_| ()) }
    }))
    .buffer_unordered(conc)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// When each pod was first seen bound, by name.
type Bound = Arc<Mutex<HashMap<String, Instant>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kc = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    require_loopback_url(&cfg.cluster_url.to_string())?;
    let client = kube::Client::try_from(cfg)?;

    let ns: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the bench namespace (is the server fresh?)")?;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let t = Instant::now();
    create_all(&nodes, args.nodes, args.concurrency, node).await?;
    println!(
        "created {} nodes in {:.1} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    create_all(&pods, args.pods, args.concurrency, |i| {
        pod(&format!("bulk-{i:05}"))
    })
    .await?;
    println!(
        "created {} pending pods in {:.1} s",
        args.pods,
        t.elapsed().as_secs_f64()
    );

    // Watch bindings.
    let bound: Bound = Arc::default();
    let b2 = bound.clone();
    let watch_api = pods.clone();
    let watch = tokio::spawn(async move {
        let s = watcher(watch_api, watcher::Config::default());
        futures::pin_mut!(s);
        while let Some(ev) = s.next().await {
            let p = match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                _ => continue,
            };
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                let now = Instant::now();
                if let Ok(mut b) = b2.lock() {
                    b.entry(p.metadata.name.clone().unwrap_or_default())
                        .or_insert(now);
                }
            }
        }
    });
    let count = |b: &Bound| b.lock().map(|b| b.len()).unwrap_or(0);

    let log = std::fs::File::create(std::env::temp_dir().join("bench-scheduler.log"))?;
    let started = Instant::now();
    let mut child = std::process::Command::new(&args.minik8s)
        .arg("scheduler")
        .arg(format!("--kubeconfig={}", args.kubeconfig.display()))
        .arg("--leader-elect=false")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.minik8s.display()))?;
    let pid = child.id();
    let result = async {
        let deadline = started + Duration::from_secs(args.timeout);
        while count(&bound) < args.pods {
            if Instant::now() > deadline {
                bail!("only {} of {} pods bound in {} s", count(&bound), args.pods, args.timeout);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let done = Instant::now();
        let (first, last) = {
            let b = bound.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let first = b.values().min().copied().unwrap_or(done);
            let last = b.values().max().copied().unwrap_or(done);
            (first, last)
        };
        let span = last.duration_since(first).as_secs_f64().max(1e-3);
        println!(
            "bulk: {} pods bound in {:.2} s from scheduler start ({:.0} pods/s); {:.2} s from first to last binding ({:.0} pods/s)",
            args.pods,
            done.duration_since(started).as_secs_f64(),
            args.pods as f64 / done.duration_since(started).as_secs_f64(),
            span,
            args.pods as f64 / span,
        );
        let rss = proc_status_kib(pid, "VmRSS")?;
        let hwm = proc_status_kib(pid, "VmHWM")?;
        println!(
            "scheduler memory with {} nodes and {} pods cached: VmRSS {:.1} MiB, peak VmHWM {:.1} MiB",
            args.nodes,
            args.pods,
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );

        // Paced pods, each timed from its create response to its binding on the watch.
        let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
        let mut tick = tokio::time::interval(interval);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..args.paced_pods {
            tick.tick().await;
            let name = format!("paced-{i:05}");
            let api = pods.clone();
            let created = created.clone();
            let p = pod(&name)?;
            tasks.spawn(async move {
                api.create(&PostParams::default(), &p).await?;
                if let Ok(mut c) = created.lock() {
                    c.insert(name, Instant::now());
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        let deadline = Instant::now() + Duration::from_secs(args.timeout);
        while count(&bound) < args.pods + args.paced_pods {
            if Instant::now() > deadline {
                bail!("paced pods not all bound in {} s", args.timeout);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut samples: Vec<u64> = {
            let b = bound.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            let c = created.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            c.iter()
                .map(|(n, at)| {
                    // A binding seen before the create response returned counts as 0.
                    b.get(n).map_or(0, |bt| micros(bt.saturating_duration_since(*at)))
                })
                .collect()
        };
        if let Some(l) = Latency::from_samples(&mut samples) {
            println!(
                "paced: {} pods at {}/s, create response -> binding seen: p50 {} p99 {} max {}",
                args.paced_pods,
                args.rate,
                ms(l.p50_us),
                ms(l.p99_us),
                ms(l.max_us)
            );
        }
        println!(
            "scheduler CPU: {:.1} s over {:.1} s; VmRSS now {:.1} MiB",
            proc_cpu_seconds(pid)?,
            started.elapsed().as_secs_f64(),
            proc_status_kib(pid, "VmRSS")? as f64 / 1024.0
        );
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    watch.abort();
    result
}
