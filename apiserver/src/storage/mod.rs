//! Storage backends: a small trait over revisions (like kine), with an embedded SQLite
//! implementation and an etcd v3 implementation. Both pass the same suite in `testsuite`.
//!
//! Keys are strings such as `/registry/configmaps/default/foo`. Values are opaque bytes.
//! Every write gets a new, strictly increasing global revision; `resourceVersion` is that
//! revision as a decimal string.

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

pub mod etcd;
pub mod sqlite;
pub mod testsuite;

/// One stored key with its revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this key (this incarnation of it).
    pub create_revision: i64,
    /// Revision of the last write to this key.
    pub mod_revision: i64,
}

/// A page of a list.
#[derive(Debug, Clone, Default)]
pub struct ListResult {
    pub kvs: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: i64,
    /// True when more keys after the last returned one match the prefix at `revision`.
    pub more: bool,
}

/// What a list asks for.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// Only keys starting with this prefix.
    pub prefix: String,
    /// Only keys strictly greater than this one (for continue tokens); empty = from start.
    pub start_after: String,
    /// At most this many keys; 0 = all.
    pub limit: usize,
    /// Read at this revision; 0 = latest. Older than the compacted revision = `Error::Compacted`.
    pub revision: i64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A create (`prev` is None) or an update.
    Put {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// A delete at `revision`; `prev` is the last value before the delete.
    Delete { prev: KeyValue, revision: i64 },
}

impl Event {
    /// Revision of the write this event reports.
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } => *revision,
        }
    }
    /// Key this event is about.
    pub fn key(&self) -> &str {
        match self {
            Event::Put { kv, .. } => &kv.key,
            Event::Delete { prev, .. } => &prev.key,
        }
    }
}

/// A stream of events, in revision order. It ends with `Err(Error::Compacted)` when the
/// backend can no longer deliver what was asked, or other errors when the backend fails.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// Compare-and-swap failed: the key's mod revision is not the expected one.
    /// Carries the current value when the key still exists.
    #[error("conflict on key {key}")]
    Conflict {
        key: String,
        current: Option<Box<KeyValue>>,
    },
    /// The requested revision has been compacted away.
    #[error("required revision {requested} has been compacted (compacted at {compacted})")]
    Compacted { requested: i64, compacted: i64 },
    /// The requested revision is in the future.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision { requested: i64, current: i64 },
    #[error("storage backend: {0}")]
    Backend(String),
}

/// Storage result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The operations the API server uses on its store.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Current value of a key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Keys under a prefix, in key order.
    async fn list(&self, opts: &ListOptions) -> Result<ListResult>;
    /// Number of keys under a prefix right now.
    async fn count(&self, prefix: &str) -> Result<i64>;
    /// Creates a key that must not exist. Returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue>;
    /// Replaces a key whose mod revision is `expected_mod_revision`.
    async fn update(&self, key: &str, value: Bytes, expected_mod_revision: i64)
        -> Result<KeyValue>;
    /// Deletes a key; when `expected_mod_revision` is non-zero it must match.
    /// Returns the deleted value and the delete's revision.
    async fn delete(&self, key: &str, expected_mod_revision: i64) -> Result<(KeyValue, i64)>;
    /// Events under `prefix` with revision strictly greater than `after_revision`.
    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream>;
    /// The newest revision of the store.
    async fn current_revision(&self) -> Result<i64>;
    /// Oldest revision still readable (everything at or below was compacted).
    async fn compacted_revision(&self) -> Result<i64>;
    /// Drops history at or below `revision`.
    async fn compact(&self, revision: i64) -> Result<()>;
}

/// Opens the configured store: etcd when `etcd_endpoints` is non-empty, otherwise the
/// embedded SQLite database at `<data_dir>/db/state.db` (directories are created).
pub async fn open(
    data_dir: &std::path::Path,
    etcd_endpoints: &[String],
) -> Result<std::sync::Arc<dyn Backend>> {
    if !etcd_endpoints.is_empty() {
        let backend = etcd::EtcdBackend::connect(etcd_endpoints).await?;
        tracing::info!(endpoints = ?etcd_endpoints, "storage: etcd");
        return Ok(std::sync::Arc::new(backend));
    }
    let dir = data_dir.join("db");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::Backend(format!("create {}: {e}", dir.display())))?;
    let path = dir.join("state.db");
    let backend = tokio::task::spawn_blocking(move || sqlite::SqliteBackend::open(&path))
        .await
        .map_err(|e| Error::Backend(format!("open sqlite: {e}")))??;
    tracing::info!(path = %dir.join("state.db").display(), "storage: embedded sqlite");
    Ok(std::sync::Arc::new(backend))
}

/// Compacts history every `interval`, keeping the newest `retain_revisions` revisions,
/// until `shutdown` is cancelled. Failures are logged and retried at the next tick.
pub fn spawn_compactor(
    backend: std::sync::Arc<dyn Backend>,
    interval: std::time::Duration,
    retain_revisions: i64,
    shutdown: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; skip it so start-up is not slowed by a compaction.
        ticker.tick().await;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = compact_once(&*backend, retain_revisions).await {
                tracing::warn!(error = %e, "storage compaction failed");
            }
        }
    })
}

/// One compaction pass: compacts to `current - retain_revisions` when that is newer than
/// the last compaction. Returns the revision compacted to, if any.
pub async fn compact_once(backend: &dyn Backend, retain_revisions: i64) -> Result<Option<i64>> {
    let current = backend.current_revision().await?;
    let target = current - retain_revisions.max(0);
    if target <= 0 || target <= backend.compacted_revision().await? {
        return Ok(None);
    }
    backend.compact(target).await?;
    tracing::debug!(revision = target, "storage compacted");
    Ok(Some(target))
}
