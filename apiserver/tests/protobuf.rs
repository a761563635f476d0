//! Protobuf request bodies over real HTTPS: what kubectl's typed clients send.

use std::time::Duration;

use anyhow::{Context, Result};
use http_body_util::BodyExt;
use k8s_pb::api::{apps::v1 as apps, autoscaling::v1 as autoscaling, core::v1 as core};
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime as rt;
use kube::Client;
use prost::Message as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

fn s(v: &str) -> Option<String> {
    Some(v.to_string())
}

/// `k8s\0` + runtime.Unknown, as client-go's protobuf serializer writes it.
fn envelope(api_version: &str, kind: &str, obj: &impl prost::Message) -> Vec<u8> {
    let unk = rt::Unknown {
        type_meta: Some(rt::TypeMeta {
            api_version: s(api_version),
            kind: s(kind),
        }),
        raw: Some(obj.encode_to_vec()),
        content_encoding: s(""),
        content_type: s(""),
    };
    [b"k8s\0".as_slice(), &unk.encode_to_vec()].concat()
}

fn object_meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: s(name),
        namespace: s(""),
        generate_name: s(""),
        creation_timestamp: Some(meta::Time::default()),
        labels: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    })
}

/// The Deployment `kubectl create deployment web --image=nginx --replicas=2` sends.
fn deployment(name: &str) -> apps::Deployment {
    apps::Deployment {
        metadata: object_meta(name),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                match_expressions: vec![],
            }),
            template: Some(core::PodTemplateSpec {
                metadata: object_meta(""),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: s("nginx"),
                        image: s("nginx"),
                        resources: Some(core::ResourceRequirements::default()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy::default()),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    }
}

struct Reply {
    code: u16,
    content_type: String,
    body: Value,
}

async fn send(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    accept: Option<&str>,
    body: Vec<u8>,
) -> Result<Reply> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = client
        .send(req.body(kube::client::Body::from(body))?)
        .await?;
    let code = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let body = serde_json::from_slice(&bytes).with_context(|| format!("{bytes:?}"))?;
    Ok(Reply {
        code,
        content_type,
        body,
    })
}

/// What the two creation paths may differ in: the object's identity.
fn without_identity(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "name",
            "uid",
            "resourceVersion",
            "creationTimestamp",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_bodies_over_https() -> Result<()> {
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

    // `kubectl create namespace pb`: protobuf in, JSON out, even when protobuf is preferred.
    let ns = core::Namespace {
        metadata: Some(meta::ObjectMeta {
            name: s("pb"),
            ..Default::default()
        }),
        spec: Some(core::NamespaceSpec::default()),
        status: Some(core::NamespaceStatus::default()),
    };
    let r = send(
        &client,
        "POST",
        "/api/v1/namespaces",
        PROTOBUF,
        Some("application/vnd.kubernetes.protobuf, */*"),
        envelope("v1", "Namespace", &ns),
    )
    .await?;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.content_type, "application/json");
    assert_eq!(r.body["metadata"]["name"], "pb");
    assert_eq!(r.body["status"]["phase"], "Active", "defaulted like JSON");

    // A protobuf Deployment is stored exactly as its JSON twin is.
    let r = send(
        &client,
        "POST",
        "/apis/apps/v1/namespaces/pb/deployments",
        PROTOBUF,
        Some("application/json, */*"),
        envelope("apps/v1", "Deployment", &deployment("from-pb")),
    )
    .await?;
    assert_eq!(r.code, 201, "{}", r.body);
    let from_pb = r.body;
    let twin = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "from-json", "creationTimestamp": null, "labels": {"app": "web"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]},
            },
            "strategy": {},
        },
        "status": {},
    });
    let r = send(
        &client,
        "POST",
        "/apis/apps/v1/namespaces/pb/deployments",
        "application/json",
        None,
        serde_json::to_vec(&twin)?,
    )
    .await?;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(without_identity(from_pb.clone()), without_identity(r.body));

    // Malformed protobuf: 400 with upstream's wording, nothing stored.
    let mut truncated = envelope("v1", "ConfigMap", &core::ConfigMap::default());
    truncated.truncate(truncated.len() - 1);
    for (body, want) in [
        (
            b"not protobuf".to_vec(),
            "provided data does not appear to be a protobuf message",
        ),
        (truncated, "unexpected EOF"),
        (
            envelope("v1", "Gizmo", &core::ConfigMap::default()),
            "no kind \"Gizmo\" is registered",
        ),
    ] {
        let r = send(
            &client,
            "POST",
            "/api/v1/namespaces/pb/configmaps",
            PROTOBUF,
            None,
            body,
        )
        .await?;
        assert_eq!(r.code, 400, "{}", r.body);
        assert_eq!(r.body["reason"], "BadRequest");
        let msg = r.body["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{msg}");
    }
    // A protobuf object of another kind than the URL's: the JSON path's error.
    let r = send(
        &client,
        "POST",
        "/api/v1/namespaces/pb/configmaps",
        PROTOBUF,
        None,
        envelope("v1", "Namespace", &ns),
    )
    .await?;
    let as_json = send(
        &client,
        "POST",
        "/api/v1/namespaces/pb/configmaps",
        "application/json",
        None,
        br#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"pb"},"spec":{},"status":{}}"#
            .to_vec(),
    )
    .await?;
    assert_eq!(r.code, 400, "{}", r.body);
    assert_eq!(r.body, as_json.body);

    // Updates: a protobuf ConfigMap replaces the JSON one; a protobuf Scale scales.
    let r = send(
        &client,
        "POST",
        "/api/v1/namespaces/pb/configmaps",
        "application/json",
        None,
        br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"a":"1"}}"#
            .to_vec(),
    )
    .await?;
    assert_eq!(r.code, 201, "{}", r.body);
    let cm = core::ConfigMap {
        metadata: Some(meta::ObjectMeta {
            name: s("cfg"),
            resource_version: r.body["metadata"]["resourceVersion"]
                .as_str()
                .map(String::from),
            ..Default::default()
        }),
        data: [("a".to_string(), "2".to_string())].into(),
        ..Default::default()
    };
    let r = send(
        &client,
        "PUT",
        "/api/v1/namespaces/pb/configmaps/cfg",
        PROTOBUF,
        None,
        envelope("v1", "ConfigMap", &cm),
    )
    .await?;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["data"], json!({"a": "2"}));
    let scale = autoscaling::Scale {
        metadata: Some(meta::ObjectMeta {
            name: s("from-json"),
            ..Default::default()
        }),
        spec: Some(autoscaling::ScaleSpec { replicas: Some(5) }),
        status: None,
    };
    let r = send(
        &client,
        "PUT",
        "/apis/apps/v1/namespaces/pb/deployments/from-json/scale",
        PROTOBUF,
        None,
        envelope("autoscaling/v1", "Scale", &scale),
    )
    .await?;
    assert_eq!(r.code, 200, "{}", r.body);
    assert_eq!(r.body["spec"]["replicas"], 5);

    // An Accept without JSON or a wildcard cannot be served.
    let r = send(
        &client,
        "GET",
        "/apis/apps/v1/namespaces/pb/deployments/from-pb",
        "application/json",
        Some(PROTOBUF),
        vec![],
    )
    .await?;
    assert_eq!(r.code, 406, "{}", r.body);

    // Protobuf DeleteOptions: dryRun keeps the object, a wrong uid precondition is a 409,
    // then the real delete.
    let path = "/apis/apps/v1/namespaces/pb/deployments/from-pb";
    let opts = |dry_run: bool, uid: Option<&str>| meta::DeleteOptions {
        grace_period_seconds: Some(0),
        preconditions: uid.map(|u| meta::Preconditions {
            uid: s(u),
            resource_version: None,
        }),
        propagation_policy: s("Background"),
        dry_run: if dry_run { vec!["All".into()] } else { vec![] },
        ..Default::default()
    };
    let r = send(
        &client,
        "DELETE",
        path,
        PROTOBUF,
        None,
        envelope("v1", "DeleteOptions", &opts(true, None)),
    )
    .await?;
    assert_eq!(r.code, 200, "{}", r.body);
    let r = send(&client, "GET", path, "application/json", None, vec![]).await?;
    assert_eq!(r.code, 200, "dry run deleted it: {}", r.body);
    let r = send(
        &client,
        "DELETE",
        path,
        PROTOBUF,
        None,
        envelope(
            "meta.k8s.io/v1",
            "DeleteOptions",
            &opts(false, Some("wrong")),
        ),
    )
    .await?;
    assert_eq!(r.code, 409, "{}", r.body);
    let uid = from_pb["metadata"]["uid"].as_str().unwrap_or_default();
    let r = send(
        &client,
        "DELETE",
        path,
        PROTOBUF,
        None,
        envelope("apps/v1", "DeleteOptions", &opts(false, Some(uid))),
    )
    .await?;
    assert_eq!(r.code, 200, "{}", r.body);
    let r = send(&client, "GET", path, "application/json", None, vec![]).await?;
    assert_eq!(r.code, 404, "{}", r.body);
    // A malformed DeleteOptions body is a 400 too.
    let r = send(
        &client,
        "DELETE",
        "/apis/apps/v1/namespaces/pb/deployments/from-json",
        PROTOBUF,
        None,
        b"k8s\0\x0a\xff".to_vec(),
    )
    .await?;
    assert_eq!(r.code, 400, "{}", r.body);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), server.wait()).await??;
    Ok(())
}
