//! Upstream's naming condition controller: which names a CRD is given (`status.acceptedNames`)
//! and its NamesAccepted and Established conditions. A name another CRD of the same group
//! has accepted (plural, singular and short names share one space, kinds and list kinds
//! another) is not given, and NamesAccepted says why.

use serde_json::{json, Value};
use std::collections::HashSet;

use crate::object::{now_rfc3339 as now, strings};

/// The names the CRDs of one group have accepted.
#[derive(Default)]
pub struct Used {
    resources: HashSet<String>,
    kinds: HashSet<String>,
}

impl Used {
    /// Adds what a CRD's `status.acceptedNames` hold.
    pub fn add(&mut self, accepted: &Value) {
        let s = |k: &str| accepted.get(k).and_then(Value::as_str).unwrap_or("");
        for r in [s("plural"), s("singular")] {
            if !r.is_empty() {
                self.resources.insert(r.to_string());
            }
        }
        for n in strings(accepted.get("shortNames")) {
            self.resources.insert(n);
        }
        for k in [s("kind"), s("listKind")] {
            if !k.is_empty() {
                self.kinds.insert(k.to_string());
            }
        }
    }
}

/// Upstream's `equalToAcceptedOrFresh`.
fn fresh(requested: &str, accepted: &str, used: &HashSet<String>) -> Result<(), String> {
    if requested == accepted || !used.contains(requested) {
        return Ok(());
    }
    Err(format!("{requested:?} is already in use"))
}

/// The condition, with the old one's transition time when its status did not change.
fn condition(old: &[Value], type_: &str, status: &str, reason: &str, message: &str) -> Value {
    let kept = old
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned());
    json!({
        "type": type_,
        "status": status,
        "lastTransitionTime": kept.unwrap_or_else(|| Value::String(now())),
        "reason": reason,
        "message": message,
    })
}

/// The accepted names and conditions `crd` should have, given the names its group's CRDs
/// (itself included) have accepted.
pub fn status_for(crd: &Value, used: &Used) -> (Value, Value) {
    let req = crd
        .pointer("/spec/names")
        .filter(|n| n.is_object())
        .cloned()
        .unwrap_or(json!({}));
    let acc = crd
        .pointer("/status/acceptedNames")
        .filter(|a| a.is_object())
        .cloned()
        .unwrap_or(json!({}));
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    // Accepted names that are not an object (a bad /status write) count as none.
    let mut names = if acc.is_object() {
        acc.clone()
    } else {
        json!({})
    };
    let mut failure: Option<(&str, String)> = None;
    let mut check = |field: &str, reason: &'static str, space: &HashSet<String>| match fresh(
        &s(&req, field),
        &s(&acc, field),
        space,
    ) {
        Ok(()) => {
            names[field] = json!(s(&req, field));
        }
        Err(e) => failure = Some((reason, e)),
    };
    check("plural", "PluralConflict", &used.resources);
    check("singular", "SingularConflict", &used.resources);
    let wanted_short = strings(req.get("shortNames"));
    let had_short = strings(acc.get("shortNames"));
    if wanted_short != had_short {
        let errs: Vec<String> = wanted_short
            .iter()
            .filter(|n| !had_short.contains(n))
            .filter_map(|n| fresh(n, "", &used.resources).err())
            .collect();
        match errs.len() {
            0 => {
                names["shortNames"] = json!(wanted_short);
                if wanted_short.is_empty() {
                    if let Some(m) = names.as_object_mut() {
                        m.remove("shortNames");
                    }
                }
            }
            1 => failure = Some(("ShortNamesConflict", errs[0].clone())),
            _ => failure = Some(("ShortNamesConflict", format!("[{}]", errs.join(", ")))),
        }
    }
    let mut check = |field: &str, reason: &'static str| match fresh(
        &s(&req, field),
        &s(&acc, field),
        &used.kinds,
    ) {
        Ok(()) => {
            names[field] = json!(s(&req, field));
        }
        Err(e) => failure = Some((reason, e)),
    };
    check("kind", "KindConflict");
    check("listKind", "ListKindConflict");
    match req.get("categories") {
        Some(c) => names["categories"] = c.clone(),
        None => {
            if let Some(m) = names.as_object_mut() {
                m.remove("categories");
            }
        }
    }
    let old: Vec<Value> = crd
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let accepted = match &failure {
        None => condition(
            &old,
            "NamesAccepted",
            "True",
            "NoConflicts",
            "no conflicts found",
        ),
        Some((reason, message)) => condition(&old, "NamesAccepted", "False", reason, message),
    };
    let was_established = old
        .iter()
        .any(|c| c["type"] == "Established" && c["status"] == "True");
    let established = if failure.is_none() || was_established {
        condition(
            &old,
            "Established",
            "True",
            "InitialNamesAccepted",
            "the initial names have been accepted",
        )
    } else {
        condition(
            &old,
            "Established",
            "False",
            "NotAccepted",
            "not all names are accepted",
        )
    };
    let mut conditions: Vec<Value> = old
        .into_iter()
        .filter(|c| c["type"] != "NamesAccepted" && c["type"] != "Established")
        .collect();
    conditions.insert(0, established);
    conditions.insert(0, accepted);
    (names, Value::Array(conditions))
}

/// Whether a CRD's resources may be served: upstream serves once names are accepted or the
/// CRD was established.
pub fn servable(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                (c["type"] == "NamesAccepted" || c["type"] == "Established")
                    && c["status"] == "True"
            })
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn crd(plural: &str, kind: &str, short: &[&str]) -> Value {
        json!({"metadata": {"name": format!("{plural}.example.com")},
               "spec": {"group": "example.com",
                        "names": {"plural": plural, "singular": plural.trim_end_matches('s'),
                                  "kind": kind, "listKind": format!("{kind}List"), "shortNames": short}},
               "status": {"acceptedNames": {"plural": "", "kind": ""}, "conditions": []}})
    }

    #[test]
    fn names_another_crd_holds_are_not_given() {
        let mut a = crd("widgets", "Widget", &["wd"]);
        let mut used = Used::default();
        let (names, conds) = status_for(&a, &used);
        assert_eq!(names["kind"], "Widget");
        assert_eq!(names["shortNames"], json!(["wd"]));
        assert_eq!(conds[0]["status"], "True");
        assert_eq!(conds[0]["reason"], "NoConflicts");
        assert_eq!(conds[1]["type"], "Established");
        assert_eq!(conds[1]["status"], "True");
        a["status"]["acceptedNames"] = names.clone();
        a["status"]["conditions"] = conds.clone();
        used.add(&names);
        // The same CRD again: nothing changes, times included.
        let (n2, c2) = status_for(&a, &used);
        assert_eq!((n2, c2), (names, conds));

        let b = crd("gadgets", "Widget", &[]);
        let (names, conds) = status_for(&b, &used);
        assert_eq!(conds[0]["status"], "False");
        assert_eq!(conds[0]["reason"], "ListKindConflict");
        assert_eq!(conds[0]["message"], "\"WidgetList\" is already in use");
        assert_eq!(conds[1]["status"], "False");
        assert_eq!(conds[1]["reason"], "NotAccepted");
        assert_eq!(names["plural"], "gadgets");
        assert_eq!(names["kind"], "");
        assert!(!servable(&json!({"status": {"conditions": conds}})));

        let c = crd("gizmos", "Gizmo", &["wd", "widgets"]);
        let (names, conds) = status_for(&c, &used);
        assert_eq!(conds[0]["reason"], "ShortNamesConflict");
        assert_eq!(
            conds[0]["message"],
            "[\"wd\" is already in use, \"widgets\" is already in use]"
        );
        assert!(names.get("shortNames").is_none());
        assert_eq!(names["kind"], "Gizmo");
    }
}
