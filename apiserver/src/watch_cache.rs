//! Watch cache: one per resource, holding the current state plus a ring of recent events,
//! all fed by ONE backend watch over the whole key space (so every cache knows it has seen
//! every revision up to the global one). Each event is encoded once; watchers share the
//! bytes through a broadcast channel, and one that falls behind is cut off (410), never
//! stalling the others.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use parking_lot::RwLock;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::object;
use crate::registry::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::storage::{self, Backend, Event, KeyValue, ListOptions};

/// How many broadcast messages a watcher may fall behind before it is cut off.
const BROADCAST_CAPACITY: usize = 16 * 1024;
/// Events kept per resource for watch resumption: at least this long...
const HISTORY_MIN_AGE: Duration = Duration::from_secs(150);
/// ...but never more than this many.
const HISTORY_MAX_EVENTS: usize = 20_000;
/// How often caches tell watchers how far they are (sent to them as bookmarks).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// One object as served: JSON with `metadata.resourceVersion`, plus what filters need.
#[derive(Debug)]
pub struct CachedObject {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub revision: i64,
    pub bytes: Bytes,
    pub labels: Map<String, Value>,
    pub fields: Vec<(&'static str, String)>,
}

/// Watch event types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change to one object of a resource.
#[derive(Debug)]
pub struct CacheEvent {
    pub revision: i64,
    pub kind: EventType,
    /// The new object (for Deleted: the last state, stamped with the delete's revision).
    pub obj: Arc<CachedObject>,
    pub prev: Option<Arc<CachedObject>>,
    pub at: Instant,
}

/// What watchers receive.
#[derive(Debug, Clone)]
pub enum Broadcast {
    Event(Arc<CacheEvent>),
    /// Every event up to this revision has been sent.
    Progress(i64),
    /// The cache was rebuilt; watchers must end (clients re-list).
    Reset,
}

/// What a list or watch selects.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, o: &CachedObject) -> bool {
        if let Some(ns) = &self.namespace {
            if &o.namespace != ns {
                return false;
            }
        }
        if !self.labels.is_empty() && !self.labels.matches(&o.labels) {
            return false;
        }
        if !self.fields.is_empty() {
            return self.fields.matches(|f| match f {
                "metadata.name" => Some(o.name.clone()),
                "metadata.namespace" => Some(o.namespace.clone()),
                other => o
                    .fields
                    .iter()
                    .find(|(k, _)| *k == other)
                    .map(|(_, v)| v.clone()),
            });
        }
        true
    }
}

struct Inner {
    objects: BTreeMap<String, Arc<CachedObject>>,
    history: VecDeque<Arc<CacheEvent>>,
    /// Every event with revision > history_start is in `history`.
    history_start: i64,
    revision: i64,
}

/// The cache of one resource.
pub struct WatchCache {
    pub info: ResourceInfo,
    prefix: String,
    inner: RwLock<Inner>,
    tx: broadcast::Sender<Broadcast>,
    /// Highest revision this API server wrote to this resource: a reader that must see
    /// this server's own writes waits for the cache to reach it (no store round trip).
    local_write: std::sync::atomic::AtomicI64,
}

/// Where a new watch starts.
pub struct WatchStart {
    /// Events to send first, in order.
    pub initial: Vec<(EventType, Arc<CachedObject>)>,
    /// The cache revision the initial events bring the watcher to.
    pub revision: i64,
    pub rx: broadcast::Receiver<Broadcast>,
}

/// Errors starting a watch or read from the cache.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld { requested: i64, oldest: i64 },
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge { requested: i64, current: i64 },
}

impl WatchCache {
    fn new(info: ResourceInfo, root: &str) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let prefix = format!(
            "{root}{}",
            info.key_prefix().trim_start_matches("/registry/")
        );
        WatchCache {
            prefix,
            info,
            inner: RwLock::new(Inner {
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                history_start: 0,
                revision: 0,
            }),
            tx,
            local_write: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Records a write this server made to this resource at `rev`.
    pub fn note_local_write(&self, rev: i64) {
        self.local_write
            .fetch_max(rev, std::sync::atomic::Ordering::AcqRel);
    }

    /// The highest revision this server wrote to this resource (0: none yet).
    pub fn last_local_write(&self) -> i64 {
        self.local_write.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Storage key prefix of this resource.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Storage key of an object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.info.namespaced {
            format!("{}{}/{}", self.prefix, namespace, name)
        } else {
            format!("{}{}", self.prefix, name)
        }
    }

    /// Turns a stored key-value into a served object.
    pub fn decode(&self, kv: &KeyValue, revision_override: Option<i64>) -> Option<CachedObject> {
        let rev = revision_override.unwrap_or(kv.mod_revision);
        let strategy = &self.info.strategy;
        // The index needs metadata and selectable fields only: managedFields, often the
        // largest part of an object, are skipped unless the object is converted.
        let parsed = if strategy.has_conversion() {
            serde_json::from_slice(&kv.value)
        } else {
            index_value(&kv.value)
        };
        let value: Value = match parsed {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping undecodable stored object");
                return None;
            }
        };
        let (value, bytes) = if strategy.has_conversion() {
            let mut v = strategy.from_storage(value);
            object::meta_mut(&mut v)
                .insert("resourceVersion".into(), Value::String(rev.to_string()));
            let b = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
            (v, b)
        } else {
            let b = object::with_resource_version(&kv.value, rev);
            (value, b)
        };
        Some(self.cached(kv.key.clone(), &value, bytes, rev))
    }

    fn cached(&self, key: String, value: &Value, bytes: Bytes, revision: i64) -> CachedObject {
        let meta = object::meta(value);
        let get = |f: &str| {
            meta.and_then(|m| m.get(f))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        CachedObject {
            namespace: get("namespace"),
            name: get("name"),
            labels: meta
                .and_then(|m| m.get("labels"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            fields: self.info.strategy.selectable_fields(value),
            key,
            revision,
            bytes,
        }
    }

    /// Re-stamps an object with another revision (for DELETED events).
    fn restamp(&self, o: &CachedObject, rev: i64) -> CachedObject {
        let mut v: Value = serde_json::from_slice(&o.bytes).unwrap_or(Value::Null);
        object::meta_mut(&mut v).insert("resourceVersion".into(), Value::String(rev.to_string()));
        let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
        CachedObject {
            key: o.key.clone(),
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            revision: rev,
            bytes,
            labels: o.labels.clone(),
            fields: o.fields.clone(),
        }
    }

    fn reset(&self, kvs: &[&KeyValue], revision: i64) {
        let mut objects = BTreeMap::new();
        for kv in kvs {
            if let Some(o) = self.decode(kv, None) {
                objects.insert(kv.key.clone(), Arc::new(o));
            }
        }
        let mut inner = self.inner.write();
        inner.objects = objects;
        inner.history.clear();
        inner.history_start = revision;
        inner.revision = revision;
        let _ = self.tx.send(Broadcast::Reset);
    }

    fn apply(&self, ev: &Event) {
        let now = Instant::now();
        let rev = ev.revision();
        // Decode before taking the lock: readers of the cache never wait on JSON parsing.
        let decoded = match ev {
            Event::Put { kv, .. } => match self.decode(kv, None) {
                Some(o) => Some(Arc::new(o)),
                None => return,
            },
            Event::Delete { .. } => None,
        };
        let mut inner = self.inner.write();
        let event = match ev {
            Event::Put { kv, .. } => {
                let Some(o) = decoded else {
                    return;
                };
                let prev = inner.objects.insert(kv.key.clone(), o.clone());
                CacheEvent {
                    revision: rev,
                    kind: if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    },
                    obj: o,
                    prev,
                    at: now,
                }
            }
            Event::Delete { prev, .. } => {
                let Some(old) = inner.objects.remove(&prev.key) else {
                    inner.revision = inner.revision.max(rev);
                    return;
                };
                CacheEvent {
                    revision: rev,
                    kind: EventType::Deleted,
                    obj: Arc::new(self.restamp(&old, rev)),
                    prev: Some(old),
                    at: now,
                }
            }
        };
        let event = Arc::new(event);
        inner.revision = inner.revision.max(rev);
        inner.history.push_back(event.clone());
        while inner.history.len() > HISTORY_MAX_EVENTS
            || inner.history.front().is_some_and(|e| {
                now.duration_since(e.at) > HISTORY_MIN_AGE && inner.history.len() > 100
            })
        {
            if let Some(e) = inner.history.pop_front() {
                inner.history_start = e.revision;
            }
        }
        let _ = self.tx.send(Broadcast::Event(event));
    }

    fn progress(&self, rev: i64) {
        let mut inner = self.inner.write();
        if rev > inner.revision {
            inner.revision = rev;
        }
        let _ = self.tx.send(Broadcast::Progress(inner.revision));
    }

    /// Revision the cache is at.
    pub fn revision(&self) -> i64 {
        self.inner.read().revision
    }

    /// One object by key.
    pub fn get(&self, key: &str) -> Option<Arc<CachedObject>> {
        self.inner.read().objects.get(key).cloned()
    }

    /// Objects matching `filter` with key > `start_after`, at most `limit` (0 = all).
    /// Returns the objects, the cache revision, and whether more matched.
    pub fn list(
        &self,
        filter: &Filter,
        start_after: &str,
        limit: usize,
    ) -> (Vec<Arc<CachedObject>>, i64, bool) {
        let inner = self.inner.read();
        let scope = match &filter.namespace {
            Some(ns) if self.info.namespaced => format!("{}{}/", self.prefix, ns),
            _ => self.prefix.clone(),
        };
        let start = if start_after.is_empty() {
            scope.clone()
        } else {
            start_after.to_string()
        };
        let mut out = Vec::new();
        let mut more = false;
        for (k, o) in inner.objects.range(start..) {
            if !k.starts_with(&scope) {
                break;
            }
            if k.as_str() == start_after {
                continue;
            }
            if !filter.matches(o) {
                continue;
            }
            if limit > 0 && out.len() == limit {
                more = true;
                break;
            }
            out.push(o.clone());
        }
        (out, inner.revision, more)
    }

    /// Number of objects (for metrics and remainingItemCount).
    pub fn len(&self) -> usize {
        self.inner.read().objects.len()
    }

    /// True when the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Starts a watch. `from`: None = current state as ADDED events then changes;
    /// Some(n) = changes after n.
    pub fn watch(&self, from: Option<i64>, filter: &Filter) -> Result<WatchStart, CacheError> {
        let inner = self.inner.read();
        let rx = self.tx.subscribe();
        let mut initial = Vec::new();
        match from {
            None => {
                for o in inner.objects.values() {
                    if filter.matches(o) {
                        initial.push((EventType::Added, o.clone()));
                    }
                }
            }
            Some(n) => {
                if n > inner.revision {
                    return Err(CacheError::TooLarge {
                        requested: n,
                        current: inner.revision,
                    });
                }
                if n < inner.history_start {
                    return Err(CacheError::TooOld {
                        requested: n,
                        oldest: inner.history_start,
                    });
                }
                let idx = inner.history.partition_point(|e| e.revision <= n);
                for e in inner.history.iter().skip(idx) {
                    if let Some(t) = filtered_type(e, filter) {
                        initial.push((t, e.obj.clone()));
                    }
                }
            }
        }
        Ok(WatchStart {
            initial,
            revision: inner.revision,
            rx,
        })
    }
}

/// The type a watcher with `filter` sees for `e`, if it sees it at all.
pub fn filtered_type(e: &CacheEvent, filter: &Filter) -> Option<EventType> {
    let now = filter.matches(&e.obj);
    match e.kind {
        EventType::Added => now.then_some(EventType::Added),
        EventType::Deleted => now.then_some(EventType::Deleted),
        EventType::Modified => {
            let before = e.prev.as_ref().is_some_and(|p| filter.matches(p));
            match (before, now) {
                (true, true) => Some(EventType::Modified),
                (false, true) => Some(EventType::Added),
                (true, false) => Some(EventType::Deleted),
                (false, false) => None,
            }
        }
    }
}

/// A request to the feeder to start feeding caches added at run time (custom resources):
/// the feeder lists their prefix at the revision it has reached, so no event is lost or doubled.
struct AddRequest {
    caches: Vec<Arc<WatchCache>>,
    done: oneshot::Sender<Result<(), String>>,
}

/// Requests for run-time caches waiting for the feeder (it serves them between events).
const ADD_QUEUE: usize = 64;

/// Every key under `prefix` at `revision` (0 = latest), with the revision read at.
async fn list_pages(
    backend: &dyn Backend,
    prefix: &str,
    mut revision: i64,
) -> storage::Result<(Vec<KeyValue>, i64)> {
    let mut all: Vec<KeyValue> = Vec::new();
    let mut start_after = String::new();
    loop {
        let page = backend
            .list(&ListOptions {
                prefix: prefix.to_string(),
                start_after: start_after.clone(),
                limit: 10_000,
                revision,
            })
            .await?;
        revision = page.revision;
        let more = page.more;
        if let Some(last) = page.kvs.last() {
            start_after = last.key.clone();
        }
        all.extend(page.kvs);
        if !more {
            break;
        }
    }
    Ok((all, revision))
}

/// Every key under `prefix` at `revision`.
async fn list_all(
    backend: &dyn Backend,
    prefix: &str,
    revision: i64,
) -> storage::Result<Vec<KeyValue>> {
    Ok(list_pages(backend, prefix, revision).await?.0)
}

/// All resource caches, fed by one backend watch.
pub struct Caches {
    /// Key prefix of everything stored, ending in `/` (`/registry/`).
    root: String,
    by_resource: HashMap<(String, String, String), Arc<WatchCache>>,
    by_prefix: HashMap<String, Vec<Arc<WatchCache>>>,
    /// Caches added at run time (custom resources), by key prefix.
    dynamic: RwLock<HashMap<String, Vec<Arc<WatchCache>>>>,
    add_tx: mpsc::Sender<AddRequest>,
    add_rx: parking_lot::Mutex<Option<mpsc::Receiver<AddRequest>>>,
    seen_tx: watch::Sender<i64>,
    seen_rx: watch::Receiver<i64>,
    ready: watch::Receiver<bool>,
    ready_tx: watch::Sender<bool>,
}

impl Caches {
    /// Builds one cache per resource; call `spawn_feeder` to fill them.
    pub fn new(resources: &[ResourceInfo], root: &str) -> Arc<Self> {
        let root = format!("{}/", root.trim_end_matches('/'));
        let mut by_resource = HashMap::new();
        let mut by_prefix: HashMap<String, Vec<Arc<WatchCache>>> = HashMap::new();
        for r in resources {
            let c = Arc::new(WatchCache::new(r.clone(), &root));
            by_prefix
                .entry(c.prefix.clone())
                .or_default()
                .push(c.clone());
            by_resource.insert(
                (
                    r.group.to_string(),
                    r.version.to_string(),
                    r.plural.to_string(),
                ),
                c,
            );
        }
        let (seen_tx, seen_rx) = watch::channel(0);
        let (ready_tx, ready) = watch::channel(false);
        let (add_tx, add_rx) = mpsc::channel(ADD_QUEUE);
        Arc::new(Caches {
            root,
            by_resource,
            by_prefix,
            dynamic: RwLock::new(HashMap::new()),
            add_tx,
            add_rx: parking_lot::Mutex::new(Some(add_rx)),
            seen_tx,
            seen_rx,
            ready,
            ready_tx,
        })
    }

    /// The cache of a resource.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<&Arc<WatchCache>> {
        self.by_resource
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
    }

    /// Whether the initial load has finished.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Highest revision every cache has caught up to.
    pub fn seen(&self) -> i64 {
        *self.seen_rx.borrow()
    }

    /// Waits until every cache has seen `rev`, or the timeout passes.
    pub async fn wait_for(&self, rev: i64, timeout: Duration) -> bool {
        if *self.seen_rx.borrow() >= rev {
            return true;
        }
        let mut rx = self.seen_rx.clone();
        let ok = matches!(
            tokio::time::timeout(timeout, rx.wait_for(|s| *s >= rev)).await,
            Ok(Ok(_))
        );
        ok
    }

    /// Waits for the initial load.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.clone();
        let _ = rx.wait_for(|r| *r).await;
    }

    fn caches_for_key(&self, key: &str) -> Option<&Vec<Arc<WatchCache>>> {
        self.lookup_key(&self.by_prefix, key)
    }

    /// The caches of `key` in `map` (static or run-time caches).
    fn lookup_key<'a>(
        &self,
        map: &'a HashMap<String, Vec<Arc<WatchCache>>>,
        key: &str,
    ) -> Option<&'a Vec<Arc<WatchCache>>> {
        // Below the root, keys are <res>/... or <group>/<res>/...
        let rest = key.strip_prefix(self.root.as_str())?;
        let mut slashes = rest.match_indices('/').map(|(i, _)| i);
        let first = slashes.next()?;
        let n = self.root.len();
        if let Some(c) = map.get(&key[..=n + first]) {
            return Some(c);
        }
        let second = slashes.next()?;
        map.get(&key[..=n + second])
    }

    /// Feeds one backend event to the caches of its key.
    fn apply(&self, ev: &Event) {
        if let Some(cs) = self.caches_for_key(ev.key()) {
            for c in cs {
                c.apply(ev);
            }
            return;
        }
        let dynamic = self.dynamic.read();
        if let Some(cs) = self.lookup_key(&dynamic, ev.key()) {
            for c in cs {
                c.apply(ev);
            }
        }
    }

    /// A cache for a resource served from run time on (custom resources); `add` starts feeding it.
    pub fn new_cache(&self, info: ResourceInfo) -> Arc<WatchCache> {
        Arc::new(WatchCache::new(info, &self.root))
    }

    /// Starts feeding caches that share one key prefix (the versions of one custom
    /// resource), replacing those fed for that prefix before. Returns once they hold the
    /// stored objects as of the feeder's revision.
    pub async fn add(&self, caches: Vec<Arc<WatchCache>>) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        self.add_tx
            .send(AddRequest { caches, done })
            .await
            .map_err(|_| "the watch cache feeder has stopped".to_string())?;
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the watch cache feeder has stopped".into()),
            Err(_) => Err("timed out waiting for the watch cache feeder".into()),
        }
    }

    /// Stops feeding the run-time caches of `prefix`; their watchers are told to end.
    pub fn remove(&self, prefix: &str) {
        let removed = self.dynamic.write().remove(prefix);
        for c in removed.into_iter().flatten() {
            let rev = c.revision();
            c.reset(&[], rev);
        }
    }

    /// Lists `req`'s prefix at `revision` and installs its caches (feeder task only).
    async fn install(&self, backend: &dyn Backend, req: AddRequest, revision: i64) {
        let Some(prefix) = req.caches.first().map(|c| c.prefix.clone()) else {
            let _ = req.done.send(Ok(()));
            return;
        };
        let result = async {
            let kvs = list_all(backend, &prefix, revision).await?;
            let refs: Vec<&KeyValue> = kvs.iter().collect();
            for c in &req.caches {
                c.reset(&refs, revision);
            }
            let replaced = self.dynamic.write().insert(prefix, req.caches);
            for c in replaced.into_iter().flatten() {
                let rev = c.revision();
                c.reset(&[], rev);
            }
            Ok::<(), storage::Error>(())
        }
        .await;
        let _ = req.done.send(result.map_err(|e| e.to_string()));
    }

    async fn load(&self, backend: &dyn Backend, root: &str) -> storage::Result<i64> {
        let (all, revision) = list_pages(backend, root, 0).await?;
        let dynamic = self.dynamic.read().clone();
        let mut grouped: HashMap<*const WatchCache, (Arc<WatchCache>, Vec<&KeyValue>)> =
            HashMap::new();
        for caches in self.by_prefix.values().chain(dynamic.values()) {
            for c in caches {
                grouped.insert(Arc::as_ptr(c), (c.clone(), Vec::new()));
            }
        }
        for kv in &all {
            let cs = self
                .caches_for_key(&kv.key)
                .or_else(|| self.lookup_key(&dynamic, &kv.key));
            if let Some(cs) = cs {
                for c in cs {
                    if let Some(entry) = grouped.get_mut(&Arc::as_ptr(c)) {
                        entry.1.push(kv);
                    }
                }
            }
        }
        for (c, kvs) in grouped.values() {
            c.reset(kvs, revision);
        }
        self.seen_tx.send_replace(revision);
        Ok(revision)
    }

    /// Loads every cache, then follows the backend until `shutdown`. On a broken watch it
    /// re-lists and resets the caches (watchers are told to end).
    pub fn spawn_feeder(
        self: &Arc<Self>,
        backend: Arc<dyn Backend>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        let root = self.root.clone();
        let add_rx = self.add_rx.lock().take();
        tokio::spawn(async move {
            // Without the receiver (a second feeder), run-time caches are not served.
            let (_unused_tx, unused_rx) = mpsc::channel(1);
            let mut add_rx = add_rx.unwrap_or(unused_rx);
            let mut backoff = Duration::from_millis(100);
            loop {
                if shutdown.is_cancelled() {
                    return;
                }
                let rev = match this.load(backend.as_ref(), &root).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(error = %e, "watch cache: initial list failed; retrying");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                };
                this.ready_tx.send_replace(true);
                backoff = Duration::from_millis(100);
                let mut stream = match backend.watch(&root, rev).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "watch cache: watch failed; re-listing");
                        continue;
                    }
                };
                let mut last = rev;
                let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
                progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        item = stream.next() => match item {
                            Some(Ok(ev)) => {
                                let r = ev.revision();
                                this.apply(&ev);
                                last = last.max(r);
                                this.seen_tx.send_replace(last);
                            }
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "watch cache: backend watch ended; re-listing");
                                break;
                            }
                            None => {
                                tracing::warn!("watch cache: backend watch closed; re-listing");
                                break;
                            }
                        },
                        Some(req) = add_rx.recv() => {
                            this.install(backend.as_ref(), req, last).await;
                        }
                        _ = progress.tick() => {
                            // Quiet: tell watchers how far they are (for bookmarks).
                            let dynamic = this.dynamic.read().clone();
                            for cs in this.by_prefix.values().chain(dynamic.values()) {
                                for c in cs {
                                    c.progress(last);
                                }
                            }
                        }
                    }
                }
            }
        })
    }
}

/// A stored object parsed without `metadata.managedFields` (for the cache's index).
fn index_value(bytes: &[u8]) -> serde_json::Result<Value> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
    use std::fmt;

    /// An object; `skip` names the key whose value is not kept, `meta` the key whose value
    /// is read with `managedFields` skipped.
    struct Obj {
        skip: Option<&'static str>,
        meta: Option<&'static str>,
    }

    impl<'de> DeserializeSeed<'de> for Obj {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Obj {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(k) = m.next_key::<String>()? {
                if Some(k.as_str()) == self.skip {
                    m.next_value::<IgnoredAny>()?;
                } else if Some(k.as_str()) == self.meta {
                    let v = m.next_value_seed(Obj {
                        skip: Some("managedFields"),
                        meta: None,
                    })?;
                    out.insert(k, v);
                } else {
                    out.insert(k, m.next_value::<Value>()?);
                }
            }
            Ok(Value::Object(out))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = Obj {
        skip: None,
        meta: Some("metadata"),
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_index_skips_managed_fields_and_keeps_the_rest() {
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "labels": {"x": "y"},
                         "managedFields": [{"manager": "m", "fieldsV1": {"f:data": {}}}]},
            "data": {"k": "v"}
        });
        let v = index_value(obj.to_string().as_bytes()).unwrap();
        let mut want = obj.clone();
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(v, want);
        assert!(index_value(b"{\"metadata\": {}} x").is_err());
        assert!(index_value(b"[1]").is_err());
    }
}
