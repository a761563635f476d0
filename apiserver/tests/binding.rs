//! `pods/<name>/binding` and `bindings`: upstream BindingREST semantics over the real server.

use anyhow::Result;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

async fn post(client: &Client, path: &str, body: Value) -> Result<(u16, Value)> {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body)?)?;
    let res = client.send(req.map(kube::client::Body::from)).await?;
    let code = res.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await?
        .to_bytes();
    Ok((code, serde_json::from_slice(&bytes)?))
}

async fn get(client: &Client, path: &str) -> Result<Value> {
    let req = http::Request::get(path).body(Vec::new())?;
    Ok(client.request::<Value>(req).await?)
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    }))
    .unwrap_or_default()
}

fn binding(name: &str, node: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
           "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_assigns_pods_like_upstream() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let server = apiserver::start(
        apiserver::Config::for_test(dir.path().into()),
        shutdown.clone(),
    )
    .await?;
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "b"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "b");
    let p1 = pods.create(&PostParams::default(), &pod("p1")).await?;

    // pods/binding: 201 with a Success Status; nodeName and PodScheduled=True set.
    let (code, status) = post(
        &client,
        "/api/v1/namespaces/b/pods/p1/binding",
        binding("p1", "node-1"),
    )
    .await?;
    assert_eq!(code, 201, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Success");
    assert_eq!(status["code"], 201);
    let got = pods.get("p1").await?;
    assert_eq!(
        got.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("node-1")
    );
    let cond = got
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| c.status);
    assert_eq!(cond.as_deref(), Some("True"));

    // Already assigned: 409 with upstream's message.
    let (code, status) = post(
        &client,
        "/api/v1/namespaces/b/pods/p1/binding",
        binding("p1", "node-2"),
    )
    .await?;
    assert_eq!(code, 409);
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(
        status["message"],
        "Operation cannot be fulfilled on pods/binding \"p1\": pod p1 is already assigned to node \"node-1\""
    );
    let _ = p1;

    // The namespaced bindings resource takes the pod's name from the body.
    let p2 = pods.create(&PostParams::default(), &pod("p2")).await?;
    let (code, _) = post(
        &client,
        "/api/v1/namespaces/b/bindings",
        binding("p2", "node-2"),
    )
    .await?;
    assert_eq!(code, 201);
    let got = pods.get("p2").await?;
    assert_eq!(
        got.spec.and_then(|s| s.node_name).as_deref(),
        Some("node-2")
    );
    let _ = p2;

    // A uid precondition that does not match is a Conflict and changes nothing.
    pods.create(&PostParams::default(), &pod("p3")).await?;
    let mut b = binding("p3", "node-1");
    b["metadata"]["uid"] = json!("not-the-uid");
    let (code, status) = post(&client, "/api/v1/namespaces/b/pods/p3/binding", b).await?;
    assert_eq!(code, 409, "{status}");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("Precondition failed: UID in precondition: not-the-uid")),
        "{status}"
    );
    // A stale resourceVersion precondition too.
    let p3 = pods.get("p3").await?;
    let mut b = binding("p3", "node-1");
    b["metadata"]["resourceVersion"] = json!("1");
    let (code, _) = post(&client, "/api/v1/namespaces/b/pods/p3/binding", b).await?;
    assert_eq!(code, 409);
    assert_eq!(pods.get("p3").await?.spec.and_then(|s| s.node_name), None);
    // The right uid binds.
    let mut b = binding("p3", "node-1");
    b["metadata"]["uid"] = json!(p3.metadata.uid);
    let (code, _) = post(&client, "/api/v1/namespaces/b/pods/p3/binding", b).await?;
    assert_eq!(code, 201);

    // Name mismatch, missing target, unknown pod.
    let (code, status) = post(
        &client,
        "/api/v1/namespaces/b/pods/p3/binding",
        binding("other", "n"),
    )
    .await?;
    assert_eq!(code, 400);
    assert_eq!(
        status["message"],
        "name in URL does not match name in Binding object"
    );
    let (code, _) = post(
        &client,
        "/api/v1/namespaces/b/pods/p4/binding",
        json!({"metadata": {"name": "p4"}, "target": {}}),
    )
    .await?;
    assert_eq!(code, 422);
    let (code, status) = post(
        &client,
        "/api/v1/namespaces/b/pods/nope/binding",
        binding("nope", "n"),
    )
    .await?;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["message"], "pods \"nope\" not found");

    // Discovery lists pods/binding and bindings, create only.
    let v1 = get(&client, "/api/v1").await?;
    let find = |n: &str| {
        v1["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["name"] == n).cloned())
    };
    let pb = find("pods/binding").unwrap_or_default();
    assert_eq!(pb["kind"], "Binding");
    assert_eq!(pb["verbs"], json!(["create"]));
    assert_eq!(pb.get("group"), None);
    let bs = find("bindings").unwrap_or_default();
    assert_eq!(bs["verbs"], json!(["create"]));
    assert_eq!(bs["namespaced"], true);

    shutdown.cancel();
    server.wait().await?;
    Ok(())
}
