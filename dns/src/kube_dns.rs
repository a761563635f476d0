//! The `kube-dns` Service in kube-system and the EndpointSlice (and Endpoints) that point
//! it at this DNS server, so the proxy routes the cluster DNS address to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort as CoreEndpointPort, EndpointSubset, Endpoints, Service,
    ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::zone::{dashed, SERVICE_NAME_LABEL};

/// Namespace of the cluster DNS Service.
pub const NAMESPACE: &str = "kube-system";
/// Name of the cluster DNS Service.
pub const SERVICE: &str = "kube-dns";
/// Field manager of everything this module writes.
pub const MANAGER: &str = "minik8s-dns";

/// Errors ensuring the kube-dns objects.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing {kind} {NAMESPACE}/{name}: {source}")]
    Apply {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("encoding a kube-dns object: {0}")]
    Encode(#[source] serde_json::Error),
}

/// The kube-dns Service at `cluster_ip`, its ports targeting `port`.
pub fn service(cluster_ip: &str, port: u16) -> Service {
    let p = |name: &str, proto: &str| ServicePort {
        name: Some(name.into()),
        port: 53,
        protocol: Some(proto.into()),
        target_port: Some(IntOrString::Int(port.into())),
        ..Default::default()
    };
    Service {
        metadata: ObjectMeta {
            name: Some(SERVICE.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(labels()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some(cluster_ip.into()),
            cluster_ips: Some(vec![cluster_ip.into()]),
            ports: Some(vec![p("dns", "UDP"), p("dns-tcp", "TCP")]),
            ..Default::default()
        }),
        status: None,
    }
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("k8s-app".to_string(), "kube-dns".to_string()),
        ("kubernetes.io/cluster-service".into(), "true".into()),
        ("kubernetes.io/name".into(), "CoreDNS".into()),
    ])
}

/// The name of the EndpointSlice of the DNS server at `addr`: one per node address, so
/// several servers (one per node) back the Service side by side and a restarted server
/// (perhaps on another port) takes its own slice over.
pub fn slice_name(addr: SocketAddr) -> String {
    format!("{SERVICE}-{}", dashed(addr.ip()))
}

/// The EndpointSlice pointing kube-dns at the server listening on `addr`.
pub fn endpoint_slice(addr: SocketAddr, owner: Option<&Service>) -> EndpointSlice {
    let p = |name: &str, proto: &str| EndpointPort {
        name: Some(name.into()),
        port: Some(addr.port().into()),
        protocol: Some(proto.into()),
        ..Default::default()
    };
    let mut labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_string(), SERVICE.to_string()),
        (
            "endpointslice.kubernetes.io/managed-by".into(),
            MANAGER.into(),
        ),
    ]);
    labels.insert("k8s-app".into(), "kube-dns".into());
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(addr)),
            namespace: Some(NAMESPACE.into()),
            labels: Some(labels),
            owner_references: owner.and_then(owner_reference).map(|o| vec![o]),
            ..Default::default()
        },
        address_type: if addr.is_ipv4() { "IPv4" } else { "IPv6" }.into(),
        endpoints: vec![Endpoint {
            addresses: vec![addr.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }],
        ports: Some(vec![p("dns", "UDP"), p("dns-tcp", "TCP")]),
    }
}

fn owner_reference(svc: &Service) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone()?,
        uid: svc.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// The legacy Endpoints of kube-dns: this server's address.
pub fn endpoints(addr: SocketAddr) -> Endpoints {
    let p = |name: &str, proto: &str| CoreEndpointPort {
        name: Some(name.into()),
        port: addr.port().into(),
        protocol: Some(proto.into()),
        ..Default::default()
    };
    Endpoints {
        metadata: ObjectMeta {
            name: Some(SERVICE.into()),
            namespace: Some(NAMESPACE.into()),
            labels: Some(labels()),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: addr.ip().to_string(),
                ..Default::default()
            }]),
            ports: Some(vec![p("dns", "UDP"), p("dns-tcp", "TCP")]),
            not_ready_addresses: None,
        }]),
    }
}

/// Creates the Service, its EndpointSlice and Endpoints, or brings existing ones in line
/// (merge patches: idempotent). A kube-dns Service that already holds another cluster IP
/// keeps it (the field is immutable); the server is still reached through it.
pub async fn ensure(
    client: &kube::Client,
    cluster_ip: &str,
    addr: SocketAddr,
) -> Result<(), Error> {
    let want = service(cluster_ip, addr.port());
    // On an existing Service only labels and ports are ours to set.
    let patch = serde_json::json!({
        "metadata": {"labels": want.metadata.labels},
        "spec": {"ports": want.spec.as_ref().and_then(|s| s.ports.clone())},
    });
    let svc = upsert(client, "Service", SERVICE, &want, &patch).await?;
    if let Some(have) = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .filter(|h| *h != cluster_ip)
    {
        tracing::warn!(
            want = cluster_ip,
            have,
            "Service kube-system/kube-dns already has another cluster IP; keeping it"
        );
    }
    let slice = endpoint_slice(addr, Some(&svc));
    let patch = serde_json::to_value(&slice).map_err(Error::Encode)?;
    upsert(client, "EndpointSlice", &slice_name(addr), &slice, &patch).await?;
    let ep = endpoints(addr);
    let patch = serde_json::to_value(&ep).map_err(Error::Encode)?;
    upsert(client, "Endpoints", SERVICE, &ep, &patch).await?;
    Ok(())
}

/// Creates `obj` in kube-system, or merge-patches the existing object with `patch`.
async fn upsert<K>(
    client: &kube::Client,
    kind: &'static str,
    name: &str,
    obj: &K,
    patch: &serde_json::Value,
) -> Result<K, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let api: Api<K> = Api::namespaced(client.clone(), NAMESPACE);
    let err = |source| Error::Apply {
        kind,
        name: name.to_string(),
        source,
    };
    match api.create(&PostParams::default(), obj).await {
        Ok(created) => return Ok(created),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(err(e)),
    }
    let pp = PatchParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    };
    api.patch(name, &pp, &Patch::Merge(patch))
        .await
        .map_err(err)
}

/// Ensures the objects until it succeeds once, then again every `period` (they may have
/// been deleted), until shutdown. Failures are logged and retried.
pub async fn keep(
    client: kube::Client,
    cluster_ip: String,
    addr: SocketAddr,
    period: Duration,
    shutdown: CancellationToken,
) {
    let mut retry = Duration::from_millis(500);
    loop {
        let wait = match ensure(&client, &cluster_ip, addr).await {
            Ok(()) => {
                tracing::debug!(%addr, "kube-dns Service and endpoints in place");
                retry = Duration::from_millis(500);
                period
            }
            Err(e) => {
                tracing::warn!(error = %e, "ensuring the kube-dns Service");
                retry = (retry * 2).min(Duration::from_secs(30));
                retry
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
