//! A client whose credentials can be swapped while it is in use, as upstream's kubelet does
//! when its certificate manager rotates the client certificate
//! (`k8s.io/client-go/util/certificate` plus the kubelet's `updateTransport`).
//!
//! [`from_kubeconfig`] returns an ordinary `kube::Client` (clone it freely: every clone, and
//! every informer built on one, goes through the same handle) and a [`Reloader`]. After the
//! kubeconfig file has been rewritten, [`Reloader::reload`] builds a new inner client from it;
//! each request after that uses the new credentials on new connections. Requests already in
//! flight (long watches) finish on the old connections, which close once they are done,
//! since nothing else holds the old client.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use kube::client::Body;

use crate::Error;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Rebuilds the shared client from its kubeconfig file.
#[derive(Clone)]
pub struct Reloader {
    path: PathBuf,
    component: String,
    current: Arc<RwLock<kube::Client>>,
}

impl Reloader {
    /// Reads the kubeconfig again; later requests use what it says. On error the client
    /// keeps its current credentials.
    pub async fn reload(&self) -> Result<(), Error> {
        let fresh = crate::from_kubeconfig_as(&self.path, &self.component).await?;
        match self.current.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        tracing::info!(kubeconfig = %self.path.display(), "client credentials reloaded");
        Ok(())
    }

    /// The kubeconfig this reloader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A client for the kubeconfig at `path`, with `component`'s user agent, that
/// [`Reloader::reload`] can re-point.
pub async fn from_kubeconfig(
    path: &Path,
    component: &str,
) -> Result<(kube::Client, Reloader), Error> {
    let inner = crate::from_kubeconfig_as(path, component).await?;
    let namespace = inner.default_namespace().to_string();
    let current = Arc::new(RwLock::new(inner));
    let client = kube::Client::new(
        Swappable {
            current: current.clone(),
        },
        namespace,
    );
    Ok((
        client,
        Reloader {
            path: path.to_path_buf(),
            component: component.to_string(),
            current,
        },
    ))
}

/// The tower service under the outer client: each call goes to the current inner client.
#[derive(Clone)]
struct Swappable {
    current: Arc<RwLock<kube::Client>>,
}

impl tower::Service<http::Request<Body>> for Swappable {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let client = match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        // The inner client's error is handed back boxed; the outer client's `send` unboxes
        // a `kube::Error` again, so callers see the same errors as with a plain client.
        Box::pin(async move { client.send(req).await.map_err(BoxError::from) })
    }
}
