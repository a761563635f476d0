//! Subresources served by a node's kubelet: `pods/log`, `pods/exec`, `pods/attach`,
//! `pods/portforward` and `nodes/proxy`. The API server finds the pod's node, the node's
//! address and kubelet port, and proxies the request over TLS with its kubelet client
//! certificate. Upgrades (WebSocket, SPDY) are done on both sides and the bytes spliced,
//! like upstream's UpgradeAwareHandler.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, BodyStream, Empty, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::{ApiState, Body};
use crate::error::{Error, Result};
use crate::request_info::RequestInfo;

/// Port of a kubelet whose Node does not say (upstream's default).
const DEFAULT_KUBELET_PORT: u64 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this much of a kubelet's error body becomes the Status message.
const MAX_ERROR_BODY: usize = 4096;

/// Whether this request is one of ours.
pub fn is_proxied(info: &RequestInfo) -> bool {
    if !info.api_group.is_empty() || info.api_version != "v1" || info.name.is_empty() {
        return false;
    }
    match info.resource.as_str() {
        "pods" => matches!(
            info.subresource.as_str(),
            "log" | "exec" | "attach" | "portforward"
        ),
        "nodes" => info.subresource == "proxy",
        _ => false,
    }
}

/// Serves a proxied subresource.
pub async fn serve(
    state: &Arc<ApiState>,
    req: Request<Incoming>,
    info: &RequestInfo,
) -> Result<Response<Body>> {
    let query = req.uri().query().unwrap_or("").to_string();
    if info.resource == "nodes" {
        let node = get(state, "nodes", "", &info.name).await?;
        // Everything after `/proxy` goes to the kubelet as is.
        let path = req.uri().path();
        let rest = path
            .find("/proxy")
            .map(|i| path[i + "/proxy".len()..].to_string())
            .unwrap_or_default();
        let rest = if rest.is_empty() {
            "/".to_string()
        } else {
            rest
        };
        let target = kubelet_target(&node, &info.name)?;
        return forward(state, req, &target, &rest, &query, false).await;
    }
    let ns = &info.namespace;
    let name = &info.name;
    let pod = get(state, "pods", ns, name).await?;
    let sub = info.subresource.as_str();
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if sub == "portforward" {
        if node_name.is_empty() {
            return Err(no_host(name));
        }
        let node = get(state, "nodes", "", node_name).await?;
        let target = kubelet_target(&node, node_name)?;
        let path = format!("/portForward/{}/{}", esc(ns), esc(name));
        return forward(state, req, &target, &path, &query, false).await;
    }
    let container = query_value(&query, "container");
    let container = resolve_container(&pod, name, container.as_deref(), sub == "log")?;
    if node_name.is_empty() {
        if sub == "log" {
            // Upstream answers an unscheduled pod's log with an empty stream.
            return Ok(plain(StatusCode::OK, Bytes::new()));
        }
        return Err(no_host(name));
    }
    if sub == "log" {
        check_log_query(&query)?;
        if let Some(msg) = waiting_message(&pod, name, &container, &query) {
            return Err(Error::BadRequest(msg));
        }
    }
    let node = get(state, "nodes", "", node_name).await?;
    let target = kubelet_target(&node, node_name)?;
    let kubelet_path = match sub {
        "log" => "containerLogs",
        "exec" => "exec",
        _ => "attach",
    };
    let path = format!(
        "/{kubelet_path}/{}/{}/{}",
        esc(ns),
        esc(name),
        esc(&container)
    );
    let query = without(&query, "container");
    forward(state, req, &target, &path, &query, sub == "log").await
}

fn no_host(name: &str) -> Error {
    Error::BadRequest(format!("pod {name} does not have a host assigned"))
}

fn esc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

async fn get(state: &Arc<ApiState>, plural: &str, ns: &str, name: &str) -> Result<Value> {
    let store = state
        .registry
        .store("", "v1", plural)
        .cloned()
        .ok_or(Error::NotFoundPath)?;
    store.get_value(ns, name).await
}

fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

fn without(query: &str, key: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != key && !k.is_empty() {
            out.append_pair(&k, &v);
        }
    }
    out.finish()
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{field}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request is for, with upstream's errors.
fn resolve_container(pod: &Value, name: &str, asked: Option<&str>, log: bool) -> Result<String> {
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    let ephemeral = names(pod, "ephemeralContainers");
    match asked {
        Some(c) => {
            if containers
                .iter()
                .chain(&init)
                .chain(&ephemeral)
                .any(|n| n == c)
            {
                Ok(c.to_string())
            } else {
                Err(Error::BadRequest(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            );
            if log {
                if !init.is_empty() {
                    msg.push_str(&format!(
                        " or one of the init containers: [{}]",
                        init.join(" ")
                    ));
                }
                if !ephemeral.is_empty() {
                    msg.push_str(&format!(
                        " or one of the ephemeral containers: [{}]",
                        ephemeral.join(" ")
                    ));
                }
            }
            Err(Error::BadRequest(msg))
        }
    }
}

/// Validation of PodLogOptions as upstream does before asking the kubelet.
fn check_log_query(query: &str) -> Result<()> {
    let mut since_seconds = false;
    let mut since_time = false;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let positive = |field: &str| -> Result<()> {
            match v.parse::<i64>() {
                Ok(n) if n >= 1 => Ok(()),
                Ok(_) => Err(Error::BadRequest(format!(
                    "PodLogOptions \"\" is invalid: {field}: Invalid value: {v}: must be greater than 0"
                ))),
                Err(_) => Err(Error::BadRequest(format!(
                    "invalid value {v:?} for {field}: strconv.ParseInt: parsing {v:?}: invalid syntax"
                ))),
            }
        };
        match k.as_ref() {
            "sinceSeconds" => {
                positive("sinceSeconds")?;
                since_seconds = true;
            }
            "limitBytes" => positive("limitBytes")?,
            "tailLines" if v.parse::<i64>().map(|n| n < 0).unwrap_or(true) => {
                return Err(Error::BadRequest(format!(
                    "PodLogOptions \"\" is invalid: tailLines: Invalid value: {v}: must be greater than or equal to 0"
                )));
            }
            "sinceTime" => {
                chrono::DateTime::parse_from_rfc3339(&v).map_err(|_| {
                    Error::BadRequest(format!(
                        "parsing time {v:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse"
                    ))
                })?;
                since_time = true;
            }
            _ => {}
        }
    }
    if since_seconds && since_time {
        return Err(Error::BadRequest(
            "PodLogOptions \"\" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                .into(),
        ));
    }
    Ok(())
}

/// The kubelet's message for a container that has no logs yet, from the pod's status.
fn waiting_message(pod: &Value, name: &str, container: &str, query: &str) -> Option<String> {
    let status = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .filter_map(|f| {
            pod.pointer(&format!("/status/{f}"))
                .and_then(Value::as_array)
        })
        .flatten()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(container))?;
    let previous = query_value(query, "previous").is_some_and(|v| v == "true" || v == "1");
    let last_terminated = status.pointer("/lastState/terminated").is_some();
    if previous {
        return (!last_terminated).then(|| {
            format!("previous terminated container {container:?} in pod {name:?} not found")
        });
    }
    let waiting = status.pointer("/state/waiting")?;
    if last_terminated {
        return None;
    }
    let reason = waiting.get("reason").and_then(Value::as_str).unwrap_or("");
    Some(match reason {
        "ErrImagePull" => format!(
            "container {container:?} in pod {name:?} is waiting to start: image can't be pulled"
        ),
        "ImagePullBackOff" => format!(
            "container {container:?} in pod {name:?} is waiting to start: trying and failing to pull image"
        ),
        r => format!("container {container:?} in pod {name:?} is waiting to start: {r}"),
    })
}

/// Where a node's kubelet listens.
struct Target {
    host: String,
    port: u16,
}

fn kubelet_target(node: &Value, node_name: &str) -> Result<Target> {
    let addrs = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let pick = |kind: &str| {
        addrs
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some(kind))
            .filter_map(|a| a.get("address").and_then(Value::as_str))
            .find(|a| !a.is_empty())
            .map(str::to_string)
    };
    // InternalIP first: several minik8s nodes may share one host under made-up names.
    let host = [
        "InternalIP",
        "Hostname",
        "InternalDNS",
        "ExternalIP",
        "ExternalDNS",
    ]
    .iter()
    .find_map(|k| pick(k))
    .ok_or_else(|| {
        Error::BadRequest(format!(
            "no preferred addresses found; known addresses: [] for node {node_name}"
        ))
    })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .filter(|p| *p > 0 && *p <= u16::MAX as u64)
        .unwrap_or(DEFAULT_KUBELET_PORT) as u16;
    Ok(Target { host, port })
}

type ClientBody = BoxBody<Bytes, hyper::Error>;

const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "host",
];

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Sends the request to the kubelet and relays the answer; splices upgraded connections.
async fn forward(
    state: &Arc<ApiState>,
    mut req: Request<Incoming>,
    target: &Target,
    path: &str,
    query: &str,
    log: bool,
) -> Result<Response<Body>> {
    let tls = state
        .kubelet_tls
        .clone()
        .ok_or_else(|| Error::Internal("no kubelet client certificate configured".into()))?;
    let upgrade = is_upgrade(req.headers());
    let unavailable =
        |e: String| Error::ServiceUnavailable(format!("error trying to reach service: {e}"));
    let addr = if target.host.contains(':') {
        format!("[{}]:{}", target.host, target.port)
    } else {
        format!("{}:{}", target.host, target.port)
    };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| unavailable(format!("dial tcp {addr}: i/o timeout")))?
        .map_err(|e| unavailable(format!("dial tcp {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let server_name = rustls_pki_types::ServerName::try_from(target.host.clone())
        .map_err(|e| unavailable(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(tls)
        .connect(server_name, tcp)
        .await
        .map_err(|e| unavailable(format!("tls: {e}")))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, ClientBody>(TokioIo::new(tls))
            .await
            .map_err(|e| unavailable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "kubelet connection ended");
        }
    });

    let uri = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut out = Request::builder().method(req.method().clone()).uri(uri);
    for (k, v) in req.headers() {
        if HOP_BY_HOP.contains(&k.as_str()) || k == header::AUTHORIZATION {
            continue;
        }
        if !upgrade && (k == header::CONNECTION || k == header::UPGRADE) {
            continue;
        }
        out = out.header(k, v);
    }
    out = out.header(header::HOST, addr.as_str());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let body: ClientBody = if upgrade || req.method() == Method::GET {
        Empty::new().map_err(|never| match never {}).boxed()
    } else {
        req.into_body().boxed()
    };
    let out = out
        .body(body)
        .map_err(|e| Error::Internal(format!("building kubelet request: {e}")))?;
    let mut resp = sender
        .send_request(out)
        .await
        .map_err(|e| unavailable(e.to_string()))?;

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(Error::Internal("kubelet upgraded a plain request".into()));
        };
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (c, b) = match tokio::join!(client_upgrade, backend_upgrade) {
                (Ok(c), Ok(b)) => (c, b),
                (c, b) => {
                    tracing::debug!(client = c.is_ok(), kubelet = b.is_ok(), "upgrade failed");
                    return;
                }
            };
            let mut c = TokioIo::new(c);
            let mut b = TokioIo::new(b);
            if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut b).await {
                tracing::debug!(error = %e, "upgraded stream ended");
            }
        });
        let mut r = Response::new(super::full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (k, v) in resp.headers() {
            r.headers_mut().append(k, v.clone());
        }
        return Ok(r);
    }

    if log && !resp.status().is_success() {
        // Upstream turns a kubelet error into a Status with the kubelet's text.
        let code = resp.status();
        let body = read_limited(resp.into_body()).await;
        let msg = String::from_utf8_lossy(&body).trim_end().to_string();
        return Err(match code {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => Error::BadRequest(msg),
            _ => Error::Internal(msg),
        });
    }
    let (parts, body) = resp.into_parts();
    let stream = BodyStream::new(body)
        .take_while(|f| std::future::ready(f.is_ok()))
        .filter_map(|f| std::future::ready(f.ok()))
        .map(Ok::<_, Infallible>);
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *r.status_mut() = parts.status;
    for (k, v) in parts.headers.iter() {
        if HOP_BY_HOP.contains(&k.as_str()) || k == header::CONNECTION {
            continue;
        }
        r.headers_mut().append(k, v.clone());
    }
    Ok(r)
}

async fn read_limited(body: Incoming) -> Vec<u8> {
    let mut out = Vec::new();
    let mut s = BodyStream::new(body);
    while let Some(Ok(f)) = s.next().await {
        if let Ok(d) = f.into_data() {
            out.extend_from_slice(&d);
            if out.len() >= MAX_ERROR_BODY {
                out.truncate(MAX_ERROR_BODY);
                break;
            }
        }
    }
    out
}

fn plain(code: StatusCode, b: Bytes) -> Response<Body> {
    let mut r = Response::new(super::full(b));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}})
    }

    #[test]
    fn container_name_errors_are_upstreams() {
        let e = resolve_container(&pod(), "x", None, true).expect_err("needs a name");
        assert_eq!(
            e.status()["message"],
            "a container name must be specified for pod x, choose one of: [a b] or one of the init containers: [i]"
        );
        let e = resolve_container(&pod(), "x", None, false).expect_err("needs a name");
        assert_eq!(
            e.status()["message"],
            "a container name must be specified for pod x, choose one of: [a b]"
        );
        let e = resolve_container(&pod(), "x", Some("z"), false).expect_err("unknown");
        assert_eq!(e.status()["message"], "container z is not valid for pod x");
        assert_eq!(
            resolve_container(&pod(), "x", Some("i"), true).expect("init"),
            "i"
        );
        let one = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(
            resolve_container(&one, "x", None, true).expect("default"),
            "only"
        );
    }

    #[test]
    fn waiting_container_message() {
        let p = json!({"status": {"containerStatuses": [{"name": "a", "state": {"waiting": {"reason": "ContainerCreating"}}}]}});
        assert_eq!(
            waiting_message(&p, "x", "a", "").as_deref(),
            Some("container \"a\" in pod \"x\" is waiting to start: ContainerCreating")
        );
        assert_eq!(
            waiting_message(&p, "x", "a", "previous=true").as_deref(),
            Some("previous terminated container \"a\" in pod \"x\" not found")
        );
        let running =
            json!({"status": {"containerStatuses": [{"name": "a", "state": {"running": {}}}]}});
        assert_eq!(waiting_message(&running, "x", "a", ""), None);
    }

    #[test]
    fn kubelet_target_prefers_internal_ip_and_reads_the_port() {
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": "10.0.0.2"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}}});
        let t = kubelet_target(&n, "n").expect("target");
        assert_eq!((t.host.as_str(), t.port), ("10.0.0.2", 12345));
        let n = json!({"status": {"addresses": [{"type": "Hostname", "address": "h"}]}});
        assert_eq!(kubelet_target(&n, "n").expect("target").port, 10250);
    }

    #[test]
    fn log_query_validation() {
        assert!(check_log_query("tailLines=0&limitBytes=5&sinceSeconds=3").is_ok());
        assert!(check_log_query("sinceSeconds=0").is_err());
        assert!(check_log_query("tailLines=-1").is_err());
        assert!(check_log_query("sinceSeconds=3&sinceTime=2024-01-01T00:00:00Z").is_err());
        assert_eq!(
            without("container=a&follow=true", "container"),
            "follow=true"
        );
    }
}
