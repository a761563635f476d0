//! Serving DNS over UDP and TCP: cluster names from the [`Zone`], the rest forwarded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};
use parking_lot::RwLock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::forward::Upstreams;
use crate::zone::{Answer, Zone};

/// The largest UDP payload this server sends when a client's EDNS asks for more.
const MAX_UDP_PAYLOAD: u16 = 1232;
/// How long a TCP connection may sit idle between two queries.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// The zone currently served; replaced whole on every change.
pub type SharedZone = Arc<RwLock<Arc<Zone>>>;

/// How a query arrived (and so how its answer leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Answers queries: the cluster zone first, the upstreams for everything else.
pub struct Handler {
    zone: SharedZone,
    upstreams: Upstreams,
}

/// What a query needs: an answer at once, or a trip upstream.
#[allow(clippy::large_enum_variant)] // short-lived, one per query
enum Outcome {
    Reply(Vec<u8>),
    /// Relay the raw query upstream.
    Forward,
    /// A CNAME answer whose target lies outside the zone: resolve the target upstream
    /// and append its records.
    Chase {
        response: Message,
        target: Name,
        qtype: RecordType,
        max: usize,
    },
}

impl Handler {
    /// A handler serving `zone` and forwarding to `upstreams`.
    pub fn new(zone: SharedZone, upstreams: Upstreams) -> Handler {
        Handler { zone, upstreams }
    }

    /// The answer to one wire-format query; None when nothing should be sent back.
    pub async fn handle(&self, raw: &[u8], transport: Transport) -> Option<Vec<u8>> {
        match self.local(raw, transport) {
            Outcome::Reply(bytes) => Some(bytes),
            Outcome::Forward => {
                let answer = match transport {
                    Transport::Udp => self.upstreams.udp(raw).await,
                    Transport::Tcp => self.upstreams.tcp(raw).await,
                };
                answer.or_else(|| error_reply(raw, ResponseCode::ServFail))
            }
            Outcome::Chase {
                mut response,
                target,
                qtype,
                max,
            } => {
                let mut q = Message::query();
                q.metadata.recursion_desired = true;
                q.add_query(Query::query(target, qtype));
                let answer = match q.to_vec() {
                    Ok(bytes) => match transport {
                        Transport::Udp => self.upstreams.udp(&bytes).await,
                        Transport::Tcp => self.upstreams.tcp(&bytes).await,
                    },
                    Err(_) => None,
                };
                match answer.and_then(|a| Message::from_vec(&a).ok()) {
                    Some(up) => {
                        response.metadata.response_code = up.metadata.response_code;
                        response.answers.extend(up.answers);
                    }
                    None => tracing::debug!("resolving an ExternalName target upstream failed"),
                }
                encode(&response, max)
            }
        }
    }

    fn local(&self, raw: &[u8], transport: Transport) -> Outcome {
        let request = match Message::from_vec(raw) {
            Ok(m) => m,
            Err(_) => {
                return match error_reply(raw, ResponseCode::FormErr) {
                    Some(r) => Outcome::Reply(r),
                    None => Outcome::Reply(Vec::new()),
                }
            }
        };
        if request.metadata.message_type != MessageType::Query {
            return Outcome::Reply(Vec::new());
        }
        let max = match transport {
            Transport::Tcp => u16::MAX as usize,
            Transport::Udp => request
                .edns
                .as_ref()
                .map(|e| e.max_payload().clamp(512, MAX_UDP_PAYLOAD))
                .unwrap_or(512) as usize,
        };
        let mut response = Message::response(request.metadata.id, request.metadata.op_code);
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.metadata.checking_disabled = request.metadata.checking_disabled;
        response.queries = request.queries.clone();
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            response.set_edns(edns);
        }
        if request.metadata.op_code != OpCode::Query {
            response.metadata.response_code = ResponseCode::NotImp;
            return reply(&response, max);
        }
        let [query] = request.queries.as_slice() else {
            response.metadata.response_code = ResponseCode::FormErr;
            return reply(&response, max);
        };
        if query.query_class() != DNSClass::IN {
            return Outcome::Forward;
        }
        let zone = self.zone.read().clone();
        match zone.answer(query.name(), query.query_type()) {
            Answer::Forward => Outcome::Forward,
            Answer::Authoritative {
                code,
                answers,
                additionals,
                soa,
                external_cname,
            } => {
                response.metadata.authoritative = true;
                response.metadata.response_code = code;
                response.answers = answers;
                response.additionals = additionals;
                response.authorities.extend(soa);
                match external_cname {
                    Some(target) if !target_in_zone(&target, zone.domain()) => Outcome::Chase {
                        response,
                        target,
                        qtype: query.query_type(),
                        max,
                    },
                    Some(target) => {
                        if let Answer::Authoritative { answers, .. } =
                            zone.answer(&target, query.query_type())
                        {
                            response.answers.extend(answers);
                        }
                        reply(&response, max)
                    }
                    None => reply(&response, max),
                }
            }
        }
    }
}

fn target_in_zone(target: &Name, domain: &str) -> bool {
    let t = target.to_ascii().to_ascii_lowercase();
    let t = t.trim_end_matches('.');
    t == domain || t.ends_with(&format!(".{domain}"))
}

fn reply(m: &Message, max: usize) -> Outcome {
    match encode(m, max) {
        Some(bytes) => Outcome::Reply(bytes),
        None => Outcome::Reply(Vec::new()),
    }
}

/// Encodes `m`; over `max` bytes it is sent truncated (TC set) so the client retries on TCP.
fn encode(m: &Message, max: usize) -> Option<Vec<u8>> {
    let bytes = match m.to_vec() {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "encoding a DNS response");
            return error_reply_for(m.metadata.id, m.metadata.op_code, ResponseCode::ServFail);
        }
    };
    if bytes.len() <= max {
        return Some(bytes);
    }
    m.truncate().to_vec().ok()
}

/// An error response to a query that may not even parse: only its id is kept.
fn error_reply(raw: &[u8], code: ResponseCode) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*raw.first()?, *raw.get(1)?]);
    let mut m = Message::error_msg(id, OpCode::Query, code);
    if let Ok(req) = Message::from_vec(raw) {
        m.metadata.op_code = req.metadata.op_code;
        m.metadata.recursion_desired = req.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.queries = req.queries;
    }
    m.to_vec().ok()
}

fn error_reply_for(id: u16, op: OpCode, code: ResponseCode) -> Option<Vec<u8>> {
    Message::error_msg(id, op, code).to_vec().ok()
}

/// Serves UDP queries on `socket` with `workers` receiving tasks until shutdown.
/// Answers from the zone are sent inline; forwarded queries run in their own task so a
/// slow upstream never holds up cluster names.
pub async fn serve_udp(
    socket: Arc<UdpSocket>,
    handler: Arc<Handler>,
    workers: usize,
    shutdown: CancellationToken,
) {
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let socket = socket.clone();
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = socket.recv_from(&mut buf) => match r {
                        Ok(r) => r,
                        Err(e) => {
                            // ICMP errors from earlier sends surface here; keep serving.
                            tracing::debug!(error = %e, "receiving a UDP query");
                            continue;
                        }
                    },
                };
                let raw = &buf[..n];
                match handler.local(raw, Transport::Udp) {
                    Outcome::Reply(bytes) => send(&socket, &bytes, peer).await,
                    _ => {
                        let raw = raw.to_vec();
                        let socket = socket.clone();
                        let handler = handler.clone();
                        tokio::spawn(async move {
                            if let Some(bytes) = handler.handle(&raw, Transport::Udp).await {
                                send(&socket, &bytes, peer).await;
                            }
                        });
                    }
                }
            }
        }));
    }
    futures::future::join_all(tasks).await;
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if bytes.is_empty() {
        return;
    }
    if let Err(e) = socket.send_to(bytes, peer).await {
        tracing::debug!(%peer, error = %e, "sending a UDP answer");
    }
}

/// Serves TCP connections on `listener` until shutdown; each connection may carry many
/// length-prefixed queries and is closed after [`TCP_IDLE`] without one.
pub async fn serve_tcp(listener: TcpListener, handler: Arc<Handler>, shutdown: CancellationToken) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a DNS connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                r = connection(stream, &handler) => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "DNS connection ended");
                },
            }
        });
    }
}

async fn connection(mut stream: TcpStream, handler: &Handler) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(TCP_IDLE, stream.read_u16()).await {
            Err(_) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(r) => r? as usize,
        };
        let mut buf = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "query timed out"))??;
        let Some(answer) = handler.handle(&buf, Transport::Tcp).await else {
            continue;
        };
        if answer.is_empty() {
            continue;
        }
        let Ok(n) = u16::try_from(answer.len()) else {
            continue;
        };
        let mut out = Vec::with_capacity(answer.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&answer);
        stream.write_all(&out).await?;
    }
}
