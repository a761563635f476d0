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

/// A running `minik8s server --disable-agent` on a free loopback port.
struct Server {
    _proc: Proc,
    admin: kube::Client,
    dir: std::path::PathBuf,
    url: String,
    token: String,
}

async fn start_server(tmp: &Path) -> Result<Server> {
    let dir = tmp.join("server");
    let port = free_port()?.to_string();
    let proc = spawn(
        &[
            "server",
            "--data-dir",
            &dir.to_string_lossy(),
            "--https-listen-port",
            &port,
            "--bind-address",
            "127.0.0.1",
            "--disable-agent",
        ],
        &tmp.join("server.log"),
    )?;
    let kubeconfig = dir.join("kubeconfig.yaml");
    let admin = wait_for("the server", Duration::from_secs(60), || async {
        let c = client(&kubeconfig).await.ok()?;
        c.apiserver_version().await.ok().map(|_| c)
    })
    .await?;
    let token = std::fs::read_to_string(dir.join("node-token"))?
        .trim()
        .to_string();
    Ok(Server {
        _proc: proc,
        admin,
        dir,
        url: format!("https://127.0.0.1:{port}"),
        token,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_joins_server_runs_pods_and_is_restricted_to_its_own() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let agent_dir = tmp.path().join("agent");
    let Server {
        _proc: _server,
        admin,
        dir: server_dir,
        url,
        ..
    } = start_server(tmp.path()).await?;
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
    // The node reports NetworkUnavailable until its pod network (on the podCIDR the server
    // allocated) is set up, then False, so the network-unavailable taint goes.
    wait_for(
        "NetworkUnavailable=False and no network-unavailable taint",
        Duration::from_secs(60),
        || async {
            let n = nodes.get(&node).await.ok()?;
            let net_ok = n
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "NetworkUnavailable" && c.status == "False");
            let tainted = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| {
                    t.iter()
                        .any(|t| t.key == "node.kubernetes.io/network-unavailable")
                });
            (net_ok && !tainted && n.spec.as_ref()?.pod_cidr.is_some()).then_some(())
        },
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

/// The agent flags for a simulated node (no Docker) reporting every second.
fn agent_args<'a>(url: &'a str, token: &'a str, dir: &'a str, node: &'a str) -> Vec<&'a str> {
    vec![
        "agent",
        "--server",
        url,
        "--token",
        token,
        "--data-dir",
        dir,
        "--node-name",
        node,
        "--runtime",
        "simulated",
        "--address",
        "127.0.0.1",
        "--port",
        "0",
        "--node-status-update-frequency",
        "1s",
    ]
}

/// A node kubeconfig like the agent writes, with a certificate the cluster CA signs for
/// `system:node:<node>` valid from `not_before` to `not_after` (unix seconds).
fn node_kubeconfig(server: &Server, node: &str, not_before: i64, not_after: i64) -> Result<String> {
    use base64::Engine as _;
    let pki = apiserver::pki::Pki::load_or_create(&server.dir, &[])?;
    let (cert, key) = pki.issue_client_cert_between(
        &format!("system:node:{node}"),
        &["system:nodes"],
        not_before,
        not_after,
    )?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    Ok(json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": {"server": server.url,
            "certificate-authority-data": b64(&pki.ca_cert_pem)}}],
        "users": [{"name": "user", "user": {"client-certificate-data": b64(&cert),
            "client-key-data": b64(&key)}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "cluster", "user": "user"}}],
        "current-context": "ctx",
    })
    .to_string())
}

/// The validity (unix seconds) of the client certificate in a kubeconfig file.
fn cert_validity(kubeconfig: &Path) -> Option<(i64, i64)> {
    use base64::Engine as _;
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).ok()?;
    let data = kc.auth_infos.first()?.auth_info.as_ref()?;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data.client_certificate_data.as_ref()?.trim())
        .ok()?;
    let info = apiserver::pki::user_from_client_cert_pem(&String::from_utf8(pem).ok()?)?;
    Some((info.not_before, info.not_after))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn csrs_of(
    list: &[k8s_openapi::api::certificates::v1::CertificateSigningRequest],
    user: &str,
) -> usize {
    list.iter()
        .filter(|c| c.spec.username.as_deref() == Some(user))
        .count()
}

/// Upstream's kubelet certificate rotation: a node whose client certificate is past its
/// rotation deadline renews it with a CSR of its own (approved as `selfnodeclient`), keeps
/// working after the old one expires, and the old one stops working at once, even on a
/// connection opened while it was valid. A node whose certificate has expired joins again
/// with the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rotates_its_certificate_and_rejoins_once_it_has_expired() -> Result<()> {
    use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
    use k8s_openapi::api::coordination::v1::Lease;
    let tmp = tempfile::tempdir()?;
    let server = start_server(tmp.path()).await?;
    let node = format!("rot-{}", std::process::id());
    let agent_dir = tmp.path().join("agent");
    std::fs::create_dir_all(&agent_dir)?;
    let kc_path = agent_dir.join("kubelet.kubeconfig");

    // A certificate at 95% of its life: due for rotation, expiring in 15 s.
    let (start, end) = (now() - 285, now() + 15);
    std::fs::write(&kc_path, node_kubeconfig(&server, &node, start, end)?)?;
    let old = client(&kc_path).await?;
    let old_nodes: Api<Node> = Api::all(old.clone());
    assert!(
        old_nodes.get_opt(&node).await.is_ok(),
        "the old certificate works while valid"
    );

    let dir = agent_dir.to_string_lossy().to_string();
    let log = tmp.path().join("agent.log");
    let agent = spawn(&agent_args(&server.url, &server.token, &dir, &node), &log)?;
    let agent_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let (_, new_end) = wait_for(
        "the agent to rotate its certificate",
        Duration::from_secs(60),
        || async { cert_validity(&kc_path).filter(|(_, e)| *e > end + 300 * 24 * 3600) },
    )
    .await
    .with_context(agent_log)?;
    assert!(
        new_end > now() + 364 * 24 * 3600,
        "a fresh one-year certificate"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kc_path)?.permissions().mode() & 0o777,
        0o600
    );
    let csrs: Api<CertificateSigningRequest> = Api::all(server.admin.clone());
    let list = csrs.list(&Default::default()).await?.items;
    assert_eq!(
        csrs_of(&list, &format!("system:node:{node}")),
        1,
        "{list:?}"
    );
    assert_eq!(
        list.iter()
            .filter(|c| c
                .spec
                .username
                .as_deref()
                .is_some_and(|u| u.starts_with("system:bootstrap:")))
            .count(),
        0,
        "a node with a valid certificate does not use the token"
    );

    // Past the old certificate's end, the kubelet still renews its Lease (with the new
    // certificate), and the old one is refused even on the connection it already has.
    let leases: Api<Lease> = Api::namespaced(server.admin.clone(), "kube-node-lease");
    wait_for(
        "a Lease renewal after the old certificate expired",
        Duration::from_secs(60),
        || async {
            let l = leases.get_opt(&node).await.ok()??;
            let renewed = l.spec?.renew_time?.0.as_second();
            (renewed > end + 1).then_some(())
        },
    )
    .await
    .with_context(agent_log)?;
    match old_nodes.get_opt(&node).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 401, "{e:?}"),
        other => bail!("an expired client certificate on an open connection: {other:?}"),
    }

    // An expired certificate: the agent joins again with the token.
    drop(agent);
    std::fs::write(
        &kc_path,
        node_kubeconfig(&server, &node, now() - 300, now() - 10)?,
    )?;
    let _agent = spawn(&agent_args(&server.url, &server.token, &dir, &node), &log)?;
    wait_for(
        "the agent to join again",
        Duration::from_secs(60),
        || async { cert_validity(&kc_path).filter(|(_, e)| *e > now() + 300 * 24 * 3600) },
    )
    .await
    .with_context(agent_log)?;
    let list = csrs.list(&Default::default()).await?.items;
    let bootstrap = list
        .iter()
        .filter(|c| {
            c.spec
                .username
                .as_deref()
                .is_some_and(|u| u.starts_with("system:bootstrap:"))
        })
        .count();
    assert_eq!(bootstrap, 1, "{list:?}");
    assert!(
        agent_log().contains("has expired; joining again with the token"),
        "{}",
        agent_log()
    );
    Ok(())
}

fn minik8s(args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_minik8s"))
        .args(args)
        .output()?)
}

/// `minik8s token create|list|delete`: a token with a time to live joins a node; once it has
/// expired the agent is refused with a message that says what to do, and the token cleaner
/// deletes its Secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_created_expire_and_are_cleaned_up() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let server = start_server(tmp.path()).await?;
    let data_dir = server.dir.to_string_lossy().to_string();
    let secrets: Api<Secret> = Api::namespaced(server.admin.clone(), "kube-system");

    let out = minik8s(&[
        "token",
        "create",
        "--ttl",
        "1h",
        "--description",
        "for n2",
        "--data-dir",
        &data_dir,
    ])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let long = String::from_utf8(out.stdout)?.trim().to_string();
    let (pin, bare) = long.split_once("::").context("K10<hash>::<id>.<secret>")?;
    assert_eq!(
        pin,
        server.token.split_once("::").context("server token")?.0,
        "same CA pin"
    );
    let long_id = bare.split_once('.').context("id.secret")?.0.to_string();
    let hint = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(hint.contains("expires at"), "{hint}");
    assert!(
        hint.contains(&format!("minik8s agent --server {} --token", server.url)),
        "{hint}"
    );
    let s = secrets.get(&format!("bootstrap-token-{long_id}")).await?;
    assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));

    let out = minik8s(&["token", "create", "--ttl", "2s", "--data-dir", &data_dir])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = String::from_utf8(out.stdout)?.trim().to_string();
    let short_id = short
        .split_once("::")
        .and_then(|(_, t)| t.split_once('.'))
        .context("token")?
        .0
        .to_string();

    let bad = minik8s(&["token", "create", "--ttl", "5", "--data-dir", &data_dir])?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("needs a unit"));

    let list = minik8s(&["token", "list", "--data-dir", &data_dir])?;
    let text = String::from_utf8(list.stdout)?;
    assert!(text.starts_with("TOKEN"), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with(&format!("{long_id}.<secret>")))
        .with_context(|| text.clone())?;
    assert!(
        row.contains("authentication,signing") && row.contains("for n2"),
        "{row}"
    );
    assert!(
        row.contains("system:bootstrappers:minik8s:default-node-token"),
        "{row}"
    );
    assert!(
        row.split_whitespace()
            .nth(1)
            .is_some_and(|ttl| ttl == "59m" || ttl == "1h"),
        "{row}"
    );

    // The 1h token joins a node.
    let node = format!("tok-{}", std::process::id());
    let dir = tmp.path().join("agent").to_string_lossy().to_string();
    let log = tmp.path().join("agent.log");
    let _agent = spawn(&agent_args(&server.url, &long, &dir, &node), &log)?;
    let nodes: Api<Node> = Api::all(server.admin.clone());
    wait_for("the node to join", Duration::from_secs(60), || async {
        nodes.get_opt(&node).await.ok().flatten()
    })
    .await
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())?;

    // Components name themselves in their user agent, as upstream's do, so their writes
    // are managed by `kubelet` (the Node's status) and `kube-controller-manager` (podCIDR).
    wait_for(
        "the components' field managers",
        Duration::from_secs(30),
        || async {
            let n = nodes.get(&node).await.ok()?;
            let managers: Vec<(String, String)> = n
                .metadata
                .managed_fields?
                .into_iter()
                .map(|e| {
                    (
                        e.manager.unwrap_or_default(),
                        e.subresource.unwrap_or_default(),
                    )
                })
                .collect();
            (managers.contains(&("kubelet".into(), "status".into()))
                && managers.contains(&("kube-controller-manager".into(), String::new())))
            .then_some(())
        },
    )
    .await
    .with_context(|| format!("{:?}", std::fs::read_to_string(&log)))?;

    // The 2s token: refused once expired, then deleted by the token cleaner.
    let short_secret = format!("bootstrap-token-{short_id}");
    wait_for(
        "the short token to expire",
        Duration::from_secs(10),
        || async {
            let s = minik8s(&["token", "list", "--data-dir", &data_dir]).ok()?;
            let text = String::from_utf8(s.stdout).ok()?;
            let gone = !text.contains(&short_id);
            let expired = text
                .lines()
                .any(|l| l.contains(&short_id) && l.contains("<expired>"));
            (gone || expired).then_some(())
        },
    )
    .await?;
    let refused = minik8s(&[
        "agent",
        "--server",
        &server.url,
        "--token",
        &short,
        "--data-dir",
        &tmp.path().join("late").to_string_lossy(),
        "--node-name",
        "late",
        "--runtime",
        "simulated",
        "--join-timeout",
        "20s",
    ])?;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("the server refused the join token (401 Unauthorized)")
            && stderr.contains("minik8s token create"),
        "{stderr}"
    );
    wait_for(
        "the token cleaner to delete the expired token",
        Duration::from_secs(30),
        || async { matches!(secrets.get_opt(&short_secret).await, Ok(None)).then_some(()) },
    )
    .await?;
    assert!(secrets
        .get_opt(&format!("bootstrap-token-{long_id}"))
        .await?
        .is_some());

    // Deleting a token: by id; a second delete says it is not there.
    let del = minik8s(&["token", "delete", &long_id, "--data-dir", &data_dir])?;
    assert!(
        del.status.success(),
        "{}",
        String::from_utf8_lossy(&del.stderr)
    );
    assert!(secrets
        .get_opt(&format!("bootstrap-token-{long_id}"))
        .await?
        .is_none());
    let again = minik8s(&["token", "delete", &long, "--data-dir", &data_dir])?;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not found"));
    // The joined node keeps working with its own certificate.
    let lease: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(server.admin.clone(), "kube-node-lease");
    let before = lease
        .get(&node)
        .await?
        .spec
        .and_then(|s| s.renew_time)
        .map(|t| t.0);
    wait_for(
        "a Lease renewal after the token was deleted",
        Duration::from_secs(20),
        || async {
            let t = lease.get(&node).await.ok()?.spec?.renew_time?.0;
            (Some(t) > before).then_some(())
        },
    )
    .await?;
    Ok(())
}
