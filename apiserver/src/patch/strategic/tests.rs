//! Cases from upstream's documented strategic merge patch behaviour
//! (`strategicpatch/patch_test.go`): each applies a patch to the live object and checks the result.

use super::*;
use serde_json::json;

/// Upstream's test type `mergeItem`: every nested value is a `mergeItem` again.
#[derive(Clone, Copy)]
struct MergeItem;

impl Schema for MergeItem {
    fn field(self, name: &str) -> (Self, &'static str, &'static str) {
        match name {
            "mergingList" => (MergeItem, "merge", "name"),
            "mergingIntList" => (MergeItem, "merge", ""),
            "mergeItemPtr" => (MergeItem, "merge", "name"),
            "replacingItem" => (MergeItem, "replace", ""),
            "retainKeysMap" => (MergeItem, "retainKeys", ""),
            "retainKeysMergingList" => (MergeItem, "merge,retainKeys", "name"),
            _ => (MergeItem, "", ""),
        }
    }

    fn name(self) -> &'static str {
        "mergeItem"
    }
}

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn check(name: &str, current: &str, patch: &str, want: &str) {
    let mut doc = yaml(current);
    apply(&mut doc, &yaml(patch), MergeItem).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(doc, yaml(want), "{name}");
}

fn fails(current: &str, patch: &str) -> String {
    let mut doc = yaml(current);
    match apply(&mut doc, &yaml(patch), MergeItem) {
        Ok(()) => panic!("patch {patch} should fail, got {doc}"),
        Err(e) => e,
    }
}

#[test]
fn lists_merge_by_key() {
    check(
        "merge items by name, add new ones at the end",
        "mergingList: [{name: 1, value: a}, {name: 2, value: b}]",
        "mergingList: [{name: 2, value: c, other: x}, {name: 3}]",
        "mergingList: [{name: 1, value: a}, {name: 2, value: c, other: x}, {name: 3}]",
    );
    check(
        "null deletes a field of a merged item",
        "mergingList: [{name: 1, value: 1, other: a}]",
        "mergingList: [{name: 1, value: null}]",
        "mergingList: [{name: 1, other: a}]",
    );
    check(
        "a list without merge strategy is replaced",
        "nonMergingList: [{name: 1, value: 1}, {name: 2}]",
        "nonMergingList: [{name: 1, value: 2}]",
        "nonMergingList: [{name: 1, value: 2}]",
    );
    check(
        "replace non merging list nested in merging list",
        "mergingList: [{name: 1, nonMergingList: [{name: 1}, {name: 2, value: 2}]}, {name: 2}]",
        "mergingList: [{name: 1, nonMergingList: [{name: 1, value: 1}]}]",
        "mergingList: [{name: 1, nonMergingList: [{name: 1, value: 1}]}, {name: 2}]",
    );
    assert!(
        fails("mergingList: [{name: 1}]", "mergingList: [{value: 1}]")
            .contains("does not contain declared merge key: name")
    );
}

#[test]
fn patch_delete_directive() {
    check(
        "delete map from merging list",
        "mergingList: [{name: 1}, {name: 2}]",
        "mergingList: [{name: 1, $patch: delete}]",
        "mergingList: [{name: 2}]",
    );
    check(
        "delete missing map from merging list",
        "mergingList: [{name: 1}, {name: 2}]",
        "mergingList: [{name: 3, $patch: delete}]",
        "mergingList: [{name: 1}, {name: 2}]",
    );
    check(
        "without an order, items the server lacks come first",
        "mergingList: [{name: 1}, {name: 2}]",
        "mergingList: [{name: 3}, {name: 1, $patch: delete}]",
        "mergingList: [{name: 3}, {name: 2}]",
    );
    check(
        "add map and delete map from merging list",
        "mergingList: [{name: 1}, {name: 2, other: b}, {name: 4, other: c}]",
        "$setElementOrder/mergingList: [{name: 2}, {name: 3}]\nmergingList: [{name: 3}, {name: 1, $patch: delete}]",
        "mergingList: [{name: 2, other: b}, {name: 4, other: c}, {name: 3}]",
    );
    check(
        "delete a whole map",
        "mergeItemPtr: {name: 1, value: 1}\nother: a",
        "mergeItemPtr: {$patch: delete}",
        "mergeItemPtr: {}\nother: a",
    );
    check(
        "null deletes a field",
        "simpleMap: {a: b}\nother: a",
        "simpleMap: null",
        "other: a",
    );
}

#[test]
fn patch_replace_directive() {
    check(
        "replace a whole merging list",
        "mergingList: [{name: 1, value: 1}, {name: 2}]",
        "mergingList: [{name: 3, value: 3}, {$patch: replace}]",
        "mergingList: [{name: 3, value: 3}]",
    );
    check(
        "replace a map instead of merging it",
        "mergeItemPtr: {name: 1, value: 1}",
        "mergeItemPtr: {$patch: replace, other: x}",
        "mergeItemPtr: {other: x}",
    );
    check(
        "a field with the replace strategy is replaced",
        "replacingItem: {a: 1, b: 2}",
        "replacingItem: {c: 3}",
        "replacingItem: {c: 3}",
    );
    assert!(
        fails("mergeItemPtr: {name: 1}", "mergeItemPtr: {$patch: merge}")
            .contains("unknown patch type")
    );
    assert!(
        fails("mergingList: [{name: 1}]", "mergingList: [{$patch: merge}]")
            .contains("merging lists cannot yet be specified")
    );
}

#[test]
fn set_element_order() {
    check(
        "set elements order in a list with server-only items",
        "mergingList: [{name: 1, other: a}, {name: 3, value: 3}, {name: 4, value: 4}, {name: 2, value: 2}, {name: 9}]",
        "$setElementOrder/mergingList: [{name: 4}, {name: 2}, {name: 3}, {name: 1}]",
        "mergingList: [{name: 4, value: 4}, {name: 2, value: 2}, {name: 3, value: 3}, {name: 1, other: a}, {name: 9}]",
    );
    check(
        "set elements order in a list with server-only items 2",
        "mergingList: [{name: 1, other: a}, {name: 2, value: 2}, {name: 9}, {name: 3, value: 3}, {name: 4, value: 4}]",
        "$setElementOrder/mergingList: [{name: 2}, {name: 1}, {name: 4}, {name: 3}]",
        "mergingList: [{name: 2, value: 2}, {name: 1, other: a}, {name: 9}, {name: 4, value: 4}, {name: 3, value: 3}]",
    );
    check(
        "set elements order in a list with server-only items 3",
        "mergingList: [{name: 1, other: a}, {name: 2, value: 2}, {name: 7}, {name: 9}, {name: 8}, {name: 3, value: 3}, {name: 4, value: 4}]",
        "$setElementOrder/mergingList: [{name: 2}, {name: 1}, {name: 4}, {name: 3}]",
        "mergingList: [{name: 2, value: 2}, {name: 1, other: a}, {name: 7}, {name: 9}, {name: 8}, {name: 4, value: 4}, {name: 3, value: 3}]",
    );
    check(
        "add an item in a list and preserve order",
        "mergingList: [{name: 1}, {name: 2, value: 2}, {name: 3}]",
        "$setElementOrder/mergingList: [{name: 1}, {name: 4}, {name: 2}, {name: 3}]\nmergingList: [{name: 4, value: 4}]",
        "mergingList: [{name: 1}, {name: 4, value: 4}, {name: 2, value: 2}, {name: 3}]",
    );
    check(
        "set elements order in an int list with server-only items",
        "mergingIntList: [1, 3, 4, 2, 9]",
        "$setElementOrder/mergingIntList: [4, 2, 3, 1]",
        "mergingIntList: [4, 2, 3, 1, 9]",
    );
    check(
        "add an item in an int list and preserve order",
        "mergingIntList: [1, 2, 3]",
        "$setElementOrder/mergingIntList: [1, 4, 2, 3]\nmergingIntList: [4]",
        "mergingIntList: [1, 4, 2, 3]",
    );
    check(
        "add and delete an item in a list and preserve order",
        "mergingList: [{name: 1, other: a}, {name: 2, value: 2, other: b}, {name: 3, value: 3}]",
        "$setElementOrder/mergingList: [{name: 4}, {name: 2}, {name: 1}]\nmergingList: [{name: 4, value: 4}, {name: 3, $patch: delete}]",
        "mergingList: [{name: 4, value: 4}, {name: 2, value: 2, other: b}, {name: 1, other: a}]",
    );
    check(
        "add and delete an item in an int list and preserve order",
        "mergingIntList: [1, 2, 3]",
        "$setElementOrder/mergingIntList: [4, 2, 1]\nmergingIntList: [4]\n$deleteFromPrimitiveList/mergingIntList: [3]",
        "mergingIntList: [4, 2, 1]",
    );
    assert!(fails(
        "mergingList: [{name: 1}, {name: 2}]",
        "$setElementOrder/mergingList: [{name: 1}, {name: 2}]\nmergingList: [{name: 2}, {name: 1}]"
    )
    .contains("doesn't match $setElementOrder list"));
}

#[test]
fn primitive_lists() {
    check(
        "merging a list of scalars is a union",
        "mergingIntList: [1, 2]",
        "mergingIntList: [2, 3]",
        "mergingIntList: [1, 2, 3]",
    );
    check(
        "$deleteFromPrimitiveList should delete item from a list with merge patch strategy",
        "mergingIntList: [1, 2, 3]",
        "$deleteFromPrimitiveList/mergingIntList: [2]",
        "mergingIntList: [1, 3]",
    );
    check(
        "$deleteFromPrimitiveList should delete item from a list without merge patch strategy",
        "nonMergingIntList: [1, 2, 3]",
        "$deleteFromPrimitiveList/nonMergingIntList: [2]",
        "nonMergingIntList: [1, 3]",
    );
    check(
        "$deleteFromPrimitiveList of nonexistent item does not add it",
        "mergingIntList: [1, 2]",
        "$deleteFromPrimitiveList/mergingIntList: [3]",
        "mergingIntList: [1, 2]",
    );
    check(
        "$deleteFromPrimitiveList on a nonexistent list does not add the list",
        "other: a",
        "$deleteFromPrimitiveList/mergingIntList: [3]",
        "other: a",
    );
    check(
        "add and delete items in lists of scalars",
        "mergingIntList: [1, 2, 3, 4]",
        "$setElementOrder/mergingIntList: [1, 2, 4]\n$deleteFromPrimitiveList/mergingIntList: [3]",
        "mergingIntList: [1, 2, 4]",
    );
    check(
        "without an order, new scalars come first",
        "mergingIntList: [1, 2, 3]",
        "$deleteFromPrimitiveList/mergingIntList: [1]\nmergingIntList: [4]",
        "mergingIntList: [4, 2, 3]",
    );
}

#[test]
fn retain_keys() {
    check(
        "retainKeys map should clear defaulted field",
        "retainKeysMap: {value: foo}",
        "retainKeysMap: {$retainKeys: [other], other: bar}",
        "retainKeysMap: {other: bar}",
    );
    check(
        "retainKeys map should clear defaulted field with conflict (discriminated union)",
        "retainKeysMap: {name: type1, value: foo}",
        "retainKeysMap: {$retainKeys: [name, other], name: type2, other: bar}",
        "retainKeysMap: {name: type2, other: bar}",
    );
    check(
        "retainKeys in items of a merge,retainKeys list",
        "retainKeysMergingList: [{name: a, value: 1}, {name: b, value: 2}]",
        "retainKeysMergingList: [{name: a, other: x, $retainKeys: [name, other]}]",
        "retainKeysMergingList: [{name: a, other: x}, {name: b, value: 2}]",
    );
    assert!(fails(
        "retainKeysMap: {value: foo}",
        "retainKeysMap: {$retainKeys: [other], value: bar}"
    )
    .contains("$retainKeys"));
}

#[test]
fn new_fields_carry_no_directives() {
    check(
        "a new map is merged into nothing",
        "other: a",
        "retainKeysMap: {$retainKeys: [name], name: x, value: null}",
        "other: a\nretainKeysMap: {name: x}",
    );
    check(
        "a new merging list drops deleted items",
        "other: a",
        "mergingList: [{name: 1}, {name: 2, $patch: delete}]",
        "other: a\nmergingList: [{name: 1}]",
    );
}

/// The same directives on the real built-in types, as kubectl sends them.
#[test]
fn built_in_kinds() {
    let dep = openapi::kind_def("apps", "v1", "Deployment");
    assert!(dep.is_some());
    let mut live = json!({
        "metadata": {"name": "web", "finalizers": ["a"], "labels": {"app": "web"}},
        "spec": {
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}},
            "template": {"spec": {
                "containers": [
                    {"name": "app", "image": "nginx:1", "args": ["a", "b"],
                     "ports": [{"containerPort": 80, "protocol": "TCP"}],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "sidecar", "image": "busybox"}
                ],
                "volumes": [{"name": "data", "emptyDir": {}}]
            }}
        }
    });
    let patch = json!({
        "metadata": {"$setElementOrder/finalizers": ["a", "b"], "finalizers": ["b"], "labels": {"tier": "front"}},
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                "containers": [
                    {"name": "app", "image": "nginx:2", "args": ["c"],
                     "ports": [{"containerPort": 443}],
                     "env": [{"name": "A", "value": "9"}, {"name": "B", "$patch": "delete"}]}
                ],
                "volumes": [{"name": "data", "$retainKeys": ["name", "hostPath"], "hostPath": {"path": "/d"}}]
            }}
        }
    });
    apply(&mut live, &patch, dep).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        live,
        json!({
            "metadata": {"name": "web", "finalizers": ["a", "b"], "labels": {"app": "web", "tier": "front"}},
            "spec": {
                "strategy": {"type": "Recreate"},
                "template": {"spec": {
                    "containers": [
                        {"name": "app", "image": "nginx:2", "args": ["c"],
                         "ports": [{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}],
                         "env": [{"name": "A", "value": "9"}]},
                        {"name": "sidecar", "image": "busybox"}
                    ],
                    "volumes": [{"name": "data", "hostPath": {"path": "/d"}}]
                }}
            }
        })
    );

    let node = openapi::kind_def("", "v1", "Node");
    let mut n = json!({"spec": {"podCIDR": "10.244.0.0/24"}});
    apply(&mut n, &json!({"spec": {"unschedulable": true}}), node)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        n,
        json!({"spec": {"podCIDR": "10.244.0.0/24", "unschedulable": true}})
    );
    apply(&mut n, &json!({"spec": {"unschedulable": null}}), node)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, json!({"spec": {"podCIDR": "10.244.0.0/24"}}));
}
