//! Acknowledged writes survive `kill -9` of `minik8s server` (embedded store), and a second
//! start on the same data dir keeps every object.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::stream::{self, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn start(dir: &std::path::Path, port: u16) -> Result<Child> {
    Ok(Command::new(env!("CARGO_BIN_EXE_minik8s"))
        .args(["server", "--data-dir"])
        .arg(dir)
        .args([
            "--https-listen-port",
            &port.to_string(),
            "--bind-address",
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

async fn client(dir: &std::path::Path) -> Result<kube::Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(kc) = kube::config::Kubeconfig::read_from(dir.join("kubeconfig.yaml")) {
            let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
            let c = kube::Client::try_from(conf)?;
            if c.apiserver_version().await.is_ok() {
                return Ok(c);
            }
        }
        if Instant::now() > deadline {
            bail!("server did not come up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let mut child = start(dir.path(), port)?;
    let c = client(dir.path()).await?;
    let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    // Many concurrent creates; remember exactly which were acknowledged.
    let acked: Vec<String> = stream::iter(0..300)
        .map(|i| {
            let api = api.clone();
            async move {
                let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": format!("durable-{i}")}, "data": {"v": "x".repeat(1024)}
                }))
                .ok()?;
                api.create(&PostParams::default(), &cm)
                    .await
                    .ok()?
                    .metadata
                    .name
            }
        })
        .buffer_unordered(32)
        .filter_map(|n| async move { n })
        .collect()
        .await;
    // No graceful shutdown: SIGKILL at once.
    child.kill().context("kill -9")?;
    child.wait()?;
    assert_eq!(
        acked.len(),
        300,
        "every create should have been acknowledged"
    );

    let mut child = start(dir.path(), port)?;
    let res = async {
        let c = client(dir.path()).await?;
        let api: Api<ConfigMap> = Api::namespaced(c, "default");
        let list = api.list(&ListParams::default()).await?;
        let names: std::collections::HashSet<String> = list
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|n| !names.contains(*n)).collect();
        if !lost.is_empty() {
            bail!(
                "{} acknowledged objects lost after kill -9: {:?}",
                lost.len(),
                &lost[..lost.len().min(5)]
            );
        }
        Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    res
}
