//! Embedded store: SQLite with a kine-like revision log.
//!
//! Every write appends one row to `kv` whose `id` is the new global revision. A key's
//! current value is its row with the highest id; a delete appends a tombstone row.
//! Reads at revision R pick, per key, the row with the highest id <= R.
//!
//! Writes go through one dedicated writer thread that drains a queue and commits each
//! batch in a single transaction (one fsync: WAL + `synchronous=FULL`), then answers every
//! caller. Reads use a small pool of read-only connections on blocking threads.
//! Committed events fan out through a bounded `broadcast`; a watch replays history
//! from the log, then follows the broadcast.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use super::{Backend, Error, Event, KeyValue, ListOptions, ListResult, Result, WatchStream};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;
/// Pending writes queued for the writer before callers wait.
const WRITE_QUEUE: usize = 8192;
/// Rows read per page when a watch replays history.
const REPLAY_PAGE: i64 = 1000;
/// Concurrent readers (and pooled read connections).
const READERS: usize = 8;
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    id INTEGER PRIMARY KEY,
    name BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL
);
DROP INDEX IF EXISTS kv_name_id;
CREATE INDEX IF NOT EXISTS kv_name_id_deleted ON kv(name, id, deleted);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
";

fn db_err(context: &str) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Backend(format!("sqlite {context}: {e}"))
}

/// Buffer sizes; `Default` is what [`SqliteBackend::open`] uses.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Committed write batches buffered for watchers; a watcher further behind than this
    /// is ended with `Error::Compacted` (it must re-list).
    pub event_buffer: usize,
    /// Events buffered per watch stream between its task and its consumer.
    pub watch_buffer: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            event_buffer: 1024,
            watch_buffer: 1024,
        }
    }
}

/// The embedded SQLite backend.
pub struct SqliteBackend {
    options: SqliteOptions,
    shared: Arc<Shared>,
    writes: mpsc::Sender<WriteRequest>,
    readers: Arc<Readers>,
}

/// State shared by the writer thread, readers and watches.
struct Shared {
    /// Newest committed revision.
    current: AtomicI64,
    /// Revision at or below which history was compacted.
    compacted: AtomicI64,
    /// Committed events, one message per batch, in revision order.
    events: broadcast::Sender<Arc<[Event]>>,
}

impl SqliteBackend {
    /// Opens (creating when missing) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens the database file at `path` with explicit buffer sizes.
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<Self> {
        let conn = Connection::open(path)
            .map_err(|e| Error::Backend(format!("open sqlite database {}: {e}", path.display())))?;
        // auto_vacuum only takes effect before the first table is created.
        conn.execute_batch(
            "PRAGMA auto_vacuum = INCREMENTAL;
             PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;",
        )
        .map_err(db_err("configure"))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(db_err("configure"))?;
        conn.execute_batch(SCHEMA)
            .map_err(db_err("create schema"))?;
        let (max_id, compacted) = {
            let max_id: i64 = conn
                .query_row("SELECT COALESCE(MAX(id), 0) FROM kv", [], |r| r.get(0))
                .map_err(db_err("read revision"))?;
            (max_id, read_compacted(&conn)?)
        };
        // Rows above the compacted revision are never deleted, so this is the last revision
        // ever handed out (compaction may have removed the newest rows only if they were
        // at or below `compacted`).
        let current = max_id.max(compacted);
        conn.set_prepared_statement_cache_capacity(32);

        let (events, _) = broadcast::channel(options.event_buffer.max(1));
        let shared = Arc::new(Shared {
            current: AtomicI64::new(current),
            compacted: AtomicI64::new(compacted),
            events,
        });
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            conn,
            shared: shared.clone(),
            next: current,
        };
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| Error::Backend(format!("spawn sqlite writer thread: {e}")))?;
        let readers = Arc::new(Readers {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(READERS)),
        });
        Ok(Self {
            options,
            shared,
            writes,
            readers,
        })
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        self.writes
            .send(WriteRequest { op, reply })
            .await
            .map_err(|_| Error::Backend("sqlite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Backend("sqlite writer dropped the request".into()))?
    }

    fn check_read_revision(&self, revision: i64) -> Result<i64> {
        let current = self.shared.current.load(Ordering::Acquire);
        if revision == 0 {
            return Ok(current);
        }
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if revision < compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted,
            });
        }
        Ok(revision)
    }
}

fn read_compacted(conn: &Connection) -> Result<i64> {
    Ok(conn
        .query_row("SELECT value FROM meta WHERE key = 'compacted'", [], |r| {
            r.get::<_, i64>(0)
        })
        .optional()
        .map_err(db_err("read compacted revision"))?
        .unwrap_or(0))
}

/// The smallest key greater than every key starting with `prefix`; None = no upper bound.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn key_string(name: Vec<u8>) -> Result<String> {
    String::from_utf8(name).map_err(|e| Error::Backend(format!("stored key is not UTF-8: {e}")))
}

// ---------------------------------------------------------------------------------------
// Writer

enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: i64,
    },
    Delete {
        key: String,
        expected: i64,
    },
    Compact {
        revision: i64,
    },
}

enum WriteOutcome {
    Put(KeyValue),
    Deleted(KeyValue, i64),
    Compacted,
}

struct WriteRequest {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOutcome>>,
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    /// Last revision handed out (committed or not: a failed batch's revisions are skipped).
    next: i64,
}

/// The live (non-deleted) latest row of a key.
struct Latest {
    id: i64,
    create_revision: i64,
    deleted: bool,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<WriteRequest>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            if let WriteOp::Compact { revision } = first.op {
                let result = self.compact(revision);
                let _ = first.reply.send(result.map(|()| WriteOutcome::Compacted));
                continue;
            }
            batch.push(first);
            let mut deferred = None;
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(req) if matches!(req.op, WriteOp::Compact { .. }) => {
                        deferred = Some(req);
                        break;
                    }
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
            if let Some(req) = deferred {
                if let WriteOp::Compact { revision } = req.op {
                    let result = self.compact(revision);
                    let _ = req.reply.send(result.map(|()| WriteOutcome::Compacted));
                }
            }
        }
        tracing::debug!("sqlite writer stopping: all handles dropped");
    }

    fn commit_batch(&mut self, batch: &mut Vec<WriteRequest>) {
        let start_next = self.next;
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = format!("sqlite begin transaction: {e}");
            for req in batch.drain(..) {
                let _ = req.reply.send(Err(Error::Backend(msg.clone())));
            }
            return;
        }
        let mut results = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let mut failed = None;
        for req in batch.iter() {
            match self.apply(&req.op) {
                Ok((outcome, event)) => {
                    results.push(Ok(outcome));
                    events.push(event);
                }
                Err(Error::Backend(msg)) => {
                    failed = Some(msg);
                    break;
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let failed = match failed {
            Some(msg) => Some(msg),
            None => self
                .conn
                .execute_batch("COMMIT")
                .err()
                .map(|e| format!("sqlite commit: {e}")),
        };
        if let Some(msg) = failed {
            tracing::error!(error = %msg, "sqlite write batch failed");
            let _ = self.conn.execute_batch("ROLLBACK");
            for req in batch.drain(..) {
                let _ = req.reply.send(Err(Error::Backend(msg.clone())));
            }
            return;
        }
        if self.next != start_next {
            self.shared.current.store(self.next, Ordering::Release);
            let _ = self.shared.events.send(events.into());
        }
        for (req, result) in batch.drain(..).zip(results) {
            let _ = req.reply.send(result);
        }
    }

    fn latest(&self, key: &str, with_value: bool) -> Result<Option<(Latest, Bytes)>> {
        let sql = if with_value {
            "SELECT id, create_revision, deleted, value FROM kv WHERE name = ?1 ORDER BY id DESC LIMIT 1"
        } else {
            "SELECT id, create_revision, deleted, x'' FROM kv WHERE name = ?1 ORDER BY id DESC LIMIT 1"
        };
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(db_err("prepare lookup"))?;
        stmt.query_row(params![key.as_bytes()], |r| {
            Ok((
                Latest {
                    id: r.get(0)?,
                    create_revision: r.get(1)?,
                    deleted: r.get::<_, i64>(2)? != 0,
                },
                Bytes::from(r.get::<_, Vec<u8>>(3)?),
            ))
        })
        .optional()
        .map_err(db_err("lookup key"))
    }

    fn insert(
        &self,
        id: i64,
        key: &str,
        create_revision: i64,
        prev_revision: i64,
        deleted: bool,
        value: &[u8],
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "INSERT INTO kv (id, name, create_revision, prev_revision, deleted, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(db_err("prepare insert"))?;
        stmt.execute(params![
            id,
            key.as_bytes(),
            create_revision,
            prev_revision,
            deleted as i64,
            value
        ])
        .map_err(db_err("insert"))?;
        Ok(())
    }

    /// Applies one write inside the open transaction. `Error::Backend` aborts the batch;
    /// other errors are that caller's answer.
    fn apply(&mut self, op: &WriteOp) -> Result<(WriteOutcome, Event)> {
        match op {
            WriteOp::Create { key, value } => {
                if let Some((latest, _)) = self.latest(key, false)? {
                    if !latest.deleted {
                        return Err(Error::AlreadyExists(key.clone()));
                    }
                }
                let rev = self.next + 1;
                self.insert(rev, key, rev, 0, false, value)?;
                self.next = rev;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: rev,
                    mod_revision: rev,
                };
                Ok((WriteOutcome::Put(kv.clone()), Event::Put { kv, prev: None }))
            }
            WriteOp::Update {
                key,
                value,
                expected,
            } => {
                let current = self.live(key)?;
                if current.mod_revision != *expected {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        current: Some(Box::new(current)),
                    });
                }
                let rev = self.next + 1;
                self.insert(
                    rev,
                    key,
                    current.create_revision,
                    current.mod_revision,
                    false,
                    value,
                )?;
                self.next = rev;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: current.create_revision,
                    mod_revision: rev,
                };
                Ok((
                    WriteOutcome::Put(kv.clone()),
                    Event::Put {
                        kv,
                        prev: Some(current),
                    },
                ))
            }
            WriteOp::Delete { key, expected } => {
                let current = self.live(key)?;
                if *expected != 0 && current.mod_revision != *expected {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        current: Some(Box::new(current)),
                    });
                }
                let rev = self.next + 1;
                self.insert(
                    rev,
                    key,
                    current.create_revision,
                    current.mod_revision,
                    true,
                    &[],
                )?;
                self.next = rev;
                Ok((
                    WriteOutcome::Deleted(current.clone(), rev),
                    Event::Delete {
                        prev: current,
                        revision: rev,
                    },
                ))
            }
            WriteOp::Compact { .. } => Err(Error::Backend(
                "compaction is not a batched write".to_string(),
            )),
        }
    }

    fn live(&self, key: &str) -> Result<KeyValue> {
        match self.latest(key, true)? {
            Some((latest, value)) if !latest.deleted => Ok(KeyValue {
                key: key.to_string(),
                value,
                create_revision: latest.create_revision,
                mod_revision: latest.id,
            }),
            _ => Err(Error::NotFound(key.to_string())),
        }
    }

    /// Deletes history at or below `revision` that no read at or above `revision` needs:
    /// tombstones, and rows superseded by a newer row at or below `revision`. The newest
    /// row of each key at or below `revision` stays, as both the state at `revision` and
    /// the `prev` of the key's next event.
    fn compact(&mut self, revision: i64) -> Result<()> {
        let current = self.shared.current.load(Ordering::Acquire);
        if revision > current {
            return Err(Error::FutureRevision {
                requested: revision,
                current,
            });
        }
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if revision <= compacted {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err("begin compaction"))?;
        let removed = tx
            .execute(
                "DELETE FROM kv WHERE id <= ?1 AND (
                    deleted = 1 OR
                    id < (SELECT MAX(k2.id) FROM kv AS k2 WHERE k2.name = kv.name AND k2.id <= ?1)
                 )",
                params![revision],
            )
            .map_err(db_err("compact"))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('compacted', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            params![revision],
        )
        .map_err(db_err("record compacted revision"))?;
        tx.commit().map_err(db_err("commit compaction"))?;
        self.shared.compacted.store(revision, Ordering::Release);
        tracing::debug!(revision, removed, "sqlite compacted");
        // Give freed pages back to the file system; failure only wastes space.
        if let Err(e) = self.conn.execute_batch("PRAGMA incremental_vacuum") {
            tracing::warn!(error = %e, "sqlite incremental vacuum failed");
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Readers

struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    fn connection(&self) -> Result<Connection> {
        if let Some(conn) = self.idle.lock().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| {
            Error::Backend(format!(
                "open sqlite read connection {}: {e}",
                self.path.display()
            ))
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(db_err("configure reader"))?;
        // Memory-mapped reads and a larger page cache: a big list touches many pages,
        // and a read syscall per page dominated its cost.
        conn.execute_batch("PRAGMA mmap_size = 1073741824; PRAGMA cache_size = -16384;")
            .map_err(db_err("configure reader"))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    }

    /// Runs `f` on a pooled read connection on a blocking thread.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Backend("sqlite reader pool closed".into()))?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = this.connection()?;
            let result = f(&conn);
            // A connection left inside a transaction (a failed COMMIT) is not reused.
            if conn.is_autocommit() {
                this.idle.lock().push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Backend(format!("sqlite read task failed: {e}")))?
    }
}

/// Bounds of a prefix scan as blobs: `[prefix, end)`. With no finite end (empty prefix)
/// the end is `0xff`, a byte no UTF-8 key contains.
fn bounds(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let end = prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0xff]);
    (prefix.as_bytes().to_vec(), end)
}

/// Calls `visit(name, id)` for each key live at `revision` in `[lower, end)`, in key order,
/// until it returns false. One pass over the covering `(name, id, deleted)` index: the last
/// entry of each name at or below `revision` is that key's state.
fn scan_live(
    conn: &Connection,
    lower: &[u8],
    end: &[u8],
    revision: i64,
    mut visit: impl FnMut(&[u8], i64) -> Result<bool>,
) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT name, id, deleted FROM kv INDEXED BY kv_name_id_deleted
             WHERE name >= ?1 AND name < ?2 AND id <= ?3 ORDER BY name, id",
        )
        .map_err(db_err("prepare scan"))?;
    let mut rows = stmt
        .query(params![lower, end, revision])
        .map_err(db_err("scan"))?;
    let mut name_buf: Vec<u8> = Vec::new();
    let mut current: Option<(i64, bool)> = None;
    while let Some(row) = rows.next().map_err(db_err("scan row"))? {
        let name = row
            .get_ref(0)
            .and_then(|v| Ok(v.as_blob()?))
            .map_err(db_err("scan name"))?;
        let id: i64 = row.get(1).map_err(db_err("scan id"))?;
        let deleted = row.get::<_, i64>(2).map_err(db_err("scan deleted"))? != 0;
        if name != name_buf.as_slice() {
            if let Some((prev_id, true)) = current {
                if !visit(&name_buf, prev_id)? {
                    return Ok(());
                }
            }
            name_buf.clear();
            name_buf.extend_from_slice(name);
        }
        current = Some((id, !deleted));
    }
    if let Some((id, true)) = current {
        visit(&name_buf, id)?;
    }
    Ok(())
}

fn list_at(conn: &Connection, opts: &ListOptions, revision: i64) -> Result<(Vec<KeyValue>, bool)> {
    let (mut lower, end) = bounds(&opts.prefix);
    if !opts.start_after.is_empty() && opts.start_after.as_bytes() >= lower.as_slice() {
        lower = opts.start_after.as_bytes().to_vec();
        lower.push(0);
    }
    // One extra key tells whether there are more.
    let want = if opts.limit == 0 {
        usize::MAX
    } else {
        opts.limit + 1
    };
    let mut found: Vec<(Vec<u8>, i64)> = Vec::new();
    scan_live(conn, &lower, &end, revision, |name, id| {
        found.push((name.to_vec(), id));
        Ok(found.len() < want)
    })?;
    let more = opts.limit != 0 && found.len() > opts.limit;
    if more {
        found.truncate(opts.limit);
    }
    // Fetch the values in one statement: point lookups by id inside SQLite.
    // In id order the lookups walk the table forwards instead of seeking at random.
    let mut sorted: Vec<i64> = found.iter().map(|(_, id)| *id).collect();
    sorted.sort_unstable();
    let ids = format!(
        "[{}]",
        sorted
            .iter()
            .map(|id| id.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut stmt = conn
        .prepare_cached(
            "SELECT kv.id, kv.create_revision, kv.value
             FROM json_each(?1) AS j CROSS JOIN kv ON kv.id = j.value",
        )
        .map_err(db_err("prepare list values"))?;
    let mut values: HashMap<i64, (i64, Vec<u8>)> = HashMap::with_capacity(found.len());
    let mut rows = stmt.query(params![ids]).map_err(db_err("list values"))?;
    while let Some(row) = rows.next().map_err(db_err("list value"))? {
        let id: i64 = row.get(0).map_err(db_err("list value"))?;
        let create_revision: i64 = row.get(1).map_err(db_err("list value"))?;
        let value: Vec<u8> = row.get(2).map_err(db_err("list value"))?;
        values.insert(id, (create_revision, value));
    }
    let mut kvs = Vec::with_capacity(found.len());
    for (name, id) in found {
        let (create_revision, value) = values
            .remove(&id)
            .ok_or_else(|| Error::Backend(format!("sqlite list: row {id} vanished")))?;
        kvs.push(KeyValue {
            key: key_string(name)?,
            value: Bytes::from(value),
            create_revision,
            mod_revision: id,
        });
    }
    Ok((kvs, more))
}

fn count_at(conn: &Connection, prefix: &str, revision: i64) -> Result<i64> {
    let (lower, end) = bounds(prefix);
    let mut n = 0;
    scan_live(conn, &lower, &end, revision, |_, _| {
        n += 1;
        Ok(true)
    })?;
    Ok(n)
}

fn get_latest(conn: &Connection, key: &str, revision: i64) -> Result<Option<KeyValue>> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, create_revision, deleted, value FROM kv
             WHERE name = ?1 AND id <= ?2 ORDER BY id DESC LIMIT 1",
        )
        .map_err(db_err("prepare get"))?;
    let row = stmt
        .query_row(params![key.as_bytes(), revision], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })
        .optional()
        .map_err(db_err("get"))?;
    Ok(match row {
        Some((id, create_revision, 0, value)) => Some(KeyValue {
            key: key.to_string(),
            value: Bytes::from(value),
            create_revision,
            mod_revision: id,
        }),
        _ => None,
    })
}

/// One page of history: events under `prefix` with `after < revision <= upto`, at most
/// `REPLAY_PAGE` of them. Returns the events and whether the page was full.
fn history_page(
    conn: &Connection,
    prefix: &str,
    after: i64,
    upto: i64,
) -> Result<(Vec<Event>, bool)> {
    let (start, end) = bounds(prefix);
    conn.execute_batch("BEGIN")
        .map_err(db_err("begin replay"))?;
    let result = (|| {
        let compacted = read_compacted(conn)?;
        if after < compacted {
            return Err(Error::Compacted {
                requested: after,
                compacted,
            });
        }
        let mut stmt = conn
            .prepare_cached(
                "SELECT k.id, k.name, k.create_revision, k.deleted, k.value,
                        p.id, p.create_revision, p.value
                 FROM kv AS k NOT INDEXED LEFT JOIN kv AS p ON p.id = k.prev_revision AND k.prev_revision > 0
                 WHERE k.id > ?1 AND k.id <= ?2 AND k.name >= ?3 AND k.name < ?4
                 ORDER BY k.id LIMIT ?5",
            )
            .map_err(db_err("prepare replay"))?;
        let rows = stmt
            .query_map(params![after, upto, start, end, REPLAY_PAGE], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                    r.get::<_, Option<Vec<u8>>>(7)?,
                ))
            })
            .map_err(db_err("replay"))?;
        let mut events = Vec::new();
        for row in rows {
            let (id, name, create_revision, deleted, value, prev_id, prev_create, prev_value) =
                row.map_err(db_err("replay row"))?;
            let key = key_string(name)?;
            let prev = match (prev_id, prev_create, prev_value) {
                (Some(mod_revision), Some(create_revision), Some(value)) => Some(KeyValue {
                    key: key.clone(),
                    value: Bytes::from(value),
                    create_revision,
                    mod_revision,
                }),
                _ => None,
            };
            if deleted != 0 {
                let prev = prev.ok_or_else(|| {
                    Error::Backend(format!("delete of {key} at {id} has no previous row"))
                })?;
                events.push(Event::Delete { prev, revision: id });
            } else {
                let kv = KeyValue {
                    key,
                    value: Bytes::from(value),
                    create_revision,
                    mod_revision: id,
                };
                events.push(Event::Put { kv, prev });
            }
        }
        let full = events.len() as i64 == REPLAY_PAGE;
        Ok((events, full))
    })();
    if conn.execute_batch("COMMIT").is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

async fn run_watch(
    readers: Arc<Readers>,
    prefix: String,
    after: i64,
    upto: i64,
    mut live: broadcast::Receiver<Arc<[Event]>>,
    tx: mpsc::Sender<Result<Event>>,
) {
    // Replay what is already committed, page by page.
    let mut last = after;
    while last < upto {
        let p = prefix.clone();
        let page = readers
            .read(move |conn| history_page(conn, &p, last, upto))
            .await;
        let (events, full) = match page {
            Ok(page) => page,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        for event in events {
            last = event.revision();
            if tx.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if !full {
            last = upto;
        }
    }
    // Then follow the live broadcast; everything at or below `upto` was replayed.
    let end = loop {
        let batch = tokio::select! {
            batch = live.recv() => batch,
            () = tx.closed() => return,
        };
        match batch {
            Ok(batch) => {
                for event in batch.iter() {
                    if event.revision() <= last || !event.key().starts_with(prefix.as_str()) {
                        continue;
                    }
                    last = event.revision();
                    if tx.send(Ok(event.clone())).await.is_err() {
                        return;
                    }
                }
            }
            // This watcher fell too far behind; its consumer must re-list. Events after
            // `last` are no longer available to it, as if compacted.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                break Error::Compacted {
                    requested: last + 1,
                    compacted: last + 1,
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                break Error::Backend("sqlite store closed".into())
            }
        }
    };
    // Release our place in the broadcast before waiting on a slow consumer.
    drop(live);
    let _ = tx.send(Err(end)).await;
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let revision = self.shared.current.load(Ordering::Acquire);
        let key = key.to_string();
        self.readers
            .read(move |conn| get_latest(conn, &key, revision))
            .await
    }

    async fn list(&self, opts: &ListOptions) -> Result<ListResult> {
        let revision = self.check_read_revision(opts.revision)?;
        let opts = opts.clone();
        let (kvs, more) = self
            .readers
            .read(move |conn| list_at(conn, &opts, revision))
            .await?;
        // A compaction may have overtaken the read; rows it removed would be missing.
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if revision < compacted {
            return Err(Error::Compacted {
                requested: revision,
                compacted,
            });
        }
        Ok(ListResult {
            kvs,
            revision,
            more,
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let revision = self.shared.current.load(Ordering::Acquire);
        let prefix = prefix.to_string();
        self.readers
            .read(move |conn| count_at(conn, &prefix, revision))
            .await
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        match self
            .write(WriteOp::Create {
                key: key.to_string(),
                value,
            })
            .await?
        {
            WriteOutcome::Put(kv) => Ok(kv),
            _ => Err(Error::Backend("unexpected writer answer to create".into())),
        }
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: i64,
    ) -> Result<KeyValue> {
        match self
            .write(WriteOp::Update {
                key: key.to_string(),
                value,
                expected: expected_mod_revision,
            })
            .await?
        {
            WriteOutcome::Put(kv) => Ok(kv),
            _ => Err(Error::Backend("unexpected writer answer to update".into())),
        }
    }

    async fn delete(&self, key: &str, expected_mod_revision: i64) -> Result<(KeyValue, i64)> {
        match self
            .write(WriteOp::Delete {
                key: key.to_string(),
                expected: expected_mod_revision,
            })
            .await?
        {
            WriteOutcome::Deleted(kv, rev) => Ok((kv, rev)),
            _ => Err(Error::Backend("unexpected writer answer to delete".into())),
        }
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        let compacted = self.shared.compacted.load(Ordering::Acquire);
        if after_revision < compacted {
            return Err(Error::Compacted {
                requested: after_revision,
                compacted,
            });
        }
        // Subscribe before reading the current revision: every event above it is then
        // in the broadcast, every event at or below it is in the log.
        let live = self.shared.events.subscribe();
        let upto = self.shared.current.load(Ordering::Acquire);
        let (tx, rx) = mpsc::channel(self.options.watch_buffer.max(1));
        tokio::spawn(run_watch(
            self.readers.clone(),
            prefix.to_string(),
            after_revision,
            upto,
            live,
            tx,
        ));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.shared.current.load(Ordering::Acquire))
    }

    async fn compacted_revision(&self) -> Result<i64> {
        Ok(self.shared.compacted.load(Ordering::Acquire))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        match self.write(WriteOp::Compact { revision }).await? {
            WriteOutcome::Compacted => Ok(()),
            _ => Err(Error::Backend("unexpected writer answer to compact".into())),
        }
    }
}
