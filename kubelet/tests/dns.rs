//! Pods' /etc/resolv.conf and /etc/hosts on the real Docker Engine: a kubelet against an
//! in-process API server runs busybox pods that copy both files into their termination
//! message, one pod per dnsPolicy.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "minik8s-test/busybox:latest";

fn ensure_image() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../hack/images.sh");
        let st = std::process::Command::new("bash")
            .arg(script)
            .status()
            .expect("run hack/images.sh");
        assert!(st.success(), "hack/images.sh failed");
    });
}

/// Runs `pods` (name, spec) to completion and returns each one's termination message
/// (its resolv.conf, a `---` line, its hosts file) and pod IP.
async fn run_pods(pods: Vec<(&str, Value)>, host_resolv: &str) -> Vec<(String, String)> {
    ensure_image();
    let dir = tempfile::tempdir().expect("tempdir");
    let api_stop = CancellationToken::new();
    let server = apiserver::start(
        apiserver::Config::for_test(dir.path().join("api")),
        api_stop.clone(),
    )
    .await
    .expect("api server");
    let client = client::from_kubeconfig(&server.kubeconfig)
        .await
        .expect("client");
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
    let node = format!("kt-dns-{suffix}");
    let ns = format!("dns-{suffix}");
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
        )
        .await
        .expect("namespace");
    let resolv = dir.path().join("host-resolv.conf");
    std::fs::write(&resolv, host_resolv).expect("write resolv.conf");
    let cfg = kubelet::Config {
        client: client::ClientArgs::with_kubeconfig(&server.kubeconfig),
        node_name: Some(node.clone()),
        address: "127.0.0.1".parse().expect("ip"),
        port: 0,
        root_dir: dir.path().join("kubelet"),
        sync_frequency: Duration::from_secs(2),
        dns: kubelet::dns::DnsConfig {
            cluster_dns: vec!["10.96.0.10".parse().expect("ip")],
            cluster_domain: "cluster.local".into(),
            resolv_conf: resolv,
        },
        ..Default::default()
    };
    let kubelet_stop = CancellationToken::new();
    let kubelet = tokio::spawn(kubelet::run(cfg, kubelet_stop.clone()));
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let script = "cat /etc/resolv.conf > /dev/termination-log; echo --- >> /dev/termination-log; \
                  cat /etc/hosts >> /dev/termination-log";
    for (name, spec) in &pods {
        let mut spec = spec.clone();
        spec["nodeName"] = json!(node);
        spec["restartPolicy"] = json!("Never");
        spec["containers"] = json!([{"name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", script]}]);
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod");
        api.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    let mut out = Vec::new();
    for (name, _) in &pods {
        let deadline = Instant::now() + Duration::from_secs(90);
        let v = loop {
            let p = api.get(name).await.expect("get pod");
            let v = serde_json::to_value(&p).expect("json");
            if v["status"]["phase"] == "Succeeded" || v["status"]["phase"] == "Failed" {
                break v;
            }
            assert!(
                Instant::now() < deadline,
                "pod {name} did not finish: {:#}",
                v["status"]
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let msg = v["status"]["containerStatuses"][0]["state"]["terminated"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let ip = v["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out.push((msg, ip));
    }
    // The test's containers go once the kubelet has stopped.
    kubelet_stop.cancel();
    let _ = kubelet.await;
    let d = kubelet::docker::Docker::connect("unix:///var/run/docker.sock", &node)
        .await
        .expect("docker");
    for (id, _) in d.list(None).await.unwrap_or_default() {
        let _ = d.remove(&id).await;
    }
    api_stop.cancel();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolv_conf_and_hosts_follow_dns_policy() {
    let host = "nameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";
    let out = run_pods(
        vec![
            (
                "cluster-first",
                json!({"hostname": "db-0", "subdomain": "db"}),
            ),
            ("default", json!({"dnsPolicy": "Default"})),
            (
                "none",
                json!({"dnsPolicy": "None", "dnsConfig": {
                    "nameservers": ["192.0.2.1"], "searches": ["a.example"],
                    "options": [{"name": "ndots", "value": "2"}]}}),
            ),
            (
                "merged",
                json!({"dnsConfig": {"nameservers": ["192.0.2.7"],
                                     "options": [{"name": "timeout", "value": "1"}]}}),
            ),
        ],
        host,
    )
    .await;
    let ns_of = |msg: &str| {
        msg.lines()
            .find_map(|l| l.strip_prefix("search "))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.strip_suffix(".svc.cluster.local"))
            .unwrap_or_default()
            .to_string()
    };
    let (msg, ip) = &out[0];
    let ns = ns_of(msg);
    assert!(ns.starts_with("dns-"), "{msg}");
    let (resolv, hosts) = msg.split_once("---\n").expect("separator");
    assert_eq!(
        resolv,
        format!(
            "nameserver 10.96.0.10\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        )
    );
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file.\n"),
        "{hosts}"
    );
    assert!(!ip.is_empty());
    assert!(
        hosts.contains(&format!("{ip}\tdb-0.db.{ns}.svc.cluster.local\tdb-0\n")),
        "{hosts}"
    );

    let (msg, ip) = &out[1];
    let (resolv, hosts) = msg.split_once("---\n").expect("separator");
    assert_eq!(resolv, host);
    assert!(hosts.contains(&format!("{ip}\tdefault\n")), "{hosts}");

    let (msg, _) = &out[2];
    let (resolv, _) = msg.split_once("---\n").expect("separator");
    assert_eq!(
        resolv,
        "nameserver 192.0.2.1\nsearch a.example\noptions ndots:2\n"
    );

    let (msg, _) = &out[3];
    let (resolv, _) = msg.split_once("---\n").expect("separator");
    assert_eq!(
        resolv,
        format!(
            "nameserver 10.96.0.10\nnameserver 192.0.2.7\nsearch {ns}.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5 timeout:1\n"
        )
    );
}
