//! Strategic merge patch (`application/strategic-merge-patch+json`), applied the way the
//! upstream API server applies it (`strategicpatch.StrategicMergeMapPatch` with parallel
//! deletion lists merged and unmatched nulls ignored).
//!
//! Per field, the type's patch metadata says how values combine: maps merge recursively,
//! lists are replaced unless the field's strategy is `merge` (lists of maps then merge by the
//! field's merge key, lists of scalars become a set union). Directives in the patch:
//! `$patch: replace|delete` (on a map or as a list element), `$retainKeys`,
//! `$setElementOrder/<field>`, `$deleteFromPrimitiveList/<field>`; `null` deletes a field.

use std::cmp::Ordering;

use serde_json::{Map, Value};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList";

const ERR_RETAIN_KEYS: &str = "invalid patch: the value of the $retainKeys directive must be a list of strings naming every field in the patch";
const ERR_SET_ORDER: &str =
    "invalid patch: $setElementOrder list must be a list of items of the list it orders";
const ERR_PRIMITIVE_LIST: &str =
    "invalid patch: $deleteFromPrimitiveList must be a list of primitives";

/// What a patch needs to know about the type at one point of the document.
pub trait Schema: Copy {
    /// The schema of a field's value (its items for lists), its patch strategy
    /// (`merge`, `replace`, `retainKeys`, comma separated) and its merge key.
    fn field(self, name: &str) -> (Self, &'static str, &'static str);
    /// The type's name, for error messages.
    fn name(self) -> &'static str;
}

/// The generated metadata of the built-in kinds; `None` is a type we know nothing about
/// (every list is replaced, every map merged).
impl Schema for Option<openapi::TypeRef> {
    fn field(self, name: &str) -> (Self, &'static str, &'static str) {
        match self {
            Some(t) => {
                let m = t.field(name);
                (m.child, m.strategy, m.merge_key)
            }
            None => (None, "", ""),
        }
    }

    fn name(self) -> &'static str {
        self.map_or("unknown", openapi::TypeRef::name)
    }
}

type Result<T> = std::result::Result<T, String>;

/// Applies a strategic merge patch to `original` in place.
pub fn apply<S: Schema>(original: &mut Value, patch: &Value, schema: S) -> Result<()> {
    let Value::Object(p) = patch else {
        return Err("a strategic merge patch must be a JSON object".into());
    };
    let o = match std::mem::take(original) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    *original = Value::Object(merge_map(o, p.clone(), schema)?);
    Ok(())
}

/// The patch strategy without `retainKeys` (which `$retainKeys` directives carry out).
fn list_strategy(strategy: &str) -> Result<&str> {
    let parts: Vec<&str> = strategy.split(',').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        [] | ["retainKeys"] => Ok(""),
        [one] => Ok(one),
        ["retainKeys", other] | [other, "retainKeys"] => Ok(other),
        _ => Err(format!("unexpected patch strategy: {parts:?}")),
    }
}

/// The field a `<prefix>/<field>` directive key names.
fn directive_key<'a>(key: &'a str, prefix: &str, err: &str) -> Result<Option<&'a str>> {
    if !key.starts_with(prefix) {
        return Ok(None);
    }
    match key.split_once('/') {
        Some((p, field)) if p == prefix => Ok(Some(field)),
        _ => Err(err.into()),
    }
}

fn merge_map<S: Schema>(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    schema: S,
) -> Result<Map<String, Value>> {
    if let Some(d) = patch.remove(DIRECTIVE) {
        return match d.as_str() {
            Some("replace") => Ok(clean_map(patch)),
            Some("delete") => Ok(Map::new()),
            _ => Err(format!(
                "unknown patch type: {d} in map: {}",
                Value::Object(patch)
            )),
        };
    }
    retain_keys(&mut original, &mut patch)?;
    set_element_order(&mut original, &mut patch, schema)?;

    for (k, pv) in patch {
        let (key, delete_list) = match directive_key(&k, DELETE_PRIMITIVE, ERR_PRIMITIVE_LIST)? {
            Some(field) => (field.to_string(), true),
            None => (k, false),
        };
        if pv.is_null() {
            original.remove(&key);
            continue;
        }
        let (sub, strategy, merge_key) = schema.field(&key);
        let Some(ov) = original.remove(&key) else {
            if !delete_list {
                if let Some(v) = new_value(pv, sub, strategy, merge_key)? {
                    original.insert(key, v);
                }
            }
            continue;
        };
        let merged = match (ov, pv) {
            (Value::Object(o), Value::Object(p)) => {
                if list_strategy(strategy)? == "replace" {
                    Value::Object(clean_map(p))
                } else {
                    Value::Object(merge_map(o, p, sub)?)
                }
            }
            (Value::Array(o), Value::Array(p)) => {
                let strategy = list_strategy(strategy)?;
                if strategy == "merge" || delete_list {
                    Value::Array(merge_list(o, p, sub, merge_key, delete_list)?)
                } else {
                    Value::Array(clean_list(p))
                }
            }
            // A deletion list whose target is not a list leaves the target alone.
            (ov, _) if delete_list => ov,
            (ov, pv) if same_kind(&ov, &pv) => pv,
            (_, pv) => match clean(pv) {
                Some(v) => v,
                None => continue,
            },
        };
        original.insert(key, merged);
    }
    Ok(original)
}

/// A value for a field the original does not have: the patch's value, merged into nothing so
/// that its directives are carried out and its nulls dropped.
fn new_value<S: Schema>(
    pv: Value,
    sub: S,
    strategy: &str,
    merge_key: &str,
) -> Result<Option<Value>> {
    match pv {
        Value::Object(p) if p.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") => Ok(None),
        Value::Object(p) if list_strategy(strategy)? != "replace" => {
            Ok(Some(Value::Object(merge_map(Map::new(), p, sub)?)))
        }
        Value::Array(p)
            if list_strategy(strategy)? == "merge"
                && p.iter().all(Value::is_object)
                && !p.is_empty() =>
        {
            Ok(Some(Value::Array(merge_list(
                Vec::new(),
                p,
                sub,
                merge_key,
                false,
            )?)))
        }
        other => Ok(clean(other)),
    }
}

/// `$retainKeys`: keys of the original not in the list go.
fn retain_keys(original: &mut Map<String, Value>, patch: &mut Map<String, Value>) -> Result<()> {
    let Some(list) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let list = list.as_array().ok_or(ERR_RETAIN_KEYS)?;
    let retained = |k: &str| list.iter().any(|v| v.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(DELETE_PRIMITIVE) || k.starts_with(SET_ORDER) {
            continue;
        }
        if !retained(k) {
            return Err(ERR_RETAIN_KEYS.into());
        }
    }
    original.retain(|k, _| retained(k));
    Ok(())
}

/// `$setElementOrder/<field>`: merges the field's list, then orders it by the directive's list,
/// keeping items only the server has near their neighbours.
fn set_element_order<S: Schema>(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    schema: S,
) -> Result<()> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for k in keys {
        let Some(field) = directive_key(&k, SET_ORDER, ERR_SET_ORDER)? else {
            continue;
        };
        let order = match patch.remove(&k) {
            Some(Value::Array(a)) => a,
            _ => return Err(ERR_SET_ORDER.into()),
        };
        let (sub, strategy, merge_key) = schema.field(field);
        let strategy = list_strategy(strategy)?;
        let orig = match original.remove(field) {
            Some(Value::Array(a)) => Some(a),
            Some(other) => {
                original.insert(field.to_string(), other);
                return Err(format!(
                    "invalid patch: {field} is not a list in the original"
                ));
            }
            None => None,
        };
        let pl = match patch.remove(field) {
            Some(Value::Array(a)) => Some(a),
            Some(_) => return Err(ERR_SET_ORDER.into()),
            None => None,
        };
        if let Some(p) = &pl {
            validate_order(p, &order, merge_key)?;
        }
        let (merged, server_order) = match (orig, pl) {
            (Some(o), None) => (o.clone(), o),
            (None, Some(p)) => (clean_list(p), Vec::new()),
            (Some(o), Some(p)) => {
                if strategy == "merge" {
                    let m = merge_list_unordered(o, p, sub, merge_key, false)?;
                    (m.list, m.unordered)
                } else {
                    (clean_list(p), o)
                }
            }
            (None, None) => continue,
        };
        let (ours, server_only) = partition(merged, &order, merge_key);
        let list = normalize_order(ours, server_only, &order, &server_order, merge_key);
        original.insert(field.to_string(), Value::Array(list));
    }
    Ok(())
}

/// The items of the patch list must appear in the `$setElementOrder` list, in its order.
fn validate_order(patch: &[Value], order: &[Value], merge_key: &str) -> Result<()> {
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let (mut i, mut j) = (0, 0);
    while i < items.len() && j < order.len() {
        let equal = if merge_key.is_empty() {
            items[i] == &order[j]
        } else {
            let a = items[i]
                .get(merge_key)
                .ok_or_else(|| no_merge_key(items[i], merge_key))?;
            let b = order[j]
                .get(merge_key)
                .ok_or_else(|| no_merge_key(&order[j], merge_key))?;
            a == b
        };
        if equal {
            i += 1;
        }
        j += 1;
    }
    if i < items.len() {
        return Err(format!(
            "The order in patch list:\n{}\n doesn't match {SET_ORDER} list:\n{}\n",
            Value::Array(patch.to_vec()),
            Value::Array(order.to_vec())
        ));
    }
    Ok(())
}

fn no_merge_key(item: &Value, merge_key: &str) -> String {
    format!("map: {item} does not contain declared merge key: {merge_key}")
}

fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Merges two lists of a field whose strategy is `merge` (or a deletion list).
fn merge_list<S: Schema>(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: S,
    merge_key: &str,
    delete_list: bool,
) -> Result<Vec<Value>> {
    merge_list_unordered(original, patch, schema, merge_key, delete_list).map(|m| m.list)
}

/// A merged list, and the list before its items were ordered: the original's items with the
/// patch's new ones appended. Upstream orders a `$setElementOrder` list against that view.
struct Merged {
    list: Vec<Value>,
    unordered: Vec<Value>,
}

fn merge_list_unordered<S: Schema>(
    original: Vec<Value>,
    patch: Vec<Value>,
    schema: S,
    merge_key: &str,
    delete_list: bool,
) -> Result<Merged> {
    if original.is_empty() && patch.is_empty() {
        return Ok(Merged {
            list: Vec::new(),
            unordered: Vec::new(),
        });
    }
    let first = original.iter().chain(&patch).next();
    if let Some(f) = first {
        if original.iter().chain(&patch).any(Value::is_array) {
            return Err("lists of lists are not supported".into());
        }
        if original.iter().chain(&patch).any(|v| !same_kind(v, f)) {
            return Err(format!(
                "list element types are not identical: {} {}",
                Value::Array(original.clone()),
                Value::Array(patch.clone())
            ));
        }
    }
    let maps = first.is_some_and(Value::is_object);
    if !maps {
        if delete_list {
            let list: Vec<Value> = original
                .into_iter()
                .filter(|v| !patch.contains(v))
                .collect();
            return Ok(Merged {
                unordered: list.clone(),
                list,
            });
        }
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let unordered = merged.clone();
        let (ours, server_only) = partition(merged, &patch, "");
        return Ok(Merged {
            list: normalize_order(ours, server_only, &patch, &original, ""),
            unordered,
        });
    }
    if merge_key.is_empty() {
        return Err(format!(
            "cannot merge lists without merge key for {}",
            schema.name()
        ));
    }
    let (original, patch) = special_elements(original, patch, merge_key)?;
    let mut merged = original.clone();
    for item in &patch {
        let Value::Object(p) = item else { continue };
        let key = p
            .get(merge_key)
            .ok_or_else(|| no_merge_key(item, merge_key))?;
        let mut found = None;
        for (i, o) in merged.iter().enumerate() {
            let Value::Object(om) = o else {
                return Err(format!("value for key {i} is not a map"));
            };
            if om.get(merge_key) == Some(key) {
                found = Some(i);
                break;
            }
        }
        match found {
            Some(i) => {
                let o = match std::mem::take(&mut merged[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                merged[i] = Value::Object(merge_map(o, p.clone(), schema)?);
            }
            None => merged.push(Value::Object(merge_map(Map::new(), p.clone(), schema)?)),
        }
    }
    let unordered = merged.clone();
    let (ours, server_only) = partition(merged, &patch, merge_key);
    Ok(Merged {
        list: normalize_order(ours, server_only, &patch, &original, merge_key),
        unordered,
    })
}

/// List elements carrying `$patch`: `delete` removes the original's items with that key,
/// `replace` makes the rest of the patch list the whole list.
fn special_elements(
    mut original: Vec<Value>,
    patch: Vec<Value>,
    merge_key: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(d) = item.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match d.as_str() {
            Some("delete") => {
                let key = item
                    .get(merge_key)
                    .ok_or_else(|| no_merge_key(&item, merge_key))?;
                original.retain(|o| o.get(merge_key) != Some(key));
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err("merging lists cannot yet be specified in the patch".into())
            }
            _ => return Err(format!("unknown patch type: {d} in map: {item}")),
        }
    }
    if replace {
        return Ok((plain.into_iter().filter_map(clean).collect(), Vec::new()));
    }
    Ok((original, plain))
}

/// What identifies a list item: its merge key's value, or the item itself.
fn ident<'a>(v: &'a Value, merge_key: &str) -> Option<&'a Value> {
    if merge_key.is_empty() {
        Some(v)
    } else {
        v.get(merge_key)
    }
}

fn position(list: &[Value], v: &Value, merge_key: &str) -> Option<usize> {
    let id = ident(v, merge_key)?;
    list.iter().position(|x| ident(x, merge_key) == Some(id))
}

/// Splits items into those the list `by` names and the rest.
fn partition(items: Vec<Value>, by: &[Value], merge_key: &str) -> (Vec<Value>, Vec<Value>) {
    items
        .into_iter()
        .partition(|v| position(by, v, merge_key).is_some())
}

/// Orders the patch's items by `patch_order` and the server-only items by `server_order`,
/// then interleaves them: a server-only item goes first only when both are in the server's
/// order and it came first there.
fn normalize_order(
    mut ours: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
) -> Vec<Value> {
    let by = |order: &[Value]| {
        let order = order.to_vec();
        let key = merge_key.to_string();
        move |a: &Value, b: &Value| match (position(&order, a, &key), position(&order, b, &key)) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => Ordering::Equal,
        }
    };
    ours.sort_by(by(patch_order));
    server_only.sort_by(by(server_order));
    let mut out = Vec::with_capacity(ours.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = ours.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position(server_order, l, merge_key), position(server_order, r, merge_key)),
                (Some(a), Some(b)) if a < b
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// A patch value stored as is: nulls dropped, maps carrying `$patch` and directive keys removed.
fn clean(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) if m.contains_key(DIRECTIVE) => None,
        Value::Object(m) => Some(Value::Object(clean_map(m))),
        Value::Array(a) => Some(Value::Array(clean_list(a))),
        Value::Null => None,
        other => Some(other),
    }
}

fn clean_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, _)| {
            !(k.starts_with(SET_ORDER)
                || k.starts_with(DELETE_PRIMITIVE)
                || k == RETAIN_KEYS
                || k == DIRECTIVE)
        })
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(a: Vec<Value>) -> Vec<Value> {
    a.into_iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .map(|v| match v {
            Value::Object(m) => Value::Object(clean_map(m)),
            Value::Array(a) => Value::Array(clean_list(a)),
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests;
