//! A small SPDY/3.1 framer and session, enough for the Kubernetes streaming protocols
//! (`portforward.k8s.io`, `v4.channel.k8s.io` over SPDY): SYN_STREAM, SYN_REPLY, DATA,
//! RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS and WINDOW_UPDATE, with header blocks
//! zlib-compressed against the SPDY/3 dictionary (one zlib context per direction).
//!
//! Flow control is not enforced, as in moby/spdystream (the peer of every Kubernetes client).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use futures::{Sink, SinkExt, Stream, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;

const VERSION: u16 = 3;
/// Set on the last frame of a stream in one direction.
pub const FLAG_FIN: u8 = 0x01;
/// Largest frame accepted (24-bit length).
const MAX_FRAME: usize = 0xff_ffff;
/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// RST_STREAM status: the stream was cancelled.
pub const RST_CANCEL: u32 = 5;
/// RST_STREAM status: protocol error.
pub const RST_PROTOCOL_ERROR: u32 = 1;

/// Header names (lower case) and values, in order.
pub type Headers = Vec<(String, String)>;

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame of a type this framer ignores (the spec says to ignore them).
    Unknown {
        kind: u16,
    },
}

/// Errors of the SPDY layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SPDY frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("unsupported SPDY version {0}")]
    Version(u16),
    #[error("malformed SPDY frame: {0}")]
    Malformed(&'static str),
    #[error("SPDY header compression: {0}")]
    Zlib(String),
}

/// The SPDY/3 header compression dictionary (draft-mbelshe-httpbis-spdy-00 2.6.10.1):
/// length-prefixed common header names and values, then a run of common text.
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const TAIL: &str = concat!(
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
        "application/xhtml+xml,text/plain,text/javascript,public",
        "private",
        "max-age=gzip,deflate,sdch",
        "charset=utf-8",
        "charset=iso-8859-1,utf-,*,enq=0.",
    );
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(TAIL.as_bytes());
    d
});

/// Encodes and decodes frames of one connection; holds its two zlib contexts.
pub struct Codec {
    deflate: Compress,
    inflate: Decompress,
    deflate_started: bool,
}

impl Default for Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Codec {
    pub fn new() -> Self {
        Codec {
            deflate: Compress::new(Compression::default(), true),
            inflate: Decompress::new(true),
            deflate_started: false,
        }
    }

    fn compress_headers(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let mut raw = Vec::new();
        raw.put_u32(headers.len() as u32);
        for (k, v) in headers {
            raw.put_u32(k.len() as u32);
            raw.extend_from_slice(k.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.extend_from_slice(v.as_bytes());
        }
        if !self.deflate_started {
            self.deflate
                .set_dictionary(&DICTIONARY)
                .map_err(|e| Error::Zlib(e.to_string()))?;
            self.deflate_started = true;
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input = &raw[..];
        loop {
            out.reserve(256);
            let before_in = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Zlib(e.to_string()))?;
            let used = (self.deflate.total_in() - before_in) as usize;
            input = &input[used..];
            // Sync flush is complete when all input is consumed and output space remained.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        Ok(out)
    }

    fn decompress_headers(&mut self, mut block: &[u8]) -> Result<Headers, Error> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 64);
        loop {
            if out.len() >= MAX_HEADER_BLOCK {
                return Err(Error::TooLarge(out.len()));
            }
            out.reserve(1024);
            let before_in = self.inflate.total_in();
            let before_out = out.len();
            match self
                .inflate
                .decompress_vec(block, &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.inflate
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| Error::Zlib(e.to_string()))?;
                    }
                    None => return Err(Error::Zlib(e.to_string())),
                },
            }
            let used = (self.inflate.total_in() - before_in) as usize;
            block = &block[used..];
            if block.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() == before_out && block.is_empty() {
                break;
            }
        }
        parse_header_block(&out)
    }

    /// Appends the wire form of `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), Error> {
        let control = |out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]| {
            out.put_u16(0x8000 | VERSION);
            out.put_u16(kind);
            out.put_u32(((flags as u32) << 24) | body.len() as u32);
            out.extend_from_slice(body);
        };
        let mut body = Vec::new();
        match frame {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(associated_to & 0x7fff_ffff);
                body.put_u8((priority & 0x7) << 5);
                body.put_u8(0);
                body.extend(self.compress_headers(headers)?);
                control(out, TYPE_SYN_STREAM, *flags, &body);
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                body.put_u32(stream_id & 0x7fff_ffff);
                body.extend(self.compress_headers(headers)?);
                control(out, TYPE_SYN_REPLY, *flags, &body);
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                body.put_u32(stream_id & 0x7fff_ffff);
                body.extend(self.compress_headers(headers)?);
                control(out, TYPE_HEADERS, *flags, &body);
            }
            Frame::RstStream { stream_id, status } => {
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, TYPE_RST_STREAM, 0, &body);
            }
            Frame::Settings { flags, entries } => {
                body.put_u32(entries.len() as u32);
                for (f, id, v) in entries {
                    body.put_u32(((*f as u32) << 24) | (id & 0xff_ffff));
                    body.put_u32(*v);
                }
                control(out, TYPE_SETTINGS, *flags, &body);
            }
            Frame::Ping { id } => {
                body.put_u32(*id);
                control(out, TYPE_PING, 0, &body);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                body.put_u32(last_good_stream_id & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, TYPE_GOAWAY, 0, &body);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(stream_id & 0x7fff_ffff);
                body.put_u32(delta & 0x7fff_ffff);
                control(out, TYPE_WINDOW_UPDATE, 0, &body);
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME {
                    return Err(Error::TooLarge(data.len()));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(((*flags as u32) << 24) | data.len() as u32);
                out.extend_from_slice(data);
            }
            Frame::Unknown { .. } => {}
        }
        Ok(())
    }

    /// Takes one complete frame off the front of `buf`, or `None` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
        if buf.len() < 8 + len {
            return Ok(None);
        }
        let head = buf.split_to(8);
        let mut body = buf.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            return Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: body,
            }));
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |body: &Bytes, n: usize| {
            if body.len() < n {
                Err(Error::Malformed("control frame too short"))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            TYPE_SYN_STREAM => {
                need(&body, 10)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let associated_to = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                body.advance(1);
                let headers = self.decompress_headers(&body)?;
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(&body, 4)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.decompress_headers(&body)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(&body, 8)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(&body, 4)?;
                let n = body.get_u32() as usize;
                need(&body, n.saturating_mul(8))?;
                let entries = (0..n)
                    .map(|_| {
                        let a = body.get_u32();
                        ((a >> 24) as u8, a & 0xff_ffff, body.get_u32())
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            TYPE_PING => {
                need(&body, 4)?;
                Frame::Ping { id: body.get_u32() }
            }
            TYPE_GOAWAY => {
                need(&body, 4)?;
                let last_good_stream_id = body.get_u32() & 0x7fff_ffff;
                let status = if body.len() >= 4 { body.get_u32() } else { 0 };
                Frame::GoAway {
                    last_good_stream_id,
                    status,
                }
            }
            TYPE_WINDOW_UPDATE => {
                need(&body, 8)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Unknown { kind: other },
        };
        Ok(Some(frame))
    }
}

fn parse_header_block(mut b: &[u8]) -> Result<Headers, Error> {
    let take_u32 = |b: &mut &[u8]| -> Result<usize, Error> {
        if b.len() < 4 {
            return Err(Error::Malformed("truncated header block"));
        }
        let v = b.get_u32() as usize;
        Ok(v)
    };
    let n = take_u32(&mut b)?;
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let kl = take_u32(&mut b)?;
        if b.len() < kl {
            return Err(Error::Malformed("truncated header name"));
        }
        let k = String::from_utf8_lossy(&b[..kl]).to_ascii_lowercase();
        b = &b[kl..];
        let vl = take_u32(&mut b)?;
        if b.len() < vl {
            return Err(Error::Malformed("truncated header value"));
        }
        // Several values of one name are separated by NUL.
        for v in b[..vl].split(|c| *c == 0) {
            headers.push((k.clone(), String::from_utf8_lossy(v).into_owned()));
        }
        b = &b[vl..];
    }
    Ok(headers)
}

/// The first value of header `name` (lower case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A stream the peer opened.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    /// DATA of the stream; ends when the peer half-closes (FIN) or resets it.
    pub data: mpsc::Receiver<Bytes>,
}

/// The sending half of a session, cheap to clone.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Frame>,
}

impl Sender {
    /// Accepts a stream the peer opened.
    pub async fn reply(&self, stream_id: u32) -> bool {
        self.send(Frame::SynReply {
            stream_id,
            flags: 0,
            headers: Vec::new(),
        })
        .await
    }

    /// Sends bytes on a stream, in frames of at most 32 KiB.
    pub async fn data(&self, stream_id: u32, data: Bytes) -> bool {
        let mut data = data;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(32 * 1024));
            if !self
                .send(Frame::Data {
                    stream_id,
                    flags: 0,
                    data: chunk,
                })
                .await
            {
                return false;
            }
        }
        true
    }

    /// Half-closes a stream from this side.
    pub async fn fin(&self, stream_id: u32) -> bool {
        self.send(Frame::Data {
            stream_id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    /// Resets a stream.
    pub async fn reset(&self, stream_id: u32, status: u32) -> bool {
        self.send(Frame::RstStream { stream_id, status }).await
    }

    /// Sends GOAWAY; the writer closes the connection after it.
    pub async fn go_away(&self) -> bool {
        self.send(Frame::GoAway {
            last_good_stream_id: 0,
            status: 0,
        })
        .await
    }

    async fn send(&self, f: Frame) -> bool {
        self.tx.send(f).await.is_ok()
    }
}

type StreamMap = Arc<Mutex<HashMap<u32, mpsc::Sender<Bytes>>>>;

/// Runs a server-side SPDY session over a byte stream. Streams the peer opens arrive on the
/// returned receiver; frames written through the returned [`Sender`] go out in order.
/// The session ends when the connection closes, the peer sends GOAWAY, or every `Sender`
/// and the receiver are dropped.
pub fn session<R, W>(reader: R, writer: W) -> (Sender, mpsc::Receiver<IncomingStream>)
where
    R: Stream<Item = std::io::Result<Bytes>> + Unpin + Send + 'static,
    W: Sink<Bytes, Error = std::io::Error> + Unpin + Send + 'static,
{
    let (out_tx, out_rx) = mpsc::channel::<Frame>(64);
    let (new_tx, new_rx) = mpsc::channel::<IncomingStream>(16);
    let streams: StreamMap = Arc::default();
    let codec = Arc::new(Mutex::new(Codec::new()));
    // Replies to PINGs go through the same writer as everything else.
    let sender = Sender { tx: out_tx.clone() };
    tokio::spawn(write_loop(writer, out_rx, codec.clone()));
    tokio::spawn(read_loop(reader, codec, streams, new_tx, out_tx));
    (sender, new_rx)
}

async fn write_loop<W>(mut writer: W, mut rx: mpsc::Receiver<Frame>, codec: Arc<Mutex<Codec>>)
where
    W: Sink<Bytes, Error = std::io::Error> + Unpin,
{
    while let Some(f) = rx.recv().await {
        let mut out = BytesMut::new();
        let goaway = matches!(f, Frame::GoAway { .. });
        if let Err(e) = codec.lock().encode(&f, &mut out) {
            tracing::debug!(error = %e, "spdy: cannot encode frame");
            break;
        }
        if writer.send(out.freeze()).await.is_err() || goaway {
            break;
        }
    }
    let _ = writer.close().await;
}

async fn read_loop<R>(
    mut reader: R,
    codec: Arc<Mutex<Codec>>,
    streams: StreamMap,
    new_tx: mpsc::Sender<IncomingStream>,
    out_tx: mpsc::Sender<Frame>,
) where
    R: Stream<Item = std::io::Result<Bytes>> + Unpin,
{
    let mut buf = BytesMut::new();
    'conn: while let Some(chunk) = reader.next().await {
        let Ok(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        loop {
            let frame = match codec.lock().decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy: bad frame");
                    break 'conn;
                }
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    flags,
                    headers,
                    ..
                } => {
                    let (tx, rx) = mpsc::channel(32);
                    if flags & FLAG_FIN == 0 {
                        streams.lock().insert(stream_id, tx);
                    }
                    let s = IncomingStream {
                        id: stream_id,
                        headers,
                        data: rx,
                    };
                    if new_tx.send(s).await.is_err() {
                        break 'conn;
                    }
                }
                Frame::Data {
                    stream_id,
                    flags,
                    data,
                } => {
                    let tx = streams.lock().get(&stream_id).cloned();
                    if let Some(tx) = tx {
                        // A slow consumer applies back-pressure to the whole connection,
                        // as spdystream does.
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            streams.lock().remove(&stream_id);
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        streams.lock().remove(&stream_id);
                    }
                }
                Frame::RstStream { stream_id, .. } => {
                    streams.lock().remove(&stream_id);
                }
                Frame::Ping { id } => {
                    if out_tx.send(Frame::Ping { id }).await.is_err() {
                        break 'conn;
                    }
                }
                Frame::GoAway { .. } => break 'conn,
                Frame::Headers {
                    stream_id, flags, ..
                } => {
                    if flags & FLAG_FIN != 0 {
                        streams.lock().remove(&stream_id);
                    }
                }
                Frame::SynReply { .. }
                | Frame::Settings { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
    }
    streams.lock().clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert_eq!(&DICTIONARY[..11], b"\0\0\0\x07options");
        assert!(DICTIONARY.ends_with(b",enq=0."));
    }

    fn roundtrip(frames: &[Frame]) {
        let mut tx = Codec::new();
        let mut rx = Codec::new();
        let mut wire = BytesMut::new();
        for f in frames {
            tx.encode(f, &mut wire).expect("encode");
        }
        // Feed byte by byte for the first frame to check partial reads.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = rx.decode(&mut buf).expect("decode") {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn frames_roundtrip_with_shared_header_compression() {
        let h = |t: &str| -> Headers {
            vec![
                ("streamtype".into(), t.into()),
                ("port".into(), "8080".into()),
                ("requestid".into(), "0".into()),
            ]
        };
        roundtrip(&[
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: h("error"),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 2,
                flags: 0,
                headers: h("data"),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 1,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![(0, 7, 65536)],
            },
            Frame::Ping { id: 1 },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 1000,
            },
            Frame::Headers {
                stream_id: 3,
                flags: 0,
                headers: vec![("a".into(), "b".into())],
            },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
        ]);
    }

    #[test]
    fn data_frame_wire_format() {
        let mut c = Codec::new();
        let mut out = BytesMut::new();
        c.encode(
            &Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hi"),
            },
            &mut out,
        )
        .expect("encode");
        assert_eq!(&out[..], &[0, 0, 0, 5, 1, 0, 0, 2, b'h', b'i']);
    }

    #[test]
    fn ping_wire_format_and_unknown_control_frames_are_skipped() {
        let mut c = Codec::new();
        let mut buf = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 9][..]);
        assert_eq!(
            c.decode(&mut buf).expect("ping"),
            Some(Frame::Ping { id: 9 })
        );
        let mut buf = BytesMut::from(&[0x80, 3, 0, 10, 0, 0, 0, 1, 0][..]);
        assert_eq!(
            c.decode(&mut buf).expect("unknown"),
            Some(Frame::Unknown { kind: 10 })
        );
        let mut buf = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 9][..]);
        assert!(c.decode(&mut buf).is_err());
    }

    #[test]
    fn header_block_uses_the_dictionary() {
        // The zlib header of the first block must announce the dictionary (FDICT) so a Go
        // reader built with zlib.NewReaderDict accepts it.
        let mut c = Codec::new();
        let block = c
            .compress_headers(&vec![("streamtype".into(), "data".into())])
            .expect("compress");
        assert_eq!(block[1] & 0x20, 0x20);
        let mut d = Codec::new();
        assert_eq!(
            d.decompress_headers(&block).expect("decompress"),
            vec![("streamtype".to_string(), "data".to_string())]
        );
    }
}
