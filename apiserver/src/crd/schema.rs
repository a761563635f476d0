//! Structural schemas of custom resources (`openAPIV3Schema`): validation with upstream's
//! messages (go-openapi wording, as `kubectl` shows it), defaulting (`default`) and pruning of
//! fields the schema does not declare. `allOf`/`anyOf`/`oneOf`/`not` are not evaluated.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Map, Value};

use crate::validation::{FieldError, FieldErrorType, FieldErrors};

/// `additionalProperties`: absent/false, true, or a schema for every value.
enum Additional {
    None,
    Any,
    Schema(Box<Schema>),
}

/// One node of a structural schema, parsed once per CRD version.
pub struct Schema {
    type_: String,
    nullable: bool,
    int_or_string: bool,
    preserve_unknown: bool,
    embedded: bool,
    properties: BTreeMap<String, Schema>,
    additional: Additional,
    items: Option<Box<Schema>>,
    required: Vec<String>,
    enum_: Vec<Value>,
    minimum: Option<f64>,
    exclusive_minimum: bool,
    maximum: Option<f64>,
    exclusive_maximum: bool,
    multiple_of: Option<f64>,
    pattern: Option<(String, regex::Regex)>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    min_properties: Option<u64>,
    max_properties: Option<u64>,
    format: String,
    default: Option<Value>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// A number as Go's `%v` prints it (`0`, `1.5`).
fn go_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

/// A value as upstream field errors render it (strings quoted, numbers bare).
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.as_f64().map(go_number).unwrap_or_else(|| n.to_string()),
        other => other.to_string(),
    }
}

/// The JSON-schema type of a value.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(want: &str, v: &Value) -> bool {
    match want {
        "" => true,
        "number" => v.is_number(),
        t => type_of(v) == t,
    }
}

fn u64_at(m: &Map<String, Value>, k: &str) -> Option<u64> {
    m.get(k).and_then(Value::as_u64)
}

fn f64_at(m: &Map<String, Value>, k: &str) -> Option<f64> {
    m.get(k).and_then(Value::as_f64)
}

fn bool_at(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

impl Schema {
    /// Parses a JSONSchemaProps object; the error names what cannot be used (a bad pattern).
    pub fn parse(v: &Value) -> Result<Schema, String> {
        let empty = Map::new();
        let m = v.as_object().unwrap_or(&empty);
        let mut properties = BTreeMap::new();
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            for (k, p) in props {
                properties.insert(k.clone(), Schema::parse(p)?);
            }
        }
        let additional = match m.get("additionalProperties") {
            Some(Value::Bool(true)) => Additional::Any,
            Some(s @ Value::Object(_)) => Additional::Schema(Box::new(Schema::parse(s)?)),
            _ => Additional::None,
        };
        let items = match m.get("items") {
            Some(s @ Value::Object(_)) => Some(Box::new(Schema::parse(s)?)),
            _ => None,
        };
        let pattern = match m.get("pattern").and_then(Value::as_str) {
            Some(p) => Some((
                p.to_string(),
                regex::Regex::new(p).map_err(|e| format!("invalid pattern {p:?}: {e}"))?,
            )),
            None => None,
        };
        let strs = |k: &str| crate::object::strings(m.get(k));
        Ok(Schema {
            type_: m
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            nullable: bool_at(m, "nullable"),
            int_or_string: bool_at(m, "x-kubernetes-int-or-string"),
            preserve_unknown: bool_at(m, "x-kubernetes-preserve-unknown-fields"),
            embedded: bool_at(m, "x-kubernetes-embedded-resource"),
            properties,
            additional,
            items,
            required: strs("required"),
            enum_: m
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            minimum: f64_at(m, "minimum"),
            exclusive_minimum: bool_at(m, "exclusiveMinimum"),
            maximum: f64_at(m, "maximum"),
            exclusive_maximum: bool_at(m, "exclusiveMaximum"),
            multiple_of: f64_at(m, "multipleOf"),
            pattern,
            min_length: u64_at(m, "minLength"),
            max_length: u64_at(m, "maxLength"),
            min_items: u64_at(m, "minItems"),
            max_items: u64_at(m, "maxItems"),
            min_properties: u64_at(m, "minProperties"),
            max_properties: u64_at(m, "maxProperties"),
            format: m
                .get("format")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            default: m.get("default").cloned(),
        })
    }

    /// Validates a whole custom resource (apiVersion, kind and metadata are the store's).
    pub fn validate_object(&self, obj: &Value) -> FieldErrors {
        let mut errs = FieldErrors::new();
        let Some(m) = obj.as_object() else {
            return errs;
        };
        self.validate_properties(m, "", true, &mut errs);
        errs
    }

    /// Validates `v` at `path` (upstream field path, `spec.items[0].name`).
    fn validate(&self, v: &Value, path: &str, errs: &mut FieldErrors) {
        if v.is_null() && (self.nullable || (self.type_.is_empty() && !self.int_or_string)) {
            return;
        }
        let invalid = |value: String, detail: String| FieldError {
            kind: FieldErrorType::Invalid,
            field: path.to_string(),
            value: Some(value),
            detail,
        };
        if self.int_or_string {
            if !matches!(type_of(v), "integer" | "string") {
                let t = type_of(v);
                errs.push(invalid(
                    format!("{t:?}"),
                    format!("{path} in body must be of type integer,string: {t:?}"),
                ));
                return;
            }
        } else if !type_matches(&self.type_, v) {
            let t = type_of(v);
            errs.push(invalid(
                format!("{t:?}"),
                format!("{path} in body must be of type {}: {t:?}", self.type_),
            ));
            return;
        }
        if !self.enum_.is_empty() && !self.enum_.contains(v) {
            let supported: Vec<String> = self.enum_.iter().map(render).collect();
            errs.push(FieldError {
                kind: FieldErrorType::NotSupported,
                field: path.to_string(),
                value: Some(render(v)),
                detail: format!("supported values: {}", supported.join(", ")),
            });
        }
        match v {
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(0.0);
                if let Some(min) = self.minimum {
                    if x < min || (self.exclusive_minimum && x == min) {
                        let op = if self.exclusive_minimum {
                            "greater than"
                        } else {
                            "greater than or equal to"
                        };
                        errs.push(invalid(
                            render(v),
                            format!("{path} in body should be {op} {}", go_number(min)),
                        ));
                    }
                }
                if let Some(max) = self.maximum {
                    if x > max || (self.exclusive_maximum && x == max) {
                        let op = if self.exclusive_maximum {
                            "less than"
                        } else {
                            "less than or equal to"
                        };
                        errs.push(invalid(
                            render(v),
                            format!("{path} in body should be {op} {}", go_number(max)),
                        ));
                    }
                }
                if let Some(k) = self.multiple_of.filter(|k| *k > 0.0) {
                    if (x / k).fract() != 0.0 {
                        errs.push(invalid(
                            render(v),
                            format!("{path} in body should be a multiple of {}", go_number(k)),
                        ));
                    }
                }
                if self.format == "int32"
                    && !(f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&x)
                {
                    errs.push(invalid(
                        render(v),
                        format!("{path} in body must be of type int32: {}", render(v)),
                    ));
                }
            }
            Value::String(s) => {
                let chars = s.chars().count() as u64;
                if let Some(min) = self.min_length {
                    if chars < min {
                        errs.push(invalid(
                            render(v),
                            format!("{path} in body should be at least {min} chars long"),
                        ));
                    }
                }
                if let Some(max) = self.max_length {
                    if chars > max {
                        errs.push(FieldError::too_long(path, max as usize));
                    }
                }
                if let Some((p, re)) = &self.pattern {
                    if !re.is_match(s) {
                        errs.push(invalid(
                            render(v),
                            format!("{path} in body should match '{p}'"),
                        ));
                    }
                }
                if !format_ok(&self.format, s) {
                    errs.push(invalid(
                        render(v),
                        format!("{path} in body must be of type {}: {s:?}", self.format),
                    ));
                }
            }
            Value::Array(items) => {
                let n = items.len() as u64;
                if let Some(min) = self.min_items {
                    if n < min {
                        errs.push(invalid(
                            n.to_string(),
                            format!("{path} in body should have at least {min} items"),
                        ));
                    }
                }
                if let Some(max) = self.max_items {
                    if n > max {
                        errs.push(FieldError {
                            kind: FieldErrorType::TooMany,
                            field: path.to_string(),
                            value: Some(n.to_string()),
                            detail: format!("must have at most {max} items"),
                        });
                    }
                }
                if let Some(item) = &self.items {
                    for (i, it) in items.iter().enumerate() {
                        item.validate(it, &format!("{path}[{i}]"), errs);
                    }
                }
            }
            Value::Object(m) => {
                let n = m.len() as u64;
                if let Some(min) = self.min_properties {
                    if n < min {
                        errs.push(invalid(
                            n.to_string(),
                            format!("{path} in body should have at least {min} properties"),
                        ));
                    }
                }
                if let Some(max) = self.max_properties {
                    if n > max {
                        errs.push(invalid(
                            n.to_string(),
                            format!("{path} in body should have at most {max} properties"),
                        ));
                    }
                }
                self.validate_properties(m, path, self.embedded, errs);
            }
            _ => {}
        }
    }

    /// Required fields and declared properties of an object; `resource`: it is a whole
    /// object (the root or an embedded resource) whose apiVersion, kind and metadata are
    /// checked as object metadata, not by the schema.
    fn validate_properties(
        &self,
        m: &Map<String, Value>,
        path: &str,
        resource: bool,
        errs: &mut FieldErrors,
    ) {
        if resource && self.embedded {
            for f in ["apiVersion", "kind"] {
                if m.get(f).and_then(Value::as_str).unwrap_or("").is_empty() {
                    errs.push(FieldError::required(child(path, f), "must not be empty"));
                }
            }
        }
        for r in &self.required {
            if !m.contains_key(r) {
                errs.push(FieldError::required(child(path, r), ""));
            }
        }
        for (k, v) in m {
            if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(p) = self.properties.get(k) {
                p.validate(v, &child(path, k), errs);
            } else if let Additional::Schema(s) = &self.additional {
                s.validate(v, &child(path, k), errs);
            }
        }
    }

    /// Fills `default`s of absent fields, top-down.
    pub fn apply_defaults(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, p) in &self.properties {
                    let absent = match m.get(k) {
                        None => true,
                        Some(Value::Null) => !p.nullable,
                        Some(_) => false,
                    };
                    if absent {
                        if let Some(d) = &p.default {
                            m.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(x) = m.get_mut(k) {
                        p.apply_defaults(x);
                    }
                }
                if let Additional::Schema(s) = &self.additional {
                    for (k, x) in m.iter_mut() {
                        if !self.properties.contains_key(k) {
                            s.apply_defaults(x);
                        }
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = &self.items {
                    for it in items {
                        item.apply_defaults(it);
                    }
                }
            }
            _ => {}
        }
    }

    /// Removes fields the schema does not declare from a whole custom resource; returns their
    /// paths (`spec.foo`), as `fieldValidation` reports them.
    pub fn prune_object(&self, obj: &mut Value) -> Vec<String> {
        let mut pruned = Vec::new();
        if let Value::Object(m) = obj {
            self.prune_map(m, "", true, &mut pruned);
        }
        pruned
    }

    fn prune(&self, v: &mut Value, path: &str, pruned: &mut Vec<String>) {
        match v {
            Value::Object(m) => self.prune_map(m, path, self.embedded, pruned),
            Value::Array(items) => {
                if let Some(item) = &self.items {
                    for (i, it) in items.iter_mut().enumerate() {
                        item.prune(it, &format!("{path}[{i}]"), pruned);
                    }
                }
            }
            _ => {}
        }
    }

    fn prune_map(
        &self,
        m: &mut Map<String, Value>,
        path: &str,
        resource: bool,
        pruned: &mut Vec<String>,
    ) {
        let keys: Vec<String> = m.keys().cloned().collect();
        for k in keys {
            if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let p = child(path, &k);
            if let Some(s) = self.properties.get(&k) {
                if let Some(x) = m.get_mut(&k) {
                    s.prune(x, &p, pruned);
                }
                continue;
            }
            match &self.additional {
                Additional::Schema(s) => {
                    if let Some(x) = m.get_mut(&k) {
                        s.prune(x, &p, pruned);
                    }
                }
                Additional::Any => {}
                Additional::None if self.preserve_unknown => {}
                Additional::None => {
                    m.remove(&k);
                    pruned.push(p);
                }
            }
        }
    }
}

/// The string formats checked (upstream's format registry, the common subset); unknown
/// formats pass.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "byte" => base64::engine::general_purpose::STANDARD.decode(s).is_ok(),
        "uuid" => uuid::Uuid::parse_str(s).is_ok(),
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn schema() -> Schema {
        Schema::parse(&json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
                        "size": {"type": "string", "enum": ["small", "large"]},
                        "name": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 5},
                        "port": {"x-kubernetes-int-or-string": true},
                        "when": {"type": "string", "format": "date-time"},
                        "tags": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string"}},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "template": {"type": "object", "x-kubernetes-embedded-resource": true,
                                     "properties": {"spec": {"type": "object"}}},
                    }
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}
            }
        }))
        .unwrap()
    }

    fn msgs(obj: Value) -> Vec<String> {
        schema()
            .validate_object(&obj)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn validation_messages_follow_upstream() {
        assert_eq!(
            msgs(json!({"spec": {"size": "small", "replicas": "3"}})),
            ["spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""]
        );
        assert_eq!(
            msgs(json!({"spec": {"size": "medium", "replicas": -1}})),
            [
                "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
                "spec.size: Unsupported value: \"medium\": supported values: \"small\", \"large\"",
            ]
        );
        assert_eq!(msgs(json!({"spec": {}})), ["spec.size: Required value"]);
        assert_eq!(
            msgs(json!({"spec": {"size": "small", "name": "A", "port": true, "when": "soon", "tags": []}})),
            [
                "spec.name: Invalid value: \"A\": spec.name in body should be at least 2 chars long",
                "spec.name: Invalid value: \"A\": spec.name in body should match '^[a-z]+$'",
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"",
                "spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items",
                "spec.when: Invalid value: \"soon\": spec.when in body must be of type date-time: \"soon\"",
            ]
        );
        assert_eq!(
            msgs(json!({"spec": {"size": "small", "name": "abcdef", "tags": ["a", "b", 3], "replicas": 11}})),
            [
                "spec.name: Too long: may not be more than 5 bytes",
                "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
                "spec.tags: Too many: 3: must have at most 2 items",
                "spec.tags[2]: Invalid value: \"integer\": spec.tags[2] in body must be of type string: \"integer\"",
            ]
        );
        assert_eq!(
            msgs(json!({"spec": {"size": "small", "port": "http", "labels": {"a": 1}, "template": {"spec": {}}}})),
            [
                "spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\"",
                "spec.template.apiVersion: Required value: must not be empty",
                "spec.template.kind: Required value: must not be empty",
            ]
        );
        assert!(msgs(
            json!({"spec": {"size": "large", "port": 80, "when": "2024-01-01T00:00:00Z"}})
        )
        .is_empty());
    }

    #[test]
    fn defaults_and_pruning() {
        let s = schema();
        let mut obj = json!({
            "apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a", "labels": {"k": "v"}},
            "spec": {"size": "small", "foo": 1, "extra": {"any": {"thing": 1}},
                     "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}, "bar": 2},
                     "labels": {"a": "b"}},
            "top": true,
        });
        let pruned = s.prune_object(&mut obj);
        assert_eq!(pruned, ["spec.foo", "spec.template.bar", "top"]);
        s.apply_defaults(&mut obj);
        assert_eq!(
            obj,
            json!({
                "apiVersion": "x/v1", "kind": "W", "metadata": {"name": "a", "labels": {"k": "v"}},
                "spec": {"size": "small", "replicas": 1, "extra": {"any": {"thing": 1}},
                         "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}},
                         "labels": {"a": "b"}},
            })
        );
    }

    #[test]
    fn bad_patterns_are_reported() {
        assert!(Schema::parse(&json!({"type": "string", "pattern": "("})).is_err());
    }
}
