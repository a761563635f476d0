//! Shared client setup for minik8s components: every component talks to the API server
//! over HTTP with kube-rs, exactly like upstream components do.

pub mod leader;
pub mod reloading;

use std::path::{Path, PathBuf};

/// Errors building a client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read or parsed.
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// No kubeconfig was given and none could be inferred.
    #[error("finding a kubeconfig ($KUBECONFIG, ~/.kube/config or in-cluster): {source}")]
    Infer {
        #[source]
        source: Box<kube::config::InferConfigError>,
    },
    /// The kubeconfig did not yield a usable client.
    #[error("building client from {path}: {source}")]
    Client {
        path: String,
        #[source]
        source: kube::Error,
    },
}

/// The Kubernetes version minik8s components follow (and report).
pub const KUBE_VERSION: &str = "v1.33.0";

/// Upstream's default user agent, `<command>/<version> (<os>/<arch>) kubernetes/<commit>`
/// (client-go's `DefaultKubernetesUserAgent`), with minik8s's version for the commit. The
/// API server takes the part before the first `/` as the field manager of a write that
/// names none, so the kubelet's writes are managed by `kubelet`, as upstream.
pub fn user_agent(component: &str) -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!(
        "{component}/{KUBE_VERSION} ({}/{arch}) minik8s/{}",
        std::env::consts::OS,
        env!("CARGO_PKG_VERSION")
    )
}

/// Adds `User-Agent: <user_agent(component)>` to every request of clients built from `cfg`.
pub fn set_user_agent(cfg: &mut kube::Config, component: &str) {
    if let Ok(v) = http::HeaderValue::from_str(&user_agent(component)) {
        cfg.headers.retain(|(k, _)| k != http::header::USER_AGENT);
        cfg.headers.push((http::header::USER_AGENT, v));
    }
}

/// The client configuration in a kubeconfig file.
pub async fn config_from_kubeconfig(path: &Path) -> Result<kube::Config, Error> {
    let p = path.display().to_string();
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: p.clone(),
        source,
    })?;
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|source| Error::Kubeconfig { path: p, source })
}

/// Builds a `kube::Client` from a kubeconfig file.
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    build(path, config_from_kubeconfig(path).await?)
}

/// Builds a `kube::Client` from a kubeconfig file for `component` (its user agent).
pub async fn from_kubeconfig_as(path: &Path, component: &str) -> Result<kube::Client, Error> {
    let mut cfg = config_from_kubeconfig(path).await?;
    set_user_agent(&mut cfg, component);
    build(path, cfg)
}

fn build(path: &Path, cfg: kube::Config) -> Result<kube::Client, Error> {
    kube::Client::try_from(cfg).map_err(|source| Error::Client {
        path: path.display().to_string(),
        source,
    })
}

/// How a component reaches the API server: the flags every component shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientArgs {
    /// Kubeconfig with the API server's address and this component's credentials
    /// [default: $KUBECONFIG, else ~/.kube/config]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

impl ClientArgs {
    /// Client arguments that use the kubeconfig at `path`.
    pub fn with_kubeconfig(path: impl Into<PathBuf>) -> Self {
        ClientArgs {
            kubeconfig: Some(path.into()),
        }
    }

    /// Connects to the API server: the `--kubeconfig` file when given, else kube-rs's
    /// defaults (`$KUBECONFIG`, `~/.kube/config`, in-cluster).
    pub async fn connect(&self) -> Result<kube::Client, Error> {
        match &self.kubeconfig {
            Some(path) => from_kubeconfig(path).await,
            None => kube::Client::try_default()
                .await
                .map_err(|source| Error::Client {
                    path: "the default kubeconfig".into(),
                    source,
                }),
        }
    }

    /// The client configuration: the `--kubeconfig` file when given, else kube-rs's
    /// defaults; with `component`'s user agent.
    pub async fn config_as(&self, component: &str) -> Result<kube::Config, Error> {
        let mut cfg = match &self.kubeconfig {
            Some(path) => config_from_kubeconfig(path).await?,
            None => kube::Config::infer().await.map_err(|e| Error::Infer {
                source: Box::new(e),
            })?,
        };
        set_user_agent(&mut cfg, component);
        Ok(cfg)
    }

    /// [`ClientArgs::connect`] as `component`: requests carry its user agent (upstream's
    /// `kubelet/v1.33.0 (linux/amd64) ...`), which names it as the field manager.
    pub async fn connect_as(&self, component: &str) -> Result<kube::Client, Error> {
        let cfg = self.config_as(component).await?;
        kube::Client::try_from(cfg).map_err(|source| Error::Client {
            path: self
                .kubeconfig
                .as_ref()
                .map_or("the default kubeconfig".into(), |p| p.display().to_string()),
            source,
        })
    }
}
