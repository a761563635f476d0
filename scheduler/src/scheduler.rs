//! The scheduling loop: informers feed the cache and the queue; one loop pops a pod,
//! filters and scores nodes, assumes the pod on the chosen node and binds it in the
//! background; failures explain themselves in the pod's condition and an event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use rand::Rng;
use serde_json::json;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, NodeInfo, PodInfo};
use crate::metrics::Metrics;
use crate::plugins::{self, Failure, PodCtx, PreFilter, Weights};
use crate::queue::{Queue, QueuedPod};
use crate::resources::Resources;

/// What the loop needs to know, from the flags.
#[derive(Clone, Debug)]
pub struct Settings {
    pub scheduler_name: String,
    pub percentage_of_nodes_to_score: u32,
    pub weights: Weights,
    pub identity: String,
    pub parallel_bindings: usize,
}

#[derive(Default)]
struct State {
    cache: Cache,
    queue: Queue,
    /// PriorityClass name to (value, globalDefault).
    classes: HashMap<String, (i32, bool)>,
    next_start: usize,
    /// Nothing is scheduled before the first pod and node lists are complete (upstream
    /// waits for its caches to sync), so every node is a candidate and every assigned pod
    /// is counted.
    pods_synced: bool,
    nodes_synced: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Notify,
    settings: Settings,
    client: kube::Client,
    events: mpsc::Sender<Event>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn priority_of(pod: &Pod, classes: &HashMap<String, (i32, bool)>) -> i32 {
    let spec = pod.spec.as_ref();
    if let Some(p) = spec.and_then(|s| s.priority) {
        return p;
    }
    match spec
        .and_then(|s| s.priority_class_name.as_deref())
        .filter(|n| !n.is_empty())
    {
        Some(name) => classes.get(name).map_or(0, |c| c.0),
        None => classes.values().find(|c| c.1).map_or(0, |c| c.0),
    }
}

/// Runs informers and the scheduling loop until `token` is cancelled.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let (etx, erx) = mpsc::channel(1000);
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Notify::new(),
        settings,
        client: client.clone(),
        events: etx,
        metrics,
    });
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(write_events(client.clone(), erx, token.clone()));
    tasks.spawn(watch_classes(shared.clone(), token.clone()));
    tasks.spawn(watch_nodes(shared.clone(), token.clone()));
    tasks.spawn(watch_pods(shared.clone(), token.clone()));
    let result = schedule_loop(shared, token.clone()).await;
    token.cancel();
    while tasks.join_next().await.is_some() {}
    result
}

// ---------------------------------------------------------------------------------------
// Informers

async fn watch_classes(sh: Arc<Shared>, token: CancellationToken) {
    let api: Api<PriorityClass> = Api::all(sh.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut seen = HashSet::new();
    loop {
        let ev = tokio::select! {
            _ = token.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        let mut st = sh.lock();
        match ev {
            Ok(watcher::Event::Init) => seen.clear(),
            Ok(watcher::Event::InitApply(pc) | watcher::Event::Apply(pc)) => {
                let name = pc.metadata.name.clone().unwrap_or_default();
                seen.insert(name.clone());
                st.classes
                    .insert(name, (pc.value, pc.global_default.unwrap_or(false)));
            }
            Ok(watcher::Event::Delete(pc)) => {
                st.classes
                    .remove(&pc.metadata.name.clone().unwrap_or_default());
            }
            Ok(watcher::Event::InitDone) => st.classes.retain(|k, _| seen.contains(k)),
            Err(e) => tracing::warn!(error = %e, "watching priority classes"),
        }
    }
}

async fn watch_nodes(sh: Arc<Shared>, token: CancellationToken) {
    let api: Api<Node> = Api::all(sh.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut seen = HashSet::new();
    loop {
        let ev = tokio::select! {
            _ = token.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        let mut st = sh.lock();
        match ev {
            Ok(watcher::Event::Init) => seen.clear(),
            Ok(watcher::Event::InitApply(n)) => {
                seen.insert(n.metadata.name.clone().unwrap_or_default());
                st.cache.set_node(&n);
            }
            Ok(watcher::Event::Apply(n)) => {
                st.cache.set_node(&n);
                st.queue.move_all_to_active_or_backoff();
            }
            Ok(watcher::Event::Delete(n)) => {
                st.cache
                    .remove_node(&n.metadata.name.clone().unwrap_or_default());
            }
            Ok(watcher::Event::InitDone) => {
                st.cache.nodes.retain(|k, _| seen.contains(k));
                st.nodes_synced = true;
                st.queue.move_all_to_active_or_backoff();
            }
            Err(e) => tracing::warn!(error = %e, "watching nodes"),
        }
        drop(st);
        sh.wake.notify_one();
    }
}

/// Applies one pod seen on the watch to the cache and the queue.
fn apply_pod(st: &mut State, settings: &Settings, pod: Pod) {
    let uid = uid_of(&pod);
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let priority = priority_of(&pod, &st.classes);
    if !node.is_empty() {
        st.queue.remove(&uid);
        if is_terminal(&pod) {
            if st.cache.remove_pod(&uid).is_some() {
                st.queue.move_all_to_active_or_backoff();
            }
        } else {
            let known = st.cache.is_placed(&uid);
            st.cache.set_pod(PodInfo::new(&pod, &node, priority));
            // A pod placed by someone else may satisfy waiting pods' affinity.
            if !known {
                st.queue.move_all_to_active_or_backoff();
            }
        }
        return;
    }
    let ours = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .is_none_or(|n| n.is_empty() || n == settings.scheduler_name);
    let deleting = pod.metadata.deletion_timestamp.is_some();
    if !ours || deleting || is_terminal(&pod) {
        st.queue.remove(&uid);
        return;
    }
    // Assumed while its binding is in flight: the watch has not caught up yet.
    if st.cache.is_placed(&uid) {
        return;
    }
    if let Some(nn) = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.clone())
        .filter(|n| !n.is_empty())
    {
        let req = crate::resources::requests_of(&pod, false);
        st.cache.nominated.insert(uid.clone(), (nn, req, priority));
    }
    st.queue.add_or_update(&pod, priority);
}

fn delete_pod(st: &mut State, pod: &Pod) {
    let uid = uid_of(pod);
    st.queue.remove(&uid);
    st.cache.nominated.remove(&uid);
    if st.cache.remove_pod(&uid).is_some() {
        st.queue.move_all_to_active_or_backoff();
    }
}

async fn watch_pods(sh: Arc<Shared>, token: CancellationToken) {
    let api: Api<Pod> = Api::all(sh.client.clone());
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let ev = tokio::select! {
            _ = token.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        let mut st = sh.lock();
        match ev {
            Ok(watcher::Event::Init) => seen.clear(),
            Ok(watcher::Event::InitApply(p)) => {
                seen.insert(uid_of(&p));
                apply_pod(&mut st, &sh.settings, p);
            }
            Ok(watcher::Event::InitDone) => {
                st.pods_synced = true;
                let gone: Vec<Pod> = st
                    .cache
                    .all_pods()
                    .filter(|p| !seen.contains(&p.uid))
                    .map(|p| {
                        let mut pod = Pod::default();
                        pod.metadata.uid = Some(p.uid.clone());
                        pod
                    })
                    .collect();
                for p in gone {
                    delete_pod(&mut st, &p);
                }
            }
            Ok(watcher::Event::Apply(p)) => apply_pod(&mut st, &sh.settings, p),
            Ok(watcher::Event::Delete(p)) => delete_pod(&mut st, &p),
            Err(e) => tracing::warn!(error = %e, "watching pods"),
        }
        drop(st);
        sh.wake.notify_one();
    }
}

// ---------------------------------------------------------------------------------------
// The loop

/// Upstream's adaptive `percentageOfNodesToScore`: how many feasible nodes to look for.
pub fn num_feasible_nodes_to_find(num_nodes: usize, percentage: u32) -> usize {
    const MIN_FEASIBLE: usize = 100;
    const MIN_PERCENT: i64 = 5;
    if num_nodes < MIN_FEASIBLE {
        return num_nodes;
    }
    let mut pct = i64::from(percentage);
    if pct == 0 {
        pct = 50 - num_nodes as i64 / 125;
        if pct < MIN_PERCENT {
            pct = MIN_PERCENT;
        }
    }
    if pct >= 100 {
        return num_nodes;
    }
    (num_nodes * pct as usize / 100).max(MIN_FEASIBLE)
}

enum Outcome {
    Assumed {
        node: String,
    },
    Unschedulable {
        message: String,
        nominate: Option<String>,
        victims: Vec<Arc<PodInfo>>,
    },
}

async fn schedule_loop(sh: Arc<Shared>, token: CancellationToken) -> anyhow::Result<()> {
    let bindings = Arc::new(Semaphore::new(sh.settings.parallel_bindings.max(1)));
    loop {
        let next = {
            let mut st = sh.lock();
            let wake_at = st.queue.flush();
            if !(st.pods_synced && st.nodes_synced) {
                Err(Some(Instant::now() + Duration::from_millis(50)))
            } else {
                match st.queue.pop() {
                    Some(q) => Ok(q),
                    None => Err(wake_at),
                }
            }
        };
        let q = match next {
            Ok(q) => q,
            Err(wake_at) => {
                let until = wake_at.unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
                tokio::select! {
                    _ = token.cancelled() => return Ok(()),
                    _ = sh.wake.notified() => {}
                    _ = tokio::time::sleep_until(until.into()) => {}
                }
                continue;
            }
        };
        let permit = tokio::select! {
            _ = token.cancelled() => return Ok(()),
            p = bindings.clone().acquire_owned() => p?,
        };
        let started = Instant::now();
        let outcome = {
            let mut st = sh.lock();
            schedule_one(&mut st, &sh.settings, &q)
        };
        let sh2 = sh.clone();
        match outcome {
            Outcome::Assumed { node } => {
                tokio::spawn(async move {
                    bind(&sh2, &q, &node, started).await;
                    drop(permit);
                });
            }
            Outcome::Unschedulable {
                message,
                nominate,
                victims,
            } => {
                drop(permit);
                let uid = uid_of(&q.pod);
                let repeat = q.last_message == message && nominate.is_none();
                sh.lock().queue.requeue_unschedulable(&uid, &message);
                tokio::spawn(async move {
                    record_unschedulable(&sh2, &q.pod, &message, nominate.as_deref(), repeat).await;
                    if let Some(node) = nominate {
                        preempt(&sh2, &q.pod, &node, &victims).await;
                    }
                });
            }
        }
    }
}

/// One scheduling cycle for `q`, under the state lock.
fn schedule_one(st: &mut State, settings: &Settings, q: &QueuedPod) -> Outcome {
    let pod = &q.pod;
    let ctx = PodCtx::new(pod, q.priority);
    let pf = PreFilter::compute(&ctx, &st.cache);
    let uid = uid_of(pod);
    let mut nominated: HashMap<&str, Resources> = HashMap::new();
    for (u, (node, req, prio)) in &st.cache.nominated {
        if *u != uid && *prio >= q.priority {
            nominated.entry(node.as_str()).or_default().add(req);
        }
    }
    let nodes: Vec<&NodeInfo> = st.cache.nodes.values().collect();
    let total = nodes.len();
    // The nominated node first, as upstream does after a preemption.
    let nominated_node = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    let mut chosen: Option<String> = None;
    if let Some(nn) = nominated_node {
        if let Some(n) = st.cache.nodes.get(nn) {
            if plugins::filter(&ctx, n, &pf, nominated.get(nn)).is_ok() {
                chosen = Some(nn.to_string());
            }
        }
    }
    if chosen.is_none() {
        let want = num_feasible_nodes_to_find(total, settings.percentage_of_nodes_to_score);
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut failures: HashMap<String, Failure> = HashMap::new();
        let start = if total > 0 { st.next_start % total } else { 0 };
        let mut checked = 0;
        for i in 0..total {
            let n = nodes[(start + i) % total];
            checked += 1;
            match plugins::filter(&ctx, n, &pf, nominated.get(n.name.as_str())) {
                Ok(()) => {
                    feasible.push(n);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Err(f) => {
                    failures.insert(n.name.clone(), f);
                }
            }
        }
        if feasible.is_empty() {
            return unschedulable(st, &ctx, &pf, total, failures, &nominated);
        }
        let next_start = start + checked;
        chosen = Some(if feasible.len() == 1 {
            feasible[0].name.clone()
        } else {
            let scores = plugins::score(&ctx, &feasible, &st.cache, &settings.weights);
            pick(&feasible, &scores)
        });
        st.next_start = next_start;
    }
    let node = chosen.unwrap_or_default();
    st.cache.assume(PodInfo::new(pod, &node, q.priority));
    Outcome::Assumed { node }
}

/// The highest score; ties broken at random like upstream's reservoir sampling.
fn pick(nodes: &[&NodeInfo], scores: &[i64]) -> String {
    let max = scores.iter().copied().max().unwrap_or(0);
    let mut rng = rand::rng();
    let mut seen = 0u32;
    let mut chosen = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s == max {
            seen += 1;
            if rng.random_range(0..seen) == 0 {
                chosen = i;
            }
        }
    }
    nodes[chosen].name.clone()
}

const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Explains the failure and, when lower-priority pods stand in the way, picks victims.
fn unschedulable(
    st: &State,
    ctx: &PodCtx,
    pf: &PreFilter,
    total: usize,
    failures: HashMap<String, Failure>,
    nominated: &HashMap<&str, Resources>,
) -> Outcome {
    let never = ctx.spec.preemption_policy.as_deref() == Some("Never");
    let mut victims_on: Option<(String, Vec<Arc<PodInfo>>)> = None;
    let post = if never {
        "preemption: not eligible due to preemptionPolicy=Never".to_string()
    } else {
        let mut statuses: HashMap<String, Failure> = HashMap::new();
        let mut candidates: Vec<(String, Vec<Arc<PodInfo>>)> = Vec::new();
        for (name, f) in &failures {
            if f.unresolvable {
                statuses.insert(
                    name.clone(),
                    Failure {
                        unresolvable: true,
                        reasons: vec![NOT_HELPFUL.into()],
                    },
                );
                continue;
            }
            let Some(node) = st.cache.nodes.get(name) else {
                continue;
            };
            match select_victims(ctx, node, pf, nominated.get(name.as_str())) {
                Some(v) => candidates.push((name.clone(), v)),
                None => {
                    statuses.insert(
                        name.clone(),
                        Failure {
                            unresolvable: true,
                            reasons: vec![NO_VICTIMS.into()],
                        },
                    );
                }
            }
        }
        if candidates.is_empty() {
            format!(
                "preemption: {}",
                plugins::fit_error_message(total, &statuses, "")
            )
        } else {
            // Fewest high-priority victims, then lowest priority sum, then fewest pods.
            candidates.sort_by_key(|(n, v)| {
                let top = v.iter().map(|p| p.priority).max().unwrap_or(i32::MIN);
                let sum: i64 = v.iter().map(|p| i64::from(p.priority)).sum();
                (top, sum, v.len(), n.clone())
            });
            victims_on = candidates.into_iter().next();
            String::new()
        }
    };
    let message = plugins::fit_error_message(total, &failures, &post);
    match victims_on {
        Some((node, victims)) => Outcome::Unschedulable {
            message,
            nominate: Some(node),
            victims,
        },
        None => Outcome::Unschedulable {
            message,
            nominate: None,
            victims: Vec::new(),
        },
    }
}

/// Removes every lower-priority pod, checks the pod fits, then gives back as many as
/// possible (most important first). `None` when no set of victims helps.
fn select_victims(
    ctx: &PodCtx,
    node: &NodeInfo,
    pf: &PreFilter,
    nominated: Option<&Resources>,
) -> Option<Vec<Arc<PodInfo>>> {
    let mut lower: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| plugins::is_victim_candidate(ctx, p))
        .cloned()
        .collect();
    if lower.is_empty() {
        return None;
    }
    let mut base = node.without(&lower);
    if plugins::filter(ctx, &base, pf, nominated).is_err() {
        return None;
    }
    lower.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then_with(|| a.start_time.cmp(&b.start_time))
    });
    let mut victims = Vec::new();
    for p in lower {
        let with = base.with(p.clone());
        if plugins::filter(ctx, &with, pf, nominated).is_ok() {
            base = with;
        } else {
            victims.push(p);
        }
    }
    Some(victims)
}

// ---------------------------------------------------------------------------------------
// Writes

fn reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        ..Default::default()
    }
}

fn event(sh: &Shared, pod: &Pod, type_: &str, reason: &str, action: &str, note: String) {
    let now = Timestamp::now();
    let name = format!(
        "{}.{:x}",
        pod.metadata.name.as_deref().unwrap_or("pod"),
        now.as_nanosecond()
    );
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: pod.metadata.namespace.clone(),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        reporting_controller: Some(sh.settings.scheduler_name.clone()),
        reporting_instance: Some(format!(
            "{}-{}",
            sh.settings.scheduler_name, sh.settings.identity
        )),
        action: Some(action.into()),
        reason: Some(reason.into()),
        note: Some(note),
        type_: Some(type_.into()),
        regarding: Some(reference(pod)),
        ..Default::default()
    };
    // Like upstream's broadcaster: a full queue drops the event rather than stalling.
    if sh.events.try_send(ev).is_err() {
        tracing::debug!("event queue full; dropping event");
    }
}

async fn write_events(
    client: kube::Client,
    mut rx: mpsc::Receiver<Event>,
    token: CancellationToken,
) {
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        let ev = tokio::select! {
            _ = token.cancelled() => return,
            ev = rx.recv() => ev,
        };
        let Some(ev) = ev else { return };
        while inflight.len() >= 8 {
            inflight.join_next().await;
        }
        let ns = ev.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        inflight.spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &ev).await {
                tracing::debug!(error = %e, "writing event");
            }
        });
    }
}

async fn bind(sh: &Shared, q: &QueuedPod, node: &str, started: Instant) {
    let pod = &q.pod;
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = uid_of(pod);
    let body = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}/binding");
    let result = async {
        let req = http::Request::post(&path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)?;
        sh.client.request_text(req).await?;
        anyhow::Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            sh.metrics.observe(started.elapsed());
            sh.lock().queue.done(&uid);
            tracing::debug!(pod = %name, namespace = %ns, node, "bound");
            event(
                sh,
                pod,
                "Normal",
                "Scheduled",
                "Binding",
                format!("Successfully assigned {ns}/{name} to {node}"),
            );
        }
        Err(e) => {
            tracing::info!(pod = %name, namespace = %ns, node, error = %e, "binding failed");
            {
                let mut st = sh.lock();
                st.cache.forget(&uid);
                st.queue.requeue_backoff(&uid);
            }
            sh.wake.notify_one();
            event(
                sh,
                pod,
                "Warning",
                "FailedScheduling",
                "Scheduling",
                format!("Binding rejected: {e}"),
            );
        }
    }
}

/// PodScheduled=False reason Unschedulable (and the nominated node) on the pod's status,
/// plus a FailedScheduling event; both skipped when nothing changed since the last try.
async fn record_unschedulable(
    sh: &Shared,
    pod: &Pod,
    message: &str,
    nominate: Option<&str>,
    repeat: bool,
) {
    let status = pod.status.clone().unwrap_or_default();
    let mut conditions = status.conditions.clone().unwrap_or_default();
    let existing = conditions.iter().position(|c| c.type_ == "PodScheduled");
    let same = existing.is_some_and(|i| {
        let c = &conditions[i];
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(message)
    });
    if !same || nominate.is_some() {
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
        let cond = k8s_openapi::api::core::v1::PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(message.to_string()),
            last_transition_time: Some(now),
            ..Default::default()
        };
        match existing {
            Some(i) => {
                if conditions[i].status == "False" {
                    let ltt = conditions[i].last_transition_time.clone();
                    conditions[i] = cond;
                    conditions[i].last_transition_time =
                        ltt.or(conditions[i].last_transition_time.clone());
                } else {
                    conditions[i] = cond;
                }
            }
            None => conditions.push(cond),
        }
        let mut patch = json!({"status": {"conditions": conditions}});
        if let Some(n) = nominate {
            patch["status"]["nominatedNodeName"] = json!(n);
        }
        let api: Api<Pod> = Api::namespaced(
            sh.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or(""),
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::info!(pod = %name, error = %e, "updating pod condition");
        }
    }
    if !repeat {
        event(
            sh,
            pod,
            "Warning",
            "FailedScheduling",
            "Scheduling",
            message.to_string(),
        );
    }
}

/// Evicts `victims` so that `pod` fits on `node`: a DisruptionTarget condition, an event,
/// then a delete, as upstream's DefaultPreemption does.
async fn preempt(sh: &Shared, pod: &Pod, node: &str, victims: &[Arc<PodInfo>]) {
    {
        let mut st = sh.lock();
        let req = crate::resources::requests_of(pod, false);
        let prio = priority_of(pod, &st.classes);
        st.cache
            .nominated
            .insert(uid_of(pod), (node.to_string(), req, prio));
    }
    let preemptor = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    let futs = victims.iter().map(|v| {
        let api: Api<Pod> = Api::namespaced(sh.client.clone(), &v.namespace);
        let preemptor = preemptor.clone();
        async move {
            let cond = json!({"status": {"conditions": [{
                "type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler",
                "message": format!("{}: preempting to accommodate a higher priority pod", sh.settings.scheduler_name),
                "lastTransitionTime": Timestamp::now().to_string(),
            }]}});
            if let Ok(vp) = api
                .patch_status(&v.name, &PatchParams::default(), &Patch::Merge(&cond))
                .await
            {
                event(
                    sh,
                    &vp,
                    "Normal",
                    "Preempted",
                    "Preempting",
                    format!("Preempted by pod {} on node {}", uid_of(pod), node),
                );
            }
            let dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(v.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&v.name, &dp).await {
                Ok(_) => tracing::info!(victim = %v.name, %preemptor, node, "preempted"),
                Err(e) => tracing::info!(victim = %v.name, error = %e, "deleting preemption victim"),
            }
        }
    });
    futures::future::join_all(futs).await;
}
