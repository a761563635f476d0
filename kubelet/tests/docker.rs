//! End-to-end tests of the kubelet on the real Docker Engine against an in-process API server.
//! Each test runs its own API server, a kubelet with a unique node name, its own namespace,
//! and removes its containers at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

mod registry;

const IMAGE: &str = "minik8s-test/busybox:latest";

struct Cluster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    kubeconfig: PathBuf,
    client: kube::Client,
    node: String,
    ns: String,
    api_stop: CancellationToken,
    kubelet_stop: CancellationToken,
    kubelet: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

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

impl Cluster {
    async fn start(test: &str) -> Cluster {
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
        let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..6].to_string();
        let node = format!("kt-{test}-{suffix}");
        let ns = format!("{test}-{suffix}");
        let nss: Api<Namespace> = Api::all(client.clone());
        nss.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).expect("ns"),
        )
        .await
        .expect("create namespace");
        // The kubelet runs as system:node:<node>: the Node authorizer and NodeRestriction apply.
        let kubeconfig = server.node_kubeconfig(&node).expect("node kubeconfig");
        let mut c = Cluster {
            root: dir.path().join("kubelet"),
            _dir: dir,
            kubeconfig,
            client,
            node,
            ns,
            api_stop,
            kubelet_stop: CancellationToken::new(),
            kubelet: None,
        };
        c.start_kubelet();
        c
    }

    fn start_kubelet(&mut self) {
        let cfg = kubelet::Config {
            client: client::ClientArgs::with_kubeconfig(&self.kubeconfig),
            node_name: Some(self.node.clone()),
            address: "127.0.0.1".parse().expect("ip"),
            port: 0,
            root_dir: self.root.clone(),
            sync_frequency: Duration::from_secs(2),
            ..Default::default()
        };
        self.kubelet_stop = CancellationToken::new();
        self.kubelet = Some(tokio::spawn(kubelet::run(cfg, self.kubelet_stop.clone())));
    }

    async fn stop_kubelet(&mut self) {
        self.kubelet_stop.cancel();
        if let Some(t) = self.kubelet.take() {
            t.await.expect("join").expect("kubelet stopped cleanly");
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_pod(&self, name: &str, spec: Value) -> Pod {
        let mut spec = spec;
        spec["nodeName"] = json!(self.node);
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod")
    }

    /// Waits until `check` holds for the pod's JSON; returns it.
    async fn wait_pod(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(p) = self.pods().get(name).await {
                last = serde_json::to_value(&p).expect("json");
                if check(&last) {
                    return last;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "pod {name}: timed out waiting for {what}; last status: {:#}",
            last["status"]
        );
    }

    async fn docker(&self) -> kubelet::docker::Docker {
        kubelet::docker::Docker::connect("unix:///var/run/docker.sock", &self.node)
            .await
            .expect("docker")
    }

    async fn containers(&self) -> Vec<(String, std::collections::HashMap<String, String>)> {
        self.docker().await.list(None).await.expect("list")
    }

    async fn cleanup(mut self) {
        self.stop_kubelet().await;
        let d = self.docker().await;
        for (id, _) in d.list(None).await.unwrap_or_default() {
            let _ = d.remove(&id).await;
        }
        self.api_stop.cancel();
    }
}

fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn condition(pod: &Value, typ: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == typ))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn container(name: &str, script: &str) -> Value {
    json!({"name": name, "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script]})
}

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_with_lease_and_conditions() {
    let c = Cluster::start("node").await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let deadline = Instant::now() + LONG;
    let node = loop {
        if let Ok(n) = nodes.get(&c.node).await {
            let v = serde_json::to_value(&n).expect("json");
            if v["status"]["conditions"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                break v;
            }
        }
        assert!(Instant::now() < deadline, "node never reported status");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        c.node.as_str()
    );
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/os"], "linux");
    assert!(node["metadata"]["labels"]["kubernetes.io/arch"].is_string());
    assert_eq!(node["status"]["capacity"]["pods"], "110");
    assert!(node["status"]["capacity"]["memory"]
        .as_str()
        .is_some_and(|m| m.ends_with("Ki")));
    assert!(node["status"]["allocatable"]["cpu"].is_string());
    assert!(node["status"]["capacity"]["ephemeral-storage"].is_string());
    let info = &node["status"]["nodeInfo"];
    assert!(
        info["containerRuntimeVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("docker://20.")),
        "{info}"
    );
    assert!(info["kubeletVersion"]
        .as_str()
        .is_some_and(|v| v.starts_with("v1.33")));
    assert!(!info["kernelVersion"]
        .as_str()
        .unwrap_or_default()
        .is_empty());
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .unwrap_or(0);
    assert!(port > 0, "kubelet port published");
    assert!(node["status"]["addresses"]
        .as_array()
        .is_some_and(|a| a.iter().any(|a| a["type"] == "InternalIP")));
    for (t, s) in [
        ("Ready", "True"),
        ("MemoryPressure", "False"),
        ("DiskPressure", "False"),
        ("PIDPressure", "False"),
    ] {
        let cond = node["status"]["conditions"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["type"] == t))
            .cloned()
            .unwrap_or_default();
        assert_eq!(cond["status"], s, "{t}");
    }
    // NetworkUnavailable: False once pods can get a network (here Docker's default bridge:
    // no podCIDR, no wait), with the route controller's wording.
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.client.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    let net = loop {
        let n = nodes.get(&c.node).await.expect("node");
        let cond = n
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .find(|x| x.type_ == "NetworkUnavailable");
        if let Some(cond) = cond.filter(|x| x.status == "False") {
            break cond;
        }
        assert!(
            Instant::now() < deadline,
            "NetworkUnavailable never became False"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(net.reason.as_deref(), Some("RouteCreated"));
    assert_eq!(
        net.message.as_deref(),
        Some("RouteController created a route")
    );
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let lease = leases.get(&c.node).await.expect("lease");
    let spec = lease.spec.expect("lease spec");
    assert_eq!(spec.holder_identity.as_deref(), Some(c.node.as_str()));
    assert!(spec.renew_time.is_some());
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_share_localhost_and_empty_dir() {
    let c = Cluster::start("share").await;
    c.create_pod("p", json!({
        "restartPolicy": "Never",
        "volumes": [{"name": "shared", "emptyDir": {}}, {"name": "mem", "emptyDir": {"medium": "Memory"}}],
        "containers": [
            {"name": "writer", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", "echo hello > /shared/index.html && echo mem > /mem/m && httpd -f -p 8080 -h /shared"],
             "volumeMounts": [{"name": "shared", "mountPath": "/shared"}, {"name": "mem", "mountPath": "/mem"}]},
            {"name": "reader", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
             "command": ["sh", "-c", "until wget -q -O /tmp/got http://127.0.0.1:8080/index.html; do sleep 0.2; done; cat /tmp/got /shared/index.html /mem/m > /dev/termination-log"],
             "volumeMounts": [{"name": "shared", "mountPath": "/shared"}, {"name": "mem", "mountPath": "/mem"}]},
        ],
    })).await;
    let pod = c
        .wait_pod("p", LONG, "reader terminated", |p| {
            !container_status(p, "reader")["state"]["terminated"].is_null()
        })
        .await;
    let t = &container_status(&pod, "reader")["state"]["terminated"];
    assert_eq!(t["exitCode"], 0, "{pod:#}");
    assert_eq!(t["message"], "hello\nhello\nmem\n");
    assert!(t["containerID"]
        .as_str()
        .is_some_and(|id| id.starts_with("docker://")));
    let ip = pod["status"]["podIP"].as_str().unwrap_or_default();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "pod IP {ip:?}");
    assert_eq!(pod["status"]["phase"], "Running");
    let w = container_status(&pod, "writer");
    assert!(w["state"]["running"].is_object());
    assert_eq!(w["ready"], true);
    assert!(w["imageID"]
        .as_str()
        .is_some_and(|i| i.starts_with("docker://sha256:")));
    // Every container carries the kubelet's labels.
    let uid = pod["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let cs = c.containers().await;
    assert_eq!(cs.len(), 3, "sandbox + two containers");
    for (_, l) in &cs {
        assert_eq!(l.get(kubelet::labels::POD_UID), Some(&uid));
        assert_eq!(l.get(kubelet::labels::POD_NAMESPACE), Some(&c.ns));
        assert_eq!(
            l.get(kubelet::labels::POD_NAME).map(String::as_str),
            Some("p")
        );
        assert!(l.contains_key(kubelet::labels::CONTAINER_NAME));
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_and_env_from_every_source() {
    let c = Cluster::start("env").await;
    let host = c.root.parent().expect("parent").join("host");
    std::fs::create_dir_all(&host).expect("host dir");
    std::fs::write(host.join("f"), "from-host").expect("host file");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "cm"}, "data": {"k": "cmval", "other": "o"}}),
        )
        .expect("cm"),
    )
    .await
    .expect("cm");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(c.client.clone(), &c.ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "s"}, "stringData": {"pw": "sekret"}}),
            )
            .expect("secret"),
        )
        .await
        .expect("secret");
    let script = "echo \"$PLAIN $EXPANDED $POD $NS $NODE $MEM $CM $SEC $E_k $E_pw\" > /dev/termination-log; \
                  cat /cm/k /sec/pw /host/f /sub/x /dapi/name >> /dev/termination-log; \
                  touch /cm/new 2>/dev/null && echo writable >> /dev/termination-log; true";
    c.create_pod("p", json!({
        "restartPolicy": "Never",
        "volumes": [
            {"name": "cm", "configMap": {"name": "cm"}},
            {"name": "sec", "secret": {"secretName": "s"}},
            {"name": "host", "hostPath": {"path": host.to_string_lossy(), "type": "Directory"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "dapi", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        ],
        "initContainers": [{"name": "prep", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                            "command": ["sh", "-c", "echo sub > /scratch/dir/x"],
                            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch/dir", "subPath": "d"}]}],
        "containers": [{
            "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", script],
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
            "env": [
                {"name": "PLAIN", "value": "plain"},
                {"name": "EXPANDED", "value": "x-$(PLAIN)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                {"name": "SEC", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
            ],
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "E_"}, {"secretRef": {"name": "s"}, "prefix": "E_"}],
            "volumeMounts": [
                {"name": "cm", "mountPath": "/cm"}, {"name": "sec", "mountPath": "/sec"},
                {"name": "host", "mountPath": "/host", "readOnly": true},
                {"name": "scratch", "mountPath": "/sub", "subPath": "d"},
                {"name": "dapi", "mountPath": "/dapi"},
            ],
        }],
    })).await;
    let pod = c
        .wait_pod("p", LONG, "pod succeeded", |p| {
            p["status"]["phase"] == "Succeeded"
        })
        .await;
    let msg = container_status(&pod, "c")["state"]["terminated"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let want = format!(
        "plain x-plain p {} {} 64 cmval sekret cmval sekret\ncmvalsekretfrom-hostsub\np",
        c.ns, c.node
    );
    assert_eq!(
        msg, want,
        "config map volumes are read-only, env and volumes as specified"
    );
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["reason"], "Completed");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_config_map_is_a_config_error_then_starts() {
    let c = Cluster::start("cmerr").await;
    c.create_pod("p", json!({"containers": [{
        "name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent", "command": ["sleep", "3600"],
        "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "k"}}}],
        "readinessProbe": {"exec": {"command": ["sh", "-c", "grep -q v2 /cm/k"]}, "periodSeconds": 1},
        "volumeMounts": [{"name": "cm", "mountPath": "/cm"}],
    }], "volumes": [{"name": "cm", "configMap": {"name": "late", "optional": true}}]})).await;
    let pod = c
        .wait_pod("p", LONG, "CreateContainerConfigError", |p| {
            container_status(p, "c")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        })
        .await;
    assert_eq!(
        container_status(&pod, "c")["state"]["waiting"]["message"],
        "configmap \"late\" not found"
    );
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "late"}, "data": {"k": "v1"}}))
            .expect("cm"),
    )
    .await
    .expect("cm");
    let pod = c
        .wait_pod("p", LONG, "running, not ready", |p| {
            container_status(p, "c")["state"]["running"].is_object()
        })
        .await;
    assert_eq!(condition(&pod, "Ready"), "False");
    // The update reaches the running pod's volume: the readiness probe then passes.
    let patch = json!({"data": {"k": "v2"}});
    cms.patch(
        "late",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("patch cm");
    c.wait_pod("p", LONG, "Ready after the config map update", |p| {
        condition(p, "Ready") == "True"
    })
    .await;
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_backs_off_with_growing_delay() {
    let c = Cluster::start("crash").await;
    c.create_pod(
        "p",
        json!({"containers": [container("c", "echo boom; exit 3")]}),
    )
    .await;
    let first = c
        .wait_pod("p", LONG, "back-off 10s", |p| {
            container_status(p, "c")["state"]["waiting"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("back-off 10s"))
        })
        .await;
    let st = container_status(&first, "c");
    assert_eq!(st["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(st["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(st["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(st["restartCount"], 1);
    let t0 = Instant::now();
    let second = c
        .wait_pod("p", Duration::from_secs(40), "back-off 20s", |p| {
            container_status(p, "c")["state"]["waiting"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("back-off 20s"))
        })
        .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(8),
        "the second restart waited out the 10 s back-off"
    );
    assert_eq!(container_status(&second, "c")["restartCount"], 2);
    assert_eq!(second["status"]["phase"], "Running");
    let events: Api<Event> = Api::namespaced(c.client.clone(), &c.ns);
    let evs = events.list(&ListParams::default()).await.expect("events");
    assert!(
        evs.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("BackOff")),
        "BackOff event"
    );
    assert!(
        evs.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Started")),
        "Started event"
    );
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_and_readiness_failure_is_not_ready() {
    let c = Cluster::start("probes").await;
    let mut live = container("live", "sleep 3600");
    live["livenessProbe"] = json!({"exec": {"command": ["test", "-f", "/nope"]}, "periodSeconds": 1, "failureThreshold": 2});
    live["terminationGracePeriodSeconds"] = json!(1);
    let mut unready = container("unready", "httpd -f -p 8081 -h /tmp");
    unready["readinessProbe"] =
        json!({"httpGet": {"path": "/missing", "port": 8081}, "periodSeconds": 1});
    let mut ready = container("ready", "sleep 3600");
    ready["readinessProbe"] = json!({"tcpSocket": {"port": 8081}, "periodSeconds": 1});
    ready["startupProbe"] = json!({"exec": {"command": ["true"]}, "periodSeconds": 1});
    c.create_pod(
        "p",
        json!({"terminationGracePeriodSeconds": 1, "containers": [live, unready, ready]}),
    )
    .await;
    let pod = c
        .wait_pod("p", LONG, "liveness restart", |p| {
            container_status(p, "live")["restartCount"]
                .as_i64()
                .unwrap_or(0)
                >= 1
        })
        .await;
    assert_eq!(container_status(&pod, "unready")["ready"], false);
    let pod = c
        .wait_pod("p", LONG, "tcp readiness", |p| {
            container_status(p, "ready")["ready"] == true
        })
        .await;
    assert_eq!(container_status(&pod, "ready")["started"], true);
    assert_eq!(container_status(&pod, "unready")["ready"], false);
    assert_eq!(condition(&pod, "Ready"), "False");
    assert_eq!(condition(&pod, "ContainersReady"), "False");
    let events: Api<Event> = Api::namespaced(c.client.clone(), &c.ns);
    let evs = events.list(&ListParams::default()).await.expect("events");
    assert!(evs
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("Unhealthy")
            && e.message
                .as_deref()
                .is_some_and(|m| m.starts_with("Liveness probe failed"))));
    assert!(evs
        .items
        .iter()
        .any(|e| e.reason.as_deref() == Some("Unhealthy")
            && e.message
                .as_deref()
                .is_some_and(|m| m.contains("HTTP probe failed with statuscode: 404"))));
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_in_order() {
    let c = Cluster::start("init").await;
    let mount = json!([{"name": "w", "mountPath": "/w"}]);
    let mut i1 = container("one", "sleep 1; echo 1 >> /w/order");
    i1["volumeMounts"] = mount.clone();
    let mut i2 = container("two", "test -f /w/order && echo 2 >> /w/order");
    i2["volumeMounts"] = mount.clone();
    let mut app = container(
        "app",
        "echo 3 >> /w/order; cat /w/order > /dev/termination-log",
    );
    app["volumeMounts"] = mount;
    c.create_pod(
        "p",
        json!({"restartPolicy": "Never", "volumes": [{"name": "w", "emptyDir": {}}],
                             "initContainers": [i1, i2], "containers": [app]}),
    )
    .await;
    let pod = c
        .wait_pod("p", LONG, "init in progress", |p| {
            condition(p, "Initialized") == "False"
        })
        .await;
    assert_eq!(pod["status"]["phase"], "Pending");
    let pod = c
        .wait_pod("p", LONG, "succeeded", |p| {
            p["status"]["phase"] == "Succeeded"
        })
        .await;
    assert_eq!(
        container_status(&pod, "app")["state"]["terminated"]["message"],
        "1\n2\n3\n"
    );
    assert_eq!(condition(&pod, "Initialized"), "True");
    assert_eq!(condition(&pod, "Ready"), "False");
    for i in 0..2 {
        assert_eq!(
            pod["status"]["initContainerStatuses"][i]["state"]["terminated"]["exitCode"],
            0
        );
    }
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_deletion_runs_pre_stop_then_sigterm() {
    let c = Cluster::start("grace").await;
    let host = c.root.parent().expect("parent").join("log");
    std::fs::create_dir_all(&host).expect("dir");
    let mut app = container("app", "trap 'echo term >> /log/out; exit 0' TERM; echo up >> /log/out; while true; do sleep 0.1; done");
    app["lifecycle"] =
        json!({"preStop": {"exec": {"command": ["sh", "-c", "echo prestop >> /log/out"]}}});
    app["volumeMounts"] = json!([{"name": "log", "mountPath": "/log"}]);
    c.create_pod("p", json!({"terminationGracePeriodSeconds": 20,
        "volumes": [{"name": "log", "hostPath": {"path": host.to_string_lossy()}}], "containers": [app]})).await;
    c.wait_pod("p", LONG, "running", |p| {
        container_status(p, "app")["state"]["running"].is_object()
    })
    .await;
    let started = Instant::now();
    c.pods()
        .delete("p", &DeleteParams::default())
        .await
        .expect("delete");
    let deadline = Instant::now() + LONG;
    while c.pods().get_opt("p").await.expect("get").is_some() {
        assert!(
            Instant::now() < deadline,
            "pod not removed after graceful termination"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the container exited on SIGTERM, long before the grace period"
    );
    let out = std::fs::read_to_string(host.join("out")).expect("log");
    assert_eq!(out, "up\nprestop\nterm\n");
    assert!(c.containers().await.is_empty(), "containers removed");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_restart_adopts_pods_and_cleans_up_deleted_ones() {
    let mut c = Cluster::start("adopt").await;
    c.create_pod(
        "keep",
        json!({"terminationGracePeriodSeconds": 1, "containers": [container("c", "sleep 3600")]}),
    )
    .await;
    c.create_pod(
        "gone",
        json!({"terminationGracePeriodSeconds": 1, "containers": [container("c", "sleep 3600")]}),
    )
    .await;
    let keep = c
        .wait_pod("keep", LONG, "running", |p| condition(p, "Ready") == "True")
        .await;
    let gone = c
        .wait_pod("gone", LONG, "running", |p| condition(p, "Ready") == "True")
        .await;
    let id = container_status(&keep, "c")["containerID"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let gone_uid = gone["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    c.stop_kubelet().await;
    c.pods()
        .delete(
            "gone",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .expect("force delete");
    assert!(c
        .containers()
        .await
        .iter()
        .any(|(_, l)| l.get(kubelet::labels::POD_UID) == Some(&gone_uid)));
    c.start_kubelet();
    let deadline = Instant::now() + LONG;
    while c
        .containers()
        .await
        .iter()
        .any(|(_, l)| l.get(kubelet::labels::POD_UID) == Some(&gone_uid))
    {
        assert!(
            Instant::now() < deadline,
            "containers of the deleted pod were not removed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The kept pod's container is the same one, not restarted, and there is no duplicate.
    let keep = c
        .wait_pod("keep", LONG, "ready again", |p| {
            condition(p, "Ready") == "True"
        })
        .await;
    let st = container_status(&keep, "c");
    assert_eq!(st["containerID"].as_str(), Some(id.as_str()));
    assert_eq!(st["restartCount"], 0);
    assert_eq!(
        c.containers().await.len(),
        2,
        "one sandbox and one container"
    );
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failure_backs_off() {
    let c = Cluster::start("pull").await;
    c.create_pod("p", json!({"containers": [{"name": "c", "image": "127.0.0.1:1/nope:v1", "imagePullPolicy": "IfNotPresent"}]})).await;
    // ErrImagePull shows until the next sync, which may come at once: accept either state.
    let pod = c
        .wait_pod("p", LONG, "ErrImagePull", |p| {
            let r = &container_status(p, "c")["state"]["waiting"]["reason"];
            r == "ErrImagePull" || r == "ImagePullBackOff"
        })
        .await;
    assert!(
        container_status(&pod, "c")["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:1")),
        "{pod:#}"
    );
    assert_eq!(pod["status"]["phase"], "Pending");
    let pod = c
        .wait_pod("p", LONG, "ImagePullBackOff", |p| {
            container_status(p, "c")["state"]["waiting"]["reason"] == "ImagePullBackOff"
        })
        .await;
    let msg = container_status(&pod, "c")["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.starts_with("Back-off pulling image \"127.0.0.1:1/nope:v1\": ErrImagePull: "),
        "{msg}"
    );
    let events: Api<Event> = Api::namespaced(c.client.clone(), &c.ns);
    let deadline = Instant::now() + LONG;
    loop {
        let evs = events.list(&ListParams::default()).await.expect("events");
        let has = |reason: &str, msg: &str| {
            evs.items.iter().any(|e| {
                e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().is_some_and(|m| m.starts_with(msg))
            })
        };
        if has("Failed", "Error: ErrImagePull") && has("Pulling", "Pulling image") {
            break;
        }
        assert!(Instant::now() < deadline, "no Pulling and Failed events");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let never = json!({"name": "c", "image": "minik8s-test/absent:v1", "imagePullPolicy": "Never"});
    c.create_pod("never", json!({"containers": [never]})).await;
    let pod = c
        .wait_pod("never", LONG, "ErrImageNeverPull", |p| {
            container_status(p, "c")["state"]["waiting"]["reason"] == "ErrImageNeverPull"
        })
        .await;
    assert_eq!(
        container_status(&pod, "c")["state"]["waiting"]["message"],
        "Container image \"minik8s-test/absent:v1\" is not present with pull policy of Never"
    );
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_resources_and_host_port_reach_docker() {
    let c = Cluster::start("sec").await;
    let host_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut app = container("app", "id -u > /tmp/id && id -g >> /tmp/id; touch /rootfs 2>/dev/null || echo ro >> /tmp/id; cp /tmp/id /www/index.html; exec httpd -f -p 8080 -h /www");
    app["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 2000, "readOnlyRootFilesystem": true,
                                    "capabilities": {"add": ["NET_ADMIN"], "drop": ["MKNOD"]}});
    app["resources"] = json!({"limits": {"cpu": "250m", "memory": "32Mi"}, "requests": {"cpu": "100m", "memory": "16Mi"}});
    app["ports"] = json!([{"containerPort": 8080, "hostPort": host_port}]);
    app["volumeMounts"] =
        json!([{"name": "tmp", "mountPath": "/tmp"}, {"name": "www", "mountPath": "/www"}]);
    c.create_pod("p", json!({"volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "www", "emptyDir": {}}], "containers": [app]})).await;
    let pod = c
        .wait_pod("p", LONG, "running", |p| {
            container_status(p, "app")["state"]["running"].is_object()
        })
        .await;
    let id = container_status(&pod, "app")["containerID"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("docker://")
        .to_string();
    let d = c.docker().await;
    let info = d.api().inspect_container(&id, None).await.expect("inspect");
    let hc = info.host_config.expect("host config");
    assert_eq!(hc.memory, Some(32 * 1024 * 1024));
    assert_eq!(hc.cpu_quota, Some(25_000));
    assert_eq!(hc.cpu_period, Some(100_000));
    assert_eq!(hc.cpu_shares, Some(102));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.cap_add, Some(vec!["NET_ADMIN".to_string()]));
    assert_eq!(hc.cap_drop, Some(vec!["MKNOD".to_string()]));
    assert_eq!(
        info.config.and_then(|c| c.user),
        Some("1000:2000".to_string())
    );
    // The host port reaches the pod's container through the sandbox.
    let deadline = Instant::now() + LONG;
    let body = loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", host_port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").await;
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf).await;
            if buf.contains("200") {
                break buf;
            }
        }
        assert!(
            Instant::now() < deadline,
            "host port {host_port} never answered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body.ends_with("1000\n2000\nro\n"), "{body}");
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_runs_beside_the_app_and_post_start_runs() {
    let c = Cluster::start("sidecar").await;
    let mount = json!([{"name": "w", "mountPath": "/w"}]);
    let mut side = container("side", "echo side >> /w/log; exec sleep 3600");
    side["restartPolicy"] = json!("Always");
    side["volumeMounts"] = mount.clone();
    let mut app = container("app", "sleep 0.5; cat /w/log > /dev/termination-log");
    app["lifecycle"] =
        json!({"postStart": {"exec": {"command": ["sh", "-c", "echo hook >> /w/log"]}}});
    app["volumeMounts"] = mount;
    c.create_pod(
        "p",
        json!({"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
        "volumes": [{"name": "w", "emptyDir": {}}], "initContainers": [side], "containers": [app]}),
    )
    .await;
    let pod = c
        .wait_pod("p", LONG, "succeeded", |p| {
            p["status"]["phase"] == "Succeeded"
        })
        .await;
    assert_eq!(
        container_status(&pod, "app")["state"]["terminated"]["message"],
        "side\nhook\n"
    );
    let side = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(side["name"], "side");
    // The sidecar is stopped once the app containers are done.
    let d = c.docker().await;
    let deadline = Instant::now() + LONG;
    loop {
        let mut running = 0;
        for (id, _) in d.list(None).await.expect("list") {
            if d.inspect(&id)
                .await
                .expect("inspect")
                .is_some_and(|i| i.running)
            {
                running += 1;
            }
        }
        if running == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sidecar and sandbox still running after the pod succeeded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.cleanup().await;
}

/// The status of a TokenReview of `token` for `audiences`.
async fn review(
    reviews: &Api<k8s_openapi::api::authentication::v1::TokenReview>,
    token: &str,
    audiences: &[&str],
) -> Value {
    let r = serde_json::from_value(json!({"spec": {"token": token, "audiences": audiences}}))
        .expect("review");
    let r = reviews
        .create(&PostParams::default(), &r)
        .await
        .expect("token review");
    serde_json::to_value(r.status).expect("status")
}

/// The API server's ServiceAccount admission gives every pod the projected
/// `kube-api-access-*` volume; the kubelet fills it with a token bound to the pod (which
/// authenticates as the pod's service account), the cluster CA and the namespace, and a
/// projected source's own audience and lifetime are requested as given. The token is not
/// requested again on every sync.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projected_service_account_tokens_are_bound_to_the_pod() {
    use k8s_openapi::api::authentication::v1::TokenReview;
    let c = Cluster::start("sat").await;
    let sa = "/var/run/secrets/kubernetes.io/serviceaccount";
    c.create_pod(
        "p",
        json!({
            "volumes": [{"name": "vault", "projected": {"sources": [
                {"serviceAccountToken": {"path": "t", "audience": "vault", "expirationSeconds": 600}},
            ]}}],
            "containers": [{"name": "c", "image": IMAGE, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", format!("test -s {sa}/token && test -s {sa}/ca.crt && test -s /vault/t && sleep 3600")],
                "volumeMounts": [{"name": "vault", "mountPath": "/vault"}]}],
        }),
    )
    .await;
    let pod = c
        .wait_pod("p", LONG, "pod running", |p| {
            container_status(p, "c")["state"]["running"].is_object()
        })
        .await;
    let uid = pod["metadata"]["uid"].as_str().expect("uid");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .find(|n| n.starts_with("kube-api-access-"))
        .expect("admission added the token volume")
        .to_string();
    let projected = c
        .root
        .join("pods")
        .join(uid)
        .join("volumes/kubernetes.io~projected");
    let dir = projected.join(&volume);
    let read = |p: PathBuf| std::fs::read_to_string(&p).expect("volume file");
    assert_eq!(read(dir.join("namespace")), c.ns);
    assert!(read(dir.join("ca.crt")).starts_with("-----BEGIN CERTIFICATE-----"));
    let token = read(dir.join("token"));
    let vault = read(projected.join("vault/t"));

    let reviews: Api<TokenReview> = Api::all(c.client.clone());
    let st = review(&reviews, &token, &[]).await;
    assert_eq!(st["authenticated"], true, "{st:#}");
    assert_eq!(
        st["user"]["username"],
        format!("system:serviceaccount:{}:default", c.ns)
    );
    assert_eq!(
        st["user"]["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["p"]),
        "the token is bound to the pod: {st:#}"
    );
    assert_eq!(
        st["user"]["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([uid])
    );
    let st = review(&reviews, &vault, &["vault"]).await;
    assert_eq!(st["authenticated"], true, "{st:#}");
    assert_eq!(st["audiences"], json!(["vault"]));
    let st = review(&reviews, &vault, &[]).await;
    assert_eq!(
        st["authenticated"], false,
        "the vault token is not for the API server: {st:#}"
    );

    // Several syncs (every 2 s here) later the tokens are the same: they are renewed only
    // at 80% of their lifetime.
    let data = std::fs::read_link(dir.join("..data")).expect("..data");
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        assert_eq!(
            std::fs::read_link(dir.join("..data")).expect("..data"),
            data
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(read(dir.join("token")), token);
    assert_eq!(read(projected.join("vault/t")), vault);
    c.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_path_expr_expands_from_the_container_env() {
    let c = Cluster::start("subpathexpr").await;
    let host = c.root.parent().expect("parent").join("host");
    std::fs::create_dir_all(&host).expect("dir");
    let env =
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]);
    let mut writer = container("writer", "echo host > /h/f && echo scratch > /s/f");
    writer["env"] = env.clone();
    writer["volumeMounts"] = json!([
        {"name": "host", "mountPath": "/h", "subPathExpr": "$(POD_NAME)"},
        {"name": "scratch", "mountPath": "/s", "subPathExpr": "logs/$(POD_NAME)"},
    ]);
    let mut reader = container("reader", "cat /all/logs/sp/f > /dev/termination-log");
    reader["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/all"}]);
    let spec = json!({"restartPolicy": "Never",
        "volumes": [{"name": "host", "hostPath": {"path": host.to_string_lossy()}},
                    {"name": "scratch", "emptyDir": {}}],
        "initContainers": [writer], "containers": [reader]});

    // subPath and subPathExpr together are rejected by validation.
    let mut both = spec.clone();
    both["initContainers"][0]["volumeMounts"][0]["subPath"] = json!("x");
    both["nodeName"] = json!(c.node);
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "both"}, "spec": both})).expect("pod");
    match c.pods().create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422);
            assert!(
                e.message.contains("spec.initContainers[0].volumeMounts[0].subPathExpr: Invalid value: \"$(POD_NAME)\": subPathExpr and subPath are mutually exclusive"),
                "{}",
                e.message
            );
        }
        other => panic!("pod with subPath and subPathExpr: {other:?}"),
    }

    c.create_pod("sp", spec).await;
    let pod = c
        .wait_pod("sp", LONG, "reader terminated", |p| {
            container_status(p, "reader")["state"]["terminated"].is_object()
        })
        .await;
    let term = &container_status(&pod, "reader")["state"]["terminated"];
    assert_eq!(term["exitCode"], 0, "{term}");
    assert_eq!(term["message"], "scratch\n");
    assert_eq!(
        std::fs::read_to_string(host.join("sp").join("f")).expect("file under the expanded dir"),
        "host\n"
    );

    // A reference to an unset variable is a CreateContainerConfigError.
    let mut bad = container("bad", "true");
    bad["volumeMounts"] = json!([{"name": "host", "mountPath": "/h", "subPathExpr": "$(NOPE)"}]);
    c.create_pod(
        "bad",
        json!({"volumes": [{"name": "host", "hostPath": {"path": host.to_string_lossy()}}],
            "containers": [bad]}),
    )
    .await;
    c.wait_pod("bad", LONG, "config error", |p| {
        let w = &container_status(p, "bad")["state"]["waiting"];
        w["reason"] == "CreateContainerConfigError" && w["message"] == "missing value for NOPE"
    })
    .await;
    c.cleanup().await;
}

/// Waits for an event in the test's namespace with `reason` whose message starts with `msg`.
async fn wait_event(c: &Cluster, reason: &str, msg: &str) {
    let events: Api<Event> = Api::namespaced(c.client.clone(), &c.ns);
    let deadline = Instant::now() + LONG;
    loop {
        let evs = events.list(&ListParams::default()).await.expect("events");
        if evs.items.iter().any(|e| {
            e.reason.as_deref() == Some(reason)
                && e.message.as_deref().is_some_and(|m| m.starts_with(msg))
        }) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} event starting {msg:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Images from a registry that wants a login: refused without one, pulled with the pod's
/// `imagePullSecrets` (a missing one named in an event) or its service account's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_secrets_log_in_to_the_registry() {
    ensure_image();
    let reg = registry::Registry::start(IMAGE, "private/busybox", "v1", "puller", "s3cret")
        .await
        .expect("registry");
    let image = reg.image();
    let c = Cluster::start("regauth").await;
    let ctr = json!({"name": "c", "image": image, "imagePullPolicy": "Always", "command": ["sleep", "3600"]});

    // Without credentials the registry refuses.
    c.create_pod("anon", json!({"containers": [ctr]})).await;
    c.wait_pod("anon", LONG, "ErrImagePull", |p| {
        let r = &container_status(p, "c")["state"]["waiting"]["reason"];
        r == "ErrImagePull" || r == "ImagePullBackOff"
    })
    .await;
    assert!(reg.challenged() + reg.refused() > 0);
    assert_eq!(reg.authorized(), 0);

    // With a dockerconfigjson secret (and one that does not exist) the pull logs in.
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode("puller:s3cret");
    let config = json!({"auths": {format!("127.0.0.1:{}", reg.port): {"auth": auth}}});
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "regcred"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()},
    }))
    .expect("secret");
    Api::namespaced(c.client.clone(), &c.ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    c.create_pod(
        "authed",
        json!({"imagePullSecrets": [{"name": "missing"}, {"name": "regcred"}], "containers": [ctr]}),
    )
    .await;
    c.wait_pod("authed", LONG, "Running", |p| {
        p["status"]["phase"] == "Running"
    })
    .await;
    assert!(reg.authorized() > 0);
    assert_eq!(reg.refused(), 0, "a wrong login was sent");
    wait_event(
        &c,
        "FailedToRetrieveImagePullSecret",
        "Unable to retrieve some image pull secrets (missing); attempting to pull the image may not succeed.",
    )
    .await;

    // A service account's pull secrets go to pods that name none (ServiceAccount admission).
    let sa: k8s_openapi::api::core::v1::ServiceAccount = serde_json::from_value(
        json!({"metadata": {"name": "builder"}, "imagePullSecrets": [{"name": "regcred"}]}),
    )
    .expect("sa");
    Api::namespaced(c.client.clone(), &c.ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create sa");
    let before = reg.authorized();
    let pod = c
        .create_pod(
            "by-sa",
            json!({"serviceAccountName": "builder", "containers": [ctr]}),
        )
        .await;
    let secrets = serde_json::to_value(&pod).expect("json")["spec"]["imagePullSecrets"].clone();
    assert_eq!(secrets, json!([{"name": "regcred"}]));
    c.wait_pod("by-sa", LONG, "Running", |p| {
        p["status"]["phase"] == "Running"
    })
    .await;
    assert!(reg.authorized() > before);

    c.cleanup().await;
    let _ = tokio::process::Command::new("docker")
        .args(["rmi", "-f", &image])
        .output()
        .await;
}
