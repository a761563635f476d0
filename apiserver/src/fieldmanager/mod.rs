//! Field management: `metadata.managedFields` on every write, and server-side apply.
//!
//! Learned from upstream's `k8s.io/apimachinery/pkg/util/managedfields` and
//! `sigs.k8s.io/structured-merge-diff` (merge/update.go): an Update takes the fields it
//! changed from everyone else and adds them to its manager's entry; an Apply merges the
//! configuration into the live object, removes what the applier set before and nobody
//! owns any more, and fails with a 409 listing the fields it would change that another
//! manager owns, unless forced.

pub mod set;
pub mod typed;

use crate::error::{Error, Result};
use crate::object::now_rfc3339 as now;
use serde_json::{json, Map, Value};
use set::{path_string, Set};
pub use typed::Node;

/// One `managedFields` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: Set,
}

impl Entry {
    /// Upstream's manager identity: Apply entries are one per manager and subresource,
    /// Update entries also per API version.
    fn same(&self, manager: &str, operation: &str, api_version: &str, sub: &str) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == sub
            && (operation == "Apply" || self.api_version == api_version)
    }

    /// How a conflict names the manager: `"kubectl" using apps/v1`.
    fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// What a write is: who, on which subresource, of which API version, and which parts of
/// the object it may own.
pub struct Write<'a> {
    pub node: Node<'a>,
    pub manager: &'a str,
    pub api_version: &'a str,
    /// `""` or `status`, `scale`, ...
    pub subresource: &'a str,
    /// The kind has a status subresource: the main resource does not own `status`, and
    /// `/status` owns nothing else.
    pub has_status: bool,
}

impl Write<'_> {
    /// The fields the write may own: not apiVersion, kind or system metadata (upstream's
    /// stripMeta), and not what the subresource split resets.
    fn filter(&self, s: &Set) -> Set {
        let mut out = s.clone();
        self.filter_in_place(&mut out);
        out
    }

    fn filter_in_place(&self, s: &mut Set) {
        s.remove_top("apiVersion");
        s.remove_top("kind");
        s.remove_member("metadata");
        if let Some(m) = s.child_mut("metadata") {
            for f in [
                "name",
                "namespace",
                "creationTimestamp",
                "selfLink",
                "uid",
                "clusterName",
                "generation",
                "managedFields",
                "resourceVersion",
            ] {
                m.remove_member(f);
            }
        }
        s.prune_top("metadata");
        if self.has_status {
            if self.subresource == "status" {
                s.remove_top("spec");
            } else if self.subresource.is_empty() {
                s.remove_top("status");
            }
        }
    }
}

/// The entries of `metadata.managedFields`. Entries that are not FieldsV1 are an error.
pub fn decode(v: Option<&Value>) -> std::result::Result<Vec<Entry>, String> {
    let Some(list) = v.and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (i, e) in list.iter().enumerate() {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let ft = s("fieldsType");
        if !ft.is_empty() && ft != "FieldsV1" {
            return Err(format!(
                "metadata.managedFields[{i}].fieldsType: Unsupported value: {ft:?}: supported values: \"FieldsV1\""
            ));
        }
        let set = match e.get("fieldsV1") {
            Some(f) => Set::from_fields_v1(f)
                .map_err(|err| format!("metadata.managedFields[{i}].fieldsV1: {err}"))?,
            None => Set::default(),
        };
        out.push(Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            time: e.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            set,
        });
    }
    Ok(out)
}

/// `metadata.managedFields` in upstream's order: Apply before Update, then by time,
/// manager, API version and subresource.
pub fn encode(entries: &mut [Entry]) -> Value {
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), json!(e.manager));
                m.insert("operation".into(), json!(e.operation));
                m.insert("apiVersion".into(), json!(e.api_version));
                if let Some(t) = &e.time {
                    m.insert("time".into(), json!(t));
                }
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !e.subresource.is_empty() {
                    m.insert("subresource".into(), json!(e.subresource));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

fn take_managed(v: &mut Value) -> Option<Value> {
    v.get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("managedFields"))
}

fn without_managed(v: &Value) -> Value {
    let mut v = v.clone();
    take_managed(&mut v);
    v
}

fn set_managed(v: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), encode(&mut entries));
        }
    }
}

/// Upstream keeps at most 10 Update entries; the oldest are merged into `ancient-changes`.
const MAX_UPDATE_MANAGERS: usize = 10;

fn cap_updates(entries: &mut Vec<Entry>) {
    loop {
        let updates: Vec<usize> = (0..entries.len())
            .filter(|&i| entries[i].operation == "Update")
            .collect();
        if updates.len() <= MAX_UPDATE_MANAGERS {
            return;
        }
        let oldest = updates
            .iter()
            .copied()
            .filter(|&i| entries[i].manager != "ancient-changes")
            .min_by(|&a, &b| entries[a].time.cmp(&entries[b].time));
        let Some(oldest) = oldest else { return };
        let e = entries.remove(oldest);
        match entries
            .iter_mut()
            .find(|x| x.manager == "ancient-changes" && x.operation == "Update")
        {
            Some(a) => a.set.union_with(&e.set),
            None => entries.push(Entry {
                manager: "ancient-changes".into(),
                ..e
            }),
        }
    }
}

/// Records an Update (create, PUT, or a non-apply PATCH) in `new`'s managedFields. `old`
/// is `None` for a create. A client may replace the entries by sending non-empty
/// `managedFields` with a main-resource write; otherwise the stored ones are kept.
pub fn track_update(w: &Write<'_>, old: Option<&Value>, new: &mut Value) {
    let incoming = take_managed(new);
    let from_client = match (&incoming, w.subresource.is_empty()) {
        (Some(Value::Array(a)), true) if !a.is_empty() => decode(incoming.as_ref()).ok(),
        _ => None,
    };
    let mut entries = from_client
        .map(|mut e| {
            e.retain(|x| !(x.manager.is_empty() && x.set.is_empty()));
            e
        })
        .unwrap_or_else(|| {
            decode(old.and_then(|o| o.pointer("/metadata/managedFields"))).unwrap_or_default()
        });
    let empty = json!({});
    let cmp = typed::compare_for(old.unwrap_or(&empty), new, w.node, old.is_none());
    let mut changed = cmp.added;
    changed.union_with(&cmp.modified);
    for e in &mut entries {
        e.set = e.set.difference(&changed).difference(&cmp.removed);
    }
    let mut mine = changed;
    w.filter_in_place(&mut mine);
    if !mine.is_empty() {
        let t = Some(now());
        match entries
            .iter_mut()
            .find(|e| e.same(w.manager, "Update", w.api_version, w.subresource))
        {
            Some(e) => {
                e.set.union_with(&mine);
                e.time = t;
            }
            None => entries.push(Entry {
                manager: w.manager.to_string(),
                operation: "Update".into(),
                api_version: w.api_version.to_string(),
                time: t,
                subresource: w.subresource.to_string(),
                set: mine,
            }),
        }
    }
    cap_updates(&mut entries);
    set_managed(new, entries);
}

/// The annotation client-side apply keeps.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Server-side apply of `config` onto `live` (`None`: the object does not exist yet).
/// Returns the object to write, with its managedFields.
pub fn apply(w: &Write<'_>, live: Option<&Value>, config: &Value, force: bool) -> Result<Value> {
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(Error::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let last_applied = live
        .and_then(|l| l.pointer("/metadata/annotations"))
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str);
    let mut obj = match apply_once(w, live, config, force) {
        Err(e @ Error::ApplyConflict { .. })
            if w.manager == "kubectl" && last_applied.is_some() =>
        {
            // Upstream's lastAppliedManager: kubectl moving an object from client-side to
            // server-side apply takes over the fields of its last applied configuration.
            let allowed = last_applied
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .map(|l| typed::to_field_set(&l, w.node).with_parent_fields())
                .unwrap_or_default();
            let paths = conflict_paths(w, live, config);
            if paths.iter().all(|p| allowed.has(p)) {
                apply_once(w, live, config, true)?
            } else {
                return Err(e);
            }
        }
        other => other?,
    };
    // Upstream's lastAppliedUpdater: kubectl's server-side apply keeps an existing
    // client-side annotation in step with what was applied.
    if w.manager == "kubectl" && last_applied.is_some() {
        let mut applied = config.clone();
        if let Some(m) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(an) = m.get_mut("annotations").and_then(Value::as_object_mut) {
                an.remove(LAST_APPLIED);
                if an.is_empty() {
                    m.remove("annotations");
                }
            }
        }
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            if let Some(an) = m
                .entry("annotations")
                .or_insert_with(|| json!({}))
                .as_object_mut()
            {
                an.insert(LAST_APPLIED.into(), Value::String(applied.to_string()));
            }
        }
    }
    Ok(obj)
}

/// The conflicting paths of an apply, for the migration check.
fn conflict_paths(w: &Write<'_>, live: Option<&Value>, config: &Value) -> Vec<set::Path> {
    let Some(live) = live else { return Vec::new() };
    let plan = plan(w, live, config);
    let mut out = Vec::new();
    for (i, e) in plan.entries.iter().enumerate() {
        if Some(i) != plan.mine {
            out.extend(e.set.intersection(&plan.changed).paths());
        }
    }
    out
}

struct Plan {
    entries: Vec<Entry>,
    /// The applier's entry in `entries`, if it had one.
    mine: Option<usize>,
    merged: Value,
    live: Value,
    new_set: Set,
    changed: Set,
    removed: Set,
}

fn plan(w: &Write<'_>, live: &Value, config: &Value) -> Plan {
    let entries = decode(live.pointer("/metadata/managedFields")).unwrap_or_default();
    let live = without_managed(live);
    let mine = entries
        .iter()
        .position(|e| e.same(w.manager, "Apply", w.api_version, w.subresource));
    let mut merged = typed::merge(&live, config, w.node);
    let full = typed::to_field_set(config, w.node);
    let new_set = w.filter(&full);
    if let Some(last) = mine.map(|i| &entries[i].set).filter(|s| !s.is_empty()) {
        // What the applier set before and nobody (the applier included) sets now goes.
        let mut owned = full;
        for (i, e) in entries.iter().enumerate() {
            if Some(i) != mine {
                owned.union_with(&e.set);
            }
        }
        let gone = last
            .with_parent_fields()
            .difference(&owned.with_parent_fields());
        if !gone.is_empty() {
            merged = typed::remove(&merged, &gone, w.node);
        }
    }
    let cmp = typed::compare(&live, &merged, w.node);
    // What the write may not change (the other half of the status split, system metadata)
    // neither conflicts nor is taken from anyone: the store drops it (upstream's IgnoreFilter).
    let mut changed = cmp.modified.union(&cmp.added);
    w.filter_in_place(&mut changed);
    let mut removed = cmp.removed;
    w.filter_in_place(&mut removed);
    Plan {
        entries,
        mine,
        merged,
        live,
        new_set,
        changed,
        removed,
    }
}

fn apply_once(w: &Write<'_>, live: Option<&Value>, config: &Value, force: bool) -> Result<Value> {
    let empty = json!({});
    let had_live = live.is_some();
    let p = plan(w, live.unwrap_or(&empty), config);
    let mut conflicts: Vec<(String, String)> = Vec::new();
    let mut by_manager: Vec<(String, Vec<String>)> = Vec::new();
    for (i, e) in p.entries.iter().enumerate() {
        if Some(i) == p.mine {
            continue;
        }
        let c = e.set.intersection(&p.changed);
        if c.is_empty() {
            continue;
        }
        let who = e.describe();
        let paths: Vec<String> = c.paths().iter().map(|x| path_string(x)).collect();
        for x in &paths {
            conflicts.push((format!("conflict with {who}"), x.clone()));
        }
        by_manager.push((who, paths));
    }
    if !conflicts.is_empty() && !force {
        let message = if conflicts.len() == 1 {
            format!(
                "Apply failed with 1 conflict: {}: {}",
                conflicts[0].0, conflicts[0].1
            )
        } else {
            by_manager.sort();
            let mut lines = Vec::new();
            for (who, paths) in &by_manager {
                lines.push(format!("conflicts with {who}:"));
                lines.extend(paths.iter().map(|x| format!("- {x}")));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        };
        return Err(Error::ApplyConflict {
            message,
            causes: conflicts,
        });
    }
    let changed_object = p.merged != p.live || !had_live;
    let mut entries = p.entries;
    let mine_time = p.mine.and_then(|i| entries[i].time.clone());
    if let Some(i) = p.mine {
        entries.remove(i);
    }
    for e in &mut entries {
        e.set = e.set.difference(&p.changed).difference(&p.removed);
    }
    entries.push(Entry {
        manager: w.manager.to_string(),
        operation: "Apply".into(),
        api_version: w.api_version.to_string(),
        time: if changed_object || mine_time.is_none() {
            Some(now())
        } else {
            mine_time
        },
        subresource: w.subresource.to_string(),
        set: p.new_set,
    });
    let mut obj = p.merged;
    set_managed(&mut obj, entries);
    Ok(obj)
}

#[cfg(test)]
mod tests;
