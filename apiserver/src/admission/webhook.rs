//! Mutating and validating admission webhooks (admissionregistration.k8s.io/v1): matching
//! rules, namespace and object selectors, AdmissionReview v1 over HTTPS trusting the
//! `caBundle`, URL or service references, timeouts, failurePolicy and JSON patch responses.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};

use super::{cached, store_of, Attributes, Operation};
use crate::error::{Error, Result};
use crate::handlers::ApiState;
use crate::object::strings as strs;
use crate::selector::LabelSelector;

const GROUP: &str = "admissionregistration.k8s.io";
/// Largest webhook response read.
const MAX_RESPONSE: usize = 3 * 1024 * 1024;

fn any_or(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

/// Whether one of a webhook's rules covers the request (upstream `rules.Matcher`).
pub fn rules_match(webhook: &Value, a: &Attributes<'_>) -> bool {
    let op = a.operation.as_str();
    let resource = if a.subresource.is_empty() {
        a.resource.plural.to_string()
    } else {
        format!("{}/{}", a.resource.plural, a.subresource)
    };
    webhook
        .get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|r| {
            let scope = r.get("scope").and_then(Value::as_str).unwrap_or("*");
            let scope_ok = match scope {
                "Namespaced" => a.resource.namespaced,
                "Cluster" => !a.resource.namespaced,
                _ => true,
            };
            let res_ok = strs(r.get("resources")).iter().any(|x| {
                x == "*/*"
                    || *x == resource
                    || (x == "*" && a.subresource.is_empty())
                    || x.strip_suffix("/*")
                        .is_some_and(|base| base == a.resource.plural && !a.subresource.is_empty())
                    || x.strip_prefix("*/").is_some_and(|sub| sub == a.subresource)
            });
            scope_ok
                && any_or(&strs(r.get("operations")), op)
                && any_or(&strs(r.get("apiGroups")), a.resource.group)
                && any_or(&strs(r.get("apiVersions")), a.resource.version)
                && res_ok
        })
}

fn selector_matches(sel: Option<&Value>, labels: &Map<String, Value>) -> bool {
    match sel {
        None | Some(Value::Null) => true,
        Some(s) => match LabelSelector::from_label_selector_json(s) {
            Ok(sel) if sel.is_empty() => true,
            Ok(sel) => sel.matches(labels),
            Err(_) => false,
        },
    }
}

fn labels_of(obj: &Value) -> Map<String, Value> {
    obj.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

async fn namespace_labels(state: &ApiState, a: &Attributes<'_>, obj: &Value) -> Map<String, Value> {
    if a.is("", "namespaces") {
        return match (a.operation, a.old) {
            (Operation::Delete, Some(old)) => labels_of(old),
            _ => labels_of(obj),
        };
    }
    let Some(store) = store_of(state, "", "namespaces") else {
        return Map::new();
    };
    match store.get_value("", a.namespace).await {
        Ok(ns) => labels_of(&ns),
        Err(_) => Map::new(),
    }
}

fn review(a: &Attributes<'_>, obj: &Value, uid: &str) -> Value {
    let r = a.resource;
    // The object of a `/scale` write is an autoscaling/v1 Scale.
    let kind = if a.subresource == "scale" {
        json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
    } else {
        json!({"group": r.group, "version": r.version, "kind": r.kind})
    };
    let mut req = json!({
        "uid": uid,
        "kind": kind,
        "resource": {"group": r.group, "version": r.version, "resource": r.plural},
        "requestKind": kind,
        "requestResource": {"group": r.group, "version": r.version, "resource": r.plural},
        "name": a.name(obj),
        "operation": a.operation.as_str(),
        "userInfo": a.user.to_json(),
        "object": obj,
        "oldObject": a.old.cloned().unwrap_or(Value::Null),
        "dryRun": a.dry_run,
        "options": {"apiVersion": "meta.k8s.io/v1",
            "kind": match a.operation {
                Operation::Create => "CreateOptions",
                Operation::Update => "UpdateOptions",
                Operation::Delete => "DeleteOptions",
            }},
    });
    if !a.namespace.is_empty() {
        req["namespace"] = json!(a.namespace);
    }
    if !a.subresource.is_empty() {
        req["subResource"] = json!(a.subresource);
        req["requestSubResource"] = json!(a.subresource);
    }
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": req})
}

/// Where to send a webhook's requests: (host to connect to, port, TLS name, path).
async fn target(
    state: &ApiState,
    cc: &Value,
) -> std::result::Result<(String, u16, String, String), String> {
    if let Some(url) = cc.get("url").and_then(Value::as_str) {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("invalid url {url:?}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!("webhook url {url:?} must use https"));
        }
        let host = uri
            .host()
            .ok_or("webhook url has no host")?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let path = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        return Ok((host.clone(), port, host, path));
    }
    let svc = cc
        .get("service")
        .ok_or("clientConfig needs url or service")?;
    let ns = svc.get("namespace").and_then(Value::as_str).unwrap_or("");
    let name = svc.get("name").and_then(Value::as_str).unwrap_or("");
    let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443) as u16;
    let path = svc
        .get("path")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    let store = store_of(state, "", "services").ok_or("services are not served")?;
    let s = store
        .get_value(ns, name)
        .await
        .map_err(|_| format!("service \"{ns}/{name}\" not found"))?;
    let ip = s
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .filter(|ip| !ip.is_empty() && *ip != "None")
        .ok_or_else(|| format!("service \"{ns}/{name}\" has no cluster IP"))?;
    Ok((ip.to_string(), port, format!("{name}.{ns}.svc"), path))
}

fn tls_config(ca_bundle: Option<&str>) -> std::result::Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(b64) = ca_bundle.filter(|s| !s.is_empty()) {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("invalid caBundle: {e}"))?;
        let text = String::from_utf8_lossy(&pem).to_string();
        for block in text.split("-----END CERTIFICATE-----") {
            let Some(start) = block.find("-----BEGIN CERTIFICATE-----") else {
                continue;
            };
            let body: String = block[start + 27..].lines().map(str::trim).collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| format!("invalid caBundle certificate: {e}"))?;
            roots
                .add(rustls_pki_types::CertificateDer::from(der))
                .map_err(|e| format!("invalid caBundle certificate: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

async fn send(state: &ApiState, cc: &Value, body: Vec<u8>) -> std::result::Result<Value, String> {
    let (host, port, sni, path) = target(state, cc).await?;
    let tls = tls_config(cc.get("caBundle").and_then(Value::as_str))?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(sni.clone()).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::post(path)
        .header(http::header::HOST, sni)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!(
            "expected response code 200, got {}",
            resp.status().as_u16()
        ));
    }
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| format!("decoding the response: {e}"))
}

fn denied(name: &str, response: &Value) -> Error {
    let deny = format!("admission webhook {name:?} denied the request");
    let status = response.get("status");
    let message = status
        .and_then(|s| s.get("message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty());
    let code = status
        .and_then(|s| s.get("code"))
        .and_then(Value::as_u64)
        .filter(|c| (400..600).contains(c))
        .unwrap_or(400) as u16;
    let reason = status
        .and_then(|s| s.get("reason"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Error::Status {
        code,
        reason,
        message: match message {
            Some(m) => format!("{deny}: {m}"),
            None => format!("{deny} without explanation"),
        },
    }
}

/// Calls the matching webhooks of every Mutating (`mutating`) or Validating configuration.
pub async fn call(
    state: &Arc<ApiState>,
    a: &Attributes<'_>,
    obj: &mut Value,
    mutating: bool,
) -> Result<()> {
    let plural = if mutating {
        "mutatingwebhookconfigurations"
    } else {
        "validatingwebhookconfigurations"
    };
    // Webhook configurations are never themselves subject to webhooks (as upstream).
    if a.resource.group == GROUP {
        return Ok(());
    }
    let mut configs = cached(state, GROUP, plural, "").await?;
    if configs.is_empty() {
        return Ok(());
    }
    configs.sort_by_key(|c| crate::object::meta_str(c, "name").to_string());
    let mut ns_labels: Option<Map<String, Value>> = None;
    for cfg in &configs {
        for wh in cfg
            .get("webhooks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = wh.get("name").and_then(Value::as_str).unwrap_or("");
            if !rules_match(wh, a) {
                continue;
            }
            if !selector_matches(wh.get("objectSelector"), &labels_of(obj))
                && !a
                    .old
                    .is_some_and(|o| selector_matches(wh.get("objectSelector"), &labels_of(o)))
            {
                continue;
            }
            if a.resource.namespaced || a.is("", "namespaces") {
                if ns_labels.is_none() {
                    ns_labels = Some(namespace_labels(state, a, obj).await);
                }
                if !selector_matches(
                    wh.get("namespaceSelector"),
                    ns_labels.as_ref().unwrap_or(&Map::new()),
                ) {
                    continue;
                }
            }
            if a.dry_run
                && wh.get("sideEffects").and_then(Value::as_str) != Some("None")
                && wh.get("sideEffects").and_then(Value::as_str) != Some("NoneOnDryRun")
            {
                return Err(Error::BadRequest(format!(
                    "admission webhook {name:?} has side effects and does not support dry run"
                )));
            }
            let uid = uuid::Uuid::new_v4().to_string();
            let body = serde_json::to_vec(&review(a, obj, &uid)).unwrap_or_default();
            let timeout = wh
                .get("timeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(10)
                .clamp(1, 30);
            let cc = wh.get("clientConfig").cloned().unwrap_or(Value::Null);
            let result =
                match tokio::time::timeout(Duration::from_secs(timeout), send(state, &cc, body))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err("context deadline exceeded".to_string()),
                };
            let ignore = wh.get("failurePolicy").and_then(Value::as_str) == Some("Ignore");
            let review = match result {
                Ok(v) => v,
                Err(e) if ignore => {
                    tracing::warn!(webhook = %name, error = %e, "failed calling webhook, ignoring");
                    continue;
                }
                Err(e) => {
                    return Err(Error::Internal(format!(
                        "failed calling webhook {name:?}: failed to call webhook: {e}"
                    )))
                }
            };
            let response = review.get("response").cloned().unwrap_or(Value::Null);
            if response.get("uid").and_then(Value::as_str) != Some(uid.as_str()) {
                let e = format!(
                    "expected response.uid={uid:?}, got {:?}",
                    response.get("uid").and_then(Value::as_str).unwrap_or("")
                );
                if ignore {
                    continue;
                }
                return Err(Error::Internal(format!(
                    "failed calling webhook {name:?}: {e}"
                )));
            }
            // Upstream hands a webhook's warnings to the client as Warning headers.
            for w in crate::object::strings(response.get("warnings")) {
                a.warn(w);
            }
            if response.get("allowed").and_then(Value::as_bool) != Some(true) {
                return Err(denied(name, &response));
            }
            if let Some(patch) = response.get("patch").and_then(Value::as_str) {
                if !mutating || a.operation == Operation::Delete {
                    continue;
                }
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .map_err(|e| Error::Internal(format!("webhook {name:?} patch: {e}")))?;
                let patch: Value = serde_json::from_slice(&raw)
                    .map_err(|e| Error::Internal(format!("webhook {name:?} patch: {e}")))?;
                crate::patch::json_patch(obj, &patch).map_err(|e| {
                    Error::Internal(format!(
                        "admission webhook {name:?} returned an invalid patch: {e}"
                    ))
                })?;
            }
        }
    }
    Ok(())
}
