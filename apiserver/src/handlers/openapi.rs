//! The OpenAPI service: per group-version v3 documents and one v2 document. Operations
//! carry `x-kubernetes-group-version-kind` and the `fieldValidation` parameter (so kubectl hands
//! field validation to the server); the schemas, with their `x-kubernetes-*` extensions, come
//! from the `openapi` crate. Paths are rendered at start-up (small); a document with its schemas
//! is put together on its first request and kept.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

use serde_json::{json, Value};

use crate::registry::ResourceInfo;

/// `api/v1` or `apis/<group>/<version>`.
fn gv_path(r: &ResourceInfo) -> String {
    if r.group.is_empty() {
        format!("api/{}", r.version)
    } else {
        format!("apis/{}/{}", r.group, r.version)
    }
}

fn hash(s: &str) -> String {
    // FNV-1a, 64 bit: stable across runs, enough to key client caches.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016X}")
}

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "When present, indicates that modifications should not be persisted."),
        query_param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
        ),
    ]
}

fn op_id(verb: &str, r: &ResourceInfo, namespaced_path: bool) -> String {
    let group: String = if r.group.is_empty() {
        "Core".into()
    } else {
        r.group
            .split('.')
            .next()
            .unwrap_or("")
            .split('-')
            .map(|p| {
                let mut c = p.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect()
    };
    let version = {
        let mut c = r.version.chars();
        c.next()
            .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
            .unwrap_or_default()
    };
    let scope = if namespaced_path { "Namespaced" } else { "" };
    format!("{verb}{group}{version}{scope}{}", r.kind)
}

/// The media types a write accepts; kubectl computes strategic merge patches from the schema
/// only when the PATCH operation lists `application/strategic-merge-patch+json`.
fn request_body(r: &ResourceInfo, action: &str) -> Option<Value> {
    let object = json!({"schema": {"type": "object"}});
    let content: Vec<&str> = match action {
        "post" | "put" => vec!["*/*"],
        "patch" => {
            let mut c = vec![
                "application/json-patch+json",
                "application/merge-patch+json",
            ];
            if ::openapi::kind_def(r.group, r.version, r.kind).is_some() {
                c.push("application/strategic-merge-patch+json");
            }
            c
        }
        _ => return None,
    };
    let content: serde_json::Map<String, Value> = content
        .into_iter()
        .map(|c| (c.to_string(), object.clone()))
        .collect();
    Some(json!({"content": content, "required": true}))
}

/// The `paths` of one group-version.
fn paths(resources: &[&ResourceInfo]) -> serde_json::Map<String, Value> {
    let mut paths = serde_json::Map::new();
    for r in resources {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        let base = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        let coll = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        let item = format!("{coll}/{{name}}");
        let ok = json!({"200": {"description": "OK"}});
        let op = |verb: &str, action: &str, params: Vec<Value>| {
            let mut o = json!({
                "operationId": op_id(verb, r, r.namespaced),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": ok,
            });
            if let Some(body) = request_body(r, action) {
                o["requestBody"] = body;
            }
            o
        };
        paths.insert(
            coll,
            json!({
                "get": op("list", "list", vec![]),
                "post": op("create", "post", write_params()),
                "delete": op("deleteCollection", "deletecollection", vec![]),
            }),
        );
        let mut patch_params = write_params();
        patch_params.push(query_param(
            "force",
            "Force is going to \"force\" Apply requests.",
        ));
        paths.insert(
            item,
            json!({
                "get": op("read", "get", vec![]),
                "put": op("replace", "put", write_params()),
                "patch": op("patch", "patch", patch_params),
                "delete": op("delete", "delete", vec![]),
            }),
        );
    }
    paths
}

/// The kinds whose schemas a document holds.
fn kinds(resources: &[&ResourceInfo]) -> Vec<(&'static str, &'static str, &'static str)> {
    resources
        .iter()
        .map(|r| (r.group, r.version, r.kind))
        .collect()
}

/// One group-version document: its paths now, the whole text on first use.
struct GvDoc {
    paths: String,
    kinds: Vec<(&'static str, &'static str, &'static str)>,
    hash: String,
    text: OnceLock<String>,
}

impl GvDoc {
    fn text(&self) -> &str {
        self.text.get_or_init(|| {
            let schemas = ::openapi::schemas_for(&self.kinds, ::openapi::Version::V3);
            format!(
                r#"{{"openapi":"3.0.0","info":{{"title":"Kubernetes","version":"{VERSION}"}},"paths":{},"components":{{"schemas":{{{schemas}}}}}}}"#,
                self.paths
            )
        })
    }
}

const VERSION: &str = "v1.33.0";

/// The OpenAPI v3 index and documents, built once from the registry table.
pub struct OpenApiV3 {
    index: String,
    docs: BTreeMap<String, GvDoc>,
}

impl OpenApiV3 {
    pub fn new(resources: &[ResourceInfo]) -> Self {
        let mut by_gv: BTreeMap<String, Vec<&ResourceInfo>> = BTreeMap::new();
        for r in resources {
            by_gv.entry(gv_path(r)).or_default().push(r);
        }
        let mut docs = BTreeMap::new();
        let mut index = serde_json::Map::new();
        for (gv, rs) in by_gv {
            let paths = Value::Object(paths(&rs)).to_string();
            let h = hash(&format!("{paths}{}", ::openapi::digest()));
            index.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={h}")}),
            );
            let doc = GvDoc {
                paths,
                kinds: kinds(&rs),
                hash: h,
                text: OnceLock::new(),
            };
            docs.insert(gv, doc);
        }
        OpenApiV3 {
            index: json!({ "paths": index }).to_string(),
            docs,
        }
    }

    /// `/openapi/v3`.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// `/openapi/v3/<gv>`: the document and its hash (ETag).
    pub fn doc(&self, gv: &str) -> Option<(&str, &str)> {
        self.docs.get(gv).map(|d| (d.text(), d.hash.as_str()))
    }
}

/// The OpenAPI v2 document: every path and every definition, put together on first use.
pub struct OpenApiV2 {
    paths: serde_json::Map<String, Value>,
    kinds: Vec<(&'static str, &'static str, &'static str)>,
    text: OnceLock<String>,
    protobuf: OnceLock<Bytes>,
    /// The protobuf form of the last document with custom resources, by its text's hash.
    custom_protobuf: Mutex<Option<(String, Bytes)>>,
}

impl OpenApiV2 {
    pub fn new(resources: &[ResourceInfo]) -> Self {
        let all: Vec<&ResourceInfo> = resources.iter().collect();
        let mut paths = paths(&all);
        for ops in paths.values_mut() {
            if let Some(ops) = ops.as_object_mut() {
                for op in ops.values_mut() {
                    v2_operation(op);
                }
            }
        }
        OpenApiV2 {
            paths,
            kinds: kinds(&all),
            text: OnceLock::new(),
            protobuf: OnceLock::new(),
            custom_protobuf: Mutex::new(None),
        }
    }

    /// `/openapi/v2` as JSON.
    pub fn text(&self) -> &str {
        self.text
            .get_or_init(|| self.render(Value::Object(self.paths.clone()), ""))
    }

    /// The document with `paths` and the built-in definitions plus `extra` (`,"name":{..}`...).
    fn render(&self, paths: Value, extra: &str) -> String {
        let definitions = ::openapi::schemas_for(&self.kinds, ::openapi::Version::V2);
        format!(
            r#"{{"swagger":"2.0","info":{{"title":"Kubernetes","version":"{VERSION}"}},"paths":{paths},"definitions":{{{definitions}{extra}}}}}"#
        )
    }

    /// `/openapi/v2` as gnostic's `openapi.v2.Document`.
    pub fn protobuf(&self) -> Bytes {
        self.protobuf
            .get_or_init(|| Bytes::from(super::openapi_pb::document(&parse(self.text()))))
            .clone()
    }

    /// The document with the custom resources the `crds` (stored objects) serve; `None`
    /// when they serve none (the built-in document).
    fn with_custom(&self, crds: &[Value]) -> Option<String> {
        let (custom_paths, custom_defs) = custom_v2(crds);
        if custom_defs.is_empty() {
            return None;
        }
        let mut paths = self.paths.clone();
        paths.extend(custom_paths);
        let mut extra = String::new();
        // Custom lists refer to ListMeta, which no built-in kind's schema reaches.
        for meta in [OBJECT_META, LIST_META] {
            if !self.text().contains(&format!("\"{meta}\":")) {
                extra.push(',');
                extra.push_str(&::openapi::schemas_named(&[meta], ::openapi::Version::V2));
            }
        }
        for (name, s) in custom_defs {
            extra.push(',');
            extra.push_str(&Value::String(name).to_string());
            extra.push(':');
            extra.push_str(&s.to_string());
        }
        Some(self.render(Value::Object(paths), &extra))
    }

    /// `/openapi/v2` with the custom resources the `crds` serve, as JSON.
    pub fn text_with(&self, crds: &[Value]) -> String {
        self.with_custom(crds)
            .unwrap_or_else(|| self.text().to_string())
    }

    /// [`OpenApiV2::text_with`] as protobuf; the last one is kept while the CRDs stay the same.
    pub fn protobuf_with(&self, crds: &[Value]) -> Bytes {
        let Some(text) = self.with_custom(crds) else {
            return self.protobuf();
        };
        let key = hash(&text);
        let mut cached = match self.custom_protobuf.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((k, pb)) = cached.as_ref() {
            if *k == key {
                return pb.clone();
            }
        }
        let pb = Bytes::from(super::openapi_pb::document(&parse(&text)));
        *cached = Some((key, pb.clone()));
        pb
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// Upstream's `ToStructuralOpenAPIV2`: what OpenAPI v2 (and kubectl reading it) cannot take
/// is removed from a CRD's schema, recursively: `allOf`, `oneOf`, `anyOf` and `not`; a
/// nullable node loses its type, items and properties; a node preserving unknown fields
/// loses its items and properties; an array without items loses its type.
pub fn to_v2_schema(v: &mut Value) {
    let Some(o) = v.as_object_mut() else {
        return;
    };
    for k in ["allOf", "oneOf", "anyOf", "not"] {
        o.remove(k);
    }
    if o.remove("nullable").and_then(|n| n.as_bool()) == Some(true) {
        o.remove("type");
        o.remove("items");
        o.remove("properties");
    }
    if o.get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
    {
        o.remove("items");
        o.remove("properties");
    }
    if o.get("type").and_then(Value::as_str) == Some("array") && !o.contains_key("items") {
        o.remove("type");
    }
    if let Some(props) = o.get_mut("properties").and_then(Value::as_object_mut) {
        for p in props.values_mut() {
            to_v2_schema(p);
        }
    }
    if let Some(items) = o.get_mut("items") {
        to_v2_schema(items);
    }
    if let Some(ap) = o.get_mut("additionalProperties").filter(|a| a.is_object()) {
        to_v2_schema(ap);
    }
}

/// `#/components/schemas/X` references as v2's `#/definitions/X`, and v3's `allOf: [$ref]`
/// wrappers (ObjectMeta, ListMeta) as plain `$ref`s with their description.
fn v2_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(all)) = o.get("allOf") {
                if let [one] = all.as_slice() {
                    if let Some(r) = one.get("$ref").cloned() {
                        o.remove("allOf");
                        o.insert("$ref".into(), r);
                    }
                }
            }
            if let Some(Value::String(r)) = o.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/components/schemas/") {
                    *r = format!("#/definitions/{name}");
                }
            }
            for x in o.values_mut() {
                v2_refs(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(v2_refs),
        _ => {}
    }
}

/// The v2 paths and definitions of the custom resources the `crds` serve.
fn custom_v2(crds: &[Value]) -> (serde_json::Map<String, Value>, Vec<(String, Value)>) {
    let mut infos = Vec::new();
    let mut defs = Vec::new();
    for (r, mut schema) in served_versions(crds) {
        to_v2_schema(&mut schema);
        for (name, mut s) in custom_schemas(&r, &schema) {
            v2_refs(&mut s);
            defs.push((name, s));
        }
        infos.push(r);
    }
    let refs: Vec<&ResourceInfo> = infos.iter().collect();
    let mut paths = paths(&refs);
    for ops in paths.values_mut() {
        if let Some(ops) = ops.as_object_mut() {
            for op in ops.values_mut() {
                v2_operation(op);
            }
        }
    }
    (paths, defs)
}

/// A v3 operation in v2 form: parameters carry their type, bodies become `consumes`.
fn v2_operation(op: &mut Value) {
    if let Some(body) = op.as_object_mut().and_then(|o| o.remove("requestBody")) {
        let consumes: Vec<Value> = body["content"]
            .as_object()
            .map(|c| c.keys().map(|k| json!(k)).collect())
            .unwrap_or_default();
        op["consumes"] = Value::Array(consumes);
    }
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params {
            if let Some(o) = p.as_object_mut() {
                o.remove("schema");
                o.insert("type".into(), json!("string"));
                o.insert("uniqueItems".into(), json!(true));
            }
        }
    }
}

/// Upstream's name of a custom resource's schema: the group reversed, the version, the
/// kind (`e2e.example.com`, `v1`, `Gizmo` → `com.example.e2e.v1.Gizmo`).
fn custom_schema_name(group: &str, version: &str, kind: &str) -> String {
    let rev: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", rev.join("."))
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// The schema of one served version of a CRD (its `openAPIV3Schema` with `apiVersion`,
/// `kind` and `metadata` filled in as upstream's builder does) and of its list.
fn custom_schemas(r: &ResourceInfo, schema: &Value) -> [(String, Value); 2] {
    let gvk = json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
    let api_version = json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"});
    let kind = json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"});
    let mut item = if schema.is_object() {
        schema.clone()
    } else {
        json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
    };
    if let Some(o) = item.as_object_mut() {
        let props = o.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".into(), api_version.clone());
            p.insert("kind".into(), kind.clone());
            p.insert(
                "metadata".into(),
                json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"}),
            );
        }
        o.insert("x-kubernetes-group-version-kind".into(), gvk);
    }
    let name = custom_schema_name(r.group, r.version, r.kind);
    let list = json!({
        "type": "object",
        "description": format!("{}List is a list of {}", r.kind, r.kind),
        "required": ["items"],
        "properties": {
            "apiVersion": api_version,
            "items": {"type": "array", "description": format!("List of {}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md", r.plural),
                      "items": {"$ref": format!("#/components/schemas/{name}")}},
            "kind": kind,
            "metadata": {"allOf": [{"$ref": format!("#/components/schemas/{LIST_META}")}], "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"},
        },
        "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": format!("{}List", r.kind)}],
    });
    [(format!("{name}List"), list), (name, item)]
}

/// Every version the `crds` (stored objects, those being deleted left out) serve, with its
/// `openAPIV3Schema` (null when it has none).
fn served_versions(crds: &[Value]) -> Vec<(ResourceInfo, Value)> {
    let mut out = Vec::new();
    for crd in crds {
        if !crate::object::meta_str(crd, "deletionTimestamp").is_empty() {
            continue;
        }
        let Ok(served) = crate::crd::served(crd) else {
            continue;
        };
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for r in served.versions {
            let schema = versions
                .iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(r.version))
                .and_then(|v| v.pointer("/schema/openAPIV3Schema"))
                .cloned()
                .unwrap_or(Value::Null);
            out.push((r, schema));
        }
    }
    out
}

/// The resources of one custom group-version and their named schemas.
type CustomGv = (Vec<ResourceInfo>, Vec<(String, Value)>);

/// The OpenAPI v3 documents of the custom resources the `crds` (stored objects) serve, by
/// group-version path (`apis/<group>/<version>`): each document and its hash.
pub fn custom_docs(crds: &[Value]) -> BTreeMap<String, (String, String)> {
    let mut by_gv: BTreeMap<String, CustomGv> = BTreeMap::new();
    for (r, schema) in served_versions(crds) {
        let entry = by_gv.entry(gv_path(&r)).or_default();
        entry.1.extend(custom_schemas(&r, &schema));
        entry.0.push(r);
    }
    let meta = ::openapi::schemas_named(&[OBJECT_META, LIST_META], ::openapi::Version::V3);
    by_gv
        .into_iter()
        .map(|(gv, (infos, schemas))| {
            let refs: Vec<&ResourceInfo> = infos.iter().collect();
            let paths = Value::Object(paths(&refs)).to_string();
            let mut custom = String::new();
            for (name, s) in schemas {
                custom.push(',');
                custom.push_str(&Value::String(name).to_string());
                custom.push(':');
                custom.push_str(&s.to_string());
            }
            let text = format!(
                r#"{{"openapi":"3.0.0","info":{{"title":"Kubernetes CRD Swagger","version":"v0.1.0"}},"paths":{paths},"components":{{"schemas":{{{meta}{custom}}}}}}}"#
            );
            let h = hash(&text);
            (gv, (text, h))
        })
        .collect()
}

impl OpenApiV3 {
    /// `/openapi/v3` with the custom resources' group-versions (`custom`, from
    /// [`custom_docs`]) added.
    pub fn index_with(&self, custom: &BTreeMap<String, (String, String)>) -> String {
        if custom.is_empty() {
            return self.index.clone();
        }
        let mut v: Value =
            serde_json::from_str(&self.index).unwrap_or_else(|_| json!({"paths": {}}));
        if let Some(paths) = v.get_mut("paths").and_then(Value::as_object_mut) {
            for (gv, (_, h)) in custom {
                paths.entry(gv.clone()).or_insert_with(
                    || json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={h}")}),
                );
            }
        }
        v.to_string()
    }
}

#[cfg(test)]
mod v2_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn crd_schemas_lose_what_v2_cannot_take() {
        let mut s = json!({"type": "object", "properties": {
            "a": {"type": "string", "nullable": true},
            "b": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                  "properties": {"x": {"type": "string"}}},
            "c": {"type": "array"},
            "d": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true},
            "e": {"type": "array", "items": {"type": "object", "oneOf": [{"required": ["x"]}],
                  "properties": {"x": {"type": "string", "nullable": false}}}},
        }});
        to_v2_schema(&mut s);
        assert_eq!(
            s["properties"],
            json!({
                "a": {},
                "b": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "c": {},
                "d": {"x-kubernetes-int-or-string": true},
                "e": {"type": "array", "items": {"type": "object",
                      "properties": {"x": {"type": "string"}}}},
            })
        );
        let mut refs = json!({"metadata": {"allOf": [{"$ref": "#/components/schemas/M"}], "description": "d"}});
        v2_refs(&mut refs);
        assert_eq!(
            refs,
            json!({"metadata": {"$ref": "#/definitions/M", "description": "d"}})
        );
    }
}
