//! Security end to end over real sockets: each authenticator, RBAC with escalation
//! prevention, the review APIs, impersonation, and admission plugins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

struct TestServer {
    admin: Client,
    kubeconfig: PathBuf,
    dir: PathBuf,
    pki: std::sync::Arc<apiserver::pki::Pki>,
    shutdown: CancellationToken,
    server: Option<apiserver::Server>,
}

const TOKENS: &str = "tok-alice,alice,uid-alice,\"devs,qa\"\ntok-bob,bob,uid-bob\n";

impl TestServer {
    async fn start(dir: &Path, tweak: impl FnOnce(&mut apiserver::Config)) -> Result<Self> {
        let tokens = dir.join("tokens.csv");
        std::fs::write(&tokens, TOKENS)?;
        let mut cfg = apiserver::Config::for_test(dir.join("data"));
        cfg.token_auth_file = Some(tokens);
        tweak(&mut cfg);
        let shutdown = CancellationToken::new();
        let server = apiserver::start(cfg, shutdown.clone()).await?;
        let admin = client_from(&server.kubeconfig, |_| {}).await?;
        Ok(TestServer {
            admin,
            kubeconfig: server.kubeconfig.clone(),
            dir: dir.join("data"),
            pki: server.pki.clone(),
            shutdown,
            server: Some(server),
        })
    }

    async fn with_user(&self, user: Value) -> Result<Client> {
        client_from(&self.kubeconfig, |u| *u = user).await
    }

    async fn token(&self, token: &str) -> Result<Client> {
        self.with_user(json!({"token": token})).await
    }

    async fn anonymous(&self) -> Result<Client> {
        self.with_user(json!({})).await
    }

    async fn cert(&self, name: &str, groups: &[&str]) -> Result<Client> {
        let (cert, key) = self.pki.issue_client_cert(name, groups)?;
        self.with_user(cert_user(&cert, &key)).await
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

fn api_err(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.message.clone()),
        other => (0, other.to_string()),
    }
}

async fn post(c: &Client, path: &str, body: Value) -> Result<Value, kube::Error> {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(kube::Error::HttpError)?;
    let text = c.request_text(req).await?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get_text(c: &Client, path: &str) -> Result<String, kube::Error> {
    let req = http::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    c.request_text(req).await
}

async fn whoami(c: &Client) -> Result<Value, kube::Error> {
    let v = post(
        c,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    .await?;
    Ok(v["status"]["userInfo"].clone())
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

async fn create(c: &Client, path: &str, body: Value) -> Result<Value> {
    post(c, path, body)
        .await
        .with_context(|| format!("POST {path}"))
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
}

async fn namespace(c: &Client, name: &str, labels: Value) -> Result<()> {
    create(
        c,
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticators() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;

    // Static token: user, uid and groups from the CSV.
    let alice = s.token("tok-alice").await?;
    let me = whoami(&alice).await?;
    assert_eq!(me["username"], "alice");
    assert_eq!(me["uid"], "uid-alice");
    assert_eq!(me["groups"], json!(["devs", "qa", "system:authenticated"]));

    // Unknown token: 401 (not anonymous).
    let bad = s.token("tok-nobody").await?;
    assert_eq!(api_err(whoami(&bad).await.unwrap_err()).0, 401);

    // Client certificate from the cluster CA: CN user, O groups.
    let carol = s.cert("carol", &["team"]).await?;
    let me = whoami(&carol).await?;
    assert_eq!(me["username"], "carol");
    assert_eq!(me["groups"], json!(["team", "system:authenticated"]));

    // A certificate from another CA is refused at the TLS layer.
    let other = apiserver::pki::load_or_create(&tmp.path().join("other"), &[])?;
    let (cert, key) = other.issue_client_cert("mallory", &["system:masters"])?;
    let mallory = s.with_user(cert_user(&cert, &key)).await?;
    let err = whoami(&mallory).await.unwrap_err();
    assert!(!matches!(err, kube::Error::Api(_)), "{err}");

    // Anonymous: the public info paths, nothing else.
    let anon = s.anonymous().await?;
    assert_eq!(get_text(&anon, "/healthz").await?, "ok");
    assert!(get_text(&anon, "/version").await?.contains("\"minor\""));
    let (code, msg) = api_err(
        Api::<ConfigMap>::namespaced(anon.clone(), "default")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "configmaps is forbidden: User \"system:anonymous\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"default\""
    );
    let (code, msg) = api_err(get_text(&anon, "/apis").await.unwrap_err());
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "forbidden: User \"system:anonymous\" cannot get path \"/apis\""
    );
    s.stop().await?;

    // --anonymous-auth=false: no credentials is 401.
    let tmp2 = tempfile::tempdir()?;
    let s = TestServer::start(tmp2.path(), |c| c.anonymous_auth = false).await?;
    let anon = s.anonymous().await?;
    assert_eq!(
        api_err(get_text(&anon, "/version").await.unwrap_err()).0,
        401
    );
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;
    let ns = "sa-test";
    namespace(&s.admin, ns, json!({})).await?;
    let sa = create(
        &s.admin,
        &format!("/api/v1/namespaces/{ns}/serviceaccounts"),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}}),
    )
    .await?;
    let mut p = pod("p");
    p["spec"]["serviceAccountName"] = json!("robot");
    let p = create(&s.admin, &format!("/api/v1/namespaces/{ns}/pods"), p).await?;
    let token_path = format!("/api/v1/namespaces/{ns}/serviceaccounts/robot/token");

    // A token bound to the pod.
    let tr = create(
        &s.admin,
        &token_path,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}}),
    )
    .await?;
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    assert_eq!(tr["spec"]["boundObjectRef"]["uid"], p["metadata"]["uid"]);
    let token = tr["status"]["token"].as_str().context("token")?.to_string();
    let robot = s.token(&token).await?;
    let me = whoami(&robot).await?;
    assert_eq!(me["username"], "system:serviceaccount:sa-test:robot");
    assert_eq!(me["uid"], sa["metadata"]["uid"]);
    assert_eq!(
        me["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:sa-test",
            "system:authenticated"
        ])
    );
    assert_eq!(
        me["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["p"])
    );
    // Authenticated, but RBAC grants it nothing.
    let (code, msg) = api_err(
        Api::<Pod>::namespaced(robot.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(msg, "pods is forbidden: User \"system:serviceaccount:sa-test:robot\" cannot list resource \"pods\" in API group \"\" in the namespace \"sa-test\"");

    // Too short a lifetime is invalid; a wrong bound uid conflicts.
    let (code, msg) = api_err(
        post(
            &s.admin,
            &token_path,
            json!({"spec": {"expirationSeconds": 100}}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 422, "{msg}");
    assert!(
        msg.contains("may not specify a duration less than 10 minutes"),
        "{msg}"
    );
    let (code, _) = api_err(
        post(
            &s.admin,
            &token_path,
            json!({"spec": {"boundObjectRef": {"kind": "Pod", "name": "p", "uid": "x"}}}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 409);

    // A token for another audience does not authenticate to the API server.
    let other = create(
        &s.admin,
        &token_path,
        json!({"spec": {"audiences": ["vault"]}}),
    )
    .await?;
    let vault = s
        .token(other["status"]["token"].as_str().context("token")?)
        .await?;
    assert_eq!(api_err(whoami(&vault).await.unwrap_err()).0, 401);
    // ... but a TokenReview for that audience accepts it.
    let review = create(
        &s.admin,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": other["status"]["token"], "audiences": ["vault"]}}),
    )
    .await?;
    assert_eq!(review["status"]["authenticated"], true);
    assert_eq!(
        review["status"]["user"]["username"],
        "system:serviceaccount:sa-test:robot"
    );

    // An expired token signed with the server's own key is refused.
    let signer = apiserver::auth::jwt::Signer::load_or_create(&s.dir.join("tls/sa.key"))?;
    let now = chrono::Utc::now().timestamp();
    let expired = signer.sign(&json!({
        "aud": ["https://kubernetes.default.svc.cluster.local"], "exp": now - 10, "iat": now - 4000, "nbf": now - 4000,
        "iss": "https://kubernetes.default.svc.cluster.local", "sub": "system:serviceaccount:sa-test:robot",
        "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": "robot", "uid": sa["metadata"]["uid"]}},
    }))?;
    assert_eq!(
        api_err(whoami(&s.token(&expired).await?).await.unwrap_err()).0,
        401
    );

    // Legacy Secret-based token: filled in by the server, valid while the Secret lives.
    let secret = create(
        &s.admin,
        &format!("/api/v1/namespaces/{ns}/secrets"),
        json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
            "metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}}}),
    )
    .await?;
    let secret: Secret = serde_json::from_value(secret)?;
    let legacy = secret
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .context("token data")?;
    let legacy = String::from_utf8(legacy.0.clone())?;
    let legacy_client = s.token(&legacy).await?;
    assert_eq!(
        whoami(&legacy_client).await?["username"],
        "system:serviceaccount:sa-test:robot"
    );
    Api::<Secret>::namespaced(s.admin.clone(), ns)
        .delete("robot-token", &DeleteParams::default())
        .await?;
    assert_eq!(api_err(whoami(&legacy_client).await.unwrap_err()).0, 401);

    // Deleting the bound pod revokes the pod-bound token, not the unbound one.
    let unbound = create(&s.admin, &token_path, json!({})).await?;
    let unbound = s
        .token(unbound["status"]["token"].as_str().context("token")?)
        .await?;
    Api::<Pod>::namespaced(s.admin.clone(), ns)
        .delete("p", &DeleteParams::default().grace_period(0))
        .await?;
    wait_for("pod gone", || async {
        Api::<Pod>::namespaced(s.admin.clone(), ns)
            .get_opt("p")
            .await
            .ok()
            == Some(None)
    })
    .await?;
    assert_eq!(api_err(whoami(&robot).await.unwrap_err()).0, 401);
    assert!(whoami(&unbound).await.is_ok());
    // Deleting the account revokes every token.
    let req = http::Request::delete(format!("/api/v1/namespaces/{ns}/serviceaccounts/robot"))
        .body(Vec::new())?;
    s.admin.request_text(req).await?;
    assert_eq!(api_err(whoami(&unbound).await.unwrap_err()).0, 401);
    s.stop().await
}

async fn can_i(c: &Client, ns: &str, verb: &str, resource: &str) -> Result<bool> {
    let v = create(
        c,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "resource": resource}}}),
    )
    .await?;
    Ok(v["status"]["allowed"] == true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_view_binding_escalation_and_impersonation() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;
    for ns in ["r1", "r2"] {
        namespace(&s.admin, ns, json!({})).await?;
    }
    let alice = s.token("tok-alice").await?;
    let bob = s.token("tok-bob").await?;
    create(
        &s.admin,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/r1/rolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "alice-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}),
    )
    .await?;
    let pods_r1 = Api::<Pod>::namespaced(alice.clone(), "r1");
    wait_for("alice may list pods in r1 (view aggregated)", || async {
        pods_r1.list(&ListParams::default()).await.is_ok()
    })
    .await?;
    let (code, msg) = api_err(
        Api::<Pod>::namespaced(alice.clone(), "r2")
            .list(&ListParams::default())
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(msg, "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"r2\"");
    assert_eq!(
        api_err(
            Api::<Secret>::namespaced(alice.clone(), "r1")
                .list(&ListParams::default())
                .await
                .unwrap_err()
        )
        .0,
        403
    );
    let (code, msg) = api_err(
        post(
            &alice,
            "/api/v1/namespaces/r1/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 403, "{msg}");

    // can-i answers truly, and the rules review lists the grant.
    assert!(can_i(&alice, "r1", "list", "pods").await?);
    assert!(!can_i(&alice, "r1", "delete", "pods").await?);
    assert!(!can_i(&alice, "r2", "get", "pods").await?);
    let rules = create(
        &alice,
        "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview", "spec": {"namespace": "r1"}}),
    )
    .await?;
    let rr = rules["status"]["resourceRules"]
        .as_array()
        .context("rules")?;
    assert!(rr.iter().any(|r| r["resources"]
        .as_array()
        .is_some_and(|x| x.contains(&json!("pods")))
        && r["verbs"] == json!(["get", "list", "watch"])));
    assert!(!rr.iter().any(|r| r["verbs"]
        .as_array()
        .is_some_and(|v| v.contains(&json!("delete")))
        && r["resources"]
            .as_array()
            .is_some_and(|x| x.contains(&json!("pods")))));
    // SubjectAccessReview by the admin about alice.
    let sar = create(
        &s.admin,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": "alice", "resourceAttributes": {"namespace": "r1", "verb": "watch", "resource": "pods"}}}),
    )
    .await?;
    assert_eq!(sar["status"]["allowed"], true);
    assert_eq!(
        sar["status"]["reason"],
        "RBAC: allowed by RoleBinding \"alice-view\" of ClusterRole \"view\" to User \"alice\" in namespace \"r1\""
    );

    // Escalation: alice may write role bindings in r1 but not grant admin, which she lacks.
    create(
        &s.admin,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/r1/roles",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "binder"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings", "roles"], "verbs": ["create", "get", "list"]}]}),
    )
    .await?;
    create(
        &s.admin,
        "/apis/rbac.authorization.k8s.io/v1/namespaces/r1/rolebindings",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "alice-binder"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "binder"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]}),
    )
    .await?;
    let binding = |role: &str, user: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": format!("{user}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})
    };
    let rb_path = "/apis/rbac.authorization.k8s.io/v1/namespaces/r1/rolebindings";
    wait_for("alice may create role bindings", || async {
        can_i(&alice, "r1", "create", "rolebindings")
            .await
            .unwrap_or(false)
    })
    .await?;
    let (code, msg) = api_err(
        post(&alice, rb_path, binding("admin", "bob"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403, "{msg}");
    assert!(
        msg.starts_with("rolebindings.rbac.authorization.k8s.io \"bob-admin\" is forbidden: user \"alice\" (groups=[\"devs\" \"qa\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:["),
        "{msg}"
    );
    // Granting what she holds (view) is fine.
    post(&alice, rb_path, binding("view", "bob")).await?;
    // A role with more than she holds is refused too.
    let (code, _) = api_err(
        post(&alice, "/apis/rbac.authorization.k8s.io/v1/namespaces/r1/roles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "big"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}))
        .await
        .unwrap_err(),
    );
    assert_eq!(code, 403);
    // With `bind` on the admin ClusterRole she may bind it.
    create(
        &s.admin,
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "bind-admin"},
            "rules": [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["admin"]}]}),
    )
    .await?;
    create(&s.admin, rb_path, {
        let mut b = binding("bind-admin", "alice");
        b["metadata"]["name"] = json!("alice-bind-admin");
        b
    })
    .await?;
    wait_for("alice may bind admin", || async {
        post(&alice, rb_path, binding("admin", "bob")).await.is_ok()
    })
    .await?;

    // Impersonation: bob may not; the admin may, and then acts as alice.
    let as_alice = |base: &Path| {
        let base = base.to_path_buf();
        async move {
            let mut kc: Value = serde_yaml::from_str(&std::fs::read_to_string(&base)?)?;
            kc["users"][0]["user"] = json!({"token": "tok-bob", "as": "alice"});
            let kc = kube::config::Kubeconfig::from_yaml(&serde_yaml::to_string(&kc)?)?;
            let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            anyhow::Ok(Client::try_from(conf)?)
        }
    };
    let bob_as_alice = as_alice(&s.kubeconfig).await?;
    let (code, msg) = api_err(whoami(&bob_as_alice).await.unwrap_err());
    assert_eq!(code, 403);
    assert_eq!(msg, "users \"alice\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope");
    let admin_as_alice = client_from(&s.kubeconfig, |u| {
        u["as"] = json!("alice");
        u["as-groups"] = json!(["devs"]);
    })
    .await?;
    let me = whoami(&admin_as_alice).await?;
    assert_eq!(me["username"], "alice");
    assert_eq!(me["groups"], json!(["devs", "system:authenticated"]));
    assert!(Api::<Pod>::namespaced(admin_as_alice.clone(), "r2")
        .list(&ListParams::default())
        .await
        .is_err());
    let _ = bob;
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_plugins() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;
    // ResourceQuota: the third pod is over `pods: 2`.
    namespace(&s.admin, "q1", json!({})).await?;
    create(
        &s.admin,
        "/api/v1/namespaces/q1/resourcequotas",
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"}, "spec": {"hard": {"pods": "2"}}}),
    )
    .await?;
    for n in ["p1", "p2"] {
        create(&s.admin, "/api/v1/namespaces/q1/pods", pod(n)).await?;
    }
    let (code, msg) = api_err(
        post(&s.admin, "/api/v1/namespaces/q1/pods", pod("p3"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "pods \"p3\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"
    );
    let pods = Api::<Pod>::namespaced(s.admin.clone(), "q1");
    assert!(pods.get_opt("p3").await?.is_none());

    // ServiceAccount: the default account, the projected token volume in every container.
    let p1 = pods.get("p1").await?;
    let spec = p1.spec.context("spec")?;
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let vol = spec
        .volumes
        .as_ref()
        .and_then(|v| v.iter().find(|v| v.name.starts_with("kube-api-access-")))
        .context("token volume")?;
    let sources = vol
        .projected
        .as_ref()
        .and_then(|p| p.sources.clone())
        .context("sources")?;
    assert_eq!(
        sources[0]
            .service_account_token
            .as_ref()
            .map(|t| t.path.as_str()),
        Some("token")
    );
    assert_eq!(
        sources[1].config_map.as_ref().map(|c| c.name.as_str()),
        Some("kube-root-ca.crt")
    );
    let mount = &spec.containers[0]
        .volume_mounts
        .as_ref()
        .context("mounts")?[0];
    assert_eq!(
        mount.mount_path,
        "/var/run/secrets/kubernetes.io/serviceaccount"
    );
    assert_eq!(mount.name, vol.name);
    let ca = Api::<ConfigMap>::namespaced(s.admin.clone(), "q1")
        .get("kube-root-ca.crt")
        .await?;
    assert!(ca.data.context("data")?["ca.crt"].contains("BEGIN CERTIFICATE"));
    let mut missing = pod("nosa");
    missing["spec"]["serviceAccountName"] = json!("ghost");
    let (code, msg) = api_err(
        post(&s.admin, "/api/v1/namespaces/q1/pods", missing)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        msg.contains("error looking up service account q1/ghost"),
        "{msg}"
    );

    // LimitRanger: defaults applied; over the max refused.
    namespace(&s.admin, "l1", json!({})).await?;
    create(
        &s.admin,
        "/api/v1/namespaces/l1/limitranges",
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
            "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
                "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}}]}}),
    )
    .await?;
    let d = create(&s.admin, "/api/v1/namespaces/l1/pods", pod("d")).await?;
    let res = &d["spec"]["containers"][0]["resources"];
    assert_eq!(res["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
    assert_eq!(res["requests"], json!({"cpu": "100m", "memory": "256Mi"}));
    assert!(d["metadata"]["annotations"]["kubernetes.io/limit-ranger"]
        .as_str()
        .is_some_and(|a| a.starts_with("LimitRanger plugin set: ")));
    let mut big = pod("big");
    big["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
    let (code, msg) = api_err(
        post(&s.admin, "/api/v1/namespaces/l1/pods", big)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );

    // PodSecurity restricted: a privileged pod is refused, a hardened one admitted.
    namespace(
        &s.admin,
        "ps1",
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await?;
    let mut privileged = pod("priv");
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let (code, msg) = api_err(
        post(&s.admin, "/api/v1/namespaces/ps1/pods", privileged)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert!(
        msg.starts_with("pods \"priv\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false"),
        "{msg}"
    );
    let mut good = pod("good");
    good["spec"]["securityContext"] =
        json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
    good["spec"]["containers"][0]["securityContext"] =
        json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    create(&s.admin, "/api/v1/namespaces/ps1/pods", good).await?;
    s.stop().await
}
