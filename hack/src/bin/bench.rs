//! `bench`: throughput and latency of a running minik8s API server (and of raw etcd, for
//! comparison). Every phase is bounded in count and in time; only loopback targets.
//!
//! ```text
//! cargo run --release -p hack --bin bench -- --kubeconfig DIR/kubeconfig.yaml --server-pid PID
//! cargo run --release -p hack --bin bench -- --raw-etcd http://127.0.0.1:2379
//! ```

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures::AsyncBufReadExt;
use hack::{micros, ms, proc_status_kib, require_loopback_url, CpuMeter, Latency, Table};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Measures a minik8s API server with 1 KiB ConfigMaps and many concurrent clients.
#[derive(Parser, Debug)]
#[command(name = "bench", version)]
struct Args {
    /// Kubeconfig of the server to measure (its server URL must be a loopback address).
    /// Without it, only the raw etcd phase runs.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Phases to run against the API server
    #[arg(long, value_delimiter = ',', default_value = "create,get,list,watch")]
    phases: Vec<Phase>,

    /// Concurrent clients for create, get and raw etcd puts
    #[arg(long, short = 'n', default_value_t = 64)]
    concurrency: usize,

    /// ConfigMaps to create (and then list); also the number of raw etcd puts
    #[arg(long, default_value_t = 10_000)]
    objects: usize,

    /// Bytes of data in each ConfigMap (and each raw etcd value)
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,

    /// GET requests to make
    #[arg(long, default_value_t = 20_000)]
    gets: usize,

    /// LIST requests of all the created ConfigMaps, one after the other
    #[arg(long, default_value_t = 20)]
    lists: usize,

    /// Concurrent watchers in the fan-out phase
    #[arg(long, short = 'w', default_value_t = 1000)]
    watchers: usize,

    /// Events per second the writer produces in the fan-out phase
    #[arg(long, default_value_t = 500)]
    watch_rate: u32,

    /// Seconds the writer produces events for
    #[arg(long, default_value_t = 10)]
    watch_seconds: u64,

    /// Padding bytes in each watched ConfigMap besides its send-time stamp. Small by
    /// default: 1000 watchers x 500 events/s of 1 KiB objects is ~700 MB/s of TLS on
    /// loopback, which measures the machine's two cores rather than the fan-out.
    #[arg(long, default_value_t = 64)]
    watch_value_bytes: usize,

    /// Seconds any one phase may take before it stops where it is
    #[arg(long, default_value_t = 120)]
    phase_timeout: u64,

    /// PID of the server, to report its resident memory (VmRSS) idle and with the objects
    #[arg(long)]
    server_pid: Option<u32>,

    /// Also measure raw etcd-client puts of the same values at the same concurrency
    /// against this loopback etcd (http://127.0.0.1:PORT)
    #[arg(long, value_name = "URL")]
    raw_etcd: Option<String>,

    /// Name of the target in the table heading
    #[arg(long, default_value = "minik8s")]
    label: String,

    /// Leave the benchmark namespaces in place afterwards
    #[arg(long)]
    keep: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Create,
    Get,
    List,
    Watch,
}

/// One line of the result table.
struct Row {
    phase: String,
    ops: usize,
    errors: usize,
    elapsed: Duration,
    latency: Option<Latency>,
    target: &'static str,
    note: String,
}

impl Row {
    fn rate(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        if self.ops == 0 || secs <= 0.0 {
            return "-".into();
        }
        format!("{:.0}", self.ops as f64 / secs)
    }
}

fn print_table(title: &str, rows: &[Row]) {
    let mut t = Table::new(&[
        "phase", "ops", "errors", "secs", "ops/s", "p50 ms", "p99 ms", "max ms", "target", "note",
    ]);
    for r in rows {
        let lat = |f: fn(&Latency) -> u64| {
            r.latency
                .as_ref()
                .map(|l| ms(f(l)))
                .unwrap_or_else(|| "-".into())
        };
        t.row(vec![
            r.phase.clone(),
            r.ops.to_string(),
            r.errors.to_string(),
            format!("{:.2}", r.elapsed.as_secs_f64()),
            r.rate(),
            lat(|l| l.p50_us),
            lat(|l| l.p99_us),
            lat(|l| l.max_us),
            r.target.to_string(),
            r.note.clone(),
        ]);
    }
    println!("\n== {title}");
    print!("{}", t.render());
}

/// What `run_pool` measured.
struct PoolResult {
    ok: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    samples: Vec<u64>,
}

impl PoolResult {
    fn row(mut self, phase: &str, target: &'static str, mut note: String) -> Row {
        if let Some(e) = &self.first_error {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(&format!("first error: {e}"));
        }
        Row {
            phase: phase.into(),
            ops: self.ok,
            errors: self.errors,
            elapsed: self.elapsed,
            latency: Latency::from_samples(&mut self.samples),
            target,
            note,
        }
    }
}

/// Runs `op(0..total)` on `workers` concurrent tasks until all are done or `limit` passes,
/// timing each call.
async fn run_pool<F, Fut>(workers: usize, total: usize, limit: Duration, op: F) -> PoolResult
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let mut tasks = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let next = next.clone();
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                match tokio::time::timeout_at(deadline.into(), op(i)).await {
                    Ok(Ok(())) => samples.push(micros(t0.elapsed())),
                    Ok(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => break,
                }
            }
            (samples, errors, first_error)
        }));
    }
    let mut result = PoolResult {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        samples: Vec::with_capacity(total.min(1 << 20)),
    };
    for task in tasks {
        match task.await {
            Ok((samples, errors, first_error)) => {
                result.samples.extend(samples);
                result.errors += errors;
                if result.first_error.is_none() {
                    result.first_error = first_error;
                }
            }
            Err(e) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("worker panicked: {e}"));
            }
        }
    }
    result.elapsed = start.elapsed();
    result.ok = result.samples.len();
    result
}

/// A thin JSON-over-HTTP client: raw bodies in and out, so the client does as little as
/// possible and the figures are the server's.
#[derive(Clone)]
struct Api {
    client: kube::Client,
}

impl Api {
    async fn new(path: &std::path::Path) -> anyhow::Result<Api> {
        let kubeconfig = Kubeconfig::read_from(path)
            .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
        let mut config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .context("invalid kubeconfig")?;
        require_loopback_url(&config.cluster_url.to_string())?;
        config.read_timeout = None;
        config.write_timeout = Some(Duration::from_secs(60));
        let client = kube::Client::try_from(config).context("cannot build the client")?;
        Ok(Api { client })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "application/json");
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req.body(kube::client::Body::from(body.unwrap_or_default()))?;
        let res = self
            .client
            .send(req)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect_bytes()
            .await
            .with_context(|| format!("{method} {path}: body"))?;
        Ok((status, bytes))
    }

    /// Sends a request and fails unless the status is 2xx.
    async fn call(&self, method: &str, path: &str, body: Option<Bytes>) -> anyhow::Result<Bytes> {
        let (status, bytes) = self.send(method, path, body).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
            bail!("{method} {path}: {status}: {text}");
        }
        Ok(bytes)
    }

    async fn json(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let body = body.map(|b| Bytes::from(b.to_string()));
        let bytes = self.call(method, path, body).await?;
        serde_json::from_slice(&bytes).with_context(|| format!("{method} {path}: invalid JSON"))
    }

    async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        self.json("POST", "/api/v1/namespaces", Some(ns))
            .await
            .map(|_| ())
    }

    async fn delete_namespace(&self, name: &str) {
        if let Err(e) = self
            .call("DELETE", &format!("/api/v1/namespaces/{name}"), None)
            .await
        {
            eprintln!("cleanup: {e:#}");
        }
    }
}

fn now_unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(micros)
        .unwrap_or(0)
}

fn configmap_name(i: usize) -> String {
    format!("cm-{i:06}")
}

/// A ConfigMap body with `value_bytes` of data, as JSON bytes.
fn configmap_body(name: &str, data: &serde_json::Value) -> Bytes {
    let cm = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/created-by": "minik8s-bench"}},
        "data": data,
    });
    Bytes::from(cm.to_string())
}

fn padding(n: usize) -> String {
    "abcdefghijklmnopqrstuvwxyz0123456789"
        .chars()
        .cycle()
        .take(n)
        .collect()
}

fn rss_row(pid: Option<u32>, what: &str, target: &'static str) -> Option<Row> {
    let pid = pid?;
    let note = match (proc_status_kib(pid, "VmRSS"), proc_status_kib(pid, "VmHWM")) {
        (Ok(rss), Ok(hwm)) => format!(
            "VmRSS {:.1} MiB (peak VmHWM {:.1} MiB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
        (Err(e), _) | (_, Err(e)) => format!("{e:#}"),
    };
    Some(Row {
        phase: format!("server RSS {what}"),
        ops: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: None,
        target,
        note,
    })
}

async fn bench_server(args: &Args, kubeconfig: &std::path::Path) -> anyhow::Result<Vec<Row>> {
    let api = Api::new(kubeconfig).await?;
    let limit = Duration::from_secs(args.phase_timeout);
    let mut rows = Vec::new();
    rows.extend(rss_row(args.server_pid, "idle", "<= 60 MiB"));

    let run_id = format!("{}-{}", std::process::id(), now_unix_micros() % 1_000_000);
    let ns = format!("bench-{run_id}");
    api.create_namespace(&ns)
        .await
        .context("cannot create the benchmark namespace")?;
    println!(
        "namespace {ns}: {} ConfigMaps of {} bytes, {} clients",
        args.objects, args.value_bytes, args.concurrency
    );

    // Open the connections before timing anything.
    {
        let api = api.clone();
        let path = format!("/api/v1/namespaces/{ns}");
        let n = args.concurrency * 2;
        let warm = run_pool(args.concurrency, n, limit, move |_| {
            let api = api.clone();
            let path = path.clone();
            async move { api.call("GET", &path, None).await.map(|_| ()) }
        })
        .await;
        if warm.ok == 0 {
            bail!("warm-up: {}", warm.first_error.unwrap_or_default());
        }
    }

    let phases = &args.phases;
    let mut created = 0;
    if phases.contains(&Phase::Create) {
        let data = serde_json::json!({"value": padding(args.value_bytes)});
        let api = api.clone();
        let path = format!("/api/v1/namespaces/{ns}/configmaps");
        let cpu = CpuMeter::start(args.server_pid);
        let res = run_pool(args.concurrency, args.objects, limit, move |i| {
            let api = api.clone();
            let path = path.clone();
            let body = configmap_body(&configmap_name(i), &data);
            async move { api.call("POST", &path, Some(body)).await.map(|_| ()) }
        })
        .await;
        created = res.ok;
        rows.push(res.row("create", ">= 5000/s, p99 <= 20 ms", cpu.summary()));
    }

    if phases.contains(&Phase::Get) && created > 0 {
        let api = api.clone();
        let ns = ns.clone();
        // Names are created in order, so 0..created exist unless a create failed.
        let cpu = CpuMeter::start(args.server_pid);
        let res = run_pool(args.concurrency, args.gets, limit, move |i| {
            let api = api.clone();
            let path = format!(
                "/api/v1/namespaces/{ns}/configmaps/{}",
                configmap_name((i * 7919) % created)
            );
            async move { api.call("GET", &path, None).await.map(|_| ()) }
        })
        .await;
        rows.push(res.row("get", ">= 20000/s", cpu.summary()));
    }

    if phases.contains(&Phase::List) && created > 0 {
        for (label, query) in [
            ("list (consistent)", ""),
            ("list (rv=0)", "?resourceVersion=0"),
        ] {
            let path = format!("/api/v1/namespaces/{ns}/configmaps{query}");
            let body = api.call("GET", &path, None).await?;
            let list: serde_json::Value =
                serde_json::from_slice(&body).context("LIST: invalid JSON")?;
            let items = list["items"].as_array().map(Vec::len).unwrap_or(0);
            let note = format!(
                "{items} items, {:.1} MiB",
                body.len() as f64 / (1024.0 * 1024.0)
            );
            let api = api.clone();
            let cpu = CpuMeter::start(args.server_pid);
            let res = run_pool(1, args.lists, limit, move |_| {
                let api = api.clone();
                let path = path.clone();
                async move { api.call("GET", &path, None).await.map(|_| ()) }
            })
            .await;
            let note = format!("{note}; {}", cpu.summary());
            rows.push(res.row(&format!("{label} of {created}"), "<= 50 ms", note));
        }
    }
    if created > 0 {
        rows.extend(rss_row(
            args.server_pid,
            &format!("with {created} ConfigMaps"),
            "<= 150 MiB",
        ));
    }

    if phases.contains(&Phase::Watch) {
        match watch_fanout(args, &api, &format!("bench-watch-{run_id}")).await {
            Ok(row) => rows.push(row),
            Err(e) => rows.push(Row {
                phase: format!("watch fan-out ({} watchers)", args.watchers),
                ops: 0,
                errors: 1,
                elapsed: Duration::ZERO,
                latency: None,
                target: "every event, p99 <= 50 ms",
                note: format!("{e:#}"),
            }),
        }
        rows.extend(rss_row(args.server_pid, "after the watch phase", ""));
    }

    if !args.keep {
        api.delete_namespace(&ns).await;
        if phases.contains(&Phase::Watch) {
            api.delete_namespace(&format!("bench-watch-{run_id}")).await;
        }
    }
    Ok(rows)
}

/// The send time stamped into an event's object, if the line is an ADDED event.
fn added_stamp(line: &[u8]) -> Option<u64> {
    const ADDED: &[u8] = br#""type":"ADDED""#;
    if !line.starts_with(b"{\"type\":\"ADDED\"") {
        find(line, ADDED)?;
    }
    let at = find(line, br#""sent":"#)? + br#""sent":"#.len();
    let rest = &line[at..];
    let rest = rest
        .iter()
        .position(|b| b.is_ascii_digit())
        .map(|i| &rest[i..])?;
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// Where `needle` first occurs. A byte scan for its first byte, then a compare: this runs
/// for every event at every watcher, so it must cost next to nothing next to the server.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = haystack.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at + 1..].starts_with(rest) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// W watchers each must receive every one of the writer's creates; latency is receipt
/// time minus the send time stamped into the object.
async fn watch_fanout(args: &Args, api: &Api, ns: &str) -> anyhow::Result<Row> {
    let phase = format!(
        "watch fan-out ({} watchers, {}/s for {}s)",
        args.watchers, args.watch_rate, args.watch_seconds
    );
    let target = "every event, p99 <= 50 ms";
    api.create_namespace(ns).await?;
    let list = api
        .json(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps?limit=1"),
            None,
        )
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let produce_for = Duration::from_secs(args.watch_seconds);
    let drain = Duration::from_secs(30);
    let timeout_seconds = (produce_for + drain).as_secs() + 30;

    let connected = Arc::new(AtomicUsize::new(0));
    let counts: Arc<Vec<AtomicUsize>> =
        Arc::new((0..args.watchers).map(|_| AtomicUsize::new(0)).collect());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut watchers = Vec::with_capacity(args.watchers);
    for w in 0..args.watchers {
        let client = api.client.clone();
        let path = format!(
            "/api/v1/namespaces/{ns}/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds={timeout_seconds}"
        );
        let connected = connected.clone();
        let counts = counts.clone();
        let mut stop = stop_rx.clone();
        watchers.push(tokio::spawn(async move {
            let req = http::Request::builder()
                .uri(path)
                .header("accept", "application/json")
                .body(Vec::new())?;
            let mut body = std::pin::pin!(client.request_stream(req).await?);
            connected.fetch_add(1, Ordering::Relaxed);
            let mut samples = Vec::new();
            let mut other = 0usize;
            let mut line = Vec::with_capacity(4096);
            loop {
                line.clear();
                tokio::select! {
                    read = body.read_until(b'\n', &mut line) => {
                        if read? == 0 {
                            break;
                        }
                        let now = now_unix_micros();
                        match added_stamp(&line) {
                            Some(sent) => {
                                samples.push(now.saturating_sub(sent));
                                counts[w].fetch_add(1, Ordering::Relaxed);
                            }
                            None => other += 1,
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
            anyhow::Ok((samples, other))
        }));
    }

    // Every watch must be established before the writer starts, or latency means nothing.
    let connect_deadline = Instant::now() + Duration::from_secs(60);
    while connected.load(Ordering::Relaxed) < args.watchers {
        if Instant::now() > connect_deadline || watchers.iter().all(|w| w.is_finished()) {
            let _ = stop_tx.send(true);
            bail!(
                "only {}/{} watches connected within 60 s",
                connected.load(Ordering::Relaxed),
                args.watchers
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The writer: one create per tick, at most 64 in flight.
    let data_pad = padding(args.watch_value_bytes);
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    let produced = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let period = Duration::from_secs_f64(1.0 / f64::from(args.watch_rate.max(1)));
    let mut tick = tokio::time::interval(period);
    // Late ticks are made up at once: the offered load stays at the asked rate.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let cpu = CpuMeter::start(args.server_pid);
    let start = Instant::now();
    let mut writes = Vec::new();
    let mut seq = 0usize;
    while start.elapsed() < produce_for {
        tick.tick().await;
        let permit = permits.clone().acquire_owned().await?;
        let api = api.clone();
        let path = format!("/api/v1/namespaces/{ns}/configmaps");
        let name = format!("ev-{seq:07}");
        seq += 1;
        let (produced, failed, pad) = (produced.clone(), failed.clone(), data_pad.clone());
        writes.push(tokio::spawn(async move {
            // "sent" sorts before "tail": servers that order keys put the stamp first.
            let data = serde_json::json!({"sent": now_unix_micros().to_string(), "tail": pad});
            match api
                .call("POST", &path, Some(configmap_body(&name, &data)))
                .await
            {
                Ok(_) => produced.fetch_add(1, Ordering::Relaxed),
                Err(_) => failed.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        }));
    }
    for w in writes {
        let _ = w.await;
    }
    let write_secs = start.elapsed();
    let produced = produced.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);

    // Wait until every watcher has every event, or the drain time passes.
    let drain_deadline = Instant::now() + drain;
    loop {
        let min = counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        if min >= produced || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_after = start.elapsed().saturating_sub(write_secs);
    let cpu_summary = cpu.summary();
    let _ = stop_tx.send(true);

    let mut samples = Vec::with_capacity(produced * args.watchers);
    let mut complete = 0usize;
    let mut watch_errors = 0usize;
    let mut first_error = None;
    let (mut min_got, mut max_got) = (usize::MAX, 0usize);
    for w in watchers {
        match w.await {
            Ok(Ok((s, _other))) => {
                min_got = min_got.min(s.len());
                max_got = max_got.max(s.len());
                if s.len() >= produced {
                    complete += 1;
                }
                samples.extend(s);
            }
            Ok(Err(e)) => {
                watch_errors += 1;
                min_got = 0;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
            Err(e) => {
                watch_errors += 1;
                min_got = 0;
                first_error.get_or_insert_with(|| format!("watcher panicked: {e}"));
            }
        }
    }
    let delivered = samples.len();
    let mut note = format!(
        "{produced} events written ({failed} failed) at {:.0}/s; {complete}/{} watchers got all; per watcher {}..{} of {produced}",
        produced as f64 / write_secs.as_secs_f64(),
        args.watchers,
        if min_got == usize::MAX { 0 } else { min_got },
        max_got,
    );
    note.push_str(&format!(
        "; drained {:.1} s after the writer stopped; {cpu_summary}",
        drained_after.as_secs_f64()
    ));
    if let Some(e) = first_error {
        note.push_str(&format!("; first error: {e}"));
    }
    Ok(Row {
        phase,
        ops: delivered,
        errors: watch_errors + (produced * args.watchers).saturating_sub(delivered),
        elapsed: write_secs,
        latency: Latency::from_samples(&mut samples),
        target,
        note,
    })
}

async fn bench_raw_etcd(args: &Args, url: &str) -> anyhow::Result<Vec<Row>> {
    require_loopback_url(url)?;
    let client = etcd_client::Client::connect([url], None)
        .await
        .with_context(|| format!("cannot connect to etcd at {url}"))?;
    let prefix = format!(
        "/minik8s-bench/{}-{}/",
        std::process::id(),
        now_unix_micros()
    );
    let value = Bytes::from(padding(args.value_bytes));
    let mut rows = Vec::new();
    // Plain puts: the reference the issue names.
    let res = {
        let (client, prefix, value) = (client.clone(), format!("{prefix}put/"), value.clone());
        run_pool(
            args.concurrency,
            args.objects,
            Duration::from_secs(args.phase_timeout),
            move |i| {
                let mut kv = client.kv_client();
                let key = format!("{prefix}{i:06}");
                let value = value.clone();
                async move {
                    kv.put(key, value.to_vec(), None)
                        .await
                        .map(|_| ())
                        .map_err(Into::into)
                }
            },
        )
        .await
    };
    rows.push(res.row("raw etcd-client put", "(reference)", String::new()));
    // The transaction a create is (put if the key does not exist): what the API server
    // asks of etcd per create, without the server.
    let res = {
        let (client, prefix) = (client.clone(), format!("{prefix}txn/"));
        run_pool(
            args.concurrency,
            args.objects,
            Duration::from_secs(args.phase_timeout),
            move |i| {
                let mut kv = client.kv_client();
                let key = format!("{prefix}{i:06}");
                let value = value.clone();
                async move {
                    let txn = etcd_client::Txn::new()
                        .when(vec![etcd_client::Compare::create_revision(
                            key.clone(),
                            etcd_client::CompareOp::Equal,
                            0,
                        )])
                        .and_then(vec![etcd_client::TxnOp::put(key, value.to_vec(), None)]);
                    kv.txn(txn).await.map(|_| ()).map_err(Into::into)
                }
            },
        )
        .await
    };
    rows.push(res.row(
        "raw etcd-client create txn",
        "(what a create asks of etcd)",
        String::new(),
    ));
    let mut kv = client.kv_client();
    if let Err(e) = kv
        .delete(
            prefix.clone(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
    {
        eprintln!("cleanup of {prefix}: {e}");
    }
    Ok(rows)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.kubeconfig.is_none() && args.raw_etcd.is_none() {
        bail!("nothing to measure: give --kubeconfig (or KUBECONFIG) and/or --raw-etcd");
    }
    if let Some(url) = &args.raw_etcd {
        require_loopback_url(url)?;
    }
    let mut failed = false;
    if let Some(kubeconfig) = &args.kubeconfig {
        let rows = bench_server(&args, kubeconfig).await?;
        failed |= rows.iter().any(|r| r.errors > 0);
        print_table(&args.label, &rows);
    }
    if let Some(url) = &args.raw_etcd {
        let rows = bench_raw_etcd(&args, url).await?;
        failed |= rows.iter().any(|r| r.errors > 0);
        print_table(&format!("raw etcd {url}"), &rows);
    }
    if failed {
        bail!("some operations failed (see the errors column)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_stamp_of_added_events() {
        let line = br#"{"type":"ADDED","object":{"kind":"ConfigMap","data":{"pad":"x","sent":"1700000000123456"}}}"#;
        assert_eq!(added_stamp(line), Some(1_700_000_000_123_456));
        let spaced = br#"{"type":"ADDED","object":{"data":{"sent": "42"}}}"#;
        assert_eq!(added_stamp(spaced), Some(42));
        let late = br#"{"object":{"data":{"sent":"7"}},"type":"ADDED"}"#;
        assert_eq!(added_stamp(late), Some(7));
        let modified = br#"{"type":"MODIFIED","object":{"data":{"sent":"42"}}}"#;
        assert_eq!(added_stamp(modified), None);
        assert_eq!(added_stamp(br#"{"type":"BOOKMARK","object":{}}"#), None);
    }

    #[test]
    fn find_locates_needles() {
        assert_eq!(find(b"a\"b\"sent\":", b"\"sent\":"), Some(3));
        assert_eq!(find(b"\"\"\"", b"\"x"), None);
        assert_eq!(find(b"abc", b""), None);
        assert_eq!(find(b"ab", b"abc"), None);
    }

    #[test]
    fn bodies_carry_the_value() {
        let body = configmap_body("cm-000001", &serde_json::json!({"value": padding(1024)}));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["data"]["value"].as_str().map(str::len), Some(1024));
        assert_eq!(configmap_name(7), "cm-000007");
    }
}
