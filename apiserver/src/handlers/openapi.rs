//! A minimal OpenAPI v3 service: per group-version documents that declare every resource's
//! operations with `x-kubernetes-group-version-kind` and the `fieldValidation` parameter, so
//! kubectl hands field validation to the server. Full schemas (for `kubectl explain` and
//! client-side apply) come from the `openapi` crate in the kubectl-fidelity work.

use std::collections::BTreeMap;

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

fn document(resources: &[&ResourceInfo]) -> Value {
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
            json!({
                "operationId": op_id(verb, r, r.namespaced),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": params,
                "responses": ok,
            })
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
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": {}},
    })
}

/// The OpenAPI v3 index and documents, built once from the registry table.
pub struct OpenApiV3 {
    index: String,
    docs: BTreeMap<String, (String, String)>,
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
            let doc = document(&rs).to_string();
            let h = hash(&doc);
            index.insert(
                gv.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{gv}?hash={h}")}),
            );
            docs.insert(gv, (doc, h));
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
        self.docs.get(gv).map(|(d, h)| (d.as_str(), h.as_str()))
    }
}
