//! Who is asking and may they: authentication (client certificates, static tokens,
//! service-account JWTs, anonymous), impersonation, RBAC authorization, the review APIs
//! only the API server serves, and the audit log. [`filter`] is the one call the request
//! path makes before dispatch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;

use crate::error::{Error, Result};
use crate::handlers::{ApiState, Body};
use crate::pki::UserInfo;
use crate::registry::stores::Registry;
use crate::request_info::RequestInfo;

pub mod audit;
pub mod bootstrap_token;
pub mod escalation;
pub mod identities;
pub mod jwt;
pub mod node;
pub mod policy;
pub mod rbac;
pub mod reviews;
pub mod serviceaccount;

use rbac::{Attributes, Rbac};

/// Group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group of anonymous requests.
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The user of anonymous requests.
pub const ANONYMOUS: &str = "system:anonymous";

/// An authenticated user (upstream `user.Info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    fn anonymous() -> Self {
        User {
            name: ANONYMOUS.into(),
            groups: vec![UNAUTHENTICATED.into()],
            ..Default::default()
        }
    }

    /// The user as authentication.k8s.io/v1 UserInfo JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = serde_json::json!(self.uid);
        }
        if !self.extra.is_empty() {
            v["extra"] = serde_json::json!(self.extra);
        }
        v
    }
}

impl From<&UserInfo> for User {
    fn from(u: &UserInfo) -> Self {
        User {
            name: u.name.clone(),
            groups: u.groups.clone(),
            ..Default::default()
        }
    }
}

/// Errors setting up authentication.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("--token-auth-file {path}: {message}")]
    TokenFile { path: String, message: String },
    #[error("service account key: {0}")]
    Key(#[from] jwt::Error),
    #[error("--audit-log-path {path}: {source}")]
    Audit {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Everything the request path needs to authenticate, authorize and audit.
pub struct Security {
    tokens: HashMap<String, User>,
    /// Secrets, where bootstrap tokens live.
    secrets: Option<Arc<crate::watch_cache::WatchCache>>,
    /// Service-account token issuer and validator.
    pub service_accounts: Option<serviceaccount::Tokens>,
    anonymous: bool,
    /// `None` only when RBAC resources are not served (every request allowed).
    pub rbac: Option<Rbac>,
    /// The Node authorizer, asked before RBAC (`--authorization-mode=Node,RBAC`).
    pub node: Option<node::NodeAuthorizer>,
    pub audit: Option<audit::AuditLog>,
    /// The cluster CA (PEM), published to pods as `kube-root-ca.crt`.
    pub ca_pem: String,
    disabled_admission: Vec<String>,
}

/// Parses an upstream static token file: `token,user,uid[,"group1,group2"]` per line.
pub fn parse_token_file(text: &str) -> std::result::Result<HashMap<String, User>, String> {
    let mut out = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields = split_csv(line);
        if fields.len() < 3 {
            return Err(format!(
                "line {}: expected at least 3 columns (token,user,uid), got {}",
                n + 1,
                fields.len()
            ));
        }
        let (token, name, uid) = (&fields[0], &fields[1], &fields[2]);
        if token.is_empty() || name.is_empty() {
            return Err(format!("line {}: empty token or user name", n + 1));
        }
        let mut groups: Vec<String> = fields
            .get(3)
            .map(|g| {
                g.split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        out.insert(
            token.clone(),
            User {
                name: name.clone(),
                uid: uid.clone(),
                groups,
                extra: BTreeMap::new(),
            },
        );
    }
    Ok(out)
}

fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

impl Security {
    /// Sets up authentication and authorization from the server flags.
    pub fn new(
        cfg: &crate::Config,
        data_dir: &Path,
        registry: &Arc<Registry>,
        ca_pem: &str,
    ) -> std::result::Result<Self, SetupError> {
        let tokens = match &cfg.token_auth_file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| SetupError::TokenFile {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?;
                parse_token_file(&text).map_err(|message| SetupError::TokenFile {
                    path: p.display().to_string(),
                    message,
                })?
            }
            None => HashMap::new(),
        };
        let signer = jwt::Signer::load_or_create(&data_dir.join("tls").join("sa.key"))?;
        let audiences = if cfg.api_audiences.is_empty() {
            vec![cfg.service_account_issuer.clone()]
        } else {
            cfg.api_audiences.clone()
        };
        let audit = match &cfg.audit_log_path {
            Some(p) => Some(
                audit::AuditLog::open(p).map_err(|source| SetupError::Audit {
                    path: p.display().to_string(),
                    source,
                })?,
            ),
            None => None,
        };
        Ok(Security {
            tokens,
            secrets: registry.store("", "v1", "secrets").map(|s| s.cache.clone()),
            service_accounts: Some(serviceaccount::Tokens::new(
                signer,
                cfg.service_account_issuer.clone(),
                audiences,
                registry.clone(),
            )),
            anonymous: cfg.anonymous_auth,
            rbac: Rbac::new(registry),
            node: node::NodeAuthorizer::new(registry, policy::role_rules("system:node")),
            audit,
            ca_pem: ca_pem.to_string(),
            disabled_admission: cfg.disable_admission_plugins.clone(),
        })
    }

    /// Allows everything to the admin certificate only (no RBAC, no tokens): what
    /// [`ApiState::new`] starts with until the server installs the configured one.
    pub fn certificates_only() -> Self {
        Security {
            tokens: HashMap::new(),
            secrets: None,
            service_accounts: None,
            anonymous: false,
            rbac: None,
            node: None,
            audit: None,
            ca_pem: String::new(),
            disabled_admission: Vec::new(),
        }
    }

    /// Whether an admission plugin (upstream name) is on.
    pub fn admission_enabled(&self, name: &str) -> bool {
        !self.disabled_admission.iter().any(|d| d == name)
    }

    /// The user a bearer token names, `Ok(None)` when no authenticator knows it.
    pub async fn authenticate_token(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Result<Option<User>> {
        if audiences.is_empty() {
            if let Some(u) = self.tokens.get(token) {
                return Ok(Some(u.clone()));
            }
            if let Some(u) = self
                .secrets
                .as_ref()
                .and_then(|s| bootstrap_token::authenticate(s, token))
            {
                return Ok(Some(u));
            }
        }
        if jwt::looks_like_jwt(token) {
            if let Some(sa) = &self.service_accounts {
                return sa.authenticate(token, audiences).await;
            }
        }
        Ok(None)
    }

    /// Upstream's authenticator union: a verified client certificate, else a bearer token
    /// (401 when invalid), else anonymous (when enabled).
    pub async fn authenticate(&self, headers: &HeaderMap, cert: Option<&UserInfo>) -> Result<User> {
        if let Some(u) = cert {
            if !u.valid_at(chrono::Utc::now().timestamp()) {
                tracing::debug!(user = %u.name, "client certificate has expired or is not yet valid");
                return Err(Error::Unauthorized);
            }
            return Ok(u.into());
        }
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| rest.trim().to_string())
            })
            .filter(|t| !t.is_empty());
        if let Some(token) = bearer {
            return match self.authenticate_token(&token, &[]).await? {
                Some(u) => Ok(u),
                None => Err(Error::Unauthorized),
            };
        }
        if self.anonymous {
            Ok(User::anonymous())
        } else {
            Err(Error::Unauthorized)
        }
    }

    /// Authorizes `a` for `user` with the Node authorizer, then RBAC: `Ok(reason)` or a
    /// 403 with upstream's wording (the reasons of every authorizer that said no).
    pub fn authorize(&self, user: &User, a: &Attributes) -> Result<String> {
        let Some(rbac) = &self.rbac else {
            return Ok(String::new());
        };
        let mut reasons = Vec::new();
        match self.node.as_ref().and_then(|n| n.authorize(user, a)) {
            Some(node::Decision::Allow) => return Ok(String::new()),
            Some(node::Decision::NoOpinion(r)) if !r.is_empty() => reasons.push(r),
            _ => {}
        }
        rbac.authorize(user, a).map_err(|reason| {
            if !reason.is_empty() {
                reasons.push(reason);
            }
            let mut message = rbac::forbidden_message(&user.name, a);
            if !reasons.is_empty() {
                message = format!("{message}: {}", reasons.join("\n"));
            }
            Error::Forbidden {
                resource: qualified(&a.resource, &a.api_group),
                name: a.name.clone(),
                message,
            }
        })
    }

    /// Applies `Impersonate-*` headers: checks the `impersonate` verb for each requested
    /// attribute and returns the impersonated user (or `user` when there are none).
    pub fn impersonate(&self, user: User, headers: &HeaderMap) -> Result<User> {
        let values = |name: &str| -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_string)
                .collect()
        };
        let name = values("impersonate-user").into_iter().next();
        let groups = values("impersonate-group");
        let uid = values("impersonate-uid").into_iter().next();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in headers {
            if let Some(key) = k.as_str().strip_prefix("impersonate-extra-") {
                let key = percent_encoding::percent_decode_str(key)
                    .decode_utf8_lossy()
                    .to_lowercase();
                if let Ok(v) = v.to_str() {
                    extra.entry(key).or_default().push(v.to_string());
                }
            }
        }
        let Some(name) = name else {
            if !groups.is_empty() || uid.is_some() || !extra.is_empty() {
                return Err(Error::BadRequest(
                    "requested impersonation of groups, uid or extra without impersonating a user"
                        .into(),
                ));
            }
            return Ok(user);
        };
        let check = |group: &str, resource: &str, sub: &str, ns: &str, n: &str| {
            self.authorize(
                &user,
                &Attributes {
                    verb: "impersonate".into(),
                    resource_request: true,
                    namespace: ns.into(),
                    api_group: group.into(),
                    api_version: "v1".into(),
                    resource: resource.into(),
                    subresource: sub.into(),
                    name: n.into(),
                    ..Default::default()
                },
            )
        };
        let mut new_groups = groups.clone();
        match name
            .strip_prefix("system:serviceaccount:")
            .and_then(|r| r.split_once(':'))
        {
            Some((ns, sa)) => {
                check("", "serviceaccounts", "", ns, sa)?;
                if groups.is_empty() {
                    new_groups = serviceaccount::groups(ns);
                }
            }
            None => {
                check("", "users", "", "", &name)?;
            }
        }
        for g in &groups {
            check("", "groups", "", "", g)?;
        }
        if let Some(u) = &uid {
            check("authentication.k8s.io", "uids", "", "", u)?;
        }
        for (k, vs) in &extra {
            for v in vs {
                check("authentication.k8s.io", "userextras", k, "", v)?;
            }
        }
        if name == ANONYMOUS {
            if !new_groups.iter().any(|g| g == UNAUTHENTICATED) {
                new_groups.push(UNAUTHENTICATED.into());
            }
        } else if !new_groups.iter().any(|g| g == AUTHENTICATED) {
            new_groups.push(AUTHENTICATED.into());
        }
        Ok(User {
            name,
            uid: uid.unwrap_or_default(),
            groups: new_groups,
            extra,
        })
    }
}

/// `deployments.apps` or `pods`.
pub fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// The authorization attributes of a request (a list or watch naming one object through
/// `fieldSelector=metadata.name=x` is authorized for that name, as upstream).
pub fn attributes(info: &RequestInfo, query: &str) -> Attributes {
    let mut name = info.name.clone();
    if name.is_empty() && matches!(info.verb.as_str(), "list" | "watch") {
        if let Some(n) = crate::request_info::list_name_from_field_selector(query) {
            name = n;
        }
    }
    Attributes {
        verb: info.verb.clone(),
        resource_request: info.is_resource_request,
        namespace: info.namespace.clone(),
        api_group: info.api_group.clone(),
        api_version: info.api_version.clone(),
        resource: info.resource.clone(),
        subresource: info.subresource.clone(),
        name,
        path: info.path.clone(),
        field_selector: crate::request_info::query_pairs(query)
            .into_iter()
            .find(|(k, _)| k == "fieldSelector")
            .map(|(_, v)| v)
            .unwrap_or_default(),
    }
}

/// What [`filter`] did with a request.
pub enum Filtered {
    /// Authenticated and authorized: dispatch it (the user is in its extensions).
    Pass(Request<Incoming>),
    /// Answered here (a review or TokenRequest).
    Served(Response<Body>),
}

/// The authenticated user of a request that passed [`filter`].
pub fn request_user(req: &Request<Incoming>) -> User {
    req.extensions()
        .get::<User>()
        .cloned()
        .unwrap_or_else(User::anonymous)
}

/// Authenticates, impersonates and authorizes a request, then serves it when it is one of
/// the API server's own review resources. Errors are 401/403/400 answers.
pub async fn filter(
    state: &Arc<ApiState>,
    mut req: Request<Incoming>,
    cert: Option<&UserInfo>,
    info: &RequestInfo,
) -> Result<Filtered> {
    let sec = &state.security;
    let authn = sec.authenticate(req.headers(), cert).await;
    let user = match authn {
        Ok(u) => u,
        Err(e) => {
            audit::record(&req, None, None, info, None);
            return Err(e);
        }
    };
    let acting = user.clone();
    let user = match sec.impersonate(user, req.headers()) {
        Ok(u) => u,
        Err(e) => {
            audit::record(&req, Some(&acting), None, info, Some(false));
            return Err(e);
        }
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let attrs = attributes(info, &query);
    let decision = sec.authorize(&user, &attrs);
    audit::record(
        &req,
        Some(&acting),
        Some(&user),
        info,
        Some(decision.is_ok()),
    );
    decision?;
    req.extensions_mut().insert(user.clone());
    reviews::serve(state, &user, info, req).await
}
