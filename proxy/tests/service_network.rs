//! Service networking end to end on the real Docker Engine and the host's iptables: an
//! in-process API server, controller-manager (node IPAM, endpoint slices, deployments),
//! scheduler, two kubelets (two nodes sharing this Docker Engine, each with its own bridge on
//! its own podCIDR) and the proxy. A Deployment of 3 busybox httpd replicas spread over both
//! nodes sits behind a NodePort Service; a client pod on one node talks to it.
//!
//! The cluster uses a pod CIDR and a Service CIDR of its own (random per run), so its bridges,
//! routes and rules never meet another cluster's; everything it made is removed at the end,
//! also when a check fails.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "minik8s-test/busybox:latest";
/// How long a component may take to stop after its shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest one `docker exec` of the checks may run (60 requests with `nc -w 2` fit).
const EXEC_TIMEOUT: Duration = Duration::from_secs(150);
/// Longest all the checks may take together.
const CHECKS_TIMEOUT: Duration = Duration::from_secs(420);
const NS: &str = "podnet";
/// A replica: serves its pod name at /, the caller's address at /cgi-bin/ip, and is ready
/// while /www/healthz exists.
const WEB_SCRIPT: &str = r#"
mkdir -p /www/cgi-bin
echo $POD_NAME > /www/index.html
touch /www/healthz
printf '#!/bin/sh\nprintf "Content-Type: text/plain\\r\\n\\r\\n%%s\\n" "$REMOTE_ADDR"\n' > /www/cgi-bin/ip
chmod +x /www/cgi-bin/ip
exec httpd -f -p 8080 -h /www
"#;

fn ensure_image() -> Result<()> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hack/images.sh");
    let st = std::process::Command::new("bash").arg(script).status()?;
    if !st.success() {
        bail!("hack/images.sh failed");
    }
    Ok(())
}

/// A component's flags as parsed from the command line.
fn parse<T: clap::Args + clap::FromArgMatches>(args: &[&str]) -> Result<T> {
    let cmd = T::augment_args(clap::Command::new("test"));
    let m = cmd.try_get_matches_from(std::iter::once("test").chain(args.iter().copied()))?;
    Ok(T::from_arg_matches(&m)?)
}

/// Polls `f` every 50 ms until it yields `Some`, at most `timeout`.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Cluster {
    client: kube::Client,
    nodes: [String; 2],
    cluster_cidr: String,
    docker: kubelet::docker::Docker,
    stops: Vec<CancellationToken>,
    tasks: Vec<(String, tokio::task::JoinHandle<Result<()>>)>,
    api_stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Result<Cluster> {
        ensure_image()?;
        let r = std::process::id() % 200;
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
        // 10.200-10.249 for pods, 172.31.x for Services: away from Docker's and the defaults,
        // and from the networks already on this Docker Engine (another run's, maybe left over
        // by one that was killed: a bridge on an overlapping subnet cannot be created).
        let probe =
            kubelet::docker::Docker::connect("unix:///var/run/docker.sock", "probe").await?;
        let taken: Vec<String> = probe
            .api()
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await?
            .into_iter()
            .flat_map(|n| n.ipam.and_then(|i| i.config).unwrap_or_default())
            .filter_map(|c| c.subnet)
            .collect();
        let second = (0..50)
            .map(|i| 200 + (r + i) % 50)
            .find(|o| !taken.iter().any(|t| t.starts_with(&format!("10.{o}."))))
            .ok_or_else(|| anyhow!("no free 10.200-249.0.0/16 on this Docker Engine: {taken:?}"))?;
        let cluster_cidr = format!("10.{second}.0.0/16");
        let service_cidr = format!("172.31.{}.0/24", r);
        let dir = tempfile::tempdir()?;
        let api_stop = CancellationToken::new();
        let mut cfg = apiserver::Config::for_test(dir.path().join("api"));
        cfg.service_cluster_ip_range = service_cidr;
        let server = apiserver::start(cfg, api_stop.clone()).await?;
        let kc = server.kubeconfig.display().to_string();
        let client = client::from_kubeconfig(&server.kubeconfig).await?;
        let nodes = [format!("pn-a-{suffix}"), format!("pn-b-{suffix}")];
        let docker =
            kubelet::docker::Docker::connect("unix:///var/run/docker.sock", &nodes[0]).await?;
        let mut c = Cluster {
            client,
            nodes: nodes.clone(),
            cluster_cidr: cluster_cidr.clone(),
            docker,
            stops: Vec::new(),
            tasks: Vec::new(),
            api_stop,
            _dir: dir,
        };
        let kcf = format!("--kubeconfig={kc}");
        let cc = format!("--cluster-cidr={cluster_cidr}");
        let ctl: controllers::Config = parse(&[&kcf, &cc])?;
        c.spawn("controller-manager", |s| controllers::run(ctl, s));
        let sched: scheduler::Config = parse(&[&kcf])?;
        c.spawn("scheduler", |s| scheduler::run(sched, s));
        for (i, node) in nodes.iter().enumerate() {
            let root = c._dir.path().join(format!("kubelet-{i}"));
            let root = format!("--root-dir={}", root.display());
            let name = format!("--node-name={node}");
            let k: kubelet::Config = parse(&[
                &kcf,
                &name,
                &root,
                &cc,
                "--address=127.0.0.1",
                "--port=0",
                "--pod-cidr-timeout=30s",
                "--sync-frequency=2s",
            ])?;
            c.spawn(&format!("kubelet {node}"), |s| kubelet::run(k, s));
        }
        // The proxy syncs at most every 250 ms here (1 s by default).
        let p: proxy::Config = parse(&[&kcf, &cc, "--min-sync-period=250ms"])?;
        c.spawn("proxy", |s| proxy::run(p, s));
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
        Api::<Namespace>::all(c.client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(c)
    }

    fn spawn<F, Fut>(&mut self, name: &str, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: std::future::Future<Output = Result<()>> + Send + 'static,
    {
        let stop = CancellationToken::new();
        self.tasks
            .push((name.to_string(), tokio::spawn(f(stop.clone()))));
        self.stops.push(stop);
    }

    /// Stops everything and removes the containers, networks and rules the cluster made.
    /// Fails when a component does not stop within [`STOP_TIMEOUT`] of its shutdown (it is
    /// then aborted, and the cleanup goes on).
    async fn cleanup(self) -> Result<()> {
        for s in &self.stops {
            s.cancel();
        }
        let mut stuck = Vec::new();
        for (name, t) in self.tasks {
            let abort = t.abort_handle();
            match tokio::time::timeout(STOP_TIMEOUT, t).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("cleanup: {name} ended with an error: {e:#}"),
                Ok(Err(e)) => eprintln!("cleanup: {name} panicked: {e}"),
                Err(_) => {
                    abort.abort();
                    stuck.push(name);
                }
            }
        }
        for node in &self.nodes {
            let d = kubelet::docker::Docker::connect("unix:///var/run/docker.sock", node).await;
            if let Ok(d) = d {
                for (id, _) in d.list(None).await.unwrap_or_default() {
                    let _ = d.remove(&id).await;
                }
            }
            if let Err(e) = kubelet::network::remove_network(self.docker.api(), node).await {
                eprintln!("cleanup: {e}");
            }
        }
        if let Ok(c) = kubelet::network::Cidr::parse(&self.cluster_cidr) {
            let _ = kubelet::network::remove_host_rules(c).await;
        }
        if let Err(e) = proxy::Iptables::default().cleanup().await {
            eprintln!("cleanup: {e}");
        }
        self.api_stop.cancel();
        if !stuck.is_empty() {
            bail!("did not stop within {STOP_TIMEOUT:?} of shutdown: {stuck:?}");
        }
        Ok(())
    }

    /// Prints the pods and events, to explain a failure.
    async fn dump(&self) {
        if let Ok(list) = self.pods().list(&ListParams::default()).await {
            for p in list.items {
                let v = serde_json::to_value(&p).unwrap_or_default();
                eprintln!(
                    "pod {} on {}: {}",
                    v["metadata"]["name"], v["spec"]["nodeName"], v["status"]
                );
            }
        }
        let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
            Api::namespaced(self.client.clone(), NS);
        if let Ok(list) = slices.list(&ListParams::default()).await {
            for s in list.items {
                let v = serde_json::to_value(&s).unwrap_or_default();
                eprintln!(
                    "endpointslice {} (rv {}): {}",
                    v["metadata"]["name"], v["metadata"]["resourceVersion"], v["endpoints"]
                );
            }
        }
        for l in nat().await.lines().filter(|l| l.contains(NS)) {
            eprintln!("nat: {l}");
        }
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client.clone(), NS);
        if let Ok(list) = events.list(&ListParams::default()).await {
            for e in list.items {
                eprintln!(
                    "event {:?} {:?}: {:?}",
                    e.involved_object.name, e.reason, e.message
                );
            }
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn create<K>(&self, v: Value) -> Result<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(v)?;
        let api: Api<K> = Api::namespaced(self.client.clone(), NS);
        Ok(api.create(&PostParams::default(), &obj).await?)
    }

    /// The running container `container` of pod `pod`.
    async fn container(&self, pod: &str, container: &str) -> Result<String> {
        let p = self.pods().get(pod).await?;
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let node = p.spec.and_then(|s| s.node_name).unwrap_or_default();
        let d = kubelet::docker::Docker::connect("unix:///var/run/docker.sock", &node).await?;
        for (id, labels) in d.list(Some(&uid)).await? {
            if labels
                .get(kubelet::labels::CONTAINER_NAME)
                .map(String::as_str)
                == Some(container)
            {
                if let Some(info) = d.inspect(&id).await? {
                    if info.running {
                        return Ok(id);
                    }
                }
            }
        }
        bail!("no running container {container} in pod {pod}")
    }

    /// Runs `script` with `sh -c` in container `id`: exit code and output. Fails after
    /// [`EXEC_TIMEOUT`].
    async fn sh(&self, id: &str, script: &str) -> Result<(i64, String)> {
        let cmd = ["sh".into(), "-c".into(), script.into()];
        let exec = self.docker.exec(id, &cmd);
        tokio::time::timeout(EXEC_TIMEOUT, exec)
            .await
            .with_context(|| format!("exec in {id} timed out after {EXEC_TIMEOUT:?}: {script}"))?
            .map_err(Into::into)
    }

    async fn pod_json(&self, name: &str) -> Result<Value> {
        Ok(serde_json::to_value(self.pods().get(name).await?)?)
    }
}

/// A shell loop doing `n` HTTP/1.0 GETs to `ip:port`, one body line per answer.
fn requests(ip: &str, port: i64, path: &str, n: usize) -> String {
    format!(
        "for i in $(seq {n}); do printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} {port} | tail -n 1; echo; done"
    )
}

/// Non-empty output lines.
fn answers(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// The host's iptables nat table.
async fn nat() -> String {
    proxy::Iptables::default()
        .save("nat")
        .await
        .unwrap_or_default()
}

/// One HTTP/1.0 GET from the host; the body.
async fn host_get(addr: &str) -> Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut buf))
        .await
        .context("read timed out")??;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .ok_or_else(|| anyhow!("no HTTP answer: {buf:?}"))?;
    Ok(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_network_on_docker() -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let c = Cluster::start().await?;
    let checks = async {
        tokio::time::timeout(CHECKS_TIMEOUT, checks(&c))
            .await
            .unwrap_or_else(|_| Err(anyhow!("the checks took longer than {CHECKS_TIMEOUT:?}")))
    };
    let result = std::panic::AssertUnwindSafe(checks).catch_unwind().await;
    if !matches!(result, Ok(Ok(()))) {
        c.dump().await;
    }
    let cleaned = c.cleanup().await;
    match result {
        Ok(r) => r.and(cleaned),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

async fn checks(c: &Cluster) -> Result<()> {
    // Both nodes get a podCIDR of their own.
    let nodes: Api<Node> = Api::all(c.client.clone());
    let mut cidrs = Vec::new();
    for n in &c.nodes {
        let cidr = wait_for("the node's podCIDR", Duration::from_secs(30), || async {
            nodes
                .get(n)
                .await
                .ok()
                .and_then(|n| n.spec.and_then(|s| s.pod_cidr))
        })
        .await?;
        cidrs.push(cidr);
    }
    assert_ne!(cidrs[0], cidrs[1]);

    let httpd = json!({
        "name": "web", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", WEB_SCRIPT],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080},
                           "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1},
    });
    c.create::<k8s_openapi::api::apps::v1::Deployment>(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "web"}}}],
                     "containers": [httpd]}}}
    }))
    .await?;
    let svc: Service = c
        .create(json!({
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        }))
        .await?;
    let spec = svc.spec.clone().unwrap_or_default();
    let cluster_ip = spec.cluster_ip.clone().unwrap_or_default();
    let node_port = spec
        .ports
        .as_ref()
        .and_then(|p| p[0].node_port)
        .ok_or_else(|| anyhow!("no nodePort"))?;
    c.create::<Pod>(json!({
        "metadata": {"name": "client"},
        "spec": {"nodeName": c.nodes[0], "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "client", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"]}]}
    }))
    .await?;

    // Three ready replicas, with pod IPs from their nodes' podCIDRs, on both nodes.
    let web = wait_for("3 ready web replicas", Duration::from_secs(90), || async {
        let list = c
            .pods()
            .list(&ListParams::default().labels("app=web"))
            .await
            .ok()?;
        let ready: Vec<Value> = list
            .items
            .iter()
            .filter_map(|p| serde_json::to_value(p).ok())
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .collect();
        (ready.len() == 3).then_some(ready)
    })
    .await?;
    let mut names = BTreeSet::new();
    let mut on_node = BTreeSet::new();
    for p in &web {
        let name = p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let node = p["spec"]["nodeName"].as_str().unwrap_or_default();
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        let i = c.nodes.iter().position(|n| n == node).expect("a test node");
        let cidr = kubelet::network::Cidr::parse(&cidrs[i])?;
        let ipn = kubelet::network::Cidr::parse(&format!("{ip}/{}", cidr.prefix))?;
        assert_eq!(ipn, cidr, "pod {name} on {node} has IP {ip} outside {cidr}");
        assert_eq!(p["status"]["podIPs"], json!([{"ip": ip}]));
        names.insert(name);
        on_node.insert(i);
    }
    assert_eq!(on_node.len(), 2, "replicas spread over both nodes");

    let client_pod = wait_for(
        "the client pod running",
        Duration::from_secs(60),
        || async {
            let p = c.pod_json("client").await.ok()?;
            (p["status"]["phase"] == "Running").then_some(p)
        },
    )
    .await?;
    let client_ip = client_pod["status"]["podIP"].as_str().unwrap_or_default();
    let client = c.container("client", "client").await?;

    // Pod to pod by pod IP across the two nodes' bridges, without NAT: the replica sees the
    // client's own pod IP (a CGI script prints REMOTE_ADDR).
    let remote = web
        .iter()
        .find(|p| p["spec"]["nodeName"] == json!(c.nodes[1]))
        .expect("a replica on node b");
    let remote_ip = remote["status"]["podIP"].as_str().unwrap_or_default();
    let remote_name = remote["metadata"]["name"].as_str().unwrap_or_default();
    let remote_ctr = c.container(remote_name, "web").await?;
    let (_, out) = c.sh(&client, &requests(remote_ip, 8080, "/", 1)).await?;
    assert_eq!(
        answers(&out),
        vec![remote_name.to_string()],
        "pod IP across nodes"
    );
    let (_, out) = c
        .sh(&client, &requests(remote_ip, 8080, "/cgi-bin/ip", 1))
        .await?;
    // busybox httpd listens on IPv6 and shows IPv4 peers mapped: [::ffff:a.b.c.d].
    let peer: Vec<String> = answers(&out)
        .iter()
        .map(|a| {
            a.trim_start_matches("[::ffff:")
                .trim_end_matches(']')
                .to_string()
        })
        .collect();
    assert_eq!(peer, vec![client_ip.to_string()], "no NAT between pods");

    // The proxy's rules for all three endpoints are in place.
    wait_for(
        "3 endpoints in the proxy's rules",
        Duration::from_secs(20),
        || async {
            let t = nat().await;
            let n = t
                .lines()
                .filter(|l| l.contains("-j DNAT") && l.contains(&format!("{NS}/web:http")))
                .count();
            (n == 3).then_some(())
        },
    )
    .await?;

    // 60 requests from the client pod to the ClusterIP reach all 3 replicas.
    let (_, out) = c.sh(&client, &requests(&cluster_ip, 80, "/", 60)).await?;
    let got = answers(&out);
    assert_eq!(got.len(), 60, "every request answered: {out}");
    let seen: BTreeSet<String> = got.into_iter().collect();
    assert_eq!(seen, names, "all replicas answer through the ClusterIP");

    // NodePort, answered from the host: on node a's bridge address (a local address of this host).
    let gw = kubelet::network::Cidr::parse(&cidrs[0])?.gateway();
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(host_get(&format!("{gw}:{node_port}")).await?);
    }
    assert!(
        seen.is_subset(&names) && !seen.is_empty(),
        "NodePort answers: {seen:?}"
    );
    // And the ClusterIP from the host.
    assert!(names.contains(&host_get(&format!("{cluster_ip}:80")).await?));

    // Hairpin: a replica reaches its own Service, also when it picks itself.
    let local = web
        .iter()
        .find(|p| p["spec"]["nodeName"] == json!(c.nodes[0]))
        .expect("a replica on node a");
    let local_name = local["metadata"]["name"].as_str().unwrap_or_default();
    let local_ctr = c.container(local_name, "web").await?;
    let (_, out) = c
        .sh(&local_ctr, &requests(&cluster_ip, 80, "/", 40))
        .await?;
    let got = answers(&out);
    assert_eq!(got.len(), 40, "every hairpin request answered: {out}");
    assert!(
        got.iter().any(|n| n == local_name),
        "the replica reached itself: {got:?}"
    );

    // A Service without endpoints is refused at once, not left to time out.
    let empty: Service = c
        .create(json!({
            "metadata": {"name": "empty"},
            "spec": {"selector": {"app": "nothing"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }))
        .await?;
    let empty_ip = empty.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    wait_for("the REJECT rule", Duration::from_secs(20), || async {
        let t = proxy::Iptables::default()
            .save("filter")
            .await
            .unwrap_or_default();
        t.contains(&format!("{NS}/empty has no endpoints"))
            .then_some(())
    })
    .await?;
    let t0 = Instant::now();
    let (code, out) = c
        .sh(
            &client,
            &format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 {empty_ip} 80"),
        )
        .await?;
    let took = t0.elapsed();
    assert_ne!(code, 0, "no endpoints: the connection fails ({out})");
    assert!(
        took < Duration::from_secs(2),
        "refused fast, took {took:?}: {out}"
    );

    // A replica failing its readiness probe leaves the rotation within 2 s.
    let (code, _) = c.sh(&remote_ctr, "rm /www/healthz").await?;
    assert_eq!(code, 0);
    let t0 = Instant::now();
    let dnat = format!("--to-destination {remote_ip}:8080");
    wait_for(
        "the unready endpoint out of the rules",
        Duration::from_secs(10),
        || async { (!nat().await.contains(&dnat)).then_some(()) },
    )
    .await?;
    let took = t0.elapsed();
    eprintln!("unready endpoint left the rules after {took:?}");
    assert!(took <= Duration::from_secs(2), "took {took:?}");
    let (_, out) = c.sh(&client, &requests(&cluster_ip, 80, "/", 20)).await?;
    let got = answers(&out);
    assert_eq!(got.len(), 20, "{out}");
    assert!(
        !got.iter().any(|n| n == remote_name),
        "unready replica still answers: {got:?}"
    );
    Ok(())
}
