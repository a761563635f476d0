//! Resources only the API server serves, computed per request and never stored:
//! authentication.k8s.io/v1 TokenReview and SelfSubjectReview, authorization.k8s.io/v1
//! SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview and
//! SelfSubjectRulesReview, and the `serviceaccounts/<name>/token` TokenRequest.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::rbac::Attributes;
use super::{Filtered, User};
use crate::error::{Error, Result};
use crate::handlers::{self, ApiState};
use crate::object::strings;
use crate::request_info::RequestInfo;

const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";

/// Whether `(group, resource, subresource)` is one of the resources served here.
pub fn is_review(info: &RequestInfo) -> bool {
    matches!(
        (
            info.api_group.as_str(),
            info.resource.as_str(),
            info.subresource.as_str()
        ),
        (AUTHN, "tokenreviews" | "selfsubjectreviews", "")
            | (
                AUTHZ,
                "selfsubjectaccessreviews"
                    | "subjectaccessreviews"
                    | "localsubjectaccessreviews"
                    | "selfsubjectrulesreviews",
                ""
            )
            | ("", "serviceaccounts", "token")
    ) && info.api_version == "v1"
}

fn created(v: Value) -> Response<handlers::Body> {
    let mut r = Response::new(handlers::full(v.to_string()));
    *r.status_mut() = StatusCode::CREATED;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

/// The Attributes of a SubjectAccessReviewSpec.
fn spec_attributes(spec: &Value) -> Result<Attributes> {
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes {
            verb: str_of(r, "verb").into(),
            resource_request: true,
            namespace: str_of(r, "namespace").into(),
            api_group: str_of(r, "group").into(),
            api_version: str_of(r, "version").into(),
            resource: str_of(r, "resource").into(),
            subresource: str_of(r, "subresource").into(),
            name: str_of(r, "name").into(),
            field_selector: r
                .pointer("/fieldSelector/rawSelector")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            ..Default::default()
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|r| r.is_object()) {
        return Ok(Attributes {
            verb: str_of(n, "verb").into(),
            path: str_of(n, "path").into(),
            ..Default::default()
        });
    }
    Err(Error::Invalid {
        kind: "SelfSubjectAccessReview.authorization.k8s.io".into(),
        name: String::new(),
        errors: vec![crate::validation::FieldError::required(
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )],
    })
}

fn review_status(state: &ApiState, user: &User, a: &Attributes) -> Value {
    match state.security.authorize(user, a) {
        Ok(reason) => {
            let mut s = json!({"allowed": true});
            if !reason.is_empty() {
                s["reason"] = json!(reason);
            }
            s
        }
        Err(_) => json!({"allowed": false}),
    }
}

fn answer(mut body: Value, kind: &str, status: Value) -> Value {
    body["kind"] = json!(kind);
    if body.get("metadata").is_none_or(|m| !m.is_object()) {
        body["metadata"] = json!({});
    }
    body["metadata"]["creationTimestamp"] = Value::Null;
    body["status"] = status;
    body
}

/// Serves a review or TokenRequest, or passes the request on.
pub async fn serve(
    state: &Arc<ApiState>,
    user: &User,
    info: &RequestInfo,
    req: Request<Incoming>,
) -> Result<Filtered> {
    if !is_review(info) {
        return Ok(Filtered::Pass(req));
    }
    if info.verb != "create" {
        return Err(Error::MethodNotSupported);
    }
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (group, kind) = match info.resource.as_str() {
        "serviceaccounts" => (AUTHN, "TokenRequest"),
        "selfsubjectreviews" => (AUTHN, "SelfSubjectReview"),
        "tokenreviews" => (AUTHN, "TokenReview"),
        "selfsubjectaccessreviews" => (AUTHZ, "SelfSubjectAccessReview"),
        "subjectaccessreviews" => (AUTHZ, "SubjectAccessReview"),
        "localsubjectaccessreviews" => (AUTHZ, "LocalSubjectAccessReview"),
        _ => (AUTHZ, "SelfSubjectRulesReview"),
    };
    let raw = handlers::read_body(req).await?;
    let body = handlers::decode_object(
        &ct,
        &raw,
        handlers::Expected {
            group,
            version: "v1",
            kind,
        },
    )?;
    let spec = body.get("spec").cloned().unwrap_or(json!({}));
    let sec = &state.security;
    let out = match info.resource.as_str() {
        "serviceaccounts" => {
            let sa = sec.service_accounts.as_ref().ok_or(Error::NotFoundPath)?;
            if sec.admission_enabled("NodeRestriction") {
                crate::admission::node_restriction::admit_token_request(
                    state,
                    user,
                    &info.namespace,
                    &info.name,
                    &body,
                )
                .await?;
            }
            sa.token_request(&info.namespace, &info.name, body).await?
        }
        "selfsubjectreviews" => answer(
            body,
            "SelfSubjectReview",
            json!({"userInfo": user.to_json()}),
        ),
        "tokenreviews" => {
            let token = str_of(&spec, "token");
            let audiences = strings(spec.get("audiences"));
            let found = if token.is_empty() {
                None
            } else {
                sec.authenticate_token(token, &audiences).await?
            };
            let status = match found {
                Some(u) => {
                    let auds = if audiences.is_empty() {
                        sec.service_accounts
                            .as_ref()
                            .map(|s| s.api_audiences.clone())
                            .unwrap_or_default()
                    } else {
                        audiences
                    };
                    json!({"authenticated": true, "user": u.to_json(), "audiences": auds})
                }
                None => {
                    json!({"authenticated": false, "user": {}, "error": "[invalid bearer token, token lookup failed]"})
                }
            };
            answer(body, "TokenReview", status)
        }
        "selfsubjectaccessreviews" => {
            let a = spec_attributes(&spec)?;
            let status = review_status(state, user, &a);
            answer(body, "SelfSubjectAccessReview", status)
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let mut a = spec_attributes(&spec)?;
            let local = info.resource == "localsubjectaccessreviews";
            if local {
                if a.resource_request && a.namespace.is_empty() {
                    a.namespace = info.namespace.clone();
                }
                if !a.resource_request || a.namespace != info.namespace {
                    return Err(Error::BadRequest(format!(
                        "spec.resourceAttributes.namespace must match namespace: {}",
                        info.namespace
                    )));
                }
            }
            let name = str_of(&spec, "user").to_string();
            let groups = strings(spec.get("groups"));
            if name.is_empty() && groups.is_empty() {
                return Err(Error::Invalid {
                    kind: "SubjectAccessReview.authorization.k8s.io".into(),
                    name: String::new(),
                    errors: vec![crate::validation::FieldError::invalid(
                        "spec.user",
                        "",
                        "at least one of user or group must be specified",
                    )],
                });
            }
            let extra: BTreeMap<String, Vec<String>> = spec
                .get("extra")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), strings(Some(v))))
                        .collect()
                })
                .unwrap_or_default();
            let subject = User {
                name,
                uid: str_of(&spec, "uid").into(),
                groups,
                extra,
            };
            let status = review_status(state, &subject, &a);
            let kind = if local {
                "LocalSubjectAccessReview"
            } else {
                "SubjectAccessReview"
            };
            answer(body, kind, status)
        }
        "selfsubjectrulesreviews" => {
            let ns = str_of(&spec, "namespace");
            let rules = sec
                .rbac
                .as_ref()
                .map(|r| r.rules_for(user, ns))
                .unwrap_or_default();
            let mut resource_rules = Vec::new();
            let mut non_resource_rules = Vec::new();
            for r in rules {
                if r.non_resource_urls.is_empty() {
                    let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
                    if !r.resource_names.is_empty() {
                        v["resourceNames"] = json!(r.resource_names);
                    }
                    resource_rules.push(v);
                } else {
                    non_resource_rules
                        .push(json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}));
                }
            }
            answer(
                body,
                "SelfSubjectRulesReview",
                json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false}),
            )
        }
        _ => return Err(Error::NotFoundPath),
    };
    Ok(Filtered::Served(created(out)))
}
