//! `bench_controllers`: how fast the controller-manager turns a Deployment scaled 0 → N into
//! N pods, and how much memory it holds with many pods in its caches. Runs against a server
//! and a separate `minik8s controller-manager` process (see `hack/bench-controllers.sh`).
//!
//! ```text
//! cargo run --release -p hack --bin bench_controllers -- --kubeconfig K --controller-manager-pid PID
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use hack::{proc_status_kib, require_loopback_url};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

/// Measures the controller-manager.
#[derive(Parser, Debug)]
#[command(name = "bench_controllers", version)]
struct Args {
    /// Kubeconfig of the server (its URL must be a loopback address).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// PID of the controller-manager process, for its resident memory.
    #[arg(long)]
    controller_manager_pid: Option<u32>,
    /// Replicas to scale the Deployment to.
    #[arg(long, default_value_t = 1000)]
    replicas: i32,
    /// Pods in the cluster in total for the memory figure (bare pods fill up the rest).
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent creates for the bare pods.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

async fn pod_count(api: &Api<Pod>, selector: &str) -> anyhow::Result<usize> {
    Ok(api
        .list_metadata(&ListParams::default().labels(selector))
        .await?
        .items
        .len())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kc = Kubeconfig::read_from(&args.kubeconfig).context("reading kubeconfig")?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    require_loopback_url(&cfg.cluster_url.to_string())?;
    let client = kube::Client::try_from(cfg)?;
    let ns = "bench-controllers";
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
    )
    .await
    .context("creating the namespace (is this a fresh server?)")?;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "scale"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "scale"}},
            "template": {"metadata": {"labels": {"app": "scale"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
        }
    }))?;
    deploys.create(&PostParams::default(), &d).await?;
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    // Wait for the (empty) ReplicaSet, so the measured time is the scale-up alone.
    while deploys
        .get("scale")
        .await?
        .status
        .and_then(|s| s.observed_generation)
        != Some(1)
    {
        if Instant::now() > deadline {
            bail!("the deployment was never observed: is the controller-manager running?");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let start = Instant::now();
    deploys
        .patch_scale(
            "scale",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": args.replicas}})),
        )
        .await?;
    let mut n = 0;
    while n < args.replicas as usize {
        if Instant::now() > deadline {
            bail!(
                "only {n} of {} pods after {} s",
                args.replicas,
                args.timeout
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        n = pod_count(&pods, "app=scale").await?;
    }
    let took = start.elapsed();
    println!(
        "deployment 0 -> {} replicas: all pods created in {:.2} s ({:.0} pods/s)",
        args.replicas,
        took.as_secs_f64(),
        f64::from(args.replicas) / took.as_secs_f64()
    );

    // Fill the cluster with bare pods so the controller-manager caches `pods` of them.
    let extra = args.pods.saturating_sub(args.replicas as usize);
    let start = Instant::now();
    futures::stream::iter(0..extra)
        .map(|i| {
            let pods = pods.clone();
            async move {
                let p: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("filler-{i}"), "labels": {"app": "filler"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}
                }))?;
                pods.create(&PostParams::default(), &p).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .for_each(|r| async move {
            if let Err(e) = r {
                eprintln!("create failed: {e:#}");
            }
        })
        .await;
    println!(
        "{extra} bare pods created in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    if let Some(pid) = args.controller_manager_pid {
        // Sample until resident memory has not grown for 3 s (the watch has caught up).
        let mut last = 0;
        let mut stable_since = Instant::now();
        while stable_since.elapsed() < Duration::from_secs(3)
            && Instant::now() < deadline + Duration::from_secs(60)
        {
            let rss = proc_status_kib(pid, "VmRSS")?;
            if rss > last {
                last = rss;
                stable_since = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let hwm = proc_status_kib(pid, "VmHWM")?;
        println!(
            "controller-manager with {} pods cached: VmRSS {:.1} MiB, peak VmHWM {:.1} MiB",
            args.pods,
            last as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    Ok(())
}
