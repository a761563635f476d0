//! The streaming server end to end: a real API server in-process, a kubelet streaming
//! server on a loopback port, a real Docker container labelled as the kubelet labels its
//! containers, and kube-rs as the client (logs, exec, attach, port-forward, nodes/proxy).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, AttachParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "minik8s-test/busybox:latest";

struct Fixture {
    client: kube::Client,
    kubeconfig: std::path::PathBuf,
    kubelet_port: u16,
    pki: std::sync::Arc<apiserver::pki::Pki>,
    node: String,
    container: String,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
    }
}

async fn fixture() -> anyhow::Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let server = apiserver::start(
        apiserver::Config::for_test(dir.path().to_path_buf()),
        shutdown.clone(),
    )
    .await?;
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    let client = kube::Client::try_from(config)?;

    let node = format!("stream-{}", uuid::Uuid::new_v4().simple());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let ctx = kubelet::server::Context::new(
        bollard::Docker::connect_with_local_defaults()?,
        &node,
        &server.pki.ca_cert_pem,
        Some(client.clone()),
    );
    tokio::spawn(kubelet::server::serve(listener, ctx, shutdown.clone()));

    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node}}))?,
        )
        .await?;
    nodes
        .patch_status(
            &node,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }})),
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, containers, node_name) in [
        (
            "web",
            json!([{"name": "main", "image": IMAGE}]),
            Some(&node),
        ),
        (
            "two",
            json!([{"name": "a", "image": IMAGE}, {"name": "b", "image": IMAGE}]),
            Some(&node),
        ),
        ("pending", json!([{"name": "main", "image": IMAGE}]), None),
    ] {
        let mut spec = json!({"containers": containers});
        if let Some(n) = node_name {
            spec["nodeName"] = json!(n);
        }
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?,
        )
        .await?;
    }

    // What the kubelet's status manager would report (kubectl port-forward checks it).
    pods.patch_status(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await?;
    let container = format!("{node}-web-main");
    let script = "/bin/busybox --install -s /bin; echo hello; echo oops >&2; mkdir -p /www; echo pf-ok > /www/index.html; \
                  httpd -p 8080 -h /www; while true; do echo tick; sleep 1; done";
    let labels = [
        format!("{}={node}", kubelet::labels::NODE),
        format!("{}=default", kubelet::labels::POD_NAMESPACE),
        format!("{}=web", kubelet::labels::POD_NAME),
        format!("{}=uid-web", kubelet::labels::POD_UID),
        format!("{}=main", kubelet::labels::CONTAINER_NAME),
    ];
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(["run", "-d", "--name", &container]);
    for l in &labels {
        cmd.args(["--label", l]);
    }
    cmd.args([IMAGE, "sh", "-c", script]);
    let out = cmd.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "docker run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let f = Fixture {
        client,
        kubeconfig: server.kubeconfig.clone(),
        kubelet_port: port,
        pki: server.pki.clone(),
        node,
        container,
        _dir: dir,
        shutdown,
    };
    // Wait for the container to have written its first lines.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let logs = pods
            .logs("web", &LogParams::default())
            .await
            .unwrap_or_default();
        // Docker copies stdout and stderr separately: by the second tick both are in.
        if logs.matches("tick").count() >= 2 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no logs: {logs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(f)
}

async fn read_all(r: Option<impl tokio::io::AsyncRead + Unpin>) -> String {
    let mut s = String::new();
    if let Some(mut r) = r {
        let _ = r.read_to_string(&mut s).await;
    }
    s
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_through_the_api_server() -> anyhow::Result<()> {
    let f = fixture().await?;
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), "default");

    // Logs: both streams, options.
    let logs = pods.logs("web", &LogParams::default()).await?;
    assert!(logs.contains("hello\n"), "{logs:?}");
    assert!(logs.contains("oops\n"), "{logs:?}");
    let tail = pods
        .logs(
            "web",
            &LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(tail, "tick\n");
    let limited = pods
        .logs(
            "web",
            &LogParams {
                limit_bytes: Some(3),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(limited.len(), 3);
    let stamped = pods
        .logs(
            "web",
            &LogParams {
                timestamps: true,
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await?;
    assert!(
        stamped.ends_with("Z tick\n") && stamped.len() > 25,
        "{stamped:?}"
    );
    let mut follow = pods
        .log_stream(
            "web",
            &LogParams {
                follow: true,
                since_seconds: Some(1),
                ..Default::default()
            },
        )
        .await?;
    let mut seen = String::new();
    while seen.matches("tick").count() < 2 {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            futures::AsyncReadExt::read(&mut follow, &mut buf),
        )
        .await??;
        assert!(n > 0, "log stream ended");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    // Upstream's errors.
    let err = pods
        .logs("two", &LogParams::default())
        .await
        .expect_err("needs a container");
    assert!(
        err.to_string()
            .contains("a container name must be specified for pod two, choose one of: [a b]"),
        "{err}"
    );
    let Err(err) = pods
        .exec("pending", ["true"], &AttachParams::default())
        .await
    else {
        panic!("exec into an unbound pod worked");
    };
    assert!(
        err.to_string()
            .contains("pod pending does not have a host assigned"),
        "{err}"
    );

    // Exec: stdout, stderr, exit code.
    let mut p = pods
        .exec(
            "web",
            ["sh", "-c", "echo out; echo err >&2; exit 3"],
            &AttachParams::default().stderr(true),
        )
        .await?;
    let status = p.take_status().expect("status");
    let (out, err) = tokio::join!(read_all(p.stdout()), read_all(p.stderr()));
    assert_eq!((out.as_str(), err.as_str()), ("out\n", "err\n"));
    let status = status.await.expect("a status");
    assert_eq!(status.reason.as_deref(), Some("NonZeroExitCode"));
    let causes = status.details.and_then(|d| d.causes).unwrap_or_default();
    assert_eq!(causes[0].message.as_deref(), Some("3"));

    // Exec with stdin.
    let mut p = pods
        .exec(
            "web",
            ["sh", "-c", "head -c 5; echo"],
            &AttachParams::default().stdin(true).stderr(false),
        )
        .await?;
    let mut stdin = p.stdin().expect("stdin");
    stdin.write_all(b"abcde").await?;
    stdin.flush().await?;
    let out = read_all(p.stdout()).await;
    assert_eq!(out, "abcde\n");
    let status = p.take_status().expect("status").await.expect("a status");
    assert_eq!(status.status.as_deref(), Some("Success"));

    // Exec with a terminal.
    let mut p = pods
        .exec("web", ["tty"], &AttachParams::interactive_tty())
        .await?;
    let out = read_all(p.stdout()).await;
    assert!(out.starts_with("/dev/pts/"), "{out:?}");

    // Attach to the running main process.
    let mut p = pods
        .attach("web", &AttachParams::default().stdin(false).stderr(false))
        .await?;
    let mut stdout = p.stdout().expect("stdout");
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf)).await??;
    assert!(String::from_utf8_lossy(&buf[..n]).contains("tick"));
    p.abort();

    // Port-forward (WebSocket v4) to the pod's httpd.
    let mut pf = pods.portforward("web", &[8080]).await?;
    let mut s = pf.take_stream(8080).expect("stream");
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut resp = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut resp)).await??;
    assert!(
        resp.starts_with("HTTP/1.") && resp.contains("pf-ok"),
        "{resp:?}"
    );
    drop(s);
    pf.abort();

    // nodes/proxy reaches the kubelet.
    let req =
        http::Request::get(format!("/api/v1/nodes/{}/proxy/healthz", f.node)).body(Vec::new())?;
    let text = f.client.request_text(req).await?;
    assert_eq!(text.trim(), "ok");
    Ok(())
}

/// Runs stock kubectl against the fixture; returns (exit code, stdout, stderr).
async fn kubectl(
    f: &Fixture,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> anyhow::Result<(i32, String, String)> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut cmd = tokio::process::Command::new(kubectl);
    cmd.arg("--kubeconfig")
        .arg(&f.kubeconfig)
        .arg("--request-timeout=30s");
    cmd.args(args);
    cmd.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        w.write_all(data).await?;
        drop(w);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_kubectl_logs_exec_cp_port_forward() -> anyhow::Result<()> {
    let f = fixture().await?;

    let (code, out, _) = kubectl(&f, &["logs", "web", "--tail=1"], None).await?;
    assert_eq!((code, out.as_str()), (0, "tick\n"));
    let (code, _, err) = kubectl(&f, &["logs", "two"], None).await?;
    assert_eq!(code, 1);
    assert!(
        err.contains("Defaulted container") || err.contains("a container name must be specified"),
        "{err}"
    );

    // logs -f keeps streaming.
    let kubectl_bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let mut child = tokio::process::Command::new(&kubectl_bin)
        .arg("--kubeconfig")
        .arg(&f.kubeconfig)
        .args(["logs", "-f", "web", "--since=1s"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    while seen.matches("tick").count() < 2 {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf)).await??;
        assert!(n > 0, "kubectl logs -f ended: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.kill().await?;

    // attach streams the main process's output.
    let mut child = tokio::process::Command::new(&kubectl_bin)
        .arg("--kubeconfig")
        .arg(&f.kubeconfig)
        .args(["attach", "web"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    while !seen.contains("tick") {
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), stdout.read(&mut buf)).await??;
        assert!(n > 0, "kubectl attach ended: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.kill().await?;

    // exec: output, exit codes, stdin.
    let (code, out, err) = kubectl(
        &f,
        &[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "echo hi; echo e >&2; exit 7",
        ],
        None,
    )
    .await?;
    assert_eq!(
        (code, out.as_str(), err.trim()),
        (7, "hi\n", "e\ncommand terminated with exit code 7")
    );
    let (code, out, _) = kubectl(
        &f,
        &["exec", "-i", "web", "--", "sh", "-c", "wc -c"],
        Some(b"12345"),
    )
    .await?;
    assert_eq!((code, out.trim()), (0, "5"));

    // cp both ways.
    let tmp = tempfile::tempdir()?;
    let local = tmp.path().join("up.txt");
    std::fs::write(&local, "copied up\n")?;
    let (code, _, err) = kubectl(
        &f,
        &["cp", local.to_str().expect("path"), "web:/tmp/up.txt"],
        None,
    )
    .await?;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = kubectl(&f, &["exec", "web", "--", "cat", "/tmp/up.txt"], None).await?;
    assert_eq!(out, "copied up\n");
    let back = tmp.path().join("back.txt");
    let (code, _, err) = kubectl(
        &f,
        &["cp", "web:/tmp/up.txt", back.to_str().expect("path")],
        None,
    )
    .await?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&back)?, "copied up\n");

    // port-forward: SPDY in a WebSocket (kubectl's default), then plain SPDY.
    port_forward(&f, &[]).await?;
    port_forward(&f, &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")]).await?;
    Ok(())
}

/// `kubectl port-forward pod/web <local>:8080`, then two HTTP requests through it.
async fn port_forward(f: &Fixture, env: &[(&str, &str)]) -> anyhow::Result<()> {
    let kubectl_bin = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let mut pf = tokio::process::Command::new(&kubectl_bin)
        .envs(env.iter().copied())
        .arg("--kubeconfig")
        .arg(&f.kubeconfig)
        .args(["port-forward", "pod/web", &format!("{port}:8080")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut pf_out = pf.stdout.take().expect("stdout");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(20), pf_out.read(&mut buf)).await??;
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("Forwarding from"),
        "{env:?}"
    );
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
        let mut resp = String::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_string(&mut resp)).await??;
        assert!(resp.contains("pf-ok"), "{env:?}: {resp:?}");
    }
    pf.kill().await?;
    Ok(())
}

async fn curl(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new("curl")
        .args(["-sk", "--max-time", "10"])
        .args(args)
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `curl` of `url` with the client certificate `cert` (PEM pair written to `dir`) and more
/// arguments; the body, then the status code on the last line.
async fn curl_as(
    dir: &std::path::Path,
    (cert, key): &(String, String),
    args: &[&str],
) -> anyhow::Result<(String, String)> {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert)?;
    std::fs::write(&k, key)?;
    let mut all = vec![
        "--cert",
        c.to_str().expect("path"),
        "--key",
        k.to_str().expect("path"),
    ];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-w", "\n%{http_code}"]);
    let out = curl(&all).await?;
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    Ok((body.to_string(), code.to_string()))
}

/// Users other than the API server: RBAC on the Node decides, for client certificates and
/// bearer tokens alike, with upstream's messages; `nodes/stats` opens the stats only.
#[tokio::test(flavor = "multi_thread")]
async fn kubelet_server_authorizes_users_on_the_node() -> anyhow::Result<()> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let f = fixture().await?;
    let tmp = tempfile::tempdir()?;
    let base = format!("https://127.0.0.1:{}", f.kubelet_port);
    let logs = format!("{base}/containerLogs/default/web/main?tailLines=1");
    let stats = format!("{base}/stats/summary");

    // A user of the cluster CA without grants: nothing.
    let bob = f.pki.issue_client_cert("bob", &["devs"])?;
    let (body, code) = curl_as(tmp.path(), &bob, &[&logs]).await?;
    assert_eq!(
        (body.trim(), code.as_str()),
        (
            "Forbidden (user=bob, verb=get, resource=nodes, subresource=proxy)",
            "403"
        )
    );
    let (body, code) = curl_as(
        tmp.path(),
        &bob,
        &[
            "-X",
            "POST",
            &format!("{base}/exec/default/web/main?command=true"),
        ],
    )
    .await?;
    assert_eq!(
        (body.trim(), code.as_str()),
        (
            "Forbidden (user=bob, verb=create, resource=nodes, subresource=proxy)",
            "403"
        )
    );
    let (body, code) = curl_as(tmp.path(), &bob, &[&stats]).await?;
    assert_eq!(
        (body.trim(), code.as_str()),
        (
            "Forbidden (user=bob, verb=get, resource=nodes, subresource=stats)",
            "403"
        )
    );

    // Granted `get nodes/stats`: the stats, and still nothing else.
    let role: ClusterRole = serde_json::from_value(json!({
        "metadata": {"name": "stats-reader"},
        "rules": [{"apiGroups": [""], "resources": ["nodes/stats"], "verbs": ["get"]}],
    }))?;
    Api::<ClusterRole>::all(f.client.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "stats-readers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "stats-reader"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"},
            {"kind": "ServiceAccount", "name": "reader", "namespace": "default"},
        ],
    }))?;
    Api::<ClusterRoleBinding>::all(f.client.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let alice = f.pki.issue_client_cert("alice", &[])?;
    let (body, code) = curl_as(tmp.path(), &alice, &[&stats]).await?;
    assert_eq!(code, "200", "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(summary["node"]["nodeName"], json!(f.node));
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{summary}"
    );
    let (body, code) = curl_as(tmp.path(), &alice, &[&logs]).await?;
    assert_eq!(
        (body.trim(), code.as_str()),
        (
            "Forbidden (user=alice, verb=get, resource=nodes, subresource=proxy)",
            "403"
        )
    );

    // A service account's bearer token is reviewed by the API server.
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "reader"}}))?;
    let sas: Api<ServiceAccount> = Api::namespaced(f.client.clone(), "default");
    sas.create(&PostParams::default(), &sa).await?;
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"audiences": []}}))?;
    let token = sas
        .create_token_request("reader", &PostParams::default(), &tr)
        .await?
        .status
        .map(|s| s.token)
        .unwrap_or_default();
    let bearer = format!("Authorization: Bearer {token}");
    let out = curl(&["-H", &bearer, "-w", "\n%{http_code}", &logs]).await?;
    assert_eq!(out.trim(), "Forbidden (user=system:serviceaccount:default:reader, verb=get, resource=nodes, subresource=proxy)\n\n403");
    let out = curl(&[
        "-H",
        &bearer,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &stats,
    ])
    .await?;
    assert_eq!(out, "200");
    let out = curl(&[
        "-H",
        "Authorization: Bearer not-a-token",
        "-w",
        "\n%{http_code}",
        &stats,
    ])
    .await?;
    assert_eq!(out.trim(), "Unauthorized\n\n401");
    Ok(())
}

/// `/stats/summary` through the API server's `nodes/proxy`: the node and the running pod,
/// with figures from Docker.
#[tokio::test(flavor = "multi_thread")]
async fn stats_summary_through_the_api_server() -> anyhow::Result<()> {
    let f = fixture().await?;
    let req = http::Request::get(format!("/api/v1/nodes/{}/proxy/stats/summary", f.node))
        .body(Vec::new())?;
    let body = f.client.request_text(req).await?;
    let summary: serde_json::Value = serde_json::from_str(&body)?;
    let node = &summary["node"];
    assert_eq!(node["nodeName"], json!(f.node));
    for field in [
        "/cpu/usageCoreNanoSeconds",
        "/memory/availableBytes",
        "/fs/capacityBytes",
        "/fs/usedBytes",
        "/rlimit/curproc",
    ] {
        assert!(
            node.pointer(field).and_then(|v| v.as_u64()).unwrap_or(0) > 0,
            "node {field}: {node}"
        );
    }
    let pods = summary["pods"].as_array().cloned().unwrap_or_default();
    let web = pods
        .iter()
        .find(|p| p["podRef"] == json!({"name": "web", "namespace": "default", "uid": "uid-web"}))
        .ok_or_else(|| anyhow::anyhow!("no pod web in {summary}"))?;
    let main = &web["containers"][0];
    assert_eq!(main["name"], "main");
    assert!(
        main["cpu"]["usageCoreNanoSeconds"].as_u64().unwrap_or(0) > 0,
        "{main}"
    );
    assert!(main.pointer("/cpu/usageNanoCores").is_some(), "{main}");
    assert!(
        main["memory"]["workingSetBytes"].as_u64().unwrap_or(0) > 0,
        "{main}"
    );
    assert!(
        web["process_stats"]["process_count"].as_u64().unwrap_or(0) >= 2,
        "{web}"
    );
    // Only CPU and memory, as metrics-server asks.
    let req = http::Request::get(format!(
        "/api/v1/nodes/{}/proxy/stats/summary?only_cpu_and_memory=true",
        f.node
    ))
    .body(Vec::new())?;
    let small: serde_json::Value = serde_json::from_str(&f.client.request_text(req).await?)?;
    assert!(
        small["node"]["fs"].is_null() && small["node"]["cpu"].is_object(),
        "{small}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kubelet_server_requires_a_cluster_client_certificate() -> anyhow::Result<()> {
    let f = fixture().await?;
    let base = format!("https://127.0.0.1:{}", f.kubelet_port);
    let logs = format!("{base}/containerLogs/default/web/main");
    assert_eq!(curl(&[&format!("{base}/healthz")]).await?.trim(), "ok");
    assert_eq!(
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &logs]).await?,
        "401"
    );

    // The API server's kubelet client certificate is accepted.
    let tmp = tempfile::tempdir()?;
    let (cert, key) = (tmp.path().join("c.crt"), tmp.path().join("c.key"));
    std::fs::write(&cert, &f.pki.kubelet_client_cert_pem)?;
    std::fs::write(&key, &f.pki.kubelet_client_key_pem)?;
    let (cert, key) = (cert.to_str().expect("path"), key.to_str().expect("path"));
    let body = curl(&["--cert", cert, "--key", key, &format!("{logs}?tailLines=1")]).await?;
    assert_eq!(body, "tick\n");
    let missing = curl(&[
        "--cert",
        cert,
        "--key",
        key,
        &format!("{base}/containerLogs/default/web/nope"),
    ])
    .await?;
    assert_eq!(
        missing.trim(),
        "container \"nope\" in pod \"web\" is not available"
    );

    // A certificate from another CA does not get through the handshake.
    let other_key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kube-apiserver-kubelet-client");
    let other = params.self_signed(&other_key)?;
    std::fs::write(tmp.path().join("o.crt"), other.pem())?;
    std::fs::write(tmp.path().join("o.key"), other_key.serialize_pem())?;
    let code = curl(&[
        "--cert",
        tmp.path().join("o.crt").to_str().expect("path"),
        "--key",
        tmp.path().join("o.key").to_str().expect("path"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &logs,
    ])
    .await?;
    assert_eq!(code, "000");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_v4_exec_straight_to_the_kubelet() -> anyhow::Result<()> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;

    let f = fixture().await?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", f.kubelet_port)).await?;
    let tls = tokio_rustls::TlsConnector::from(f.pki.kubelet_client_config()?)
        .connect(rustls_pki_types::ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let url = format!(
        "wss://127.0.0.1:{}/exec/default/web/main?command=sh&command=-c&command=echo%20hi%3B%20exit%202&output=1&error=1",
        f.kubelet_port
    );
    let mut req = url.into_client_request()?;
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        http::HeaderValue::from_static("v4.channel.k8s.io"),
    );
    let (mut ws, resp) = tokio_tungstenite::client_async(req, tls).await?;
    assert_eq!(
        resp.headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"v4.channel.k8s.io"[..])
    );
    let mut stdout = Vec::new();
    let mut status = None;
    let mut close = None;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await? {
        match msg? {
            Message::Binary(b) if b.first() == Some(&1) => stdout.extend_from_slice(&b[1..]),
            Message::Binary(b) if b.first() == Some(&3) => {
                status = Some(serde_json::from_slice::<serde_json::Value>(&b[1..])?)
            }
            Message::Close(c) => close = c,
            _ => {}
        }
    }
    assert_eq!(stdout, b"hi\n");
    let status = status.expect("a status frame");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NonZeroExitCode");
    assert_eq!(status["details"]["causes"][0]["reason"], "ExitCode");
    assert_eq!(status["details"]["causes"][0]["message"], "2");
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1000));
    Ok(())
}

struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn previous_logs_come_from_the_last_instance() -> anyhow::Result<()> {
    let f = fixture().await?;
    let pods: Api<Pod> = Api::namespaced(f.client.clone(), "default");
    // A restarted instance of web/main, labelled with its restart count as the pod workers do.
    let name = format!("{}-restart1", f.container);
    let _guard = RemoveOnDrop(name.clone());
    let mut cmd = tokio::process::Command::new("docker");
    cmd.args(["run", "-d", "--name", &name]);
    for l in [
        format!("{}={}", kubelet::labels::NODE, f.node),
        format!("{}=default", kubelet::labels::POD_NAMESPACE),
        format!("{}=web", kubelet::labels::POD_NAME),
        format!("{}=main", kubelet::labels::CONTAINER_NAME),
        "io.kubernetes.container.restartCount=1".to_string(),
    ] {
        cmd.args(["--label", &l]);
    }
    cmd.args([IMAGE, "sh", "-c", "echo second; sleep 600"]);
    anyhow::ensure!(cmd.output().await?.status.success(), "docker run failed");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let logs = pods.logs("web", &LogParams::default()).await?;
        if logs == "second\n" {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "current logs: {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let previous = pods
        .logs(
            "web",
            &LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await?;
    assert!(
        previous.contains("hello\n") && previous.contains("tick\n"),
        "{previous:?}"
    );
    let err = pods
        .logs(
            "two",
            &LogParams {
                container: Some("a".into()),
                previous: true,
                ..Default::default()
            },
        )
        .await
        .expect_err("no previous instance");
    assert!(
        err.to_string()
            .contains("previous terminated container \"a\" in pod \"two\" not found"),
        "{err}"
    );
    Ok(())
}
