//! `bench_dns`: queries per second the cluster DNS answers for cluster names, and how long
//! a new Service takes to be answered. Runs against a server and a separate `minik8s dns`
//! process (see `hack/bench-dns.sh`).
//!
//! ```text
//! cargo run --release -p hack --bin bench_dns -- --kubeconfig K --dns 127.0.0.1:PORT
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use hack::require_loopback_url;
use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use tokio::net::UdpSocket;

/// Measures the cluster DNS.
#[derive(Parser, Debug)]
#[command(name = "bench_dns", version)]
struct Args {
    /// Kubeconfig of the server (its URL must be a loopback address).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Where the DNS server listens (a loopback address).
    #[arg(long)]
    dns: SocketAddr,
    /// Services to create before measuring.
    #[arg(long, default_value_t = 1000)]
    services: usize,
    /// Concurrent clients (each its own UDP socket, one query in flight).
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// New Services timed from create to first answer.
    #[arg(long, default_value_t = 20)]
    new_services: usize,
}

fn query_bytes(name: &str, id: u16) -> anyhow::Result<Vec<u8>> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    Ok(m.to_vec()?)
}

/// Asks once; Some(answer count) on a NOERROR answer.
async fn ask(sock: &UdpSocket, name: &str) -> anyhow::Result<Option<usize>> {
    sock.send(&query_bytes(name, rand_id())?).await?;
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .context("no answer within 2 s")??;
    let m = Message::from_vec(&buf[..n])?;
    Ok((m.metadata.response_code == ResponseCode::NoError).then_some(m.answers.len()))
}

/// A fresh query id (distinct for consecutive queries).
fn rand_id() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.dns.ip().is_loopback() {
        bail!("--dns must be a loopback address, not {}", args.dns);
    }
    let kc = Kubeconfig::read_from(&args.kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    require_loopback_url(&cfg.cluster_url.to_string())?;
    let client = kube::Client::try_from(cfg)?;
    let ns = "bench-dns";
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
        )
        .await?;
    let svcs: Api<Service> = Api::namespaced(client.clone(), ns);
    let svc = |name: String| -> anyhow::Result<Service> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"ports": [{"name": "http", "port": 80}]}
        }))?)
    };
    eprintln!("creating {} Services", args.services);
    let started = Instant::now();
    futures::stream::iter(0..args.services)
        .map(|i| {
            let svcs = svcs.clone();
            let s = svc(format!("svc-{i}"));
            async move {
                svcs.create(&PostParams::default(), &s?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!("created in {:?}", started.elapsed());

    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(args.dns).await?;
    let last = format!(
        "svc-{}.{ns}.svc.cluster.local.",
        args.services.saturating_sub(1)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while ask(&sock, &last).await? != Some(1) {
        if Instant::now() > deadline {
            bail!("{last} not answered within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Load: each client loops over the Services' names, one query in flight.
    let count = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (count, errors, stop) = (count.clone(), errors.clone(), stop.clone());
        let queries: Vec<Vec<u8>> = (0..args.services.max(1))
            .map(|i| {
                let name = format!(
                    "svc-{}.{ns}.svc.cluster.local.",
                    (i + c * 7) % args.services.max(1)
                );
                query_bytes(&name, i as u16)
            })
            .collect::<Result<_, _>>()?;
        let dns = args.dns;
        tasks.push(tokio::spawn(async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await?;
            sock.connect(dns).await?;
            let mut buf = [0u8; 1500];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                sock.send(&queries[i % queries.len()]).await?;
                match tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await {
                    Ok(Ok(n)) if n > 12 && buf[3] & 0x0f == 0 => {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t0.elapsed();
    for t in tasks {
        t.await??;
    }
    let answered = count.load(Ordering::Relaxed);
    let qps = answered as f64 / elapsed.as_secs_f64();
    println!(
        "queries/s for cluster names: {qps:.0} ({answered} answers, {} errors or timeouts, {} clients, {} Services, {:.1} s)",
        errors.load(Ordering::Relaxed),
        args.clients,
        args.services,
        elapsed.as_secs_f64()
    );

    // A new Service: from the create call returning to the first answer.
    let mut times = Vec::new();
    for i in 0..args.new_services {
        let name = format!("new-{i}");
        svcs.create(&PostParams::default(), &svc(name.clone())?)
            .await?;
        let t = Instant::now();
        let fqdn = format!("{name}.{ns}.svc.cluster.local.");
        loop {
            if ask(&sock, &fqdn).await? == Some(1) {
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                bail!("{fqdn} not answered within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        times.push(t.elapsed());
    }
    times.sort();
    if let (Some(first), Some(last)) = (times.first(), times.last()) {
        println!(
            "new Service answered after: median {:?}, min {first:?}, max {last:?} ({} Services)",
            times[times.len() / 2],
            times.len()
        );
    }
    Ok(())
}
