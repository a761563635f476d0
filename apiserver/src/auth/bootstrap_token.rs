//! Bootstrap tokens (upstream `plugin/pkg/auth/authenticator/token/bootstrap`): a bearer
//! token `<id>.<secret>` matching Secret `kube-system/bootstrap-token-<id>` (type
//! `bootstrap.kubernetes.io/token`, `usage-bootstrap-authentication: "true"`, not expired)
//! authenticates as `system:bootstrap:<id>` in `system:bootstrappers` plus the Secret's
//! `auth-extra-groups`. The server's join token (`<data-dir>/node-token`) is one of them.

use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Value};

use super::{User, AUTHENTICATED};
use crate::error::{Error, Result};
use crate::registry::store::WriteOptions;
use crate::registry::stores::Registry;
use crate::watch_cache::WatchCache;

/// The namespace of bootstrap token Secrets.
pub const NAMESPACE: &str = "kube-system";
/// Their type.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The group of every bootstrap token user.
pub const BOOTSTRAPPERS: &str = "system:bootstrappers";
/// The extra group of the server's join token (as kubeadm's default node token).
pub const JOIN_GROUP: &str = "system:bootstrappers:minik8s:default-node-token";
/// Prefix of the join token file's content: `K10<ca hash hex>::<id>.<secret>` (k3s style).
pub const FULL_TOKEN_PREFIX: &str = "K10";

/// `(id, secret)` of a well-formed token (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

/// Splits a full join token `K10<hex>::<id>.<secret>` into (`sha256:<hex>`, token); a bare
/// token has no pin.
pub fn split_full(token: &str) -> (Option<String>, &str) {
    match token
        .strip_prefix(FULL_TOKEN_PREFIX)
        .and_then(|r| r.split_once("::"))
    {
        Some((hash, t)) => (Some(format!("sha256:{hash}")), t),
        None => (None, token),
    }
}

fn data(secret: &Value, key: &str) -> Option<String> {
    let v = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(v).ok()?;
    String::from_utf8(bytes).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user a bootstrap token names, `None` when it is not a valid one.
pub fn authenticate(secrets: &WatchCache, token: &str) -> Option<User> {
    let (id, secret) = parse(token)?;
    let obj = secrets.get(&secrets.key(NAMESPACE, &format!("bootstrap-token-{id}")))?;
    let s: Value = serde_json::from_slice(&obj.bytes).ok()?;
    if s.get("type").and_then(Value::as_str) != Some(SECRET_TYPE)
        || s.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    if data(&s, "token-id")? != id
        || !constant_time_eq(data(&s, "token-secret")?.as_bytes(), secret.as_bytes())
    {
        return None;
    }
    if data(&s, "usage-bootstrap-authentication").as_deref() != Some("true") {
        return None;
    }
    if let Some(exp) = data(&s, "expiration") {
        let exp = chrono::DateTime::parse_from_rfc3339(&exp).ok()?;
        if exp <= chrono::Utc::now() {
            tracing::debug!(token_id = id, "bootstrap token expired");
            return None;
        }
    }
    let mut groups = vec![BOOTSTRAPPERS.to_string()];
    for g in data(&s, "auth-extra-groups")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        // Upstream only honours extra groups under system:bootstrappers:.
        if g.starts_with("system:bootstrappers:") && !groups.iter().any(|h| h == g) {
            groups.push(g.to_string());
        }
    }
    groups.push(AUTHENTICATED.into());
    Some(User {
        name: format!("system:bootstrap:{id}"),
        groups,
        ..Default::default()
    })
}

fn random_lower_alnum(n: usize) -> String {
    use rand::Rng;
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// A new random token `(id, secret)`.
pub fn generate() -> (String, String) {
    (random_lower_alnum(6), random_lower_alnum(16))
}

/// The Secret of a bootstrap token for joining nodes: authentication and signing usages,
/// the join group (whose CSRs are approved), and an `expiration` (RFC 3339) when given.
pub fn token_secret(id: &str, secret: &str, description: &str, expiration: Option<&str>) -> Value {
    let mut s = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": NAMESPACE},
        "type": SECRET_TYPE,
        "stringData": {
            "token-id": id,
            "token-secret": secret,
            "description": description,
            "usage-bootstrap-authentication": "true",
            "usage-bootstrap-signing": "true",
            "auth-extra-groups": JOIN_GROUP,
        },
    });
    if let Some(exp) = expiration {
        s["stringData"]["expiration"] = json!(exp);
    }
    s
}

/// The Secret of the server's own join token (no expiry, as k3s's server token).
pub fn join_secret(id: &str, secret: &str) -> Value {
    token_secret(
        id,
        secret,
        "minik8s join token (minik8s agent --token)",
        None,
    )
}

/// Makes sure the join token exists: reads `<data-dir>/node-token` (creating a random
/// token at first start) and (re)creates its Secret. Returns the full token
/// `K10<ca hash>::<id>.<secret>`.
pub async fn ensure_join_token(
    registry: &Registry,
    data_dir: &Path,
    ca_pem: &str,
) -> Result<String> {
    let path = data_dir.join("node-token");
    let hash = crate::pki::ca_cert_hash(ca_pem)
        .ok_or_else(|| Error::Internal("cannot hash the cluster CA".into()))?;
    let hex = hash.trim_start_matches("sha256:");
    let existing = std::fs::read_to_string(&path).ok();
    let token = match existing
        .as_deref()
        .map(str::trim)
        .map(split_full)
        .and_then(|(_, t)| parse(t).map(|(i, s)| (i.to_string(), s.to_string())))
    {
        Some(t) => t,
        None => generate(),
    };
    let full = format!("{FULL_TOKEN_PREFIX}{hex}::{}.{}", token.0, token.1);
    if existing.as_deref().map(str::trim) != Some(full.as_str()) {
        super::identities::write_private(&path, &format!("{full}\n"))
            .map_err(|e| Error::Internal(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(store) = registry.store("", "v1", "secrets") {
        match store
            .create(
                NAMESPACE,
                join_secret(&token.0, &token.1),
                &WriteOptions::default(),
            )
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(full)
}

/// Publishes `kube-public/cluster-info` (a kubeconfig with the server URL and CA, as
/// kubeadm does) readable by anonymous users, so a joining node can fetch the CA and check
/// it against the pin in its token before it sends the token anywhere.
pub async fn publish_cluster_info(registry: &Registry, url: &str, ca_pem: &str) -> Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    certificate-authority-data: {ca}\n    server: {url}\ncontexts: []\nusers: []\n"
    );
    let rbac = crate::auth::rbac::GROUP;
    let objects = [
        (
            "",
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cluster-info", "namespace": "kube-public"},
                "data": {"kubeconfig": kubeconfig}}),
        ),
        (
            rbac,
            "roles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "minik8s:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
                "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["cluster-info"]}]}),
        ),
        (
            rbac,
            "rolebindings",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "minik8s:bootstrap-signer-clusterinfo", "namespace": "kube-public"},
                "roleRef": {"apiGroup": rbac, "kind": "Role", "name": "minik8s:bootstrap-signer-clusterinfo"},
                "subjects": [{"apiGroup": rbac, "kind": "User", "name": "system:anonymous"}]}),
        ),
    ];
    for (group, plural, obj) in objects {
        let Some(store) = registry.store(group, "v1", plural) else {
            continue;
        };
        match store
            .create("kube-public", obj, &WriteOptions::default())
            .await
        {
            Ok(_) | Err(Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_format() {
        assert_eq!(
            parse("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        assert_eq!(parse("ABCDEF.0123456789abcdef"), None);
        assert_eq!(parse("abcde.0123456789abcdef"), None);
        assert_eq!(parse("abcdef0123456789abcdef"), None);
        assert_eq!(
            split_full("K10ff00::abcdef.0123456789abcdef"),
            (Some("sha256:ff00".into()), "abcdef.0123456789abcdef")
        );
        assert_eq!(
            split_full("abcdef.0123456789abcdef"),
            (None, "abcdef.0123456789abcdef")
        );
    }
}
