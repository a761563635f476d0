//! The server side of a WebSocket upgrade on a hyper request, and the channel framing of
//! the Kubernetes streaming protocols (`v4.channel.k8s.io`, `v5.channel.k8s.io`).

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{full, text, Body};

/// The upgraded connection.
pub(super) type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Whether the request asks for a WebSocket.
pub(super) fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// Subprotocols the client offers, in its order.
pub(super) fn offered_protocols(req: &Request<Incoming>) -> Vec<String> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The WebSocket once the client has switched protocols (`None`: the upgrade failed).
pub(super) type Pending = std::pin::Pin<Box<dyn std::future::Future<Output = Option<Ws>> + Send>>;

/// An upgrade refused: status and message.
#[derive(Debug)]
pub(super) struct Rejected(pub StatusCode, pub String);

impl Rejected {
    pub(super) fn response(self) -> Response<Body> {
        text(self.0, self.1)
    }
}

/// An upgrade accepted: the 101 response to send, the chosen protocol, the connection.
pub(super) type Accepted<T> = (Response<Body>, &'static str, T);

/// Accepts the upgrade with the first offered protocol in `supported`.
pub(super) fn accept(
    req: &mut Request<Incoming>,
    supported: &[&'static str],
) -> Result<Accepted<Pending>, Rejected> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return Err(Rejected(
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key".into(),
        ));
    };
    let offered = offered_protocols(req);
    let Some(protocol) = offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
    else {
        return Err(Rejected(
            StatusCode::BAD_REQUEST,
            format!(
                "websocket server does not support any of the requested subprotocols {offered:?}; supported: {supported:?}"
            ),
        ));
    };
    let accept_key = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut resp = Response::new(full(""));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    let on = hyper::upgrade::on(req);
    let fut = Box::pin(async move {
        match on.await {
            Ok(up) => {
                Some(WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await)
            }
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                None
            }
        }
    });
    Ok((resp, protocol, fut))
}
