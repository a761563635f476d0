//! Service-account tokens: bound tokens from the TokenRequest API
//! (`serviceaccounts/<name>/token`) and legacy Secret-based tokens, both validated on
//! every request against the live ServiceAccount (and bound Pod or Secret).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use super::jwt::Signer;
use super::User;
use crate::error::{Error, Result};
use crate::object;
use crate::registry::stores::Registry;
use crate::validation::FieldError;

/// `iss` of legacy Secret-based tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// The default `--service-account-issuer`.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Secret type whose token the server fills in.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// Default TokenRequest lifetime.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;

/// Issues and validates service-account tokens.
pub struct Tokens {
    pub signer: Signer,
    pub issuer: String,
    /// Audiences a token must carry (one of) to authenticate to this server.
    pub api_audiences: Vec<String>,
    registry: Arc<Registry>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn username(ns: &str, name: &str) -> String {
    format!("system:serviceaccount:{ns}:{name}")
}

/// The groups of a service account: `system:serviceaccounts`, `…:<ns>`, `system:authenticated`.
pub fn groups(ns: &str) -> Vec<String> {
    vec![
        "system:serviceaccounts".into(),
        format!("system:serviceaccounts:{ns}"),
        super::AUTHENTICATED.into(),
    ]
}

impl Tokens {
    pub fn new(
        signer: Signer,
        issuer: String,
        api_audiences: Vec<String>,
        registry: Arc<Registry>,
    ) -> Self {
        Tokens {
            signer,
            issuer,
            api_audiences,
            registry,
        }
    }

    async fn get(&self, plural: &str, ns: &str, name: &str) -> Result<Option<Value>> {
        let Some(store) = self.registry.store("", "v1", plural) else {
            return Ok(None);
        };
        match store.get_value(ns, name).await {
            Ok(v) => Ok(Some(v)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The user of a valid token signed by this server; `Ok(None)` when the token is not
    /// one of ours or no longer valid. `audiences` empty means the API server's own.
    pub async fn authenticate(&self, token: &str, audiences: &[String]) -> Result<Option<User>> {
        let Some(claims) = self.signer.verify(token) else {
            return Ok(None);
        };
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if iss == LEGACY_ISSUER {
            return self.legacy(token, &claims).await;
        }
        if iss != self.issuer {
            return Ok(None);
        }
        let t = now();
        let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
        let nbf = claims.get("nbf").and_then(Value::as_i64).unwrap_or(0);
        if exp <= t || nbf > t + 60 {
            return Ok(None);
        }
        let wanted = if audiences.is_empty() {
            &self.api_audiences
        } else {
            audiences
        };
        let token_aud: Vec<&str> = match claims.get("aud") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !token_aud.iter().any(|a| wanted.iter().any(|w| w == a)) {
            return Ok(None);
        }
        let k = &claims["kubernetes.io"];
        let ns = k["namespace"].as_str().unwrap_or("");
        let sa_name = k.pointer("/serviceaccount/name").and_then(Value::as_str);
        let sa_uid = k.pointer("/serviceaccount/uid").and_then(Value::as_str);
        let (Some(sa_name), Some(sa_uid)) = (sa_name, sa_uid) else {
            return Ok(None);
        };
        let Some(sa) = self.get("serviceaccounts", ns, sa_name).await? else {
            return Ok(None);
        };
        if object::meta_str(&sa, "uid") != sa_uid || deleted(&sa) {
            return Ok(None);
        }
        let mut extra = BTreeMap::new();
        for (kind, plural) in [("pod", "pods"), ("secret", "secrets")] {
            let Some(r) = k.get(kind).filter(|v| v.is_object()) else {
                continue;
            };
            let name = r["name"].as_str().unwrap_or("");
            let uid = r["uid"].as_str().unwrap_or("");
            let Some(obj) = self.get(plural, ns, name).await? else {
                return Ok(None);
            };
            if object::meta_str(&obj, "uid") != uid || deleted(&obj) {
                return Ok(None);
            }
            if kind == "pod" {
                extra.insert(
                    "authentication.kubernetes.io/pod-name".to_string(),
                    vec![name.to_string()],
                );
                extra.insert(
                    "authentication.kubernetes.io/pod-uid".to_string(),
                    vec![uid.to_string()],
                );
            }
        }
        if let Some(jti) = claims.get("jti").and_then(Value::as_str) {
            extra.insert(
                "authentication.kubernetes.io/credential-id".to_string(),
                vec![format!("JTI={jti}")],
            );
        }
        Ok(Some(User {
            name: username(ns, sa_name),
            uid: sa_uid.to_string(),
            groups: groups(ns),
            extra,
        }))
    }

    async fn legacy(&self, token: &str, claims: &Value) -> Result<Option<User>> {
        let s = |k: &str| {
            claims
                .get(format!("kubernetes.io/serviceaccount/{k}"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (ns, secret, sa_name, sa_uid) = (
            s("namespace"),
            s("secret.name"),
            s("service-account.name"),
            s("service-account.uid"),
        );
        let Some(sec) = self.get("secrets", &ns, &secret).await? else {
            return Ok(None);
        };
        let stored = sec
            .pointer("/data/token")
            .and_then(Value::as_str)
            .and_then(|b| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b).ok()
            });
        if stored.as_deref() != Some(token.as_bytes()) || deleted(&sec) {
            return Ok(None);
        }
        let Some(sa) = self.get("serviceaccounts", &ns, &sa_name).await? else {
            return Ok(None);
        };
        if object::meta_str(&sa, "uid") != sa_uid || deleted(&sa) {
            return Ok(None);
        }
        let mut extra = BTreeMap::new();
        extra.insert(
            "authentication.kubernetes.io/credential-id".to_string(),
            vec![format!("secret-uid={}", object::meta_str(&sec, "uid"))],
        );
        Ok(Some(User {
            name: username(&ns, &sa_name),
            uid: sa_uid,
            groups: groups(&ns),
            extra,
        }))
    }

    /// A legacy token for a `kubernetes.io/service-account-token` Secret.
    pub fn legacy_token(&self, ns: &str, secret: &str, sa: &str, sa_uid: &str) -> Result<String> {
        let claims = json!({
            "iss": LEGACY_ISSUER,
            "kubernetes.io/serviceaccount/namespace": ns,
            "kubernetes.io/serviceaccount/secret.name": secret,
            "kubernetes.io/serviceaccount/service-account.name": sa,
            "kubernetes.io/serviceaccount/service-account.uid": sa_uid,
            "sub": username(ns, sa),
        });
        self.signer
            .sign(&claims)
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Serves `POST serviceaccounts/<name>/token`: validates the TokenRequest, checks the
    /// account and bound object, and answers the request with `status.token`.
    pub async fn token_request(&self, ns: &str, name: &str, mut req: Value) -> Result<Value> {
        let invalid = |errors: Vec<FieldError>| Error::Invalid {
            kind: "TokenRequest.authentication.k8s.io".into(),
            name: name.to_string(),
            errors,
        };
        let sa = self
            .get("serviceaccounts", ns, name)
            .await?
            .ok_or_else(|| Error::NotFound {
                resource: "serviceaccounts".into(),
                name: name.to_string(),
            })?;
        let sa_uid = object::meta_str(&sa, "uid").to_string();
        let spec = req.get("spec").cloned().unwrap_or(json!({}));
        let exp_secs = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
            Some(v) => v.as_i64().unwrap_or(-1),
        };
        if exp_secs < 600 {
            return Err(invalid(vec![FieldError::invalid_raw(
                "spec.expirationSeconds",
                exp_secs,
                "may not specify a duration less than 10 minutes",
            )]));
        }
        if exp_secs > 1 << 32 {
            return Err(invalid(vec![FieldError::invalid_raw(
                "spec.expirationSeconds",
                exp_secs,
                "may not specify a duration larger than 2^32 seconds",
            )]));
        }
        let mut audiences: Vec<String> = spec
            .get("audiences")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if audiences.is_empty() {
            audiences = self.api_audiences.clone();
        }
        let iat = now();
        let exp = iat + exp_secs;
        let mut k8s = json!({
            "namespace": ns,
            "serviceaccount": {"name": name, "uid": sa_uid},
        });
        if let Some(bound) = spec.get("boundObjectRef").filter(|b| b.is_object()) {
            let kind = bound.get("kind").and_then(Value::as_str).unwrap_or("");
            let bname = bound.get("name").and_then(Value::as_str).unwrap_or("");
            let (plural, key) = match kind {
                "Pod" => ("pods", "pod"),
                "Secret" => ("secrets", "secret"),
                _ => {
                    return Err(invalid(vec![FieldError::not_supported(
                        "spec.boundObjectRef.kind",
                        kind,
                        &["Pod", "Secret"],
                    )]))
                }
            };
            let obj = self
                .get(plural, ns, bname)
                .await?
                .ok_or_else(|| Error::NotFound {
                    resource: plural.into(),
                    name: bname.to_string(),
                })?;
            let uid = object::meta_str(&obj, "uid");
            if let Some(want) = bound
                .get("uid")
                .and_then(Value::as_str)
                .filter(|u| !u.is_empty())
            {
                if want != uid {
                    return Err(Error::Conflict {
                        resource: plural.into(),
                        name: bname.to_string(),
                        message: format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
                    });
                }
            }
            k8s[key] = json!({"name": bname, "uid": uid});
            if kind == "Pod" {
                if let Some(node) = obj.pointer("/spec/nodeName").and_then(Value::as_str) {
                    k8s["node"] = json!({"name": node});
                }
            }
            req["spec"]["boundObjectRef"]["uid"] = json!(uid);
        }
        let claims = json!({
            "aud": audiences,
            "exp": exp,
            "iat": iat,
            "iss": self.issuer,
            "jti": uuid::Uuid::new_v4().to_string(),
            "kubernetes.io": k8s,
            "nbf": iat,
            "sub": username(ns, name),
        });
        let token = self
            .signer
            .sign(&claims)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let expires = chrono::DateTime::from_timestamp(exp, 0)
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        req["apiVersion"] = json!("authentication.k8s.io/v1");
        req["kind"] = json!("TokenRequest");
        req["metadata"] = json!({"name": name, "namespace": ns, "creationTimestamp": null});
        req["spec"]["audiences"] = json!(audiences);
        req["spec"]["expirationSeconds"] = json!(exp_secs);
        req["status"] = json!({"token": token, "expirationTimestamp": expires});
        Ok(req)
    }
}

fn deleted(obj: &Value) -> bool {
    let ts = object::meta_str(obj, "deletionTimestamp");
    if ts.is_empty() {
        return false;
    }
    chrono::DateTime::parse_from_rfc3339(ts)
        .map(|t| t.timestamp() <= now())
        .unwrap_or(true)
}
