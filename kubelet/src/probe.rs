//! Container probes (exec, httpGet, tcpSocket, grpc) and the workers that run liveness,
//! readiness and startup probes with their timing fields and thresholds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::docker::Docker;

/// A probe's (or hook's) outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success,
    Failure(String),
}

/// What a container's probes concluded so far; read by status, written by the workers.
#[derive(Debug, Clone, Default)]
pub struct ProbeState {
    /// Startup probe passed (true when there is none).
    pub started: bool,
    /// Readiness probe passed (true when there is none, once started).
    pub ready: bool,
}

/// Resolves a named or numbered port against the container's ports.
pub fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| format!("invalid port number: {p}")),
        IntOrString::String(name) => {
            if let Ok(p) = name.parse::<u16>() {
                return Ok(p);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port as u16)
                .ok_or_else(|| format!("couldn't find port: {name} in {}", c.name))
        }
    }
}

async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Outcome {
    let addr = format!("{host}:{port}");
    let stream = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failure(format!(
                "Get \"http://{addr}{path}\": dial tcp {addr}: connect: {e}"
            ))
        }
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = match hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io).await {
        Ok(x) => x,
        Err(e) => return Outcome::Failure(e.to_string()),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::get(if path.is_empty() { "/" } else { path })
        .header("host", &addr)
        .header("user-agent", "kube-probe/1.33")
        .header("accept", "*/*");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let Ok(req) = req.body(Full::new(Bytes::new())) else {
        return Outcome::Failure(format!("invalid probe request for path {path:?}"));
    };
    match send.send_request(req).await {
        Ok(resp) => {
            let code = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if (200..400).contains(&code) {
                Outcome::Success
            } else {
                let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
                Outcome::Failure(format!(
                    "HTTP probe failed with statuscode: {code}{}",
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(" ({text})")
                    }
                ))
            }
        }
        Err(e) => Outcome::Failure(format!("Get \"http://{addr}{path}\": {e}")),
    }
}

/// The standard gRPC health check (`grpc.health.v1.Health/Check`) over h2c.
async fn grpc_check(host: &str, port: u16, service: &str) -> Outcome {
    let addr = format!("{host}:{port}");
    let stream = match tokio::net::TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service \"{addr}\" within 1s: {e}"
            ))
        }
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = match hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        hyper_util::rt::TokioExecutor::new(),
        io,
    )
    .await
    {
        Ok(x) => x,
        Err(e) => return Outcome::Failure(e.to_string()),
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    // HealthCheckRequest { string service = 1; }, length-prefixed.
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        msg.push(service.len() as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", "kube-probe/1.33")
        .body(Full::new(Bytes::from(body)));
    let Ok(req) = req else {
        return Outcome::Failure("invalid gRPC probe request".into());
    };
    let resp = match send.send_request(req).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failure(format!("failed to connect service \"{addr}\": {e}")),
    };
    let collected = match resp.into_body().collect().await {
        Ok(c) => c,
        Err(e) => return Outcome::Failure(e.to_string()),
    };
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string();
    if grpc_status != "0" {
        return Outcome::Failure(format!("rpc error: code = {grpc_status}"));
    }
    let data = collected.to_bytes();
    // HealthCheckResponse { ServingStatus status = 1; }: SERVING is 1.
    let status = if data.len() >= 7 && data[5] == 0x08 {
        data[6]
    } else {
        0
    };
    if status == 1 {
        Outcome::Success
    } else {
        let name = match status {
            2 => "NOT_SERVING",
            3 => "SERVICE_UNKNOWN",
            _ => "UNKNOWN",
        };
        Outcome::Failure(format!("service unhealthy (responded with \"{name}\")"))
    }
}

/// Runs one probe once, bounded by its timeoutSeconds.
pub async fn run_once(
    p: &Probe,
    c: &Container,
    docker: &Docker,
    container_id: &str,
    pod_ip: &str,
) -> Outcome {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let fut = async {
        if let Some(e) = &p.exec {
            let cmd = e.command.clone().unwrap_or_default();
            match docker.exec(container_id, &cmd).await {
                Ok((0, _)) => Outcome::Success,
                Ok((code, out)) => Outcome::Failure(if out.is_empty() {
                    format!("command {cmd:?} exited with {code}")
                } else {
                    out
                }),
                Err(e) => Outcome::Failure(e.to_string()),
            }
        } else if let Some(h) = &p.http_get {
            let port = match resolve_port(&h.port, c) {
                Ok(p) => p,
                Err(e) => return Outcome::Failure(e),
            };
            let host = h
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string());
            let headers: Vec<(String, String)> = h
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect();
            http_get(&host, port, h.path.as_deref().unwrap_or("/"), &headers).await
        } else if let Some(t) = &p.tcp_socket {
            let port = match resolve_port(&t.port, c) {
                Ok(p) => p,
                Err(e) => return Outcome::Failure(e),
            };
            let host = t
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_string());
            match tokio::net::TcpStream::connect((host.as_str(), port)).await {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Failure(format!("dial tcp {host}:{port}: connect: {e}")),
            }
        } else if let Some(g) = &p.grpc {
            grpc_check(
                pod_ip,
                g.port as u16,
                g.service.as_deref().unwrap_or_default(),
            )
            .await
        } else {
            Outcome::Failure("probe has no handler".into())
        }
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(o) => o,
        Err(_) => Outcome::Failure(format!("probe timed out after {}s", timeout.as_secs())),
    }
}

/// Which probe a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// What a probe worker reports to its pod worker.
pub enum Report {
    /// Readiness or startup state changed.
    Changed,
    /// Failed probe (an Unhealthy event).
    Unhealthy {
        container: String,
        kind: Kind,
        message: String,
    },
    /// A liveness or startup probe failed its threshold: the container must be restarted.
    Kill {
        container_id: String,
        container: String,
        kind: Kind,
        grace: Option<i64>,
    },
}

/// Everything a probe worker needs.
pub struct Worker {
    pub kind: Kind,
    pub probe: Probe,
    pub container: Container,
    pub container_id: String,
    pub pod_ip: String,
    pub docker: Docker,
    pub state: Arc<Mutex<ProbeState>>,
    pub reports: tokio::sync::mpsc::UnboundedSender<Report>,
    pub wake: Arc<Notify>,
}

impl Worker {
    /// Runs until `stop`: initialDelaySeconds, then every periodSeconds, applying
    /// successThreshold and failureThreshold.
    pub async fn run(self, stop: CancellationToken) {
        let p = &self.probe;
        let initial = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        let success_threshold = p.success_threshold.unwrap_or(1).max(1);
        let failure_threshold = p.failure_threshold.unwrap_or(3).max(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(initial) => {}
        }
        let (mut successes, mut failures) = (0, 0);
        loop {
            let gated = self.kind != Kind::Startup && !self.state.lock().started;
            if !gated {
                let out = run_once(
                    p,
                    &self.container,
                    &self.docker,
                    &self.container_id,
                    &self.pod_ip,
                )
                .await;
                if stop.is_cancelled() {
                    return;
                }
                match out {
                    Outcome::Success => {
                        failures = 0;
                        successes += 1;
                        if successes >= success_threshold {
                            self.set(true);
                            // A startup probe is done once it succeeds.
                            if self.kind == Kind::Startup {
                                return;
                            }
                        }
                    }
                    Outcome::Failure(msg) => {
                        successes = 0;
                        failures += 1;
                        let _ = self.reports.send(Report::Unhealthy {
                            container: self.container.name.clone(),
                            kind: self.kind,
                            message: msg,
                        });
                        if failures >= failure_threshold {
                            self.set(false);
                            if self.kind != Kind::Readiness {
                                let _ = self.reports.send(Report::Kill {
                                    container_id: self.container_id.clone(),
                                    container: self.container.name.clone(),
                                    kind: self.kind,
                                    grace: p.termination_grace_period_seconds,
                                });
                                self.wake.notify_one();
                                return;
                            }
                        }
                    }
                }
                self.wake.notify_one();
            }
            let wait = if gated {
                Duration::from_millis(200)
            } else {
                period
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn set(&self, ok: bool) {
        let mut s = self.state.lock();
        let changed = match self.kind {
            Kind::Startup => {
                let c = s.started != ok;
                s.started = ok;
                c
            }
            Kind::Readiness => {
                let c = s.ready != ok;
                s.ready = ok;
                c
            }
            Kind::Liveness => false,
        };
        drop(s);
        if changed {
            let _ = self.reports.send(Report::Changed);
            self.wake.notify_one();
        }
    }
}
