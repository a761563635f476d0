//! CustomResourceDefinitions end to end: the real server on 127.0.0.1:0 (SQLite and etcd),
//! driven over HTTPS by kube-rs.

mod support;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    WatchEvent, WatchParams,
};
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct TestServer {
    client: Client,
    shutdown: CancellationToken,
    server: Option<apiserver::Server>,
}

impl TestServer {
    async fn start_in(dir: &Path, etcd: Option<&str>) -> Result<Self> {
        let mut cfg = apiserver::Config::for_test(dir.to_path_buf());
        if let Some(e) = etcd {
            cfg.datastore_endpoint = vec![e.to_string()];
        }
        let shutdown = CancellationToken::new();
        let server = apiserver::start(cfg, shutdown.clone()).await?;
        let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
        let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        Ok(TestServer {
            client: Client::try_from(conf)?,
            shutdown,
            server: Some(server),
        })
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

    /// A raw request: the JSON answer, or (code, reason, message) of the Status.
    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        accept: Option<&str>,
        body: Option<Value>,
    ) -> Result<Result<Value, (u16, String, String)>> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type);
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        let req = b.body(body.map(|v| v.to_string().into_bytes()).unwrap_or_default())?;
        match self.client.request_text(req).await {
            Ok(t) => Ok(Ok(serde_json::from_str(&t)?)),
            Err(kube::Error::Api(s)) => Ok(Err((s.code, s.reason.clone(), s.message.clone()))),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, path: &str) -> Result<Result<Value, (u16, String, String)>> {
        self.call("GET", path, "application/json", None, None).await
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                      "shortNames": ["wd"], "categories": ["all"]},
            "versions": [
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1", "served": true, "storage": true,
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                         "statusReplicasPath": ".status.replicas",
                                                         "labelSelectorPath": ".status.selector"}},
                 "additionalPrinterColumns": [
                     {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                     {"name": "Size", "type": "string", "jsonPath": ".spec.size"},
                     {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                 ],
                 "schema": {"openAPIV3Schema": {
                     "type": "object",
                     "properties": {
                         "spec": {"type": "object", "required": ["size"], "properties": {
                             "replicas": {"type": "integer", "minimum": 0, "default": 1},
                             "size": {"type": "string", "enum": ["small", "large"]},
                         }},
                         "status": {"type": "object", "properties": {
                             "replicas": {"type": "integer"},
                             "selector": {"type": "string"},
                         }},
                     },
                 }}},
            ],
        },
    })
}

fn widget(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget",
           "metadata": {"name": name, "labels": {"app": name}}, "spec": spec})
}

fn widgets_api(client: &Client, version: &str) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "example.com".into(),
        version: version.into(),
        api_version: format!("example.com/{version}"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    Api::namespaced_with(client.clone(), "default", &ar)
}

/// Creates the widget CRD and waits (at most a second) until widgets are served.
async fn create_crd(s: &TestServer) -> Result<Value> {
    let crd = s
        .call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "application/json",
            None,
            Some(widget_crd()),
        )
        .await?
        .map_err(|e| anyhow::anyhow!("create CRD: {e:?}"))?;
    assert_eq!(
        crd["status"]["conditions"],
        json!([]),
        "a new CRD has no conditions until the naming controller looks"
    );
    wait_for("widgets to be served", Duration::from_secs(1), || async {
        matches!(s.get(WIDGETS).await, Ok(Ok(_)))
    })
    .await?;
    s.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
        .await?
        .map_err(|e| anyhow::anyhow!("get CRD: {e:?}"))
}

/// A CRD whose kind another CRD of its group holds gets NamesAccepted False with upstream's
/// reason and message, is not established and not served; once the holder is gone, it is.
async fn name_conflicts(s: &TestServer) -> Result<()> {
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    let make = |plural: &str| {
        let mut c = widget_crd();
        c["metadata"]["name"] = json!(format!("{plural}.conflict.example.org"));
        c["spec"]["group"] = json!("conflict.example.org");
        c["spec"]["names"] =
            json!({"plural": plural, "singular": plural.trim_end_matches('s'), "kind": "Alpha"});
        c
    };
    let create = |c: Value| async move {
        s.call("POST", crds, "application/json", None, Some(c))
            .await?
            .map_err(|e| anyhow::anyhow!("create CRD: {e:?}"))
    };
    let served = |plural: &'static str| async move {
        matches!(
            s.get(&format!(
                "/apis/conflict.example.org/v1/namespaces/default/{plural}"
            ))
            .await,
            Ok(Ok(_))
        )
    };
    create(make("alphas")).await?;
    wait_for("alphas to be served", Duration::from_secs(2), || {
        served("alphas")
    })
    .await?;
    create(make("betas")).await?;
    let path = format!("{crds}/betas.conflict.example.org");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let got = loop {
        let v = s.get(&path).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if v["status"]["conditions"]
            .as_array()
            .is_some_and(|c| !c.is_empty())
        {
            break v;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "betas' names were not looked at: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let conds = &got["status"]["conditions"];
    assert_eq!(conds[0]["type"], "NamesAccepted", "{got}");
    assert_eq!(conds[0]["status"], "False");
    assert_eq!(conds[0]["reason"], "ListKindConflict");
    assert_eq!(conds[0]["message"], "\"AlphaList\" is already in use");
    assert_eq!(conds[1]["type"], "Established");
    assert_eq!(conds[1]["status"], "False");
    assert_eq!(conds[1]["reason"], "NotAccepted");
    assert_eq!(got["status"]["acceptedNames"]["plural"], "betas");
    assert_eq!(got["status"]["acceptedNames"]["kind"], "");
    assert!(!served("betas").await);
    // The holder goes: betas get their names and are served.
    s.call(
        "DELETE",
        &format!("{crds}/alphas.conflict.example.org"),
        "application/json",
        None,
        None,
    )
    .await?
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    wait_for("betas to be served", Duration::from_secs(5), || {
        served("betas")
    })
    .await?;
    let got = s.get(&path).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(got["status"]["conditions"][0]["status"], "True", "{got}");
    assert_eq!(got["status"]["acceptedNames"]["kind"], "Alpha");
    // An established CRD asking for a taken short name (its own plural) keeps being served
    // under the names it has: discovery does not show the new short name.
    s.call(
        "PATCH",
        &path,
        "application/merge-patch+json",
        None,
        Some(json!({"spec": {"names": {"shortNames": ["betas"]}}})),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let got = loop {
        let v = s.get(&path).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if v["status"]["conditions"][0]["status"] == "False" {
            break v;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the short name conflict was not noticed: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        got["status"]["conditions"][0]["reason"],
        "ShortNamesConflict"
    );
    assert_eq!(
        got["status"]["conditions"][0]["message"],
        "\"betas\" is already in use"
    );
    assert_eq!(got["status"]["conditions"][1]["status"], "True", "{got}");
    assert!(
        got["status"]["acceptedNames"].get("shortNames").is_none(),
        "{got}"
    );
    assert!(served("betas").await);
    let disco = s
        .get("/apis/conflict.example.org/v1")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let betas = disco["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "betas"))
        .cloned()
        .context("betas in discovery")?;
    assert!(
        betas.get("shortNames").is_none_or(|n| n == &json!([])),
        "{betas}"
    );
    s.call("DELETE", &path, "application/json", None, None)
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    wait_for("betas to go", Duration::from_secs(5), || async {
        !served("betas").await
    })
    .await?;
    Ok(())
}

async fn crd_status_and_discovery(s: &TestServer, crd: &Value) -> Result<()> {
    let conds = crd["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for t in ["NamesAccepted", "Established"] {
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == t && c["status"] == "True"),
            "{t} in {conds:?}"
        );
    }
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget");
    assert_eq!(crd["status"]["acceptedNames"]["listKind"], "WidgetList");
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    // The naming controller's status write is managed by kube-apiserver, as upstream's
    // (whose controllers write through a loopback client).
    let managers: Vec<(String, String)> = crd["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["manager"].as_str().unwrap_or("").to_string(),
                e["subresource"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        managers.contains(&("kube-apiserver".into(), "status".into())),
        "{managers:?}"
    );
    // So are the bootstrap roles.
    let view = s
        .get("/apis/rbac.authorization.k8s.io/v1/clusterroles/view")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(
        view["metadata"]["managedFields"][0]["manager"],
        "kube-apiserver"
    );

    let groups = s
        .get("/apis")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let g = groups["groups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["name"] == "example.com"))
        .cloned()
        .context("example.com in /apis")?;
    assert_eq!(g["preferredVersion"]["version"], "v1");
    let group = s
        .get("/apis/example.com")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(group["versions"].as_array().map(Vec::len), Some(2));
    let list = s
        .get("/apis/example.com/v1")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["widgets", "widgets/scale", "widgets/status"]);
    let r = &list["resources"][0];
    assert_eq!(r["shortNames"], json!(["wd"]));
    assert_eq!(r["categories"], json!(["all"]));
    assert_eq!(r["singularName"], "widget");
    assert_eq!(r["namespaced"], true);
    assert_eq!(r["kind"], "Widget");
    assert!(r["verbs"]
        .as_array()
        .is_some_and(|v| v.contains(&json!("deletecollection"))));
    let agg = s
        .call(
            "GET",
            "/apis",
            "application/json",
            Some("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
            None,
        )
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let item = agg["items"]
        .as_array()
        .and_then(|is| is.iter().find(|i| i["metadata"]["name"] == "example.com"))
        .cloned()
        .context("example.com in aggregated discovery")?;
    assert_eq!(item["versions"][0]["version"], "v1");
    assert_eq!(
        item["versions"][0]["resources"][0]["shortNames"],
        json!(["wd"])
    );
    // The CRD kind itself is discoverable with its short names.
    let ext = s
        .get("/apis/apiextensions.k8s.io/v1")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(ext["resources"][0]["shortNames"], json!(["crd", "crds"]));
    Ok(())
}

async fn crud_watch_and_selectors(s: &TestServer) -> Result<()> {
    let api = widgets_api(&s.client, "v1");
    let mut watch = api
        .watch(&WatchParams::default().timeout(10), "0")
        .await?
        .boxed();
    let created = s
        .call(
            "POST",
            WIDGETS,
            "application/json",
            None,
            Some(widget("a", json!({"size": "small", "color": "pruned"}))),
        )
        .await?
        .map_err(|e| anyhow::anyhow!("create: {e:?}"))?;
    // Defaulted and pruned.
    assert_eq!(created["spec"], json!({"size": "small", "replicas": 1}));
    loop {
        match tokio::time::timeout(Duration::from_secs(1), watch.try_next()).await?? {
            Some(WatchEvent::Added(o)) if o.metadata.name.as_deref() == Some("a") => break,
            Some(WatchEvent::Added(_)) => {}
            other => anyhow::bail!("expected ADDED, got {other:?}"),
        }
    }
    api.create(
        &PostParams::default(),
        &serde_json::from_value(widget("b", json!({"size": "large", "replicas": 3})))?,
    )
    .await?;
    let got = api.get("b").await?;
    assert_eq!(got.data["spec"]["replicas"], 3);
    // Label and field selectors.
    let by_label = api.list(&ListParams::default().labels("app=b")).await?;
    assert_eq!(by_label.items.len(), 1);
    let by_field = api
        .list(&ListParams::default().fields("metadata.name=a"))
        .await?;
    assert_eq!(by_field.items.len(), 1);
    assert_eq!(by_field.items[0].metadata.name.as_deref(), Some("a"));
    let ns_field = api
        .list(&ListParams::default().fields("metadata.namespace=default"))
        .await?;
    let all = api.list(&ListParams::default()).await?;
    assert!(ns_field.items.len() >= 2);
    assert_eq!(ns_field.items.len(), all.items.len());
    // Update (PUT) and patches.
    let mut b = api.get("b").await?;
    b.data["spec"]["size"] = json!("small");
    let b = api.replace("b", &PostParams::default(), &b).await?;
    assert_eq!(b.data["spec"]["size"], "small");
    assert_eq!(b.metadata.generation, Some(2));
    let p = api
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await?;
    assert_eq!(p.data["spec"]["replicas"], 4);
    let p = api
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Json::<()>(serde_json::from_value(
                json!([{"op": "replace", "path": "/spec/size", "value": "large"}]),
            )?),
        )
        .await?;
    assert_eq!(p.data["spec"]["size"], "large");
    match s
        .call(
            "PATCH",
            &format!("{WIDGETS}/b"),
            "application/strategic-merge-patch+json",
            None,
            Some(json!({"spec": {"replicas": 5}})),
        )
        .await?
    {
        Err((415, _, msg)) => assert_eq!(
            msg,
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        ),
        other => anyhow::bail!("strategic merge patch on a CR: {other:?}"),
    }
    // The watch saw the changes.
    let mut modified = 0;
    while modified < 3 {
        match tokio::time::timeout(Duration::from_secs(1), watch.try_next()).await?? {
            Some(WatchEvent::Modified(_)) => modified += 1,
            Some(WatchEvent::Added(_) | WatchEvent::Bookmark(_)) => {}
            other => anyhow::bail!("unexpected watch event {other:?}"),
        }
    }
    Ok(())
}

async fn schema_validation(s: &TestServer) -> Result<()> {
    let cases = [
        (
            widget("bad", json!({"size": "small", "replicas": "three"})),
            "Widget.example.com \"bad\" is invalid: spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
        ),
        (
            widget("bad", json!({"size": "medium", "replicas": -1})),
            "Widget.example.com \"bad\" is invalid: [spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0, spec.size: Unsupported value: \"medium\": supported values: \"small\", \"large\"]",
        ),
        (
            widget("bad", json!({})),
            "Widget.example.com \"bad\" is invalid: spec.size: Required value",
        ),
    ];
    for (obj, want) in cases {
        match s
            .call("POST", WIDGETS, "application/json", None, Some(obj))
            .await?
        {
            Err((code, reason, msg)) => {
                assert_eq!((code, reason.as_str()), (422, "Invalid"));
                assert_eq!(msg, want);
            }
            Ok(v) => anyhow::bail!("invalid widget created: {v}"),
        }
    }
    match s
        .call(
            "POST",
            &format!("{WIDGETS}?fieldValidation=Strict"),
            "application/json",
            None,
            Some(widget("strict", json!({"size": "small", "colour": "x"}))),
        )
        .await?
    {
        Err((code, _, msg)) => {
            assert_eq!(code, 400);
            assert_eq!(msg, "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.colour\"");
        }
        Ok(v) => anyhow::bail!("strict create accepted an unknown field: {v}"),
    }
    // The CRD itself is validated with upstream's wording.
    let mut bad = widget_crd();
    bad["metadata"]["name"] = json!("gadgets.example.com");
    bad["spec"]["versions"][0]["storage"] = json!(true);
    match s
        .call(
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            "application/json",
            None,
            Some(bad),
        )
        .await?
    {
        Err((422, _, msg)) => {
            assert!(msg.starts_with("CustomResourceDefinition.apiextensions.k8s.io \"gadgets.example.com\" is invalid: ["), "{msg}");
            assert!(msg.contains("metadata.name: Invalid value: \"gadgets.example.com\": must be spec.names.plural+\".\"+spec.group"), "{msg}");
            assert!(
                msg.contains(": must have exactly one version marked as storage version"),
                "{msg}"
            );
        }
        other => anyhow::bail!("invalid CRD: {other:?}"),
    }
    Ok(())
}

async fn subresources_tables_and_versions(s: &TestServer) -> Result<()> {
    let api = widgets_api(&s.client, "v1");
    // status is ignored on the main resource and written through /status.
    let mut a = api.get("a").await?;
    a.data["status"] = json!({"replicas": 7});
    a.data["spec"]["replicas"] = json!(2);
    let a = api.replace("a", &PostParams::default(), &a).await?;
    assert_eq!(a.data.get("status"), None);
    let st = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"replicas": 2, "selector": "app=a"}, "spec": {"replicas": 9}}),
            ),
        )
        .await?;
    assert_eq!(st.data["status"]["replicas"], 2);
    assert_eq!(st.data["spec"]["replicas"], 2);
    // scale: reads spec/status replicas and the selector, writes spec.replicas.
    let scale = s
        .get(&format!("{WIDGETS}/a/scale"))
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"], json!({"replicas": 2, "selector": "app=a"}));
    let scaled = s
        .call(
            "PATCH",
            &format!("{WIDGETS}/a/scale"),
            "application/merge-patch+json",
            None,
            Some(json!({"spec": {"replicas": 5}})),
        )
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(scaled["spec"]["replicas"], 5);
    assert_eq!(api.get("a").await?.data["spec"]["replicas"], 5);
    // Table with the printer columns.
    let t = s
        .call(
            "GET",
            WIDGETS,
            "application/json",
            Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
            None,
        )
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(cols, ["Name", "Replicas", "Size", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "a");
    assert_eq!(t["rows"][0]["cells"][1], 5);
    assert_eq!(t["rows"][0]["cells"][2], "small");
    // Dates are printed as ages.
    assert!(
        t["rows"][0]["cells"][3]
            .as_str()
            .is_some_and(|a| a.ends_with('s') && a.len() <= 3),
        "{}",
        t["rows"][0]["cells"][3]
    );
    // v1beta1 serves the same objects (conversion None: apiVersion rewritten), with the
    // default Name/Age table.
    let beta = widgets_api(&s.client, "v1beta1");
    let b = beta.get("b").await?;
    assert_eq!(
        b.types.as_ref().map(|t| t.api_version.as_str()),
        Some("example.com/v1beta1")
    );
    beta.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"apiVersion": "example.com/v1beta1", "kind": "Widget",
            "metadata": {"name": "c"}, "spec": {"size": "large", "free": {"form": true}}}),
        )?,
    )
    .await?;
    let c = api.get("c").await?;
    assert_eq!(
        c.types.as_ref().map(|t| t.api_version.as_str()),
        Some("example.com/v1")
    );
    let t = s
        .call(
            "GET",
            "/apis/example.com/v1beta1/namespaces/default/widgets",
            "application/json",
            Some("application/json;as=Table;v=v1;g=meta.k8s.io"),
            None,
        )
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .map(|c| c.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(cols, ["Name", "Age"]);
    // deletecollection by label.
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=b"),
    )
    .await?;
    wait_for("b deleted", Duration::from_secs(2), || async {
        api.get_opt("b").await.ok().flatten().is_none()
    })
    .await?;
    Ok(())
}

/// Each served version gets an OpenAPI v3 document, named and shaped as upstream's (what
/// `kubectl explain` reads); it goes with the CRD.
async fn openapi_documents(s: &TestServer) -> Result<()> {
    let get =
        |p: &'static str| async move { s.get(p).await?.map_err(|e| anyhow::anyhow!("{p}: {e:?}")) };
    let index = get("/openapi/v3").await?;
    for gv in ["apis/example.com/v1", "apis/example.com/v1beta1"] {
        let url = index["paths"][gv]["serverRelativeURL"]
            .as_str()
            .unwrap_or("");
        assert!(
            url.starts_with(&format!("/openapi/v3/{gv}?hash=")),
            "{gv}: {url}"
        );
    }
    assert!(index["paths"]["apis/apps/v1"].is_object());
    let doc = get("/openapi/v3/apis/example.com/v1").await?;
    let schemas = &doc["components"]["schemas"];
    let w = &schemas["com.example.v1.Widget"];
    assert_eq!(
        w["x-kubernetes-group-version-kind"],
        json!([{"group": "example.com", "version": "v1", "kind": "Widget"}])
    );
    assert_eq!(
        w["properties"]["spec"]["properties"]["size"]["enum"],
        json!(["small", "large"])
    );
    assert_eq!(
        w["properties"]["metadata"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"].is_object());
    assert!(schemas["io.k8s.apimachinery.pkg.apis.meta.v1.ManagedFieldsEntry"].is_object());
    assert_eq!(
        schemas["com.example.v1.WidgetList"]["properties"]["items"]["items"]["$ref"],
        "#/components/schemas/com.example.v1.Widget"
    );
    // The PATCH operation takes fieldValidation, and no strategic merge patch.
    let patch =
        &doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"];
    assert!(
        patch["parameters"].to_string().contains("fieldValidation"),
        "{patch}"
    );
    assert!(
        !patch["requestBody"].to_string().contains("strategic"),
        "{patch}"
    );
    let old = get("/openapi/v3/apis/example.com/v1beta1").await?;
    assert_eq!(
        old["components"]["schemas"]["com.example.v1beta1.Widget"]
            ["x-kubernetes-preserve-unknown-fields"],
        true
    );

    // OpenAPI v2 has them too, in v2 form: `#/definitions/` references, ObjectMeta and
    // ListMeta defined, the paths of every served version.
    let v2 = get("/openapi/v2").await?;
    let defs = &v2["definitions"];
    let w = &defs["com.example.v1.Widget"];
    assert_eq!(
        w["x-kubernetes-group-version-kind"],
        json!([{"group": "example.com", "version": "v1", "kind": "Widget"}])
    );
    assert_eq!(
        w["properties"]["metadata"]["$ref"],
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    );
    assert_eq!(
        defs["com.example.v1.WidgetList"]["properties"]["items"]["items"]["$ref"],
        "#/definitions/com.example.v1.Widget"
    );
    assert!(defs["io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"].is_object());
    assert!(defs["com.example.v1beta1.Widget"].is_object());
    assert!(
        v2["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["get"]
            .is_object()
    );
    // The protobuf form names them as well.
    let req = http::Request::get("/openapi/v2")
        .header(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(Vec::new())?;
    let resp = s.client.send(req.map(kube::client::Body::from)).await?;
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
    );
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    assert!(
        body.windows(22).any(|w| w == b"com.example.v1.Widget\x12"),
        "the protobuf document has no com.example.v1.Widget definition"
    );
    Ok(())
}

async fn crd_delete_removes_objects(s: &TestServer) -> Result<()> {
    let api = widgets_api(&s.client, "v1");
    assert!(!api.list(&ListParams::default()).await?.items.is_empty());
    s.call(
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        "application/json",
        None,
        None,
    )
    .await?
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    wait_for("the CRD to go", Duration::from_secs(10), || async {
        matches!(
            s.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
                .await,
            Ok(Err((404, _, _)))
        )
    })
    .await?;
    wait_for(
        "widgets to stop being served",
        Duration::from_secs(2),
        || async { matches!(s.get(WIDGETS).await, Ok(Err((404, _, _)))) },
    )
    .await?;
    let apis = s
        .get("/apis")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(!apis.to_string().contains("example.com\""));
    let index = s
        .get("/openapi/v3")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(index["paths"]["apis/example.com/v1"].is_null(), "{index}");
    assert!(matches!(
        s.get("/openapi/v3/apis/example.com/v1").await,
        Ok(Err((404, _, _)))
    ));
    let v2 = s
        .get("/openapi/v2")
        .await?
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(v2["definitions"]["com.example.v1.Widget"].is_null());
    // A new CRD of the same name starts empty: the objects went with the old one.
    create_crd(s).await?;
    assert!(api.list(&ListParams::default()).await?.items.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_embedded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(dir.path(), None).await?;
    let crd = create_crd(&s).await?;
    crd_status_and_discovery(&s, &crd).await?;
    crud_watch_and_selectors(&s).await?;
    schema_validation(&s).await?;
    subresources_tables_and_versions(&s).await?;
    openapi_documents(&s).await?;
    name_conflicts(&s).await?;
    crd_delete_removes_objects(&s).await?;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_are_served_after_a_restart() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = TestServer::start_in(dir.path(), None).await?;
    create_crd(&s).await?;
    widgets_api(&s.client, "v1")
        .create(
            &PostParams::default(),
            &serde_json::from_value(widget("kept", json!({"size": "small"})))?,
        )
        .await?;
    s.stop().await?;
    let s = TestServer::start_in(dir.path(), None).await?;
    // Served as soon as the server is up: no wait.
    let got = widgets_api(&s.client, "v1").get("kept").await?;
    assert_eq!(got.data["spec"]["replicas"], 1);
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_on_etcd_across_api_servers() -> Result<()> {
    let etcd = support::etcd::TestEtcd::start().await;
    let (d1, d2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = TestServer::start_in(d1.path(), Some(&etcd.endpoint)).await?;
    let b = TestServer::start_in(d2.path(), Some(&etcd.endpoint)).await?;
    let crd = create_crd(&a).await?;
    crd_status_and_discovery(&a, &crd).await?;
    // The other server picks the CRD up through its watch.
    wait_for("b to serve widgets", Duration::from_secs(1), || async {
        matches!(b.get(WIDGETS).await, Ok(Ok(_)))
    })
    .await?;
    widgets_api(&b.client, "v1")
        .create(
            &PostParams::default(),
            &serde_json::from_value(widget("shared", json!({"size": "large"})))?,
        )
        .await?;
    let got = widgets_api(&a.client, "v1").get("shared").await?;
    assert_eq!(got.data["spec"]["size"], "large");
    crud_watch_and_selectors(&a).await?;
    crd_delete_removes_objects(&a).await?;
    wait_for(
        "b to serve the new, empty widgets",
        Duration::from_secs(2),
        || async {
            widgets_api(&b.client, "v1")
                .list(&ListParams::default())
                .await
                .is_ok_and(|l| l.items.is_empty())
        },
    )
    .await?;
    a.stop().await?;
    b.stop().await
}
