//! Objects walked with their schema (structured-merge-diff's `typed` package): the field
//! set of an object, the comparison of two, merging an applied configuration and removing
//! fields.
//!
//! The schema is OpenAPI v3: the built-in definitions from the `openapi` crate, or a custom
//! resource's `openAPIV3Schema`. What matters is how each list is identified (by keys,
//! `listType: map`; by value, `set`; or as a whole, `atomic`), which maps are atomic, and
//! which keys are declared struct fields. Without a schema, maps are granular and lists
//! atomic, as upstream's deduced type.

use super::set::{Path, PathElement, Set};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

/// The schema of one value: an OpenAPI schema object (maybe a `$ref`), or none.
#[derive(Clone, Copy)]
pub struct Node<'a>(Option<&'a Value>);

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// A built-in definition, parsed once (without descriptions) and kept.
fn builtin(name: &str) -> Option<&'static Value> {
    static CACHE: OnceLock<RwLock<HashMap<String, Option<&'static Value>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(v) = cache.read().unwrap_or_else(|e| e.into_inner()).get(name) {
        return *v;
    }
    let mut c = cache.write().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = c.get(name) {
        return *v;
    }
    let parsed = ::openapi::def_v3(name)
        .and_then(|t| serde_json::from_str::<Value>(t).ok())
        .map(|mut v| {
            strip_descriptions(&mut v);
            &*Box::leak(Box::new(v))
        });
    c.insert(name.to_string(), parsed);
    parsed
}

fn strip_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("description");
            m.values_mut().for_each(strip_descriptions);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// How a list's items are told apart.
#[derive(Debug, PartialEq)]
enum ListKind<'a> {
    Atomic,
    Set,
    Map(Vec<&'a str>),
}

impl<'a> Node<'a> {
    pub fn none() -> Node<'static> {
        Node(None)
    }

    /// The root schema of a built-in kind.
    pub fn builtin_kind(group: &str, version: &str, kind: &str) -> Node<'static> {
        Node(::openapi::kind_def(group, version, kind).and_then(|t| builtin(t.name())))
    }

    /// The root schema of a custom resource: its `openAPIV3Schema`, metadata as ObjectMeta.
    pub fn custom(schema: &'a Value) -> Node<'a> {
        Node(Some(schema))
    }

    /// The schema itself, `$ref`s followed.
    fn resolved(self) -> Option<&'a Value> {
        let mut v = self.0?;
        for _ in 0..8 {
            let r = v.get("$ref").and_then(Value::as_str).or_else(|| {
                v.get("allOf")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(|f| f.get("$ref"))
                    .and_then(Value::as_str)
            });
            match r {
                Some(r) => v = builtin(r.rsplit('/').next().unwrap_or(r))?,
                None => return Some(v),
            }
        }
        Some(v)
    }

    fn ext(self, name: &str) -> Option<&'a Value> {
        self.0
            .and_then(|v| v.get(name))
            .or_else(|| self.resolved().and_then(|v| v.get(name)))
    }

    /// A struct with declared fields (not a map).
    fn is_struct(self) -> bool {
        self.resolved()
            .is_some_and(|v| v.get("properties").is_some())
    }

    fn atomic_map(self) -> bool {
        self.ext("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
    }

    fn list_kind(self) -> ListKind<'a> {
        let keys = || -> Vec<&'a str> {
            self.ext("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        };
        match self.ext("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => return ListKind::Map(keys()),
            Some("set") => return ListKind::Set,
            Some(_) => return ListKind::Atomic,
            None => {}
        }
        let strategy = self
            .ext("x-kubernetes-patch-strategy")
            .and_then(Value::as_str)
            .unwrap_or("");
        if strategy.split(',').any(|s| s == "merge") {
            return match self
                .ext("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str)
            {
                Some(k) => ListKind::Map(vec![k]),
                None => ListKind::Set,
            };
        }
        ListKind::Atomic
    }

    fn items(self) -> Node<'a> {
        Node(self.resolved().and_then(|v| v.get("items")))
    }

    /// The schema of a key's value, and whether the key is a declared struct field.
    fn field(self, key: &str, root: bool) -> (Node<'a>, bool) {
        if root && key == "metadata" {
            return (Node(builtin(OBJECT_META)), true);
        }
        let Some(s) = self.resolved() else {
            return (Node(None), false);
        };
        if let Some(p) = s.get("properties").and_then(|p| p.get(key)) {
            return (Node(Some(p)), true);
        }
        match s.get("additionalProperties") {
            Some(a @ Value::Object(_)) => (Node(Some(a)), false),
            _ => (Node(None), false),
        }
    }

    /// A default the schema gives a key field of list items.
    fn default_of(self, key: &str) -> Option<Value> {
        let (n, _) = self.field(key, false);
        n.ext("default").cloned()
    }
}

/// The path element of a list item.
fn item_element(kind: &ListKind<'_>, items: Node<'_>, item: &Value, i: usize) -> PathElement {
    match kind {
        ListKind::Set => PathElement::value(item),
        ListKind::Map(keys) if !keys.is_empty() => match item.as_object() {
            Some(o) => {
                let mut k = Map::new();
                for name in keys {
                    let v = o.get(*name).cloned().or_else(|| {
                        items
                            .default_of(name)
                            .or_else(|| (*name == "protocol").then(|| "TCP".into()))
                    });
                    if let Some(v) = v {
                        k.insert((*name).to_string(), v);
                    }
                }
                PathElement::key(&k)
            }
            None => PathElement::Index(i),
        },
        _ => PathElement::Index(i),
    }
}

fn is_empty_map(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty)
}

/// The fields an object sets (upstream `ToFieldSet`).
pub fn to_field_set(v: &Value, node: Node<'_>) -> Set {
    let mut set = Set::default();
    field_set(v, node, true, &mut Vec::new(), &mut set);
    set
}

fn field_set(v: &Value, node: Node<'_>, root: bool, path: &mut Path, set: &mut Set) {
    match v {
        Value::Object(m) if !node.atomic_map() => {
            for (k, c) in m {
                let (child, declared) = node.field(k, root);
                path.push(PathElement::Field(k.clone()));
                field_set(c, child, false, path, set);
                if c.is_null() || is_empty_map(c) || !declared {
                    set.insert(path);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = node.list_kind();
            if kind == ListKind::Atomic {
                set.insert(path);
                return;
            }
            let inode = node.items();
            let pes: Vec<PathElement> = items
                .iter()
                .enumerate()
                .map(|(i, it)| item_element(&kind, inode, it, i))
                .collect();
            for (i, (item, pe)) in items.iter().zip(&pes).enumerate() {
                let dup = pes.iter().filter(|p| *p == pe).count() > 1;
                path.push(pe.clone());
                if !dup {
                    field_set(item, inode, false, path, set);
                    set.insert(path);
                } else if pes.iter().position(|p| p == pe) == Some(i) {
                    set.insert(path);
                }
                path.pop();
            }
        }
        _ => set.insert(path),
    }
}

/// What changed from one object to another (upstream `Comparison`).
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

pub fn compare(lhs: &Value, rhs: &Value, node: Node<'_>) -> Comparison {
    compare_for(lhs, rhs, node, false)
}

/// `create`: `lhs` stands for a new, empty object. Upstream compares with the zero value of
/// the Go type, whose struct fields are there already: only maps and list items are added
/// as a whole.
pub fn compare_for(lhs: &Value, rhs: &Value, node: Node<'_>, create: bool) -> Comparison {
    let mut c = Comparison::default();
    let mut w = Walk { c: &mut c, create };
    w.compare_at(Some(lhs), Some(rhs), node, true, &mut Vec::new());
    c
}

struct Walk<'c> {
    c: &'c mut Comparison,
    create: bool,
}

fn leaf(l: Option<&Value>, r: Option<&Value>, path: &Path, c: &mut Comparison) {
    match (l, r) {
        (None, _) => c.added.insert(path),
        (_, None) => c.removed.insert(path),
        (Some(a), Some(b)) if a != b => c.modified.insert(path),
        _ => {}
    }
}

impl Walk<'_> {
    fn compare_at(
        &mut self,
        l: Option<&Value>,
        r: Option<&Value>,
        node: Node<'_>,
        root: bool,
        path: &mut Path,
    ) {
        let empty = Map::new();
        match (l, r) {
            (Some(Value::Object(_)) | None, Some(Value::Object(_)) | None)
                if !node.atomic_map() =>
            {
                let lm = l.and_then(Value::as_object).unwrap_or(&empty);
                let rm = r.and_then(Value::as_object).unwrap_or(&empty);
                if lm.is_empty() && rm.is_empty() {
                    return leaf(l, r, path, self.c);
                }
                for (k, lv) in lm {
                    let (child, _) = node.field(k, root);
                    path.push(PathElement::Field(k.clone()));
                    self.compare_at(Some(lv), rm.get(k), child, false, path);
                    path.pop();
                }
                for (k, rv) in rm {
                    if !lm.contains_key(k) {
                        let (child, _) = node.field(k, root);
                        path.push(PathElement::Field(k.clone()));
                        self.compare_at(None, Some(rv), child, false, path);
                        path.pop();
                    }
                }
            }
            (Some(Value::Array(_)) | None, Some(Value::Array(_)) | None)
                if node.list_kind() != ListKind::Atomic =>
            {
                let no = Vec::new();
                let la = l.and_then(Value::as_array).unwrap_or(&no);
                let ra = r.and_then(Value::as_array).unwrap_or(&no);
                if la.is_empty() && ra.is_empty() {
                    return leaf(l, r, path, self.c);
                }
                let kind = node.list_kind();
                let inode = node.items();
                let index = |a: &[Value]| {
                    let mut order: Vec<PathElement> = Vec::new();
                    let mut by: HashMap<PathElement, Vec<usize>> = HashMap::new();
                    for (i, it) in a.iter().enumerate() {
                        let pe = item_element(&kind, inode, it, i);
                        let e = by.entry(pe.clone()).or_default();
                        if e.is_empty() {
                            order.push(pe);
                        }
                        e.push(i);
                    }
                    (order, by)
                };
                let (lo, lby) = index(la);
                let (ro, rby) = index(ra);
                let mut all = lo;
                all.extend(ro.into_iter().filter(|pe| !lby.contains_key(pe)));
                for pe in all {
                    let li = lby.get(&pe).map(Vec::as_slice).unwrap_or(&[]);
                    let ri = rby.get(&pe).map(Vec::as_slice).unwrap_or(&[]);
                    path.push(pe);
                    if li.len() <= 1 && ri.len() <= 1 {
                        self.compare_at(
                            li.first().map(|&i| &la[i]),
                            ri.first().map(|&i| &ra[i]),
                            inode,
                            false,
                            path,
                        );
                    } else if li.len() >= 2 && ri.len() >= 2 {
                        let same = li.len() == ri.len()
                            && li.iter().zip(ri).all(|(&a, &b)| la[a] == ra[b]);
                        if !same {
                            self.c.modified.insert(path);
                        }
                    } else if li.len() >= 2 {
                        self.c.removed.insert(path);
                    } else {
                        self.c.added.insert(path);
                    }
                    path.pop();
                }
            }
            _ => return leaf(l, r, path, self.c),
        }
        let c = &mut *self.c;
        if !path.is_empty() {
            match (l, r) {
                (None, _) if self.create && node.is_struct() => {}
                (None, _) => c.added.insert(path),
                (_, None) => c.removed.insert(path),
                _ => {}
            }
        }
    }
}

/// An applied configuration merged into the live object (upstream `Merge`): the
/// configuration's values win; lists by key or value merge item by item.
pub fn merge(lhs: &Value, rhs: &Value, node: Node<'_>) -> Value {
    merge_at(Some(lhs), Some(rhs), node, true).unwrap_or(Value::Null)
}

fn merge_at(l: Option<&Value>, r: Option<&Value>, node: Node<'_>, root: bool) -> Option<Value> {
    let (l, r) = match (l, r) {
        (None, None) => return None,
        (Some(l), None) => return Some(l.clone()),
        (None, Some(r)) => return Some(r.clone()),
        (Some(l), Some(r)) => (l, r),
    };
    match (l, r) {
        (Value::Object(lm), Value::Object(rm)) if !node.atomic_map() => {
            if lm.is_empty() && rm.is_empty() {
                return Some(r.clone());
            }
            let mut out = Map::new();
            for (k, lv) in lm {
                let (child, _) = node.field(k, root);
                if let Some(v) = merge_at(Some(lv), rm.get(k), child, false) {
                    out.insert(k.clone(), v);
                }
            }
            for (k, rv) in rm {
                if !lm.contains_key(k) {
                    out.insert(k.clone(), rv.clone());
                }
            }
            Some(Value::Object(out))
        }
        (Value::Array(la), Value::Array(ra)) if node.list_kind() != ListKind::Atomic => {
            if la.is_empty() && ra.is_empty() {
                return Some(r.clone());
            }
            Some(Value::Array(merge_list(la, ra, node)))
        }
        _ => Some(r.clone()),
    }
}

/// Upstream's list merge: items in both keep the configuration's relative order, live-only
/// items stay where they were, new items go after the configuration item before them.
fn merge_list(la: &[Value], ra: &[Value], node: Node<'_>) -> Vec<Value> {
    let kind = node.list_kind();
    let inode = node.items();
    let lpes: Vec<PathElement> = la
        .iter()
        .enumerate()
        .map(|(i, v)| item_element(&kind, inode, v, i))
        .collect();
    let rpes: Vec<PathElement> = ra
        .iter()
        .enumerate()
        .map(|(i, v)| item_element(&kind, inode, v, i))
        .collect();
    let lmap: HashMap<&PathElement, usize> = lpes.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let rmap: HashMap<&PathElement, usize> = rpes.iter().enumerate().map(|(i, p)| (p, i)).collect();
    let mut shared = rpes.iter().filter(|p| lmap.contains_key(p));
    let mut next_shared = shared.next();
    let mut merged_r: std::collections::HashSet<&PathElement> = Default::default();
    let mut out = Vec::with_capacity(la.len().max(ra.len()));
    let (mut li, mut ri) = (0, 0);
    let item = |pe: &PathElement, l: Option<usize>, r: Option<usize>| {
        merge_at(l.map(|i| &la[i]), r.map(|i| &ra[i]), inode, false).map(|v| (pe.clone(), v))
    };
    while li < lpes.len() || ri < rpes.len() {
        if li < lpes.len() && ri < rpes.len() {
            let pe = &lpes[li];
            if *pe == rpes[ri] {
                merged_r.insert(pe);
                if let Some((_, v)) = item(pe, lmap.get(pe).copied(), rmap.get(pe).copied()) {
                    out.push(v);
                }
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if rmap.contains_key(pe) && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lpes.len() {
            let pe = &lpes[li];
            if !rmap.contains_key(pe) {
                if let Some((_, v)) = item(pe, Some(li), None) {
                    out.push(v);
                }
                li += 1;
                continue;
            } else if merged_r.contains(pe) {
                li += 1;
            }
        }
        if ri < rpes.len() {
            let pe = &rpes[ri];
            merged_r.insert(pe);
            if let Some((_, v)) = item(pe, lmap.get(pe).copied(), Some(ri)) {
                out.push(v);
            }
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    out
}

/// The object without the paths in `set` (a member path goes with everything below it).
/// `None` when nothing is left of a map or list.
pub fn remove(v: &Value, set: &Set, node: Node<'_>) -> Value {
    remove_at(v, set, node, true).unwrap_or_else(|| Value::Object(Map::new()))
}

fn remove_at(v: &Value, set: &Set, node: Node<'_>, root: bool) -> Option<Value> {
    match v {
        Value::Object(m) if !m.is_empty() && !node.atomic_map() => {
            let mut out = Map::new();
            for (k, c) in m {
                let pe = PathElement::Field(k.clone());
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) => {
                        let (child, _) = node.field(k, root);
                        if let Some(c) = remove_at(c, sub, child, false) {
                            out.insert(k.clone(), c);
                        }
                    }
                    None => {
                        out.insert(k.clone(), c.clone());
                    }
                }
            }
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(a) if !a.is_empty() && node.list_kind() != ListKind::Atomic => {
            let kind = node.list_kind();
            let inode = node.items();
            let mut out = Vec::new();
            for (i, it) in a.iter().enumerate() {
                let pe = item_element(&kind, inode, it, i);
                if set.has_member(&pe) {
                    continue;
                }
                match set.child(&pe) {
                    Some(sub) => {
                        if let Some(x) = remove_at(it, sub, inode, false) {
                            out.push(x);
                        }
                    }
                    None => out.push(it.clone()),
                }
            }
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => Some(v.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn deployment() -> Node<'static> {
        Node::builtin_kind("apps", "v1", "Deployment")
    }

    #[test]
    fn field_sets_follow_the_schema() {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx",
                                           "ports": [{"containerPort": 80}], "args": ["a", "b"]}]}}}
        });
        let s = to_field_set(&d, deployment());
        let v1 = s.to_fields_v1();
        assert_eq!(v1["f:metadata"]["f:labels"], json!({"f:app": {}}));
        let c = &v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"nginx\"}"];
        assert_eq!(c["."], json!({}), "{v1}");
        assert_eq!(c["f:args"], json!({}), "atomic list: {v1}");
        assert!(
            c["f:ports"]
                .get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}")
                .is_some(),
            "{v1}"
        );
        assert_eq!(v1["f:spec"]["f:replicas"], json!({}));
    }

    #[test]
    fn compare_and_merge_by_key() {
        let live = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}}}});
        let config = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "z"}, {"name": "c", "image": "w"}]}}}});
        let m = merge(&live, &config, deployment());
        let names: Vec<&str> = m["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(m["spec"]["template"]["spec"]["containers"][1]["image"], "z");
        let c = compare(&live, &m, deployment());
        let paths: Vec<String> = c
            .modified
            .paths()
            .iter()
            .map(|p| super::super::set::path_string(p))
            .collect();
        assert_eq!(paths, [".spec.template.spec.containers[name=\"b\"].image"]);
        assert!(c.removed.is_empty());
        assert!(!c.added.is_empty());
        let mut rm = Set::default();
        let key = |n: &str| PathElement::key(json!({ "name": n }).as_object().unwrap());
        let f = |n: &str| PathElement::Field(n.into());
        rm.insert(&[
            f("spec"),
            f("template"),
            f("spec"),
            f("containers"),
            key("a"),
        ]);
        let r = remove(&m, &rm, deployment());
        assert_eq!(
            r["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
