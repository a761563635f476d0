//! Field errors (upstream `field.ErrorList`) and the shared validators for names and metadata.

use std::fmt;

/// The kind of a field error; each maps to an upstream `CauseType` and message prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorType {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    TooMany,
    NotFound,
    Internal,
}

impl FieldErrorType {
    /// Upstream `metav1.CauseType` string.
    pub fn reason(self) -> &'static str {
        match self {
            FieldErrorType::Required => "FieldValueRequired",
            FieldErrorType::Invalid => "FieldValueInvalid",
            FieldErrorType::NotSupported => "FieldValueNotSupported",
            FieldErrorType::Duplicate => "FieldValueDuplicate",
            FieldErrorType::Forbidden => "FieldValueForbidden",
            FieldErrorType::TooLong => "FieldValueTooLong",
            FieldErrorType::TooMany => "FieldValueTooMany",
            FieldErrorType::NotFound => "FieldValueNotFound",
            FieldErrorType::Internal => "InternalError",
        }
    }
    /// Upstream human wording of the type.
    pub fn text(self) -> &'static str {
        match self {
            FieldErrorType::Required => "Required value",
            FieldErrorType::Invalid => "Invalid value",
            FieldErrorType::NotSupported => "Unsupported value",
            FieldErrorType::Duplicate => "Duplicate value",
            FieldErrorType::Forbidden => "Forbidden",
            FieldErrorType::TooLong => "Too long",
            FieldErrorType::TooMany => "Too many",
            FieldErrorType::NotFound => "Not found",
            FieldErrorType::Internal => "Internal error",
        }
    }
}

/// One validation failure at a field path such as `spec.containers[0].image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorType,
    pub field: String,
    /// The offending value, rendered as upstream does (strings quoted), when it is shown.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorType::Required, field: field.into(), value: None, detail: detail.into() }
    }
    /// `value` is rendered as a quoted string.
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorType::Invalid,
            field: field.into(),
            value: Some(format!("{value:?}")),
            detail: detail.into(),
        }
    }
    /// `value` is rendered verbatim (numbers, objects).
    pub fn invalid_raw(field: impl Into<String>, value: impl fmt::Display, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorType::Invalid,
            field: field.into(),
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError { kind: FieldErrorType::Forbidden, field: field.into(), value: None, detail: detail.into() }
    }
    pub fn duplicate(field: impl Into<String>, value: &str) -> Self {
        FieldError {
            kind: FieldErrorType::Duplicate,
            field: field.into(),
            value: Some(format!("{value:?}")),
            detail: String::new(),
        }
    }
    /// `supported` are listed in the detail like upstream: `supported values: "A", "B"`.
    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        FieldError {
            kind: FieldErrorType::NotSupported,
            field: field.into(),
            value: Some(format!("{value:?}")),
            detail: if list.is_empty() { String::new() } else { format!("supported values: {}", list.join(", ")) },
        }
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        FieldError {
            kind: FieldErrorType::TooLong,
            field: field.into(),
            value: Some("\"\"".into()),
            detail: format!("may not be more than {max} bytes"),
        }
    }

    /// The message without the field: `Invalid value: "x": detail`.
    pub fn body(&self) -> String {
        let mut s = self.kind.text().to_string();
        if let Some(v) = &self.value {
            if self.kind != FieldErrorType::Required && self.kind != FieldErrorType::Forbidden {
                s.push_str(": ");
                s.push_str(v);
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.body())
        } else {
            write!(f, "{}: {}", self.field, self.body())
        }
    }
}

/// A list of field errors.
pub type FieldErrors = Vec<FieldError>;
