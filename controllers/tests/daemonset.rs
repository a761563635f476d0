//! DaemonSet controller against a real API server with Node objects made by the test; the
//! test plays the scheduler's and kubelet's part where it needs pods ready.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;

use anyhow::Result;
use controllers::daemonset::target_node;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use support::{wait_for, Cluster, T};

async fn node(
    c: &Cluster,
    name: &str,
    labels: serde_json::Value,
    taints: serde_json::Value,
) -> Result<()> {
    let n: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }))?;
    Api::<Node>::all(c.client.clone())
        .create(&PostParams::default(), &n)
        .await?;
    Ok(())
}

fn ds(name: &str, extra: serde_json::Value) -> DaemonSet {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "agent:1"}]}
        }
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

/// Live pods of the set by node.
async fn by_node(c: &Cluster, ns: &str, app: &str) -> Result<BTreeMap<String, Vec<Pod>>> {
    let mut m: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in c.pods(ns, &format!("app={app}")).await? {
        if p.metadata.deletion_timestamp.is_none() {
            m.entry(target_node(&p).unwrap_or_default())
                .or_default()
                .push(p);
        }
    }
    Ok(m)
}

async fn wait_nodes(
    c: &Cluster,
    ns: &str,
    app: &str,
    want: &[&str],
) -> Result<BTreeMap<String, Vec<Pod>>> {
    wait_for(&format!("daemon pods on {want:?}"), T, || async {
        let m = by_node(c, ns, app).await?;
        let nodes: Vec<&str> = m.keys().map(String::as_str).collect();
        Ok((nodes == want && m.values().all(|v| v.len() == 1)).then_some(m))
    })
    .await
}

async fn wait_status(
    api: &Api<DaemonSet>,
    name: &str,
    what: &str,
    f: impl Fn(&DaemonSetStatus) -> bool,
) -> Result<DaemonSetStatus> {
    wait_for(what, T, || async {
        let d = api.get(name).await?;
        Ok(d.status
            .filter(|s| s.observed_generation == d.metadata.generation && f(s)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_pod_per_eligible_node_following_nodes() -> Result<()> {
    let c = Cluster::start(&["daemonset"]).await?;
    c.namespace("ds").await?;
    node(&c, "a", json!({"role": "edge"}), json!(null)).await?;
    node(
        &c,
        "b",
        json!({"role": "edge"}),
        json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
    )
    .await?;
    node(&c, "c", json!({"role": "core"}), json!(null)).await?;
    node(
        &c,
        "d",
        json!({"role": "edge"}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    )
    .await?;
    let api = c.api::<DaemonSet>("ds");
    api.create(
        &PostParams::default(),
        &ds("agent", json!({"template": {
            "metadata": {"labels": {"app": "agent"}},
            "spec": {"nodeSelector": {"role": "edge"}, "containers": [{"name": "c", "image": "agent:1"}]}
        }})),
    )
    .await?;
    // a and b (not-ready is tolerated by every daemon pod); not c (selector), not d (taint).
    let m = wait_nodes(&c, "ds", "agent", &["a", "b"]).await?;
    let p = &m["a"][0];
    let spec = p.spec.as_ref().unwrap();
    assert!(spec.node_name.is_none(), "the scheduler binds daemon pods");
    let terms = &spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms;
    let f = &terms[0].match_fields.as_ref().unwrap()[0];
    assert_eq!(
        (
            f.key.as_str(),
            f.operator.as_str(),
            f.values.clone().unwrap()
        ),
        ("metadata.name", "In", vec!["a".to_string()])
    );
    let tols: Vec<(String, String)> = spec
        .tolerations
        .as_ref()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t.key.clone().unwrap_or_default(),
                t.effect.clone().unwrap_or_default(),
            )
        })
        .collect();
    for (k, e) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        assert!(tols.contains(&(k.to_string(), e.to_string())), "{k} {e}");
    }
    let labels = p.labels();
    assert_eq!(labels["pod-template-generation"], "1");
    assert!(!labels["controller-revision-hash"].is_empty());
    assert!(p.name_any().starts_with("agent-"));

    let st = wait_status(&api, "agent", "status", |s| s.current_number_scheduled == 2).await?;
    assert_eq!(st.desired_number_scheduled, 2);
    assert_eq!(st.number_misscheduled, 0);
    assert_eq!(st.number_ready, 0);
    assert_eq!(st.updated_number_scheduled, Some(2));
    c.make_ready("ds", &m["a"][0].name_any()).await?;
    wait_status(&api, "agent", "one ready", |s| {
        s.number_ready == 1 && s.number_available == Some(1)
    })
    .await?;

    // A new node, a relabelled node, a removed node.
    let nodes: Api<Node> = Api::all(c.client.clone());
    node(&c, "e", json!({"role": "edge"}), json!(null)).await?;
    wait_nodes(&c, "ds", "agent", &["a", "b", "e"]).await?;
    nodes
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "edge"}}})),
        )
        .await?;
    wait_nodes(&c, "ds", "agent", &["a", "b", "c", "e"]).await?;
    nodes
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": "core"}}})),
        )
        .await?;
    wait_nodes(&c, "ds", "agent", &["b", "c", "e"]).await?;
    nodes.delete("e", &DeleteParams::default()).await?;
    wait_nodes(&c, "ds", "agent", &["b", "c"]).await?;
    // An untolerated NoExecute taint evicts the daemon pod.
    nodes.patch("b", &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoExecute"}]}}))).await?;
    wait_nodes(&c, "ds", "agent", &["c"]).await?;
    wait_status(&api, "agent", "final", |s| {
        s.desired_number_scheduled == 1 && s.current_number_scheduled == 1
    })
    .await?;

    // A deleted pod is replaced.
    let pods: Api<Pod> = c.api("ds");
    let m = by_node(&c, "ds", "agent").await?;
    let old = m["c"][0].name_any();
    pods.delete(&old, &DeleteParams::default()).await?;
    wait_for("replacement", T, || async {
        let m = by_node(&c, "ds", "agent").await?;
        Ok(m.get("c")
            .filter(|v| v.len() == 1 && v[0].name_any() != old)
            .map(|_| ()))
    })
    .await?;
    Ok(())
}

fn image(p: &Pod) -> String {
    p.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

async fn three_ready(
    c: &Cluster,
    ns: &str,
    name: &str,
    strategy: serde_json::Value,
) -> Result<Api<DaemonSet>> {
    for n in ["n1", "n2", "n3"] {
        node(c, n, json!({}), json!(null)).await?;
    }
    let api = c.api::<DaemonSet>(ns);
    api.create(
        &PostParams::default(),
        &ds(name, json!({"updateStrategy": strategy})),
    )
    .await?;
    let m = wait_nodes(c, ns, name, &["n1", "n2", "n3"]).await?;
    for pods in m.values() {
        c.make_ready(ns, &pods[0].name_any()).await?;
    }
    wait_status(&api, name, "3 available", |s| s.number_available == Some(3)).await?;
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "agent:2"}]}}}})),
    )
    .await?;
    Ok(api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_keeps_max_unavailable() -> Result<()> {
    let c = Cluster::start(&["daemonset"]).await?;
    c.namespace("roll").await?;
    let api = three_ready(
        &c,
        "roll",
        "r",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}),
    )
    .await?;
    let mut updated = 0;
    while updated < 3 {
        // Exactly one node is being replaced at a time.
        let (m, new) = wait_for("one node replaced", T, || async {
            let m = by_node(&c, "roll", "r").await?;
            let new: Vec<Pod> = m
                .values()
                .flatten()
                .filter(|p| image(p) == "agent:2" && !support::ready(p))
                .cloned()
                .collect();
            let done = m
                .values()
                .flatten()
                .filter(|p| image(p) == "agent:2" && support::ready(p))
                .count();
            Ok((done == updated && new.len() == 1).then_some((m, new)))
        })
        .await?;
        let old_total: usize = m
            .values()
            .flatten()
            .filter(|p| image(p) == "agent:1")
            .count();
        assert_eq!(
            old_total,
            2 - updated,
            "at most one node without an available pod"
        );
        c.make_ready("roll", &new[0].name_any()).await?;
        updated += 1;
    }
    let st = wait_status(&api, "r", "rolled out", |s| {
        s.updated_number_scheduled == Some(3) && s.number_available == Some(3)
    })
    .await?;
    assert_eq!(st.number_unavailable.unwrap_or(0), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_with_surge_starts_new_pod_first() -> Result<()> {
    let c = Cluster::start(&["daemonset"]).await?;
    c.namespace("surge").await?;
    let api = three_ready(
        &c,
        "surge",
        "s",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}),
    )
    .await?;
    for _ in 0..3 {
        // A node runs old and new side by side until the new one is available.
        let new = wait_for("surge pod", T, || async {
            let m = by_node(&c, "surge", "s").await?;
            let both: Vec<&Vec<Pod>> = m.values().filter(|v| v.len() == 2).collect();
            Ok(match both.as_slice() {
                [v] => v.iter().find(|p| image(p) == "agent:2").cloned(),
                _ => None,
            })
        })
        .await?;
        c.make_ready("surge", &new.name_any()).await?;
        let node = target_node(&new).unwrap();
        wait_for("old pod removed", T, || async {
            let m = by_node(&c, "surge", "s").await?;
            Ok(m.get(&node)
                .filter(|v| v.len() == 1 && image(&v[0]) == "agent:2")
                .map(|_| ()))
        })
        .await?;
    }
    wait_status(&api, "s", "rolled out", |s| {
        s.updated_number_scheduled == Some(3) && s.number_available == Some(3)
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_delete_waits_for_the_user() -> Result<()> {
    let c = Cluster::start(&["daemonset"]).await?;
    c.namespace("ondel").await?;
    let api = three_ready(&c, "ondel", "o", json!({"type": "OnDelete"})).await?;
    wait_status(&api, "o", "new generation seen", |s| {
        s.updated_number_scheduled.unwrap_or(0) == 0
    })
    .await?;
    let m = by_node(&c, "ondel", "o").await?;
    assert!(m.values().flatten().all(|p| image(p) == "agent:1"));
    let pods: Api<Pod> = c.api("ondel");
    pods.delete(&m["n2"][0].name_any(), &DeleteParams::default())
        .await?;
    wait_for("n2 updated", T, || async {
        let m = by_node(&c, "ondel", "o").await?;
        Ok(m.get("n2")
            .filter(|v| v.len() == 1 && image(&v[0]) == "agent:2")
            .map(|_| ()))
    })
    .await?;
    wait_status(&api, "o", "one updated", |s| {
        s.updated_number_scheduled == Some(1)
    })
    .await?;
    Ok(())
}
