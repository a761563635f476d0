//! minik8s cluster DNS: answers `*.<cluster-domain>` from Services and EndpointSlices
//! watched through the API (like CoreDNS's kubernetes plugin), forwards every other name
//! to the host's resolvers, and keeps the `kube-dns` Service pointed at itself.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use parking_lot::RwLock;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod forward;
pub mod kube_dns;
pub mod server;
pub mod zone;

pub use zone::Zone;

/// Flags of `minik8s dns`.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    #[command(flatten)]
    pub client: client::ClientArgs,
    /// The cluster's DNS domain: names under it are answered from Services
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Cluster IP of the kube-system/kube-dns Service (pods' nameserver)
    #[arg(long, default_value = "10.96.0.10")]
    pub cluster_dns: IpAddr,
    /// Address the server listens on (UDP and TCP). The proxy sends the kube-dns cluster IP
    /// here, so pods must reach it: a node address, not loopback [default: the host's
    /// primary address]
    #[arg(long)]
    pub bind_address: Option<IpAddr>,
    /// Port the server listens on (UDP and TCP; 0: any free port). Not 53: the host's own
    /// resolver may hold it, and pods reach the server through the kube-dns cluster IP
    /// on port 53 anyway
    #[arg(long, default_value_t = 10053)]
    pub port: u16,
    /// Address published in the kube-dns endpoints [default: --bind-address, or the host's
    /// primary address when that is unspecified]
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Resolvers for names outside the cluster domain, as ip[:port] (repeatable)
    /// [default: the nameservers of --resolv-conf]
    #[arg(long = "upstream", value_name = "ADDR", value_parser = parse_upstream)]
    pub upstreams: Vec<SocketAddr>,
    /// The host's resolver configuration, read for upstream nameservers
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// TTL of cluster answers, in seconds
    #[arg(long, default_value_t = 5)]
    pub ttl: u32,
    /// Do not create or update the kube-dns Service and its endpoints
    #[arg(long)]
    pub no_kube_dns_service: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            client: Default::default(),
            cluster_domain: "cluster.local".into(),
            cluster_dns: IpAddr::from([10, 96, 0, 10]),
            bind_address: None,
            port: 10053,
            advertise_address: None,
            upstreams: Vec::new(),
            resolv_conf: "/etc/resolv.conf".into(),
            ttl: 5,
            no_kube_dns_service: false,
        }
    }
}

/// Parses `ip`, `ip:port` or `[ipv6]:port`; a bare address means port 53.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("invalid upstream {s:?}: want ip or ip:port"))
}

/// A started DNS server.
pub struct Running {
    /// Where it listens (UDP and TCP).
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Waits until the server stops (on shutdown, or when the API watch ends).
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// Runs the DNS server until `shutdown` is cancelled.
pub async fn run(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    start(cfg, shutdown).await?.wait().await
}

/// Binds the UDP and TCP sockets, connects to the API and starts serving once the
/// first lists of Services and EndpointSlices are in (queries arriving before wait in the
/// socket buffers rather than getting wrong NXDOMAINs).
pub async fn start(cfg: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let domain = cfg
        .cluster_domain
        .trim_end_matches('.')
        .to_ascii_lowercase();
    if domain.is_empty() || hickory_proto::rr::Name::from_ascii(&domain).is_err() {
        anyhow::bail!("invalid --cluster-domain {:?}", cfg.cluster_domain);
    }
    let bind_ip = cfg.bind_address.unwrap_or_else(primary_ip);
    let (udp, tcp) = bind(SocketAddr::new(bind_ip, cfg.port)).await?;
    let addr = udp.local_addr()?;
    let upstreams = match cfg.upstreams.clone() {
        u if !u.is_empty() => u,
        _ => {
            let text = tokio::fs::read_to_string(&cfg.resolv_conf)
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(path = %cfg.resolv_conf.display(), error = %e, "no upstream resolvers");
                    String::new()
                });
            forward::parse_resolv_conf(&text)
                .into_iter()
                // Never forward to ourselves (a loop) or to the cluster DNS address.
                .filter(|u| *u != addr && u.ip() != cfg.cluster_dns)
                .collect()
        }
    };
    tracing::info!(%addr, domain, upstreams = ?upstreams, "cluster DNS listening");
    let client = cfg.client.connect_as("minik8s-dns").await?;
    let advertise = cfg
        .advertise_address
        .or(Some(bind_ip).filter(|ip| !ip.is_unspecified()))
        .unwrap_or_else(primary_ip);
    let zone: server::SharedZone = Arc::new(RwLock::new(Arc::new(Zone::build(
        &domain,
        cfg.ttl,
        serial(),
        Some(cfg.cluster_dns),
        &[],
        &[],
    ))));
    let handler = Arc::new(server::Handler::new(
        zone.clone(),
        forward::Upstreams::new(upstreams, Duration::from_secs(2)),
    ));
    let task = tokio::spawn(async move {
        let changed = Arc::new(Notify::new());
        let services = reflect::<Service>(client.clone(), changed.clone(), shutdown.clone());
        let slices = reflect::<EndpointSlice>(client.clone(), changed.clone(), shutdown.clone());
        if !cfg.no_kube_dns_service {
            tokio::spawn(kube_dns::keep(
                client,
                cfg.cluster_dns.to_string(),
                SocketAddr::new(advertise, addr.port()),
                Duration::from_secs(60),
                shutdown.clone(),
            ));
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = async { services.wait_until_ready().await?; slices.wait_until_ready().await } => r?,
        }
        let rebuild = |serial: u32| {
            let svcs = services.state();
            let eps = slices.state();
            let s: Vec<&Service> = svcs.iter().map(|s| &**s).collect();
            let e: Vec<&EndpointSlice> = eps.iter().map(|s| &**s).collect();
            let z = Zone::build(&domain, cfg.ttl, serial, Some(cfg.cluster_dns), &s, &e);
            tracing::debug!(services = s.len(), names = z.len(), "cluster zone rebuilt");
            *zone.write() = Arc::new(z);
        };
        let mut serial = serial();
        rebuild(serial);
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(4);
        tokio::spawn(server::serve_udp(
            Arc::new(udp),
            handler.clone(),
            workers,
            shutdown.clone(),
        ));
        tokio::spawn(server::serve_tcp(tcp, handler, shutdown.clone()));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = changed.notified() => {}
            }
            serial = serial.wrapping_add(1);
            rebuild(serial);
        }
    });
    Ok(Running { addr, task })
}

/// Binds UDP and TCP on the same port (with port 0: a free port both can have).
async fn bind(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..if addr.port() == 0 { 20 } else { 1 } {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}/udp: {e}"))?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    let e = last.map(|e| e.to_string()).unwrap_or_default();
    anyhow::bail!("cannot listen on {addr}/tcp: {e}")
}

/// The SOA serial of a fresh zone: seconds since the epoch.
fn serial() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

/// The host's primary address: the source of its default route (no packet is sent).
pub fn primary_ip() -> IpAddr {
    let probe = || -> std::io::Result<IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    probe().unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

/// Starts a reflector for `K` in all namespaces; notifies `changed` on every event.
fn reflect<K>(client: kube::Client, changed: Arc<Notify>, shutdown: CancellationToken) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let api: Api<K> = Api::all(client);
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                ev = stream.next() => match ev {
                    Some(Ok(_)) => changed.notify_one(),
                    Some(Err(e)) => tracing::warn!(error = %e, "watch failed"),
                    None => return,
                },
            }
        }
    });
    reader
}
