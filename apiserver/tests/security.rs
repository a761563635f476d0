//! Security end to end over real sockets: each authenticator, RBAC with escalation
//! prevention, the review APIs, impersonation, and admission plugins.
#![allow(clippy::unwrap_used)]

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
    let (resource, group) = resource.split_once('.').unwrap_or((resource, ""));
    let v = create(
        c,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": ns, "verb": verb, "resource": resource, "group": group}}}),
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
        can_i(
            &alice,
            "r1",
            "create",
            "rolebindings.rbac.authorization.k8s.io",
        )
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

    // Scoped quotas: each covers only the pods in all of its scopes.
    namespace(&s.admin, "q2", json!({})).await?;
    create(
        &s.admin,
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}),
    )
    .await?;
    for (name, spec) in [
        (
            "be",
            json!({"scopes": ["BestEffort"], "hard": {"pods": "1"}}),
        ),
        (
            "high",
            json!({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}, "hard": {"pods": "1", "requests.cpu": "1"}}),
        ),
    ] {
        create(
            &s.admin,
            "/api/v1/namespaces/q2/resourcequotas",
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": spec}),
        )
        .await?;
    }
    let sized = |name: &str, class: Option<&str>| {
        let mut p = pod(name);
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
        if let Some(c) = class {
            p["spec"]["priorityClassName"] = json!(c);
        }
        p
    };
    let q2 = "/api/v1/namespaces/q2/pods";
    create(&s.admin, q2, pod("be1")).await?;
    let refused = |r: Result<Value, kube::Error>| r.map(|_| ()).map_err(api_err);
    assert_eq!(
        refused(post(&s.admin, q2, pod("be2")).await),
        Err((403, "pods \"be2\" is forbidden: exceeded quota: be, requested: pods=1, used: pods=1, limited: pods=1".into()))
    );
    // Not best-effort and no priority class: neither quota covers it.
    create(&s.admin, q2, sized("sized1", None)).await?;
    create(&s.admin, q2, sized("sized2", None)).await?;
    create(&s.admin, q2, sized("high1", Some("high"))).await?;
    assert_eq!(
        refused(post(&s.admin, q2, sized("high2", Some("high"))).await),
        Err((403, "pods \"high2\" is forbidden: exceeded quota: high, requested: pods=1, used: pods=1, limited: pods=1".into()))
    );
    // A quota on requests.cpu wants them only from the pods it covers.
    let mut bare_high = pod("bare-high");
    bare_high["spec"]["priorityClassName"] = json!("high");
    bare_high["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "64Mi"}});
    assert_eq!(
        refused(post(&s.admin, q2, bare_high).await),
        Err((
            403,
            "pods \"bare-high\" is forbidden: failed quota: high: must specify requests.cpu".into()
        ))
    );

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
    create(&s.admin, "/api/v1/namespaces/ps1/pods", good.clone()).await?;

    // PodSecurity warn: the pod is admitted with upstream's warning, and so is a workload
    // whose template would violate the level; compliant objects get no warning.
    namespace(
        &s.admin,
        "ps2",
        json!({"pod-security.kubernetes.io/warn": "restricted", "pod-security.kubernetes.io/warn-version": "v1.33"}),
    )
    .await?;
    let mut privileged = pod("priv");
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    let (code, warnings) =
        post_with_warnings(&s.admin, "/api/v1/namespaces/ps2/pods", privileged.clone()).await?;
    assert_eq!(code, 201);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("299 - \"would violate PodSecurity \\\"restricted:v1.33\\\": privileged (container \\\"c\\\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false"),
        "{warnings:?}"
    );
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}},
            "spec": privileged["spec"].clone()}}});
    let (code, warnings) = post_with_warnings(
        &s.admin,
        "/apis/apps/v1/namespaces/ps2/deployments",
        deployment,
    )
    .await?;
    assert_eq!(code, 201);
    assert!(
        warnings.len() == 1 && warnings[0].contains("would violate PodSecurity"),
        "{warnings:?}"
    );

    good["metadata"]["name"] = json!("good2");
    let (code, warnings) =
        post_with_warnings(&s.admin, "/api/v1/namespaces/ps2/pods", good).await?;
    assert_eq!((code, warnings), (201, Vec::<String>::new()));
    s.stop().await
}

/// POSTs `body` and returns the status code and the `Warning` headers.
async fn post_with_warnings(c: &Client, path: &str, body: Value) -> Result<(u16, Vec<String>)> {
    let req = http::Request::post(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(&body)?))?;
    let resp = c.send(req).await?;
    let warnings = resp
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    Ok((resp.status().as_u16(), warnings))
}

/// What `/record` saw: `<operation> <name> old=<oldObject name> object=<set|null>`.
static RECORDED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
/// What `/scale` saw: kind, subresource, old and new `spec.replicas`.
static SCALES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// An HTTPS admission webhook served by the test: `/mutate` labels objects, `/validate`
/// denies objects named `deny-*`, `/slow` answers after 5 s, `/record` notes each request
/// in [`RECORDED`] and denies objects labelled `deny=yes` and deletes of ones labelled `keep=yes`.
async fn serve_webhook(dir: &Path) -> Result<(u16, String)> {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let pki = apiserver::pki::load_or_create(dir, &[])?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let certs = vec![rustls_pki_types::CertificateDer::from(pem_der(
        &pki.serving_cert_pem,
        "CERTIFICATE",
    ))];
    let key =
        rustls_pki_types::PrivateKeyDer::try_from(pem_der(&pki.serving_key_pem, "PRIVATE KEY"))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let path = req.uri().path().to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let review: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let uid = review["request"]["uid"].clone();
                    let name = review["request"]["name"].as_str().unwrap_or("").to_string();
                    let req = &review["request"];
                    if path == "/record" {
                        let line = format!(
                            "{} {} old={} object={}",
                            req["operation"].as_str().unwrap_or(""),
                            name,
                            req["oldObject"]["metadata"]["name"].as_str().unwrap_or("-"),
                            if req["object"].is_null() {
                                "null"
                            } else {
                                "set"
                            },
                        );
                        RECORDED.lock().unwrap().push(line);
                    }
                    let label =
                        |o: &str, k: &str| req[o]["metadata"]["labels"][k].as_str() == Some("yes");
                    let response = match path.as_str() {
                        "/record"
                            if label("object", "deny")
                                || (req["operation"] == "DELETE" && label("oldObject", "keep")) =>
                        {
                            json!({"uid": uid, "allowed": false,
                                "status": {"code": 403, "reason": "Forbidden", "message": "no thanks"}})
                        }
                        "/mutate" => {
                            use base64::Engine;
                            let patch = json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}]);
                            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                                "warnings": ["labelled by the test webhook"],
                                "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
                        }
                        "/scale" => {
                            let replicas =
                                |o: &str| req[o]["spec"]["replicas"].as_i64().unwrap_or(-1);
                            SCALES.lock().unwrap().push(format!(
                                "{}/{}/{} sub={} name={} old={} new={}",
                                req["kind"]["group"].as_str().unwrap_or(""),
                                req["kind"]["version"].as_str().unwrap_or(""),
                                req["kind"]["kind"].as_str().unwrap_or(""),
                                req["subResource"].as_str().unwrap_or(""),
                                name,
                                replicas("oldObject"),
                                replicas("object"),
                            ));
                            if replicas("object") > 5 {
                                json!({"uid": uid, "allowed": false,
                                    "status": {"code": 403, "reason": "Forbidden", "message": "at most 5 replicas"}})
                            } else {
                                json!({"uid": uid, "allowed": true})
                            }
                        }
                        "/slow" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            json!({"uid": uid, "allowed": true})
                        }
                        _ if name.starts_with("deny-") => json!({"uid": uid, "allowed": false,
                            "status": {"code": 403, "reason": "Forbidden", "message": "no thanks"}}),
                        _ => json!({"uid": uid, "allowed": true}),
                    };
                    let out = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
                    Ok::<_, std::convert::Infallible>(http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from(out.to_string())),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    use base64::Engine;
    Ok((
        port,
        base64::engine::general_purpose::STANDARD.encode(&pki.ca_cert_pem),
    ))
}

fn pem_der(pem: &str, label: &str) -> Vec<u8> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).map(|i| i + begin.len()).unwrap_or(0);
    let stop = pem.find(&end).unwrap_or(pem.len());
    let body: String = pem[start..stop].lines().map(str::trim).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_webhooks_mutate_deny_and_fail() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;
    let (port, ca) = serve_webhook(&tmp.path().join("hook")).await?;
    namespace(&s.admin, "wh", json!({"webhook": "on"})).await?;
    namespace(&s.admin, "plain", json!({})).await?;
    let hook = |name: &str, path: &str, policy: &str, timeout: u64| {
        json!({"name": name, "clientConfig": {"url": format!("https://127.0.0.1:{port}{path}"), "caBundle": ca},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
            "namespaceSelector": {"matchLabels": {"webhook": "on"}},
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": policy, "timeoutSeconds": timeout})
    };
    create(
        &s.admin,
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "m"}, "webhooks": [hook("mutate.test.io", "/mutate", "Fail", 5)]}),
    )
    .await?;
    create(
        &s.admin,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "v"}, "webhooks": [
                hook("validate.test.io", "/validate", "Fail", 5),
                hook("slow.test.io", "/slow", "Ignore", 1),
            ]}),
    )
    .await?;
    let cm =
        |name: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
    let made = create(&s.admin, "/api/v1/namespaces/wh/configmaps", cm("ok")).await?;
    assert_eq!(made["metadata"]["labels"]["mutated"], "yes");
    // The webhook's warnings reach the client as Warning headers.
    let (code, warnings) =
        post_with_warnings(&s.admin, "/api/v1/namespaces/wh/configmaps", cm("ok2")).await?;
    assert_eq!(code, 201);
    assert_eq!(warnings, ["299 - \"labelled by the test webhook\""]);
    let (code, msg) = api_err(
        post(&s.admin, "/api/v1/namespaces/wh/configmaps", cm("deny-me"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "admission webhook \"validate.test.io\" denied the request: no thanks"
    );
    // Outside the selected namespaces no webhook runs.
    let plain = create(
        &s.admin,
        "/api/v1/namespaces/plain/configmaps",
        cm("deny-me"),
    )
    .await?;
    assert!(plain["metadata"]["labels"].is_null());
    // A slow webhook with failurePolicy Fail times out and fails the request.
    create(
        &s.admin,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "w-slow"}, "webhooks": [hook("slowfail.test.io", "/slow", "Fail", 1)]}),
    )
    .await?;
    let (code, msg) = api_err(
        post(&s.admin, "/api/v1/namespaces/wh/configmaps", cm("late"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 500, "{msg}");
    assert!(
        msg.contains("failed calling webhook \"slowfail.test.io\""),
        "{msg}"
    );
    assert!(Api::<ConfigMap>::namespaced(s.admin.clone(), "wh")
        .get_opt("late")
        .await?
        .is_none());
    s.stop().await
}

/// PATCH with `content_type`; `Err((code, message))` when refused.
async fn patch(
    c: &Client,
    path: &str,
    content_type: &str,
    body: Value,
) -> Result<Value, (u16, String)> {
    let req = http::Request::patch(path)
        .header("content-type", content_type)
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(|e| (0, e.to_string()))?;
    let text = c.request_text(req).await.map_err(api_err)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn delete(c: &Client, path: &str) -> Result<Value, (u16, String)> {
    let req = http::Request::delete(path)
        .body(Vec::new())
        .map_err(|e| (0, e.to_string()))?;
    let text = c.request_text(req).await.map_err(api_err)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

const MERGE: &str = "application/merge-patch+json";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_on_patch_and_delete() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;
    let a = &s.admin;

    // ResourceQuota charges a patch what it adds: turning a Service NodePort takes a node port.
    namespace(a, "q2", json!({})).await?;
    create(
        a,
        "/api/v1/namespaces/q2/resourcequotas",
        json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q"},
            "spec": {"hard": {"services.nodeports": "1"}}}),
    )
    .await?;
    let svc = |name: &str, ty: &str| {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"type": ty, "ports": [{"port": 80}], "selector": {"app": name}}})
    };
    create(a, "/api/v1/namespaces/q2/services", svc("np", "NodePort")).await?;
    create(a, "/api/v1/namespaces/q2/services", svc("c", "ClusterIP")).await?;
    let refused = patch(
        a,
        "/api/v1/namespaces/q2/services/c",
        MERGE,
        json!({"spec": {"type": "NodePort"}}),
    )
    .await;
    assert_eq!(
        refused.unwrap_err(),
        (403, "services \"c\" is forbidden: exceeded quota: q, requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1".to_string())
    );
    // A patch that adds nothing to what the quota counts passes.
    patch(
        a,
        "/api/v1/namespaces/q2/services/np",
        MERGE,
        json!({"metadata": {"labels": {"x": "1"}}}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;

    // PodSecurity checks a pod patch that changes an image, not one that changes labels.
    namespace(a, "ps2", json!({})).await?;
    let mut privileged = pod("priv");
    privileged["spec"]["containers"][0]["securityContext"] = json!({"privileged": true});
    create(a, "/api/v1/namespaces/ps2/pods", privileged).await?;
    patch(
        a,
        "/api/v1/namespaces/ps2",
        MERGE,
        json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    patch(
        a,
        "/api/v1/namespaces/ps2/pods/priv",
        MERGE,
        json!({"metadata": {"labels": {"x": "1"}}}),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let (code, msg) = patch(
        a,
        "/api/v1/namespaces/ps2/pods/priv",
        "application/json-patch+json",
        json!([{"op": "replace", "path": "/spec/containers/0/image", "value": "busybox:2"}]),
    )
    .await
    .unwrap_err();
    assert_eq!(code, 403);
    assert_eq!(
        msg,
        "pods \"priv\" is forbidden: violates PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"
    );

    // Validating webhooks see a patch as UPDATE and a delete as DELETE with oldObject.
    let (port, ca) = serve_webhook(&tmp.path().join("hook")).await?;
    namespace(a, "wh2", json!({})).await?;
    create(
        a,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "rec"}, "webhooks": [{"name": "record.test.io",
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/record"), "caBundle": ca},
                "rules": [{"operations": ["UPDATE", "DELETE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "wh2"}},
                "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail"}]}),
    )
    .await?;
    let cm = |name: &str, labels: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}});
    let cms = "/api/v1/namespaces/wh2/configmaps";
    create(a, cms, cm("a", json!({}))).await?;
    patch(a, &format!("{cms}/a"), MERGE, json!({"data": {"k": "v"}}))
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let denied = patch(
        a,
        &format!("{cms}/a"),
        MERGE,
        json!({"metadata": {"labels": {"deny": "yes"}}}),
    )
    .await;
    assert_eq!(
        denied.unwrap_err(),
        (
            403,
            "admission webhook \"record.test.io\" denied the request: no thanks".to_string()
        )
    );
    let kept = Api::<ConfigMap>::namespaced(a.clone(), "wh2")
        .get("a")
        .await?;
    assert!(!kept
        .metadata
        .labels
        .unwrap_or_default()
        .contains_key("deny"));
    delete(a, &format!("{cms}/a"))
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    create(a, cms, cm("keep", json!({"keep": "yes"}))).await?;
    let (code, msg) = delete(a, &format!("{cms}/keep")).await.unwrap_err();
    assert_eq!(
        (code, msg.as_str()),
        (
            403,
            "admission webhook \"record.test.io\" denied the request: no thanks"
        )
    );
    // deletecollection admits each object.
    let (code, _) = delete(a, cms).await.unwrap_err();
    assert_eq!(code, 403);
    assert!(Api::<ConfigMap>::namespaced(a.clone(), "wh2")
        .get_opt("keep")
        .await?
        .is_some());
    let seen: Vec<String> = RECORDED
        .lock()
        .unwrap()
        .iter()
        .filter(|l| !l.contains("kube-root-ca.crt"))
        .cloned()
        .collect();
    assert_eq!(
        seen,
        [
            "UPDATE a old=a object=set",
            "UPDATE a old=a object=set",
            "DELETE a old=a object=null",
            "DELETE keep old=keep object=null",
            "DELETE keep old=keep object=null",
        ]
    );
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_encrypted_at_rest_and_audit_log() -> Result<()> {
    use base64::Engine;
    let tmp = tempfile::tempdir()?;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let enc = tmp.path().join("enc.yaml");
    std::fs::write(
        &enc,
        format!("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: key1\n              secret: {key}\n      - identity: {{}}\n"),
    )?;
    let audit = tmp.path().join("audit.log");
    let (enc2, audit2) = (enc.clone(), audit.clone());
    let s = TestServer::start(tmp.path(), move |c| {
        c.encryption_provider_config = Some(enc2);
        c.audit_log_path = Some(audit2);
    })
    .await?;
    create(
        &s.admin,
        "/api/v1/namespaces/default/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "hunter2-plaintext-marker"}}),
    )
    .await?;
    create(
        &s.admin,
        "/api/v1/namespaces/default/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"v": "configmap-plaintext-marker"}}),
    )
    .await?;
    let got = Api::<Secret>::namespaced(s.admin.clone(), "default")
        .get("s")
        .await?;
    assert_eq!(
        got.data.context("data")?["password"].0,
        b"hunter2-plaintext-marker"
    );
    // The database files hold the ConfigMap in clear but the Secret only encrypted.
    let mut stored = Vec::new();
    for e in std::fs::read_dir(s.dir.join("db"))? {
        stored.extend(std::fs::read(e?.path())?);
    }
    let has = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"configmap-plaintext-marker"));
    assert!(has(b"k8s:enc:aesgcm:v1:key1:"));
    assert!(!has(b"hunter2-plaintext-marker"));
    assert!(!has(base64::engine::general_purpose::STANDARD
        .encode("hunter2-plaintext-marker")
        .as_bytes()));

    // Audit: who did what, allowed or not.
    let alice = s.token("tok-alice").await?;
    let _ = Api::<Pod>::namespaced(alice, "default")
        .list(&ListParams::default())
        .await;
    let mut events: Vec<Value> = Vec::new();
    wait_for("audit events", || {
        let text = std::fs::read_to_string(&audit).unwrap_or_default();
        events = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let found = events.iter().any(|e| e["user"]["username"] == "alice");
        async move { found }
    })
    .await?;
    let denied = events
        .iter()
        .find(|e| e["user"]["username"] == "alice")
        .context("alice")?;
    assert_eq!(denied["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(denied["level"], "Metadata");
    assert_eq!(denied["stage"], "ResponseComplete");
    assert_eq!(denied["verb"], "list");
    assert_eq!(denied["objectRef"]["resource"], "pods");
    assert_eq!(denied["objectRef"]["namespace"], "default");
    assert_eq!(denied["responseStatus"]["code"], 403);
    assert_eq!(
        denied["annotations"]["authorization.k8s.io/decision"],
        "forbid"
    );
    assert_eq!(denied["sourceIPs"], json!(["127.0.0.1"]));
    let created = events
        .iter()
        .find(|e| e["verb"] == "create" && e["objectRef"]["resource"] == "secrets")
        .context("secret create event")?;
    assert_eq!(created["user"]["username"], "minik8s-admin");
    assert_eq!(created["responseStatus"]["code"], 201);
    assert!(created.get("requestObject").is_none());
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_sweep() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;
    namespace(&s.admin, "sweep", json!({})).await?;
    let raw = |method: &str, path: &str, ct: &str, body: Vec<u8>| {
        http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", ct)
            .body(body)
    };
    let long = "a".repeat(300);
    let cm = |name: &str| {
        serde_json::to_vec(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}),
        )
        .unwrap()
    };
    let base = "/api/v1/namespaces/sweep/configmaps";
    let cases: Vec<(&str, http::Request<Vec<u8>>)> = vec![
        ("malformed json", raw("POST", base, "application/json", b"{not json".to_vec())?),
        ("array body", raw("POST", base, "application/json", b"[]".to_vec())?),
        ("number body", raw("POST", base, "application/json", b"42".to_vec())?),
        ("bad yaml", raw("POST", base, "application/yaml", b"a: [".to_vec())?),
        ("unknown media type", raw("POST", base, "text/html", cm("x"))?),
        ("huge name", raw("POST", base, "application/json", cm(&long))?),
        ("dot-dot name", raw("POST", base, "application/json", cm(".."))?),
        ("slash name", raw("POST", base, "application/json", cm("a/b"))?),
        ("percent name", raw("POST", base, "application/json", cm("a%2Fb"))?),
        ("unicode name", raw("POST", base, "application/json", cm("ünïcödé"))?),
        ("empty name", raw("POST", base, "application/json", cm(""))?),
        ("wrong kind", raw("POST", base, "application/json", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "k"}}))?)?),
        ("data not a map", raw("POST", base, "application/json", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "data": 5}))?)?),
        ("dot-dot in path", raw("GET", "/api/v1/namespaces/sweep/configmaps/..", "application/json", Vec::new())?),
        ("encoded slash in path", raw("GET", "/api/v1/namespaces/sweep/configmaps/a%2Fb", "application/json", Vec::new())?),
        ("encoded dot-dot in path", raw("PUT", "/api/v1/namespaces/sweep/configmaps/%2E%2E", "application/json", cm(".."))?),
        ("invalid label selector", raw("GET", "/api/v1/namespaces/sweep/configmaps?labelSelector=a%20in%20(", "application/json", Vec::new())?),
        ("invalid field selector", raw("GET", "/api/v1/namespaces/sweep/configmaps?fieldSelector=nope%3D1", "application/json", Vec::new())?),
        ("bad limit", raw("GET", "/api/v1/namespaces/sweep/configmaps?limit=abc", "application/json", Vec::new())?),
        ("bad resourceVersion", raw("GET", "/api/v1/namespaces/sweep/configmaps?resourceVersion=-5&resourceVersionMatch=Exact", "application/json", Vec::new())?),
        ("negative cpu", raw("POST", "/api/v1/namespaces/sweep/pods", "application/json", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "neg"},
            "spec": {"containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "-1"}}}]}}))?)?),
        ("negative replicas", raw("POST", "/apis/apps/v1/namespaces/sweep/deployments", "application/json", serde_json::to_vec(&json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "neg"},
            "spec": {"replicas": -3, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}}))?)?),
        ("huge label", raw("POST", base, "application/json", serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "l", "labels": {"k": long}}}))?)?),
        ("null bytes", raw("POST", base, "application/json", b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"n\\u0000\"}}".to_vec())?),
    ];
    for (what, req) in cases {
        let code = match s.admin.request_text(req).await {
            Ok(_) => 200,
            Err(e) => api_err(e).0,
        };
        assert!((400..500).contains(&code), "{what}: got {code}");
    }
    // Nothing was written, and the server still answers.
    assert!(Api::<ConfigMap>::namespaced(s.admin.clone(), "sweep")
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .all(|c| c.metadata.name.as_deref() == Some("kube-root-ca.crt")));
    assert!(Api::<Pod>::namespaced(s.admin.clone(), "sweep")
        .list(&ListParams::default())
        .await?
        .items
        .is_empty());
    assert_eq!(get_text(&s.admin, "/readyz").await?, "ok");
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn component_identities() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;
    let server = s.server.as_ref().context("server")?;
    let node_kc = server.node_kubeconfig("node-1")?;
    let comps = server.components.clone();
    for p in [
        &comps.scheduler,
        &comps.controller_manager,
        &comps.proxy,
        &comps.dns,
        &node_kc,
    ] {
        assert_eq!(
            std::fs::metadata(p)?.permissions().mode() & 0o777,
            0o600,
            "{}",
            p.display()
        );
    }
    assert!(server.node_kubeconfig("../x").is_err());
    let open = |p: PathBuf| async move {
        let kc = kube::config::Kubeconfig::read_from(&p)?;
        let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
        anyhow::Ok(Client::try_from(conf)?)
    };
    let sched = open(comps.scheduler.clone()).await?;
    assert_eq!(whoami(&sched).await?["username"], "system:kube-scheduler");
    assert!(can_i(&sched, "", "list", "nodes").await?);
    assert!(can_i(&sched, "default", "create", "pods/binding").await?);
    assert!(!can_i(&sched, "default", "list", "secrets").await?);
    let kubelet = open(node_kc).await?;
    let me = whoami(&kubelet).await?;
    assert_eq!(me["username"], "system:node:node-1");
    assert_eq!(
        me["groups"],
        json!(["system:nodes", "system:authenticated"])
    );
    assert!(can_i(&kubelet, "default", "update", "pods/status").await?);
    assert!(!can_i(&kubelet, "default", "delete", "services").await?);
    let cm = open(comps.controller_manager.clone()).await?;
    assert_eq!(
        whoami(&cm).await?["username"],
        "system:kube-controller-manager"
    );
    assert!(can_i(&cm, "default", "watch", "deployments.apps").await?);
    assert!(can_i(&cm, "kube-system", "create", "serviceaccounts/token").await?);
    assert!(!can_i(&cm, "default", "create", "pods").await?);
    // The DNS reads what it serves and publishes only kube-dns.
    let dns = open(comps.dns.clone()).await?;
    assert_eq!(whoami(&dns).await?["username"], "system:minik8s-dns");
    for r in [
        "services",
        "endpointslices.discovery.k8s.io",
        "pods",
        "namespaces",
    ] {
        assert!(can_i(&dns, "", "watch", r).await?, "{r}");
    }
    assert!(can_i(&dns, "kube-system", "create", "services").await?);
    assert!(!can_i(&dns, "default", "list", "secrets").await?);
    assert!(!can_i(&dns, "default", "delete", "services").await?);
    let patch_other = post(
        &dns,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "default", "verb": "patch", "resource": "services", "name": "web"}}}),
    )
    .await?;
    assert_eq!(patch_other["status"]["allowed"], false);
    s.stop().await
}

/// Writes of `/scale` are admitted as autoscaling/v1 Scales, by update and by patch: a
/// webhook on `deployments/scale` sees the old and the new Scale and may refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_on_scale() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let s = TestServer::start(tmp.path(), |_| {}).await?;
    let a = &s.admin;
    let (port, ca) = serve_webhook(&tmp.path().join("hook")).await?;
    namespace(a, "sc", json!({})).await?;
    create(
        a,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "scale"}, "webhooks": [{"name": "scale.test.io",
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/scale"), "caBundle": ca},
                "rules": [{"operations": ["UPDATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments/scale"]}],
                "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 5}]}),
    )
    .await?;
    create(
        a,
        "/apis/apps/v1/namespaces/sc/deployments",
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}),
    )
    .await?;
    let scale_url = "/apis/apps/v1/namespaces/sc/deployments/web/scale";
    let replicas = || async {
        let d: Value = serde_json::from_str(
            &get_text(a, "/apis/apps/v1/namespaces/sc/deployments/web").await?,
        )?;
        anyhow::Ok(d["spec"]["replicas"].as_i64().unwrap_or(-1))
    };
    // An update of the Scale, allowed.
    let scale: Value = serde_json::from_str(&get_text(a, scale_url).await?)?;
    let mut up = scale.clone();
    up["spec"]["replicas"] = json!(3);
    let req = http::Request::put(scale_url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&up)?)?;
    a.request_text(req).await?;
    assert_eq!(replicas().await?, 3);
    // A patch past the webhook's limit: refused, nothing written.
    let (code, msg) = patch(a, scale_url, MERGE, json!({"spec": {"replicas": 9}}))
        .await
        .unwrap_err();
    assert_eq!(code, 403, "{msg}");
    assert_eq!(
        msg,
        "admission webhook \"scale.test.io\" denied the request: at most 5 replicas"
    );
    assert_eq!(replicas().await?, 3);
    let seen = SCALES.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "autoscaling/v1/Scale sub=scale name=web old=1 new=3",
            "autoscaling/v1/Scale sub=scale name=web old=3 new=9",
        ]
    );
    s.stop().await
}
