//! HTTP handlers: one entry point that authenticates, parses the RequestInfo, and
//! dispatches to discovery, health, or the generic REST verbs on a store.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::object;
use crate::pki::UserInfo;
use crate::registry::store::{DeleteOptions, DeleteOutcome, ListParams, Store, WriteOptions};
use crate::registry::stores::Registry;
use crate::registry::Subresource;
use crate::request_info::{self, Query, RequestInfo};
use crate::selector::{FieldSelector, LabelSelector};
use crate::validation::FieldError;
use crate::watch_cache::Filter;

pub mod discovery;
pub mod openapi;
mod openapi_pb;
pub mod proxy;
pub mod watch;

/// Largest request body accepted (upstream: 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The response body type of every handler.
pub type Body = BoxBody<Bytes, Infallible>;

/// What every request handler shares.
pub struct ApiState {
    pub registry: Arc<Registry>,
    /// Authentication, authorization and audit.
    pub security: Arc<crate::auth::Security>,
    pub openapi_v3: openapi::OpenApiV3,
    pub openapi_v2: openapi::OpenApiV2,
    pub url: String,
    pub shutdown: CancellationToken,
    /// TLS of calls to kubelets (`pods/log`, `pods/exec`, `nodes/proxy`, ...).
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
}

impl ApiState {
    pub fn new(registry: Arc<Registry>, url: String, shutdown: CancellationToken) -> Self {
        let openapi_v3 = openapi::OpenApiV3::new(&registry.resources);
        let openapi_v2 = openapi::OpenApiV2::new(&registry.resources);
        ApiState {
            registry,
            security: Arc::new(crate::auth::Security::certificates_only()),
            openapi_v3,
            openapi_v2,
            url,
            shutdown,
            kubelet_tls: None,
        }
    }

    /// Installs the configured authentication, authorization and audit.
    pub fn with_security(mut self, security: Arc<crate::auth::Security>) -> Self {
        self.security = security;
        self
    }
}

/// A full body.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn json_response(code: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// The Status response of an error.
pub fn error_response(e: &Error) -> Response<Body> {
    if let Error::Internal(m) = e {
        tracing::error!(error = %m, "internal error");
    }
    let body = serde_json::to_vec(&e.status()).unwrap_or_default();
    json_response(e.code(), body)
}

fn text_response(code: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Handles one request.
pub async fn handle(
    state: Arc<ApiState>,
    req: Request<Incoming>,
    user: Arc<Option<UserInfo>>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let mut req = req;
    let audit = crate::auth::audit::Slot::default();
    req.extensions_mut().insert(audit.clone());
    let resp = match route(&state, req, user.as_ref().as_ref()).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    if let Some(log) = &state.security.audit {
        log.finish(&audit, resp.status().as_u16());
    }
    tracing::debug!(verb = %method, %path, code = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    resp
}

async fn route(
    state: &Arc<ApiState>,
    req: Request<Incoming>,
    user: Option<&UserInfo>,
) -> Result<Response<Body>> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let info = request_info::parse(req.method(), &path, &query);
    let req = match crate::auth::filter(state, req, user, &info).await? {
        crate::auth::Filtered::Pass(req) => req,
        crate::auth::Filtered::Served(resp) => return Ok(resp),
    };
    if !info.is_resource_request {
        return non_resource(state, req, &path).await;
    }
    if proxy::is_proxied(&info) {
        return proxy::serve(state, req, &info).await;
    }
    let q = request_info::parse_query(&query).map_err(Error::BadRequest)?;
    resource(state, req, &info, &q).await
}

async fn non_resource(
    state: &Arc<ApiState>,
    req: Request<Incoming>,
    path: &str,
) -> Result<Response<Body>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(Error::MethodNotSupported);
    }
    let all = state.registry.all_resources();
    let res = &all;
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    match path.trim_end_matches('/') {
        "/healthz" | "/livez" | "/readyz" => {
            if state.registry.caches.is_ready() && !state.shutdown.is_cancelled() {
                Ok(text_response(StatusCode::OK, "ok"))
            } else {
                Ok(text_response(StatusCode::SERVICE_UNAVAILABLE, "not ready"))
            }
        }
        p if p.starts_with("/healthz/")
            || p.starts_with("/livez/")
            || p.starts_with("/readyz/") =>
        {
            Ok(text_response(StatusCode::OK, "ok"))
        }
        "/openapi/v2" => {
            // JSON, or gnostic's protobuf form (what client-go's OpenAPISchema asks for), in
            // the order the client lists them.
            let pb = accept.find("com.github.proto-openapi.spec.v2");
            let json = accept.find("json").or_else(|| accept.find("*/*"));
            match (pb, json) {
                (Some(p), j) if j.is_none_or(|j| p < j) => {
                    let pb = state.openapi_v2.protobuf_with(&stored_crds(state));
                    let mut r = Response::new(full(pb));
                    // Upstream answers both request forms with the dotted one: Go's
                    // mime.ParseMediaType refuses the `@`.
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(
                            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                        ),
                    );
                    Ok(r)
                }
                (None, None) if !accept.is_empty() => Err(Error::NotAcceptable(
                    "only the following media types are accepted: application/json, application/com.github.proto-openapi.spec.v2@v1.0+protobuf".into(),
                )),
                _ => Ok(json_response(
                    StatusCode::OK,
                    state.openapi_v2.text_with(&stored_crds(state)),
                )),
            }
        }
        "/openapi/v3" => Ok(json_response(
            StatusCode::OK,
            state.openapi_v3.index_with(&custom_openapi(state)),
        )),
        p if p.starts_with("/openapi/v3/") => {
            let gv = p.trim_start_matches("/openapi/v3/");
            let (doc, hash) = match state.openapi_v3.doc(gv) {
                Some((d, h)) => (d.to_string(), h.to_string()),
                None => custom_openapi(state)
                    .remove(gv)
                    .ok_or(Error::NotFoundPath)?,
            };
            let mut r = json_response(StatusCode::OK, doc);
            if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                r.headers_mut().insert(header::ETAG, etag);
            }
            let immutable = req.uri().query().is_some_and(|q| q.contains("hash="));
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(if immutable {
                    "public, immutable"
                } else {
                    "no-cache, private"
                }),
            );
            Ok(r)
        }
        "/version" => Ok(json_response(
            StatusCode::OK,
            discovery::version_info().to_string(),
        )),
        "/api" | "/apis" => {
            let legacy = path.trim_end_matches('/') == "/api";
            let neg = discovery::negotiate(&accept);
            match neg.aggregated {
                Some(v) => {
                    let body = discovery::aggregated(res, legacy, v).to_string();
                    let mut r = json_response(StatusCode::OK, body);
                    if let Ok(ct) = HeaderValue::from_str(neg.content_type) {
                        r.headers_mut().insert(header::CONTENT_TYPE, ct);
                    }
                    r.headers_mut()
                        .insert(header::VARY, HeaderValue::from_static("Accept"));
                    Ok(r)
                }
                None => {
                    let body = if legacy {
                        discovery::api_versions(&state.url)
                    } else {
                        discovery::api_group_list(res)
                    };
                    let mut r = json_response(StatusCode::OK, body.to_string());
                    r.headers_mut()
                        .insert(header::VARY, HeaderValue::from_static("Accept"));
                    Ok(r)
                }
            }
        }
        "/api/v1" => discovery::api_resource_list(res, "", "v1")
            .map(|v| json_response(StatusCode::OK, v.to_string()))
            .ok_or(Error::NotFoundPath),
        p if p.starts_with("/apis/") => {
            let parts: Vec<&str> = p.trim_start_matches("/apis/").split('/').collect();
            let found = match parts.as_slice() {
                [g] => discovery::api_group(res, g),
                [g, v] => discovery::api_resource_list(res, g, v),
                _ => None,
            };
            found
                .map(|v| json_response(StatusCode::OK, v.to_string()))
                .ok_or(Error::NotFoundPath)
        }
        "" | "/" => {
            let mut paths: Vec<String> = vec!["/api".into(), "/api/v1".into(), "/apis".into()];
            for r in res.iter().filter(|r| !r.group.is_empty()) {
                for p in [
                    format!("/apis/{}", r.group),
                    format!("/apis/{}/{}", r.group, r.version),
                ] {
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
            }
            paths.extend([
                "/healthz".into(),
                "/livez".into(),
                "/readyz".into(),
                "/version".into(),
            ]);
            Ok(json_response(
                StatusCode::OK,
                json!({ "paths": paths }).to_string(),
            ))
        }
        _ => Err(Error::NotFoundPath),
    }
}

fn content_type(req: &Request<Incoming>) -> String {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Bytes of an oversized body read and dropped so the client sees the 413 instead of a
/// broken connection; past this the connection is dropped.
const MAX_DISCARD_BYTES: usize = 64 * 1024 * 1024;

/// Reads a body of at most `MAX_BODY_BYTES`.
pub(crate) async fn read_body(req: Request<Incoming>) -> Result<Bytes> {
    let mut body = req.into_body();
    let mut buf = bytes::BytesMut::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::BadRequest(format!("reading request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            total += data.len();
            if total <= MAX_BODY_BYTES {
                buf.extend_from_slice(&data);
            } else if total > MAX_DISCARD_BYTES {
                return Err(Error::RequestEntityTooLarge);
            }
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(Error::RequestEntityTooLarge);
    }
    Ok(buf.freeze())
}

const UNKNOWN_FORMAT: &str = "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf";

/// The group, version and kind a request body is decoded as.
#[derive(Clone, Copy)]
pub(crate) struct Expected<'a> {
    pub(crate) group: &'a str,
    pub(crate) version: &'a str,
    pub(crate) kind: &'a str,
}

impl<'a> Expected<'a> {
    fn of(store: &'a Store, sub: Option<Subresource>) -> Self {
        match sub {
            Some(Subresource::Scale) => SCALE,
            _ => Expected {
                group: store.info.group,
                version: store.info.version,
                kind: store.info.kind,
            },
        }
    }
}

const SCALE: Expected<'static> = Expected {
    group: "autoscaling",
    version: "v1",
    kind: "Scale",
};

const BINDING: Expected<'static> = Expected {
    group: "",
    version: "v1",
    kind: "Binding",
};

const DELETE_OPTIONS: Expected<'static> = Expected {
    group: "meta.k8s.io",
    version: "v1",
    kind: "DeleteOptions",
};

/// Decodes a JSON, YAML or protobuf body into an object.
pub(crate) fn decode_object(ct: &str, body: &[u8], expected: Expected<'_>) -> Result<Value> {
    let v: Value = match ct {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            Error::BadRequest(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => serde_yaml::from_slice(body)
            .map_err(|e| Error::BadRequest(format!("error converting YAML to JSON: yaml: {e}")))?,
        crate::protobuf::MEDIA_TYPE => {
            crate::protobuf::decode_body(body, expected.group, expected.version, expected.kind)?
        }
        _ => return Err(Error::UnsupportedMediaType(UNKNOWN_FORMAT.into())),
    };
    if !v.is_object() {
        return Err(Error::BadRequest(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            crate::validation::json_type_name(&v)
        )));
    }
    Ok(v)
}

/// Whether a response can be sent for this Accept header. Responses are JSON (or YAML), so
/// any list naming JSON, YAML or a wildcard is served JSON, even when it prefers protobuf.
fn check_accept(accept: Option<&str>) -> Result<()> {
    let Some(accept) = accept else {
        return Ok(());
    };
    let ok = accept.split(',').any(|part| {
        let mt = part
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        matches!(
            mt.as_str(),
            "" | "*/*" | "application/*" | "application/json" | "application/yaml"
        )
    });
    if ok {
        Ok(())
    } else {
        Err(Error::NotAcceptable(
            "only the following media types are accepted: application/json, application/yaml"
                .into(),
        ))
    }
}

fn list_params(q: &Query) -> Result<ListParams> {
    let labels = match q.label_selector.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => LabelSelector::parse(s).map_err(Error::BadRequest)?,
        None => LabelSelector::default(),
    };
    let fields = match q.field_selector.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => FieldSelector::parse(s).map_err(Error::BadRequest)?,
        None => FieldSelector::default(),
    };
    Ok(ListParams {
        filter: Filter {
            namespace: None,
            labels,
            fields,
        },
        limit: q.limit.unwrap_or(0) as usize,
        continue_token: q.continue_token.clone(),
        resource_version: q.resource_version.clone(),
        resource_version_match: q.resource_version_match.clone(),
    })
}

fn check_fields(store: &Store, p: &ListParams) -> Result<()> {
    p.filter
        .fields
        .check_supported(store.info.strategy.selectable_field_names())
        .map_err(Error::BadRequest)
}

fn write_options(q: &Query) -> Result<WriteOptions> {
    let mut dry_run = false;
    for d in &q.dry_run {
        match d.as_str() {
            "All" => dry_run = true,
            "" => {}
            other => {
                return Err(Error::BadRequest(format!(
                    "Invalid dry run value: {other:?}: supported values: \"All\""
                )))
            }
        }
    }
    Ok(WriteOptions {
        dry_run,
        field_manager: q.field_manager.clone(),
        field_subresource: None,
    })
}

/// Who a write is recorded as in managedFields: `fieldManager`, else the User-Agent up to
/// its first `/` (upstream's `prefixFromUserAgent`).
fn field_manager(q: &Query, req: &Request<Incoming>) -> String {
    if let Some(m) = q.field_manager.as_deref().filter(|m| !m.is_empty()) {
        return m.to_string();
    }
    let ua = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let prefix = ua.split('/').next().unwrap_or("");
    prefix.chars().take(128).collect()
}

/// Upstream's PatchOptions / CreateOptions / UpdateOptions checks of `fieldManager` and `force`.
fn check_manager_options(q: &Query, options_kind: &str, apply: bool) -> Result<()> {
    let mut errs = Vec::new();
    let manager = q.field_manager.as_deref().unwrap_or("");
    if options_kind == "PatchOptions" {
        if !apply && q.force.is_some() {
            errs.push(FieldError::forbidden(
                "force",
                "may not be specified for non-apply patch",
            ));
        }
        if apply && manager.is_empty() {
            errs.push(FieldError::required(
                "fieldManager",
                "is required for apply patch",
            ));
        }
    }
    if manager.len() > 128 {
        errs.push(FieldError::too_long("fieldManager", 128));
    }
    // Upstream's unicode.IsPrint: no control characters, no spacing but the ASCII space.
    for (i, c) in manager.char_indices() {
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            errs.push(FieldError::invalid(
                "fieldManager",
                manager,
                format!("invalid character U+{:04X} (at position {i})", c as u32),
            ));
        }
    }
    if errs.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        kind: format!("{options_kind}.meta.k8s.io"),
        name: String::new(),
        errors: errs,
    })
}

async fn resource(
    state: &Arc<ApiState>,
    req: Request<Incoming>,
    info: &RequestInfo,
    q: &Query,
) -> Result<Response<Body>> {
    // `POST namespaces/<ns>/bindings` is served by the pods store, like upstream's BindingREST.
    let bindings = info.api_group.is_empty() && info.resource == "bindings";
    let resource_name = if bindings {
        "pods"
    } else {
        info.resource.as_str()
    };
    let store = state
        .registry
        .lookup(&info.api_group, &info.api_version, resource_name)
        .ok_or(Error::NotFoundPath)?;
    let namespaced = store.info.namespaced;
    // RequestInfo names a namespace object's own name as its namespace.
    let url_ns = if store.info.group.is_empty() && store.info.plural == "namespaces" {
        String::new()
    } else {
        info.namespace.clone()
    };
    // A namespaced resource needs a namespace except for cluster-wide list/watch;
    // a cluster-scoped one must not have one.
    if !namespaced && !url_ns.is_empty() {
        return Err(Error::NotFoundPath);
    }
    if namespaced && url_ns.is_empty() && !matches!(info.verb.as_str(), "list" | "watch") {
        return Err(Error::NotFoundPath);
    }
    let sub = match info.subresource.as_str() {
        "" => None,
        "status" if store.info.has_subresource(Subresource::Status) => Some(Subresource::Status),
        "scale" if store.info.has_subresource(Subresource::Scale) => Some(Subresource::Scale),
        "binding" if store.info.has_subresource(Subresource::Binding) => Some(Subresource::Binding),
        "approval" if store.info.has_subresource(Subresource::Approval) => {
            Some(Subresource::Approval)
        }
        _ => return Err(Error::NotFoundPath),
    };
    if bindings || sub == Some(Subresource::Binding) {
        if bindings && (sub.is_some() || !info.name.is_empty()) {
            return Err(Error::NotFoundPath);
        }
        if info.verb != "create" {
            return Err(Error::MethodNotSupported);
        }
        let ct = content_type(&req);
        let opts = write_options(q)?;
        let body = read_body(req).await?;
        let obj = decode_object(&ct, &body, BINDING)?;
        crate::registry::binding::create(&store, &url_ns, &info.name, obj, &opts).await?;
        return Ok(json_response(
            StatusCode::CREATED,
            crate::registry::binding::success().to_string(),
        ));
    }
    if info.verb != "watch" {
        check_accept(
            req.headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok()),
        )?;
    }
    // `kubectl get` asks for a Table (as=Table;g=meta.k8s.io;v=v1) for reads.
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let table = if matches!(info.verb.as_str(), "get" | "list" | "watch")
        && sub.is_none()
        && crate::table::wants_table(accept)
    {
        Some(
            crate::table::IncludeObject::parse(q.raw.get("includeObject").map(String::as_str))
                .map_err(Error::BadRequest)?,
        )
    } else {
        None
    };
    let ns = url_ns;
    let name = info.name.clone();
    match info.verb.as_str() {
        "get" => {
            if sub == Some(Subresource::Scale) {
                let obj = store.get_value(&ns, &name).await?;
                return Ok(json_response(
                    StatusCode::OK,
                    scale_of(&store, &obj)?.to_string(),
                ));
            }
            let b = store.get(&ns, &name, q.resource_version.as_deref()).await?;
            match table {
                None => Ok(json_response(StatusCode::OK, b)),
                Some(include) => {
                    let obj: Value =
                        serde_json::from_slice(&b).map_err(|e| Error::Internal(e.to_string()))?;
                    let rv = object::meta_str(&obj, "resourceVersion").to_string();
                    let t = crate::table::render_for(
                        &store.info,
                        std::slice::from_ref(&obj),
                        &include,
                        &rv,
                        None,
                        chrono::Utc::now(),
                    );
                    Ok(json_response(StatusCode::OK, t.to_string()))
                }
            }
        }
        "list" => {
            let p = list_params(q)?;
            check_fields(&store, &p)?;
            let ns_opt = (!ns.is_empty()).then_some(ns.as_str());
            let b = store.list(ns_opt, &p).await?;
            match table {
                None => Ok(json_response(StatusCode::OK, b)),
                Some(include) => {
                    let list: Value =
                        serde_json::from_slice(&b).map_err(|e| Error::Internal(e.to_string()))?;
                    let items = list
                        .get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let rv = list
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let cont = list.pointer("/metadata/continue").and_then(Value::as_str);
                    let t = crate::table::render_for(
                        &store.info,
                        &items,
                        &include,
                        rv,
                        cont,
                        chrono::Utc::now(),
                    );
                    Ok(json_response(StatusCode::OK, t.to_string()))
                }
            }
        }
        "watch" => {
            let p = list_params(q)?;
            check_fields(&store, &p)?;
            watch::serve(state, store, &ns, p, q, table).await
        }
        "create" => {
            if sub.is_some() || !name.is_empty() {
                return Err(Error::MethodNotSupported);
            }
            let ct = content_type(&req);
            let mut opts = write_options(q)?;
            check_manager_options(q, "CreateOptions", false)?;
            opts.field_manager = Some(field_manager(q, &req));
            let user = crate::auth::request_user(&req);
            let body = read_body(req).await?;
            let mut obj = decode_object(&ct, &body, Expected::of(&store, sub))?;
            let mut warnings = field_validation(&store, q, &obj)?;
            warnings.extend(
                crate::admission::admit_write(
                    state,
                    &user,
                    &store,
                    None,
                    &ns,
                    None,
                    opts.dry_run,
                    &mut obj,
                )
                .await?,
            );
            let b = store.create(&ns, obj, &opts).await?;
            let r = json_response(
                if opts.dry_run {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                },
                b,
            );
            Ok(with_warnings(r, &warnings))
        }
        "update" => {
            let ct = content_type(&req);
            let mut opts = write_options(q)?;
            check_manager_options(q, "UpdateOptions", false)?;
            opts.field_manager = Some(field_manager(q, &req));
            let user = crate::auth::request_user(&req);
            let body = read_body(req).await?;
            let mut obj = decode_object(&ct, &body, Expected::of(&store, sub))?;
            if sub == Some(Subresource::Scale) {
                let w = crate::admission::WriteRequest::new(&user, &store, sub, &ns, opts.dry_run);
                return update_scale(state, &w, &name, obj, &opts).await;
            }
            let mut warnings = field_validation(&store, q, &obj)?;
            warnings.extend(
                crate::admission::admit_write(
                    state,
                    &user,
                    &store,
                    sub,
                    &ns,
                    Some(&name),
                    opts.dry_run,
                    &mut obj,
                )
                .await?,
            );
            let b = store.update(&ns, &name, obj, sub, &opts).await?;
            Ok(with_warnings(json_response(StatusCode::OK, b), &warnings))
        }
        "patch" => {
            let ct = content_type(&req);
            let mut opts = write_options(q)?;
            check_manager_options(q, "PatchOptions", ct == "application/apply-patch+yaml")?;
            opts.field_manager = Some(field_manager(q, &req));
            let user = crate::auth::request_user(&req);
            let body = read_body(req).await?;
            let w = crate::admission::WriteRequest::new(&user, &store, sub, &ns, opts.dry_run);
            patch(state, &w, &name, &ct, &body, &opts, q).await
        }
        "delete" => {
            let ct = content_type(&req);
            let user = crate::auth::request_user(&req);
            let body = read_body(req).await?;
            let opts = delete_options(q, &ct, &body)?;
            let w = crate::admission::WriteRequest::new(&user, &store, sub, &ns, opts.dry_run);
            let w = &w;
            let admit = move |old: Value| async move { w.admit_delete(state, &old).await }.boxed();
            match store.delete_admitted(&ns, &name, &opts, &admit).await? {
                DeleteOutcome::Pending(v) => Ok(json_response(StatusCode::OK, v.to_string())),
                DeleteOutcome::Deleted(v) => {
                    let mut details = json!({"name": name, "kind": store.info.plural, "uid": object::meta_str(&v, "uid")});
                    if !store.info.group.is_empty() {
                        details["group"] = json!(store.info.group);
                    }
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success", "details": details,
                    });
                    Ok(json_response(StatusCode::OK, status.to_string()))
                }
            }
        }
        "deletecollection" => {
            if sub.is_some() {
                return Err(Error::MethodNotSupported);
            }
            let ct = content_type(&req);
            let user = crate::auth::request_user(&req);
            let body = read_body(req).await?;
            let opts = delete_options(q, &ct, &body)?;
            let p = list_params(q)?;
            check_fields(&store, &p)?;
            let ns_opt = (!ns.is_empty()).then_some(ns.as_str());
            let (user, store, dry_run) = (&user, &store, opts.dry_run);
            let admit = move |old: Value| {
                async move {
                    // Each object is admitted in its own namespace.
                    let namespace = object::meta_str(&old, "namespace").to_string();
                    let w = crate::admission::WriteRequest {
                        user,
                        store,
                        subresource: None,
                        namespace: &namespace,
                        dry_run,
                    };
                    w.admit_delete(state, &old).await
                }
                .boxed()
            };
            Ok(json_response(
                StatusCode::OK,
                store
                    .delete_collection_admitted(ns_opt, &p, &opts, &admit)
                    .await?,
            ))
        }
        _ => Err(Error::MethodNotSupported),
    }
}

/// How often a patch is re-applied after losing a race with another write.
const PATCH_ATTEMPTS: usize = 16;

fn delete_options(q: &Query, ct: &str, body: &[u8]) -> Result<DeleteOptions> {
    let mut o = DeleteOptions {
        grace_period_seconds: q.grace_period_seconds,
        propagation_policy: q.propagation_policy.clone(),
        orphan_dependents: q.orphan_dependents,
        dry_run: write_options(q)?.dry_run,
        ..Default::default()
    };
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(o);
    }
    let v = decode_object(ct, body, DELETE_OPTIONS)?;
    if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
        o.grace_period_seconds = Some(g);
    }
    if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
        o.propagation_policy = Some(p.to_string());
    }
    if let Some(b) = v.get("orphanDependents").and_then(Value::as_bool) {
        o.orphan_dependents = Some(b);
    }
    if let Some(pre) = v.get("preconditions") {
        o.precondition_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
        o.precondition_resource_version = pre
            .get("resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string);
    }
    if let Some(d) = v.get("dryRun").and_then(Value::as_array) {
        if d.iter().any(|x| x.as_str() == Some("All")) {
            o.dry_run = true;
        }
    }
    Ok(o)
}

/// PATCH: applies the patch to the current object and admits the result as an update of
/// it, then writes it if the object has not changed meanwhile (else starts over, unless the
/// patch names the resourceVersion it expects).
async fn patch(
    state: &Arc<ApiState>,
    w: &crate::admission::WriteRequest<'_>,
    name: &str,
    ct: &str,
    body: &[u8],
    opts: &WriteOptions,
    q: &Query,
) -> Result<Response<Body>> {
    let (store, ns, sub) = (w.store, w.namespace, w.subresource);
    let patch: Value = serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice::<Value>(body))
        .map_err(|e| Error::BadRequest(format!("error decoding patch: {e}")))?;
    let kind = match ct {
        "application/merge-patch+json" => "merge",
        "application/json-patch+json" => "json",
        "application/strategic-merge-patch+json" if patch_schema(store, sub).is_some() => {
            "strategic"
        }
        "application/apply-patch+yaml" if sub == Some(Subresource::Scale) => "merge",
        "application/apply-patch+yaml" => {
            return server_side_apply(state, w, name, patch, opts, q).await;
        }
        _ => {
            return Err(Error::UnsupportedMediaType(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
            ))
        }
    };
    if sub == Some(Subresource::Scale) {
        let obj = store.get_value(ns, name).await?;
        let mut scale = scale_of(store, &obj)?;
        apply_patch(kind, &mut scale, &patch, patch_schema(store, sub))?;
        return update_scale(state, w, name, scale, opts).await;
    }
    // The patch's resourceVersion, if any, is a precondition; otherwise the object read.
    let precondition = patch
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .is_some();
    for _ in 0..PATCH_ATTEMPTS {
        let old = store.get_value(ns, name).await?;
        let mut new = old.clone();
        apply_patch(kind, &mut new, &patch, patch_schema(store, sub))?;
        let mut warnings = field_validation(store, q, &new)?;
        if !precondition {
            let rv = object::meta_str(&old, "resourceVersion").to_string();
            object::meta_mut(&mut new).insert("resourceVersion".into(), Value::String(rv));
        }
        warnings.extend(w.admit(state, Some(&old), &mut new).await?);
        match store.update(ns, name, new, sub, opts).await {
            Ok(b) => return Ok(with_warnings(json_response(StatusCode::OK, b), &warnings)),
            // Someone wrote in between: patch (and admit) the newer object.
            Err(Error::Conflict { .. }) if !precondition => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict {
        resource: store.info.qualified_resource(),
        name: name.to_string(),
        message: "too many concurrent updates; please try again".into(),
    })
}

/// PATCH with `application/apply-patch+yaml`: server-side apply. Creates the object when
/// it does not exist; otherwise merges the configuration into it under field management,
/// then admits and writes the result as an update (retried when someone wrote meanwhile).
async fn server_side_apply(
    state: &Arc<ApiState>,
    w: &crate::admission::WriteRequest<'_>,
    name: &str,
    config: Value,
    opts: &WriteOptions,
    q: &Query,
) -> Result<Response<Body>> {
    let (store, ns, sub) = (w.store, w.namespace, w.subresource);
    if !config.is_object() {
        return Err(Error::BadRequest(
            "error decoding YAML: the apply configuration must be an object".into(),
        ));
    }
    let av = store.info.api_version();
    let given = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if given != av {
        return Err(Error::BadRequest(format!(
            "Incorrect version specified in apply patch. Specified patch version: {given}, expected: {av}"
        )));
    }
    let kind = config.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind != store.info.kind {
        return Err(Error::BadRequest(format!(
            "Incorrect kind specified in apply patch. Specified patch kind: {kind}, expected: {}",
            store.info.kind
        )));
    }
    let given_name = object::meta_str(&config, "name");
    if !given_name.is_empty() && given_name != name {
        return Err(Error::BadRequest(format!(
            "the name of the object ({given_name}) does not match the name on the URL ({name})"
        )));
    }
    let manager = opts.field_manager.clone().unwrap_or_default();
    let force = q.force.unwrap_or(false);
    let sub_name = match sub {
        Some(Subresource::Status) => "status",
        _ => "",
    };
    let fw = store.field_write(&manager, &av, sub_name);
    let warnings = field_validation(store, q, &config)?;
    // The write itself records nothing more: the apply did.
    let write = WriteOptions {
        field_manager: None,
        ..opts.clone()
    };
    for _ in 0..PATCH_ATTEMPTS {
        let live = match store.get_value(ns, name).await {
            Ok(v) => Some(v),
            Err(Error::NotFound { .. }) if sub.is_none() => None,
            Err(e) => return Err(e),
        };
        let mut new = crate::fieldmanager::apply(&fw, live.as_ref(), &config, force)?;
        object::meta_mut(&mut new).insert("name".into(), json!(name));
        let Some(old) = live else {
            if !ns.is_empty() {
                object::meta_mut(&mut new).insert("namespace".into(), json!(ns));
            }
            let mut warnings = warnings.clone();
            warnings.extend(w.admit(state, None, &mut new).await?);
            return match store.create(ns, new, &write).await {
                Ok(b) => Ok(with_warnings(
                    json_response(
                        if opts.dry_run {
                            StatusCode::OK
                        } else {
                            StatusCode::CREATED
                        },
                        b,
                    ),
                    &warnings,
                )),
                // Created meanwhile: apply to it.
                Err(Error::AlreadyExists { .. }) => continue,
                Err(e) => Err(e),
            };
        };
        let rv = object::meta_str(&old, "resourceVersion").to_string();
        object::meta_mut(&mut new).insert("resourceVersion".into(), Value::String(rv));
        let mut warnings = warnings.clone();
        warnings.extend(w.admit(state, Some(&old), &mut new).await?);
        match store.update(ns, name, new, sub, &write).await {
            Ok(b) => return Ok(with_warnings(json_response(StatusCode::OK, b), &warnings)),
            Err(Error::Conflict { .. }) => continue,
            Err(Error::NotFound { .. }) if sub.is_none() => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Conflict {
        resource: store.info.qualified_resource(),
        name: name.to_string(),
        message: "too many concurrent updates; please try again".into(),
    })
}

/// Unknown fields under `fieldValidation` (Strict: 400; Warn, the default: warnings; Ignore).
fn field_validation(store: &Store, q: &Query, obj: &Value) -> Result<Vec<String>> {
    let mode = q.field_validation.as_deref().unwrap_or("Warn");
    if !matches!(mode, "Ignore" | "Warn" | "Strict") {
        return Err(Error::BadRequest(format!(
            "fieldValidation: Unsupported value: {mode:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
        )));
    }
    let cannot = |detail: String| {
        Error::BadRequest(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: {detail}",
            kind = store.info.kind,
            v = store.info.version,
        ))
    };
    let found = match store.info.strategy.unknown_fields(obj) {
        Some(_) if mode == "Ignore" => return Ok(Vec::new()),
        Some(fields) => fields,
        None => {
            let typed = match crate::typed::roundtrip(
                store.info.group,
                store.info.version,
                store.info.kind,
                obj,
            ) {
                None => return Ok(Vec::new()),
                Some(Err(e)) => return Err(cannot(e)),
                Some(Ok(t)) => t,
            };
            if mode == "Ignore" {
                return Ok(Vec::new());
            }
            crate::typed::unknown_fields(obj, &typed)
        }
    };
    let unknown: Vec<String> = found
        .into_iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    if unknown.is_empty() || mode == "Warn" {
        return Ok(unknown);
    }
    Err(cannot(format!(
        "strict decoding error: {}",
        unknown.join(", ")
    )))
}

/// Adds `Warning: 299 - "..."` headers, as kubectl prints them.
fn with_warnings(mut r: Response<Body>, warnings: &[String]) -> Response<Body> {
    for w in warnings {
        let text = w.replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
    r
}

/// The strategic-merge-patch metadata of a built-in kind (or its Scale); custom resources have none.
fn patch_schema(store: &Store, sub: Option<Subresource>) -> Option<::openapi::TypeRef> {
    if sub == Some(Subresource::Scale) {
        return ::openapi::kind_def("autoscaling", "v1", "Scale");
    }
    ::openapi::kind_def(store.info.group, store.info.version, store.info.kind)
}

fn apply_patch(
    kind: &str,
    doc: &mut Value,
    patch: &Value,
    schema: Option<::openapi::TypeRef>,
) -> Result<()> {
    match kind {
        "strategic" => {
            crate::patch::strategic::apply(doc, patch, schema).map_err(Error::BadRequest)
        }
        "merge" => {
            if !patch.is_object() {
                return Err(Error::BadRequest(
                    "a merge patch must be a JSON object".into(),
                ));
            }
            crate::patch::merge_patch(doc, patch);
            Ok(())
        }
        _ => crate::patch::json_patch(doc, patch).map_err(Error::BadRequest),
    }
}

/// The autoscaling/v1 Scale of an object.
fn scale_of(store: &Store, obj: &Value) -> Result<Value> {
    let paths = store
        .info
        .strategy
        .scale_paths()
        .ok_or(Error::NotFoundPath)?;
    let meta = object::meta(obj).cloned().unwrap_or_default();
    let selector = match obj.pointer(paths.selector) {
        Some(sel @ Value::Object(m))
            if m.contains_key("matchLabels") || m.contains_key("matchExpressions") =>
        {
            LabelSelector::from_label_selector_json(sel)
                .map(|s| s.to_string())
                .unwrap_or_default()
        }
        // Custom resources point labelSelectorPath at a selector string.
        Some(Value::String(s)) => s.clone(),
        Some(Value::Object(m)) => {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            parts.sort();
            parts.join(",")
        }
        _ => String::new(),
    };
    let mut status = json!({ "replicas": obj.pointer(paths.status_replicas).and_then(Value::as_i64).unwrap_or(0) });
    if !selector.is_empty() {
        status["selector"] = json!(selector);
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name").cloned().unwrap_or(Value::Null),
            "namespace": meta.get("namespace").cloned().unwrap_or(Value::Null),
            "uid": meta.get("uid").cloned().unwrap_or(Value::Null),
            "resourceVersion": meta.get("resourceVersion").cloned().unwrap_or(Value::Null),
            "creationTimestamp": meta.get("creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "spec": { "replicas": obj.pointer(paths.spec_replicas).and_then(Value::as_i64).unwrap_or(0) },
        "status": status,
    }))
}

async fn update_scale(
    state: &Arc<ApiState>,
    w: &crate::admission::WriteRequest<'_>,
    name: &str,
    mut scale: Value,
    opts: &WriteOptions,
) -> Result<Response<Body>> {
    let (store, ns) = (w.store, w.namespace);
    let paths = store
        .info
        .strategy
        .scale_paths()
        .ok_or(Error::NotFoundPath)?;
    // Admission sees the Scale, as upstream's: webhooks on `<resource>/scale` get an
    // autoscaling/v1 Scale and the one it replaces.
    let current = store.get_value(ns, name).await?;
    let old_scale = scale_of(store, &current)?;
    if let Some(m) = scale.get_mut("metadata").and_then(Value::as_object_mut) {
        m.entry("name").or_insert_with(|| json!(name));
        if !ns.is_empty() {
            m.entry("namespace").or_insert_with(|| json!(ns));
        }
    }
    w.admit_as_is(state, Some(&old_scale), &mut scale).await?;
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| Error::BadRequest("spec.replicas must be an integer".into()))?,
    };
    if replicas < 0 {
        return Err(Error::Invalid {
            kind: "Scale.autoscaling".into(),
            name: name.to_string(),
            errors: vec![crate::validation::FieldError::invalid_raw(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            )],
        });
    }
    let rv = scale
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let spec_ptr = paths.spec_replicas;
    let opts = WriteOptions {
        field_subresource: Some("scale"),
        ..opts.clone()
    };
    let b = store
        .guaranteed_update(ns, name, None, &opts, |old| {
            let mut new = old.clone();
            set_pointer(&mut new, spec_ptr, json!(replicas));
            if rv.is_empty() {
                object::meta_mut(&mut new).remove("resourceVersion");
            } else {
                object::meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
            }
            Ok(new)
        })
        .await?;
    let obj: Value = serde_json::from_slice(&b).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(json_response(
        StatusCode::OK,
        scale_of(store, &obj)?.to_string(),
    ))
}

fn set_pointer(doc: &mut Value, ptr: &str, v: Value) {
    let mut cur = doc;
    let toks: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    let Some((last, parents)) = toks.split_last() else {
        return;
    };
    for t in parents {
        if !cur.is_object() {
            *cur = json!({});
        }
        cur = match cur {
            Value::Object(m) => m.entry(t.to_string()).or_insert_with(|| json!({})),
            _ => return,
        };
    }
    if let Value::Object(m) = cur {
        m.insert(last.to_string(), v);
    }
}

/// The OpenAPI v3 documents of the custom resources served now (built from the CRD cache on
/// each request: `kubectl explain` asks once per command).
fn custom_openapi(state: &ApiState) -> std::collections::BTreeMap<String, (String, String)> {
    openapi::custom_docs(&stored_crds(state))
}

/// The CRDs in the store's cache.
fn stored_crds(state: &ApiState) -> Vec<Value> {
    let Some(store) = state
        .registry
        .store(crate::crd::GROUP, "v1", crate::crd::PLURAL)
    else {
        return Vec::new();
    };
    let (objects, _, _) = store
        .cache
        .list(&crate::watch_cache::Filter::default(), "", 0);
    objects
        .iter()
        .filter_map(|o| serde_json::from_slice(&o.bytes).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn accept_falls_back_to_json_whenever_json_or_a_wildcard_is_named() {
        for ok in [
            None,
            Some("application/vnd.kubernetes.protobuf, */*"),
            Some("application/vnd.kubernetes.protobuf,application/json"),
            Some("application/vnd.kubernetes.protobuf;q=1, application/json;q=0.9"),
            Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json"),
            Some("application/*"),
            Some("application/yaml"),
        ] {
            assert!(check_accept(ok).is_ok(), "{ok:?}");
        }
        for bad in ["application/vnd.kubernetes.protobuf", "text/html"] {
            assert!(
                matches!(check_accept(Some(bad)), Err(Error::NotAcceptable(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bodies_decode_by_content_type() {
        let cm = Expected {
            group: "",
            version: "v1",
            kind: "ConfigMap",
        };
        let json = decode_object("application/json", br#"{"kind":"ConfigMap"}"#, cm).unwrap();
        assert_eq!(json["kind"], "ConfigMap");
        let mut pb = crate::protobuf::MAGIC.to_vec();
        // runtime.Unknown{typeMeta{apiVersion "v1", kind "ConfigMap"}, raw: empty ConfigMap}
        pb.extend([0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09]);
        pb.extend(b"ConfigMap");
        pb.extend([0x12, 0x00]);
        let v = decode_object(crate::protobuf::MEDIA_TYPE, &pb, cm).unwrap();
        assert_eq!(v, json!({"apiVersion": "v1", "kind": "ConfigMap"}));
        assert!(matches!(
            decode_object(crate::protobuf::MEDIA_TYPE, b"{}", cm),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            decode_object("application/cbor", b"", cm),
            Err(Error::UnsupportedMediaType(m)) if m.ends_with("application/vnd.kubernetes.protobuf")
        ));
    }
}
