//! TLS listener and the server's lifecycle: storage, caches, registry, then HTTPS.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::handlers::{self, ApiState};
use crate::pki::{self, Pki};
use crate::registry::allocator::{Ipv4Range, PortRange, ServiceAllocator};
use crate::registry::stores::Registry;
use crate::watch_cache::Caches;
use crate::{storage, Config};

/// How long open connections may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A started API server.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The admin kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// `https://host:port` clients should use.
    pub url: String,
    /// The certificates it serves with.
    pub pki: Arc<Pki>,
    /// The join token for `minik8s agent --token` (also in `<data-dir>/node-token`).
    pub join_token: String,
    /// Kubeconfigs (mode 0600) with the scheduler's, controller manager's and proxy's own
    /// identities; RBAC grants each its upstream role.
    pub components: crate::auth::identities::ComponentKubeconfigs,
    data_dir: PathBuf,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// Writes a kubeconfig for node `node`'s kubelet (`system:node:<node>`, group
    /// `system:nodes`) and returns its path.
    pub fn node_kubeconfig(&self, node: &str) -> anyhow::Result<PathBuf> {
        Ok(crate::auth::identities::write_node(
            &self.pki,
            &self.url,
            &self.data_dir,
            node,
        )?)
    }

    /// Waits until the server has shut down.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Starts the API server and returns once it listens and is ready.
pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Server> {
    let data_dir = cfg.data_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let pki = Arc::new(
        Pki::load_or_create(&data_dir, &cfg.tls_san)
            .with_context(|| format!("cannot set up certificates in {}", data_dir.display()))?,
    );
    let tls = pki
        .server_config()
        .context("cannot build TLS configuration")?;

    let backend = storage::open(&data_dir, &cfg.datastore_endpoint)
        .await
        .context("cannot open the datastore")?;
    let backend = crate::encryption::wrap(
        backend,
        cfg.encryption_provider_config.as_deref(),
        &cfg.etcd_prefix,
    )?;

    let resources = crate::registry::table::resources();
    let caches = Caches::new(&resources, &cfg.etcd_prefix);
    let feeder = caches.spawn_feeder(backend.clone(), shutdown.clone());
    tokio::time::timeout(Duration::from_secs(60), caches.wait_ready())
        .await
        .context("timed out loading the watch cache from the datastore")?;

    let ip_range = Ipv4Range::parse(&cfg.service_cluster_ip_range)
        .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
    let port_range = PortRange::parse(&cfg.service_node_port_range)
        .map_err(|e| anyhow::anyhow!("--service-node-port-range: {e}"))?;
    let allocator = Arc::new(ServiceAllocator::new(
        backend.clone(),
        &cfg.etcd_prefix,
        ip_range,
        port_range,
    ));
    let registry = Arc::new(Registry::new(
        resources,
        backend.clone(),
        caches.clone(),
        Some(allocator),
    )?);
    registry
        .bootstrap()
        .await
        .context("cannot create the system namespaces")?;
    crate::auth::policy::bootstrap(&registry)
        .await
        .context("cannot create the bootstrap RBAC policy")?;
    let aggregator = crate::auth::policy::spawn_aggregator(registry.clone(), shutdown.clone());
    let security = Arc::new(
        crate::auth::Security::new(&cfg, &data_dir, &registry, &pki.ca_cert_pem)
            .context("cannot set up authentication")?,
    );
    let node_indexer = security
        .node
        .as_ref()
        .map(|n| n.spawn_indexer(shutdown.clone()));
    let finalizer = registry.spawn_namespace_finalizer(shutdown.clone());
    // Custom resources of stored CRDs are served before the server listens.
    let crds = crate::crd::controller::start(registry.clone(), shutdown.clone()).await;
    let compactor = storage::spawn_compactor(
        backend.clone(),
        Duration::from_secs(cfg.compaction_interval_seconds.max(1)),
        cfg.compaction_retain_revisions,
        shutdown.clone(),
    );

    let bind = SocketAddr::new(cfg.bind_address, cfg.https_listen_port);
    let listener = TcpListener::bind(bind).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {bind}: address in use; pass --https-listen-port")
        } else {
            anyhow::anyhow!("cannot listen on {bind}: {e}")
        }
    })?;
    let addr = listener.local_addr()?;
    let host: IpAddr = if cfg.bind_address.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        cfg.bind_address
    };
    let url = format!("https://{}", SocketAddr::new(host, addr.port()));
    let advertise = cfg.advertise_address.unwrap_or_else(|| {
        if cfg.bind_address.is_unspecified() {
            primary_address().unwrap_or(host)
        } else {
            cfg.bind_address
        }
    });
    registry
        .bootstrap_kubernetes_service(ip_range.first(), advertise, addr.port())
        .await
        .context("cannot create the kubernetes Service")?;
    let kubeconfig = data_dir.join("kubeconfig.yaml");
    pki.write_kubeconfig(&kubeconfig, &url)
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    let components = crate::auth::identities::write_components(&pki, &url, &data_dir)
        .context("cannot write the component kubeconfigs")?;
    let join_token =
        crate::auth::bootstrap_token::ensure_join_token(&registry, &data_dir, &pki.ca_cert_pem)
            .await
            .context("cannot create the join token")?;
    crate::auth::bootstrap_token::publish_cluster_info(&registry, &url, &pki.ca_cert_pem)
        .await
        .context("cannot publish kube-public/cluster-info")?;
    let csr_controller = crate::certificates::spawn_controller(
        registry.clone(),
        security.clone(),
        pki.clone(),
        shutdown.clone(),
    );

    let mut state = ApiState::new(registry, url.clone(), shutdown.clone()).with_security(security);
    state.kubelet_tls = Some(
        pki.kubelet_client_config()
            .context("cannot build the kubelet client TLS configuration")?,
    );
    let state = Arc::new(state);
    let acceptor = TlsAcceptor::from(tls);
    let task = tokio::spawn(serve(
        listener,
        acceptor,
        state,
        shutdown.clone(),
        [
            feeder,
            finalizer,
            compactor,
            aggregator,
            csr_controller,
            crds,
        ]
        .into_iter()
        .chain(node_indexer)
        .collect(),
    ));
    tracing::info!(%addr, "API server listening");
    Ok(Server {
        addr,
        kubeconfig,
        url,
        pki,
        join_token,
        components,
        data_dir,
        task,
    })
}

/// This host's address on its default route: a UDP socket "connected" to a public address
/// (no packet is sent) reports the local address the kernel would use.
fn primary_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    s.local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| !ip.is_unspecified())
}

async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<ApiState>,
    shutdown: CancellationToken,
    background: Vec<tokio::task::JoinHandle<()>>,
) -> anyhow::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let state = state.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| pki::user_from_client_cert(c.as_ref()));
            let user = Arc::new(user);
            let svc = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let state = state.clone();
                let user = user.clone();
                req.extensions_mut().insert(peer);
                async move {
                    Ok::<_, std::convert::Infallible>(handlers::handle(state, req, user).await)
                }
            });
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            let conn = watcher.watch(conn.into_owned());
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish in time");
    }
    for t in background {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    Ok(())
}

/// Runs the API server until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(cfg, shutdown).await?.wait().await
}
