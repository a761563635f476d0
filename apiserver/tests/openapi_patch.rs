//! Strategic merge patch and the OpenAPI documents, through the real server on 127.0.0.1:0.

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

async fn get_json(client: &Client, path: &str, accept: &str) -> Result<Value> {
    let req = http::Request::get(path)
        .header("accept", accept)
        .body(Vec::new())?;
    Ok(serde_json::from_str(&client.request_text(req).await?)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategic_merge_patch_and_openapi_documents() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let server = apiserver::start(
        apiserver::Config::for_test(dir.path().to_path_buf()),
        shutdown.clone(),
    )
    .await?;
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;

    // Containers merge by name, ports by containerPort; $patch: delete removes by key.
    let deps: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}]},
                    {"name": "log", "image": "busybox"}
                ]}
            }
        }
    }))?;
    deps.create(&PostParams::default(), &d).await?;
    let p = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "log"}],
        "containers": [{"name": "web", "image": "nginx:2", "ports": [{"containerPort": 443}]}]
    }}}});
    let got = deps
        .patch("web", &PatchParams::default(), &Patch::Strategic(&p))
        .await?;
    let v = serde_json::to_value(&got)?;
    let cs = &v["spec"]["template"]["spec"]["containers"];
    assert_eq!(cs[0]["image"], "nginx:2");
    assert_eq!(cs[1]["name"], "log");
    let ports: Vec<i64> = cs[0]["ports"]
        .as_array()
        .context("ports")?
        .iter()
        .filter_map(|p| p["containerPort"].as_i64())
        .collect();
    assert_eq!(ports, [443, 80]);
    let p = json!({"spec": {"template": {"spec": {"containers": [{"name": "log", "$patch": "delete"}]}}}});
    let got = deps
        .patch("web", &PatchParams::default(), &Patch::Strategic(&p))
        .await?;
    assert_eq!(
        got.spec
            .context("spec")?
            .template
            .spec
            .context("pod spec")?
            .containers
            .len(),
        1
    );
    // A bad directive is a 400, the object unchanged.
    let p = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}});
    match deps
        .patch("web", &PatchParams::default(), &Patch::Strategic(&p))
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 400, "{}", s.message),
        other => anyhow::bail!("expected a 400, got {other:?}"),
    }
    // Null deletes a field (kubectl uncordon).
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "n1"}}))?,
        )
        .await?;
    let cordon = json!({"spec": {"unschedulable": true}});
    let n = nodes
        .patch("n1", &PatchParams::default(), &Patch::Strategic(&cordon))
        .await?;
    assert_eq!(n.spec.as_ref().and_then(|s| s.unschedulable), Some(true));
    let uncordon = json!({"spec": {"unschedulable": null}});
    let n = nodes
        .patch("n1", &PatchParams::default(), &Patch::Strategic(&uncordon))
        .await?;
    assert_eq!(n.spec.as_ref().and_then(|s| s.unschedulable), None);

    // OpenAPI v3: the index names each group-version with a hash; the document holds the
    // schemas with the x-kubernetes-* extensions kubectl reads.
    let index = get_json(&client, "/openapi/v3", "application/json").await?;
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .context("apps/v1 in the index")?
        .to_string();
    let doc = get_json(&client, &url, "application/json").await?;
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    let patch_op =
        &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert!(
        patch_op["requestBody"]["content"]["application/strategic-merge-patch+json"].is_object()
    );
    assert!(patch_op["parameters"]
        .as_array()
        .context("parameters")?
        .iter()
        .any(|p| p["name"] == "fieldValidation"));

    // OpenAPI v2 as JSON, and as gnostic protobuf (what client-go's OpenAPISchema asks for).
    let v2 = get_json(&client, "/openapi/v2", "application/json").await?;
    assert_eq!(v2["swagger"], "2.0");
    assert_eq!(
        v2["definitions"]["io.k8s.api.core.v1.Pod"]["properties"]["spec"]["$ref"],
        "#/definitions/io.k8s.api.core.v1.PodSpec"
    );
    let req = http::Request::get("/openapi/v2")
        .header(
            "accept",
            "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
        )
        .body(Vec::new())?;
    let resp = client.send(req.map(kube::client::Body::from)).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
    );
    let pb = http_body_util::BodyExt::collect(resp.into_body())
        .await?
        .to_bytes();
    // Document.swagger = 1 "2.0", then info = 2 { title = 1 "Kubernetes", ... }.
    assert_eq!(&pb[..7], &[0x0a, 3, b'2', b'.', b'0', 0x12, 21]);
    assert!(pb.windows(23).any(|w| w == b"io.k8s.api.core.v1.Pod\x12"));
    // Neither JSON nor protobuf: 406 naming both.
    let req = http::Request::get("/openapi/v2")
        .header("accept", "application/xml")
        .body(Vec::new())?;
    match client.request_text(req).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 406);
            assert!(
                s.message
                    .contains("application/com.github.proto-openapi.spec.v2@v1.0+protobuf"),
                "{}",
                s.message
            );
        }
        other => anyhow::bail!("expected a 406, got {other:?}"),
    }

    shutdown.cancel();
    server.wait().await?;
    Ok(())
}
