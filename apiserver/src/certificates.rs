//! certificates.k8s.io: the requestor of a CertificateSigningRequest is recorded from the
//! authenticated user at create, and a loop does what upstream's controller-manager
//! `csrapproving` and `csrsigning` controllers do for client certificates:
//! - node client CSRs (`kubernetes.io/kube-apiserver-client-kubelet`, CN
//!   `system:node:<name>`, O `system:nodes`, client usages) are approved when a
//!   SubjectAccessReview lets the requestor `create certificatesigningrequests/nodeclient`
//!   (or `selfnodeclient` when a node renews its own);
//! - approved CSRs of the `kube-apiserver-client(-kubelet)` signers are signed by the cluster
//!   CA (one year), the certificate written to `status.certificate`.
//!
//! minik8s runs both in the API server, which holds the CA key; the controller-manager
//! never sees it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::rbac::Attributes;
use crate::auth::{Security, User};
use crate::object::now_rfc3339 as now;
use crate::pki::Pki;
use crate::registry::store::WriteOptions;
use crate::registry::stores::Registry;
use crate::registry::Subresource;
use crate::validation::FieldError;

/// The API group.
pub const GROUP: &str = "certificates.k8s.io";
/// Signer of kubelet client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Signer of other API client certificates.
pub const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

/// Records who asks (upstream's CSR `PrepareForCreate`): `spec.username`, `uid`, `groups`,
/// `extra` from the authenticated user; a new CSR has no status.
pub fn set_requestor(user: &User, obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("username".into(), json!(user.name));
        spec.insert("groups".into(), json!(user.groups));
        if user.uid.is_empty() {
            spec.remove("uid");
        } else {
            spec.insert("uid".into(), json!(user.uid));
        }
        if user.extra.is_empty() {
            spec.remove("extra");
        } else {
            spec.insert("extra".into(), json!(user.extra));
        }
    }
    if let Some(o) = obj.as_object_mut() {
        o.remove("status");
    }
}

/// The subject (CN, Os) of a base64 PEM `CERTIFICATE REQUEST`, after checking its signature.
fn subject(request_b64: &str) -> Option<(String, Vec<String>, String)> {
    let pem_bytes = base64::engine::general_purpose::STANDARD
        .decode(request_b64)
        .ok()?;
    let pem_text = String::from_utf8(pem_bytes).ok()?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    if pem.label != "CERTIFICATE REQUEST" {
        return None;
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .ok()?;
    csr.verify_signature().ok()?;
    let subj = &csr.certification_request_info.subject;
    let cn = subj.iter_common_name().next()?.as_str().ok()?.to_string();
    let orgs = subj
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((cn, orgs, pem_text))
}

use x509_parser::prelude::FromDer as _;

fn usages(csr: &Value) -> Vec<&str> {
    csr.pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|u| u.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Upstream `isNodeClientCert`: CN `system:node:<name>`, O exactly `system:nodes`, usages
/// client auth plus digital signature and/or key encipherment.
fn node_client(csr: &Value) -> Option<(String, String)> {
    let (cn, orgs, pem) = subject(csr.pointer("/spec/request")?.as_str()?)?;
    let node = cn.strip_prefix("system:node:")?.to_string();
    if node.is_empty() || orgs != ["system:nodes"] {
        return None;
    }
    let u = usages(csr);
    let allowed = ["client auth", "digital signature", "key encipherment"];
    if !u.contains(&"client auth") || u.iter().any(|x| !allowed.contains(x)) {
        return None;
    }
    Some((node, pem))
}

/// Condition types that, once set, stay (upstream's `validateConditions`).
const FINAL_CONDITIONS: [&str; 3] = ["Approved", "Denied", "Failed"];

fn conditions(csr: &Value) -> Vec<Value> {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn condition_type(c: &Value) -> &str {
    c.get("type").and_then(Value::as_str).unwrap_or("")
}

/// What upstream's validation says of an approval update's `status.conditions`: types
/// given, Approved/Denied/Failed at most once, `True`, never removed, Approved and Denied
/// not together.
pub fn approval_errors(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let new_conds = conditions(new);
    let mut seen: Vec<&str> = Vec::new();
    for (i, c) in new_conds.iter().enumerate() {
        let t = condition_type(c);
        let path = format!("status.conditions[{i}]");
        if t.is_empty() {
            errs.push(FieldError::required(format!("{path}.type"), ""));
            continue;
        }
        if FINAL_CONDITIONS.contains(&t) {
            if seen.contains(&t) {
                errs.push(FieldError::duplicate(format!("{path}.type"), t));
            }
            seen.push(t);
            let status = c.get("status").and_then(Value::as_str).unwrap_or("");
            if status != "True" {
                errs.push(FieldError::not_supported(
                    format!("{path}.status"),
                    status,
                    &["True"],
                ));
            }
        }
    }
    if seen.contains(&"Approved") && seen.contains(&"Denied") {
        errs.push(FieldError::invalid(
            "status.conditions",
            "Approved",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    for t in FINAL_CONDITIONS {
        if has_condition(old, t) && !seen.contains(&t) {
            errs.push(FieldError::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type \"{t}\""),
            ));
        }
    }
    errs
}

/// The new `status.conditions` with upstream's timestamps: `lastUpdateTime` now when not
/// given, `lastTransitionTime` kept from the same old condition of unchanged status, else now.
pub fn stamped_conditions(new: &Value, old: &Value) -> Option<Value> {
    let now = now();
    let old_conds = conditions(old);
    let list: Vec<Value> = conditions(new)
        .into_iter()
        .map(|mut c| {
            let previous = old_conds
                .iter()
                .find(|o| condition_type(o) == condition_type(&c))
                .cloned();
            if let Some(o) = c.as_object_mut() {
                if o.get("lastUpdateTime").is_none_or(Value::is_null) {
                    o.insert("lastUpdateTime".into(), json!(now));
                }
                let same = previous
                    .as_ref()
                    .is_some_and(|p| p.get("status") == o.get("status"));
                let kept = previous
                    .as_ref()
                    .and_then(|p| p.get("lastTransitionTime"))
                    .filter(|_| same)
                    .cloned();
                match kept {
                    Some(t) => o.insert("lastTransitionTime".into(), t),
                    None if o.get("lastTransitionTime").is_none_or(Value::is_null) => {
                        o.insert("lastTransitionTime".into(), json!(now))
                    }
                    None => None,
                };
            }
            c
        })
        .collect();
    (!list.is_empty()).then_some(Value::Array(list))
}

/// Whether `user` may `verb` (`approve`, `sign`) requests for `signer`: on
/// `certificates.k8s.io/signers` named the signer or its `<domain>/*`.
fn allowed_for_signer(
    state: &crate::handlers::ApiState,
    user: &User,
    verb: &str,
    signer: &str,
) -> bool {
    let names = [
        signer.to_string(),
        format!("{}/*", signer.split('/').next().unwrap_or(signer)),
    ];
    names.iter().any(|name| {
        let attrs = Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: GROUP.into(),
            api_version: "*".into(),
            resource: "signers".into(),
            name: name.clone(),
            ..Default::default()
        };
        state.security.authorize(user, &attrs).is_ok()
    })
}

/// Upstream's CertificateApproval and CertificateSigning admission: approving or denying
/// needs `approve` on the request's signer, setting `status.certificate` needs `sign`.
pub fn admit_update(
    state: &crate::handlers::ApiState,
    a: &crate::admission::Attributes<'_>,
    obj: &Value,
) -> crate::error::Result<()> {
    let signer = obj
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (verb, what) = match a.subresource {
        "approval" => ("approve", "approve"),
        "status" => {
            let old_cert = a.old.and_then(|o| o.pointer("/status/certificate"));
            if obj.pointer("/status/certificate") == old_cert {
                return Ok(());
            }
            ("sign", "sign")
        }
        _ => return Ok(()),
    };
    if allowed_for_signer(state, a.user, verb, signer) {
        return Ok(());
    }
    Err(a.forbidden(
        obj,
        format!("user not permitted to {what} requests with signerName \"{signer}\""),
    ))
}

fn has_condition(csr: &Value, typ: &str) -> bool {
    csr.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c.get("type").and_then(Value::as_str) == Some(typ))
}

fn requestor(csr: &Value) -> User {
    let spec = csr.get("spec").unwrap_or(&Value::Null);
    User {
        name: spec
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        uid: spec
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        extra: Default::default(),
    }
}

/// What to do with one CSR.
/// `spec.expirationSeconds`, which upstream's signer honours up to its
/// `--cluster-signing-duration` (1 year here); validation keeps it at 600 or more.
fn requested_lifetime(csr: &Value) -> Option<Duration> {
    csr.pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .filter(|s| *s >= MIN_EXPIRATION_SECONDS)
        .map(|s| Duration::from_secs(s as u64))
}

/// Upstream's lower bound for `spec.expirationSeconds`.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// Upstream's `ValidateCertificateSigningRequestCreate` checks of `spec.expirationSeconds`.
pub fn validate_expiration(obj: &Value) -> Vec<FieldError> {
    match obj
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
    {
        Some(s) if s < MIN_EXPIRATION_SECONDS => vec![FieldError::invalid_raw(
            "spec.expirationSeconds",
            s,
            "may not specify a duration less than 600 seconds (10 minutes)",
        )],
        _ => Vec::new(),
    }
}

enum Action {
    Approve,
    Sign(String),
}

fn decide(security: &Security, csr: &Value) -> Option<Action> {
    let signer = csr.pointer("/spec/signerName").and_then(Value::as_str)?;
    if has_condition(csr, "Denied") || has_condition(csr, "Failed") {
        return None;
    }
    let approved = has_condition(csr, "Approved");
    let issued = csr
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .is_some_and(|c| !c.is_empty());
    match signer {
        KUBELET_CLIENT_SIGNER => {
            let (node, pem) = node_client(csr)?;
            if approved {
                return (!issued).then_some(Action::Sign(pem));
            }
            let user = requestor(csr);
            let sub = if user.name == format!("system:node:{node}") {
                "selfnodeclient"
            } else {
                "nodeclient"
            };
            let attrs = Attributes {
                verb: "create".into(),
                resource_request: true,
                api_group: GROUP.into(),
                api_version: "v1".into(),
                resource: "certificatesigningrequests".into(),
                subresource: sub.into(),
                ..Default::default()
            };
            security
                .authorize(&user, &attrs)
                .is_ok()
                .then_some(Action::Approve)
        }
        CLIENT_SIGNER if approved && !issued => {
            let (_, _, pem) = subject(csr.pointer("/spec/request")?.as_str()?)?;
            usages(csr)
                .contains(&"client auth")
                .then_some(Action::Sign(pem))
        }
        _ => None,
    }
}

/// Approves and signs CSRs (every 200 ms when the CSR cache changed) until `shutdown`.
pub fn spawn_controller(
    registry: Arc<Registry>,
    security: Arc<Security>,
    pki: Arc<Pki>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(store) = registry
            .store(GROUP, "v1", "certificatesigningrequests")
            .cloned()
        else {
            return;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut seen = -1;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let rev = store.cache.revision();
            if rev == seen {
                continue;
            }
            seen = rev;
            let (items, _, _) = store.cache.list(&Default::default(), "", 0);
            for item in items {
                let Ok(csr) = serde_json::from_slice::<Value>(&item.bytes) else {
                    continue;
                };
                let Some(action) = decide(&security, &csr) else {
                    continue;
                };
                let status = match action {
                    Action::Approve => json!({"conditions": [{
                        "type": "Approved", "status": "True", "reason": "AutoApproved",
                        "message": "Auto approving kubelet client certificate after SubjectAccessReview.",
                        "lastUpdateTime": now(), "lastTransitionTime": now(),
                    }]}),
                    Action::Sign(pem) => {
                        match pki.sign_client_csr(&pem, requested_lifetime(&csr)) {
                            Ok(cert) => json!({"certificate":
                            base64::engine::general_purpose::STANDARD.encode(cert)}),
                            Err(e) => {
                                tracing::warn!(csr = %item.name, error = %e, "cannot sign");
                                continue;
                            }
                        }
                    }
                };
                let r = store
                    .guaranteed_update(
                        "",
                        &item.name,
                        Some(Subresource::Status),
                        &WriteOptions::internal(crate::registry::store::CONTROLLER_MANAGER),
                        |old| {
                            let mut new = old.clone();
                            let st = new
                                .as_object_mut()
                                .map(|o| o.entry("status").or_insert_with(|| json!({})));
                            if let Some(st) = st.and_then(Value::as_object_mut) {
                                for (k, v) in status.as_object().into_iter().flatten() {
                                    match (k.as_str(), st.get_mut(k)) {
                                        ("conditions", Some(Value::Array(have))) => {
                                            have.extend(v.as_array().cloned().unwrap_or_default())
                                        }
                                        _ => {
                                            st.insert(k.clone(), v.clone());
                                        }
                                    }
                                }
                            }
                            Ok(new)
                        },
                    )
                    .await;
                match r {
                    Ok(_) => {
                        tracing::info!(csr = %item.name, "certificate signing request handled")
                    }
                    Err(e) => tracing::warn!(csr = %item.name, error = %e, "updating CSR"),
                }
            }
        }
    })
}
