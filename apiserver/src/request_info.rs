//! RequestInfo: what a URL asks for (verb, group, version, namespace, resource, subresource,
//! name), as upstream `k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`. Also the typed
//! list/watch/write query parameters and list continue tokens.

use std::collections::BTreeMap;

use base64::Engine;
use http::Method;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use crate::selector::FieldSelector;
use crate::validation::{is_path_segment_name, FieldError, FieldErrors};

/// What a request asks for. Non-resource requests (`/healthz`, `/api`, `/apis/apps/v1`)
/// carry only `path` and the lowercase HTTP method as `verb`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub is_resource_request: bool,
    /// The percent-decoded path.
    pub path: String,
    /// `get list watch create update patch delete deletecollection` (or `proxy`) for resource
    /// requests; the lowercase HTTP method otherwise.
    pub verb: String,
    /// `api` or `apis`.
    pub api_prefix: String,
    /// Empty for the core group.
    pub api_group: String,
    pub api_version: String,
    /// Empty for cluster-scoped requests and lists across all namespaces. For the namespace
    /// object itself (`/api/v1/namespaces/<name>`) it is `<name>`, as upstream.
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    /// From the path only. See [`list_name_from_field_selector`] for the upstream
    /// authorization name of a list/watch.
    pub name: String,
    /// The decoded segments from the resource on (`["pods", "x", "log"]`), or from
    /// `namespaces` for the namespace object and its subresources.
    pub parts: Vec<String>,
}

/// Namespace subresources: `/api/v1/namespaces/<name>/<sub>` addresses the namespace itself.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// Splits a path like upstream `splitPath`: trims outer slashes, keeps inner empty segments.
fn split_path(path: &str) -> Vec<String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Vec::new();
    }
    trimmed
        .split('/')
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect()
}

/// Upstream boolean query conversion: absent, `0` and `false` (any case) are false; anything
/// else, even an empty value, is true.
fn go_query_bool(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

/// Query pairs, decoded, skipping empty pairs (`?&watch=true`). A leading `?` is tolerated.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    let q = query.strip_prefix('?').unwrap_or(query);
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Parses a request into its [`RequestInfo`]. `path` is the raw (percent-encoded) URL path and
/// `query` the raw query string, with or without its leading `?`.
pub fn parse(method: &Method, path: &str, query: &str) -> RequestInfo {
    let mut info = RequestInfo {
        is_resource_request: false,
        path: percent_decode_str(path).decode_utf8_lossy().into_owned(),
        verb: method.as_str().to_ascii_lowercase(),
        ..RequestInfo::default()
    };
    let parts = split_path(path);
    if parts.len() < 3 {
        return info;
    }
    let mut cur: &[String] = &parts;
    let prefix = cur[0].as_str();
    if prefix != "api" && prefix != "apis" {
        return info;
    }
    info.api_prefix = prefix.to_string();
    cur = &cur[1..];
    if info.api_prefix == "apis" {
        if cur.len() < 3 {
            return info;
        }
        info.api_group = cur[0].clone();
        cur = &cur[1..];
    }
    info.is_resource_request = true;
    info.api_version = cur[0].clone();
    cur = &cur[1..];

    // Legacy `/watch/...` and `/proxy/...` forms carry the verb in the path.
    let special = cur[0].as_str();
    if special == "watch" || special == "proxy" {
        info.verb = special.to_string();
        if cur.len() < 2 {
            // Upstream fails with "unable to determine kind and namespace"; no resource = 404.
            return info;
        }
        cur = &cur[1..];
    } else {
        info.verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
    }

    if cur[0] == "namespaces" {
        if let Some(ns) = cur.get(1) {
            info.namespace = ns.clone();
            if cur.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&cur[2].as_str()) {
                cur = &cur[2..];
            }
        }
    }
    info.parts = cur.to_vec();

    if info.parts.len() >= 3 && info.verb != "proxy" {
        info.subresource = info.parts[2].clone();
    }
    if info.parts.len() >= 2 {
        info.name = info.parts[1].clone();
    }
    if let Some(r) = info.parts.first() {
        info.resource = r.clone();
    }

    if info.name.is_empty() && info.verb == "get" {
        let watch = query_pairs(query)
            .into_iter()
            .find(|(k, _)| k == "watch")
            .is_some_and(|(_, v)| go_query_bool(&v));
        info.verb = if watch { "watch" } else { "list" }.to_string();
    }
    if info.name.is_empty() && info.verb == "delete" {
        info.verb = "deletecollection".to_string();
    }
    info
}

/// For a list or watch, the object name upstream puts in `RequestInfo.Name` for authorization
/// (RBAC `resourceNames`) when the query selects exactly one `metadata.name`. Kept apart from
/// [`RequestInfo::name`] so that handlers can route on the path alone.
pub fn list_name_from_field_selector(query: &str) -> Option<String> {
    let fs = query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == "fieldSelector")?
        .1;
    let sel = FieldSelector::parse(&fs).ok()?;
    let name = sel.requires_exact_match("metadata.name")?;
    is_path_segment_name(name, false)
        .is_empty()
        .then(|| name.to_string())
}

// ---------------------------------------------------------------------------------------------
// Query parameters

/// The list/watch/write/delete query parameters, typed. Empty string values read as unset.
/// Only the first value of a repeated parameter counts (as upstream), except `dryRun`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// `None` when absent, zero or negative (upstream: no limit).
    pub limit: Option<u64>,
    /// `continue`.
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub allow_watch_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
    pub send_initial_events: Option<bool>,
    /// Every `dryRun` value; upstream accepts only `All`.
    pub dry_run: Vec<String>,
    pub field_manager: Option<String>,
    pub field_validation: Option<String>,
    pub propagation_policy: Option<String>,
    /// Negative values are passed through; upstream deletes treat them as 1.
    pub grace_period_seconds: Option<i64>,
    pub orphan_dependents: Option<bool>,
    /// `force` (server-side apply).
    pub force: Option<bool>,
    pub pretty: bool,
    /// Every other parameter (first value), e.g. `container`, `follow`, `includeObject`.
    pub raw: BTreeMap<String, String>,
}

/// Upstream `strconv.ParseInt` error wording.
fn parse_int(v: &str) -> Result<i64, String> {
    v.parse::<i64>().map_err(|e| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        format!("strconv.ParseInt: parsing {v:?}: {why}")
    })
}

/// Go `strconv.ParseBool` (used for `pretty`).
fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parses the query string (with or without `?`; empty pairs are skipped). Values that do not
/// decode (`limit=abc`, `timeoutSeconds=-1`) give an upstream-like message for a 400.
pub fn parse_query(query: &str) -> Result<Query, String> {
    let mut q = Query::default();
    let mut seen: Vec<String> = Vec::new();
    for (k, v) in query_pairs(query) {
        if k == "dryRun" {
            q.dry_run.push(v);
            continue;
        }
        if seen.contains(&k) {
            continue;
        }
        seen.push(k.clone());
        let text = || (!v.is_empty()).then(|| v.clone());
        match k.as_str() {
            "labelSelector" => q.label_selector = text(),
            "fieldSelector" => q.field_selector = text(),
            "limit" => q.limit = u64::try_from(parse_int(&v)?).ok().filter(|&l| l > 0),
            "continue" => q.continue_token = text(),
            "resourceVersion" => q.resource_version = text(),
            "resourceVersionMatch" => q.resource_version_match = text(),
            "watch" => q.watch = go_query_bool(&v),
            "allowWatchBookmarks" => q.allow_watch_bookmarks = go_query_bool(&v),
            "timeoutSeconds" => {
                let t = parse_int(&v)?;
                q.timeout_seconds = Some(u64::try_from(t).map_err(|_| {
                    FieldError::invalid_raw("timeoutSeconds", t, crate::validation::IS_NEGATIVE)
                        .to_string()
                })?);
            }
            "sendInitialEvents" => q.send_initial_events = Some(go_query_bool(&v)),
            "fieldManager" => q.field_manager = text(),
            "fieldValidation" => q.field_validation = text(),
            "propagationPolicy" => q.propagation_policy = text(),
            "gracePeriodSeconds" => q.grace_period_seconds = Some(parse_int(&v)?),
            "orphanDependents" => q.orphan_dependents = Some(go_query_bool(&v)),
            "force" => q.force = Some(go_query_bool(&v)),
            "pretty" => q.pretty = go_parse_bool(&v).unwrap_or(false),
            _ => {
                q.raw.insert(k, v);
            }
        }
    }
    Ok(q)
}

impl Query {
    /// True when the request is a dry run (`dryRun=All`).
    pub fn is_dry_run(&self) -> bool {
        !self.dry_run.is_empty()
    }

    /// Upstream `ValidateListOptions` (a 422 on `ListOptions.meta.k8s.io`). `watch_list`
    /// says whether `sendInitialEvents` is served for watches.
    pub fn validate_list_options(&self, watch_list: bool) -> FieldErrors {
        let mut errs = Vec::new();
        let rvm = self.resource_version_match.as_deref().unwrap_or("");
        if self.watch {
            if self.send_initial_events.is_some() {
                if rvm != "NotOlderThan" {
                    errs.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    ));
                }
                if !watch_list {
                    errs.push(FieldError::forbidden(
                        "sendInitialEvents",
                        "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                    ));
                }
            }
            if !rvm.is_empty() {
                if self.send_initial_events.is_none() {
                    errs.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                    ));
                }
                if rvm != "NotOlderThan" {
                    errs.push(FieldError::not_supported(
                        "resourceVersionMatch",
                        rvm,
                        &["NotOlderThan"],
                    ));
                }
                if self.continue_token.is_some() {
                    errs.push(FieldError::forbidden(
                        "resourceVersionMatch",
                        "resourceVersionMatch is forbidden when continue is provided",
                    ));
                }
            }
            return errs;
        }
        if !rvm.is_empty() {
            if self.resource_version.is_none() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if self.continue_token.is_some() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if rvm != "Exact" && rvm != "NotOlderThan" {
                errs.push(FieldError::not_supported(
                    "resourceVersionMatch",
                    rvm,
                    &["Exact", "NotOlderThan", ""],
                ));
            }
            if rvm == "Exact" && self.resource_version.as_deref() == Some("0") {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if self.send_initial_events.is_some() {
            errs.push(FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
        errs
    }

    /// Upstream `ValidateDryRun` + `fieldValidation` check for create/update/patch options
    /// (a 422 on `CreateOptions.meta.k8s.io` etc.).
    pub fn validate_write_options(&self) -> FieldErrors {
        let mut errs = self.validate_dry_run();
        if let Some(fv) = self.field_validation.as_deref() {
            if !matches!(fv, "Ignore" | "Warn" | "Strict") {
                errs.push(FieldError::not_supported(
                    "fieldValidation",
                    fv,
                    &["Ignore", "Strict", "Warn"],
                ));
            }
        }
        errs
    }

    /// Upstream `ValidateDeleteOptions` (a 422 on `DeleteOptions.meta.k8s.io`).
    pub fn validate_delete_options(&self) -> FieldErrors {
        let mut errs = Vec::new();
        if let Some(p) = self.propagation_policy.as_deref() {
            if self.orphan_dependents.is_some() {
                errs.push(FieldError::invalid(
                    "propagationPolicy",
                    p,
                    "orphanDependents and deletionPropagation cannot be both set",
                ));
            }
            if !matches!(p, "Foreground" | "Background" | "Orphan") {
                errs.push(FieldError::not_supported(
                    "propagationPolicy",
                    p,
                    &["Foreground", "Background", "Orphan", "nil"],
                ));
            }
        }
        errs.extend(self.validate_dry_run());
        errs
    }

    fn validate_dry_run(&self) -> FieldErrors {
        if self.dry_run.iter().all(|d| d == "All") {
            return Vec::new();
        }
        let shown: Vec<String> = self.dry_run.iter().map(|d| format!("{d:?}")).collect();
        let mut e = FieldError::not_supported("dryRun", "", &["All"]);
        e.value = Some(format!("[]string{{{}}}", shown.join(", ")));
        vec![e]
    }
}

// ---------------------------------------------------------------------------------------------
// Continue tokens

#[derive(Serialize, Deserialize, Default)]
struct ContinueToken {
    #[serde(default)]
    v: String,
    #[serde(default)]
    rv: i64,
    #[serde(default)]
    start: String,
}

const CONTINUE_VERSION: &str = "meta.k8s.io/v1";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
}

/// Encodes a list continue token like upstream: unpadded base64url of
/// `{"v":"meta.k8s.io/v1","rv":N,"start":"<key>"}`. `start_after_key` is stored verbatim and
/// [`decode_continue`] gives it back unchanged, relative (`ns/name`, as upstream) or absolute
/// (`/registry/pods/ns/name`); whether it is inclusive is the store's business (upstream stores
/// the last returned key plus `"\0"`). A decoded key comes from the client: the store must
/// still keep its range under the resource's prefix.
pub fn encode_continue(resource_version: i64, start_after_key: &str) -> String {
    let tok = ContinueToken {
        v: CONTINUE_VERSION.to_string(),
        rv: resource_version,
        start: start_after_key.to_string(),
    };
    // Serializing a struct of strings and an integer cannot fail.
    let json = serde_json::to_vec(&tok).unwrap_or_default();
    b64().encode(json)
}

/// Go `path.Clean` for a rooted path.
fn clean_rooted(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Decodes a continue token into `(resource_version, start_key)`. Errors read
/// `continue key is not valid: ...` as upstream; upstream answers them as a 400 with the
/// message `invalid continue token: <error>`.
pub fn decode_continue(tok: &str) -> Result<(i64, String), String> {
    let data = b64()
        .decode(tok)
        .map_err(|e| format!("continue key is not valid: {e}"))?;
    let c: ContinueToken =
        serde_json::from_slice(&data).map_err(|e| format!("continue key is not valid: {e}"))?;
    if c.v != CONTINUE_VERSION {
        return Err(format!(
            "continue key is not valid: server does not recognize this encoded version {:?}",
            c.v
        ));
    }
    if c.rv <= 0 {
        return Err(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)".to_string()
        );
    }
    if c.start.is_empty() {
        return Err(
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)"
                .to_string(),
        );
    }
    // Path traversal defence, as upstream: the key must already be clean.
    let key = if c.start.starts_with('/') {
        c.start.clone()
    } else {
        format!("/{}", c.start)
    };
    let cleaned = clean_rooted(&key);
    if cleaned != key {
        return Err(format!("continue key is not valid: {}", c.start));
    }
    let start = if c.start.starts_with('/') {
        cleaned
    } else {
        cleaned[1..].to_string()
    };
    Ok((c.rv, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One expected RequestInfo, compactly: `verb prefix group version namespace resource
    /// subresource name parts` separated by `|`, parts by `,`; `-` = not a resource request.
    #[rustfmt::skip]
    #[test]
    fn request_info_table() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("GET", "/api/v1/namespaces", "", "list|api||v1||namespaces|||namespaces"),
            ("GET", "/api/v1/namespaces/other", "", "get|api||v1|other|namespaces||other|namespaces,other"),
            ("GET", "/api/v1/namespaces/other/pods", "", "list|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/namespaces/other/pods/foo", "", "get|api||v1|other|pods||foo|pods,foo"),
            ("HEAD", "/api/v1/namespaces/other/pods/foo", "", "get|api||v1|other|pods||foo|pods,foo"),
            ("GET", "/api/v1/pods", "", "list|api||v1||pods|||pods"),
            ("GET", "/api/v1/namespaces/other/pods/foo/log", "follow=true", "get|api||v1|other|pods|log|foo|pods,foo,log"),
            ("GET", "/api/v1/namespaces/other/pods", "watch=true", "watch|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/namespaces/other/pods", "?&watch=1&", "watch|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/namespaces/other/pods", "watch=false", "list|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/namespaces/other/pods", "watch=0", "list|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/namespaces/other/pods", "watch=", "watch|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/namespaces/other/pods", "limit=abc&watch=true", "watch|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/namespaces/other/pods", "fieldSelector=metadata.name%3Dfoo", "list|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/watch/namespaces/other/pods", "", "watch|api||v1|other|pods|||pods"),
            ("GET", "/api/v1/watch/namespaces/other/pods/foo", "", "watch|api||v1|other|pods||foo|pods,foo"),
            ("GET", "/api/v1/watch/pods", "", "watch|api||v1||pods|||pods"),
            ("GET", "/api/v1/proxy/namespaces/ns/pods/p/x/y", "", "proxy|api||v1|ns|pods||p|pods,p,x,y"),
            ("POST", "/api/v1/namespaces/other/pods", "", "create|api||v1|other|pods|||pods"),
            ("POST", "/api/v1/namespaces", "", "create|api||v1||namespaces|||namespaces"),
            ("PUT", "/api/v1/namespaces/other/pods/foo", "", "update|api||v1|other|pods||foo|pods,foo"),
            ("PATCH", "/api/v1/namespaces/other/pods/foo", "", "patch|api||v1|other|pods||foo|pods,foo"),
            ("DELETE", "/api/v1/namespaces/other/pods/foo", "", "delete|api||v1|other|pods||foo|pods,foo"),
            ("DELETE", "/api/v1/namespaces/other/pods", "", "deletecollection|api||v1|other|pods|||pods"),
            ("DELETE", "/api/v1/namespaces/other", "", "delete|api||v1|other|namespaces||other|namespaces,other"),
            ("PUT", "/api/v1/namespaces/other/status", "", "update|api||v1|other|namespaces|status|other|namespaces,other,status"),
            ("PUT", "/api/v1/namespaces/other/finalize", "", "update|api||v1|other|namespaces|finalize|other|namespaces,other,finalize"),
            ("PUT", "/apis/apps/v1/namespaces/ns/deployments/web/scale", "", "update|apis|apps|v1|ns|deployments|scale|web|deployments,web,scale"),
            ("GET", "/apis/apps/v1/deployments", "", "list|apis|apps|v1||deployments|||deployments"),
            ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin", "", "get|apis|rbac.authorization.k8s.io|v1||clusterroles||admin|clusterroles,admin"),
            ("GET", "/apis/apps/v1/watch/namespaces/ns/deployments", "", "watch|apis|apps|v1|ns|deployments|||deployments"),
            ("GET", "/api/v1/nodes/n%3A1/proxy", "", "get|api||v1||nodes|proxy|n:1|nodes,n:1,proxy"),
            ("GET", "/api/v1/namespaces/my%20ns/configmaps/a%2Fb", "", "get|api||v1|my ns|configmaps||a/b|configmaps,a/b"),
            ("GET", "/api/v1/namespaces/ns/pods/", "", "list|api||v1|ns|pods|||pods"),
            ("OPTIONS", "/api/v1/pods", "", "|api||v1||pods|||pods"),
            // Legacy watch with nothing after it: a resource request without a resource (404).
            ("GET", "/api/v1/watch", "", "watch|api||v1|||||"),
            // Non-resource requests: the lowercase method as verb; the prefix is kept once seen, as upstream.
            ("GET", "/healthz", "", "-get"),
            ("GET", "/version", "", "-get"),
            ("GET", "/", "", "-get"),
            ("GET", "/api", "", "-get"),
            ("GET", "/api/v1", "", "-get"),
            ("GET", "/apis", "", "-get"),
            ("GET", "/apis/apps", "", "-get"),
            ("GET", "/apis/apps/v1", "", "-get|apis"),
            ("POST", "/openapi/v3/apis/apps/v1", "", "-post"),
            ("GET", "/openapi/v2", "", "-get"),
            ("GET", "/readyz/etcd", "", "-get"),
        ];
        for &(method, path, query, want) in cases {
            let m = Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET);
            let ri = parse(&m, path, query);
            let (is_res, want) = match want.strip_prefix('-') {
                Some(w) => (false, w),
                None => (true, want),
            };
            let f: Vec<&str> = want.split('|').chain(std::iter::repeat("")).take(9).collect();
            let want = RequestInfo {
                is_resource_request: is_res,
                path: percent_decode_str(path).decode_utf8_lossy().into_owned(),
                verb: f[0].into(),
                api_prefix: f[1].into(),
                api_group: f[2].into(),
                api_version: f[3].into(),
                namespace: f[4].into(),
                resource: f[5].into(),
                subresource: f[6].into(),
                name: f[7].into(),
                parts: f[8].split(',').filter(|p| !p.is_empty()).map(str::to_string).collect(),
            };
            assert_eq!(ri, want, "{method} {path}?{query}");
        }
    }

    #[test]
    fn list_name_from_selector() {
        let cases = [
            ("fieldSelector=metadata.name%3Dfoo", Some("foo")),
            ("fieldSelector=metadata.name==foo,spec.x=y", Some("foo")),
            ("fieldSelector=metadata.name!=foo", None),
            ("fieldSelector=metadata.name=a%25b", None),
            ("fieldSelector=bad", None),
            ("", None),
        ];
        for (q, want) in cases {
            assert_eq!(list_name_from_field_selector(q).as_deref(), want, "{q}");
        }
    }

    #[test]
    fn query_ok() {
        let q = parse_query(
            "?&labelSelector=app%3Dweb&fieldSelector=spec.nodeName%3Dn1&limit=500&continue=abc&resourceVersion=0\
             &resourceVersionMatch=NotOlderThan&watch=true&allowWatchBookmarks=true&timeoutSeconds=290\
             &sendInitialEvents=false&dryRun=All&fieldManager=kubectl-client-side-apply&fieldValidation=Strict\
             &propagationPolicy=Background&gracePeriodSeconds=0&orphanDependents=false&force=true&pretty=1\
             &container=c1&follow=true&limit=7",
        );
        let want = Query {
            label_selector: Some("app=web".into()),
            field_selector: Some("spec.nodeName=n1".into()),
            limit: Some(500),
            continue_token: Some("abc".into()),
            resource_version: Some("0".into()),
            resource_version_match: Some("NotOlderThan".into()),
            watch: true,
            allow_watch_bookmarks: true,
            timeout_seconds: Some(290),
            send_initial_events: Some(false),
            dry_run: vec!["All".into()],
            field_manager: Some("kubectl-client-side-apply".into()),
            field_validation: Some("Strict".into()),
            propagation_policy: Some("Background".into()),
            grace_period_seconds: Some(0),
            orphan_dependents: Some(false),
            force: Some(true),
            pretty: true,
            raw: [("container", "c1"), ("follow", "true")]
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        };
        assert_eq!(q, Ok(want));
    }

    #[test]
    fn query_table() {
        type Check = fn(&Query) -> bool;
        // (query, check)
        let cases: &[(&str, Check)] = &[
            ("", |q| *q == Query::default()),
            ("&&", |q| *q == Query::default()),
            ("limit=0", |q| q.limit.is_none()),
            ("limit=-5", |q| q.limit.is_none()),
            ("labelSelector=", |q| q.label_selector.is_none()),
            ("resourceVersion=", |q| q.resource_version.is_none()),
            ("watch=false&allowWatchBookmarks=0", |q| {
                !q.watch && !q.allow_watch_bookmarks
            }),
            ("watch=FALSE", |q| !q.watch),
            ("watch=yes", |q| q.watch),
            ("dryRun=All&dryRun=All", |q| {
                q.dry_run.len() == 2 && q.is_dry_run()
            }),
            ("gracePeriodSeconds=-1", |q| {
                q.grace_period_seconds == Some(-1)
            }),
            ("labelSelector=a+in+(x)", |q| {
                q.label_selector.as_deref() == Some("a in (x)")
            }),
            ("pretty=maybe", |q| !q.pretty),
            ("x=1&x=2", |q| {
                q.raw.get("x").map(String::as_str) == Some("1")
            }),
        ];
        for (input, check) in cases {
            match parse_query(input) {
                Ok(q) => assert!(check(&q), "{input}: {q:?}"),
                Err(e) => panic!("{input}: {e}"),
            }
        }
    }

    #[test]
    fn query_errors() {
        let cases = [
            (
                "limit=abc",
                "strconv.ParseInt: parsing \"abc\": invalid syntax",
            ),
            ("limit=", "strconv.ParseInt: parsing \"\": invalid syntax"),
            (
                "limit=99999999999999999999",
                "strconv.ParseInt: parsing \"99999999999999999999\": value out of range",
            ),
            (
                "timeoutSeconds=-1",
                "timeoutSeconds: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                "timeoutSeconds=1.5",
                "strconv.ParseInt: parsing \"1.5\": invalid syntax",
            ),
            (
                "gracePeriodSeconds=x",
                "strconv.ParseInt: parsing \"x\": invalid syntax",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse_query(input).err().as_deref(), Some(want), "{input}");
        }
    }

    fn messages(errs: FieldErrors) -> Vec<String> {
        errs.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn list_options_validation() {
        let cases: &[(&str, bool, &[&str])] = &[
            ("resourceVersion=0", false, &[]),
            ("resourceVersion=5&resourceVersionMatch=Exact", false, &[]),
            ("resourceVersionMatch=Exact", false, &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"]),
            ("resourceVersion=0&resourceVersionMatch=Exact", false, &["resourceVersionMatch: Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""]),
            ("resourceVersion=1&resourceVersionMatch=Foo", false, &["resourceVersionMatch: Unsupported value: \"Foo\": supported values: \"Exact\", \"NotOlderThan\", \"\""]),
            ("sendInitialEvents=true", false, &["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for list"]),
            ("watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", true, &[]),
            ("watch=1&sendInitialEvents=true", true, &["resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"]),
            ("watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan", false, &["sendInitialEvents: Forbidden: sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled"]),
            ("watch=1&resourceVersionMatch=NotOlderThan", true, &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"]),
        ];
        for (input, watch_list, want) in cases {
            let q = parse_query(input).unwrap_or_default();
            assert_eq!(
                messages(q.validate_list_options(*watch_list)),
                *want,
                "{input}"
            );
        }
    }

    #[test]
    fn write_and_delete_options_validation() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("dryRun=All&fieldValidation=Strict&propagationPolicy=Foreground", &[], &[]),
            ("dryRun=Foo", &["dryRun: Unsupported value: []string{\"Foo\"}: supported values: \"All\""], &["dryRun: Unsupported value: []string{\"Foo\"}: supported values: \"All\""]),
            ("fieldValidation=Loud", &["fieldValidation: Unsupported value: \"Loud\": supported values: \"Ignore\", \"Strict\", \"Warn\""], &[]),
            ("propagationPolicy=Now", &[], &["propagationPolicy: Unsupported value: \"Now\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""]),
            ("propagationPolicy=Orphan&orphanDependents=true", &[], &["propagationPolicy: Invalid value: \"Orphan\": orphanDependents and deletionPropagation cannot be both set"]),
        ];
        for (input, write, delete) in cases {
            let q = parse_query(input).unwrap_or_default();
            assert_eq!(messages(q.validate_write_options()), *write, "{input}");
            assert_eq!(messages(q.validate_delete_options()), *delete, "{input}");
        }
    }

    #[test]
    fn continue_round_trip() {
        for (rv, key) in [
            (1, "default/pod-1\u{0}"),
            (42, "a"),
            (i64::MAX, "ns/name with spaces\u{0}"),
            (7, "/registry/pods/default/web-1"),
        ] {
            let tok = encode_continue(rv, key);
            assert!(
                !tok.contains('=') && !tok.contains('+') && !tok.contains('/'),
                "{tok}"
            );
            assert_eq!(decode_continue(&tok), Ok((rv, key.to_string())));
        }
        // Upstream's own encoding of {"v":"meta.k8s.io/v1","rv":10,"start":"default/x\u0000"}.
        let json = br#"{"v":"meta.k8s.io/v1","rv":10,"start":"default/x\u0000"}"#;
        let tok = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        assert_eq!(
            decode_continue(&tok),
            Ok((10, "default/x\u{0}".to_string()))
        );
    }

    #[test]
    fn continue_errors() {
        let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let cases = [
            (enc(r#"{"v":"meta.k8s.io/v2","rv":1,"start":"a"}"#), "continue key is not valid: server does not recognize this encoded version \"meta.k8s.io/v2\""),
            (enc(r#"{"v":"meta.k8s.io/v1","rv":0,"start":"a"}"#), "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)"),
            (enc(r#"{"v":"meta.k8s.io/v1","rv":1,"start":""}"#), "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)"),
            (enc(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"../secrets/x"}"#), "continue key is not valid: ../secrets/x"),
            (enc(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"a//b"}"#), "continue key is not valid: a//b"),
            (enc(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"a/"}"#), "continue key is not valid: a/"),
            (
                enc(r#"{"v":"meta.k8s.io/v1","rv":1,"start":"/registry/pods/../secrets/x"}"#),
                "continue key is not valid: /registry/pods/../secrets/x",
            ),
        ];
        for (tok, want) in cases {
            assert_eq!(decode_continue(&tok).err().as_deref(), Some(want), "{tok}");
        }
        for bad in ["!!!", "bm90IGpzb24", ""] {
            let e = decode_continue(bad).err().unwrap_or_default();
            assert!(e.starts_with("continue key is not valid: "), "{bad}: {e}");
        }
    }
}
