//! The kubelet's streaming server: container logs, exec, attach and port-forward over TLS,
//! for the API server to proxy (upstream `pkg/kubelet/server`). The API server proves who it
//! is with a client certificate signed by the cluster CA; only `/healthz` is open to anyone.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

mod tls;

/// What the streaming server needs from the kubelet.
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
pub(crate) type Body = BoxBody<Bytes, std::io::Error>;

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
            let authenticated = tls
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let svc = service_fn(move |req| {
                let ctx = ctx.clone();
                let shutdown = shutdown.clone();
                async move { Ok::<_, Infallible>(handle(ctx, req, authenticated, shutdown).await) }
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
    Full::new(b.into()).map_err(|never| match never {}).boxed()
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
    authenticated: bool,
    shutdown: CancellationToken,
) -> Response<Body> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let resp = route(ctx, req, &path, authenticated, shutdown).await;
    tracing::debug!(verb = %method, %path, code = resp.status().as_u16(), "kubelet request");
    resp
}

async fn route(
    _ctx: Arc<Context>,
    req: Request<Incoming>,
    path: &str,
    authenticated: bool,
    _shutdown: CancellationToken,
) -> Response<Body> {
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    if !authenticated {
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
    }
    if req.method() != Method::GET && req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    text(StatusCode::NOT_FOUND, "404 page not found")
}
