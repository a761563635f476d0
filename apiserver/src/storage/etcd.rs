//! etcd v3 store through etcd-client.
//!
//! Compare-and-swap maps onto etcd transactions (`create_revision == 0` for create,
//! `mod_revision == expected` for update and delete); etcd's own revision is the global
//! revision. Watches resume from the last delivered revision when their stream breaks.
//!
//! etcd has no call that reports the compacted revision. We find it once at connect by
//! binary search over reads at past revisions (a read below the compacted revision fails),
//! then keep it up to date from our own compactions and from compaction errors and
//! watch cancellations that carry it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType,
    GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::sqlite::prefix_end;
use super::{Backend, Error, Event, KeyValue, ListOptions, ListResult, Result, WatchStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Events buffered per watch stream between its task and its consumer.
const WATCH_BUFFER: usize = 1024;
/// How long a broken watch keeps trying to re-establish before it gives up.
const WATCH_RETRY_FOR: Duration = Duration::from_secs(30);
/// A key nobody writes, used for cheap reads that only want a response header.
const PROBE_KEY: &[u8] = b"\0minik8s-probe";

/// The etcd v3 backend.
pub struct EtcdBackend {
    client: Client,
    /// Highest compacted revision we know of.
    compacted: Arc<AtomicI64>,
}

impl EtcdBackend {
    /// Runs `op` on an existing `key` when `compares` hold; otherwise NotFound (the key is
    /// gone) or Conflict with its current value.
    async fn guarded_txn(
        &self,
        what: &str,
        key: &str,
        compares: Vec<Compare>,
        op: TxnOp,
    ) -> Result<etcd_client::TxnResponse> {
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![op])
            .or_else(vec![TxnOp::get(key, None)]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| backend_err(what, e))?;
        if resp.succeeded() {
            return Ok(resp);
        }
        match else_get(resp.op_responses())? {
            None => Err(Error::NotFound(key.to_string())),
            Some(current) => Err(Error::Conflict {
                key: key.to_string(),
                current: Some(Box::new(current)),
            }),
        }
    }

    /// Connects to an etcd cluster (`http://host:port` endpoints) and checks it answers.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(Error::Backend("no etcd endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| Error::Backend(format!("connect to etcd {endpoints:?}: {e}")))?;
        let backend = Self {
            client,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        let current = backend
            .current_revision()
            .await
            .map_err(|e| Error::Backend(format!("etcd {endpoints:?} does not answer: {e}")))?;
        let compacted = backend.find_compacted(current).await?;
        backend.compacted.fetch_max(compacted, Ordering::AcqRel);
        Ok(backend)
    }

    /// The compacted revision: the lowest revision a read still succeeds at (0 when
    /// nothing was compacted). Binary search, about log2(current) cheap reads.
    async fn find_compacted(&self, current: i64) -> Result<i64> {
        if current <= 1 || self.readable_at(1).await? {
            return Ok(0);
        }
        // Invariant: not readable at `lo`, readable at `hi`.
        let (mut lo, mut hi) = (1, current);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.readable_at(mid).await? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    async fn readable_at(&self, revision: i64) -> Result<bool> {
        let opts = GetOptions::new().with_count_only().with_revision(revision);
        match self.client.kv_client().get(PROBE_KEY, Some(opts)).await {
            Ok(_) => Ok(true),
            Err(e) if is_compacted(&e) => Ok(false),
            Err(e) => Err(backend_err("probe compacted revision", e)),
        }
    }

    fn compacted_now(&self) -> i64 {
        self.compacted.load(Ordering::Acquire)
    }

    /// Maps an etcd error for a request at `requested`.
    fn map_err(&self, what: &str, requested: i64, e: etcd_client::Error) -> Error {
        if is_compacted(&e) {
            return Error::Compacted {
                requested,
                compacted: self.compacted_now().max(requested + 1),
            };
        }
        if is_future(&e) {
            return Error::FutureRevision {
                requested,
                current: 0,
            };
        }
        backend_err(what, e)
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    e.to_string()
        .contains("required revision has been compacted")
}

fn is_future(e: &etcd_client::Error) -> bool {
    e.to_string().contains("future revision")
}

fn backend_err(what: &str, e: etcd_client::Error) -> Error {
    Error::Backend(format!("etcd {what}: {e}"))
}

fn convert(kv: &etcd_client::KeyValue) -> Result<KeyValue> {
    Ok(KeyValue {
        key: std::str::from_utf8(kv.key())
            .map_err(|e| Error::Backend(format!("etcd key is not UTF-8: {e}")))?
            .to_string(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<i64> {
    header
        .map(|h| h.revision())
        .ok_or_else(|| Error::Backend("etcd response without header".into()))
}

/// The `[start, end)` range of keys under `prefix`; `\0` as end means "to the last key".
fn range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let end = prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]);
    let start = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    };
    (start, end)
}

/// The current value from the `get` a failed transaction ran in its else branch.
fn else_get(responses: Vec<TxnOpResponse>) -> Result<Option<KeyValue>> {
    for resp in responses {
        if let TxnOpResponse::Get(get) = resp {
            return get.kvs().first().map(convert).transpose();
        }
    }
    Err(Error::Backend(
        "etcd transaction without get response".into(),
    ))
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .client
            .kv_client()
            .get(key, None)
            .await
            .map_err(|e| backend_err("get", e))?;
        resp.kvs().first().map(convert).transpose()
    }

    async fn list(&self, opts: &ListOptions) -> Result<ListResult> {
        let compacted = self.compacted_now();
        if opts.revision != 0 && opts.revision < compacted {
            return Err(Error::Compacted {
                requested: opts.revision,
                compacted,
            });
        }
        let (mut start, end) = range(&opts.prefix);
        if !opts.start_after.is_empty() && opts.start_after.as_bytes() >= start.as_slice() {
            start = opts.start_after.as_bytes().to_vec();
            start.push(0);
        }
        let mut get = GetOptions::new().with_range(end);
        if opts.limit > 0 {
            get = get.with_limit(opts.limit as i64);
        }
        if opts.revision > 0 {
            get = get.with_revision(opts.revision);
        }
        let resp = match self.client.kv_client().get(start, Some(get)).await {
            Ok(resp) => resp,
            Err(e) if is_future(&e) => {
                return Err(Error::FutureRevision {
                    requested: opts.revision,
                    current: self.current_revision().await.unwrap_or(0),
                })
            }
            Err(e) => return Err(self.map_err("list", opts.revision, e)),
        };
        let kvs = resp.kvs().iter().map(convert).collect::<Result<Vec<_>>>()?;
        // etcd reports the store's current revision in the header, not the one read at.
        let revision = if opts.revision > 0 {
            opts.revision
        } else {
            header_revision(resp.header())?
        };
        Ok(ListResult {
            kvs,
            revision,
            more: resp.more(),
        })
    }

    async fn count(&self, prefix: &str) -> Result<i64> {
        let (start, end) = range(prefix);
        let resp = self
            .client
            .kv_client()
            .get(
                start,
                Some(GetOptions::new().with_range(end).with_count_only()),
            )
            .await
            .map_err(|e| backend_err("count", e))?;
        Ok(resp.count())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<KeyValue> {
        let txn = Txn::new()
            .when(vec![Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key, value.to_vec(), None)]);
        let resp = self
            .client
            .kv_client()
            .txn(txn)
            .await
            .map_err(|e| backend_err("create", e))?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        let rev = header_revision(resp.header())?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision: rev,
            mod_revision: rev,
        })
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: i64,
    ) -> Result<KeyValue> {
        // The key must exist: a missing key's mod revision is 0, which would match 0.
        let compares = vec![
            Compare::create_revision(key, CompareOp::Greater, 0),
            Compare::mod_revision(key, CompareOp::Equal, expected_mod_revision),
        ];
        let op = TxnOp::put(key, value.to_vec(), Some(PutOptions::new().with_prev_key()));
        let resp = self.guarded_txn("update", key, compares, op).await?;
        let rev = header_revision(resp.header())?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| Error::Backend("etcd update without previous value".into()))?;
        Ok(KeyValue {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
        })
    }

    async fn delete(&self, key: &str, expected_mod_revision: i64) -> Result<(KeyValue, i64)> {
        let mut compares = vec![Compare::create_revision(key, CompareOp::Greater, 0)];
        if expected_mod_revision != 0 {
            compares.push(Compare::mod_revision(
                key,
                CompareOp::Equal,
                expected_mod_revision,
            ));
        }
        let op = TxnOp::delete(key, Some(DeleteOptions::new().with_prev_key()));
        let resp = self.guarded_txn("delete", key, compares, op).await?;
        let rev = header_revision(resp.header())?;
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Delete(del) => del.prev_kvs().first().map(convert),
                _ => None,
            })
            .ok_or_else(|| Error::Backend("etcd delete without previous value".into()))??;
        Ok((prev, rev))
    }

    async fn watch(&self, prefix: &str, after_revision: i64) -> Result<WatchStream> {
        let compacted = self.compacted_now();
        if after_revision < compacted {
            return Err(Error::Compacted {
                requested: after_revision,
                compacted,
            });
        }
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        tokio::spawn(run_watch(
            self.client.clone(),
            self.compacted.clone(),
            prefix.to_string(),
            after_revision,
            tx,
        ));
        Ok(Box::pin(ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<i64> {
        let resp = self
            .client
            .kv_client()
            .get(PROBE_KEY, Some(GetOptions::new().with_count_only()))
            .await
            .map_err(|e| backend_err("read current revision", e))?;
        header_revision(resp.header())
    }

    async fn compacted_revision(&self) -> Result<i64> {
        Ok(self.compacted_now())
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        // Physical: return once the compaction is applied, so reads see it at once.
        match self
            .client
            .kv_client()
            .compact(revision, Some(CompactionOptions::new().with_physical()))
            .await
        {
            Ok(_) => {}
            // Someone (maybe another API server) already compacted at or past it.
            Err(e) if is_compacted(&e) => {}
            Err(e) if is_future(&e) => {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current: self.current_revision().await.unwrap_or(0),
                })
            }
            Err(e) => return Err(backend_err("compact", e)),
        }
        self.compacted.fetch_max(revision, Ordering::AcqRel);
        Ok(())
    }
}

enum WatchEnd {
    /// The consumer went away.
    Closed,
    /// The stream broke; try again from the last delivered revision.
    Retry(String),
}

/// Follows one etcd watch, re-establishing it after transient failures from the revision
/// after the last one delivered.
async fn run_watch(
    client: Client,
    compacted: Arc<AtomicI64>,
    prefix: String,
    after: i64,
    tx: mpsc::Sender<Result<Event>>,
) {
    let mut last = after;
    let mut failing_since: Option<tokio::time::Instant> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let before = last;
        let end = watch_once(&client, &compacted, &prefix, &mut last, &tx).await;
        if last > before {
            // Progress since the last failure: reset the retry budget.
            failing_since = None;
            backoff = Duration::from_millis(100);
        }
        match end {
            Ok(WatchEnd::Closed) => return,
            Ok(WatchEnd::Retry(reason)) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() > WATCH_RETRY_FOR {
                    let _ = tx
                        .send(Err(Error::Backend(format!(
                            "etcd watch on {prefix} keeps failing: {reason}"
                        ))))
                        .await;
                    return;
                }
                tracing::warn!(prefix, last, reason, "etcd watch broke; resuming");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = tx.closed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

async fn watch_once(
    client: &Client,
    compacted: &AtomicI64,
    prefix: &str,
    last: &mut i64,
    tx: &mpsc::Sender<Result<Event>>,
) -> Result<WatchEnd> {
    let (start, end) = range(prefix);
    let opts = WatchOptions::new()
        .with_range(end)
        .with_start_revision(*last + 1)
        .with_prev_key();
    let mut stream = match client.watch_client().watch(start, Some(opts)).await {
        Ok(stream) => stream,
        Err(e) => return Ok(WatchEnd::Retry(e.to_string())),
    };
    loop {
        let msg = tokio::select! {
            msg = stream.message() => msg,
            () = tx.closed() => return Ok(WatchEnd::Closed),
        };
        let resp = match msg {
            Ok(Some(resp)) => resp,
            Ok(None) => return Ok(WatchEnd::Retry("stream ended".into())),
            Err(e) => return Ok(WatchEnd::Retry(e.to_string())),
        };
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                compacted.fetch_max(resp.compact_revision(), Ordering::AcqRel);
                return Err(Error::Compacted {
                    requested: *last,
                    compacted: resp.compact_revision(),
                });
            }
            return Err(Error::Backend(format!(
                "etcd canceled the watch on {prefix}: {}",
                resp.cancel_reason()
            )));
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let event = match ev.event_type() {
                EventType::Put => Event::Put {
                    kv: convert(kv)?,
                    prev: ev.prev_kv().map(convert).transpose()?,
                },
                EventType::Delete => {
                    let prev = match ev.prev_kv() {
                        Some(prev) => convert(prev)?,
                        // The previous value was compacted away before we saw the delete.
                        None => KeyValue {
                            value: Bytes::new(),
                            create_revision: 0,
                            mod_revision: 0,
                            ..convert(kv)?
                        },
                    };
                    Event::Delete {
                        prev,
                        revision: kv.mod_revision(),
                    }
                }
            };
            let rev = event.revision();
            if rev <= *last {
                continue;
            }
            *last = rev;
            if tx.send(Ok(event)).await.is_err() {
                return Ok(WatchEnd::Closed);
            }
        }
    }
}
