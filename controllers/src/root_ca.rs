//! Root CA publisher: a `kube-root-ca.crt` ConfigMap with the cluster CA under `ca.crt` in
//! every namespace, kept in step (upstream's pkg/controller/certificates/rootcacertpublisher).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::common::rounds::{watch, Rounds};
use crate::ControllerContext;

/// Name of the published ConfigMap.
pub const CONFIGMAP_NAME: &str = "kube-root-ca.crt";
/// Key holding the CA bundle.
pub const DATA_KEY: &str = "ca.crt";
const DESCRIPTION_ANNOTATION: &str = "kubernetes.io/description";
const DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

/// Errors finding the CA to publish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("the kubeconfig's current cluster has no certificate authority")]
    NoCa,
    #[error("certificate-authority-data is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("reading certificate-authority file {path}: {source}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The PEM of the CA the kubeconfig trusts for its current cluster: its
/// `certificate-authority-data`, else its `certificate-authority` file.
pub fn ca_from_kubeconfig(path: Option<&Path>) -> Result<String, Error> {
    let kc = match path {
        Some(p) => kube::config::Kubeconfig::read_from(p)?,
        None => kube::config::Kubeconfig::read()?,
    };
    let cluster_name = kc
        .current_context
        .as_ref()
        .and_then(|cur| kc.contexts.iter().find(|c| &c.name == cur))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref())
        .or(kc.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .ok_or(Error::NoCa)?;
    if let Some(data) = &cluster.certificate_authority_data {
        let pem = base64::engine::general_purpose::STANDARD.decode(data.trim())?;
        return Ok(String::from_utf8_lossy(&pem).into_owned());
    }
    if let Some(file) = &cluster.certificate_authority {
        return std::fs::read_to_string(file).map_err(|source| Error::CaFile {
            path: file.clone(),
            source,
        });
    }
    Err(Error::NoCa)
}

/// Runs the publisher until `shutdown`, publishing `ca_pem`.
pub async fn run(ctx: ControllerContext) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let shutdown = ctx.shutdown.clone();
    let ca_pem = ca_from_kubeconfig(ctx.config.client.kubeconfig.as_deref())?;
    let wake = Arc::new(Notify::new());
    let namespaces = watch::<Namespace>(&ctx.informers, &wake, &ctx.shutdown).await;
    let maps = watch::<ConfigMap>(&ctx.informers, &wake, &ctx.shutdown).await;
    let mut rounds = Rounds::new(
        "root-ca-cert-publisher",
        wake,
        Duration::from_secs(30),
        shutdown,
    );
    while rounds.next().await {
        rounds.report(sync(&client, &namespaces, &maps, &ca_pem).await);
    }
    Ok(())
}

async fn sync(
    client: &Client,
    namespaces: &Store<Namespace>,
    maps: &Store<ConfigMap>,
    ca_pem: &str,
) -> anyhow::Result<()> {
    let want: BTreeMap<String, String> = [(DATA_KEY.to_string(), ca_pem.to_string())].into();
    let mut result = Ok(());
    for ns in namespaces.state() {
        if ns.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = ns.name_any();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &name);
        let current = maps.find(|m| {
            m.namespace().as_deref() == Some(name.as_str()) && m.name_any() == CONFIGMAP_NAME
        });
        let r = match current {
            Some(cm) if cm.data.as_ref() == Some(&want) => continue,
            Some(cm) => {
                let mut next = (*cm).clone();
                next.data = Some(want.clone());
                next.binary_data = None;
                api.replace(CONFIGMAP_NAME, &PostParams::default(), &next)
                    .await
                    .map(|_| ())
            }
            None => {
                let mut cm = ConfigMap::default();
                cm.metadata.name = Some(CONFIGMAP_NAME.into());
                cm.metadata.annotations =
                    Some([(DESCRIPTION_ANNOTATION.to_string(), DESCRIPTION.to_string())].into());
                cm.data = Some(want.clone());
                api.create(&PostParams::default(), &cm).await.map(|_| ())
            }
        };
        match r {
            Ok(()) => {}
            Err(kube::Error::Api(s)) if matches!(s.code, 409 | 403 | 404) => {}
            Err(e) => result = Err(e.into()),
        }
    }
    result
}
