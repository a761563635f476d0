//! `proxy::run` against a real in-process API server, its rules applied inside a network
//! namespace this test creates: Service and EndpointSlice changes reach iptables.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use proxy::Iptables;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    cfg: proxy::Config,
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

async fn wait_for(ipt: &Iptables, what: &str, f: impl Fn(&str) -> bool) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let saved = format!("{}{}", ipt.save("filter").await?, ipt.save("nat").await?);
        if f(&saved) {
            return Ok(saved);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}:\n{saved}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn services_and_slices_reach_iptables() -> Result<()> {
    let name = format!("minik8s-proxy-run-{}", std::process::id());
    assert!(Command::new("ip")
        .args(["netns", "add", &name])
        .status()?
        .success());
    let ns = Netns(name);
    let ipt = Iptables::in_netns(&ns.0);

    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let server = apiserver::start(
        apiserver::Config::for_test(dir.path().into()),
        shutdown.clone(),
    )
    .await?;
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    let nsobj: Namespace = serde_json::from_value(json!({"metadata": {"name": "t"}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &nsobj)
        .await?;

    let kcarg = format!("--kubeconfig={}", server.kubeconfig.display());
    let cli = Cli::try_parse_from(["proxy", kcarg.as_str(), "--min-sync-period=100ms"])?;
    let stop = CancellationToken::new();
    let task = tokio::spawn(proxy::run_with(cli.cfg, ipt.clone(), stop.clone()));

    let svcs: Api<Service> = Api::namespaced(client.clone(), "t");
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "10.96.0.50", "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))?;
    svcs.create(&PostParams::default(), &svc).await?;
    wait_for(&ipt, "REJECT for a service without endpoints", |s| {
        s.contains("\"t/web:http has no endpoints\"") && s.contains("-j REJECT")
    })
    .await?;

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "t");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": true}}]}))?;
    slices.create(&PostParams::default(), &slice).await?;
    let saved = wait_for(&ipt, "DNAT to the endpoint", |s| {
        s.contains("--to-destination 10.244.0.5:8080")
    })
    .await?;
    assert!(!saved.contains("REJECT"), "{saved}");

    // A second endpoint: traffic is split between both.
    let patch = json!({"endpoints": [
        {"addresses": ["10.244.0.5"], "conditions": {"ready": true}},
        {"addresses": ["10.244.0.6"], "conditions": {"ready": true}}]});
    slices
        .patch("web-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for(&ipt, "two endpoints", |s| {
        s.contains("--probability 0.50000000000") && s.contains("--to-destination 10.244.0.6:8080")
    })
    .await?;

    // The service goes away: so do its chains (the `kubernetes` Service's stay).
    svcs.delete("web", &DeleteParams::default()).await?;
    wait_for(&ipt, "the service's chains to go", |s| {
        !s.contains("/web:") && !s.contains("10.244.0.5") && !s.contains("10.244.0.6")
    })
    .await?;

    stop.cancel();
    task.await??;

    let cli = Cli::try_parse_from(["proxy", kcarg.as_str(), "--cleanup"])?;
    proxy::run_with(cli.cfg, ipt.clone(), CancellationToken::new()).await?;
    let saved = format!("{}{}", ipt.save("filter").await?, ipt.save("nat").await?);
    assert!(!saved.contains("KUBE-"), "{saved}");
    shutdown.cancel();
    Ok(())
}
