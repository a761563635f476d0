//! WATCH: newline-delimited JSON events streamed from the watch cache. The object bytes of
//! each event are shared by every watcher; only the small frame around them is written per
//! watcher. A watcher that falls too far behind gets a 410 ERROR event and is closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use rand::Rng;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{ApiState, Body};
use crate::error::{Error, Result};
use crate::object;
use crate::registry::store::{ListParams, Store};
use crate::request_info::Query;
use crate::validation::FieldError;
use crate::watch_cache::{filtered_type, Broadcast, CacheError};

/// Chunks buffered per watcher between the cache and its connection: with
/// `MAX_CHUNK_BYTES` this bounds what one watcher that does not read can hold (512 KiB).
const WATCHER_BUFFER: usize = 8;
/// Largest chunk a watcher writes at once.
const MAX_CHUNK_BYTES: usize = 64 * 1024;
/// How long a watcher whose connection takes nothing may hold its events before it is closed.
const STALLED_WATCHER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a watch waits for the cache to reach a future resourceVersion.
const FUTURE_RV_WAIT: Duration = Duration::from_secs(3);
/// A watcher writes at most once per this interval. An event that follows a quiet spell goes
/// out at once; under a steady stream, what arrives within the interval shares one write
/// (one TLS record, one wakeup of the connection), which is what keeps 1,000 watchers of a
/// busy resource from costing a write per watcher per event.
const MIN_FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Appends one watch event line: `{"type":"..","object":..}\n`.
fn put_frame(b: &mut BytesMut, kind: &str, obj: &[u8]) {
    b.reserve(obj.len() + 32);
    b.put_slice(b"{\"type\":\"");
    b.put_slice(kind.as_bytes());
    b.put_slice(b"\",\"object\":");
    b.put_slice(obj);
    b.put_slice(b"}\n");
}

fn frame(kind: &str, obj: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    put_frame(&mut b, kind, obj);
    b.freeze()
}

fn error_frame(e: &Error) -> Bytes {
    frame("ERROR", e.status().to_string().as_bytes())
}

fn bookmark(store: &Store, rev: i64, initial_end: bool) -> Bytes {
    let mut meta = json!({ "resourceVersion": rev.to_string(), "creationTimestamp": null });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    let obj = json!({ "kind": store.info.kind, "apiVersion": store.info.api_version(), "metadata": meta });
    frame("BOOKMARK", obj.to_string().as_bytes())
}

/// The next queued broadcast message, if one is queued.
fn try_next(
    rx: &mut broadcast::Receiver<Broadcast>,
) -> Option<Result<Broadcast, broadcast::error::RecvError>> {
    match rx.try_recv() {
        Ok(m) => Some(Ok(m)),
        Err(broadcast::error::TryRecvError::Empty) => None,
        Err(broadcast::error::TryRecvError::Lagged(n)) => {
            Some(Err(broadcast::error::RecvError::Lagged(n)))
        }
        Err(broadcast::error::TryRecvError::Closed) => {
            Some(Err(broadcast::error::RecvError::Closed))
        }
    }
}

/// Serves a watch request.
pub async fn serve(
    state: &Arc<ApiState>,
    store: Arc<Store>,
    ns: &str,
    mut p: ListParams,
    q: &Query,
    table: Option<crate::table::IncludeObject>,
) -> Result<Response<Body>> {
    if store.info.namespaced && !ns.is_empty() {
        p.filter.namespace = Some(ns.to_string());
    }
    let bookmarks = q.allow_watch_bookmarks;
    let send_initial = q.send_initial_events.unwrap_or(false);
    let rv = p.resource_version.clone().filter(|s| !s.is_empty());
    if q.send_initial_events.is_some() {
        let mut errs = Vec::new();
        if p.resource_version_match.as_deref() != Some("NotOlderThan") {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if send_initial && !bookmarks {
            errs.push(FieldError::forbidden(
                "allowWatchBookmarks",
                "sendInitialEvents requires allowWatchBookmarks=true",
            ));
        }
        if !errs.is_empty() {
            return Err(Error::Invalid {
                kind: "ListOptions.meta.k8s.io".into(),
                name: String::new(),
                errors: errs,
            });
        }
    } else if p.resource_version_match.is_some() {
        return Err(Error::Invalid {
            kind: "ListOptions.meta.k8s.io".into(),
            name: String::new(),
            errors: vec![FieldError::forbidden(
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            )],
        });
    }
    // Where to start: None = current state first.
    let from = match rv.as_deref() {
        None | Some("0") => None,
        Some(r) => Some(object::parse_resource_version(r).map_err(Error::BadRequest)?),
    };
    if rv.is_none() {
        // Unset: start from a consistent, most recent state.
        store.fresh_or_revision().await?;
    }
    if let Some(n) = from {
        if !state.registry.caches.wait_for(n, FUTURE_RV_WAIT).await {
            return Err(Error::Timeout(format!(
                "Too large resource version: {n}, current: {}",
                state.registry.caches.seen()
            )));
        }
    }
    let start_from = if send_initial { None } else { from };
    let timeout = match q.timeout_seconds {
        Some(t) => Duration::from_secs(t),
        None => Duration::from_secs(1800 + rand::rng().random_range(0..1800)),
    };

    let (tx, rx) = mpsc::channel::<Bytes>(WATCHER_BUFFER);
    let start = store.cache.watch(start_from, &p.filter);
    let shutdown = state.shutdown.clone();
    let filter = p.filter.clone();
    let store2 = store.clone();
    tokio::spawn(async move {
        let start = match start {
            Ok(s) => s,
            Err(CacheError::TooOld { requested, oldest }) => {
                let e = Error::Expired(format!("too old resource version: {requested} ({oldest})"));
                let _ = tx.send(error_frame(&e)).await;
                return;
            }
            Err(e @ CacheError::TooLarge { .. }) => {
                let _ = tx.send(error_frame(&Error::Timeout(e.to_string()))).await;
                return;
            }
        };
        let mut rx = start.rx;
        let encode_into = |buf: &mut BytesMut, kind: &str, obj: &Bytes| match &table {
            None => put_frame(buf, kind, obj),
            Some(include) => {
                let v: serde_json::Value = serde_json::from_slice(obj).unwrap_or_default();
                let rv = crate::object::meta_str(&v, "resourceVersion").to_string();
                let t = crate::table::render_for(
                    &store2.info,
                    std::slice::from_ref(&v),
                    include,
                    &rv,
                    None,
                    chrono::Utc::now(),
                );
                put_frame(buf, kind, t.to_string().as_bytes())
            }
        };
        for (t, o) in &start.initial {
            let mut b = BytesMut::new();
            encode_into(&mut b, t.as_str(), &o.bytes);
            if tx.send(b.freeze()).await.is_err() {
                return;
            }
        }
        let mut last_rev = start.revision;
        if send_initial && tx.send(bookmark(&store2, last_rev, true)).await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last_flush: Option<tokio::time::Instant> = None;
        loop {
            // Right after a write, wait out the interval before looking at the queue at
            // all: the events of the interval then cost this watcher one wakeup, not one
            // each. After a quiet spell the next event goes out as soon as it comes.
            let mut waited = false;
            if let Some(next) = last_flush.map(|at| at + MIN_FLUSH_INTERVAL) {
                if next > tokio::time::Instant::now() {
                    tokio::select! {
                        _ = &mut deadline => return,
                        _ = shutdown.cancelled() => return,
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep_until(next) => {}
                    }
                    waited = true;
                }
            }
            let first = tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                m = rx.recv() => m,
            };
            // Everything already queued goes out in one chunk: one write (and one TLS
            // record) for many events when a watcher is behind or events come in bursts.
            let mut buf = BytesMut::new();
            let mut msg = Some(first);
            let mut end = false;
            let mut yielded = waited;
            while let Some(m) = msg.take() {
                match m {
                    Ok(Broadcast::Event(e)) => {
                        if e.revision > last_rev {
                            last_rev = e.revision;
                            if let Some(t) = filtered_type(&e, &filter) {
                                encode_into(&mut buf, t.as_str(), &e.obj.bytes);
                            }
                        }
                    }
                    Ok(Broadcast::Progress(rev)) => {
                        if bookmarks && rev >= last_rev {
                            last_rev = rev;
                            buf.put_slice(&bookmark(&store2, rev, false));
                        }
                    }
                    Ok(Broadcast::Reset) | Err(broadcast::error::RecvError::Closed) => end = true,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::info!(resource = %store2.info.plural, skipped = n, "watcher too slow; closing it");
                        let e = Error::Expired(format!(
                            "too old resource version: {last_rev}: watcher fell behind by {n} events"
                        ));
                        buf.put_slice(&error_frame(&e));
                        end = true;
                    }
                }
                if end || buf.len() >= MAX_CHUNK_BYTES {
                    break;
                }
                msg = try_next(&mut rx);
                if msg.is_none() && !yielded {
                    // Let the feeder and the other watchers run once: events that arrive
                    // meanwhile go out in this same chunk.
                    yielded = true;
                    tokio::task::yield_now().await;
                    msg = try_next(&mut rx);
                }
            }
            if !buf.is_empty() {
                last_flush = Some(tokio::time::Instant::now());
                // A watcher whose connection does not drain its buffer is cut off instead
                // of holding events for ever.
                match tx.try_send(buf.freeze()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(out)) => {
                        if tokio::time::timeout(STALLED_WATCHER_TIMEOUT, tx.send(out))
                            .await
                            .is_err()
                        {
                            tracing::info!(resource = %store2.info.plural, "watcher not reading; closing it");
                            return;
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            if end {
                return;
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
    let mut r = Response::new(StreamBody::new(stream).boxed());
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(r)
}
