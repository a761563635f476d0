//! exec and attach (upstream `remotecommand`): the Docker side, and the two transports
//! that carry it, WebSocket channels (`v5.channel.k8s.io`, `v4.channel.k8s.io`) and SPDY
//! streams (`v4.channel.k8s.io` and older over `SPDY/3.1`).

use std::time::Duration;

use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::{AttachContainerOptionsBuilder, ResizeContainerTTYOptionsBuilder};
use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::spdy;
use super::websocket::Ws;
use super::Context;

/// Channel numbers of the stream protocols.
pub(super) const STDIN: u8 = 0;
pub(super) const STDOUT: u8 = 1;
pub(super) const STDERR: u8 = 2;
pub(super) const ERROR: u8 = 3;
pub(super) const RESIZE: u8 = 4;
/// v5: `[255, channel]` closes that channel (only stdin is closable).
const CLOSE: u8 = 255;

/// What the caller asked for (query `stdin`/`stdout`/`stderr`/`tty`/`command`; the
/// API server's `input`/`output`/`error` spellings are accepted too).
#[derive(Debug, Clone, Default)]
pub(super) struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
    pub command: Vec<String>,
}

impl Options {
    pub(super) fn from_query(query: &str) -> Self {
        let mut o = Options::default();
        let truthy = |v: &str| matches!(v, "1" | "true" | "True" | "TRUE");
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "stdin" | "input" => o.stdin = truthy(&v),
                "stdout" | "output" => o.stdout = truthy(&v),
                "stderr" | "error" => o.stderr = truthy(&v),
                "tty" => o.tty = truthy(&v),
                "command" => o.command.push(v.into_owned()),
                _ => {}
            }
        }
        // With a terminal, stderr is merged into stdout.
        if o.tty {
            o.stderr = false;
        }
        o
    }
}

/// Terminal size sent on the resize channel.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
pub(super) struct TerminalSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// The transport-independent ends of a session.
pub(super) struct Io {
    /// Ends (None from `recv`) when the client closes stdin.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Output, tagged STDOUT or STDERR. The session drops it when the command is done.
    pub out: mpsc::Sender<(u8, Bytes)>,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Outcome {
    Success,
    ExitCode(i64),
    Error(String),
}

impl Outcome {
    /// The metav1.Status the v4/v5 protocols write on the error channel.
    pub(super) fn status(&self) -> serde_json::Value {
        match self {
            Outcome::Success => json!({"metadata": {}, "status": "Success"}),
            Outcome::ExitCode(code) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("command terminated with non-zero exit code: error executing command [...], exit code {code}"),
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
            }),
            Outcome::Error(m) => json!({
                "metadata": {},
                "status": "Failure",
                "message": m,
                "reason": "InternalError",
                "code": 500,
            }),
        }
    }
}

/// Which command a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Exec,
    Attach,
}

/// Runs the exec or attach in container `id`, pumping `io`, until the output ends.
pub(super) async fn run(ctx: &Context, kind: Kind, id: &str, opts: &Options, io: Io) -> Outcome {
    match kind {
        Kind::Exec => exec(ctx, id, opts, io).await,
        Kind::Attach => attach(ctx, id, opts, io).await,
    }
}

async fn exec(ctx: &Context, id: &str, opts: &Options, io: Io) -> Outcome {
    let create = CreateExecOptions::<String> {
        attach_stdin: Some(opts.stdin),
        attach_stdout: Some(opts.stdout),
        attach_stderr: Some(opts.stderr || (opts.tty && opts.stdout)),
        tty: Some(opts.tty),
        cmd: Some(opts.command.clone()),
        ..Default::default()
    };
    let exec_id = match ctx.docker.create_exec(id, create).await {
        Ok(r) => r.id,
        Err(e) => return Outcome::Error(docker_error(&e)),
    };
    let start = StartExecOptions {
        detach: false,
        tty: opts.tty,
        output_capacity: None,
    };
    let (output, input) = match ctx.docker.start_exec(&exec_id, Some(start)).await {
        Ok(StartExecResults::Attached { output, input }) => (output, input),
        Ok(StartExecResults::Detached) => return Outcome::Error("exec detached".into()),
        Err(e) => return Outcome::Error(docker_error(&e)),
    };
    let resizer = io.resize.map(|mut rx| {
        let docker = ctx.docker.clone();
        let exec_id = exec_id.clone();
        tokio::spawn(async move {
            while let Some(sz) = rx.recv().await {
                let r = ResizeExecOptions {
                    height: sz.height,
                    width: sz.width,
                };
                if let Err(e) = docker.resize_exec(&exec_id, r).await {
                    tracing::debug!(error = %e, "exec resize failed");
                }
            }
        })
    });
    pump(output, input, io.stdin, io.out).await;
    if let Some(r) = resizer {
        r.abort();
    }
    // The output ends as the process exits; its exit code may lag by a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match ctx.docker.inspect_exec(&exec_id).await {
            Ok(i) if i.running != Some(true) => {
                return match i.exit_code.unwrap_or(0) {
                    0 => Outcome::Success,
                    c => Outcome::ExitCode(c),
                }
            }
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(_) => return Outcome::Error("exec is still running after its output ended".into()),
            Err(e) => return Outcome::Error(docker_error(&e)),
        }
    }
}

async fn attach(ctx: &Context, id: &str, opts: &Options, io: Io) -> Outcome {
    let o = AttachContainerOptionsBuilder::new()
        .stdin(opts.stdin)
        .stdout(opts.stdout)
        .stderr(opts.stderr || (opts.tty && opts.stdout))
        .stream(true)
        .logs(false)
        .build();
    let res = match ctx.docker.attach_container(id, Some(o)).await {
        Ok(r) => r,
        Err(e) => return Outcome::Error(docker_error(&e)),
    };
    let resizer = io.resize.map(|mut rx| {
        let docker = ctx.docker.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            while let Some(sz) = rx.recv().await {
                let r = ResizeContainerTTYOptionsBuilder::new()
                    .h(sz.height.into())
                    .w(sz.width.into())
                    .build();
                if let Err(e) = docker.resize_container_tty(&id, r).await {
                    tracing::debug!(error = %e, "attach resize failed");
                }
            }
        })
    });
    pump(res.output, res.input, io.stdin, io.out).await;
    if let Some(r) = resizer {
        r.abort();
    }
    Outcome::Success
}

/// Copies stdin to the process and its output to `out` until the output ends.
async fn pump(
    mut output: std::pin::Pin<
        Box<
            dyn futures::Stream<
                    Item = Result<bollard::container::LogOutput, bollard::errors::Error>,
                > + Send,
        >,
    >,
    mut input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    stdin: Option<mpsc::Receiver<Bytes>>,
    out: mpsc::Sender<(u8, Bytes)>,
) {
    let feeder = stdin.map(|mut rx| {
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if input.write_all(&b).await.is_err() {
                    return;
                }
                let _ = input.flush().await;
            }
            // Client closed stdin: half-close so the process sees EOF.
            let _ = input.shutdown().await;
        })
    });
    while let Some(item) = output.next().await {
        let (ch, msg) = match item {
            Ok(bollard::container::LogOutput::StdErr { message }) => (STDERR, message),
            Ok(bollard::container::LogOutput::StdOut { message })
            | Ok(bollard::container::LogOutput::Console { message }) => (STDOUT, message),
            Ok(bollard::container::LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "stream output ended with an error");
                break;
            }
        };
        if out.send((ch, msg)).await.is_err() {
            break;
        }
    }
    if let Some(f) = feeder {
        f.abort();
    }
}

fn docker_error(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// Serves a session over a WebSocket (`v5.channel.k8s.io` or `v4.channel.k8s.io`).
pub(super) async fn serve_websocket(
    ws: Ws,
    protocol: &'static str,
    ctx: &Context,
    kind: Kind,
    container_id: &str,
    opts: &Options,
) {
    let v5 = protocol == "v5.channel.k8s.io";
    let (mut sink, mut stream) = ws.split();
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (resize_tx, resize_rx) = mpsc::channel::<TerminalSize>(4);
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);
    let want_stdin = opts.stdin;
    let reader = tokio::spawn(async move {
        let mut stdin_tx = want_stdin.then_some(stdin_tx);
        while let Some(Ok(msg)) = stream.next().await {
            let data = match msg {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&ch, rest)) = data.split_first() else {
                continue;
            };
            match ch {
                STDIN => {
                    if let Some(tx) = &stdin_tx {
                        if !rest.is_empty() && tx.send(Bytes::copy_from_slice(rest)).await.is_err()
                        {
                            stdin_tx = None;
                        }
                    }
                }
                RESIZE => {
                    if let Ok(sz) = serde_json::from_slice::<TerminalSize>(rest) {
                        let _ = resize_tx.try_send(sz);
                    }
                }
                CLOSE if v5 && rest.first() == Some(&STDIN) => stdin_tx = None,
                _ => {}
            }
        }
        stream
    });
    let io = Io {
        stdin: opts.stdin.then_some(stdin_rx),
        resize: opts.tty.then_some(resize_rx),
        out: out_tx,
    };
    let session = run(ctx, kind, container_id, opts, io);
    let writer = async {
        while let Some((ch, data)) = out_rx.recv().await {
            let mut m = BytesMut::with_capacity(data.len() + 1);
            m.put_u8(ch);
            m.extend_from_slice(&data);
            if sink.send(Message::Binary(m.freeze())).await.is_err() {
                return false;
            }
        }
        true
    };
    let (outcome, ok) = tokio::join!(session, writer);
    if ok {
        let mut m = vec![ERROR];
        m.extend_from_slice(outcome.status().to_string().as_bytes());
        let _ = sink.send(Message::Binary(m.into())).await;
        let _ = sink
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await;
    }
    // Give the client a moment to answer the close handshake, then end TLS cleanly.
    if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(2), reader).await {
        if let Ok(mut ws) = sink.reunite(stream) {
            let _ = ws.get_mut().shutdown().await;
        }
    }
}

/// Stream protocols of remotecommand over SPDY, newest first.
pub(super) const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Serves a session over SPDY: the client opens one stream per channel (`streamType`
/// error, stdin, stdout, stderr, resize); the session starts once every expected one is there.
pub(super) async fn serve_spdy(
    sender: spdy::Sender,
    mut incoming: mpsc::Receiver<spdy::IncomingStream>,
    protocol: &str,
    ctx: &Context,
    kind: Kind,
    container_id: &str,
    opts: &Options,
) {
    let mut error_id = None;
    let mut stdout_id = None;
    let mut stderr_id = None;
    let mut stdin_rx = None;
    let mut resize_stream = None;
    let expected = 1 + opts.stdin as usize + opts.stdout as usize + opts.stderr as usize;
    let mut have = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while have < expected
        || (opts.tty
            && resize_stream.is_none()
            && protocol != "v2.channel.k8s.io"
            && protocol != "channel.k8s.io")
    {
        let s = match tokio::time::timeout_at(deadline, incoming.recv()).await {
            Ok(Some(s)) => s,
            _ => {
                if have >= expected {
                    break;
                }
                tracing::debug!("spdy exec: timed out waiting for streams");
                let _ = sender.go_away().await;
                return;
            }
        };
        sender.reply(s.id).await;
        match spdy::header(&s.headers, "streamtype") {
            Some("error") => {
                error_id = Some(s.id);
                have += 1;
            }
            Some("stdin") => {
                stdin_rx = Some(s.data);
                have += 1;
            }
            Some("stdout") => {
                stdout_id = Some(s.id);
                have += 1;
            }
            Some("stderr") => {
                stderr_id = Some(s.id);
                have += 1;
            }
            Some("resize") => resize_stream = Some(s.data),
            _ => {
                let _ = sender.reset(s.id, spdy::RST_PROTOCOL_ERROR).await;
            }
        }
    }
    let (resize_tx, resize_rx) = mpsc::channel::<TerminalSize>(4);
    let resizer = resize_stream.map(|mut rx| {
        tokio::spawn(async move {
            // JSON objects, one after another.
            let mut buf = Vec::new();
            while let Some(b) = rx.recv().await {
                buf.extend_from_slice(&b);
                let mut de = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
                let mut consumed = 0;
                while let Some(Ok(sz)) = de.next() {
                    let _ = resize_tx.try_send(sz);
                    consumed = de.byte_offset();
                }
                buf.drain(..consumed);
            }
        })
    });
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);
    let io = Io {
        stdin: stdin_rx,
        resize: opts.tty.then_some(resize_rx),
        out: out_tx,
    };
    let session = run(ctx, kind, container_id, opts, io);
    let writer = async {
        while let Some((ch, data)) = out_rx.recv().await {
            let id = if ch == STDERR { stderr_id } else { stdout_id };
            if let Some(id) = id {
                if !sender.data(id, data).await {
                    return;
                }
            }
        }
    };
    let (outcome, ()) = tokio::join!(session, writer);
    if let Some(r) = resizer {
        r.abort();
    }
    for id in [stdout_id, stderr_id].into_iter().flatten() {
        sender.fin(id).await;
    }
    if let Some(id) = error_id {
        let body = if protocol == "v4.channel.k8s.io" {
            match outcome {
                Outcome::Success => String::new(),
                o => o.status().to_string(),
            }
        } else {
            match outcome {
                Outcome::Success => String::new(),
                Outcome::ExitCode(c) => {
                    format!("command terminated with non-zero exit code: exit status {c}")
                }
                Outcome::Error(m) => m,
            }
        };
        if !body.is_empty() {
            sender.data(id, Bytes::from(body)).await;
        }
        sender.fin(id).await;
    }
    sender.go_away().await;
}
