//! Port-forward into a pod: dial the pod's IP on the port from the kubelet host (Docker
//! puts the pod's network namespace on a bridge the host reaches) and splice bytes.
//!
//! Transports: SPDY/3.1 `portforward.k8s.io` (plain upgrade, or tunnelled in a WebSocket
//! with subprotocol `SPDY/3.1+portforward.k8s.io` as kubectl 1.31+ does), and the WebSocket
//! `v4.channel.k8s.io` protocol of kube-rs and the Python client.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::spdy;
use super::websocket::Ws;

const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Ports of a WebSocket port-forward: `ports=80,8080` or repeated `port=`.
pub(super) fn ports_from_query(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "ports" || k == "port" {
            for p in v.split(',').filter(|p| !p.is_empty()) {
                let n: u16 = p
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("invalid port {p:?}"))?;
                ports.push(n);
            }
        }
    }
    Ok(ports)
}

async fn dial(ip: &str, port: u16) -> std::io::Result<TcpStream> {
    let addr = format!("{ip}:{port}");
    match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&addr)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("dial {addr}: i/o timeout"),
        )),
    }
}

fn forward_error(pod: &str, port: u16, e: &std::io::Error) -> String {
    format!("error forwarding port {port} to pod {pod}: {e}")
}

/// WebSocket `v4.channel.k8s.io`: channel 2i carries port i's data, 2i+1 its errors; the
/// first frame on each is the port number, little-endian. Ends when every port's pod
/// connection has closed or the client goes away.
pub(super) async fn serve_websocket(ws: Ws, pod_name: String, ip: String, ports: Vec<u16>) {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(32);
    let frame = |ch: u8, data: &[u8]| {
        let mut m = BytesMut::with_capacity(data.len() + 1);
        m.put_u8(ch);
        m.extend_from_slice(data);
        m.freeze()
    };
    let mut writers: HashMap<u8, mpsc::Sender<Bytes>> = HashMap::new();
    let mut tasks = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let data_ch = (2 * i) as u8;
        let err_ch = data_ch + 1;
        let _ = out_tx.send(frame(data_ch, &port.to_le_bytes())).await;
        let _ = out_tx.send(frame(err_ch, &port.to_le_bytes())).await;
        let (in_tx, mut in_rx) = mpsc::channel::<Bytes>(32);
        writers.insert(data_ch, in_tx);
        let out = out_tx.clone();
        let ip = ip.clone();
        let pod_name = pod_name.clone();
        tasks.push(tokio::spawn(async move {
            let conn = match dial(&ip, port).await {
                Ok(c) => c,
                Err(e) => {
                    let _ = out
                        .send(frame(err_ch, forward_error(&pod_name, port, &e).as_bytes()))
                        .await;
                    return;
                }
            };
            let (mut rd, mut wr) = conn.into_split();
            let to_pod = tokio::spawn(async move {
                while let Some(b) = in_rx.recv().await {
                    if wr.write_all(&b).await.is_err() {
                        break;
                    }
                }
                let _ = wr.shutdown().await;
            });
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if out.send(frame(data_ch, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = out
                            .send(frame(err_ch, forward_error(&pod_name, port, &e).as_bytes()))
                            .await;
                        break;
                    }
                }
            }
            to_pod.abort();
        }));
    }
    drop(out_tx);
    let reader = async move {
        while let Some(Ok(msg)) = stream.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            if data.len() < 2 {
                continue;
            }
            if let Some(tx) = writers.get(&data[0]) {
                if tx.send(data.slice(1..)).await.is_err() {
                    writers.remove(&data[0]);
                }
            }
        }
    };
    let writer = async {
        while let Some(b) = out_rx.recv().await {
            if sink.send(Message::Binary(b)).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    };
    // Done when the pod side is done (writer drained) or the client left.
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
    for t in tasks {
        t.abort();
    }
}

/// SPDY `portforward.k8s.io`: per forwarded connection the client opens an `error` and a
/// `data` stream sharing a `requestID`, the `port` header says where to.
pub(super) async fn serve_spdy(
    sender: spdy::Sender,
    mut incoming: mpsc::Receiver<spdy::IncomingStream>,
    pod_name: String,
    ip: String,
) {
    // requestID -> the half of the pair that arrived first.
    let mut pending: HashMap<String, spdy::IncomingStream> = HashMap::new();
    while let Some(s) = incoming.recv().await {
        if !sender.reply(s.id).await {
            break;
        }
        let request_id = spdy::header(&s.headers, "requestid")
            .unwrap_or("")
            .to_string();
        let kind = spdy::header(&s.headers, "streamtype").unwrap_or("");
        if kind != "error" && kind != "data" {
            let _ = sender.reset(s.id, spdy::RST_PROTOCOL_ERROR).await;
            continue;
        }
        let Some(other) = pending.remove(&request_id) else {
            pending.insert(request_id, s);
            continue;
        };
        let (error, data) = if kind == "error" {
            (s, other)
        } else {
            (other, s)
        };
        tokio::spawn(forward_pair(
            sender.clone(),
            error,
            data,
            pod_name.clone(),
            ip.clone(),
        ));
    }
}

async fn forward_pair(
    sender: spdy::Sender,
    error: spdy::IncomingStream,
    mut data: spdy::IncomingStream,
    pod_name: String,
    ip: String,
) {
    let port: Option<u16> = spdy::header(&data.headers, "port").and_then(|p| p.parse().ok());
    let fail = |msg: String| {
        let sender = sender.clone();
        async move {
            sender.data(error.id, Bytes::from(msg)).await;
            sender.fin(error.id).await;
            sender.fin(data.id).await;
        }
    };
    let Some(port) = port else {
        let raw = spdy::header(&data.headers, "port")
            .unwrap_or("")
            .to_string();
        return fail(format!("invalid port {raw:?}")).await;
    };
    let conn = match dial(&ip, port).await {
        Ok(c) => c,
        Err(e) => return fail(forward_error(&pod_name, port, &e)).await,
    };
    let (mut rd, mut wr) = conn.into_split();
    let to_pod = tokio::spawn(async move {
        while let Some(b) = data.data.recv().await {
            if wr.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    let mut err_msg = None;
    loop {
        match rd.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if !sender
                    .data(data.id, Bytes::copy_from_slice(&buf[..n]))
                    .await
                {
                    break;
                }
            }
            Err(e) => {
                err_msg = Some(forward_error(&pod_name, port, &e));
                break;
            }
        }
    }
    sender.fin(data.id).await;
    if let Some(m) = err_msg {
        sender.data(error.id, Bytes::from(m)).await;
    }
    sender.fin(error.id).await;
    to_pod.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_from_either_spelling() {
        assert_eq!(
            ports_from_query("ports=80,8080").expect("p"),
            vec![80, 8080]
        );
        assert_eq!(
            ports_from_query("port=80&port=81").expect("p"),
            vec![80, 81]
        );
        assert!(ports_from_query("ports=0").is_err());
        assert!(ports_from_query("ports=x").is_err());
    }
}
