//! The kubelet's server: container logs, exec, attach and port-forward over TLS, for the API
//! server to proxy, and `/stats/summary` (upstream `pkg/kubelet/server`). Callers prove who
//! they are with a client certificate signed by the cluster CA or a bearer token, and RBAC
//! decides (see [`auth`]): the API server may do everything, a user granted `nodes/stats`
//! reads the stats. Only `/healthz` is open to anyone.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

mod auth;
mod logs;
mod pods;
mod portforward;
mod remotecommand;
pub mod spdy;
mod stats;
mod tls;
mod websocket;

pub use auth::{Attributes, User};

/// What the kubelet's server needs from the kubelet.
#[derive(Clone)]
pub struct Context {
    /// The Docker Engine the pods run on.
    pub docker: bollard::Docker,
    /// This kubelet's `--node-name`: only containers labelled with it are served.
    pub node_name: String,
    /// PEM of the cluster CA (the kubeconfig's certificate-authority-data): client
    /// certificates it signed are accepted.
    pub client_ca_pem: String,
    /// Host names and IP addresses put in the self-signed serving certificate.
    pub serving_names: Vec<String>,
    /// The kubelet's root directory (its filesystem is the node's in `/stats/summary`).
    pub root_dir: std::path::PathBuf,
    /// Checks bearer tokens and authorizes requests with the API server.
    reviewer: Arc<auth::Reviewer>,
    /// The host's CPU time at the last `/stats/summary`, for the node's CPU rate.
    cpu_sample: Arc<std::sync::Mutex<Option<stats::CpuSample>>>,
}

impl Context {
    /// The server of node `node_name`, on `docker`, accepting client certificates of
    /// `client_ca_pem`. Token and access reviews go through `client`; without one, only
    /// `system:masters` certificates (the API server's) get past `/healthz`.
    pub fn new(
        docker: bollard::Docker,
        node_name: &str,
        client_ca_pem: &str,
        client: Option<kube::Client>,
    ) -> Context {
        Context {
            docker,
            node_name: node_name.to_string(),
            client_ca_pem: client_ca_pem.to_string(),
            serving_names: Vec::new(),
            root_dir: std::path::PathBuf::from("/"),
            reviewer: Arc::new(auth::Reviewer::new(client, node_name)),
            cpu_sample: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("node_name", &self.node_name)
            .finish_non_exhaustive()
    }
}

/// Errors of the streaming server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot make the serving certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("invalid client CA certificate: {0}")]
    ClientCa(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The response body type of every handler.
pub(crate) type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// How long open connections may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the streaming API on `listener` until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, ctx: Context, shutdown: CancellationToken) -> Result<()> {
    let tls = tls::server_config(&ctx.client_ca_pem, &ctx.serving_names)?;
    let acceptor = TlsAcceptor::from(tls);
    let ctx = Arc::new(ctx);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        let watcher = graceful.watcher();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "kubelet server: TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            // The handshake verified the chain; the leaf names the user.
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| User::from_certificate(c.as_ref()));
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                let user = user.clone();
                async move { Ok::<_, Infallible>(handle(ctx, req, user, shutdown).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            let conn = watcher.watch(conn.into_owned());
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "kubelet server: connection ended");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await;
    Ok(())
}

/// A full body.
pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A plain-text response, as upstream's kubelet writes its errors.
pub(crate) fn text(code: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut msg = msg.into();
    if !msg.ends_with('\n') {
        msg.push('\n');
    }
    let mut r = Response::new(full(msg));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn handle(
    ctx: Arc<Context>,
    req: Request<Incoming>,
    peer: Option<User>,
    shutdown: CancellationToken,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let resp = route(ctx, req, &path, peer, shutdown).await;
    tracing::debug!(verb = %method, %path, code = resp.status().as_u16(), "kubelet request");
    resp
}

async fn route(
    ctx: Arc<Context>,
    req: Request<Incoming>,
    path: &str,
    peer: Option<User>,
    _shutdown: CancellationToken,
) -> Response<Body> {
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if let Err(denied) = admit(&ctx, &req, path, peer).await {
        return denied;
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let method = req.method().clone();
    match (method, parts.as_slice()) {
        (Method::GET, ["containerLogs", ns, pod, container]) => {
            logs::serve(&ctx, ns, pod, container, &query).await
        }
        (
            Method::GET | Method::POST,
            ["exec", ns, pod, container] | ["exec", ns, pod, _, container],
        ) => {
            stream(
                ctx,
                req,
                remotecommand::Kind::Exec,
                ns,
                pod,
                container,
                &query,
            )
            .await
        }
        (
            Method::GET | Method::POST,
            ["attach", ns, pod, container] | ["attach", ns, pod, _, container],
        ) => {
            stream(
                ctx,
                req,
                remotecommand::Kind::Attach,
                ns,
                pod,
                container,
                &query,
            )
            .await
        }
        (Method::GET | Method::POST, ["portForward", ns, pod] | ["portForward", ns, pod, _]) => {
            port_forward(ctx, req, ns, pod, &query).await
        }
        (Method::POST, ["run", ns, pod, container] | ["run", ns, pod, _, container]) => {
            run(&ctx, ns, pod, container, &query).await
        }
        (Method::GET, ["stats", "summary"]) => stats::serve(&ctx, &query).await,
        (_, ["containerLogs" | "exec" | "attach" | "portForward" | "run", ..]) => {
            text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed")
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// Authenticates the caller (client certificate, else bearer token) and authorizes the
/// request on this Node; the answer to send when either fails.
async fn admit(
    ctx: &Context,
    req: &Request<Incoming>,
    path: &str,
    peer: Option<User>,
) -> Result<(), Response<Body>> {
    let user = match peer {
        Some(u) => u,
        None => {
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .filter(|t| !t.is_empty());
            let Some(token) = token else {
                return Err(text(StatusCode::UNAUTHORIZED, "Unauthorized"));
            };
            match ctx.reviewer.authenticate_token(token).await {
                Ok(Some(u)) => u,
                Ok(None) => return Err(text(StatusCode::UNAUTHORIZED, "Unauthorized")),
                Err(e) => {
                    tracing::warn!(error = %e, "kubelet server: authenticating a token failed");
                    return Err(text(StatusCode::UNAUTHORIZED, "Unauthorized"));
                }
            }
        }
    };
    let attrs = Attributes::of(req.method(), path);
    match ctx.reviewer.authorize(&user, &attrs).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(text(StatusCode::FORBIDDEN, attrs.forbidden(&user))),
        Err(e) => {
            tracing::warn!(error = %e, user = %user.name, "kubelet server: authorization failed");
            Err(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "Authorization error (user={}, verb={}, resource=nodes, subresource={})",
                    user.name, attrs.verb, attrs.subresource
                ),
            ))
        }
    }
}

/// Protocol versions the client offers in `X-Stream-Protocol-Version` headers.
fn stream_protocols(req: &Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn is_spdy(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"))
}

/// Accepts a plain SPDY/3.1 upgrade with the first offered protocol in `supported`.
fn accept_spdy(
    req: &mut Request<Incoming>,
    supported: &[&'static str],
) -> Result<websocket::Accepted<hyper::upgrade::OnUpgrade>, websocket::Rejected> {
    let offered = stream_protocols(req);
    let chosen = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied());
    let Some(chosen) = chosen else {
        return Err(websocket::Rejected(
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"),
        ));
    };
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(chosen),
    );
    Ok((resp, chosen, hyper::upgrade::on(req)))
}

/// A SPDY session over an upgraded HTTP connection.
fn spdy_over_upgraded(
    up: hyper::upgrade::Upgraded,
) -> (
    spdy::Sender,
    tokio::sync::mpsc::Receiver<spdy::IncomingStream>,
) {
    let (rd, wr) = tokio::io::split(TokioIo::new(up));
    let reader = tokio_util::io::ReaderStream::new(rd);
    let writer = tokio_util::codec::FramedWrite::new(wr, tokio_util::codec::BytesCodec::new());
    spdy::session(reader, writer)
}

/// A SPDY session carried in the binary messages of a WebSocket.
fn spdy_over_websocket(
    ws: websocket::Ws,
) -> (
    spdy::Sender,
    tokio::sync::mpsc::Receiver<spdy::IncomingStream>,
) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (sink, stream) = ws.split();
    let reader = stream
        .take_while(|m| std::future::ready(!matches!(m, Ok(Message::Close(_)) | Err(_))))
        .filter_map(|m| {
            std::future::ready(match m {
                Ok(Message::Binary(b)) => Some(Ok(b)),
                _ => None,
            })
        })
        .boxed();
    let writer = sink
        .sink_map_err(std::io::Error::other)
        .with(|b: Bytes| std::future::ready(Ok::<_, std::io::Error>(Message::Binary(b))));
    spdy::session(reader, Box::pin(writer))
}

#[allow(clippy::too_many_arguments)]
async fn stream(
    ctx: Arc<Context>,
    mut req: Request<Incoming>,
    kind: remotecommand::Kind,
    ns: &str,
    pod: &str,
    container: &str,
    query: &str,
) -> Response<Body> {
    let opts = remotecommand::Options::from_query(query);
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 of stdin, stdout, stderr",
        );
    }
    if kind == remotecommand::Kind::Exec && opts.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    let id = match pods::running(&ctx, ns, pod, container).await {
        Ok(id) => id,
        Err(m) => return text(StatusCode::NOT_FOUND, m),
    };
    if websocket::is_websocket(&req) {
        let (resp, protocol, ws) =
            match websocket::accept(&mut req, &["v5.channel.k8s.io", "v4.channel.k8s.io"]) {
                Ok(x) => x,
                Err(r) => return r.response(),
            };
        tokio::spawn(async move {
            if let Some(ws) = ws.await {
                remotecommand::serve_websocket(ws, protocol, &ctx, kind, &id, &opts).await;
            }
        });
        return resp;
    }
    if is_spdy(&req) {
        let (resp, protocol, on) = match accept_spdy(&mut req, remotecommand::SPDY_PROTOCOLS) {
            Ok(x) => x,
            Err(r) => return r.response(),
        };
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let (sender, incoming) = spdy_over_upgraded(up);
            remotecommand::serve_spdy(sender, incoming, protocol, &ctx, kind, &id, &opts).await;
        });
        return resp;
    }
    text(StatusCode::BAD_REQUEST, "Upgrade request required")
}

async fn port_forward(
    ctx: Arc<Context>,
    mut req: Request<Incoming>,
    ns: &str,
    pod: &str,
    query: &str,
) -> Response<Body> {
    let ip = match pods::pod_ip(&ctx, ns, pod).await {
        Ok(ip) => ip,
        Err(m) => return text(StatusCode::NOT_FOUND, m),
    };
    let pod_name = pod.to_string();
    if websocket::is_websocket(&req) {
        let (resp, protocol, ws) = match websocket::accept(
            &mut req,
            &[
                "SPDY/3.1+portforward.k8s.io",
                "v4.channel.k8s.io",
                "portforward.k8s.io",
            ],
        ) {
            Ok(x) => x,
            Err(r) => return r.response(),
        };
        let ports = if protocol.starts_with("SPDY") {
            Vec::new()
        } else {
            match portforward::ports_from_query(query) {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        "query parameter \"port\" is required",
                    )
                }
                Err(m) => return text(StatusCode::BAD_REQUEST, m),
            }
        };
        tokio::spawn(async move {
            let Some(ws) = ws.await else { return };
            if protocol.starts_with("SPDY") {
                let (sender, incoming) = spdy_over_websocket(ws);
                portforward::serve_spdy(sender, incoming, pod_name, ip).await;
            } else {
                portforward::serve_websocket(ws, pod_name, ip, ports).await;
            }
        });
        return resp;
    }
    if is_spdy(&req) {
        let (resp, _, on) = match accept_spdy(&mut req, &["portforward.k8s.io"]) {
            Ok(x) => x,
            Err(r) => return r.response(),
        };
        tokio::spawn(async move {
            let Ok(up) = on.await else { return };
            let (sender, incoming) = spdy_over_upgraded(up);
            portforward::serve_spdy(sender, incoming, pod_name, ip).await;
        });
        return resp;
    }
    text(StatusCode::BAD_REQUEST, "Upgrade request required")
}

/// `POST /run/<ns>/<pod>/<container>?cmd=...`: runs a command, answers its combined output.
async fn run(ctx: &Context, ns: &str, pod: &str, container: &str, query: &str) -> Response<Body> {
    let cmd: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "cmd")
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    if cmd.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    let id = match pods::running(ctx, ns, pod, container).await {
        Ok(id) => id,
        Err(m) => return text(StatusCode::NOT_FOUND, m),
    };
    let opts = remotecommand::Options {
        stdout: true,
        stderr: true,
        command: cmd,
        ..Default::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let io = remotecommand::Io {
        stdin: None,
        resize: None,
        out: tx,
    };
    let session = remotecommand::run(ctx, remotecommand::Kind::Exec, &id, &opts, io);
    let collect = async {
        let mut out = Vec::new();
        while let Some((_, b)) = rx.recv().await {
            out.extend_from_slice(&b);
        }
        out
    };
    let (outcome, out) = tokio::join!(session, collect);
    match outcome {
        remotecommand::Outcome::Error(m) => text(StatusCode::INTERNAL_SERVER_ERROR, m),
        _ => {
            let mut r = Response::new(full(out));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        }
    }
}
