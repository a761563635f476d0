//! EndpointSlice controller: the EndpointSlices of every Service with a selector, like
//! upstream's pkg/controller/endpointslice. Endpoints carry ready/serving/terminating
//! conditions, pods with the same resolved ports share slices of at most
//! `--max-endpoints-per-slice` endpoints, and a Service without endpoints keeps one empty
//! placeholder slice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::common::pod;
use crate::common::rounds::{watch, Rounds};
use crate::endpoints::{selected_pods, service_labels, PortKey};
use crate::ControllerContext;

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller managing a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// Flags of the EndpointSlice controller.
#[derive(clap::Args, Debug, Clone)]
pub struct EndpointSliceConfig {
    /// Most endpoints one EndpointSlice holds
    #[arg(long, default_value_t = 100)]
    pub max_endpoints_per_slice: usize,
}

impl Default for EndpointSliceConfig {
    fn default() -> Self {
        EndpointSliceConfig {
            max_endpoints_per_slice: 100,
        }
    }
}

/// Runs the EndpointSlice controller until `shutdown`.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let shutdown = ctx.shutdown.clone();
    let cfg = ctx.config.endpointslice.clone();
    let wake = Arc::new(Notify::new());
    let services = watch::<Service>(&ctx.informers, &wake, &ctx.shutdown).await;
    let pods = watch::<Pod>(&ctx.informers, &wake, &ctx.shutdown).await;
    let slices = watch::<EndpointSlice>(&ctx.informers, &wake, &ctx.shutdown).await;
    let max = cfg.max_endpoints_per_slice.max(1);
    let mut rounds = Rounds::new("endpointslice", wake, Duration::from_secs(30), shutdown);
    while rounds.next().await {
        rounds.report(sync(&client, &services, &pods, &slices, max).await);
    }
    Ok(())
}

/// One slice's content: its address type, ports and endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredSlice {
    pub address_type: String,
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

/// The slices a Service's pods produce, each at most `max` endpoints long.
pub fn desired_slices(svc: &Service, pods: &[Arc<Pod>], max: usize) -> Vec<DesiredSlice> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let svc_name = svc.name_any();
    let mut groups: BTreeMap<(String, PortKey), Vec<Endpoint>> = BTreeMap::new();
    for p in pods {
        let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
            continue;
        };
        if pod::is_terminal(p) {
            continue;
        }
        let mut key: PortKey = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                pod::target_port(p, sp).map(|n| {
                    (
                        sp.name.clone().unwrap_or_default(),
                        n,
                        sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
            })
            .collect();
        key.sort();
        let serving = pod::is_pod_ready(p);
        let terminating = p.metadata.deletion_timestamp.is_some();
        let pspec = p.spec.as_ref();
        let address_type = if ip.contains(':') { "IPv6" } else { "IPv4" };
        groups
            .entry((address_type.to_string(), key))
            .or_default()
            .push(Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(publish_not_ready || (serving && !terminating)),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: pspec
                    .filter(|s| s.subdomain.as_deref() == Some(svc_name.as_str()))
                    .and_then(|s| s.hostname.clone()),
                node_name: pspec.and_then(|s| s.node_name.clone()),
                target_ref: Some(ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: p.metadata.namespace.clone(),
                    name: p.metadata.name.clone(),
                    uid: p.metadata.uid.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            });
    }
    let app_protocols: BTreeMap<String, Option<String>> = spec
        .ports
        .iter()
        .flatten()
        .map(|sp| (sp.name.clone().unwrap_or_default(), sp.app_protocol.clone()))
        .collect();
    let mut out = Vec::new();
    for ((address_type, key), mut eps) in groups {
        eps.sort_by(|a, b| a.addresses.cmp(&b.addresses));
        let ports: Vec<EndpointPort> = key
            .into_iter()
            .map(|(name, port, protocol)| EndpointPort {
                app_protocol: app_protocols.get(&name).cloned().flatten(),
                name: Some(name),
                port: Some(port),
                protocol: Some(protocol),
            })
            .collect();
        for chunk in eps.chunks(max) {
            out.push(DesiredSlice {
                address_type: address_type.clone(),
                ports: ports.clone(),
                endpoints: chunk.to_vec(),
            });
        }
    }
    if out.is_empty() {
        // Upstream keeps one empty placeholder slice for a Service without endpoints.
        out.push(DesiredSlice {
            address_type: "IPv4".into(),
            ports: Vec::new(),
            endpoints: Vec::new(),
        });
    }
    out
}

fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = service_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

fn content(s: &EndpointSlice) -> DesiredSlice {
    DesiredSlice {
        address_type: s.address_type.clone(),
        ports: s.ports.clone().unwrap_or_default(),
        endpoints: s.endpoints.clone(),
    }
}

async fn sync(
    client: &Client,
    services: &Store<Service>,
    pods: &Store<Pod>,
    slices: &Store<EndpointSlice>,
    max: usize,
) -> anyhow::Result<()> {
    let mut result: anyhow::Result<()> = Ok(());
    for svc in services.state() {
        let Some(selected) = selected_pods(&svc, pods) else {
            continue;
        };
        let (Some(ns), Some(uid)) = (svc.namespace(), svc.uid()) else {
            continue;
        };
        let name = svc.name_any();
        let desired = desired_slices(&svc, &selected, max);
        let labels = slice_labels(&svc);
        let mut existing: Vec<Arc<EndpointSlice>> = slices.state_filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
        });
        existing.sort_by_key(|s| s.name_any());
        let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns);
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Service".into(),
            name: name.clone(),
            uid: uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        // Slices already holding exactly a desired content stay; the rest is rewritten.
        let mut todo: Vec<DesiredSlice> = Vec::new();
        let mut keep = vec![false; existing.len()];
        for d in desired {
            match existing.iter().enumerate().position(|(i, s)| {
                !keep[i]
                    && content(s) == d
                    && s.labels() == &labels
                    && s.owner_references().iter().any(|o| o.uid == uid)
            }) {
                Some(i) => keep[i] = true,
                None => todo.push(d),
            }
        }
        let mut spare = existing
            .iter()
            .zip(&keep)
            .filter(|(_, k)| !**k)
            .map(|(s, _)| s.clone());
        for d in todo {
            let r = match spare.next() {
                Some(cur) if cur.address_type == d.address_type => {
                    let mut next = (*cur).clone();
                    next.endpoints = d.endpoints;
                    next.ports = Some(d.ports);
                    next.metadata.labels = Some(labels.clone());
                    next.metadata.owner_references = Some(vec![owner.clone()]);
                    api.replace(&cur.name_any(), &PostParams::default(), &next)
                        .await
                        .map(|_| ())
                }
                other => {
                    // An address type cannot change: replace the slice by a new one.
                    if let Some(cur) = other {
                        delete(&api, &cur.name_any()).await?;
                    }
                    let mut s = EndpointSlice {
                        address_type: d.address_type,
                        endpoints: d.endpoints,
                        ports: Some(d.ports),
                        ..Default::default()
                    };
                    s.metadata.generate_name = Some(format!("{name}-"));
                    s.metadata.labels = Some(labels.clone());
                    s.metadata.owner_references = Some(vec![owner.clone()]);
                    api.create(&PostParams::default(), &s).await.map(|_| ())
                }
            };
            if let Err(e) = r {
                tracing::debug!(namespace = %ns, service = %name, error = %e, "endpointslice write");
                result = Err(e.into());
            }
        }
        for cur in spare {
            if let Err(e) = delete(&api, &cur.name_any()).await {
                result = Err(e);
            }
        }
    }
    result
}

async fn delete(api: &Api<EndpointSlice>, name: &str) -> anyhow::Result<()> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
