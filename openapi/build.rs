//! Generates the OpenAPI definitions and the strategic-merge-patch type graph from the
//! k8s-openapi v1.33 types (their `schemars` schemas) plus the upstream field markers in
//! `src/markers.rs`. Output: `$OUT_DIR/generated.rs`, included by `src/lib.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use k8s_openapi::{api, apiextensions_apiserver, kube_aggregator, Resource};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

#[allow(dead_code)]
#[path = "src/markers.rs"]
mod markers;

#[path = "src/enums.rs"]
mod enums;

const V2_PREFIX: &str = "#/definitions/";
const V3_PREFIX: &str = "#/components/schemas/";

struct Root {
    def: String,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
}

macro_rules! roots {
    ($($path:path),* $(,)?) => {
        fn roots(generator: &mut schemars::SchemaGenerator) -> Vec<Root> {
            let mut out = Vec::new();
            $(
                {
                    type T = $path;
                    generator.subschema_for::<T>();
                    out.push(Root {
                        def: <T as schemars::JsonSchema>::schema_name().into_owned(),
                        group: <T as Resource>::GROUP,
                        version: <T as Resource>::VERSION,
                        kind: <T as Resource>::KIND,
                    });
                }
            )*
            out
        }
    };
}

include!("src/roots.rs");

/// The definition a schema refers to, directly or as the single member of `allOf`.
fn ref_of(s: &Value) -> Option<&str> {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next();
    }
    match s.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        Some([one]) => one
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next()),
        _ => None,
    }
}

/// Rewrites references for one OpenAPI version: v3 wraps a reference with siblings in
/// `allOf` (as upstream does), v2 keeps `$ref` beside the siblings.
fn rewrite(s: &Value, v3: bool) -> Value {
    let Value::Object(m) = s else {
        return s.clone();
    };
    let mut out = Map::new();
    let target = ref_of(s).map(str::to_string);
    for (k, v) in m {
        match k.as_str() {
            "$ref" => {}
            "allOf" if target.is_some() => {}
            "properties" => {
                let props = v
                    .as_object()
                    .map(|p| {
                        p.iter()
                            .map(|(name, ps)| (name.clone(), rewrite(ps, v3)))
                            .collect::<Map<_, _>>()
                    })
                    .unwrap_or_default();
                out.insert(k.clone(), Value::Object(props));
            }
            "items" | "additionalProperties" => {
                out.insert(k.clone(), rewrite(v, v3));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(t) = target {
        if !v3 {
            out.insert("$ref".into(), json!(format!("{V2_PREFIX}{t}")));
        } else if out.is_empty() {
            out.insert("$ref".into(), json!(format!("{V3_PREFIX}{t}")));
        } else {
            out.insert(
                "allOf".into(),
                json!([{ "$ref": format!("{V3_PREFIX}{t}") }]),
            );
        }
    }
    Value::Object(out)
}

/// Upstream's own shapes for the types with custom JSON forms.
fn special(name: &str, description: &Value, v3: bool) -> Option<Value> {
    let s = match (name, v3) {
        ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", true) => {
            json!({"format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]})
        }
        ("io.k8s.apimachinery.pkg.util.intstr.IntOrString", false) => {
            json!({"format": "int-or-string", "type": "string"})
        }
        ("io.k8s.apimachinery.pkg.api.resource.Quantity", true) => {
            json!({"oneOf": [{"type": "string"}, {"type": "number"}]})
        }
        ("io.k8s.apimachinery.pkg.api.resource.Quantity", false) => json!({"type": "string"}),
        _ => return None,
    };
    let mut s = s;
    s["description"] = description.clone();
    Some(s)
}

fn annotate(def: &str, schema: &mut Value, roots: &[Root]) {
    let gvks: Vec<Value> = roots
        .iter()
        .filter(|r| r.def == def)
        .map(|r| json!({"group": r.group, "kind": r.kind, "version": r.version}))
        .collect();
    if !gvks.is_empty() {
        schema["x-kubernetes-group-version-kind"] = Value::Array(gvks);
        // k8s-openapi makes a kind's metadata a required field; upstream does not.
        if let Some(m) = schema.as_object_mut() {
            let required = m.get_mut("required").and_then(Value::as_array_mut);
            if let Some(r) = required {
                r.retain(|f| f != "metadata");
                if r.is_empty() {
                    m.remove("required");
                }
            }
        }
    }
    let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
        return;
    };
    for e in enums::ENUMS.iter().filter(|e| e.def == def) {
        let Some(Value::Object(p)) = props.get_mut(e.field) else {
            continue;
        };
        // Upstream's generator lists the values in the schema and in the description.
        let values: Vec<&str> = e.values.iter().map(|(v, _)| *v).collect();
        let mut text = p
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        text.push_str("\n\nPossible enum values:");
        for (v, doc) in e.values {
            let _ = write!(text, "\n - `{v:?}`");
            if !doc.is_empty() {
                let _ = write!(text, " {doc}");
            }
        }
        p.insert("description".into(), json!(text));
        if !e.list {
            p.insert("enum".into(), json!(values));
        } else if let Some(Value::Object(items)) = p.get_mut("items") {
            items.insert("enum".into(), json!(values));
        }
    }
    for mk in markers::MARKERS.iter().filter(|m| m.def == def) {
        let Some(Value::Object(p)) = props.get_mut(mk.field) else {
            continue;
        };
        let mut set = |k: &str, v: &str| {
            if !v.is_empty() {
                p.insert(k.into(), json!(v));
            }
        };
        set("x-kubernetes-patch-strategy", mk.patch_strategy);
        set("x-kubernetes-patch-merge-key", mk.merge_key);
        set("x-kubernetes-list-type", mk.list_type);
        set("x-kubernetes-map-type", mk.map_type);
        if !mk.list_map_keys.is_empty() {
            p.insert("x-kubernetes-list-map-keys".into(), json!(mk.list_map_keys));
        }
    }
}

/// The definitions a schema refers to.
fn deps(s: &Value, out: &mut BTreeSet<String>) {
    match s {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                if let Some(n) = r.rsplit('/').next() {
                    out.insert(n.to_string());
                }
            }
            for v in m.values() {
                deps(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| deps(v, out)),
        _ => {}
    }
}

/// The definition a property's values (object, list items or map values) have.
fn child(p: &Value) -> Option<&str> {
    ref_of(p)
        .or_else(|| p.get("items").and_then(ref_of))
        .or_else(|| p.get("additionalProperties").and_then(ref_of))
}

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=src/markers.rs");
    println!("cargo::rerun-if-changed=src/enums.rs");
    println!("cargo::rerun-if-changed=src/roots.rs");

    let mut generator = SchemaSettings::draft07()
        .with(|s| s.transforms.clear())
        .into_generator();
    let roots = roots(&mut generator);
    // No root kind reaches ListMeta; custom resource lists (and their documents) refer to it.
    generator.subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ListMeta>();
    let defs: BTreeMap<String, Value> = generator
        .definitions()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let index: BTreeMap<&str, usize> = defs
        .keys()
        .enumerate()
        .map(|(i, k)| (k.as_str(), i))
        .collect();

    let mut out = String::new();
    out.push_str("pub static DEFS: &[Def] = &[\n");
    let mut digest: u64 = 0xcbf29ce484222325;
    for (name, raw) in &defs {
        let description = raw.get("description").cloned().unwrap_or(Value::Null);
        let mut v3 = special(name, &description, true).unwrap_or_else(|| rewrite(raw, true));
        let mut v2 = special(name, &description, false).unwrap_or_else(|| rewrite(raw, false));
        annotate(name, &mut v3, &roots);
        annotate(name, &mut v2, &roots);
        let mut d = BTreeSet::new();
        deps(&v3, &mut d);
        let dep_ix: Vec<String> = d
            .iter()
            .filter_map(|n| index.get(n.as_str()))
            .map(|i| i.to_string())
            .collect();
        let mut props = String::new();
        if let Some(ps) = raw.get("properties").and_then(Value::as_object) {
            for (field, p) in ps {
                let target = child(p).and_then(|c| index.get(c)).copied();
                let mk = markers::MARKERS
                    .iter()
                    .find(|m| m.def == name && m.field == field);
                let (strategy, key) = mk
                    .map(|m| (m.patch_strategy, m.merge_key))
                    .unwrap_or(("", ""));
                if target.is_none() && strategy.is_empty() {
                    continue;
                }
                let _ = write!(
                    props,
                    "Prop {{ name: {field:?}, child: {}, strategy: {strategy:?}, merge_key: {key:?} }}, ",
                    target.map_or("NONE".to_string(), |t| t.to_string())
                );
            }
        }
        let (v3s, v2s) = (v3.to_string(), v2.to_string());
        for b in v3s.bytes() {
            digest ^= u64::from(b);
            digest = digest.wrapping_mul(0x100000001b3);
        }
        let _ = writeln!(
            out,
            "Def {{ name: {name:?}, v3: {v3s:?}, v2: {v2s:?}, deps: &[{}], props: &[{props}] }},",
            dep_ix.join(", ")
        );
    }
    out.push_str("];\n\npub static KINDS: &[Kind] = &[\n");
    for r in &roots {
        if let Some(i) = index.get(r.def.as_str()) {
            let _ = writeln!(
                out,
                "Kind {{ group: {:?}, version: {:?}, kind: {:?}, def: {i} }},",
                r.group, r.version, r.kind
            );
        }
    }
    out.push_str("];\n");
    let _ = writeln!(out, "\npub const DIGEST: &str = \"{digest:016X}\";");

    let dir = std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into());
    if let Err(e) = std::fs::write(format!("{dir}/generated.rs"), out) {
        panic!("writing generated.rs: {e}");
    }
}
