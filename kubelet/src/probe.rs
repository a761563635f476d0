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

/// Where an httpGet probe (or hook) sends its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Target {
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.authority(), self.path)
    }

    /// Resolves a redirect's `Location` against this URL (absolute, scheme-relative,
    /// absolute-path or relative reference); `None` when it is not a usable http(s) URL.
    fn join(&self, location: &str) -> Option<Target> {
        let (https, rest) = if let Some(r) = location.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = location.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = location.strip_prefix("//") {
            (self.https, r)
        } else if location.starts_with('/') {
            return Some(Target {
                path: location.to_string(),
                ..self.clone()
            });
        } else {
            let dir = self.path.split('?').next().unwrap_or("/");
            let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
            let dir = if dir.is_empty() { "/" } else { dir };
            return Some(Target {
                path: remove_dot_segments(&format!("{dir}{location}")),
                ..self.clone()
            });
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']')?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().ok()?,
                None => default_port,
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().ok()?),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return None;
        }
        Some(Target {
            https,
            host,
            port,
            path,
        })
    }
}

/// RFC 3986 dot-segment removal on the path part of a resolved relative reference.
fn remove_dot_segments(path_query: &str) -> String {
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut r = format!("/{}", out.join("/"));
    if let Some(q) = query {
        r.push('?');
        r.push_str(q);
    }
    r
}

/// The prober's TLS client: like upstream's (`InsecureSkipVerify`), the server's certificate
/// is not verified; the handshake's signatures still are.
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(NoCertificateVerification(provider.clone()));
        let config = match rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
        {
            Ok(b) => b,
            // The ring provider supports the default versions; keep a usable config anyway.
            Err(_) => rustls::ClientConfig::builder(),
        };
        Arc::new(
            config
                .dangerous()
                .with_custom_certificate_verifier(verifier)
                .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

#[derive(Debug)]
struct NoCertificateVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One request; the response's status code and `Location` header.
async fn send_once(
    t: &Target,
    headers: &[(String, String)],
) -> Result<(u16, Option<String>), String> {
    let addr = t.authority();
    let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
        .await
        .map_err(|e| format!("dial tcp {addr}: connect: {e}"))?;
    let mut req = http::Request::get(t.path.as_str());
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    if !has("host") {
        req = req.header("host", &addr);
    }
    if !has("user-agent") {
        req = req.header("user-agent", USER_AGENT);
    }
    if !has("accept") {
        req = req.header("accept", "*/*");
    }
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .header("connection", "close")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("invalid probe request: {e}"))?;
    let resp = if t.https {
        let name = rustls_pki_types::ServerName::try_from(t.host.clone())
            .map_err(|e| format!("invalid host {:?}: {e}", t.host))?;
        let tls = tls_connector()
            .connect(name, stream)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        request(tls, req).await?
    } else {
        request(stream, req).await?
    };
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok((resp.status().as_u16(), location))
}

async fn request<S>(
    io: S,
    req: http::Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send.send_request(req).await.map_err(|e| e.to_string())
}

/// Upstream's `kube-probe/<major>.<minor>`.
const USER_AGENT: &str = "kube-probe/1.33";

/// Upstream's HTTP prober: certificates not verified, `User-Agent`/`Accept` defaults unless
/// given, redirects followed (at most 10) while they stay on the same host name (a redirect
/// elsewhere ends the probe with that response), 200–399 is success; the failure message
/// never holds the response body.
pub(crate) async fn http_get(target: Target, headers: &[(String, String)]) -> Outcome {
    let mut t = target;
    let mut followed = 0;
    loop {
        let (code, location) = match send_once(&t, headers).await {
            Ok(r) => r,
            Err(e) => return Outcome::Failure(format!("Get \"{}\": {e}", t.url())),
        };
        if matches!(code, 301 | 302 | 303 | 307 | 308) {
            if let Some(next) = location.as_deref().and_then(|l| t.join(l)) {
                if next.host == t.host {
                    if followed >= 10 {
                        return Outcome::Failure(format!(
                            "Get \"{}\": stopped after 10 redirects",
                            next.url()
                        ));
                    }
                    followed += 1;
                    t = next;
                    continue;
                }
            }
        }
        return if (200..400).contains(&code) {
            Outcome::Success
        } else {
            Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
        };
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
        .header("user-agent", USER_AGENT)
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
            let path = h.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
            let target = Target {
                https: h
                    .scheme
                    .as_deref()
                    .is_some_and(|s| s.eq_ignore_ascii_case("https")),
                host,
                port,
                path: if path.starts_with('/') {
                    path.to_string()
                } else {
                    format!("/{path}")
                },
            };
            http_get(target, &headers).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    /// A loopback HTTPS server with a self-signed certificate: `/ok` answers 200 when the
    /// request carries the prober's User-Agent, `/redirect` sends to `/ok`, `/away` to another
    /// host, `/loop` to itself, `/fail` answers 500 with a body.
    async fn https_server() -> u16 {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der.into())
        .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                        let ua = req
                            .headers()
                            .get("user-agent")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let (code, location) = match req.uri().path() {
                            "/ok" if ua == "kube-probe/1.33" => (200, None),
                            "/ok" => (400, None),
                            "/custom" if ua == "mine" => (200, None),
                            "/redirect" => (302, Some("/ok".to_string())),
                            "/relative/a" => (307, Some("../ok".to_string())),
                            "/away" => (302, Some("https://elsewhere.invalid/".to_string())),
                            "/loop" => (302, Some("/loop".to_string())),
                            _ => (500, None),
                        };
                        let mut resp = http::Response::builder().status(code);
                        if let Some(l) = location {
                            resp = resp.header("location", l);
                        }
                        Ok::<_, Infallible>(
                            resp.body(Full::new(Bytes::from_static(b"secret body")))
                                .expect("response"),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        port
    }

    fn target(https: bool, port: u16, path: &str) -> Target {
        Target {
            https,
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
        }
    }

    #[tokio::test]
    async fn https_probe_skips_verification_follows_local_redirects() {
        let port = https_server().await;
        assert_eq!(
            http_get(target(true, port, "/ok"), &[]).await,
            Outcome::Success
        );
        let ua = [("User-Agent".to_string(), "mine".to_string())];
        assert_eq!(
            http_get(target(true, port, "/custom"), &ua).await,
            Outcome::Success
        );
        assert_eq!(
            http_get(target(true, port, "/redirect"), &[]).await,
            Outcome::Success
        );
        assert_eq!(
            http_get(target(true, port, "/relative/a"), &[]).await,
            Outcome::Success
        );
        // A redirect to another host is not followed: the 302 itself counts as success.
        assert_eq!(
            http_get(target(true, port, "/away"), &[]).await,
            Outcome::Success
        );
        assert_eq!(
            http_get(target(true, port, "/loop"), &[]).await,
            Outcome::Failure(format!(
                "Get \"https://127.0.0.1:{port}/loop\": stopped after 10 redirects"
            ))
        );
        // The failure message never holds the body.
        assert_eq!(
            http_get(target(true, port, "/fail"), &[]).await,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        // Plain HTTP against the TLS port fails.
        assert!(matches!(
            http_get(target(false, port, "/ok"), &[]).await,
            Outcome::Failure(m) if m.starts_with(&format!("Get \"http://127.0.0.1:{port}/ok\""))
        ));
    }

    #[test]
    fn redirect_locations_resolve() {
        let t = target(false, 8080, "/a/b?x=1");
        assert_eq!(t.join("/c").expect("abs path").path, "/c");
        assert_eq!(t.join("c?y").expect("relative").path, "/a/c?y");
        assert_eq!(t.join("../c").expect("dot-dot").path, "/c");
        assert_eq!(t.join("./").expect("dot").path, "/a/");
        let abs = t.join("https://127.0.0.1:8443/d").expect("absolute");
        assert_eq!((abs.https, abs.port, abs.path.as_str()), (true, 8443, "/d"));
        let v6 = t.join("http://[::1]/e").expect("ipv6");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 80));
        assert_eq!(t.join("//other:81").expect("scheme-relative").host, "other");
        assert!(t.join("https:///x").is_none());
    }
}
