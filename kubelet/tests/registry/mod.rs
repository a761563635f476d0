//! A private image registry for tests, on loopback (the Docker Engine pulls from 127.0.0.0/8
//! over plain HTTP): the Registry HTTP API v2 with basic authentication, serving one image
//! made from the root file system of a local image (`docker export`, gzipped, one layer).

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn sha256(b: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, b);
    let hex: String = d.as_ref().iter().map(|x| format!("{x:02x}")).collect();
    format!("sha256:{hex}")
}

struct State {
    repository: String,
    tag: String,
    /// `Basic <base64(user:password)>`.
    authorization: String,
    manifest: Vec<u8>,
    manifest_digest: String,
    blobs: Vec<(String, Vec<u8>)>,
    /// Manifest requests that carried the right credentials, and that did not.
    authorized: AtomicUsize,
    refused: AtomicUsize,
    /// Requests without credentials, answered with the login challenge.
    challenged: AtomicUsize,
}

/// A running registry; stops when dropped.
pub struct Registry {
    pub port: u16,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Registry {
    /// Serves `repository:tag` (the file system of local image `from`) to `user`/`password`.
    pub async fn start(
        from: &str,
        repository: &str,
        tag: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Registry> {
        let out = tokio::process::Command::new("docker")
            .args(["create", from, "true"])
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "docker create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let tar = tokio::process::Command::new("docker")
            .args(["export", &id])
            .output()
            .await?;
        let _ = tokio::process::Command::new("docker")
            .args(["rm", "-f", &id])
            .output()
            .await;
        anyhow::ensure!(tar.status.success(), "docker export failed");
        let tar = tar.stdout;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar)?;
        let layer = gz.finish()?;
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        let config = serde_json::to_vec(&json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [sha256(&tar)]},
            "history": [{"created_by": "minik8s test registry"}],
        }))?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": config.len(), "digest": sha256(&config)},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "size": layer.len(), "digest": sha256(&layer)}],
        }))?;
        let state = Arc::new(State {
            repository: repository.to_string(),
            tag: tag.to_string(),
            authorization: format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            ),
            manifest_digest: sha256(&manifest),
            manifest,
            blobs: vec![(sha256(&config), config), (sha256(&layer), layer)],
            authorized: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            challenged: AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let stop = CancellationToken::new();
        let (st, s) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = s.cancelled() => return,
                    r = listener.accept() => match r { Ok((t, _)) => t, Err(_) => continue },
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(serve(&st, req)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Ok(Registry { port, state, stop })
    }

    /// The image reference to pull.
    pub fn image(&self) -> String {
        format!(
            "127.0.0.1:{}/{}:{}",
            self.port, self.state.repository, self.state.tag
        )
    }

    /// Manifest requests with the right credentials so far.
    pub fn authorized(&self) -> usize {
        self.state.authorized.load(Ordering::SeqCst)
    }

    /// Requests refused for wrong credentials, or manifest requests without any, so far.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Requests without credentials answered with the login challenge so far.
    pub fn challenged(&self) -> usize {
        self.state.challenged.load(Ordering::SeqCst)
    }
}

fn respond(
    code: StatusCode,
    headers: &[(&str, String)],
    body: Vec<u8>,
    head: bool,
) -> Response<Full<Bytes>> {
    let len = body.len();
    let mut r = Response::new(Full::new(Bytes::from(if head { Vec::new() } else { body })));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(
        "docker-distribution-api-version",
        "registry/2.0".parse().expect("header"),
    );
    h.insert(
        header::CONTENT_LENGTH,
        len.to_string().parse().expect("header"),
    );
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (http::HeaderName::try_from(*k), v.parse()) {
            h.insert(k, v);
        }
    }
    r
}

fn error(code: StatusCode, err: &str, msg: &str, head: bool) -> Response<Full<Bytes>> {
    let body =
        serde_json::to_vec(&json!({"errors": [{"code": err, "message": msg}]})).unwrap_or_default();
    let mut headers = vec![("content-type", "application/json".to_string())];
    if code == StatusCode::UNAUTHORIZED {
        headers.push((
            "www-authenticate",
            "Basic realm=\"minik8s-test\"".to_string(),
        ));
    }
    respond(code, &headers, body, head)
}

fn serve(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let head = req.method() == Method::HEAD;
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(st.authorization.as_str());
    let path = req.uri().path().to_string();
    if path == "/v2/" || path == "/v2" {
        if authorized {
            return respond(
                StatusCode::OK,
                &[("content-type", "application/json".into())],
                b"{}".to_vec(),
                head,
            );
        }
        // A pull with credentials logs in after this challenge; one without stops here.
        if req.headers().contains_key(header::AUTHORIZATION) {
            st.refused.fetch_add(1, Ordering::SeqCst);
        } else {
            st.challenged.fetch_add(1, Ordering::SeqCst);
        }
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
            head,
        );
    }
    let prefix = format!("/v2/{}/", st.repository);
    let Some(rest) = path.strip_prefix(&prefix) else {
        return error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            "repository name not known to registry",
            head,
        );
    };
    if let Some(reference) = rest.strip_prefix("manifests/") {
        if !authorized {
            st.refused.fetch_add(1, Ordering::SeqCst);
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
                head,
            );
        }
        st.authorized.fetch_add(1, Ordering::SeqCst);
        if reference != st.tag && reference != st.manifest_digest {
            return error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                head,
            );
        }
        return respond(
            StatusCode::OK,
            &[
                (
                    "content-type",
                    "application/vnd.docker.distribution.manifest.v2+json".into(),
                ),
                ("docker-content-digest", st.manifest_digest.clone()),
            ],
            st.manifest.clone(),
            head,
        );
    }
    if let Some(digest) = rest.strip_prefix("blobs/") {
        if !authorized {
            return error(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
                head,
            );
        }
        if let Some((_, b)) = st.blobs.iter().find(|(d, _)| d == digest) {
            return respond(
                StatusCode::OK,
                &[
                    ("content-type", "application/octet-stream".into()),
                    ("docker-content-digest", digest.to_string()),
                ],
                b.clone(),
                head,
            );
        }
        return error(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            "blob unknown to registry",
            head,
        );
    }
    error(StatusCode::NOT_FOUND, "NOT_FOUND", "not found", head)
}
