#![allow(clippy::unwrap_used)]

use super::*;
use serde_json::json;
use set::PathElement;

fn deploy(replicas: i64, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "nginx", "image": image}]}}}
    })
}

fn w<'a>(manager: &'a str) -> Write<'a> {
    Write {
        node: Node::builtin_kind("apps", "v1", "Deployment"),
        manager,
        api_version: "apps/v1",
        subresource: "",
        has_status: true,
    }
}

fn managers(v: &Value) -> Vec<(String, String)> {
    decode(v.pointer("/metadata/managedFields"))
        .unwrap()
        .into_iter()
        .map(|e| (e.manager, e.operation))
        .collect()
}

#[test]
fn create_and_update_record_their_managers() {
    let mut obj = deploy(1, "nginx");
    track_update(&w("kubectl-create"), None, &mut obj);
    let mf = &obj["metadata"]["managedFields"][0];
    assert_eq!(mf["manager"], "kubectl-create");
    assert_eq!(mf["operation"], "Update");
    assert_eq!(mf["fieldsType"], "FieldsV1");
    let f = &mf["fieldsV1"];
    assert_eq!(
        f["f:metadata"]["f:labels"],
        json!({".": {}, "f:app": {}}),
        "{f}"
    );
    assert!(f["f:spec"].get(".").is_none(), "{f}");
    assert!(f["f:metadata"].get("f:name").is_none(), "{f}");
    assert!(f.get("f:apiVersion").is_none(), "{f}");

    let old = obj.clone();
    let mut new = obj.clone();
    new["spec"]["replicas"] = json!(3);
    track_update(&w("kubectl-scale"), Some(&old), &mut new);
    let m = decode(new.pointer("/metadata/managedFields")).unwrap();
    assert_eq!(m.len(), 2);
    let create = m.iter().find(|e| e.manager == "kubectl-create").unwrap();
    let scale = m.iter().find(|e| e.manager == "kubectl-scale").unwrap();
    let replicas = [
        PathElement::Field("spec".into()),
        PathElement::Field("replicas".into()),
    ];
    assert!(!create.set.has(&replicas));
    assert!(scale.set.has(&replicas));

    // No change: entries (and their times) stay as they are.
    let mut again = new.clone();
    track_update(&w("someone"), Some(&new), &mut again);
    assert_eq!(again, new);
}

#[test]
fn apply_conflicts_force_and_shared_ownership() {
    let a = apply(&w("alice"), None, &deploy(2, "nginx"), false).unwrap();
    assert_eq!(managers(&a), [("alice".to_string(), "Apply".to_string())]);
    // Same values: shared, no conflict.
    let b = apply(&w("bob"), Some(&a), &deploy(2, "nginx"), false).unwrap();
    assert_eq!(managers(&b).len(), 2);
    // A different value of an owned field is a conflict.
    let e = apply(&w("carol"), Some(&b), &deploy(5, "nginx"), false).unwrap_err();
    let Error::ApplyConflict { message, causes } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(
        message,
        "Apply failed with 2 conflicts: conflicts with \"alice\":\n- .spec.replicas\nconflicts with \"bob\":\n- .spec.replicas"
    );
    assert_eq!(
        causes[0],
        (
            "conflict with \"alice\"".to_string(),
            ".spec.replicas".to_string()
        )
    );
    assert_eq!(e.status()["code"], 409);
    assert_eq!(
        e.status()["details"]["causes"][0]["reason"],
        "FieldManagerConflict"
    );
    // Forced: carol takes the field from both.
    let c = apply(&w("carol"), Some(&b), &deploy(5, "nginx"), true).unwrap();
    assert_eq!(c["spec"]["replicas"], 5);
    let m = decode(c.pointer("/metadata/managedFields")).unwrap();
    let replicas = [
        PathElement::Field("spec".into()),
        PathElement::Field("replicas".into()),
    ];
    for e in &m {
        assert_eq!(e.set.has(&replicas), e.manager == "carol", "{}", e.manager);
    }
}

#[test]
fn apply_removes_what_the_applier_no_longer_sets() {
    let mut cfg = deploy(2, "nginx");
    cfg["metadata"]["labels"]["tier"] = json!("front");
    let a = apply(&w("alice"), None, &cfg, false).unwrap();
    assert_eq!(a["metadata"]["labels"]["tier"], "front");
    // Re-applying the same configuration changes nothing, not even the entry's time.
    let again = apply(&w("alice"), Some(&a), &cfg, false).unwrap();
    assert_eq!(again, a);
    // Dropping the label and replicas from the configuration removes them.
    let mut cfg2 = deploy(2, "nginx");
    cfg2["spec"].as_object_mut().unwrap().remove("replicas");
    let b = apply(&w("alice"), Some(&a), &cfg2, false).unwrap();
    assert!(b["metadata"]["labels"].get("tier").is_none(), "{b}");
    assert!(b["spec"].get("replicas").is_none(), "{b}");
    assert_eq!(b["metadata"]["name"], "web");
    // Unless someone else owns it.
    let mut u = a.clone();
    u["spec"]["replicas"] = json!(4);
    track_update(&w("kubectl-scale"), Some(&a), &mut u);
    let c = apply(&w("alice"), Some(&u), &cfg2, false).unwrap();
    assert_eq!(c["spec"]["replicas"], 4, "{c}");
    // A new container is merged by name; the old one goes when alice stops naming it.
    let mut cfg3 = cfg2.clone();
    cfg3["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "sidecar", "image": "busybox"}]);
    let d = apply(&w("alice"), Some(&c), &cfg3, false).unwrap();
    let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sidecar"]);
}

#[test]
fn apply_rejects_managed_fields_in_the_configuration() {
    let mut cfg = deploy(1, "x");
    cfg["metadata"]["managedFields"] = json!([]);
    let e = apply(&w("alice"), None, &cfg, false).unwrap_err();
    assert_eq!(e.message(), "metadata.managedFields must be nil");
}

#[test]
fn kubectl_takes_over_from_client_side_apply() {
    let cfg = deploy(2, "nginx");
    let mut live = cfg.clone();
    live["metadata"]["annotations"] = json!({LAST_APPLIED: cfg.to_string()});
    track_update(&w("kubectl-client-side-apply"), None, &mut live);
    let mut cfg2 = deploy(3, "nginx");
    // Another manager would conflict on .spec.replicas.
    assert!(apply(&w("other"), Some(&live), &cfg2, false).is_err());
    let a = apply(&w("kubectl"), Some(&live), &cfg2, false).unwrap();
    assert_eq!(a["spec"]["replicas"], 3);
    let last: Value =
        serde_json::from_str(a["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap()).unwrap();
    assert_eq!(last["spec"]["replicas"], 3);
    // Fields outside the last applied configuration still conflict.
    let mut scaled = live.clone();
    scaled["spec"]["paused"] = json!(true);
    track_update(&w("someone"), Some(&live), &mut scaled);
    cfg2["spec"]["paused"] = json!(false);
    assert!(apply(&w("kubectl"), Some(&scaled), &cfg2, false).is_err());
}

#[test]
fn at_most_ten_update_entries_the_oldest_merged_into_ancient_changes() {
    let mut obj = deploy(1, "x");
    track_update(&w("m00"), None, &mut obj);
    for i in 1..=12 {
        let old = obj.clone();
        obj["metadata"]["labels"][format!("l{i}")] = json!("v");
        // Distinct times order the entries; same-second entries order by name.
        track_update(&w(&format!("m{i:02}")), Some(&old), &mut obj);
    }
    let m = decode(obj.pointer("/metadata/managedFields")).unwrap();
    let updates: Vec<&Entry> = m.iter().filter(|e| e.operation == "Update").collect();
    assert_eq!(updates.len(), 10, "{m:?}");
    let ancient = m.iter().find(|e| e.manager == "ancient-changes").unwrap();
    // m00's fields (the whole object) went into ancient-changes, with no field lost.
    assert!(ancient.set.has(&[
        PathElement::Field("spec".into()),
        PathElement::Field("replicas".into())
    ]));
    assert!(m.iter().any(|e| e.manager == "m12"));
}
