//! `minik8s agent` joins `minik8s server` with the server's join token (both processes, on
//! loopback, real Docker): the CA is checked against the token's pin, the node gets its own
//! certificate through a CSR, registers, runs a pod the scheduler binds to it, and its
//! credential cannot read another node's pod secrets.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::{Node, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the Docker containers and pod network of node `.0` when the test ends, passed or
/// not (the agent is killed, so it cannot clean up after itself).
struct NodeContainers(String);

impl Drop for NodeContainers {
    fn drop(&mut self) {
        let filter = format!("label=io.minik8s.node={}", self.0);
        let ids = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &format!("minik8s-{}", self.0)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn spawn(args: &[&str], log: &Path) -> Result<Proc> {
    let out = std::fs::File::create(log)?;
    Ok(Proc(
        Command::new(env!("CARGO_BIN_EXE_minik8s"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()?,
    ))
}

async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn client(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(conf)?)
}

fn pod(name: &str, secret: &str, node: Option<&str>) -> Result<Pod> {
    let mut spec = json!({
        "containers": [{"name": "c", "image": "minik8s-test/busybox:latest",
            "imagePullPolicy": "Never", "command": ["sleep", "3600"],
            "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
        "volumes": [{"name": "s", "secret": {"secretName": secret}}],
        "terminationGracePeriodSeconds": 0,
    });
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": spec}),
    )?)
}

fn secret(name: &str) -> Result<Secret> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "stringData": {"k": "v"}}),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_joins_server_runs_pods_and_is_restricted_to_its_own() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server_dir = tmp.path().join("server");
    let agent_dir = tmp.path().join("agent");
    let port = free_port()?.to_string();
    let _server = spawn(
        &[
            "server",
            "--data-dir",
            &server_dir.to_string_lossy(),
            "--https-listen-port",
            &port,
            "--bind-address",
            "127.0.0.1",
            "--disable-agent",
        ],
        &tmp.path().join("server.log"),
    )?;
    let kubeconfig = server_dir.join("kubeconfig.yaml");
    let admin = wait_for("the server", Duration::from_secs(60), || async {
        let c = client(&kubeconfig).await.ok()?;
        c.apiserver_version().await.ok().map(|_| c)
    })
    .await?;
    let token = std::fs::read_to_string(server_dir.join("node-token"))?;
    let token = token.trim();
    assert!(token.starts_with("K10"), "{token}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(server_dir.join("node-token"))?
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let url = format!("https://127.0.0.1:{port}");

    // A token whose CA pin does not match is refused before the token is sent.
    let (_, bare) = token.split_once("::").context("token format")?;
    let bad = Command::new(env!("CARGO_BIN_EXE_minik8s"))
        .args([
            "agent",
            "--server",
            &url,
            "--token",
            &format!("K10{}::{bare}", "0".repeat(64)),
        ])
        .args(["--data-dir", &tmp.path().join("bad").to_string_lossy()])
        .output()?;
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("refusing to join"), "{stderr}");

    let node = format!("join-{}", std::process::id());
    let _containers = NodeContainers(node.clone());
    let _agent = spawn(
        &[
            "agent",
            "--server",
            &url,
            "--token",
            token,
            "--data-dir",
            &agent_dir.to_string_lossy(),
            "--node-name",
            &node,
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--node-ip",
            "127.0.0.1",
            "--root-dir",
            &agent_dir.join("kubelet").to_string_lossy(),
        ],
        &tmp.path().join("agent.log"),
    )?;
    let nodes: Api<Node> = Api::all(admin.clone());
    wait_for(
        "the joined node to register",
        Duration::from_secs(60),
        || async { nodes.get_opt(&node).await.ok().flatten() },
    )
    .await
    .with_context(|| std::fs::read_to_string(tmp.path().join("agent.log")).unwrap_or_default())?;
    let node_kc = agent_dir.join("kubelet.kubeconfig");
    assert_eq!(
        std::fs::metadata(&node_kc)?.permissions().mode() & 0o777,
        0o600
    );

    // The scheduler binds a pod to the only node; the joined kubelet runs it.
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "default");
    secrets
        .create(&PostParams::default(), &secret("mine")?)
        .await?;
    secrets
        .create(&PostParams::default(), &secret("theirs")?)
        .await?;
    pods.create(&PostParams::default(), &pod("joined", "mine", None)?)
        .await?;
    pods.create(
        &PostParams::default(),
        &pod("elsewhere", "theirs", Some("some-other-node"))?,
    )
    .await?;
    let running = wait_for(
        "the pod to run on the joined node",
        Duration::from_secs(90),
        || async {
            let p = pods.get("joined").await.ok()?;
            let phase = p.status.as_ref()?.phase.clone()?;
            (phase == "Running").then_some(p)
        },
    )
    .await
    .with_context(|| std::fs::read_to_string(tmp.path().join("agent.log")).unwrap_or_default())?;
    assert_eq!(running.spec.and_then(|s| s.node_name), Some(node.clone()));

    // The node's own credential: its pod's secret yes, another node's pod's secret no.
    let kubelet = client(&node_kc).await?;
    let as_node: Api<Secret> = Api::namespaced(kubelet, "default");
    as_node.get("mine").await?;
    match as_node.get("theirs").await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403);
            assert!(
                e.message.contains("no relationship found between node"),
                "{}",
                e.message
            );
        }
        other => bail!("expected 403, got {other:?}"),
    }

    // Clean up the containers: delete the pod and wait until the kubelet has removed it.
    pods.delete("joined", &DeleteParams::default()).await?;
    wait_for("the pod to be gone", Duration::from_secs(60), || async {
        matches!(pods.get_opt("joined").await, Ok(None)).then_some(())
    })
    .await?;
    Ok(())
}
