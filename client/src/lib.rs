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
    /// The kubeconfig did not yield a usable client.
    #[error("building client from {path}: {source}")]
    Client {
        path: String,
        #[source]
        source: kube::Error,
    },
}

/// Builds a `kube::Client` from a kubeconfig file.
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let p = path.display().to_string();
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: p.clone(),
        source,
    })?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: p.clone(),
            source,
        })?;
    kube::Client::try_from(cfg).map_err(|source| Error::Client { path: p, source })
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
}
