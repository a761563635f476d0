//! Field errors (upstream `field.ErrorList`) and the shared validators for names and metadata.

use std::fmt;

use serde_json::Value;

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
        FieldError {
            kind: FieldErrorType::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }
    /// `value` is rendered as a quoted string.
    pub fn invalid(field: impl Into<String>, value: &str, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorType::Invalid,
            field: field.into(),
            value: Some(go_quote(value)),
            detail: detail.into(),
        }
    }
    /// `value` is rendered verbatim (numbers, objects).
    pub fn invalid_raw(
        field: impl Into<String>,
        value: impl fmt::Display,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind: FieldErrorType::Invalid,
            field: field.into(),
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorType::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
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
            detail: if list.is_empty() {
                String::new()
            } else {
                format!("supported values: {}", list.join(", "))
            },
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
            if !matches!(
                self.kind,
                FieldErrorType::Required
                    | FieldErrorType::Forbidden
                    | FieldErrorType::TooLong
                    | FieldErrorType::Internal
            ) {
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

// ---------------------------------------------------------------------------------------------
// Upstream `k8s.io/apimachinery/pkg/util/validation` string checks. Each returns the list of
// upstream messages (empty = valid), to be wrapped in a `FieldError::invalid`.

/// Upstream `RegexError`: `msg (e.g. 'a',  or 'b', regex used for validation is 'fmt')`.
/// A string quoted as Go's `%q` (strconv.Quote) does, as upstream's messages show values.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || (c.is_whitespace() && c != ' ') => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push('\'');
        s.push_str(e);
        s.push_str("', ");
    }
    s.push_str("regex used for validation is '");
    s.push_str(fmt);
    s.push_str("')");
    s
}

/// Upstream `MaxLenError`.
pub fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

/// Upstream `EmptyError`.
pub const EMPTY_ERROR: &str = "must be non-empty";
/// Upstream `FieldImmutableErrorMsg`.
pub const FIELD_IMMUTABLE: &str = "field is immutable";
/// Upstream `isNegativeErrorMsg`.
pub const IS_NEGATIVE: &str = "must be greater than or equal to 0";
/// Upstream `isNotPositiveErrorMsg`... (strictly positive).
pub const NOT_POSITIVE: &str = "must be greater than 0";
/// Upstream `v1.MaxSecretSize` (also the ConfigMap limit).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;
/// Upstream `TotalAnnotationSizeLimitB`.
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(&f), Some(&l)) => {
            is_lower_alnum(f)
                && is_lower_alnum(l)
                && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
        }
        _ => false,
    }
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_MSG: &str =
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Upstream `IsDNS1123Label`.
pub fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1123_label(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

/// Upstream `IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !s.split('.').all(matches_dns1123_label) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

/// Upstream `IsDNS1035Label`.
pub fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    let starts_alpha = s.as_bytes().first().is_some_and(|c| c.is_ascii_lowercase());
    if !(starts_alpha && matches_dns1123_label(s)) {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (Some(f), Some(l)) => {
            f.is_ascii_alphanumeric()
                && l.is_ascii_alphanumeric()
                && b.iter()
                    .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.')
        }
        _ => false,
    }
}

/// Upstream `IsQualifiedName` (label keys, annotation keys, finalizers).
pub fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push(format!("prefix part {EMPTY_ERROR}"));
            } else {
                errs.extend(
                    is_dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            errs.push(format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_MSG, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            ));
            return errs;
        }
    };
    if name.is_empty() {
        errs.push(format!("name part {EMPTY_ERROR}"));
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_MSG,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// Upstream `IsValidLabelValue`.
pub fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// Upstream `IsConfigMapKey` (ConfigMap and Secret data keys).
pub fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    let ok = !value.is_empty()
        && value
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'.');
    if !ok {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    if value == "." {
        errs.push("must not be '.'".into());
    } else if value == ".." {
        errs.push("must not be '..'".into());
    } else if value.starts_with("..") {
        errs.push("must not start with '..'".into());
    }
    errs
}

/// Upstream `IsValidPathSegmentName` / `ValidatePathSegmentName` (RBAC names).
pub fn is_path_segment_name(name: &str, prefix: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if !prefix && (name == "." || name == "..") {
        errs.push(format!("may not be '{name}'"));
    }
    for illegal in ["/", "%"] {
        if name.contains(illegal) {
            errs.push(format!("may not contain '{illegal}'"));
        }
    }
    errs
}

/// Upstream `IsValidPortNum`.
pub fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec!["must be between 1 and 65535, inclusive".into()]
    }
}

/// Upstream `IsValidPortName` (IANA_SVC_NAME).
pub fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.is_empty() || port.len() > 15 {
        errs.push("must be no more than 15 characters".into());
    }
    if !port
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
    {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// Upstream `IsValidIP`-style check used for Service cluster IPs and Pod IPs.
pub fn is_valid_ip(s: &str) -> Vec<String> {
    if s.parse::<std::net::IpAddr>().is_ok() {
        Vec::new()
    } else {
        vec!["must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into()]
    }
}

/// Which name rule a kind's `metadata.name` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most kinds).
    Subdomain,
    /// DNS-1123 label (namespaces).
    Label,
    /// DNS-1035 label (services).
    Dns1035Label,
    /// Any path segment (RBAC).
    PathSegment,
}

/// Upstream `NameIs*` validators: when `prefix`, the value is a generateName and may end in '-'.
pub fn name_errors(rule: NameRule, name: &str, prefix: bool) -> Vec<String> {
    let masked = if prefix {
        mask_trailing_dash(name)
    } else {
        name.to_string()
    };
    match rule {
        NameRule::Subdomain => is_dns1123_subdomain(&masked),
        NameRule::Label => is_dns1123_label(&masked),
        NameRule::Dns1035Label => is_dns1035_label(&masked),
        NameRule::PathSegment => is_path_segment_name(name, prefix),
    }
}

/// Upstream `maskTrailingDash`: a generateName `foo-` validates as `foo a`.
fn mask_trailing_dash(name: &str) -> String {
    match name.strip_suffix('-') {
        Some(rest) if !rest.is_empty() => format!("{rest}a"),
        _ => name.to_string(),
    }
}

/// Renders a string map like Go's `%#v` of `map[string]string` (keys sorted).
pub fn go_string_map<'a>(entries: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut v: Vec<(&str, &str)> = entries.into_iter().collect();
    v.sort();
    let inner: Vec<String> = v.iter().map(|(k, val)| format!("{k:?}:{val:?}")).collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

/// Renders a JSON object of strings like Go's `%#v` of `map[string]string`.
pub fn go_string_map_value(v: Option<&Value>) -> String {
    let entries = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    if entries.is_empty() && v.is_none() {
        return "map[string]string(nil)".into();
    }
    go_string_map(entries)
}

/// Upstream `ValidateLabels`: keys are qualified names, values label values; errors at `path`.
pub fn validate_labels(labels: Option<&Value>, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let Some(labels) = labels else { return errs };
    let Some(map) = labels.as_object() else {
        errs.push(FieldError::invalid_raw(
            path,
            labels,
            "must be a map of string keys to string values",
        ));
        return errs;
    };
    for (k, v) in map {
        for m in is_qualified_name(k) {
            errs.push(FieldError::invalid(path, k, m));
        }
        match v.as_str() {
            Some(s) => {
                for m in is_valid_label_value(s) {
                    errs.push(FieldError::invalid(path, s, m));
                }
            }
            None if v.is_null() => {}
            None => errs.push(FieldError::invalid_raw(path, v, "must be a string")),
        }
    }
    errs
}

/// Upstream `ValidateAnnotations`: keys are qualified names; total size at most 256 KiB.
pub fn validate_annotations(annotations: Option<&Value>, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let Some(a) = annotations else { return errs };
    let Some(map) = a.as_object() else {
        errs.push(FieldError::invalid_raw(
            path,
            a,
            "must be a map of string keys to string values",
        ));
        return errs;
    };
    let mut total = 0usize;
    for (k, v) in map {
        for m in is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k, m));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Upstream `validateFinalizerName` (apimachinery part): finalizers are qualified names.
pub fn validate_finalizers(finalizers: Option<&Value>, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let Some(list) = finalizers.and_then(Value::as_array) else {
        return errs;
    };
    for (i, f) in list.iter().enumerate() {
        let s = f.as_str().unwrap_or("");
        for m in is_qualified_name(s) {
            errs.push(FieldError::invalid(format!("{path}[{i}]"), s, m));
        }
    }
    errs
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Upstream `ValidateObjectMeta`: name (or generateName) by `rule`, namespace iff `namespaced`,
/// generation, labels, annotations, finalizers.
pub fn validate_object_meta(obj: &Value, namespaced: bool, rule: NameRule) -> FieldErrors {
    let mut errs = FieldErrors::new();
    let meta = obj.get("metadata");
    if let Some(m) = meta {
        if !m.is_object() {
            errs.push(FieldError::invalid_raw("metadata", m, "must be an object"));
            return errs;
        }
    }
    let generate_name = meta_str(obj, "generateName");
    if !generate_name.is_empty() {
        for m in name_errors(rule, generate_name, true) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                generate_name,
                m,
            ));
        }
    }
    let name = meta_str(obj, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for m in name_errors(rule, name, false) {
            errs.push(FieldError::invalid("metadata.name", name, m));
        }
    }
    let ns = meta_str(obj, "namespace");
    if namespaced {
        if ns.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for m in is_dns1123_label(ns) {
                errs.push(FieldError::invalid("metadata.namespace", ns, m));
            }
        }
    } else if !ns.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    errs.extend(validate_meta_fields(meta));
    errs
}

/// The metadata checks shared by create and update: generation, labels, annotations, finalizers.
fn validate_meta_fields(meta: Option<&Value>) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if let Some(g) = meta
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)
    {
        if g < 0 {
            errs.push(FieldError::invalid_raw(
                "metadata.generation",
                g,
                IS_NEGATIVE,
            ));
        }
    }
    errs.extend(validate_labels(
        meta.and_then(|m| m.get("labels")),
        "metadata.labels",
    ));
    errs.extend(validate_annotations(
        meta.and_then(|m| m.get("annotations")),
        "metadata.annotations",
    ));
    errs.extend(validate_finalizers(
        meta.and_then(|m| m.get("finalizers")),
        "metadata.finalizers",
    ));
    errs
}

/// Upstream `ValidateObjectMetaUpdate`: name and namespace are immutable (uid, creationTimestamp
/// and the other system fields are carried over from the stored object by the store);
/// labels, annotations and finalizers are validated again.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> FieldErrors {
    let mut errs = FieldErrors::new();
    for f in ["name", "namespace", "uid"] {
        let (n, o) = (meta_str(new, f), meta_str(old, f));
        // An absent uid means "keep the stored one".
        if n != o && !(f == "uid" && n.is_empty()) {
            errs.push(FieldError::invalid(
                format!("metadata.{f}"),
                n,
                FIELD_IMMUTABLE,
            ));
        }
    }
    let meta = new.get("metadata");
    errs.extend(validate_meta_fields(meta));
    errs
}

/// Decodes a JSON object into a k8s-openapi type. `apiVersion`/`kind` are ignored (the store
/// checks them), so one type can read objects served under several group-versions.
/// The error is serde's message, e.g. `invalid type: string "3", expected i32`.
pub fn decode_typed<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<T, String> {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    } else {
        return Err(format!(
            "expected a JSON object, got {}",
            json_type_name(obj)
        ));
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// The JSON type name of a value, as Go's decoder words it.
pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A decode failure as a field error on the whole object.
pub fn decode_error(msg: &str) -> FieldError {
    FieldError {
        kind: FieldErrorType::Invalid,
        field: String::new(),
        value: None,
        detail: format!("unable to decode object: {msg}"),
    }
}

/// Upstream `ValidateNonnegativeField`.
pub fn validate_nonnegative(v: Option<i64>, path: &str) -> FieldErrors {
    match v {
        Some(n) if n < 0 => vec![FieldError::invalid_raw(path, n, IS_NEGATIVE)],
        _ => Vec::new(),
    }
}

/// Upstream `ValidateLabelSelector` for a `metav1.LabelSelector` JSON value at `path`.
pub fn validate_label_selector(sel: &Value, path: &str) -> FieldErrors {
    let mut errs = FieldErrors::new();
    if !sel.is_object() {
        errs.push(FieldError::invalid_raw(
            path,
            sel,
            "must be a label selector object",
        ));
        return errs;
    }
    errs.extend(validate_labels(
        sel.get("matchLabels"),
        &format!("{path}.matchLabels"),
    ));
    let exprs = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for (i, e) in exprs.iter().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        let op = e.get("operator").and_then(Value::as_str).unwrap_or("");
        let nvalues = e
            .get("values")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        match op {
            "In" | "NotIn" => {
                if nvalues == 0 {
                    errs.push(FieldError::required(
                        format!("{p}.values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if nvalues > 0 {
                    errs.push(FieldError::forbidden(
                        format!("{p}.values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(FieldError::invalid(
                format!("{p}.operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        for m in is_qualified_name(key) {
            errs.push(FieldError::invalid(format!("{p}.key"), key, m));
        }
    }
    errs
}

/// Whether a `metav1.LabelSelector` JSON value selects nothing at all (no requirements).
pub fn label_selector_is_empty(sel: &Value) -> bool {
    let ml = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .is_none_or(|m| m.is_empty());
    let me = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty());
    ml && me
}

/// Whether a `metav1.LabelSelector` JSON value matches a label map.
pub fn label_selector_matches(sel: &Value, labels: Option<&Value>) -> bool {
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        if ml.iter().any(|(k, v)| label(k) != v.as_str()) {
            return false;
        }
    }
    let exprs = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    exprs.iter().all(|e| {
        let key = e.get("key").and_then(Value::as_str).unwrap_or("");
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let have = label(key);
        match e.get("operator").and_then(Value::as_str).unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h)),
            "NotIn" => have.is_none_or(|h| !values.contains(&h)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            _ => false,
        }
    })
}

/// Renders a `metav1.LabelSelector` like Go's `%#v` of `v1.LabelSelector` (used in immutability errors).
pub fn go_label_selector(sel: &Value) -> String {
    let ml = match sel.get("matchLabels") {
        Some(m) if m.is_object() => go_string_map_value(Some(m)),
        _ => "map[string]string(nil)".into(),
    };
    let exprs = sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let me = if exprs.is_empty() {
        "[]v1.LabelSelectorRequirement(nil)".to_string()
    } else {
        let items: Vec<String> = exprs
            .iter()
            .map(|e| {
                let s = |f: &str| e.get(f).and_then(Value::as_str).unwrap_or("").to_string();
                let vals: Vec<String> = e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(|v| format!("{v:?}"))
                            .collect()
                    })
                    .unwrap_or_default();
                let values = if vals.is_empty() {
                    "[]string(nil)".to_string()
                } else {
                    format!("[]string{{{}}}", vals.join(", "))
                };
                format!(
                    "v1.LabelSelectorRequirement{{Key:{:?}, Operator:{:?}, Values:{values}}}",
                    s("key"),
                    s("operator")
                )
            })
            .collect();
        format!("[]v1.LabelSelectorRequirement{{{}}}", items.join(", "))
    };
    format!("v1.LabelSelector{{MatchLabels:{ml}, MatchExpressions:{me}}}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_quoted_like_go() {
        assert_eq!(
            go_quote("a\u{7}b\"c\\\n\u{1b}\u{a0}é"),
            "\"a\\ab\\\"c\\\\\\n\\x1b\\u00a0é\""
        );
        assert_eq!(go_quote("plain"), "\"plain\"");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn name_messages() {
        let cases: &[(NameRule, &str, &str)] = &[
            (NameRule::Subdomain, "Bad_Name", "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            (NameRule::Label, "a.b", "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            (NameRule::Dns1035Label, "1abc", "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
            (NameRule::PathSegment, "a/b", "may not contain '/'"),
        ];
        for (rule, name, want) in cases {
            assert_eq!(
                name_errors(*rule, name, false),
                vec![want.to_string()],
                "{name}"
            );
        }
        assert!(name_errors(NameRule::Subdomain, "web-", true).is_empty());
        assert!(name_errors(NameRule::Subdomain, "a.example.com", false).is_empty());
        assert_eq!(
            name_errors(NameRule::Label, &"a".repeat(64), false),
            vec![max_len_error(63)]
        );
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert_eq!(is_qualified_name("a/b/c").len(), 1);
        assert!(is_qualified_name("-x")[0].starts_with("name part must consist of alphanumeric"));
        assert!(is_valid_label_value("").is_empty());
        assert!(is_valid_label_value("bad value")[0]
            .starts_with("a valid label must be an empty string"));
        assert_eq!(
            is_config_map_key(".."),
            vec!["must not be '..'".to_string()]
        );
        assert!(is_config_map_key("a b")[0]
            .starts_with("a valid config key must consist of alphanumeric characters"));
    }

    #[test]
    fn object_meta() {
        let errs = validate_object_meta(&json!({"metadata": {}}), true, NameRule::Subdomain);
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            vec![
                "metadata.name: Required value: name or generateName is required",
                "metadata.namespace: Required value"
            ]
        );
        let errs = validate_object_meta(
            &json!({"metadata": {"name": "x", "namespace": "d"}}),
            false,
            NameRule::Label,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.namespace: Forbidden: not allowed on this type"
        );
        let errs = validate_object_meta(
            &json!({"metadata": {"name": "x", "labels": {"a": "b c"}}}),
            false,
            NameRule::Label,
        );
        assert!(errs[0]
            .to_string()
            .starts_with("metadata.labels: Invalid value: \"b c\": a valid label"));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT + 1);
        let errs = validate_object_meta(
            &json!({"metadata": {"name": "x", "annotations": {"a": big}}}),
            false,
            NameRule::Label,
        );
        assert_eq!(
            errs[0].to_string(),
            "metadata.annotations: Too long: may not be more than 262144 bytes"
        );
        let errs = validate_object_meta_update(
            &json!({"metadata": {"name": "y", "namespace": "d"}}),
            &json!({"metadata": {"name": "x", "namespace": "d", "uid": "u"}}),
        );
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            "metadata.name: Invalid value: \"y\": field is immutable"
        );
    }

    #[test]
    fn selectors() {
        let sel = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]});
        assert!(label_selector_matches(
            &sel,
            Some(&json!({"app": "web", "tier": "a"}))
        ));
        assert!(!label_selector_matches(&sel, Some(&json!({"app": "web"}))));
        let errs = validate_label_selector(
            &json!({"matchExpressions": [{"key": "k", "operator": "In"}]}),
            "spec.selector",
        );
        assert_eq!(
            errs[0].to_string(),
            "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'"
        );
        assert_eq!(
            go_label_selector(&json!({"matchLabels": {"app": "web"}})),
            "v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"web\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}"
        );
    }

    #[test]
    fn decode() {
        let r: Result<k8s_openapi::api::apps::v1::Deployment, _> = decode_typed(
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": "3"}}),
        );
        assert!(r.is_err());
        let r: Result<k8s_openapi::api::apps::v1::Deployment, _> =
            decode_typed(&json!({"spec": {"replicas": 3}}));
        assert!(r.is_ok());
    }
}
