//! The scheduler against a real in-process API server. Nodes are objects the test creates
//! (no kubelet); the test plays the kubelet where a pod's status matters.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    cfg: scheduler::Config,
}

struct Env {
    client: Client,
    kubeconfig: std::path::PathBuf,
    shutdown: CancellationToken,
    server: Option<apiserver::Server>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn start() -> Result<Env> {
        let dir = tempfile::tempdir()?;
        let shutdown = CancellationToken::new();
        let server = apiserver::start(
            apiserver::Config::for_test(dir.path().into()),
            shutdown.clone(),
        )
        .await?;
        let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
        let client =
            Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "t"}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        Ok(Env {
            client,
            // The scheduler runs as system:kube-scheduler, with only its RBAC role.
            kubeconfig: server.components.scheduler.clone(),
            shutdown,
            server: Some(server),
            _dir: dir,
        })
    }

    /// Starts a scheduler with extra flags; cancelling the token stops it.
    fn scheduler(&self, args: &[&str]) -> Result<CancellationToken> {
        let kc = format!("--kubeconfig={}", self.kubeconfig.display());
        let mut argv = vec!["scheduler", kc.as_str()];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv)?;
        let token = self.shutdown.child_token();
        let t = token.clone();
        tokio::spawn(async move {
            if let Err(e) = scheduler::run(cli.cfg, t).await {
                eprintln!("scheduler failed: {e:#}");
            }
        });
        Ok(token)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "t")
    }

    async fn node(&self, name: &str, cpu: &str, extra: Value) -> Result<()> {
        let mut n = json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {
                "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110", "ephemeral-storage": "10Gi"},
                "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110", "ephemeral-storage": "10Gi"},
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        });
        merge(&mut n, extra);
        let node: Node = serde_json::from_value(n)?;
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await?;
        Ok(())
    }

    async fn pod(&self, name: &str, spec: Value) -> Result<()> {
        let mut p = json!({
            "metadata": {"name": name, "labels": {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        });
        merge(&mut p, spec);
        let pod: Pod = serde_json::from_value(p)?;
        self.pods().create(&PostParams::default(), &pod).await?;
        Ok(())
    }

    async fn node_of(&self, pod: &str) -> Result<Option<String>> {
        Ok(self.pods().get(pod).await?.spec.and_then(|s| s.node_name))
    }

    async fn wait_bound(&self, pod: &str) -> Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(n) = self.node_of(pod).await? {
                return Ok(n);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "pod {pod} not bound"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pod's PodScheduled=False message, once the scheduler wrote one.
    async fn wait_unschedulable(&self, pod: &str) -> Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let p = self.pods().get(pod).await?;
            let c = p
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            if let Some(c) = c {
                assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
                return Ok(c.message.unwrap_or_default());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "pod {pod} never marked unschedulable"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_event(&self, pod: &str, reason: &str) -> Result<Event> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), "t");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let evs = api.list(&ListParams::default()).await?;
            if let Some(e) = evs.items.into_iter().find(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(pod)
            }) {
                return Ok(e);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no {reason} event for {pod}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(20), s.wait())
                .await
                .context("server stop")??;
        }
        Ok(())
    }
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

const NO_LEADER: &str = "--leader-elect=false";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_decide_placement() -> Result<()> {
    let env = Env::start().await?;
    env.node(
        "small",
        "1",
        json!({"metadata": {"labels": {"disk": "ssd"}}}),
    )
    .await?;
    env.node(
        "tainted",
        "8",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}),
    )
    .await?;
    env.node("cordoned", "8", json!({"spec": {"unschedulable": true}}))
        .await?;
    env.node(
        "medium",
        "4",
        json!({"metadata": {"labels": {"zone": "b"}}}),
    )
    .await?;
    env.node(
        "notready",
        "8",
        json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
    )
    .await?;
    env.scheduler(&[NO_LEADER])?;

    // NodeSelector.
    env.pod("sel", json!({"spec": {"nodeSelector": {"disk": "ssd"}}}))
        .await?;
    assert_eq!(env.wait_bound("sel").await?, "small");
    // Required node affinity.
    env.pod("aff", json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}}}}}))
        .await?;
    assert_eq!(env.wait_bound("aff").await?, "medium");
    // NodeResourcesFit + TaintToleration: 6 cpu fits only the tainted node, when tolerated.
    let big = json!({"spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "6"}}}],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "x", "effect": "NoSchedule"}]}});
    env.pod("big", big).await?;
    assert_eq!(env.wait_bound("big").await?, "tainted");
    // The init-container maximum counts: 3 cpu init container does not fit "small" (1 cpu).
    env.pod("init", json!({"spec": {"nodeSelector": {"disk": "ssd"},
        "initContainers": [{"name": "i", "image": "busybox", "resources": {"requests": {"cpu": "3"}}}]}}))
        .await?;
    let msg = env.wait_unschedulable("init").await?;
    assert!(msg.contains("1 Insufficient cpu"), "{msg}");
    // NodePorts: a second pod with the same host port on the same node does not fit.
    let port = |name: &str| {
        json!({"spec": {"nodeSelector": {"zone": "b"}, "containers": [{"name": name, "image": "busybox",
            "ports": [{"containerPort": 80, "hostPort": 8080}]}]}})
    };
    env.pod("port1", port("c")).await?;
    assert_eq!(env.wait_bound("port1").await?, "medium");
    env.pod("port2", port("c")).await?;
    let msg = env.wait_unschedulable("port2").await?;
    assert_eq!(
        msg,
        "0/5 nodes are available: 1 node(s) didn't have free ports for the requested pod ports, \
         1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: x}, \
         1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 1 node(s) were unschedulable. \
         preemption: 0/5 nodes are available: 1 No preemption victims found for incoming pod, \
         4 Preemption is not helpful for scheduling.."
    );
    // Scheduled events name the node.
    let ev = env.wait_event("sel", "Scheduled").await?;
    assert_eq!(
        ev.note.as_deref(),
        Some("Successfully assigned t/sel to small")
    );
    assert_eq!(
        ev.reporting_controller.as_deref(),
        Some("default-scheduler")
    );
    // Another scheduler's pods are left alone.
    env.pod(
        "other",
        json!({"spec": {"schedulerName": "other-scheduler"}}),
    )
    .await?;
    env.pod("after", json!({})).await?;
    env.wait_bound("after").await?;
    assert_eq!(env.node_of("other").await?, None);
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_message_then_retry_when_a_node_appears() -> Result<()> {
    let env = Env::start().await?;
    env.node(
        "gone",
        "8",
        json!({"spec": {"taints": [{"key": "node.kubernetes.io/unreachable", "effect": "NoSchedule"}]}}),
    )
    .await?;
    env.node("a", "1", json!({})).await?;
    env.node("b", "1", json!({})).await?;
    env.scheduler(&[NO_LEADER])?;
    env.pod(
        "hungry",
        json!({"spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "2"}}}]}}),
    )
    .await?;
    let msg = env.wait_unschedulable("hungry").await?;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 2 Insufficient cpu. \
         preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.."
    );
    let ev = env.wait_event("hungry", "FailedScheduling").await?;
    assert_eq!(ev.note.as_deref(), Some(msg.as_str()));
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    // A node that fits appears: the pod is retried (after its backoff) and bound there.
    let t0 = std::time::Instant::now();
    env.node("c", "4", json!({})).await?;
    assert_eq!(env.wait_bound("hungry").await?, "c");
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
    let p = env.pods().get("hungry").await?;
    let cond = p
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled");
    assert_eq!(cond.map(|c| c.status).as_deref(), Some("True"));
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_spread_pods_and_topology_and_affinity() -> Result<()> {
    let env = Env::start().await?;
    for (n, zone) in [("n1", "a"), ("n2", "a"), ("n3", "b")] {
        env.node(n, "4", json!({"metadata": {"labels": {"zone": zone}}}))
            .await?;
    }
    env.scheduler(&[NO_LEADER])?;
    // LeastAllocated spreads identical pods evenly.
    for i in 0..6 {
        env.pod(&format!("s{i}"), json!({})).await?;
    }
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..6 {
        *per_node
            .entry(env.wait_bound(&format!("s{i}")).await?)
            .or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_node:?}"
    );

    // PodTopologySpread DoNotSchedule over zones: 4 pods, 2 per zone.
    let spread = json!({"metadata": {"labels": {"app": "spread"}}, "spec": {"topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "spread"}}}]}});
    let mut zones: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..4 {
        let name = format!("z{i}");
        env.pod(&name, spread.clone()).await?;
        let node = env.wait_bound(&name).await?;
        let zone = if node == "n3" { "b" } else { "a" };
        *zones.entry(zone.into()).or_default() += 1;
    }
    assert_eq!(
        zones.values().copied().collect::<Vec<_>>(),
        [2, 2],
        "{zones:?}"
    );

    // Required anti-affinity per host: 3 nodes take 3 pods, the 4th has nowhere to go.
    let anti = json!({"metadata": {"labels": {"app": "anti"}}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": {"app": "anti"}}}]}}}});
    let mut hosts = std::collections::BTreeSet::new();
    for i in 0..3 {
        let name = format!("x{i}");
        env.pod(&name, anti.clone()).await?;
        hosts.insert(env.wait_bound(&name).await?);
    }
    assert_eq!(hosts.len(), 3);
    env.pod("x3", anti.clone()).await?;
    let msg = env.wait_unschedulable("x3").await?;
    assert!(
        msg.starts_with(
            "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules."
        ),
        "{msg}"
    );
    // Required affinity: goes where a pod labelled app=anti runs in zone b.
    env.pod(
        "with",
        json!({"spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone",
            "labelSelector": {"matchLabels": {"app": "spread"}}}]}},
        "nodeSelector": {"zone": "b"}}}),
    )
    .await?;
    assert_eq!(env.wait_bound("with").await?, "n3");
    // Preferred node affinity and a PreferNoSchedule taint steer the choice.
    env.pod("pref", json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}}]}}}}))
        .await?;
    assert_eq!(env.wait_bound("pref").await?, "n2");
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preemption_evicts_lower_priority_pods() -> Result<()> {
    let env = Env::start().await?;
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> =
        Api::all(env.client.clone());
    for (name, value) in [("low", 10), ("high", 1000)] {
        let pc = serde_json::from_value(json!({"metadata": {"name": name}, "value": value}))?;
        classes.create(&PostParams::default(), &pc).await?;
    }
    env.node("only", "1", json!({})).await?;
    env.scheduler(&[NO_LEADER])?;
    let req = |class: &str| {
        json!({"spec": {"priorityClassName": class, "containers": [{"name": "c", "image": "busybox",
            "resources": {"requests": {"cpu": "800m"}}}]}})
    };
    env.pod("victim", req("low")).await?;
    assert_eq!(env.wait_bound("victim").await?, "only");
    env.pod("vip", req("high")).await?;
    // The test plays the kubelet: a victim marked for deletion goes away at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match env.pods().get_opt("victim").await? {
            None => break,
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                let cond = p
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "DisruptionTarget");
                assert_eq!(
                    cond.and_then(|c| c.reason).as_deref(),
                    Some("PreemptionByScheduler")
                );
                env.pods()
                    .delete("victim", &DeleteParams::default().grace_period(0))
                    .await?;
            }
            Some(_) => {}
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "victim not preempted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let vip = env.pods().get("vip").await?;
    assert_eq!(
        vip.status.and_then(|s| s.nominated_node_name).as_deref(),
        Some("only")
    );
    assert_eq!(env.wait_bound("vip").await?, "only");
    // An equal-priority pod does not preempt: it stays pending with upstream's words.
    env.pod("peer", req("high")).await?;
    let msg = env.wait_unschedulable("peer").await?;
    assert_eq!(
        msg,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
    );
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_between_two_schedulers() -> Result<()> {
    let env = Env::start().await?;
    env.node("n", "4", json!({})).await?;
    let flags = [
        "--leader-elect-lease-duration=3s",
        "--leader-elect-renew-deadline=2s",
        "--leader-elect-retry-period=500ms",
    ];
    let first = env.scheduler(&flags)?;
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    let holder = |l: Option<Lease>| {
        l.and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let leader = loop {
        let h = holder(leases.get_opt("kube-scheduler").await?);
        if !h.is_empty() {
            break h;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let second = env.scheduler(&flags)?;
    env.pod("one", json!({})).await?;
    env.wait_bound("one").await?;
    let ev = env.wait_event("one", "Scheduled").await?;
    assert_eq!(
        ev.reporting_instance,
        Some(format!("default-scheduler-{leader}"))
    );
    // The leader stops; the other takes over within the lease duration and schedules.
    first.cancel();
    let t0 = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let next = loop {
        let h = holder(leases.get_opt("kube-scheduler").await?);
        if !h.is_empty() && h != leader {
            break h;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no takeover");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    env.pod("two", json!({})).await?;
    env.wait_bound("two").await?;
    let ev = env.wait_event("two", "Scheduled").await?;
    assert_eq!(
        ev.reporting_instance,
        Some(format!("default-scheduler-{next}"))
    );
    let lease = leases.get("kube-scheduler").await?;
    assert_eq!(lease.spec.and_then(|s| s.lease_transitions), Some(1));
    second.cancel();
    env.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takes_over_a_lease_whose_holder_stopped_renewing() -> Result<()> {
    let env = Env::start().await?;
    env.node("n", "4", json!({})).await?;
    // A holder that crashed: its Lease says it holds for 2 s and is never renewed.
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-system");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "kube-scheduler"},
        "spec": {"holderIdentity": "ghost", "leaseDurationSeconds": 2, "renewTime": now, "acquireTime": now, "leaseTransitions": 4}
    }))?;
    leases.create(&PostParams::default(), &lease).await?;
    let t0 = std::time::Instant::now();
    let _s = env.scheduler(&[
        "--leader-elect-lease-duration=2s",
        "--leader-elect-renew-deadline=1500ms",
        "--leader-elect-retry-period=200ms",
    ])?;
    env.pod("p", json!({})).await?;
    env.wait_bound("p").await?;
    // Not before the ghost's lease ran out, as this candidate observed it.
    assert!(t0.elapsed() >= Duration::from_secs(2), "{:?}", t0.elapsed());
    let spec = leases.get("kube-scheduler").await?.spec.unwrap_or_default();
    assert_ne!(spec.holder_identity.as_deref(), Some("ghost"));
    assert_eq!(spec.lease_transitions, Some(5));
    env.stop().await
}
