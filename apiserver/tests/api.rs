//! Integration tests: the real server on 127.0.0.1:0 over each backend, driven by kube-rs.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct TestServer {
    client: Client,
    url: String,
    kubeconfig: std::path::PathBuf,
    shutdown: CancellationToken,
    server: Option<apiserver::Server>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    async fn start_in(dir: &Path, etcd: Option<&str>) -> Result<Self> {
        let mut cfg = apiserver::Config::for_test(dir.to_path_buf());
        if let Some(e) = etcd {
            cfg.datastore_endpoint = vec![e.to_string()];
        }
        cfg.compaction_interval_seconds = 1;
        cfg.compaction_retain_revisions = 5;
        let shutdown = CancellationToken::new();
        let server = apiserver::start(cfg, shutdown.clone()).await?;
        let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
        let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        let client = Client::try_from(conf)?;
        Ok(TestServer {
            client,
            url: server.url.clone(),
            kubeconfig: server.kubeconfig.clone(),
            shutdown,
            server: Some(server),
            _dir: None,
        })
    }

    async fn start_with_prefix(dir: &Path, etcd: &str, prefix: &str) -> Result<Self> {
        let mut cfg = apiserver::Config::for_test(dir.to_path_buf());
        cfg.datastore_endpoint = vec![etcd.to_string()];
        cfg.etcd_prefix = prefix.to_string();
        let shutdown = CancellationToken::new();
        let server = apiserver::start(cfg, shutdown.clone()).await?;
        let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
        let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(TestServer {
            client: Client::try_from(conf)?,
            url: server.url.clone(),
            kubeconfig: server.kubeconfig.clone(),
            shutdown,
            server: Some(server),
            _dir: None,
        })
    }

    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut s = Self::start_in(dir.path(), None).await?;
        s._dir = Some(dir);
        Ok(s)
    }

    async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(20), s.wait())
                .await
                .context("server did not stop in time")??;
        }
        Ok(())
    }

    async fn namespace(&self, name: &str) -> Result<()> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        api.create(&PostParams::default(), &ns).await?;
        Ok(())
    }
}

fn cm(name: &str, labels: serde_json::Value, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .unwrap_or_default()
}

fn api_err(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => (0, String::new(), other.to_string()),
    }
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn crud_and_conflicts(s: &TestServer) -> Result<()> {
    s.namespace("crud").await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "crud");
    let created = api
        .create(
            &PostParams::default(),
            &cm("a", json!({"app": "x"}), json!({"k": "v"})),
        )
        .await?;
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some()
    );
    let got = api.get("a").await?;
    assert_eq!(
        got.data
            .as_ref()
            .and_then(|d| d.get("k"))
            .map(String::as_str),
        Some("v")
    );

    let (code, reason, msg) = api_err(
        api.create(&PostParams::default(), &cm("a", json!({}), json!({})))
            .await
            .err()
            .context("dup create")?,
    );
    assert_eq!(
        (code, reason.as_str(), msg.as_str()),
        (409, "AlreadyExists", "configmaps \"a\" already exists")
    );

    let mut stale = got.clone();
    let mut fresh = got.clone();
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    api.replace("a", &PostParams::default(), &fresh).await?;
    stale.data = Some([("k".to_string(), "v3".to_string())].into());
    let (code, reason, msg) = api_err(
        api.replace("a", &PostParams::default(), &stale)
            .await
            .err()
            .context("stale update")?,
    );
    assert_eq!(code, 409);
    assert_eq!(reason, "Conflict");
    assert_eq!(
        msg,
        "Operation cannot be fulfilled on configmaps \"a\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // generateName
    let gen: ConfigMap = serde_json::from_value(json!({"metadata": {"generateName": "gen-"}}))?;
    let g = api.create(&PostParams::default(), &gen).await?;
    assert!(g
        .metadata
        .name
        .as_deref()
        .is_some_and(|n| n.starts_with("gen-") && n.len() == 9));

    // dry run writes nothing
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&dry, &cm("dry", json!({}), json!({}))).await?;
    assert_eq!(
        api_err(api.get("dry").await.err().context("dry run stored")?).0,
        404
    );

    // merge patch and json patch
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"p": "1"}}})),
    )
    .await?;
    let req = http::Request::patch("/api/v1/namespaces/crud/configmaps/a")
        .header("content-type", "application/json-patch+json")
        .body(serde_json::to_vec(
            &json!([{"op": "add", "path": "/data/j", "value": "y"}]),
        )?)?;
    let patched: ConfigMap = s.client.request(req).await?;
    assert_eq!(patched.labels().get("p").map(String::as_str), Some("1"));
    assert_eq!(
        patched
            .data
            .as_ref()
            .and_then(|d| d.get("j"))
            .map(String::as_str),
        Some("y")
    );

    // invalid name
    let (code, reason, msg) = api_err(
        api.create(
            &PostParams::default(),
            &cm("Bad_Name", json!({}), json!({})),
        )
        .await
        .err()
        .context("bad name")?,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(msg.starts_with("ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{msg}");

    // delete and not found
    api.delete("a", &DeleteParams::default()).await?;
    let (code, _, msg) = api_err(api.get("a").await.err().context("deleted")?);
    assert_eq!((code, msg.as_str()), (404, "configmaps \"a\" not found"));
    Ok(())
}

async fn selectors_and_pages(s: &TestServer) -> Result<()> {
    s.namespace("sel").await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "sel");
    for i in 0..25 {
        let tier = if i % 2 == 0 { "even" } else { "odd" };
        api.create(
            &PostParams::default(),
            &cm(
                &format!("cm-{i:02}"),
                json!({"tier": tier, "n": i.to_string()}),
                json!({}),
            ),
        )
        .await?;
    }
    let even = api.list(&ListParams::default().labels("tier=even")).await?;
    assert_eq!(even.items.len(), 13);
    let set = api
        .list(&ListParams::default().labels("tier in (odd),n notin (1,3)"))
        .await?;
    assert_eq!(set.items.len(), 10);
    let exists = api.list(&ListParams::default().labels("!tier")).await?;
    assert_eq!(exists.items.len(), 0);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=cm-07"))
        .await?;
    assert_eq!(by_name.items.len(), 1);
    let bad = api
        .list(&ListParams::default().fields("spec.nope=1"))
        .await
        .err()
        .context("bad field")?;
    let (code, _, msg) = api_err(bad);
    assert_eq!(code, 400);
    assert!(
        msg.contains("field label not supported: spec.nope"),
        "{msg}"
    );

    let mut names = Vec::new();
    let mut lp = ListParams::default().limit(10);
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await?;
        pages += 1;
        names.extend(page.items.iter().filter_map(|c| c.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(10).continue_token(&c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 25);
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 25);
    Ok(())
}

async fn watch_resume(s: &TestServer) -> Result<()> {
    s.namespace("watch").await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "watch");
    let first = api
        .create(&PostParams::default(), &cm("w1", json!({}), json!({})))
        .await?;
    let rv = first.metadata.resource_version.clone().unwrap_or_default();
    api.create(&PostParams::default(), &cm("w2", json!({}), json!({})))
        .await?;
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    )
    .await?;
    api.delete("w2", &DeleteParams::default()).await?;
    // Resume from the first create: exactly the later events, in order.
    let wp = WatchParams::default().timeout(10);
    let mut stream = api.watch(&wp, &rv).await?.boxed();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 {
        let ev = tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .context("watch events")??;
        match ev {
            Some(WatchEvent::Added(c)) => {
                seen.push(format!("ADDED {}", c.metadata.name.unwrap_or_default()))
            }
            Some(WatchEvent::Modified(c)) => {
                seen.push(format!("MODIFIED {}", c.metadata.name.unwrap_or_default()))
            }
            Some(WatchEvent::Deleted(c)) => {
                seen.push(format!("DELETED {}", c.metadata.name.unwrap_or_default()))
            }
            Some(WatchEvent::Bookmark(_)) => {}
            Some(WatchEvent::Error(e)) => anyhow::bail!("watch error {e:?}"),
            None => break,
        }
    }
    assert_eq!(seen, vec!["ADDED w2", "MODIFIED w1", "DELETED w2"]);

    // A live watch with a label selector sees an object entering and leaving it.
    let cur = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let wp = WatchParams::default().labels("sel=yes").timeout(10);
    let mut stream = api.watch(&wp, &cur).await?.boxed();
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "yes"}}})),
    )
    .await?;
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"sel": "no"}}})),
    )
    .await?;
    let mut types = Vec::new();
    while types.len() < 2 {
        match tokio::time::timeout_at(deadline + Duration::from_secs(5), stream.try_next())
            .await
            .context("selector watch")??
        {
            Some(WatchEvent::Added(_)) => types.push("ADDED"),
            Some(WatchEvent::Deleted(_)) => types.push("DELETED"),
            Some(WatchEvent::Modified(_)) => types.push("MODIFIED"),
            Some(_) => {}
            None => break,
        }
    }
    assert_eq!(types, vec!["ADDED", "DELETED"]);
    Ok(())
}

async fn bookmarks_and_initial_events(s: &TestServer) -> Result<()> {
    s.namespace("wl").await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "wl");
    for i in 0..3 {
        api.create(
            &PostParams::default(),
            &cm(&format!("i{i}"), json!({}), json!({})),
        )
        .await?;
    }
    // Watch-list: ADDED for every object, then a BOOKMARK marking the end of initial events.
    let wp = WatchParams::streaming_lists().timeout(20);
    let mut stream = api.watch(&wp, "0").await?.boxed();
    let mut added = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, stream.try_next())
            .await
            .context("initial events")??
        {
            Some(WatchEvent::Added(_)) => added += 1,
            Some(WatchEvent::Bookmark(b)) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, 3);
    // Without changes, a bookmarks-enabled watch still learns the current revision.
    let wp = WatchParams::default().timeout(20);
    let rv = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = api.watch(&wp, &rv).await?.boxed();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    match tokio::time::timeout_at(deadline, stream.try_next())
        .await
        .context("bookmark")??
    {
        Some(WatchEvent::Bookmark(b)) => assert!(!b.metadata.resource_version.is_empty()),
        other => anyhow::bail!("expected a bookmark, got {other:?}"),
    }
    // sendInitialEvents without resourceVersionMatch=NotOlderThan is rejected with 422.
    let req = http::Request::get("/api/v1/namespaces/wl/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true")
        .body(Vec::new())?;
    let err = s
        .client
        .request_text(req)
        .await
        .err()
        .context("invalid watch-list")?;
    assert_eq!(api_err(err).0, 422);
    Ok(())
}

async fn namespaces_and_subresources(s: &TestServer) -> Result<()> {
    let nsapi: Api<Namespace> = Api::all(s.client.clone());
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        nsapi
            .get(n)
            .await
            .with_context(|| format!("namespace {n}"))?;
    }
    let missing: Api<ConfigMap> = Api::namespaced(s.client.clone(), "missing");
    let (code, _, msg) = api_err(
        missing
            .create(&PostParams::default(), &cm("x", json!({}), json!({})))
            .await
            .err()
            .context("missing ns")?,
    );
    assert_eq!(
        (code, msg.as_str()),
        (404, "namespaces \"missing\" not found")
    );

    s.namespace("doomed").await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "doomed");
    api.create(&PostParams::default(), &cm("c1", json!({}), json!({})))
        .await?;
    nsapi.delete("doomed", &DeleteParams::default()).await?;
    let ns = nsapi.get("doomed").await;
    if let Ok(ns) = ns {
        assert!(ns.metadata.deletion_timestamp.is_some());
    }
    wait_for(
        "namespace doomed to go",
        Duration::from_secs(20),
        || async {
            matches!(nsapi.get("doomed").await, Err(kube::Error::Api(ref e)) if e.code == 404)
        },
    )
    .await?;
    assert_eq!(
        api_err(api.get("c1").await.err().context("content gone")?).0,
        404
    );

    // Status subresource: the main resource keeps status, /status keeps spec.
    s.namespace("sub").await?;
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "sub");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running"}
    }))?;
    let created = pods.create(&PostParams::default(), &pod).await?;
    assert_eq!(
        created.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    pods.patch_status(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"nodeName": "n1"}})),
    )
    .await?;
    let p = pods.get("p").await?;
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );
    assert_eq!(p.spec.as_ref().and_then(|s| s.node_name.as_deref()), None);
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Failed"}})),
    )
    .await?;
    let p = pods.get("p").await?;
    assert_eq!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );

    // Scale subresource.
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "sub");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))?;
    let d = deploys.create(&PostParams::default(), &d).await?;
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(1));
    assert_eq!(d.metadata.generation, Some(1));
    let scale = deploys.get_scale("web").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(1));
    deploys
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    let d = deploys.get("web").await?;
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
    assert_eq!(d.metadata.generation, Some(2));
    let bad: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))?;
    let (code, reason, _) = api_err(
        deploys
            .create(&PostParams::default(), &bad)
            .await
            .err()
            .context("bad selector")?,
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    Ok(())
}

async fn raw_http_errors(s: &TestServer) -> Result<()> {
    // Malformed JSON, oversized body: upstream status codes, the store unharmed.
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(b"{not json".to_vec())?;
    let err = s
        .client
        .request_text(req)
        .await
        .err()
        .context("malformed")?;
    assert_eq!(api_err(err).0, 400);
    let big = json!({"metadata": {"name": "big"}, "data": {"x": "a".repeat(4 * 1024 * 1024)}});
    let req = http::Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&big)?)?;
    let err = s
        .client
        .request_text(req)
        .await
        .err()
        .context("oversized")?;
    assert_eq!(api_err(err).0, 413);
    // A field of the wrong type, and unknown fields under fieldValidation=Strict: 400.
    let bad_type = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "t"}, "spec": {"replicas": "three"}});
    let req = http::Request::post("/apis/apps/v1/namespaces/default/deployments")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&bad_type)?)?;
    let (code, _, msg) = api_err(
        s.client
            .request_text(req)
            .await
            .err()
            .context("wrong type")?,
    );
    assert_eq!(code, 400);
    assert!(
        msg.starts_with("Deployment in version \"v1\" cannot be handled as a Deployment"),
        "{msg}"
    );
    let unknown = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "datta": {"a": "b"}});
    let req = http::Request::post("/api/v1/namespaces/default/configmaps?fieldValidation=Strict")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&unknown)?)?;
    let (code, _, msg) = api_err(s.client.request_text(req).await.err().context("strict")?);
    assert_eq!(code, 400);
    assert!(
        msg.ends_with("strict decoding error: unknown field \"datta\""),
        "{msg}"
    );
    // Requests without credentials are covered by anonymous_requests_are_forbidden_by_rbac;
    // here: /version answers v1.33.
    let v = s.client.apiserver_version().await?;
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "33"));
    let _ = (&s.url, &s.kubeconfig);
    Ok(())
}

/// Server-side apply through kube-rs: create on apply, no-op re-apply, conflicts with the
/// upstream message and causes, force, removal of fields the applier dropped, Update
/// entries from other writes, and the PatchOptions checks.
async fn server_side_apply(s: &TestServer) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(s.client.clone(), "default");
    let deploy = |replicas: i64, labels: serde_json::Value| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "ssa", "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "ssa"}},
                     "template": {"metadata": {"labels": {"app": "ssa"}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
        })
    };
    fn managers(d: &impl kube::Resource) -> Vec<(String, String)> {
        d.meta()
            .managed_fields
            .iter()
            .flatten()
            .map(|m| {
                (
                    m.manager.clone().unwrap_or_default(),
                    m.operation.clone().unwrap_or_default(),
                )
            })
            .collect()
    }
    let alice = PatchParams::apply("alice");
    let first = api
        .patch(
            "ssa",
            &alice,
            &Patch::Apply(deploy(2, json!({"app": "ssa", "tier": "web"}))),
        )
        .await?;
    assert_eq!(managers(&first), [("alice".into(), "Apply".into())]);
    let fields = first
        .metadata
        .managed_fields
        .as_ref()
        .context("managedFields")?[0]
        .fields_v1
        .clone()
        .context("fieldsV1")?
        .0;
    assert_eq!(fields["f:spec"]["f:replicas"], json!({}), "{fields}");
    assert!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
            .get("k:{\"name\":\"c\"}")
            .is_some(),
        "{fields}"
    );
    // The same configuration again writes nothing.
    let again = api
        .patch(
            "ssa",
            &alice,
            &Patch::Apply(deploy(2, json!({"app": "ssa", "tier": "web"}))),
        )
        .await?;
    assert_eq!(again.resource_version(), first.resource_version());

    // bob wants other replicas: a conflict, worded like upstream.
    let bob = PatchParams::apply("bob");
    let err = api
        .patch("ssa", &bob, &Patch::Apply(deploy(5, json!({"app": "ssa"}))))
        .await
        .err()
        .context("conflict expected")?;
    let kube::Error::Api(status) = &err else {
        anyhow::bail!("{err}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"alice\": .spec.replicas"
    );
    let forced = api
        .patch(
            "ssa",
            &bob.clone().force(),
            &Patch::Apply(deploy(5, json!({"app": "ssa"}))),
        )
        .await?;
    assert_eq!(forced.spec.as_ref().and_then(|s| s.replicas), Some(5));
    let mut m = managers(&forced);
    m.sort();
    assert_eq!(
        m,
        [
            ("alice".into(), "Apply".into()),
            ("bob".into(), "Apply".into())
        ]
    );

    // alice drops the tier label and replicas: the label goes, bob's replicas stay.
    let mut mine = deploy(0, json!({"app": "ssa"}));
    mine["spec"]
        .as_object_mut()
        .context("spec")?
        .remove("replicas");
    let pruned = api.patch("ssa", &alice, &Patch::Apply(mine)).await?;
    assert!(
        !pruned.labels().contains_key("tier"),
        "{:?}",
        pruned.labels()
    );
    assert_eq!(pruned.spec.as_ref().and_then(|s| s.replicas), Some(5));

    // An ordinary patch is recorded as an Update of its manager.
    let edited = api
        .patch(
            "ssa",
            &PatchParams {
                field_manager: Some("editor".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"metadata": {"annotations": {"note": "x"}}})),
        )
        .await?;
    assert!(managers(&edited).contains(&("editor".into(), "Update".into())));
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let created = cms
        .create(
            &PostParams::default(),
            &cm("ssa-ua", json!({}), json!({"a": "b"})),
        )
        .await?;
    let ua_manager = managers(&created);
    assert_eq!(ua_manager.len(), 1, "{ua_manager:?}");
    assert_eq!(ua_manager[0].1, "Update");

    // PatchOptions checks, a wrong apiVersion, managedFields in the configuration.
    let raw = |query: &str, ct: &str, body: serde_json::Value| {
        http::Request::patch(format!(
            "/apis/apps/v1/namespaces/default/deployments/ssa{query}"
        ))
        .header("content-type", ct)
        .body(body.to_string().into_bytes())
    };
    let cases = [
        (
            raw("", "application/apply-patch+yaml", deploy(1, json!({})))?,
            422,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        ),
        (
            raw("?force=true", "application/merge-patch+json", json!({}))?,
            422,
            "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for non-apply patch",
        ),
        (
            raw(
                "?fieldManager=x",
                "application/apply-patch+yaml",
                json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "ssa"}}),
            )?,
            400,
            "Incorrect version specified in apply patch. Specified patch version: apps/v1beta1, expected: apps/v1",
        ),
        (
            raw(
                "?fieldManager=x",
                "application/apply-patch+yaml",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ssa", "managedFields": [{"manager": "x"}]}}),
            )?,
            400,
            "metadata.managedFields must be nil",
        ),
    ];
    let long = "m".repeat(129);
    let cases = cases.into_iter().chain([
        (
            raw(
                "?fieldManager=x",
                "application/apply-patch+yaml",
                json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "ssa"}}),
            )?,
            400,
            "Incorrect kind specified in apply patch. Specified patch kind: StatefulSet, expected: Deployment",
        ),
        (
            raw(
                "?fieldManager=x",
                "application/apply-patch+yaml",
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "other"}}),
            )?,
            400,
            "the name of the object (other) does not match the name on the URL (ssa)",
        ),
        (
            raw(
                &format!("?fieldManager={long}"),
                "application/merge-patch+json",
                json!({}),
            )?,
            422,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Too long: may not be more than 128 bytes",
        ),
        (
            raw("?fieldManager=a%07b", "application/merge-patch+json", json!({}))?,
            422,
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Invalid value: \"a\\ab\": invalid character U+0007 (at position 1)",
        ),
    ]);
    for (req, code, message) in cases {
        let (c, _, m) = api_err(s.client.request_text(req).await.err().context(message)?);
        assert_eq!((c, m.as_str()), (code, message));
    }
    let unchanged = api.get("ssa").await?;
    assert_eq!(unchanged.resource_version(), edited.resource_version());

    // Apply to /status: only the status changes, and the entry names the subresource.
    let status = api
        .patch_status(
            "ssa",
            &PatchParams::apply("status-writer"),
            &Patch::Apply(json!({"apiVersion": "apps/v1", "kind": "Deployment",
                                 "metadata": {"name": "ssa"},
                                 "spec": {"replicas": 9},
                                 "status": {"observedGeneration": 7}})),
        )
        .await?;
    assert_eq!(
        status.status.as_ref().and_then(|s| s.observed_generation),
        Some(7)
    );
    assert_eq!(status.spec.as_ref().and_then(|s| s.replicas), Some(5));
    let entry = status
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .find(|m| m.manager.as_deref() == Some("status-writer"))
        .context("the status applier's entry")?;
    assert_eq!(
        (entry.operation.as_deref(), entry.subresource.as_deref()),
        (Some("Apply"), Some("status"))
    );
    api.delete("ssa", &DeleteParams::default()).await?;
    cms.delete("ssa-ua", &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_api() -> Result<()> {
    let s = TestServer::start().await?;
    crud_and_conflicts(&s).await?;
    selectors_and_pages(&s).await?;
    watch_resume(&s).await?;
    bookmarks_and_initial_events(&s).await?;
    namespaces_and_subresources(&s).await?;
    raw_http_errors(&s).await?;
    server_side_apply(&s).await?;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_api() -> Result<()> {
    let etcd = support::etcd::TestEtcd::start().await;
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(dir.path(), Some(&etcd.endpoint)).await?;
    crud_and_conflicts(&s).await?;
    selectors_and_pages(&s).await?;
    watch_resume(&s).await?;
    namespaces_and_subresources(&s).await?;
    server_side_apply(&s).await?;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_state_and_old_watch_is_expired() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(dir.path(), None).await?;
    s.namespace("keep").await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "keep");
    let c = api
        .create(
            &PostParams::default(),
            &cm("kept", json!({}), json!({"a": "b"})),
        )
        .await?;
    let old_rv = c.metadata.resource_version.clone().unwrap_or_default();
    for i in 0..20 {
        api.patch(
            "kept",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await?;
    }
    let first_page = api.list(&ListParams::default().limit(1)).await;
    s.stop().await?;

    let s = TestServer::start_in(dir.path(), None).await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "keep");
    let got = api.get("kept").await?;
    assert_eq!(
        got.data
            .as_ref()
            .and_then(|d| d.get("i"))
            .map(String::as_str),
        Some("19")
    );
    // A watch from before the restart is older than the cache: 410 Expired as an ERROR event.
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await?
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), stream.try_next()).await?? {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => anyhow::bail!("expected a 410 ERROR event, got {other:?}"),
    }
    let _ = first_page;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_token_after_compaction_is_expired() -> Result<()> {
    let s = TestServer::start().await?;
    s.namespace("cmp").await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "cmp");
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), json!({}), json!({})),
        )
        .await?;
    }
    let page = api.list(&ListParams::default().limit(2)).await?;
    let token = page.metadata.continue_.clone().context("continue token")?;
    // Enough writes that the compactor (1 s, keep 5 revisions) drops the page's revision.
    for i in 0..20 {
        api.patch(
            "c0",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"i": i.to_string()}})),
        )
        .await?;
    }
    wait_for(
        "compaction to expire the continue token",
        Duration::from_secs(20),
        || {
            let api = api.clone();
            let token = token.clone();
            async move {
                matches!(api.list(&ListParams::default().limit(2).continue_token(&token)).await,
                Err(kube::Error::Api(ref e)) if e.code == 410 && e.reason == "Expired")
            }
        },
    )
    .await?;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_requests_are_forbidden_by_rbac() -> Result<()> {
    let s = TestServer::start().await?;
    // A client that trusts the CA but presents no certificate.
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig)?;
    let mut conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    conf.auth_info = Default::default();
    let anon = Client::try_from(conf)?;
    let cms: Api<ConfigMap> = Api::namespaced(anon.clone(), "default");
    // No credentials: system:anonymous, which RBAC grants only the public info paths.
    let (code, reason, _) = api_err(
        cms.list(&ListParams::default())
            .await
            .err()
            .context("anonymous list")?,
    );
    assert_eq!((code, reason.as_str()), (403, "Forbidden"));
    anon.apiserver_version().await?;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_share_one_etcd_under_different_prefixes() -> Result<()> {
    let etcd = support::etcd::TestEtcd::start().await;
    let (d1, d2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = TestServer::start_with_prefix(d1.path(), &etcd.endpoint, "/cluster-a").await?;
    let b = TestServer::start_with_prefix(d2.path(), &etcd.endpoint, "/cluster-b").await?;
    let ca: Api<ConfigMap> = Api::namespaced(a.client.clone(), "default");
    let cb: Api<ConfigMap> = Api::namespaced(b.client.clone(), "default");
    ca.create(&PostParams::default(), &cm("only-a", json!({}), json!({})))
        .await?;
    // The newest etcd revision now belongs to cluster b: a's reads must not wait for it.
    cb.create(&PostParams::default(), &cm("only-b", json!({}), json!({})))
        .await?;
    let started = std::time::Instant::now();
    ca.get("only-a").await?;
    let names: Vec<String> = ca
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(names, vec!["only-a"]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "reads took {:?}",
        started.elapsed()
    );
    assert_eq!(
        api_err(cb.get("only-a").await.err().context("isolation")?).0,
        404
    );
    a.stop().await?;
    b.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_cut_off_and_stalls_no_one() -> Result<()> {
    let s = TestServer::start().await?;
    s.namespace("slow").await?;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "slow");
    let rv = api
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    // The slow watcher: its response is never read, so its connection fills up.
    let slow = api
        .watch(&WatchParams::default().timeout(120), &rv)
        .await?
        .boxed();
    // A live watcher on a connection of its own.
    let kc = kube::config::Kubeconfig::read_from(&s.kubeconfig)?;
    let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let fast_api: Api<ConfigMap> = Api::namespaced(Client::try_from(conf)?, "slow");
    let mut fast = fast_api
        .watch(&WatchParams::default().timeout(120), &rv)
        .await?
        .boxed();

    // ~60 MiB of events: far more than socket buffers and the server's per-watcher buffer.
    const EVENTS: usize = 3000;
    let payload = "x".repeat(20 * 1024);
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..EVENTS)
                .map(|i| {
                    let api = api.clone();
                    let payload = payload.clone();
                    async move {
                        api.create(
                            &PostParams::default(),
                            &cm(&format!("e{i}"), json!({}), json!({"p": payload})),
                        )
                        .await
                    }
                })
                .buffer_unordered(16)
                .try_for_each(|_| async { Ok(()) })
                .await
        })
    };
    let started = std::time::Instant::now();
    let mut got = 0usize;
    while got < EVENTS {
        match tokio::time::timeout(Duration::from_secs(60), fast.try_next())
            .await
            .context("fast watcher stalled")??
        {
            Some(WatchEvent::Added(_)) => got += 1,
            Some(_) => {}
            None => anyhow::bail!("fast watcher ended after {got} events"),
        }
    }
    writer.await??;
    let fast_time = started.elapsed();
    // The server closes a watcher whose connection has taken nothing for 5 s. The slow one
    // stopped taking within the first second of writes; leave it unread past that deadline.
    tokio::time::sleep_until((started + Duration::from_secs(9)).into()).await;

    // The slow watcher was closed by the server: reading it now yields what was buffered,
    // then the end (or a 410), well before every event.
    let mut slow = slow;
    let mut slow_got = 0usize;
    let ended = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match slow.try_next().await {
                Ok(Some(WatchEvent::Added(_))) => slow_got += 1,
                Ok(Some(WatchEvent::Error(e))) => {
                    assert_eq!(e.code, 410);
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the slow watcher was not cut off");
    assert!(
        slow_got < EVENTS,
        "the slow watcher received everything ({slow_got}); it was never cut off"
    );
    eprintln!(
        "fast watcher: {EVENTS} events in {fast_time:?}; slow watcher cut off after {slow_got}"
    );
    s.stop().await
}
