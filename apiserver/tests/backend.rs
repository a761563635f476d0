//! The shared backend suite against SQLite and a real etcd, plus SQLite durability.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver::storage::sqlite::{SqliteBackend, SqliteOptions};
use apiserver::storage::{self, testsuite, Backend, ListOptions};
use bytes::Bytes;
use futures::StreamExt;
use support::etcd::TestEtcd;

fn open_sqlite(dir: &tempfile::TempDir) -> Arc<dyn Backend> {
    Arc::new(SqliteBackend::open(&dir.path().join("state.db")).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_suite() {
    let dir = tempfile::tempdir().unwrap();
    testsuite::run_all(open_sqlite(&dir)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_suite() {
    let etcd = TestEtcd::start().await;
    let backend = storage::etcd::EtcdBackend::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    testsuite::run_all(Arc::new(backend)).await;
}

/// Compaction done by another API server is noticed: on connect (probe), and by a server
/// already connected through etcd's errors and watch cancellations.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_learns_compaction_by_others() {
    let etcd = TestEtcd::start().await;
    let endpoints = vec![etcd.endpoint.clone()];
    let first = storage::open(std::path::Path::new("/nonexistent"), &endpoints)
        .await
        .unwrap();
    let early = storage::etcd::EtcdBackend::connect(&endpoints)
        .await
        .unwrap();
    for i in 0..37 {
        first
            .create(&format!("/k/{i}"), Bytes::from("x"))
            .await
            .unwrap();
    }
    let old = 5;
    let at = first.current_revision().await.unwrap() - 3;
    first.compact(at).await.unwrap();

    let late = storage::etcd::EtcdBackend::connect(&endpoints)
        .await
        .unwrap();
    assert_eq!(late.compacted_revision().await.unwrap(), at);

    match early
        .list(&ListOptions {
            prefix: "/k/".into(),
            revision: old,
            ..Default::default()
        })
        .await
    {
        Err(storage::Error::Compacted { requested, .. }) => assert_eq!(requested, old),
        other => panic!("list at compacted revision: want Compacted, got {other:?}"),
    }
    let mut w = early.watch("/k/", old).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Err(storage::Error::Compacted { compacted, .. }))) => assert_eq!(compacted, at),
        other => panic!("watch from compacted revision: want Compacted, got {other:?}"),
    }
    assert_eq!(early.compacted_revision().await.unwrap(), at);
}

/// A watcher that stops reading is cut off with `Compacted` instead of holding up
/// writers or buffering without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_slow_watcher_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        event_buffer: 4,
        watch_buffer: 4,
    };
    let b = SqliteBackend::open_with(&dir.path().join("state.db"), options).unwrap();
    let mut w = b.watch("/slow/", 0).await.unwrap();
    for i in 0..30 {
        b.create(&format!("/slow/{i:02}"), Bytes::from("x"))
            .await
            .unwrap();
    }
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
            Ok(Some(Ok(_))) => seen += 1,
            Ok(Some(Err(storage::Error::Compacted { .. }))) => break,
            other => panic!("want events then Compacted, got {other:?}"),
        }
    }
    assert!(seen < 30, "watcher was not cut off");
    assert!(tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .is_none());
}

/// An etcd watch resumes from its last delivered revision after etcd restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_watch_resumes_after_restart() {
    let mut etcd = TestEtcd::start().await;
    let b = storage::etcd::EtcdBackend::connect(std::slice::from_ref(&etcd.endpoint))
        .await
        .unwrap();
    let start = b.current_revision().await.unwrap();
    let mut w = b.watch("/r/", start).await.unwrap();
    let first = b.create("/r/1", Bytes::from("1")).await.unwrap();
    assert_eq!(
        testsuite::next_event(&mut w).await.revision(),
        first.mod_revision
    );

    etcd.restart().await;
    let second = b.create("/r/2", Bytes::from("2")).await.unwrap();
    let ev = testsuite::next_event(&mut w).await;
    assert_eq!(ev.key(), "/r/2");
    assert_eq!(ev.revision(), second.mod_revision);
}

#[tokio::test]
async fn open_chooses_sqlite_under_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let backend = storage::open(dir.path(), &[]).await.unwrap();
    backend.create("/x", Bytes::from("1")).await.unwrap();
    assert!(dir.path().join("db/state.db").exists());
}

#[tokio::test]
async fn sqlite_reopen_keeps_state_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let (last, kept) = {
        let b = open_sqlite(&dir);
        let kept = b.create("/a", Bytes::from("a")).await.unwrap();
        b.create("/b", Bytes::from("b")).await.unwrap();
        let (_, last) = b.delete("/b", 0).await.unwrap();
        // Compacting at the newest revision removes its tombstone row: the revision
        // counter must still not go back.
        b.compact(last).await.unwrap();
        (last, kept)
    };
    let b = open_sqlite(&dir);
    assert_eq!(b.current_revision().await.unwrap(), last);
    assert_eq!(b.compacted_revision().await.unwrap(), last);
    assert_eq!(b.get("/a").await.unwrap(), Some(kept));
    assert_eq!(b.get("/b").await.unwrap(), None);
    let next = b.create("/c", Bytes::from("c")).await.unwrap();
    assert!(next.mod_revision > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compactor_keeps_recent_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let b = open_sqlite(&dir);
    for i in 0..20 {
        b.create(&format!("/k/{i}"), Bytes::from("x"))
            .await
            .unwrap();
    }
    let current = b.current_revision().await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let handle =
        storage::spawn_compactor(b.clone(), Duration::from_millis(20), 5, shutdown.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.compacted_revision().await.unwrap() < current - 5 {
        assert!(Instant::now() < deadline, "compactor did not compact");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.compacted_revision().await.unwrap(), current - 5);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.count("/k/").await.unwrap(), 20);
}

const DURABILITY_ENV: &str = "MINIK8S_DURABILITY_DB";

/// Child side of `sqlite_acknowledged_writes_survive_kill`: writes until killed, printing
/// each acknowledged key. Does nothing when run normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper process for sqlite_acknowledged_writes_survive_kill"]
async fn durability_child() {
    let Some(path) = std::env::var_os(DURABILITY_ENV) else {
        return;
    };
    let b: Arc<dyn Backend> = Arc::new(SqliteBackend::open(std::path::Path::new(&path)).unwrap());
    let mut tasks = Vec::new();
    for t in 0..16 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("/durable/{t}/{i}");
                let kv = b.create(&key, Bytes::from(vec![b'x'; 512])).await.unwrap();
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                writeln!(out, "ACK {key} {}", kv.mod_revision).unwrap();
                out.flush().unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acknowledged_writes_survive_kill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "durability_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(DURABILITY_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let acked = tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        let mut killed = false;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let mut parts = line.split_whitespace();
            if parts.next() != Some("ACK") {
                continue;
            }
            let key = parts.next().unwrap().to_string();
            let rev: i64 = parts.next().unwrap().parse().unwrap();
            acked.push((key, rev));
            if acked.len() >= 2000 && !killed {
                // SIGKILL mid-stream; lines already printed were acknowledged.
                child.kill().unwrap();
                killed = true;
            }
        }
        assert!(killed, "child stopped before writing enough keys");
        child.wait().unwrap();
        acked
    })
    .await
    .unwrap();

    let b = open_sqlite(&dir);
    let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap();
    assert!(b.current_revision().await.unwrap() >= max_acked);
    for (key, rev) in &acked {
        let kv = b.get(key).await.unwrap();
        assert_eq!(
            kv.map(|kv| kv.mod_revision),
            Some(*rev),
            "acknowledged key {key} lost"
        );
    }
    // Revisions continue after the crash.
    let kv = b.create("/after-crash", Bytes::from("x")).await.unwrap();
    assert!(kv.mod_revision > b.current_revision().await.unwrap() - 1);
    assert!(kv.mod_revision > max_acked);
}
