//! Endpoints controller: one Endpoints object per Service with a selector, listing the
//! addresses of its pods (ready ones in `addresses`, others in `notReadyAddresses`) with the
//! target ports resolved per pod, like upstream's pkg/controller/endpoint.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::common::pod;
use crate::common::rounds::{watch, Rounds};
use crate::ControllerContext;

/// A pod's resolved ports: (name, number, protocol), sorted.
pub type PortKey = Vec<(String, i32, String)>;

/// Label upstream puts on the Endpoints and EndpointSlices of headless services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// Runs the endpoints controller until `shutdown`.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let shutdown = ctx.shutdown.clone();
    let wake = Arc::new(Notify::new());
    let services = watch::<Service>(&ctx.informers, &wake, &ctx.shutdown).await;
    let pods = watch::<Pod>(&ctx.informers, &wake, &ctx.shutdown).await;
    let endpoints = watch::<Endpoints>(&ctx.informers, &wake, &ctx.shutdown).await;
    let mut known: HashSet<(String, String)> = HashSet::new();
    let mut rounds = Rounds::new("endpoints", wake, Duration::from_secs(30), shutdown);
    while rounds.next().await {
        rounds.report(sync(&client, &services, &pods, &endpoints, &mut known).await);
    }
    Ok(())
}

/// The subsets a Service's pods produce, addresses and ports sorted so equal inputs give
/// equal output.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let svc_name = svc.name_any();
    // Pods with the same port set share one subset.
    let mut groups: BTreeMap<PortKey, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for p in pods {
        if p.metadata.deletion_timestamp.is_some() && !publish_not_ready {
            continue;
        }
        let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        if pod::is_terminal(p) {
            continue;
        }
        let ports: Vec<(String, i32, String)> = match &spec.ports {
            Some(ports) if !ports.is_empty() => ports
                .iter()
                .filter_map(|sp| {
                    pod::target_port(p, sp).map(|n| {
                        (
                            sp.name.clone().unwrap_or_default(),
                            n,
                            sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        )
                    })
                })
                .collect(),
            // A headless service without ports lists addresses only.
            _ if headless => Vec::new(),
            _ => continue,
        };
        if ports.is_empty() && !headless {
            continue;
        }
        let pspec = p.spec.as_ref();
        let hostname = pspec
            .filter(|s| s.subdomain.as_deref() == Some(svc_name.as_str()))
            .and_then(|s| s.hostname.clone());
        let addr = EndpointAddress {
            ip,
            hostname,
            node_name: pspec.and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: p.metadata.namespace.clone(),
                name: p.metadata.name.clone(),
                uid: p.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let mut key = ports;
        key.sort();
        let entry = groups.entry(key).or_default();
        if publish_not_ready || pod::is_pod_ready(p) {
            entry.0.push(addr);
        } else {
            entry.1.push(addr);
        }
    }
    let app_protocols: BTreeMap<String, Option<String>> = spec
        .ports
        .iter()
        .flatten()
        .map(|sp| (sp.name.clone().unwrap_or_default(), sp.app_protocol.clone()))
        .collect();
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            app_protocol: app_protocols.get(&name).cloned().flatten(),
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

/// The labels of a Service's Endpoints: the Service's own, plus the headless marker.
pub fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    if svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None") {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

/// The Service's pods: same namespace, matching its selector.
pub fn selected_pods(svc: &Service, pods: &Store<Pod>) -> Option<Vec<Arc<Pod>>> {
    let selector = svc.spec.as_ref()?.selector.as_ref()?;
    if selector.is_empty() {
        return None;
    }
    let ns = svc.metadata.namespace.as_deref();
    Some(pods.state_filter(|p| {
        p.metadata.namespace.as_deref() == ns
            && pod::matches_selector(p.metadata.labels.as_ref(), selector)
    }))
}

async fn sync(
    client: &Client,
    services: &Store<Service>,
    pods: &Store<Pod>,
    endpoints: &Store<Endpoints>,
    known: &mut HashSet<(String, String)>,
) -> anyhow::Result<()> {
    let mut seen = HashSet::new();
    let mut result = Ok(());
    for svc in services.state() {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        seen.insert((ns.clone(), name.clone()));
        // Services without a selector have their Endpoints managed by someone else.
        let Some(selected) = selected_pods(&svc, pods) else {
            continue;
        };
        let subsets = desired_subsets(&svc, &selected);
        let labels = service_labels(&svc);
        let current =
            endpoints.find(|e| e.namespace().as_deref() == Some(&ns) && e.name_any() == name);
        let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
        let want_subsets = (!subsets.is_empty()).then_some(subsets);
        let r = match current {
            Some(cur) => {
                let cur_labels = cur.metadata.labels.clone().unwrap_or_default();
                if cur.subsets == want_subsets && cur_labels == labels {
                    continue;
                }
                let mut next = (*cur).clone();
                next.subsets = want_subsets;
                next.metadata.labels = Some(labels);
                api.replace(&name, &PostParams::default(), &next)
                    .await
                    .map(|_| ())
            }
            None => {
                let mut ep = Endpoints::default();
                ep.metadata.name = Some(name.clone());
                ep.metadata.labels = Some(labels);
                ep.subsets = want_subsets;
                api.create(&PostParams::default(), &ep).await.map(|_| ())
            }
        };
        if let Err(e) = r {
            tracing::debug!(namespace = %ns, service = %name, error = %e, "endpoints update");
            result = Err(e.into());
        }
    }
    // Services that went away since the last round take their Endpoints with them.
    let mut retry = Vec::new();
    for (ns, name) in known.difference(&seen) {
        let api: Api<Endpoints> = Api::namespaced(client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                // Remembered, so the next round tries again.
                retry.push((ns.clone(), name.clone()));
                result = Err(e.into());
            }
        }
    }
    seen.extend(retry);
    *known = seen;
    result
}
