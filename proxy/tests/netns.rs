//! Applies rendered rules for real inside a network namespace this test creates, checks
//! them with `iptables-save`, re-syncs partially (a deleted Service's chains go), applies a
//! large sync in batches, then cleans up.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::process::Command;

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use proxy::model::Model;
use proxy::render::{self, Options, Renderer};
use proxy::Iptables;
use serde_json::json;

struct Netns(String);

impl Netns {
    fn new() -> Self {
        Self::new_named("test")
    }

    fn new_named(what: &str) -> Self {
        let name = format!("minik8s-proxy-{what}-{}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn service(name: &str, ip: &str, node_port: Option<i32>) -> Service {
    let mut port = json!({"name": "p80", "port": 80, "protocol": "TCP"});
    let mut spec = json!({"clusterIP": ip, "sessionAffinity": "ClientIP"});
    if let Some(np) = node_port {
        port["nodePort"] = json!(np);
        spec["type"] = json!("NodePort");
    }
    spec["ports"] = json!([port]);
    serde_json::from_value(json!({"metadata": {"namespace": "ns1", "name": name}, "spec": spec}))
        .unwrap()
}

fn slice(svc: &str, ips: &[&str]) -> EndpointSlice {
    let eps: Vec<_> = ips
        .iter()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": "ns1", "name": format!("{svc}-x"),
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "ports": [{"name": "p80", "port": 8080, "protocol": "TCP"}],
        "endpoints": eps,
    }))
    .unwrap()
}

async fn save(ipt: &Iptables) -> String {
    let nat = ipt.save("nat").await.unwrap();
    let filter = ipt.save("filter").await.unwrap();
    format!("{filter}{nat}")
}

#[tokio::test]
async fn rules_apply_resync_and_clean_up_in_a_netns() {
    let ns = Netns::new();
    let ipt = Iptables::in_netns(&ns.0);
    let opts = Options {
        cluster_cidr: Some("10.244.0.0/16".into()),
    };
    let services = [
        service("web", "10.96.0.20", Some(30080)),
        service("empty", "10.96.0.21", None),
    ];
    let slices = [slice("web", &["10.244.1.2", "10.244.1.3", "10.244.1.4"])];
    let mut model = Model::from_objects(&services, &slices);
    let mut r = Renderer::new(opts.clone());
    let mut buf = String::new();
    let changed = model.take_changed();
    let plan = r.render(&model, &changed, false, &[]);
    assert!(plan.full);
    assert_eq!(ipt.apply(plan, &mut buf).await.unwrap(), 1);
    r.applied();
    // Syncing the same rules again works (no flush first, chains replaced in place).
    let existing = ipt.service_chains().await.unwrap();
    assert_eq!(existing.len(), 5, "{existing:?}");
    let plan = r.render(&model, &BTreeSet::new(), true, &existing);
    assert!(plan.stale().is_empty());
    ipt.apply(plan, &mut buf).await.unwrap();
    r.applied();

    let saved = save(&ipt).await;
    let svc = render::service_chain("ns1/web:p80", "tcp");
    let ext = render::external_chain("ns1/web:p80", "tcp");
    let sep1 = render::endpoint_chain("ns1/web:p80", "tcp", "10.244.1.2:8080");
    for want in [
        format!("-A KUBE-SERVICES -d 10.96.0.20/32 -p tcp -m comment --comment \"ns1/web:p80 cluster IP\" -m tcp --dport 80 -j {svc}"),
        format!("-m statistic --mode random --probability 0.33333333349 -j {sep1}"),
        "-m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-".to_string(),
        format!("-A {sep1} -s 10.244.1.2/32 -m comment --comment \"ns1/web:p80\" -j KUBE-MARK-MASQ"),
        format!("-A {sep1} -p tcp -m comment --comment \"ns1/web:p80\" -m recent --set --name {sep1} --mask 255.255.255.255 --rsource -m tcp -j DNAT --to-destination 10.244.1.2:8080"),
        format!("-A KUBE-NODEPORTS -p tcp -m comment --comment \"ns1/web:p80\" -m tcp --dport 30080 -j {ext}"),
        "-A KUBE-SERVICES -d 10.96.0.21/32 -p tcp -m comment --comment \"ns1/empty:p80 has no endpoints\" -m tcp --dport 80 -j REJECT".to_string(),
        "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES".to_string(),
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING".to_string(),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".to_string(),
        "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES".to_string(),
    ] {
        assert!(saved.contains(&want), "missing {want:?} in\n{saved}");
    }
    // Each jump exactly once after two syncs.
    assert_eq!(saved.matches("-A PREROUTING ").count(), 1, "{saved}");

    // A rule someone else owns in a built-in chain survives every sync and the cleanup.
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.0,
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-s",
            "192.0.2.0/24",
            "-j",
            "ACCEPT",
        ])
        .status()
        .unwrap();
    assert!(st.success());

    // The web service goes away: its chains are deleted, the empty one now gets endpoints,
    // in a partial sync.
    model.delete_service(&services[0]);
    model.apply_slice(&slice("empty", &["10.244.1.9"]));
    let changed = model.take_changed();
    let plan = r.render(&model, &changed, false, &[]);
    assert!(!plan.full);
    assert_eq!(plan.stale().len(), 5);
    ipt.apply(plan, &mut buf).await.unwrap();
    r.applied();
    let saved = save(&ipt).await;
    assert!(!saved.contains(&svc), "{saved}");
    assert!(!saved.contains(&sep1), "{saved}");
    assert!(!saved.contains(&ext), "{saved}");
    assert!(!saved.contains("REJECT"), "{saved}");
    assert!(
        saved.contains("--to-destination 10.244.1.9:8080"),
        "{saved}"
    );
    assert!(
        saved.contains("-A POSTROUTING -s 192.0.2.0/24 -j ACCEPT"),
        "{saved}"
    );

    // A leftover chain (from an earlier run) goes with the next full sync.
    let leftover = render::endpoint_chain("ns1/old:p80", "tcp", "10.244.9.9:80");
    let st = Command::new("ip")
        .args([
            "netns", "exec", &ns.0, "iptables", "-t", "nat", "-N", &leftover,
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let existing = ipt.service_chains().await.unwrap();
    let plan = r.render(&model, &BTreeSet::new(), true, &existing);
    assert_eq!(plan.stale(), std::slice::from_ref(&leftover));
    ipt.apply(plan, &mut buf).await.unwrap();
    r.applied();
    let saved = save(&ipt).await;
    assert!(!saved.contains(&leftover), "{saved}");
    assert!(
        saved.contains("--to-destination 10.244.1.9:8080"),
        "{saved}"
    );

    ipt.cleanup().await.unwrap();
    let saved = save(&ipt).await;
    assert!(!saved.contains("KUBE-"), "left behind:\n{saved}");
    assert!(
        saved.contains("-A POSTROUTING -s 192.0.2.0/24 -j ACCEPT"),
        "{saved}"
    );
    // Cleanup with nothing left is fine.
    ipt.cleanup().await.unwrap();
}

/// `iptables-save` of both tables as a sorted set of lines, without comments and counters.
async fn saved_lines(ipt: &Iptables) -> Vec<String> {
    let mut lines: Vec<String> = save(ipt)
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect();
    lines.sort();
    lines
}

#[tokio::test]
async fn a_sync_in_batches_leaves_the_same_rules_as_one_input() {
    let ns = Netns::new_named("batch");
    let ipt = Iptables::in_netns(&ns.0);
    let services: Vec<Service> = (0..6)
        .map(|i| {
            service(
                &format!("s{i}"),
                &format!("10.96.1.{i}"),
                (i % 2 == 0).then_some(30100 + i),
            )
        })
        .collect();
    let slices: Vec<EndpointSlice> = (0..5)
        .map(|i| {
            slice(
                &format!("s{i}"),
                &[
                    format!("10.244.2.{i}").as_str(),
                    format!("10.244.3.{i}").as_str(),
                ],
            )
        })
        .collect();
    let model = Model::from_objects(&services, &slices);
    let mut buf = String::new();

    let mut r = Renderer::new(Options::default());
    let plan = r.render(&model, &BTreeSet::new(), true, &[]);
    assert_eq!(plan.chains_written(), 5 * 3 + 3);
    assert_eq!(ipt.apply(plan, &mut buf).await.unwrap(), 1);
    let single = saved_lines(&ipt).await;
    assert!(single
        .iter()
        .any(|l| l.contains("--to-destination 10.244.3.4:8080")));
    ipt.cleanup().await.unwrap();

    let mut r = Renderer::new(Options::default());
    let plan = r.render(&model, &BTreeSet::new(), true, &[]);
    // 3 or 4 chains per service: 6 inputs of chains (a service is never split), then the last.
    assert_eq!(ipt.apply_batched(plan, &mut buf, 4).await.unwrap(), 6);
    assert_eq!(saved_lines(&ipt).await, single);
    ipt.cleanup().await.unwrap();
}
