//! Per-component identities: client certificates signed by the cluster CA for the
//! scheduler, the controller manager, kube-proxy, the cluster DNS and each node's kubelet, written as
//! kubeconfigs (mode 0600) under the data dir. RBAC's bootstrap bindings grant each
//! identity its upstream role.

use std::path::{Path, PathBuf};

use base64::Engine;

use crate::pki::Pki;

/// Errors writing a component kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pki(#[from] crate::pki::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid node name {0:?}")]
    NodeName(String),
}

/// Kubeconfig paths of the control-plane components.
#[derive(Debug, Clone)]
pub struct ComponentKubeconfigs {
    /// `system:kube-scheduler`.
    pub scheduler: PathBuf,
    /// `system:kube-controller-manager`.
    pub controller_manager: PathBuf,
    /// `system:kube-proxy`.
    pub proxy: PathBuf,
    /// `system:minik8s-dns` (roles `system:coredns` and `minik8s:dns`).
    pub dns: PathBuf,
}

/// The cluster DNS's user.
pub const DNS_USER: &str = "system:minik8s-dns";

/// Writes a kubeconfig for `user` (CN) in `groups` (O) to `path` (mode 0600).
pub fn write(pki: &Pki, url: &str, user: &str, groups: &[&str], path: &Path) -> Result<(), Error> {
    let (cert, key) = pki.issue_client_cert(user, groups)?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "minik8s", "cluster": {"server": url, "certificate-authority-data": b64(&pki.ca_cert_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(&cert), "client-key-data": b64(&key)}}],
        "contexts": [{"name": "minik8s", "context": {"cluster": "minik8s", "user": user}}],
        "current-context": "minik8s",
        "preferences": {},
    });
    let text = serde_yaml::to_string(&config).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_private(path, &text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `text` to `path` atomically with mode 0600, creating parent directories.
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes the control-plane component kubeconfigs under `<data-dir>/components/`.
pub fn write_components(
    pki: &Pki,
    url: &str,
    data_dir: &Path,
) -> Result<ComponentKubeconfigs, Error> {
    let dir = data_dir.join("components");
    let out = ComponentKubeconfigs {
        scheduler: dir.join("scheduler.kubeconfig"),
        controller_manager: dir.join("controller-manager.kubeconfig"),
        proxy: dir.join("proxy.kubeconfig"),
        dns: dir.join("dns.kubeconfig"),
    };
    write(pki, url, "system:kube-scheduler", &[], &out.scheduler)?;
    write(
        pki,
        url,
        "system:kube-controller-manager",
        &[],
        &out.controller_manager,
    )?;
    write(pki, url, "system:kube-proxy", &[], &out.proxy)?;
    write(pki, url, DNS_USER, &[], &out.dns)?;
    Ok(out)
}

/// Writes the kubeconfig of node `node`'s kubelet (`system:node:<node>` in `system:nodes`)
/// to `<data-dir>/components/kubelet-<node>.kubeconfig`.
pub fn write_node(pki: &Pki, url: &str, data_dir: &Path, node: &str) -> Result<PathBuf, Error> {
    if node.is_empty() || !crate::validation::is_dns1123_subdomain(node).is_empty() {
        return Err(Error::NodeName(node.to_string()));
    }
    let path = data_dir
        .join("components")
        .join(format!("kubelet-{node}.kubeconfig"));
    write(
        pki,
        url,
        &format!("system:node:{node}"),
        &["system:nodes"],
        &path,
    )?;
    Ok(path)
}
