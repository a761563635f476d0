//! Garbage collector: deletes objects whose owners are gone, in the three propagation modes
//! upstream implements (pkg/controller/garbagecollector).
//!
//! - Background: once every owner of a dependent is gone, the dependent is deleted.
//! - Foreground: an owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted; the finalizer is removed once no dependent with
//!   `blockOwnerDeletion: true` is left.
//! - Orphan: an owner being deleted with the `orphan` finalizer has its owner reference removed
//!   from every dependent, then the finalizer is removed.
//!
//! Every served kind is watched (metadata only), found through discovery and re-discovered
//! periodically so new kinds (custom resources) are covered. Before deleting anything because
//! an owner looks absent, the owner is read live, so a lagging cache never causes a deletion.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::discovery::{verbs, ApiCapabilities, ApiResource, Discovery, Scope};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::common::rounds::Rounds;

const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

/// Flags of the garbage collector.
#[derive(clap::Args, Debug, Clone)]
pub struct GcConfig {
    /// Seconds between re-discoveries of the served resources (to pick up new kinds)
    #[arg(long, default_value_t = 30)]
    pub gc_rediscovery_seconds: u64,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            gc_rediscovery_seconds: 30,
        }
    }
}

/// One object in the graph: what the collector needs of its metadata.
#[derive(Debug, Clone)]
struct Item {
    resource: Arc<Kind>,
    namespace: Option<String>,
    name: String,
    uid: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

impl Item {
    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

/// A served resource.
#[derive(Debug)]
struct Kind {
    ar: ApiResource,
    namespaced: bool,
}

/// Every watched resource's objects, by resource key and uid.
type Graph = Arc<Mutex<HashMap<String, HashMap<String, Item>>>>;

/// Discovery's answer: which served resource serves a group/version/kind.
#[derive(Default)]
struct Resolver {
    exact: HashMap<(String, String, String), Arc<Kind>>,
    by_group_kind: HashMap<(String, String), Arc<Kind>>,
}

impl Resolver {
    fn resolve(&self, api_version: &str, kind: &str) -> Option<Arc<Kind>> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        self.exact
            .get(&(group.to_string(), version.to_string(), kind.to_string()))
            .or_else(|| {
                self.by_group_kind
                    .get(&(group.to_string(), kind.to_string()))
            })
            .cloned()
    }
}

fn resource_key(ar: &ApiResource) -> String {
    format!("{}/{}", ar.api_version, ar.plural)
}

/// Resources the collector never looks at (as upstream: events carry no owners worth following).
fn ignored(ar: &ApiResource) -> bool {
    ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io")
}

async fn discover(client: &Client) -> anyhow::Result<(Resolver, Vec<Arc<Kind>>)> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut resolver = Resolver::default();
    let mut watchable = Vec::new();
    for group in discovery.groups() {
        for version in group.versions() {
            for (ar, caps) in group.versioned_resources(version) {
                let kind = Arc::new(Kind {
                    namespaced: caps.scope == Scope::Namespaced,
                    ar: ar.clone(),
                });
                resolver.exact.insert(
                    (ar.group.clone(), ar.version.clone(), ar.kind.clone()),
                    kind,
                );
            }
        }
        for (ar, caps) in group.recommended_resources() {
            let kind = Arc::new(Kind {
                namespaced: caps.scope == Scope::Namespaced,
                ar: ar.clone(),
            });
            resolver
                .by_group_kind
                .insert((ar.group.clone(), ar.kind.clone()), kind.clone());
            if watchable_caps(&caps) && !ignored(&ar) {
                watchable.push(kind);
            }
        }
    }
    Ok((resolver, watchable))
}

fn watchable_caps(caps: &ApiCapabilities) -> bool {
    [verbs::LIST, verbs::WATCH, verbs::DELETE, verbs::PATCH]
        .iter()
        .all(|v| caps.supports_operation(v))
}

fn item_of(kind: &Arc<Kind>, m: &PartialObjectMeta<DynamicObject>) -> Option<Item> {
    let md = &m.metadata;
    Some(Item {
        resource: kind.clone(),
        namespace: md.namespace.clone(),
        name: md.name.clone()?,
        uid: md.uid.clone()?,
        owners: md.owner_references.clone().unwrap_or_default(),
        deleting: md.deletion_timestamp.is_some(),
        finalizers: md.finalizers.clone().unwrap_or_default(),
    })
}

/// Watches one resource's metadata into the graph.
fn spawn_watch(
    client: Client,
    kind: Arc<Kind>,
    graph: Graph,
    wake: Arc<Notify>,
    ready: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client, &kind.ar);
    let key = resource_key(&kind.ar);
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut initial: HashMap<String, Item> = HashMap::new();
        loop {
            let ev = tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => ev,
            };
            let ev = match ev {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    tracing::debug!(resource = %key, error = %e, "garbage collector watch");
                    continue;
                }
                None => return,
            };
            match ev {
                watcher::Event::Init => initial.clear(),
                watcher::Event::InitApply(m) => {
                    if let Some(it) = item_of(&kind, &m) {
                        initial.insert(it.uid.clone(), it);
                    }
                }
                watcher::Event::InitDone => {
                    if let Ok(mut g) = graph.lock() {
                        g.insert(key.clone(), std::mem::take(&mut initial));
                    }
                    ready.notify_one();
                }
                watcher::Event::Apply(m) => {
                    if let (Some(it), Ok(mut g)) = (item_of(&kind, &m), graph.lock()) {
                        g.entry(key.clone()).or_default().insert(it.uid.clone(), it);
                    }
                }
                watcher::Event::Delete(m) => {
                    if let (Some(uid), Ok(mut g)) = (m.metadata.uid.as_ref(), graph.lock()) {
                        if let Some(items) = g.get_mut(&key) {
                            items.remove(uid);
                        }
                    }
                }
            }
            wake.notify_one();
        }
    });
}

/// Runs the garbage collector until `shutdown`.
pub async fn run(ctx: crate::ControllerContext) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let shutdown = ctx.shutdown.clone();
    let cfg = ctx.config.gc.clone();
    let graph: Graph = Arc::default();
    let wake = Arc::new(Notify::new());
    let resolver = Arc::new(Mutex::new(Resolver::default()));
    let mut watched: HashSet<String> = HashSet::new();

    // First discovery: wait until every initial list is in before acting.
    let (r, kinds) = loop {
        match discover(&client).await {
            Ok(x) => break x,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector discovery");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let ready = Arc::new(Notify::new());
    for k in &kinds {
        watched.insert(resource_key(&k.ar));
        spawn_watch(
            client.clone(),
            k.clone(),
            graph.clone(),
            wake.clone(),
            ready.clone(),
            shutdown.clone(),
        );
    }
    if let Ok(mut res) = resolver.lock() {
        *res = r;
    }
    loop {
        let done = graph.lock().map(|g| g.len()).unwrap_or(0);
        if done >= kinds.len() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ready.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    tracing::info!(resources = kinds.len(), "garbage collector caches synced");

    // Re-discovery: new kinds get a watch.
    {
        let (client, graph, wake, resolver, shutdown) = (
            client.clone(),
            graph.clone(),
            wake.clone(),
            resolver.clone(),
            shutdown.clone(),
        );
        let every = Duration::from_secs(cfg.gc_rediscovery_seconds.max(1));
        tokio::spawn(async move {
            let ready = Arc::new(Notify::new());
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                let Ok((r, kinds)) = discover(&client).await else {
                    continue;
                };
                for k in kinds {
                    if watched.insert(resource_key(&k.ar)) {
                        tracing::info!(resource = %resource_key(&k.ar), "garbage collector watches a new resource");
                        spawn_watch(
                            client.clone(),
                            k,
                            graph.clone(),
                            wake.clone(),
                            ready.clone(),
                            shutdown.clone(),
                        );
                    }
                }
                if let Ok(mut res) = resolver.lock() {
                    *res = r;
                }
            }
        });
    }

    let gc = Collector {
        client,
        graph,
        resolver,
    };
    let mut rounds = Rounds::new("garbagecollector", wake, Duration::from_secs(30), shutdown);
    while rounds.next().await {
        rounds.report(gc.sync().await);
    }
    Ok(())
}

/// How an owner reference stands.
#[derive(Debug, PartialEq)]
enum OwnerState {
    /// The owner exists and is not waiting for its dependents.
    Solid,
    /// The owner is gone (or a different object holds its name).
    Dangling,
    /// The owner is being deleted in the foreground.
    WaitingForDependents,
}

struct Collector {
    client: Client,
    graph: Graph,
    resolver: Arc<Mutex<Resolver>>,
}

impl Collector {
    fn api(&self, kind: &Kind, namespace: Option<&str>) -> Api<DynamicObject> {
        match (kind.namespaced, namespace) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &kind.ar),
            _ => Api::all_with(self.client.clone(), &kind.ar),
        }
    }

    fn item_api(&self, it: &Item) -> Api<DynamicObject> {
        self.api(&it.resource, it.namespace.as_deref())
    }

    async fn sync(&self) -> anyhow::Result<()> {
        let items: Vec<Item> = match self.graph.lock() {
            Ok(g) => g.values().flat_map(|m| m.values().cloned()).collect(),
            Err(_) => return Ok(()),
        };
        let by_uid: HashMap<&str, &Item> = items.iter().map(|i| (i.uid.as_str(), i)).collect();
        let mut dependents: HashMap<&str, Vec<&Item>> = HashMap::new();
        for it in &items {
            for o in &it.owners {
                dependents.entry(o.uid.as_str()).or_default().push(it);
            }
        }
        let mut first_err: Option<anyhow::Error> = None;
        let mut note = |r: anyhow::Result<()>| {
            if let Err(e) = r {
                tracing::debug!(error = %format!("{e:#}"), "garbage collector");
                first_err.get_or_insert(e);
            }
        };
        for it in items.iter().filter(|i| i.deleting) {
            let deps = dependents.get(it.uid.as_str()).cloned().unwrap_or_default();
            if it.has_finalizer(ORPHAN) {
                note(self.orphan_dependents(it, &deps).await);
            } else if it.has_finalizer(FOREGROUND) {
                let blocking = deps.iter().any(|d| {
                    d.owners
                        .iter()
                        .any(|o| o.uid == it.uid && o.block_owner_deletion == Some(true))
                });
                if !blocking {
                    note(self.remove_finalizer(it, FOREGROUND).await);
                }
            }
        }
        for it in items.iter().filter(|i| !i.owners.is_empty() && !i.deleting) {
            let has_dependents = dependents.contains_key(it.uid.as_str());
            note(self.attempt_to_delete(it, &by_uid, has_dependents).await);
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Classifies one owner reference: from the cache when it shows the owner alive, else
    /// from a live read, so lag never makes a live owner look gone.
    async fn owner_state(
        &self,
        dep: &Item,
        o: &OwnerReference,
        by_uid: &HashMap<&str, &Item>,
    ) -> anyhow::Result<OwnerState> {
        if let Some(owner) = by_uid.get(o.uid.as_str()) {
            if owner.deleting && owner.has_finalizer(FOREGROUND) {
                return Ok(OwnerState::WaitingForDependents);
            }
            return Ok(OwnerState::Solid);
        }
        let kind = self
            .resolver
            .lock()
            .ok()
            .and_then(|r| r.resolve(&o.api_version, &o.kind));
        let Some(kind) = kind else {
            // A kind that is not served cannot be checked: leave the dependent alone.
            return Ok(OwnerState::Solid);
        };
        let api = if kind.namespaced {
            match &dep.namespace {
                Some(ns) => self.api(&kind, Some(ns)),
                // A cluster-scoped dependent cannot have a namespaced owner.
                None => return Ok(OwnerState::Dangling),
            }
        } else {
            self.api(&kind, None)
        };
        let live = api.get_metadata_opt(&o.name).await?;
        Ok(match live {
            None => OwnerState::Dangling,
            Some(m) if m.metadata.uid.as_deref() != Some(o.uid.as_str()) => OwnerState::Dangling,
            Some(m) => {
                let fg = m
                    .metadata
                    .finalizers
                    .as_ref()
                    .is_some_and(|f| f.iter().any(|x| x == FOREGROUND));
                if m.metadata.deletion_timestamp.is_some() && fg {
                    OwnerState::WaitingForDependents
                } else {
                    OwnerState::Solid
                }
            }
        })
    }

    async fn attempt_to_delete(
        &self,
        it: &Item,
        by_uid: &HashMap<&str, &Item>,
        has_dependents: bool,
    ) -> anyhow::Result<()> {
        // Decide on the object as it is now, not as the cache last saw it (upstream's
        // attemptToDeleteItem reads it live): an owner deleted with `--cascade=orphan` has
        // just removed its reference, and the cached copy would still name it.
        let Some(live) = self.item_api(it).get_metadata_opt(&it.name).await? else {
            return Ok(());
        };
        if live.metadata.uid.as_deref() != Some(it.uid.as_str()) {
            return Ok(());
        }
        let owners = live.metadata.owner_references.clone().unwrap_or_default();
        let finalizers = live.metadata.finalizers.clone().unwrap_or_default();
        let has_finalizer = |f: &str| finalizers.iter().any(|x| x == f);
        let mut solid = 0;
        let mut gone: Vec<&str> = Vec::new();
        let mut waiting = 0;
        for o in &owners {
            match self.owner_state(it, o, by_uid).await? {
                OwnerState::Solid => solid += 1,
                OwnerState::Dangling => gone.push(&o.uid),
                OwnerState::WaitingForDependents => {
                    waiting += 1;
                    gone.push(&o.uid);
                }
            }
        }
        if gone.is_empty() {
            return Ok(());
        }
        if solid > 0 {
            // Some owner still holds it: only drop the references to the others.
            tracing::info!(namespace = ?it.namespace, name = %it.name, kind = %it.resource.ar.kind,
                "garbage collector removes references to deleted owners");
            return self.remove_owner_refs(it, &gone).await;
        }
        let policy = if waiting > 0 && has_dependents {
            Some(kube::api::PropagationPolicy::Foreground)
        } else if has_finalizer(ORPHAN) {
            Some(kube::api::PropagationPolicy::Orphan)
        } else if has_finalizer(FOREGROUND) {
            Some(kube::api::PropagationPolicy::Foreground)
        } else {
            Some(kube::api::PropagationPolicy::Background)
        };
        tracing::info!(namespace = ?it.namespace, name = %it.name, kind = %it.resource.ar.kind,
            ?policy, "garbage collector deletes object whose owners are gone");
        // The resourceVersion read above is a precondition too: if the object changed since
        // (its references removed), the delete fails with 409 and is reconsidered.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(it.uid.clone()),
                resource_version: live.metadata.resource_version.clone(),
            }),
            propagation_policy: policy,
            ..DeleteParams::default()
        };
        ignore_gone(self.item_api(it).delete(&it.name, &dp).await.map(|_| ()))
    }

    /// Drops the owner references with the given uids from `it` (read live, written with
    /// its resourceVersion so a concurrent change is not lost).
    ///
    /// A write that loses a race (409: the object's controller updated it meanwhile) is done
    /// again on the newer object: an owner being orphaned must not go while a dependent
    /// still names it, or the dependent would be collected as dangling.
    async fn remove_owner_refs(&self, it: &Item, uids: &[&str]) -> anyhow::Result<()> {
        let api = self.item_api(it);
        for _ in 0..REF_REMOVAL_ATTEMPTS {
            let Some(live) = api.get_metadata_opt(&it.name).await? else {
                return Ok(());
            };
            if live.metadata.uid.as_deref() != Some(it.uid.as_str()) {
                return Ok(());
            }
            let refs = live.metadata.owner_references.unwrap_or_default();
            let kept: Vec<&OwnerReference> = refs
                .iter()
                .filter(|o| !uids.contains(&o.uid.as_str()))
                .collect();
            if kept.len() == refs.len() {
                return Ok(());
            }
            let patch = json!({"metadata": {
                "resourceVersion": live.metadata.resource_version,
                "ownerReferences": if kept.is_empty() { serde_json::Value::Null } else { json!(kept) },
            }});
            match api
                .patch(&it.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
        anyhow::bail!(
            "removing owner references from {}: too many conflicting writes",
            it.name
        )
    }

    async fn orphan_dependents(&self, owner: &Item, deps: &[&Item]) -> anyhow::Result<()> {
        for d in deps {
            self.remove_owner_refs(d, &[owner.uid.as_str()]).await?;
        }
        tracing::info!(namespace = ?owner.namespace, name = %owner.name, kind = %owner.resource.ar.kind,
            dependents = deps.len(), "garbage collector orphaned dependents");
        self.remove_finalizer(owner, ORPHAN).await
    }

    async fn remove_finalizer(&self, it: &Item, finalizer: &str) -> anyhow::Result<()> {
        let api = self.item_api(it);
        let Some(live) = api.get_metadata_opt(&it.name).await? else {
            return Ok(());
        };
        if live.metadata.uid.as_deref() != Some(it.uid.as_str()) {
            return Ok(());
        }
        let fins = live.metadata.finalizers.unwrap_or_default();
        if !fins.iter().any(|f| f == finalizer) {
            return Ok(());
        }
        let kept: Vec<&String> = fins.iter().filter(|f| *f != finalizer).collect();
        let patch = json!({"metadata": {
            "resourceVersion": live.metadata.resource_version,
            "finalizers": if kept.is_empty() { serde_json::Value::Null } else { json!(kept) },
        }});
        ignore_gone(
            api.patch(&it.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        )
    }
}

/// A 404 (already gone) or 409 (changed meanwhile; the next round sees the new state) is
/// not a failure.
/// How often removing owner references is tried again after a conflict.
const REF_REMOVAL_ATTEMPTS: usize = 10;

fn ignore_gone(r: Result<(), kube::Error>) -> anyhow::Result<()> {
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}
