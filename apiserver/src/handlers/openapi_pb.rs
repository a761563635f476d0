//! `/openapi/v2` in protobuf (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`):
//! the JSON document encoded as gnostic's `openapi.v2.Document`
//! (github.com/google/gnostic-models, openapiv2/OpenAPIv2.proto), which client-go's
//! `OpenAPISchema()` asks for and kubectl reads (`kubectl explain
//! --output=plaintext-openapiv2`, and client-side validation of kinds missing from v3).
//!
//! As upstream's kube-openapi does, values of `default`, `enum`, `example` and vendor
//! extensions are `Any`s holding their YAML form.

use serde_json::{Map, Value};

/// Serialized length-delimited messages, written field by field.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, number: u32, wire: u8) {
        self.varint(u64::from(number) << 3 | u64::from(wire));
    }

    fn bytes(&mut self, number: u32, data: &[u8]) {
        self.key(number, 2);
        self.varint(data.len() as u64);
        self.0.extend_from_slice(data);
    }

    /// A string field; proto3 leaves out empty ones.
    fn string(&mut self, number: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(number, s.as_bytes());
        }
    }

    fn message(&mut self, number: u32, f: impl FnOnce(&mut Out)) {
        let mut inner = Out::default();
        f(&mut inner);
        self.bytes(number, &inner.0);
    }

    fn bool(&mut self, number: u32, b: bool) {
        if b {
            self.key(number, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, number: u32, i: i64) {
        if i != 0 {
            self.key(number, 0);
            self.varint(i as u64);
        }
    }

    fn double(&mut self, number: u32, f: f64) {
        if f != 0.0 {
            self.key(number, 1);
            self.0.extend_from_slice(&f.to_le_bytes());
        }
    }

    /// `Any { yaml = 2 }` with the value's YAML form.
    fn any(&mut self, number: u32, v: &Value) {
        let yaml = serde_yaml::to_string(v).unwrap_or_default();
        self.message(number, |o| o.string(2, &yaml));
    }

    /// `repeated NamedAny` of the object's `x-` keys.
    fn extensions(&mut self, number: u32, obj: &Map<String, Value>) {
        for (k, v) in obj {
            if k.starts_with("x-") {
                self.message(number, |o| {
                    o.string(1, k);
                    o.any(2, v);
                });
            }
        }
    }

    fn strings(&mut self, number: u32, v: Option<&Value>) {
        match v {
            Some(Value::Array(items)) => {
                for s in items.iter().filter_map(Value::as_str) {
                    // Repeated strings keep empty elements.
                    self.bytes(number, s.as_bytes());
                }
            }
            Some(Value::String(s)) => self.bytes(number, s.as_bytes()),
            _ => {}
        }
    }
}

/// How one JSON key of a message is written.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Double,
    Int,
    Strs,
    Any,
    Anys,
    /// `PrimitivesItems` (the `items` of a non-body parameter or header).
    Primitives,
    Ext,
}

/// Writes the keys of `obj` named in `table` (JSON key, field number, kind); `Ext` writes
/// the `x-` keys.
fn fields(out: &mut Out, obj: &Map<String, Value>, table: &[(&str, u32, Kind)]) {
    for &(key, number, kind) in table {
        if let Kind::Ext = kind {
            out.extensions(number, obj);
            continue;
        }
        let Some(v) = obj.get(key) else {
            continue;
        };
        match kind {
            Kind::Str => out.string(number, v.as_str().unwrap_or_default()),
            Kind::Bool => out.bool(number, v.as_bool().unwrap_or_default()),
            Kind::Double => out.double(number, v.as_f64().unwrap_or_default()),
            Kind::Int => out.int64(number, v.as_i64().unwrap_or_default()),
            Kind::Strs => out.strings(number, Some(v)),
            Kind::Any => out.any(number, v),
            Kind::Anys => {
                for e in v.as_array().into_iter().flatten() {
                    out.any(number, e);
                }
            }
            Kind::Primitives => {
                if let Some(o) = v.as_object() {
                    out.message(number, |m| fields(m, o, PRIMITIVES_ITEMS));
                }
            }
            Kind::Ext => {}
        }
    }
}

const PRIMITIVES_ITEMS: &[(&str, u32, Kind)] = &[
    ("type", 1, Kind::Str),
    ("format", 2, Kind::Str),
    ("items", 3, Kind::Primitives),
    ("collectionFormat", 4, Kind::Str),
    ("default", 5, Kind::Any),
    ("maximum", 6, Kind::Double),
    ("exclusiveMaximum", 7, Kind::Bool),
    ("minimum", 8, Kind::Double),
    ("exclusiveMinimum", 9, Kind::Bool),
    ("maxLength", 10, Kind::Int),
    ("minLength", 11, Kind::Int),
    ("pattern", 12, Kind::Str),
    ("maxItems", 13, Kind::Int),
    ("minItems", 14, Kind::Int),
    ("uniqueItems", 15, Kind::Bool),
    ("enum", 16, Kind::Anys),
    ("multipleOf", 17, Kind::Double),
    ("", 18, Kind::Ext),
];

/// `QueryParameterSubSchema` and `FormDataParameterSubSchema` (the same numbers).
const QUERY_PARAMETER: &[(&str, u32, Kind)] = &[
    ("required", 1, Kind::Bool),
    ("in", 2, Kind::Str),
    ("description", 3, Kind::Str),
    ("name", 4, Kind::Str),
    ("allowEmptyValue", 5, Kind::Bool),
    ("type", 6, Kind::Str),
    ("format", 7, Kind::Str),
    ("items", 8, Kind::Primitives),
    ("collectionFormat", 9, Kind::Str),
    ("default", 10, Kind::Any),
    ("maximum", 11, Kind::Double),
    ("exclusiveMaximum", 12, Kind::Bool),
    ("minimum", 13, Kind::Double),
    ("exclusiveMinimum", 14, Kind::Bool),
    ("maxLength", 15, Kind::Int),
    ("minLength", 16, Kind::Int),
    ("pattern", 17, Kind::Str),
    ("maxItems", 18, Kind::Int),
    ("minItems", 19, Kind::Int),
    ("uniqueItems", 20, Kind::Bool),
    ("enum", 21, Kind::Anys),
    ("multipleOf", 22, Kind::Double),
    ("", 23, Kind::Ext),
];

/// `PathParameterSubSchema` and `HeaderParameterSubSchema` (the same numbers).
const PATH_PARAMETER: &[(&str, u32, Kind)] = &[
    ("required", 1, Kind::Bool),
    ("in", 2, Kind::Str),
    ("description", 3, Kind::Str),
    ("name", 4, Kind::Str),
    ("type", 5, Kind::Str),
    ("format", 6, Kind::Str),
    ("items", 7, Kind::Primitives),
    ("collectionFormat", 8, Kind::Str),
    ("default", 9, Kind::Any),
    ("maximum", 10, Kind::Double),
    ("exclusiveMaximum", 11, Kind::Bool),
    ("minimum", 12, Kind::Double),
    ("exclusiveMinimum", 13, Kind::Bool),
    ("maxLength", 14, Kind::Int),
    ("minLength", 15, Kind::Int),
    ("pattern", 16, Kind::Str),
    ("maxItems", 17, Kind::Int),
    ("minItems", 18, Kind::Int),
    ("uniqueItems", 19, Kind::Bool),
    ("enum", 20, Kind::Anys),
    ("multipleOf", 21, Kind::Double),
    ("", 22, Kind::Ext),
];

/// The scalar keys of `Schema`; the nested ones are written by [`schema`].
const SCHEMA: &[(&str, u32, Kind)] = &[
    ("$ref", 1, Kind::Str),
    ("format", 2, Kind::Str),
    ("title", 3, Kind::Str),
    ("description", 4, Kind::Str),
    ("default", 5, Kind::Any),
    ("multipleOf", 6, Kind::Double),
    ("maximum", 7, Kind::Double),
    ("exclusiveMaximum", 8, Kind::Bool),
    ("minimum", 9, Kind::Double),
    ("exclusiveMinimum", 10, Kind::Bool),
    ("maxLength", 11, Kind::Int),
    ("minLength", 12, Kind::Int),
    ("pattern", 13, Kind::Str),
    ("maxItems", 14, Kind::Int),
    ("minItems", 15, Kind::Int),
    ("uniqueItems", 16, Kind::Bool),
    ("maxProperties", 17, Kind::Int),
    ("minProperties", 18, Kind::Int),
    ("required", 19, Kind::Strs),
    ("enum", 20, Kind::Anys),
];

const SCHEMA_TAIL: &[(&str, u32, Kind)] = &[
    ("discriminator", 26, Kind::Str),
    ("readOnly", 27, Kind::Bool),
    ("example", 30, Kind::Any),
    ("", 31, Kind::Ext),
];

/// `Schema`, in field-number order.
fn schema(out: &mut Out, v: &Value) {
    let Some(obj) = v.as_object() else {
        return;
    };
    fields(out, obj, SCHEMA);
    match obj.get("additionalProperties") {
        Some(Value::Bool(b)) => out.message(21, |o| {
            // AdditionalPropertiesItem.boolean = 2 (false is written: it is the oneof's value).
            o.key(2, 0);
            o.varint(u64::from(*b));
        }),
        Some(s @ Value::Object(_)) => out.message(21, |o| o.message(1, |m| schema(m, s))),
        _ => {}
    }
    if let Some(t) = obj.get("type") {
        out.message(22, |o| o.strings(1, Some(t)));
    }
    match obj.get("items") {
        Some(Value::Array(items)) => out.message(23, |o| {
            for i in items {
                o.message(1, |m| schema(m, i));
            }
        }),
        Some(i @ Value::Object(_)) => out.message(23, |o| o.message(1, |m| schema(m, i))),
        _ => {}
    }
    for s in obj
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.message(24, |o| schema(o, s));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        out.message(25, |o| named_schemas(o, props));
    }
    fields(out, obj, SCHEMA_TAIL);
}

/// `repeated NamedSchema additional_properties = 1` (Properties, Definitions).
fn named_schemas(out: &mut Out, map: &Map<String, Value>) {
    for (name, s) in map {
        out.message(1, |o| {
            o.string(1, name);
            o.message(2, |m| schema(m, s));
        });
    }
}

/// `ParametersItem`: a `$ref` (JsonReference) or a parameter, body or not.
fn parameter_item(out: &mut Out, p: &Value) {
    let Some(obj) = p.as_object() else {
        return;
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        out.message(2, |o| {
            o.string(1, r);
            o.string(
                2,
                obj.get("description").and_then(Value::as_str).unwrap_or(""),
            );
        });
        return;
    }
    out.message(1, |o| parameter(o, obj));
}

/// `Parameter`: oneof body_parameter = 1, non_body_parameter = 2.
fn parameter(out: &mut Out, obj: &Map<String, Value>) {
    match obj.get("in").and_then(Value::as_str).unwrap_or("") {
        "body" => out.message(1, |o| {
            o.string(
                1,
                obj.get("description").and_then(Value::as_str).unwrap_or(""),
            );
            o.string(2, obj.get("name").and_then(Value::as_str).unwrap_or(""));
            o.string(3, "body");
            o.bool(
                4,
                obj.get("required")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            );
            if let Some(s) = obj.get("schema") {
                o.message(5, |m| schema(m, s));
            }
            o.extensions(6, obj);
        }),
        place => {
            let (number, table) = match place {
                "header" => (1, PATH_PARAMETER),
                "formData" => (2, QUERY_PARAMETER),
                "path" => (4, PATH_PARAMETER),
                _ => (3, QUERY_PARAMETER),
            };
            out.message(2, |o| o.message(number, |m| fields(m, obj, table)));
        }
    }
}

/// `Operation`.
fn operation(out: &mut Out, op: &Map<String, Value>) {
    out.strings(1, op.get("tags"));
    fields(
        out,
        op,
        &[("summary", 2, Kind::Str), ("description", 3, Kind::Str)],
    );
    fields(out, op, &[("operationId", 5, Kind::Str)]);
    out.strings(6, op.get("produces"));
    out.strings(7, op.get("consumes"));
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.message(8, |o| parameter_item(o, p));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        out.message(9, |o| {
            for (code, r) in responses.iter().filter(|(k, _)| !k.starts_with("x-")) {
                o.message(1, |named| {
                    named.string(1, code);
                    named.message(2, |value| match r.get("$ref").and_then(Value::as_str) {
                        Some(reference) => value.message(2, |j| j.string(1, reference)),
                        None => value.message(1, |resp| {
                            resp.string(
                                1,
                                r.get("description").and_then(Value::as_str).unwrap_or(""),
                            );
                            if let Some(s) = r.get("schema") {
                                resp.message(2, |item| item.message(1, |m| schema(m, s)));
                            }
                            if let Some(o) = r.as_object() {
                                resp.extensions(5, o);
                            }
                        }),
                    });
                });
            }
            o.extensions(2, responses);
        });
    }
    out.strings(10, op.get("schemes"));
    out.bool(
        11,
        op.get("deprecated")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    );
    out.extensions(13, op);
}

/// The whole document as `openapi.v2.Document`.
pub fn document(doc: &Value) -> Vec<u8> {
    let mut out = Out::default();
    let Some(d) = doc.as_object() else {
        return out.0;
    };
    out.string(1, d.get("swagger").and_then(Value::as_str).unwrap_or("2.0"));
    if let Some(info) = d.get("info").and_then(Value::as_object) {
        out.message(2, |o| {
            fields(
                o,
                info,
                &[
                    ("title", 1, Kind::Str),
                    ("version", 2, Kind::Str),
                    ("description", 3, Kind::Str),
                    ("termsOfService", 4, Kind::Str),
                    ("", 7, Kind::Ext),
                ],
            )
        });
    }
    fields(
        &mut out,
        d,
        &[("host", 3, Kind::Str), ("basePath", 4, Kind::Str)],
    );
    out.strings(5, d.get("schemes"));
    out.strings(6, d.get("consumes"));
    out.strings(7, d.get("produces"));
    if let Some(paths) = d.get("paths").and_then(Value::as_object) {
        out.message(8, |o| {
            o.extensions(1, paths);
            for (path, item) in paths.iter().filter(|(k, _)| !k.starts_with("x-")) {
                let Some(item) = item.as_object() else {
                    continue;
                };
                o.message(2, |named| {
                    named.string(1, path);
                    named.message(2, |pi| {
                        pi.string(1, item.get("$ref").and_then(Value::as_str).unwrap_or(""));
                        for (verb, number) in [
                            ("get", 2),
                            ("put", 3),
                            ("post", 4),
                            ("delete", 5),
                            ("options", 6),
                            ("head", 7),
                            ("patch", 8),
                        ] {
                            if let Some(op) = item.get(verb).and_then(Value::as_object) {
                                pi.message(number, |m| operation(m, op));
                            }
                        }
                        for p in item
                            .get("parameters")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                        {
                            pi.message(9, |m| parameter_item(m, p));
                        }
                        pi.extensions(10, item);
                    });
                });
            }
        });
    }
    if let Some(defs) = d.get("definitions").and_then(Value::as_object) {
        out.message(9, |o| named_schemas(o, defs));
    }
    if let Some(params) = d.get("parameters").and_then(Value::as_object) {
        out.message(10, |o| {
            for (name, p) in params {
                if let Some(p) = p.as_object() {
                    o.message(1, |named| {
                        named.string(1, name);
                        named.message(2, |m| parameter(m, p));
                    });
                }
            }
        });
    }
    if let Some(sec) = d.get("securityDefinitions").and_then(Value::as_object) {
        out.message(13, |o| {
            for (name, s) in sec {
                let Some(s) = s.as_object() else {
                    continue;
                };
                o.message(1, |named| {
                    named.string(1, name);
                    named.message(2, |item| match s.get("type").and_then(Value::as_str) {
                        Some("apiKey") => item.message(2, |m| {
                            fields(
                                m,
                                s,
                                &[
                                    ("type", 1, Kind::Str),
                                    ("name", 2, Kind::Str),
                                    ("in", 3, Kind::Str),
                                    ("description", 4, Kind::Str),
                                    ("", 5, Kind::Ext),
                                ],
                            )
                        }),
                        _ => item.message(1, |m| {
                            fields(
                                m,
                                s,
                                &[
                                    ("type", 1, Kind::Str),
                                    ("description", 2, Kind::Str),
                                    ("", 3, Kind::Ext),
                                ],
                            )
                        }),
                    });
                });
            }
        });
    }
    for s in d
        .get("security")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(s) = s.as_object() else {
            continue;
        };
        out.message(12, |o| {
            for (name, scopes) in s {
                o.message(1, |named| {
                    named.string(1, name);
                    named.message(2, |arr| arr.strings(1, Some(scopes)));
                });
            }
        });
    }
    out.extensions(16, d);
    out.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_and_nesting_encode_as_protobuf() {
        let doc = json!({"swagger": "2.0", "info": {"title": "T", "version": "v"},
            "definitions": {"a.B": {"type": "object", "required": ["x"],
                "properties": {"x": {"type": "integer", "format": "int32"}},
                "x-kubernetes-group-version-kind": [{"group": "", "kind": "B", "version": "v1"}]}}});
        let pb = document(&doc);
        // swagger = 1 "2.0"
        assert_eq!(&pb[..5], &[0x0a, 3, b'2', b'.', b'0']);
        // info = 2 { title = 1 "T", version = 2 "v" }
        assert_eq!(&pb[5..13], &[0x12, 6, 0x0a, 1, b'T', 0x12, 1, b'v']);
        // definitions = 9 { additional_properties = 1 { name = 1 "a.B", value = 2 {...} } }
        assert_eq!(pb[13], 0x4a);
        let text = String::from_utf8_lossy(&pb);
        assert!(text.contains("a.B"));
        assert!(text.contains("x-kubernetes-group-version-kind"));
        assert!(
            text.contains("- group: ''\n  kind: B\n  version: v1\n"),
            "{text:?}"
        );
        // additionalProperties: false is written (the oneof's value).
        let mut out = Out::default();
        schema(&mut out, &json!({"additionalProperties": false}));
        assert_eq!(out.0, [0xaa, 0x01, 2, 0x10, 0]);
    }
}
