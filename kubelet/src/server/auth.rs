//! Who may use the kubelet's API, like upstream's kubelet with
//! `--authentication-token-webhook` and `--authorization-mode=Webhook`
//! (`pkg/kubelet/server/auth.go`): a client certificate signed by the cluster CA names the
//! user (CN) and groups (O); a bearer token is checked with a TokenReview; every request
//! is then authorized with a SubjectAccessReview on the Node (`nodes/proxy`, `nodes/stats`,
//! `nodes/log`, `nodes/metrics`, `nodes/spec`). Only the API server's client certificate
//! (bound to cluster-admin through `system:masters`) reaches everything; a user RBAC allows
//! `get nodes/stats` reads the stats and nothing else.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::Method;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

/// The superuser group: the API server holds it, and it is allowed everything (as the API
/// server's own authorizer does), without a review.
const MASTERS: &str = "system:masters";
/// How long a token's review is reused (upstream's `--authentication-token-webhook-cache-ttl`).
const TOKEN_TTL: Duration = Duration::from_secs(120);
/// How long an allowed and a denied decision are reused (upstream's
/// `--authorization-webhook-cache-authorized-ttl` and `-unauthorized-ttl`).
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries each cache holds before it is emptied.
const CACHE_ENTRIES: usize = 1024;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// The user a verified client certificate (DER) names: CN and O, like the API server's
    /// x509 authenticator.
    pub fn from_certificate(der: &[u8]) -> Option<User> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())?
            .to_string();
        if name.is_empty() {
            return None;
        }
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(String::from))
            .collect();
        groups.push("system:authenticated".into());
        Some(User { name, groups })
    }
}

/// What a request asks of the Node, as upstream's kubelet maps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

impl Attributes {
    /// The verb from the HTTP method, the subresource from the path.
    pub fn of(method: &Method, path: &str) -> Attributes {
        let verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        };
        let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
        let subresource = if under("/stats") {
            "stats"
        } else if under("/metrics") {
            "metrics"
        } else if under("/logs") {
            "log"
        } else if under("/spec") {
            "spec"
        } else {
            "proxy"
        };
        Attributes { verb, subresource }
    }

    /// Upstream's message for a denied request.
    pub fn forbidden(&self, user: &User) -> String {
        format!(
            "Forbidden (user={}, verb={}, resource=nodes, subresource={})",
            user.name, self.verb, self.subresource
        )
    }
}

/// Reviews tokens and requests with the API server, caching the answers.
pub struct Reviewer {
    client: Option<kube::Client>,
    node: String,
    tokens: Mutex<HashMap<String, (Option<User>, Instant)>>,
    decisions: Mutex<HashMap<(User, Attributes), (bool, Instant)>>,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(
    map: &Mutex<HashMap<K, (V, Instant)>>,
    key: &K,
) -> Option<V> {
    let map = map.lock().unwrap_or_else(|e| e.into_inner());
    map.get(key)
        .filter(|(_, until)| Instant::now() < *until)
        .map(|(v, _)| v.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(
    map: &Mutex<HashMap<K, (V, Instant)>>,
    key: K,
    value: V,
    ttl: Duration,
) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.len() >= CACHE_ENTRIES {
        map.clear();
    }
    map.insert(key, (value, Instant::now() + ttl));
}

impl Reviewer {
    /// Reviews through `client` (without one, only `system:masters` certificates get in)
    /// for the Node `node`.
    pub fn new(client: Option<kube::Client>, node: &str) -> Reviewer {
        Reviewer {
            client,
            node: node.to_string(),
            tokens: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
        }
    }

    /// The user a bearer token belongs to, or None when the API server does not know it.
    /// Err when the review could not be made.
    pub async fn authenticate_token(&self, token: &str) -> Result<Option<User>, String> {
        if let Some(u) = cached(&self.tokens, &token.to_string()) {
            return Ok(u);
        }
        let Some(client) = &self.client else {
            return Ok(None);
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let got = Api::<TokenReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("token review: {e}"))?;
        let user = got
            .status
            .filter(|s| s.authenticated == Some(true))
            .and_then(|s| s.user)
            .and_then(|u| {
                Some(User {
                    name: u.username.filter(|n| !n.is_empty())?,
                    groups: u.groups.unwrap_or_default(),
                })
            });
        remember(&self.tokens, token.to_string(), user.clone(), TOKEN_TTL);
        Ok(user)
    }

    /// Whether `user` may do `attrs` on this Node. Err when the review could not be made.
    pub async fn authorize(&self, user: &User, attrs: &Attributes) -> Result<bool, String> {
        if user.groups.iter().any(|g| g == MASTERS) {
            return Ok(true);
        }
        let key = (user.clone(), attrs.clone());
        if let Some(allowed) = cached(&self.decisions, &key) {
            return Ok(allowed);
        }
        let Some(client) = &self.client else {
            return Ok(false);
        };
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.name.clone()),
                groups: Some(user.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.to_string()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.to_string()),
                    name: Some(self.node.clone()),
                    version: Some("v1".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let got = Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| format!("subject access review: {e}"))?;
        let allowed = got.status.is_some_and(|s| s.allowed);
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        remember(&self.decisions, key, allowed, ttl);
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_node_subresources_as_upstream() {
        let a = |m: Method, p: &str| {
            let a = Attributes::of(&m, p);
            (a.verb, a.subresource)
        };
        assert_eq!(a(Method::GET, "/stats/summary"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/stats"), ("get", "stats"));
        assert_eq!(a(Method::GET, "/metrics/cadvisor"), ("get", "metrics"));
        assert_eq!(a(Method::GET, "/logs/syslog"), ("get", "log"));
        assert_eq!(a(Method::GET, "/spec/"), ("get", "spec"));
        assert_eq!(a(Method::POST, "/exec/ns/p/c"), ("create", "proxy"));
        assert_eq!(a(Method::GET, "/containerLogs/ns/p/c"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/statsx"), ("get", "proxy"));
        assert_eq!(a(Method::GET, "/pods"), ("get", "proxy"));
        let user = User {
            name: "alice".into(),
            groups: vec![],
        };
        assert_eq!(
            Attributes::of(&Method::POST, "/exec/a/b/c").forbidden(&user),
            "Forbidden (user=alice, verb=create, resource=nodes, subresource=proxy)"
        );
    }
}
