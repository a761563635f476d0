//! The simulated runtime: several nodes in one kubelet, pods Running/Ready without
//! containers, Job-like pods completing, deletion finished by the kubelet.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

async fn wait<F: Fn(&Value) -> bool>(pods: &Api<Pod>, name: &str, what: &str, f: F) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(p) = pods.get(name).await {
            let v = serde_json::to_value(&p).expect("json");
            if f(&v) {
                return v;
            }
        }
        assert!(
            Instant::now() < deadline,
            "pod {name}: timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_nodes_run_pods_without_containers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stop = CancellationToken::new();
    let server = apiserver::start(
        apiserver::Config::for_test(dir.path().join("api")),
        stop.clone(),
    )
    .await
    .expect("api");
    let client = client::from_kubeconfig(&server.kubeconfig)
        .await
        .expect("client");
    let cfg = kubelet::Config {
        client: client::ClientArgs::with_kubeconfig(&server.kubeconfig),
        node_name: Some("sim".into()),
        runtime: kubelet::Runtime::Simulated,
        simulated_nodes: 3,
        simulated_completion_after: Duration::from_secs(1),
        port: 0,
        ..Default::default()
    };
    let kstop = CancellationToken::new();
    let k = tokio::spawn(kubelet::run(cfg, kstop.clone()));
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = nodes
            .list(&ListParams::default().labels("type=simulated"))
            .await
            .expect("nodes");
        let ready = list.items.iter().filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if ready.count() == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "3 simulated nodes never became Ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mk = |name: &str, policy: &str| -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"nodeName": "sim-1", "restartPolicy": policy,
            "containers": [{"name": "c", "image": "anything:v1"}]}})).expect("pod")
    };
    pods.create(&PostParams::default(), &mk("svc", "Always"))
        .await
        .expect("create");
    pods.create(&PostParams::default(), &mk("job", "Never"))
        .await
        .expect("create");
    let svc = wait(&pods, "svc", "Ready", |p| {
        p["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    })
    .await;
    assert_eq!(svc["status"]["phase"], "Running");
    assert!(svc["status"]["podIP"].is_string());
    assert_eq!(svc["status"]["containerStatuses"][0]["ready"], true);
    let job = wait(&pods, "job", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(
        job["status"]["containerStatuses"][0]["state"]["terminated"]["reason"],
        "Completed"
    );
    pods.delete("svc", &DeleteParams::default())
        .await
        .expect("delete");
    let deadline = Instant::now() + Duration::from_secs(30);
    while pods.get_opt("svc").await.expect("get").is_some() {
        assert!(
            Instant::now() < deadline,
            "simulated pod deletion never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kstop.cancel();
    k.await.expect("join").expect("kubelet");
    stop.cancel();
}
