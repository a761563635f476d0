//! Node security over real sockets: the reconciled bootstrap RBAC policy, the Node
//! authorizer and NodeRestriction admission, bootstrap tokens and node client CSRs.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct TestServer {
    admin: Client,
    kubeconfig: PathBuf,
    pki: std::sync::Arc<apiserver::pki::Pki>,
    shutdown: CancellationToken,
    server: Option<apiserver::Server>,
}

impl TestServer {
    async fn start(dir: &Path) -> Result<Self> {
        let cfg = apiserver::Config::for_test(dir.join("data"));
        let shutdown = CancellationToken::new();
        let server = apiserver::start(cfg, shutdown.clone()).await?;
        let admin = client_from(&server.kubeconfig, |_| {}).await?;
        Ok(TestServer {
            admin,
            kubeconfig: server.kubeconfig.clone(),
            pki: server.pki.clone(),
            shutdown,
            server: Some(server),
        })
    }

    async fn cert(&self, name: &str, groups: &[&str]) -> Result<Client> {
        let (cert, key) = self.pki.issue_client_cert(name, groups)?;
        client_from(&self.kubeconfig, |u| *u = cert_user(&cert, &key)).await
    }

    async fn node(&self, name: &str) -> Result<Client> {
        self.cert(&format!("system:node:{name}"), &["system:nodes"])
            .await
    }

    async fn token(&self, token: &str) -> Result<Client> {
        client_from(&self.kubeconfig, |u| *u = json!({"token": token})).await
    }

    async fn stop(mut self) -> Result<()> {
        self.shutdown.cancel();
        if let Some(s) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(20), s.wait())
                .await
                .context("server did not stop")??;
        }
        Ok(())
    }
}

fn cert_user(cert: &str, key: &str) -> Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"client-certificate-data": b64(cert), "client-key-data": b64(key)})
}

/// A client from the admin kubeconfig with its user replaced.
async fn client_from(kubeconfig: &Path, user: impl FnOnce(&mut Value)) -> Result<Client> {
    let mut kc: Value = serde_yaml::from_str(&std::fs::read_to_string(kubeconfig)?)?;
    user(&mut kc["users"][0]["user"]);
    let kc = kube::config::Kubeconfig::from_yaml(&serde_yaml::to_string(&kc)?)?;
    let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(Client::try_from(conf)?)
}

/// Sends a request; `Ok(body)` on 2xx, `Err((code, message))` otherwise.
async fn call(
    c: &Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, (u16, String)> {
    let mut req = http::Request::builder().method(method).uri(path);
    let bytes = match body {
        Some(b) => {
            let ct = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            req = req.header("content-type", ct);
            serde_json::to_vec(&b).unwrap_or_default()
        }
        None => Vec::new(),
    };
    let req = req.body(bytes).map_err(|e| (0, e.to_string()))?;
    match c.request_text(req).await {
        Ok(text) => Ok(serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(kube::Error::Api(s)) => Err((s.code, s.message)),
        Err(e) => Err((0, e.to_string())),
    }
}

async fn get(c: &Client, path: &str) -> Result<Value, (u16, String)> {
    call(c, "GET", path, None).await
}

async fn post(c: &Client, path: &str, body: Value) -> Result<Value, (u16, String)> {
    call(c, "POST", path, Some(body)).await
}

async fn put(c: &Client, path: &str, body: Value) -> Result<Value, (u16, String)> {
    call(c, "PUT", path, Some(body)).await
}

async fn patch(c: &Client, path: &str, body: Value) -> Result<Value, (u16, String)> {
    call(c, "PATCH", path, Some(body)).await
}

fn ok<T>(r: Result<T, (u16, String)>) -> Result<T> {
    r.map_err(|(code, msg)| anyhow::anyhow!("{code}: {msg}"))
}

fn rules(role: &Value) -> Vec<Value> {
    role["rules"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_policy_is_reconciled_at_start() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path()).await?;
    let a = &s.admin;
    let base = "/apis/rbac.authorization.k8s.io/v1";
    for name in [
        "system:kube-scheduler",
        "system:kube-controller-manager",
        "system:node",
        "system:node-proxier",
        "system:kube-dns",
        "system:volume-scheduler",
        "system:basic-user",
        "system:discovery",
        "system:public-info-viewer",
        "system:node-bootstrapper",
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
    ] {
        let r = ok(get(a, &format!("{base}/clusterroles/{name}")).await)?;
        assert_eq!(
            r["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"], "true",
            "{name}"
        );
        assert_eq!(
            r["metadata"]["labels"]["kubernetes.io/bootstrapping"],
            "rbac-defaults"
        );
    }
    let sched = ok(get(a, &format!("{base}/clusterroles/system:kube-scheduler")).await)?;
    let want = rules(&sched);
    // Strip the scheduler role to one rule; protect basic-user and strip it too; drop a
    // subject from the discovery binding.
    let mut stripped = sched.clone();
    stripped["rules"] = json!([want[0]]);
    ok(put(
        a,
        &format!("{base}/clusterroles/system:kube-scheduler"),
        stripped,
    )
    .await)?;
    let mut basic = ok(get(a, &format!("{base}/clusterroles/system:basic-user")).await)?;
    basic["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] =
        json!("false");
    basic["rules"] = json!([{"verbs": ["create"], "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews"]}]);
    let r = ok(put(a, &format!("{base}/clusterroles/system:basic-user"), basic).await)?;
    assert_eq!(rules(&r).len(), 1);
    ok(patch(
        a,
        &format!("{base}/clusterrolebindings/system:discovery"),
        json!({"subjects": [{"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "extra"}]}),
    )
    .await)?;
    ok(call(
        a,
        "DELETE",
        &format!("{base}/clusterroles/system:node-proxier"),
        None,
    )
    .await)?;
    s.stop().await?;

    let s = TestServer::start(tmp.path()).await?;
    let a = &s.admin;
    let sched = ok(get(a, &format!("{base}/clusterroles/system:kube-scheduler")).await)?;
    assert_eq!(rules(&sched).len(), want.len(), "{sched}");
    for r in &want {
        assert!(rules(&sched).contains(r), "{r} missing after restart");
    }
    let basic = ok(get(a, &format!("{base}/clusterroles/system:basic-user")).await)?;
    assert_eq!(
        rules(&basic).len(),
        1,
        "a protected role is left alone: {basic}"
    );
    let disc = ok(get(a, &format!("{base}/clusterrolebindings/system:discovery")).await)?;
    let names: Vec<&str> = disc["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["extra", "system:authenticated"]);
    ok(get(a, &format!("{base}/clusterroles/system:node-proxier")).await)?;
    s.stop().await
}

async fn wait_for<F, Fut>(what: &str, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

fn pod_on(name: &str, node: &str, secret: &str, cm: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "nodeName": node,
        "containers": [{"name": "c", "image": "busybox",
            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": cm, "key": "k"}}}]}],
        "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
}

fn forbidden(r: Result<Value, (u16, String)>, want: &str) {
    match r {
        Err((403, m)) => assert!(m.contains(want), "{m:?} should contain {want:?}"),
        other => panic!("expected 403 with {want:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_authorizer_and_node_restriction() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path()).await?;
    let a = &s.admin;
    ok(post(a, "/api/v1/namespaces", json!({"metadata": {"name": "w"}})).await)?;
    for n in ["s1", "s2"] {
        ok(post(
            a,
            "/api/v1/namespaces/w/secrets",
            json!({"metadata": {"name": n}, "stringData": {"k": "v"}}),
        )
        .await)?;
    }
    for n in ["cm1", "cm2"] {
        ok(post(
            a,
            "/api/v1/namespaces/w/configmaps",
            json!({"metadata": {"name": n}, "data": {"k": "v"}}),
        )
        .await)?;
    }
    ok(post(
        a,
        "/api/v1/namespaces/w/pods",
        pod_on("p1", "n1", "s1", "cm1"),
    )
    .await)?;
    ok(post(
        a,
        "/api/v1/namespaces/w/pods",
        pod_on("p2", "n2", "s2", "cm2"),
    )
    .await)?;
    ok(post(a, "/api/v1/nodes", json!({"metadata": {"name": "n2"}})).await)?;

    let n1 = s.node("n1").await?;
    // Secrets and configmaps: only those of pods bound to the node.
    ok(get(&n1, "/api/v1/namespaces/w/secrets/s1").await)?;
    ok(get(&n1, "/api/v1/namespaces/w/configmaps/cm1").await)?;
    forbidden(
        get(&n1, "/api/v1/namespaces/w/secrets/s2").await,
        "secrets \"s2\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"w\": no relationship found between node 'n1' and this object",
    );
    forbidden(
        get(&n1, "/api/v1/namespaces/w/configmaps/cm2").await,
        "no relationship found",
    );
    forbidden(
        get(&n1, "/api/v1/namespaces/w/secrets").await,
        "cannot list resource \"secrets\"",
    );
    ok(get(
        &n1,
        "/api/v1/namespaces/w/secrets?fieldSelector=metadata.name%3Ds1",
    )
    .await)?;
    // Pods: its own, and lists scoped to it.
    ok(get(&n1, "/api/v1/namespaces/w/pods/p1").await)?;
    forbidden(
        get(&n1, "/api/v1/namespaces/w/pods/p2").await,
        "no relationship found",
    );
    let mine = ok(get(&n1, "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1").await)?;
    assert_eq!(mine["items"].as_array().map(Vec::len), Some(1));
    forbidden(
        get(&n1, "/api/v1/pods").await,
        "can only list/watch pods with spec.nodeName field selector",
    );
    // Pod status: only of pods bound to it; no ordinary pods.
    ok(patch(
        &n1,
        "/api/v1/namespaces/w/pods/p1/status",
        json!({"status": {"message": "hi"}}),
    )
    .await)?;
    forbidden(
        patch(
            &n1,
            "/api/v1/namespaces/w/pods/p2/status",
            json!({"status": {"message": "hi"}}),
        )
        .await,
        "node \"n1\" can only update pod status for pods with spec.nodeName set to itself",
    );
    forbidden(
        post(
            &n1,
            "/api/v1/namespaces/w/pods",
            pod_on("p3", "n1", "s1", "cm1"),
        )
        .await,
        "can only create mirror pods",
    );
    // Deletes: only pods bound to it (the stored pod decides).
    forbidden(
        call(&n1, "DELETE", "/api/v1/namespaces/w/pods/p2", None).await,
        "pods \"p2\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself",
    );
    ok(get(a, "/api/v1/namespaces/w/pods/p2").await)?;
    // Its own Node, with kubelet labels only; not other nodes.
    ok(post(
        &n1,
        "/api/v1/nodes",
        json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}}),
    )
    .await)?;
    forbidden(
        post(&n1, "/api/v1/nodes", json!({"metadata": {"name": "n3"}})).await,
        "node \"n1\" is not allowed to modify node \"n3\"",
    );
    ok(get(&n1, "/api/v1/nodes/n1").await)?;
    forbidden(
        get(&n1, "/api/v1/nodes/n2").await,
        "node 'n1' cannot read 'n2', only its own Node object",
    );
    ok(patch(
        &n1,
        "/api/v1/nodes/n1",
        json!({"metadata": {"labels": {"team": "a"}}}),
    )
    .await)?;
    ok(patch(
        &n1,
        "/api/v1/nodes/n1/status",
        json!({"status": {"phase": "Running"}}),
    )
    .await)?;
    forbidden(
        patch(
            &n1,
            "/api/v1/nodes/n1",
            json!({"metadata": {"labels": {"node-restriction.kubernetes.io/trusted": "yes"}}}),
        )
        .await,
        "is not allowed to modify labels: node-restriction.kubernetes.io/trusted",
    );
    forbidden(
        patch(
            &n1,
            "/api/v1/nodes/n1",
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        )
        .await,
        "node \"n1\" is not allowed to modify taints",
    );
    forbidden(
        patch(
            &n1,
            "/api/v1/nodes/n2",
            json!({"metadata": {"labels": {"team": "a"}}}),
        )
        .await,
        "node \"n1\" is not allowed to modify node \"n2\"",
    );
    // Its own Lease.
    let lease = |n: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n}, "spec": {"holderIdentity": n}});
    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    ok(post(&n1, leases, lease("n1")).await)?;
    forbidden(
        post(&n1, leases, lease("n2")).await,
        "can only access node lease with the same name as the requesting node",
    );
    ok(patch(
        &n1,
        &format!("{leases}/n1"),
        json!({"spec": {"holderIdentity": "x"}}),
    )
    .await)?;
    // Events.
    ok(post(&n1, "/api/v1/namespaces/w/events", json!({"metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "namespace": "w", "name": "p1"}, "reason": "R", "message": "m"})).await)?;
    // Service-account tokens: bound to its pods only.
    let p1 = ok(get(a, "/api/v1/namespaces/w/pods/p1").await)?;
    let p2 = ok(get(a, "/api/v1/namespaces/w/pods/p2").await)?;
    let tr = |p: &Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {
        "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": p["metadata"]["name"], "uid": p["metadata"]["uid"]}}})
    };
    let token = "/api/v1/namespaces/w/serviceaccounts/default/token";
    ok(post(
        a,
        "/api/v1/namespaces/w/serviceaccounts",
        json!({"metadata": {"name": "default"}}),
    )
    .await)
    .ok();
    ok(post(&n1, token, tr(&p1)).await)?;
    forbidden(
        post(&n1, token, tr(&p2)).await,
        "node requested token bound to a pod scheduled on a different node",
    );
    // Anyone else is unaffected: the admin still can.
    ok(patch(
        a,
        "/api/v1/nodes/n2",
        json!({"metadata": {"labels": {"node-restriction.kubernetes.io/x": "y"}}}),
    )
    .await)?;
    // The node may delete its own pod; that revokes its access to the pod's secret.
    ok(call(
        &n1,
        "DELETE",
        "/api/v1/namespaces/w/pods/p1?gracePeriodSeconds=0",
        None,
    )
    .await)?;
    wait_for("secret access revoked", || async {
        matches!(
            get(&n1, "/api/v1/namespaces/w/secrets/s1").await,
            Err((403, _))
        )
    })
    .await?;
    s.stop().await
}

async fn whoami(c: &Client) -> Result<Value, (u16, String)> {
    let v = post(
        c,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .await?;
    Ok(v["status"]["userInfo"].clone())
}

fn node_csr(cn: &str, org: &str) -> Value {
    use base64::Engine;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, org);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"generateName": "node-csr-"},
        "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
            "request": base64::engine::general_purpose::STANDARD.encode(pem)}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_and_node_client_csrs() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path()).await?;
    let a = &s.admin;
    // A bootstrap token Secret authenticates as system:bootstrap:<id>.
    let secret = |id: &str, secret: &str, exp: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}")}, "type": "bootstrap.kubernetes.io/token",
        "stringData": {"token-id": id, "token-secret": secret, "usage-bootstrap-authentication": "true",
            "auth-extra-groups": "system:bootstrappers:extra,not-allowed", "expiration": exp}})
    };
    ok(post(
        a,
        "/api/v1/namespaces/kube-system/secrets",
        secret("abcdef", "0123456789abcdef", "2999-01-01T00:00:00Z"),
    )
    .await)?;
    ok(post(
        a,
        "/api/v1/namespaces/kube-system/secrets",
        secret("expird", "0123456789abcdef", "2001-01-01T00:00:00Z"),
    )
    .await)?;
    let me = ok(whoami(&s.token("abcdef.0123456789abcdef").await?).await)?;
    assert_eq!(me["username"], "system:bootstrap:abcdef");
    assert_eq!(
        me["groups"],
        json!([
            "system:bootstrappers",
            "system:bootstrappers:extra",
            "system:authenticated"
        ])
    );
    for bad in [
        "abcdef.0123456789abcdee",
        "expird.0123456789abcdef",
        "zzzzzz.0123456789abcdef",
    ] {
        let r = whoami(&s.token(bad).await?).await;
        assert_eq!(r.err().map(|e| e.0), Some(401), "{bad}");
    }
    // A token that may not join (no nodeclient grant) gets no certificate.
    let other = s.token("abcdef.0123456789abcdef").await?;
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    forbidden(
        post(&other, csrs, node_csr("system:node:x", "system:nodes")).await,
        "cannot create resource",
    );

    // The server's join token: create a node CSR; it is approved and signed.
    let join = s.server.as_ref().unwrap().join_token.clone();
    let path = tmp.path().join("data").join("node-token");
    assert_eq!(std::fs::read_to_string(&path)?.trim(), join);
    let (pin, bare) = apiserver::auth::bootstrap_token::split_full(&join);
    let ca = ok(get(a, "/api/v1/namespaces/kube-public/configmaps/cluster-info").await)?;
    assert!(ca["data"]["kubeconfig"]
        .as_str()
        .unwrap()
        .contains("certificate-authority-data"));
    assert_eq!(pin, apiserver::pki::ca_cert_hash(&s.pki.ca_cert_pem));
    let joiner = s.token(bare).await?;
    let me = ok(whoami(&joiner).await)?;
    assert!(me["username"]
        .as_str()
        .unwrap()
        .starts_with("system:bootstrap:"));
    let created = ok(post(&joiner, csrs, node_csr("system:node:n9", "system:nodes")).await)?;
    assert_eq!(created["spec"]["username"], me["username"]);
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    let wrong = ok(post(&joiner, csrs, node_csr("system:node:n9", "system:masters")).await)?;
    let url = format!("{csrs}/{name}");
    wait_for("the node CSR to be approved and signed", || async {
        get(&joiner, &url)
            .await
            .is_ok_and(|c| c["status"]["certificate"].is_string())
    })
    .await?;
    let issued = ok(get(&joiner, &url).await)?;
    assert_eq!(issued["status"]["conditions"][0]["type"], "Approved");
    assert_eq!(issued["status"]["conditions"][0]["reason"], "AutoApproved");
    // The certificate works as system:node:n9 in system:nodes.
    use base64::Engine;
    let cert = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(issued["status"]["certificate"].as_str().unwrap())?,
    )?;
    let wrong_name = wrong["metadata"]["name"].as_str().unwrap();
    let w = ok(get(a, &format!("{csrs}/{wrong_name}")).await)?;
    assert!(
        w["status"]["conditions"].is_null(),
        "a CSR for another group is not approved: {w}"
    );
    assert!(cert.contains("BEGIN CERTIFICATE"));
    s.stop().await
}

/// A ClusterRole `name` with `rules`, bound to `user`.
async fn grant(a: &Client, name: &str, user: &str, rules: Value) -> Result<()> {
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": name}, "rules": rules});
    ok(post(a, "/apis/rbac.authorization.k8s.io/v1/clusterroles", role).await)?;
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]});
    ok(post(
        a,
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        binding,
    )
    .await)?;
    Ok(())
}

/// The error `call` ends with once RBAC (which reads bindings from a cache) has the caller's
/// grant: retried while it says `cannot update`, for up to 15 s.
async fn once_granted<F, Fut>(mut call: F) -> (u16, String)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, (u16, String)>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match call().await {
            Err((403, m))
                if m.contains("cannot update") && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other.err().unwrap_or_default(),
        }
    }
}

fn client_csr(cn: &str, org: &str) -> Value {
    let mut csr = node_csr(cn, org);
    csr["metadata"] = json!({"generateName": "user-csr-"});
    csr["spec"]["signerName"] = json!("kubernetes.io/kube-apiserver-client");
    csr
}

/// `certificatesigningrequests/<name>/approval` (what `kubectl certificate approve|deny`
/// writes): only the conditions change, upstream's condition rules hold, only users allowed
/// to `approve` on the signer may, and an approved client CSR is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_approval_is_authorized_validated_and_signed() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path()).await?;
    let a = &s.admin;
    let csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests";
    let disc = ok(get(a, "/apis/certificates.k8s.io/v1").await)?;
    let approval = disc["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "certificatesigningrequests/approval")
        .cloned()
        .unwrap_or_default();
    assert_eq!(approval["verbs"], json!(["get", "patch", "update"]));

    let created = ok(post(a, csrs, client_csr("carol", "devs")).await)?;
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    let url = format!("{csrs}/{name}");
    let approve = |mut csr: Value, types: &[&str]| {
        csr["status"]["conditions"] = Value::Array(
            types
                .iter()
                .map(|t| json!({"type": t, "status": "True", "reason": "KubectlApprove", "message": "This CSR was approved by kubectl certificate approve."}))
                .collect(),
        );
        csr
    };

    // May update the subresource but not approve for the signer: refused by admission.
    grant(a, "csr-approver-without-signer", "dave", json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests", "certificatesigningrequests/approval"], "verbs": ["get", "update"]}])).await?;
    let dave = s.cert("dave", &[]).await?;
    let approval_url = format!("{url}/approval");
    let (code, msg) = once_granted(|| {
        put(
            &dave,
            &approval_url,
            approve(created.clone(), &["Approved"]),
        )
    })
    .await;
    assert_eq!(code, 403, "{msg}");
    assert_eq!(
        msg,
        format!("certificatesigningrequests.certificates.k8s.io \"{name}\" is forbidden: user not permitted to approve requests with signerName \"kubernetes.io/kube-apiserver-client\"")
    );

    // Approved and Denied together, or a final condition that is not True: invalid.
    let (code, msg) = put(
        a,
        &format!("{url}/approval"),
        approve(created.clone(), &["Approved", "Denied"]),
    )
    .await
    .unwrap_err();
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("Approved and Denied conditions are mutually exclusive"),
        "{msg}"
    );

    // The admin approves; a changed spec in the body is ignored.
    let mut body = approve(created.clone(), &["Approved"]);
    body["spec"]["usages"] = json!(["server auth"]);
    let approved = ok(put(a, &format!("{url}/approval"), body).await)?;
    assert_eq!(approved["status"]["conditions"][0]["type"], "Approved");
    assert!(approved["status"]["conditions"][0]["lastUpdateTime"].is_string());
    assert_eq!(approved["spec"]["usages"], created["spec"]["usages"]);
    // Once approved, the condition cannot be taken back.
    let (code, msg) = put(
        a,
        &format!("{url}/approval"),
        approve(approved.clone(), &[]),
    )
    .await
    .unwrap_err();
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("updates may not remove a condition of type \"Approved\""),
        "{msg}"
    );

    // The signer issues the certificate; it authenticates as carol in devs.
    wait_for("the approved CSR to be signed", || async {
        get(a, &url)
            .await
            .is_ok_and(|c| c["status"]["certificate"].is_string())
    })
    .await?;
    let issued = ok(get(a, &url).await)?;
    use base64::Engine;
    let cert = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(issued["status"]["certificate"].as_str().unwrap())?,
    )?;
    assert!(cert.contains("BEGIN CERTIFICATE"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let year = apiserver::pki::user_from_client_cert_pem(&cert).unwrap();
    assert!(year.not_after > now + 364 * 86400, "{year:?}");

    // spec.expirationSeconds: at least 600 (upstream's message), and honoured by the signer.
    let mut short = client_csr("gina", "devs");
    short["spec"]["expirationSeconds"] = json!(599);
    let (code, msg) = post(a, csrs, short.clone()).await.unwrap_err();
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"),
        "{msg}"
    );
    short["spec"]["expirationSeconds"] = json!(3600);
    let short = ok(post(a, csrs, short).await)?;
    let short_url = format!("{csrs}/{}", short["metadata"]["name"].as_str().unwrap());
    ok(put(
        a,
        &format!("{short_url}/approval"),
        approve(short.clone(), &["Approved"]),
    )
    .await)?;
    wait_for("the one-hour CSR to be signed", || async {
        get(a, &short_url)
            .await
            .is_ok_and(|c| c["status"]["certificate"].is_string())
    })
    .await?;
    let issued_short = ok(get(a, &short_url).await)?;
    let pem = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(issued_short["status"]["certificate"].as_str().unwrap())?,
    )?;
    let hour = apiserver::pki::user_from_client_cert_pem(&pem).unwrap();
    assert!(
        (now + 3500..=now + 3700).contains(&hour.not_after),
        "valid for an hour: {hour:?}, now {now}"
    );

    // A plain status write may not set a certificate without `sign` on the signer.
    let other = ok(post(a, csrs, client_csr("erin", "devs")).await)?;
    let other_name = other["metadata"]["name"].as_str().unwrap();
    let mut forged = other.clone();
    forged["status"] = json!({"certificate": issued["status"]["certificate"]});
    grant(a, "csr-status-writer", "frank", json!([{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests/status"], "verbs": ["update"]}])).await?;
    let frank = s.cert("frank", &[]).await?;
    let status_url = format!("{csrs}/{other_name}/status");
    let (code, msg) = once_granted(|| put(&frank, &status_url, forged.clone())).await;
    assert_eq!(code, 403, "{msg}");
    assert_eq!(
        msg,
        format!("certificatesigningrequests.certificates.k8s.io \"{other_name}\" is forbidden: user not permitted to sign requests with signerName \"kubernetes.io/kube-apiserver-client\"")
    );
    s.stop().await
}
