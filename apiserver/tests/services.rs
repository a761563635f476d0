//! Service ClusterIP and NodePort allocation over real HTTPS: uniqueness under concurrency,
//! user-chosen values, release, restarts and two API servers sharing one etcd.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;
use tokio_util::sync::CancellationToken;

struct Srv {
    client: Client,
    shutdown: CancellationToken,
    server: apiserver::Server,
}

async fn start(dir: &Path, etcd: Option<&str>) -> Result<Srv> {
    let mut cfg = apiserver::Config::for_test(dir.to_path_buf());
    if let Some(e) = etcd {
        cfg.datastore_endpoint = vec![e.to_string()];
    }
    let shutdown = CancellationToken::new();
    let server = apiserver::start(cfg, shutdown.clone()).await?;
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(Srv {
        client: Client::try_from(conf)?,
        shutdown,
        server,
    })
}

impl Srv {
    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), "default")
    }
    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.server.wait())
            .await
            .context("server did not stop")??;
        Ok(())
    }
}

fn svc(name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("service")
}

fn ip_of(s: &Service) -> String {
    s.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .unwrap_or_default()
}

fn invalid(e: kube::Error) -> String {
    match e {
        kube::Error::Api(r) => format!("{} {}", r.code, r.message),
        other => other.to_string(),
    }
}

async fn create_n(api: &Api<Service>, prefix: &str, n: usize) -> Result<Vec<String>> {
    let futs = (0..n).map(|i| {
        let api = api.clone();
        let name = format!("{prefix}-{i}");
        async move {
            api.create(
                &PostParams::default(),
                &svc(&name, json!({"ports": [{"port": 80}]})),
            )
            .await
        }
    });
    let mut ips = Vec::new();
    for r in futures::future::join_all(futs).await {
        ips.push(ip_of(&r?));
    }
    Ok(ips)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_and_node_ports() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let s = start(dir.path(), None).await?;
    let api = s.services();

    // The kubernetes Service at the range's first IP, endpoints at this API server.
    let k = api.get("kubernetes").await?;
    assert_eq!(ip_of(&k), "10.96.0.1");
    let ep: Endpoints = Api::namespaced(s.client.clone(), "default")
        .get("kubernetes")
        .await?;
    let subset = &ep.subsets.unwrap_or_default()[0];
    assert_eq!(
        subset.addresses.as_ref().map(|a| a[0].ip.clone()),
        Some("127.0.0.1".into())
    );
    assert_eq!(
        subset.ports.as_ref().map(|p| p[0].port),
        Some(i32::from(s.server.addr.port()))
    );

    // 50 concurrent creates: 50 distinct IPs in range.
    let ips = create_n(&api, "c", 50).await?;
    let set: HashSet<_> = ips.iter().collect();
    assert_eq!(set.len(), 50, "duplicate IPs: {ips:?}");
    for ip in &ips {
        let o: Vec<u8> = ip.split('.').map(|x| x.parse().unwrap()).collect();
        assert!(o[0] == 10 && (96..112).contains(&o[1]), "{ip} out of range");
        assert_ne!(ip, "10.96.0.1");
    }
    let c0 = api.get("c-0").await?;
    let spec = c0.spec.clone().unwrap();
    assert_eq!(spec.cluster_ips, Some(vec![ips[0].clone()]));
    assert_eq!(spec.ip_families, Some(vec!["IPv4".into()]));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));

    // User-chosen IPs: taken, out of range, free.
    let e = api
        .create(
            &PostParams::default(),
            &svc("dup", json!({"clusterIP": ips[0], "ports": [{"port": 80}]})),
        )
        .await
        .unwrap_err();
    assert_eq!(
        invalid(e),
        format!("422 Service \"dup\" is invalid: spec.clusterIPs: Invalid value: [\"{0}\"]: failed to allocate IP {0}: provided IP is already allocated", ips[0])
    );
    let e = api
        .create(
            &PostParams::default(),
            &svc(
                "out",
                json!({"clusterIP": "10.0.0.1", "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(
        invalid(e),
        "422 Service \"out\" is invalid: spec.clusterIPs: Invalid value: [\"10.0.0.1\"]: failed to allocate IP 10.0.0.1: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/12"
    );
    let mine = api
        .create(
            &PostParams::default(),
            &svc(
                "mine",
                json!({"clusterIP": "10.100.0.7", "ports": [{"port": 80}]}),
            ),
        )
        .await?;
    assert_eq!(ip_of(&mine), "10.100.0.7");

    // Headless keeps None; ExternalName gets no IP.
    let h = api
        .create(
            &PostParams::default(),
            &svc(
                "headless",
                json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            ),
        )
        .await?;
    assert_eq!(ip_of(&h), "None");
    let x = api
        .create(
            &PostParams::default(),
            &svc(
                "ext",
                json!({"type": "ExternalName", "externalName": "example.com"}),
            ),
        )
        .await?;
    assert_eq!(ip_of(&x), "");

    // Delete releases: the IP can be chosen again.
    api.delete("mine", &DeleteParams::default()).await?;
    let again = api
        .create(
            &PostParams::default(),
            &svc(
                "mine2",
                json!({"clusterIP": "10.100.0.7", "ports": [{"port": 80}]}),
            ),
        )
        .await?;
    assert_eq!(ip_of(&again), "10.100.0.7");

    // Type change to ExternalName releases the IP.
    api.patch(
        "mine2",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"type": "ExternalName", "externalName": "a.example.com"}})),
    )
    .await?;
    let got = api.get("mine2").await?;
    assert_eq!(ip_of(&got), "");
    let third = api
        .create(
            &PostParams::default(),
            &svc(
                "mine3",
                json!({"clusterIP": "10.100.0.7", "ports": [{"port": 80}]}),
            ),
        )
        .await?;
    assert_eq!(ip_of(&third), "10.100.0.7");

    // NodePorts: allocated in range, chosen ones checked, released on delete.
    let np = api
        .create(
            &PostParams::default(),
            &svc(
                "np",
                json!({"type": "NodePort", "ports": [{"port": 80, "name": "a"}, {"port": 81, "name": "b", "nodePort": 30080}]}),
            ),
        )
        .await?;
    let ports = np.spec.unwrap().ports.unwrap();
    let auto = ports[0].node_port.unwrap();
    assert!((30000..=32767).contains(&auto), "{auto}");
    assert_eq!(ports[1].node_port, Some(30080));
    let e = api
        .create(
            &PostParams::default(),
            &svc(
                "np2",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(
        invalid(e),
        "422 Service \"np2\" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"
    );
    let e = api
        .create(
            &PostParams::default(),
            &svc(
                "np3",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(
        invalid(e),
        "422 Service \"np3\" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"
    );
    api.delete("np", &DeleteParams::default()).await?;
    api.create(
        &PostParams::default(),
        &svc(
            "np2",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        ),
    )
    .await?;
    s.stop().await?;

    // After a restart on the same data dir, nothing in use is handed out again.
    let s = start(dir.path(), None).await?;
    let api = s.services();
    let e = api
        .create(
            &PostParams::default(),
            &svc(
                "dup2",
                json!({"clusterIP": ips[1], "ports": [{"port": 80}]}),
            ),
        )
        .await
        .unwrap_err();
    assert!(invalid(e).contains("provided IP is already allocated"));
    let more = create_n(&api, "d", 10).await?;
    for ip in &more {
        assert!(!ips.contains(ip) && ip != "10.96.0.1" && ip != "10.100.0.7");
    }
    s.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_servers_on_one_etcd_never_share_an_ip() -> Result<()> {
    let etcd = support::etcd::TestEtcd::start().await;
    let (d1, d2) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let a = start(d1.path(), Some(&etcd.endpoint)).await?;
    let b = start(d2.path(), Some(&etcd.endpoint)).await?;
    let (aa, bb) = (a.services(), b.services());
    let (ra, rb) = tokio::join!(create_n(&aa, "a", 25), create_n(&bb, "b", 25));
    let mut all = ra?;
    all.extend(rb?);
    all.push("10.96.0.1".into());
    let set: HashSet<_> = all.iter().collect();
    assert_eq!(set.len(), all.len(), "an IP was handed out twice: {all:?}");
    a.stop().await?;
    b.stop().await
}
