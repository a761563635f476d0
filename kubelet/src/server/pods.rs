//! Finding a pod's containers in Docker by the labels the kubelet puts on them.

use std::collections::HashMap;

use bollard::query_parameters::ListContainersOptionsBuilder;

use super::Context;
use crate::labels;

/// Name of the sandbox (infra) container in the container-name label.
pub(super) const SANDBOX: &str = "POD";
/// The container's restart count, as the kubelet's pod workers label it; orders the
/// instances of one container when present.
const ATTEMPT: &str = "io.kubernetes.container.restartCount";

/// One Docker container of a pod.
#[derive(Debug, Clone)]
pub(super) struct Found {
    pub id: String,
    pub running: bool,
    attempt: u64,
    created: i64,
}

/// Every container of `pod` named `container` on this node (all states), newest first.
pub(super) async fn containers(
    ctx: &Context,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<Vec<Found>, bollard::errors::Error> {
    let mut filters: HashMap<&str, Vec<String>> = HashMap::new();
    let mut l = vec![
        format!("{}={}", labels::NODE, ctx.node_name),
        format!("{}={namespace}", labels::POD_NAMESPACE),
        format!("{}={pod}", labels::POD_NAME),
    ];
    if let Some(c) = container {
        l.push(format!("{}={c}", labels::CONTAINER_NAME));
    }
    filters.insert("label", l);
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    let list = ctx.docker.list_containers(Some(opts)).await?;
    let mut found: Vec<Found> = list
        .into_iter()
        .filter_map(|c| {
            Some(Found {
                id: c.id?,
                running: c.state.is_some_and(|s| {
                    matches!(
                        s,
                        bollard::models::ContainerSummaryStateEnum::RUNNING
                            | bollard::models::ContainerSummaryStateEnum::PAUSED
                    )
                }),
                attempt: c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(ATTEMPT))
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0),
                created: c.created.unwrap_or(0),
            })
        })
        .collect();
    // Newest first: highest restart count, then creation time; a running one wins over an
    // exited one created in the same second.
    found.sort_by_key(|c| std::cmp::Reverse((c.attempt, c.created, c.running)));
    Ok(found)
}

/// The running container `container` of the pod, or the message upstream's kubelet gives.
pub(super) async fn running(
    ctx: &Context,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String, String> {
    let all = containers(ctx, namespace, pod, Some(container))
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    all.into_iter()
        .find(|c| c.running)
        .map(|c| c.id)
        .ok_or_else(|| format!("container not found ({container:?})"))
}

/// The pod's IP address: the sandbox's, else that of any container of the pod, following
/// `container:<id>` network modes. Host-network pods answer on 127.0.0.1.
pub(super) async fn pod_ip(ctx: &Context, namespace: &str, pod: &str) -> Result<String, String> {
    let all = containers(ctx, namespace, pod, None)
        .await
        .map_err(|e| format!("cannot list containers: {e}"))?;
    let mut ids: Vec<String> = Vec::new();
    // Sandbox first.
    if let Ok(sb) = containers(ctx, namespace, pod, Some(SANDBOX)).await {
        ids.extend(sb.into_iter().filter(|c| c.running).map(|c| c.id));
    }
    ids.extend(all.into_iter().filter(|c| c.running).map(|c| c.id));
    for id in ids {
        let mut cur = id;
        for _ in 0..3 {
            let Ok(info) = ctx.docker.inspect_container(&cur, None).await else {
                break;
            };
            let mode = info
                .host_config
                .as_ref()
                .and_then(|h| h.network_mode.clone())
                .unwrap_or_default();
            if mode == "host" {
                return Ok("127.0.0.1".into());
            }
            if let Some(target) = mode.strip_prefix("container:") {
                cur = target.to_string();
                continue;
            }
            let ns = info.network_settings.as_ref();
            let ip = ns.and_then(|n| n.networks.as_ref()).and_then(|m| {
                m.values()
                    .filter_map(|e| e.ip_address.clone())
                    .find(|ip| !ip.is_empty())
            });
            if let Some(ip) = ip {
                return Ok(ip);
            }
            break;
        }
    }
    Err(format!(
        "pod {namespace}/{pod} has no running container with an IP address"
    ))
}
