//! The backend test suite every `Backend` must pass.
//!
//! It lives in the library (not under `tests/`) so every backend's integration test runs
//! exactly the same checks. Each check works under its own unique key prefix and only
//! compares revisions relative to ones it observed, so the suite can run against a shared
//! etcd that already holds data. Failures panic.

#![doc(hidden)]
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;

use super::{Backend, Error, Event, KeyValue, ListOptions, WatchStream};

const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs every check in order; compaction last, since it drops history the others read.
pub async fn run_all(backend: Arc<dyn Backend>) {
    let base = unique_base();
    create_get(&*backend, &format!("{base}/create")).await;
    update_cas(&*backend, &format!("{base}/update")).await;
    delete_cas(&*backend, &format!("{base}/delete")).await;
    revisions_increase(&*backend, &format!("{base}/revs")).await;
    list_prefix_and_paging(&*backend, &format!("{base}/list")).await;
    list_at_revision(&*backend, &format!("{base}/listrev")).await;
    count(&*backend, &format!("{base}/count")).await;
    watch_live(&*backend, &format!("{base}/watch")).await;
    watch_replay_then_live(&*backend, &format!("{base}/replay")).await;
    concurrent_creates(backend.clone(), &format!("{base}/concurrent"), 64, 8).await;
    compaction(&*backend, &format!("{base}/compact")).await;
}

/// A key prefix no earlier run used.
pub fn unique_base() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("/suite-{}-{nanos}", std::process::id())
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Create, get, AlreadyExists, missing keys.
pub async fn create_get(b: &dyn Backend, base: &str) {
    let key = format!("{base}/a");
    let kv = b.create(&key, val("one")).await.unwrap();
    assert_eq!(kv.key, key);
    assert_eq!(kv.value, val("one"));
    assert!(kv.mod_revision > 0);
    assert_eq!(kv.create_revision, kv.mod_revision);

    assert_eq!(b.get(&key).await.unwrap(), Some(kv.clone()));
    match b.create(&key, val("two")).await {
        Err(Error::AlreadyExists(k)) => assert_eq!(k, key),
        other => panic!("create of existing key: want AlreadyExists, got {other:?}"),
    }
    assert_eq!(b.get(&key).await.unwrap(), Some(kv));
    assert_eq!(b.get(&format!("{base}/missing")).await.unwrap(), None);
    // A key that is a prefix of an existing key is not that key.
    assert_eq!(b.get(base).await.unwrap(), None);
}

/// Update succeeds on the expected mod revision and conflicts otherwise.
pub async fn update_cas(b: &dyn Backend, base: &str) {
    let key = format!("{base}/a");
    let created = b.create(&key, val("v1")).await.unwrap();
    let updated = b
        .update(&key, val("v2"), created.mod_revision)
        .await
        .unwrap();
    assert_eq!(updated.value, val("v2"));
    assert_eq!(updated.create_revision, created.create_revision);
    assert!(updated.mod_revision > created.mod_revision);
    assert_eq!(b.get(&key).await.unwrap(), Some(updated.clone()));

    match b.update(&key, val("v3"), created.mod_revision).await {
        Err(Error::Conflict { key: k, current }) => {
            assert_eq!(k, key);
            assert_eq!(current.as_deref(), Some(&updated));
        }
        other => panic!("stale update: want Conflict, got {other:?}"),
    }
    assert_eq!(b.get(&key).await.unwrap(), Some(updated.clone()));

    match b.update(&format!("{base}/missing"), val("x"), 1).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("update of missing key: want NotFound, got {other:?}"),
    }
}

/// Delete with and without an expected revision; NotFound; re-create after delete.
pub async fn delete_cas(b: &dyn Backend, base: &str) {
    let key = format!("{base}/a");
    let created = b.create(&key, val("v1")).await.unwrap();
    let updated = b
        .update(&key, val("v2"), created.mod_revision)
        .await
        .unwrap();
    match b.delete(&key, created.mod_revision).await {
        Err(Error::Conflict { current, .. }) => assert_eq!(current.as_deref(), Some(&updated)),
        other => panic!("stale delete: want Conflict, got {other:?}"),
    }
    let (prev, rev) = b.delete(&key, updated.mod_revision).await.unwrap();
    assert_eq!(prev, updated);
    assert!(rev > updated.mod_revision);
    assert_eq!(b.get(&key).await.unwrap(), None);
    match b.delete(&key, 0).await {
        Err(Error::NotFound(k)) => assert_eq!(k, key),
        other => panic!("delete of missing key: want NotFound, got {other:?}"),
    }
    match b.update(&key, val("v3"), updated.mod_revision).await {
        Err(Error::NotFound(_)) => {}
        other => panic!("update of deleted key: want NotFound, got {other:?}"),
    }

    // Re-create: a new incarnation with a new create revision.
    let again = b.create(&key, val("v4")).await.unwrap();
    assert!(again.create_revision > rev);
    assert_eq!(again.create_revision, again.mod_revision);
    // Unconditional delete.
    let (prev, rev2) = b.delete(&key, 0).await.unwrap();
    assert_eq!(prev, again);
    assert!(rev2 > again.mod_revision);
    assert_eq!(b.get(&key).await.unwrap(), None);
}

/// Revisions are global and strictly increasing across keys and operations.
pub async fn revisions_increase(b: &dyn Backend, base: &str) {
    let start = b.current_revision().await.unwrap();
    let mut last = start;
    for i in 0..5 {
        let kv = b.create(&format!("{base}/{i}"), val("x")).await.unwrap();
        assert!(kv.mod_revision > last, "revision did not increase");
        last = kv.mod_revision;
        let kv = b
            .update(&format!("{base}/{i}"), val("y"), kv.mod_revision)
            .await
            .unwrap();
        assert!(kv.mod_revision > last, "revision did not increase");
        last = kv.mod_revision;
    }
    let (_, rev) = b.delete(&format!("{base}/0"), 0).await.unwrap();
    assert!(rev > last);
    let current = b.current_revision().await.unwrap();
    assert!(
        current >= rev,
        "current revision {current} behind write {rev}"
    );
    // Failed writes do not advance the visible state.
    assert!(b.create(&format!("{base}/1"), val("z")).await.is_err());
    assert_eq!(
        b.get(&format!("{base}/1"))
            .await
            .unwrap()
            .map(|kv| kv.value),
        Some(val("y"))
    );
}

fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| kv.key.clone()).collect()
}

/// Prefix isolation (`/a/` vs `/ab/`) and limit + start_after paging with `more`.
pub async fn list_prefix_and_paging(b: &dyn Backend, base: &str) {
    let a: Vec<String> = (0..5).map(|i| format!("{base}/a/{i}")).collect();
    for k in &a {
        b.create(k, val(k)).await.unwrap();
    }
    b.create(&format!("{base}/ab/0"), val("ab")).await.unwrap();
    b.create(&format!("{base}/a"), val("bare")).await.unwrap();

    let all = b
        .list(&ListOptions {
            prefix: format!("{base}/a/"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&all.kvs), a);
    assert!(!all.more);
    assert!(all.revision >= all.kvs.iter().map(|kv| kv.mod_revision).max().unwrap_or(0));
    for kv in &all.kvs {
        assert_eq!(kv.value, val(&kv.key));
    }

    // Page through two at a time, pinned at the first page's revision.
    let mut got = Vec::new();
    let mut start_after = String::new();
    let mut revision = 0;
    let mut pages = 0;
    loop {
        let page = b
            .list(&ListOptions {
                prefix: format!("{base}/a/"),
                start_after: start_after.clone(),
                limit: 2,
                revision,
            })
            .await
            .unwrap();
        pages += 1;
        assert!(page.kvs.len() <= 2);
        if revision != 0 {
            assert_eq!(page.revision, revision);
        }
        revision = page.revision;
        got.extend(keys(&page.kvs));
        if !page.more {
            break;
        }
        start_after = page.kvs.last().map(|kv| kv.key.clone()).unwrap();
        assert!(pages < 10, "paging does not terminate");
    }
    assert_eq!(got, a);
    assert_eq!(pages, 3);

    // Exactly `limit` keys left: no more.
    let last_two = b
        .list(&ListOptions {
            prefix: format!("{base}/a/"),
            start_after: a[2].clone(),
            limit: 2,
            revision: 0,
        })
        .await
        .unwrap();
    assert_eq!(keys(&last_two.kvs), a[3..].to_vec());
    assert!(!last_two.more);

    let ab = b
        .list(&ListOptions {
            prefix: format!("{base}/ab/"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(keys(&ab.kvs), vec![format!("{base}/ab/0")]);

    let none = b
        .list(&ListOptions {
            prefix: format!("{base}/nothing/"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.kvs.is_empty());
    assert!(!none.more);
}

/// A list at a past revision sees the state as it was then.
pub async fn list_at_revision(b: &dyn Backend, base: &str) {
    let x = b.create(&format!("{base}/x"), val("x1")).await.unwrap();
    let y = b.create(&format!("{base}/y"), val("y1")).await.unwrap();
    let then = b
        .list(&ListOptions {
            prefix: format!("{base}/"),
            ..Default::default()
        })
        .await
        .unwrap();
    b.update(&format!("{base}/x"), val("x2"), x.mod_revision)
        .await
        .unwrap();
    b.delete(&format!("{base}/y"), 0).await.unwrap();
    b.create(&format!("{base}/z"), val("z1")).await.unwrap();

    let past = b
        .list(&ListOptions {
            prefix: format!("{base}/"),
            revision: then.revision,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(past.revision, then.revision);
    assert_eq!(past.kvs, vec![x.clone(), y.clone()]);

    let at_x = b
        .list(&ListOptions {
            prefix: format!("{base}/"),
            revision: x.mod_revision,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(at_x.kvs, vec![x]);

    let now = b
        .list(&ListOptions {
            prefix: format!("{base}/"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        now.kvs
            .iter()
            .map(|kv| kv.value.clone())
            .collect::<Vec<_>>(),
        vec![val("x2"), val("z1")]
    );

    let current = b.current_revision().await.unwrap();
    match b
        .list(&ListOptions {
            prefix: format!("{base}/"),
            revision: current + 1000,
            ..Default::default()
        })
        .await
    {
        Err(Error::FutureRevision { requested, .. }) => assert_eq!(requested, current + 1000),
        other => panic!("list at a future revision: want FutureRevision, got {other:?}"),
    }
}

/// Count of live keys under a prefix.
pub async fn count(b: &dyn Backend, base: &str) {
    assert_eq!(b.count(&format!("{base}/")).await.unwrap(), 0);
    for i in 0..7 {
        b.create(&format!("{base}/c/{i}"), val("x")).await.unwrap();
    }
    b.create(&format!("{base}/cc/0"), val("x")).await.unwrap();
    let kv = b.get(&format!("{base}/c/3")).await.unwrap().unwrap();
    b.update(&format!("{base}/c/3"), val("y"), kv.mod_revision)
        .await
        .unwrap();
    b.delete(&format!("{base}/c/0"), 0).await.unwrap();
    assert_eq!(b.count(&format!("{base}/c/")).await.unwrap(), 6);
    assert_eq!(b.count(&format!("{base}/")).await.unwrap(), 7);
}

/// Next event from a watch, failing after a deadline.
pub async fn next_event(stream: &mut WatchStream) -> Event {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(event))) => event,
        Ok(Some(Err(e))) => panic!("watch failed: {e}"),
        Ok(None) => panic!("watch ended"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Asserts that no event arrives for a short while.
async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(200), stream.next()).await {
        panic!("unexpected watch item: {item:?}");
    }
}

fn expect_put(event: Event, key: &str, value: &str, prev: Option<&KeyValue>) -> KeyValue {
    match event {
        Event::Put { kv, prev: p } => {
            assert_eq!(kv.key, key);
            assert_eq!(kv.value, val(value));
            assert_eq!(p.as_ref(), prev, "prev of put on {key}");
            kv
        }
        other => panic!("want put of {key}, got {other:?}"),
    }
}

fn expect_delete(event: Event, prev: &KeyValue, revision: i64) {
    match event {
        Event::Delete {
            prev: p,
            revision: r,
        } => {
            assert_eq!(&p, prev);
            assert_eq!(r, revision);
        }
        other => panic!("want delete of {}, got {other:?}", prev.key),
    }
}

/// A watch from now sees puts, updates (with prev) and deletes (with prev) under its prefix only.
pub async fn watch_live(b: &dyn Backend, base: &str) {
    let prefix = format!("{base}/w/");
    let start = b.current_revision().await.unwrap();
    let mut w = b.watch(&prefix, start).await.unwrap();
    let mut other = b.watch(&format!("{base}/wx/"), start).await.unwrap();

    let key = format!("{prefix}k");
    let created = b.create(&key, val("1")).await.unwrap();
    // Outside the prefix: must not show up.
    b.create(&format!("{base}/wx/k"), val("other"))
        .await
        .unwrap();
    b.create(&format!("{base}/w"), val("bare")).await.unwrap();
    let updated = b
        .update(&key, val("2"), created.mod_revision)
        .await
        .unwrap();
    let (_, del_rev) = b.delete(&key, 0).await.unwrap();

    let kv = expect_put(next_event(&mut w).await, &key, "1", None);
    assert_eq!(kv, created);
    let kv = expect_put(next_event(&mut w).await, &key, "2", Some(&created));
    assert_eq!(kv, updated);
    expect_delete(next_event(&mut w).await, &updated, del_rev);
    assert_quiet(&mut w).await;

    let ev = next_event(&mut other).await;
    assert_eq!(ev.key(), format!("{base}/wx/k"));
    assert_quiet(&mut other).await;
}

/// A watch from a past revision replays history in order, then follows live writes
/// without gaps or duplicates.
pub async fn watch_replay_then_live(b: &dyn Backend, base: &str) {
    let prefix = format!("{base}/");
    let before = b.current_revision().await.unwrap();
    let mut expected = Vec::new();
    for i in 0..20 {
        let kv = b
            .create(&format!("{prefix}{i:02}"), val("a"))
            .await
            .unwrap();
        expected.push(kv.mod_revision);
    }
    let kv = b.get(&format!("{prefix}05")).await.unwrap().unwrap();
    let upd = b
        .update(&format!("{prefix}05"), val("b"), kv.mod_revision)
        .await
        .unwrap();
    expected.push(upd.mod_revision);
    let (_, rev) = b.delete(&format!("{prefix}06"), 0).await.unwrap();
    expected.push(rev);

    let mut w = b.watch(&prefix, before).await.unwrap();
    // Live writes racing with the replay.
    for i in 20..40 {
        let kv = b
            .create(&format!("{prefix}{i:02}"), val("a"))
            .await
            .unwrap();
        expected.push(kv.mod_revision);
    }
    let mut seen = Vec::new();
    for _ in 0..expected.len() {
        let ev = next_event(&mut w).await;
        assert!(ev.key().starts_with(&prefix));
        seen.push(ev.revision());
        if ev.revision() == upd.mod_revision {
            expect_put(ev, &format!("{prefix}05"), "b", Some(&kv));
        } else if ev.revision() == rev {
            assert!(
                matches!(ev, Event::Delete { .. }),
                "want delete, got {ev:?}"
            );
        }
    }
    assert_eq!(seen, expected);
    assert_quiet(&mut w).await;

    // A watch from the middle of history starts right after that revision.
    let mid = expected[9];
    let mut w = b.watch(&prefix, mid).await.unwrap();
    assert_eq!(next_event(&mut w).await.revision(), expected[10]);
}

/// Many tasks creating at once all succeed with unique revisions.
pub async fn concurrent_creates(b: Arc<dyn Backend>, base: &str, tasks: usize, per_task: usize) {
    let mut handles = Vec::new();
    for t in 0..tasks {
        let b = b.clone();
        let base = base.to_string();
        handles.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for i in 0..per_task {
                let kv = b
                    .create(&format!("{base}/{t:03}-{i:03}"), val("x"))
                    .await
                    .unwrap();
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    let mut all = HashSet::new();
    for h in handles {
        let revs = h.await.unwrap();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "per-task revisions not increasing"
        );
        for r in revs {
            assert!(all.insert(r), "revision {r} handed out twice");
        }
    }
    assert_eq!(all.len(), tasks * per_task);
    assert_eq!(
        b.count(&format!("{base}/")).await.unwrap(),
        (tasks * per_task) as i64
    );
}

/// After compaction, reads and watches older than the compacted revision fail with
/// `Compacted`; the current state and newer history stay readable.
pub async fn compaction(b: &dyn Backend, base: &str) {
    let prefix = format!("{base}/");
    let a = b.create(&format!("{prefix}a"), val("1")).await.unwrap();
    let old = a.mod_revision;
    let a2 = b
        .update(&format!("{prefix}a"), val("2"), old)
        .await
        .unwrap();
    let gone = b.create(&format!("{prefix}gone"), val("x")).await.unwrap();
    b.delete(&gone.key, 0).await.unwrap();
    let kept = b.create(&format!("{prefix}kept"), val("k")).await.unwrap();
    let at = b.current_revision().await.unwrap();
    // One write after the compaction point, so history above it is non-empty.
    let a3 = b
        .update(&format!("{prefix}a"), val("3"), a2.mod_revision)
        .await
        .unwrap();

    b.compact(at).await.unwrap();
    assert!(b.compacted_revision().await.unwrap() >= at);
    // Compacting again at or below is harmless.
    b.compact(at).await.unwrap();

    match b
        .list(&ListOptions {
            prefix: prefix.clone(),
            revision: old,
            ..Default::default()
        })
        .await
    {
        Err(Error::Compacted { requested, .. }) => assert_eq!(requested, old),
        other => panic!("list at compacted revision: want Compacted, got {other:?}"),
    }
    match b.watch(&prefix, old).await {
        Err(Error::Compacted { .. }) => {}
        Err(e) => panic!("watch from compacted revision: want Compacted, got {e}"),
        Ok(mut w) => match tokio::time::timeout(EVENT_TIMEOUT, w.next()).await {
            Ok(Some(Err(Error::Compacted { .. }))) => {}
            other => panic!("watch from compacted revision: want Compacted, got {other:?}"),
        },
    }

    // The state at the compaction revision itself is still readable.
    let at_list = b
        .list(&ListOptions {
            prefix: prefix.clone(),
            revision: at,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(at_list.kvs, vec![a2.clone(), kept.clone()]);
    let now = b
        .list(&ListOptions {
            prefix: prefix.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(now.kvs, vec![a3.clone(), kept.clone()]);
    assert_eq!(b.get(&kept.key).await.unwrap(), Some(kept.clone()));

    // History after the compaction point still replays, with its prev.
    let mut w = b.watch(&prefix, at).await.unwrap();
    let kv = expect_put(next_event(&mut w).await, &a3.key, "3", Some(&a2));
    assert_eq!(kv, a3);
    // And live events follow.
    let (_, rev) = b.delete(&kept.key, kept.mod_revision).await.unwrap();
    expect_delete(next_event(&mut w).await, &kept, rev);

    // Writes keep working and revisions keep increasing after compaction.
    let after = b.create(&format!("{prefix}after"), val("x")).await.unwrap();
    assert!(after.mod_revision > rev);
}
