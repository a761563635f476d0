//! The one API error type, mapped to `metav1.Status` here and nowhere else.

use http::StatusCode;
use serde_json::{json, Value};

use crate::validation::FieldErrors;

/// An error answered to a client as a `metav1.Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `pods "x" not found`. `resource` is qualified (`deployments.apps`).
    #[error("{resource} {name:?} not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} {name:?} already exists")]
    AlreadyExists { resource: String, name: String },
    /// `Operation cannot be fulfilled on pods "x": <message>`.
    #[error("Operation cannot be fulfilled on {resource} {name:?}: {message}")]
    Conflict {
        resource: String,
        name: String,
        message: String,
    },
    /// `Pod "x" is invalid: ...`. `kind` is qualified (`Deployment.apps`).
    #[error("{kind} {name:?} is invalid")]
    Invalid {
        kind: String,
        name: String,
        errors: FieldErrors,
    },
    #[error("{0}")]
    BadRequest(String),
    /// `pods "x" is forbidden: <message>`; `name` may be empty.
    #[error("forbidden: {message}")]
    Forbidden {
        resource: String,
        name: String,
        message: String,
    },
    #[error("Unauthorized")]
    Unauthorized,
    #[error("the server does not allow this method on the requested resource")]
    MethodNotSupported,
    #[error("the server could not find the requested resource")]
    NotFoundPath,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("the request is too large")]
    RequestEntityTooLarge,
    /// 410 `Expired` (too-old resourceVersion, compacted continue token).
    #[error("{0}")]
    Expired(String),
    /// 410 `Gone`.
    #[error("{0}")]
    Gone(String),
    /// 504 `Timeout`.
    #[error("{0}")]
    Timeout(String),
    /// 429 `TooManyRequests`.
    #[error("{0}")]
    TooManyRequests(String),
    /// 500; the message is logged, the client gets a generic one with the cause.
    #[error("{0}")]
    Internal(String),
    /// 503.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// 409 from server-side apply: `causes` are (message, field) of each conflict.
    #[error("{message}")]
    ApplyConflict {
        message: String,
        causes: Vec<(String, String)>,
    },
    /// A status another party chose (an admission webhook's denial).
    #[error("{message}")]
    Status {
        code: u16,
        reason: String,
        message: String,
    },
}

/// API result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// HTTP status code for this error.
    pub fn code(&self) -> StatusCode {
        match self {
            Error::NotFound { .. } | Error::NotFoundPath => StatusCode::NOT_FOUND,
            Error::AlreadyExists { .. } | Error::Conflict { .. } | Error::ApplyConflict { .. } => {
                StatusCode::CONFLICT
            }
            Error::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::Unauthorized => StatusCode::UNAUTHORIZED,
            Error::MethodNotSupported => StatusCode::METHOD_NOT_ALLOWED,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Expired(_) | Error::Gone(_) => StatusCode::GONE,
            Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Status { code, .. } => {
                StatusCode::from_u16(*code).unwrap_or(StatusCode::BAD_REQUEST)
            }
        }
    }

    /// Upstream `StatusReason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::NotFound { .. } | Error::NotFoundPath => "NotFound",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::Conflict { .. } | Error::ApplyConflict { .. } => "Conflict",
            Error::Invalid { .. } => "Invalid",
            Error::BadRequest(_) => "BadRequest",
            Error::Forbidden { .. } => "Forbidden",
            Error::Unauthorized => "Unauthorized",
            Error::MethodNotSupported => "MethodNotAllowed",
            Error::UnsupportedMediaType(_) => "UnsupportedMediaType",
            Error::NotAcceptable(_) => "NotAcceptable",
            Error::RequestEntityTooLarge => "RequestEntityTooLarge",
            Error::Expired(_) => "Expired",
            Error::Gone(_) => "Gone",
            Error::Timeout(_) => "Timeout",
            Error::TooManyRequests(_) => "TooManyRequests",
            Error::Internal(_) => "InternalError",
            Error::ServiceUnavailable(_) => "ServiceUnavailable",
            Error::Status { .. } => "",
        }
    }

    /// The client-facing message, worded like upstream.
    pub fn message(&self) -> String {
        match self {
            Error::NotFound { resource, name } => format!("{resource} \"{name}\" not found"),
            Error::AlreadyExists { resource, name } => {
                format!("{resource} \"{name}\" already exists")
            }
            Error::Conflict {
                resource,
                name,
                message,
            } => {
                format!("Operation cannot be fulfilled on {resource} \"{name}\": {message}")
            }
            Error::Invalid { kind, name, errors } => {
                let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                if list.len() == 1 {
                    format!("{kind} \"{name}\" is invalid: {}", list[0])
                } else {
                    format!("{kind} \"{name}\" is invalid: [{}]", list.join(", "))
                }
            }
            Error::Forbidden {
                resource,
                name,
                message,
            } => {
                if resource.is_empty() {
                    format!("forbidden: {message}")
                } else if name.is_empty() {
                    format!("{resource} is forbidden: {message}")
                } else {
                    format!("{resource} \"{name}\" is forbidden: {message}")
                }
            }
            Error::Internal(m) => format!("Internal error occurred: {m}"),
            other => other.to_string(),
        }
    }

    /// The `metav1.Status` body.
    pub fn status(&self) -> Value {
        let mut details = serde_json::Map::new();
        match self {
            Error::NotFound { resource, name }
            | Error::AlreadyExists { resource, name }
            | Error::Conflict { resource, name, .. }
            | Error::Forbidden { resource, name, .. } => {
                if resource.is_empty() && name.is_empty() {
                    return self.status_with(details);
                }
                if !name.is_empty() {
                    details.insert("name".into(), json!(name));
                }
                let (res, group) = split_qualified(resource);
                if !group.is_empty() {
                    details.insert("group".into(), json!(group));
                }
                details.insert("kind".into(), json!(res));
            }
            Error::Invalid { kind, name, errors } => {
                details.insert("name".into(), json!(name));
                let (k, group) = split_qualified(kind);
                if !group.is_empty() {
                    details.insert("group".into(), json!(group));
                }
                details.insert("kind".into(), json!(k));
                let causes: Vec<Value> = errors
                    .iter()
                    .map(|e| json!({"reason": e.kind.reason(), "message": e.body(), "field": e.field}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            Error::ApplyConflict { causes, .. } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|(m, f)| json!({"reason": "FieldManagerConflict", "message": m, "field": f}))
                    .collect();
                details.insert("causes".into(), Value::Array(causes));
            }
            Error::Timeout(_) | Error::TooManyRequests(_) => {
                details.insert("retryAfterSeconds".into(), json!(1));
            }
            Error::Internal(m) => {
                details.insert("causes".into(), json!([{"message": m}]));
            }
            _ => {}
        }
        self.status_with(details)
    }

    fn status_with(&self, details: serde_json::Map<String, Value>) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message(),
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        if let Error::Status { reason, .. } = self {
            match status.as_object_mut() {
                Some(o) if reason.is_empty() => {
                    o.remove("reason");
                }
                _ => status["reason"] = json!(reason),
            }
        }
        if matches!(self, Error::BadRequest(_)) {
            if let Some(o) = status.as_object_mut() {
                o.remove("reason");
                o.insert("reason".into(), json!("BadRequest"));
            }
        }
        status
    }

    /// A 422 for a single field error.
    pub fn invalid(kind: String, name: String, errors: FieldErrors) -> Self {
        Error::Invalid { kind, name, errors }
    }
}

fn split_qualified(s: &str) -> (&str, &str) {
    match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    }
}

impl From<crate::storage::Error> for Error {
    fn from(e: crate::storage::Error) -> Self {
        use crate::storage::Error as S;
        match e {
            S::Compacted { requested, compacted } => Error::Expired(format!(
                "The resourceVersion for the provided watch is too old. (requested {requested}, compacted {compacted})"
            )),
            S::FutureRevision { requested, current } => Error::Timeout(format!(
                "Too large resource version: {requested}, current: {current}"
            )),
            other => Error::Internal(other.to_string()),
        }
    }
}
