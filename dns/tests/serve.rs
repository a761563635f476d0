//! The DNS server against a real in-process API server: Services, EndpointSlices and
//! Pods created through the API are answered over real UDP and TCP sockets on 127.0.0.1,
//! and other names go to a small upstream resolver this test runs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    cfg: dns::Config,
}

struct Cluster {
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
    client: Client,
    kubeconfig: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn cluster() -> Result<Cluster> {
    let dir = tempfile::tempdir()?;
    let shutdown = CancellationToken::new();
    let server = apiserver::start(
        apiserver::Config::for_test(dir.path().into()),
        shutdown.clone(),
    )
    .await?;
    let kc = kube::config::Kubeconfig::read_from(&server.kubeconfig)?;
    let client =
        Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)?;
    for ns in ["t", "prod"] {
        let nsobj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &nsobj)
            .await?;
    }
    Ok(Cluster {
        kubeconfig: format!("--kubeconfig={}", server.kubeconfig.display()),
        _dir: dir,
        shutdown,
        client,
    })
}

/// Starts the DNS server on 127.0.0.1 with `extra` flags.
async fn start_dns(c: &Cluster, extra: &[&str]) -> Result<SocketAddr> {
    let mut args = vec![
        "dns",
        c.kubeconfig.as_str(),
        "--bind-address=127.0.0.1",
        "--port=0",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::try_parse_from(args)?;
    let running = dns::start(cli.cfg, c.shutdown.child_token()).await?;
    let addr = running.addr;
    tokio::spawn(running.wait());
    Ok(addr)
}

fn query(name: &str, qtype: RecordType) -> Result<Message> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name)?, qtype));
    Ok(m)
}

async fn ask_udp(server: SocketAddr, q: &Message) -> Result<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await?;
    sock.connect(server).await?;
    sock.send(&q.to_vec()?).await?;
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
        .await
        .context("no UDP answer within 5 s")??;
    let m = Message::from_vec(&buf[..n])?;
    assert_eq!(m.metadata.id, q.metadata.id);
    Ok(m)
}

async fn ask_tcp(server: SocketAddr, q: &Message) -> Result<Message> {
    let work = async {
        let mut s = TcpStream::connect(server).await?;
        let bytes = q.to_vec()?;
        s.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
        s.write_all(&bytes).await?;
        let n = s.read_u16().await? as usize;
        let mut buf = vec![0u8; n];
        s.read_exact(&mut buf).await?;
        anyhow::Ok(Message::from_vec(&buf)?)
    };
    let m = tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .context("no TCP answer within 5 s")??;
    assert_eq!(m.metadata.id, q.metadata.id);
    Ok(m)
}

/// Asks over UDP and TCP; both answers must agree. Returns the UDP one.
async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    let q = query(name, qtype)?;
    let udp = ask_udp(server, &q).await?;
    let tcp = ask_tcp(server, &q).await?;
    assert_eq!(
        (udp.metadata.response_code, data(&udp.answers)),
        (tcp.metadata.response_code, data(&tcp.answers)),
        "UDP and TCP answers to {name} {qtype} differ"
    );
    Ok(udp)
}

fn data(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

async fn wait_for_answer(server: SocketAddr, name: &str, qtype: RecordType) -> Result<Message> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = ask_udp(server, &query(name, qtype)?).await?;
        if !m.answers.is_empty() {
            return Ok(m);
        }
        if Instant::now() > deadline {
            bail!("no answer for {name} {qtype} within 10 s: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create<K>(client: &Client, ns: &str, v: serde_json::Value) -> Result<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + serde::Serialize,
{
    let obj: K = serde_json::from_value(v)?;
    Ok(Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await?)
}

/// A tiny resolver on 127.0.0.1 (UDP and TCP, one port) answering every A query with
/// 192.0.2.99 and counting the queries it got.
struct Upstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

async fn upstream() -> Result<Upstream> {
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        let port = udp.local_addr()?.port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
            break (udp, tcp);
        }
    };
    let addr = udp.local_addr()?;
    let queries = Arc::new(AtomicUsize::new(0));
    fn answer(raw: &[u8]) -> Option<Vec<u8>> {
        let q = Message::from_vec(raw).ok()?;
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.recursion_available = true;
        r.queries = q.queries.clone();
        for query in &q.queries {
            if query.query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(
                    query.name().clone(),
                    60,
                    RData::A(A([192, 0, 2, 99].into())),
                ));
            }
        }
        r.to_vec().ok()
    }
    let n = queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
            n.fetch_add(1, Ordering::SeqCst);
            if let Some(r) = answer(&buf[..len]) {
                let _ = udp.send_to(&r, peer).await;
            }
        }
    });
    let n = queries.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            n.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let Ok(len) = s.read_u16().await else { return };
                let mut buf = vec![0u8; len as usize];
                if s.read_exact(&mut buf).await.is_err() {
                    return;
                }
                if let Some(r) = answer(&buf) {
                    let _ = s.write_all(&(r.len() as u16).to_be_bytes()).await;
                    let _ = s.write_all(&r).await;
                }
            });
        }
    });
    Ok(Upstream { addr, queries })
}

#[tokio::test]
async fn answers_cluster_records_over_udp_and_tcp() -> Result<()> {
    let c = cluster().await?;
    let up = upstream().await?;
    create::<Service>(
        &c.client,
        "t",
        json!({"metadata": {"name": "web"},
               "spec": {"clusterIP": "10.96.5.20",
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP"},
                                  {"name": "dns", "port": 53, "protocol": "UDP"}]}}),
    )
    .await?;
    create::<Service>(
        &c.client,
        "prod",
        json!({"metadata": {"name": "db"},
               "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    )
    .await?;
    create::<EndpointSlice>(
        &c.client,
        "prod",
        json!({"metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
               "addressType": "IPv4",
               "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
               "endpoints": [
                   {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                   {"addresses": ["10.244.0.6"], "conditions": {"ready": true}},
                   {"addresses": ["10.244.0.7"], "conditions": {"ready": false}}]}),
    )
    .await?;
    create::<Service>(
        &c.client,
        "t",
        json!({"metadata": {"name": "ext"},
               "spec": {"type": "ExternalName", "externalName": "www.example.com"}}),
    )
    .await?;
    let upstream_flag = format!("--upstream={}", up.addr);
    let dns = start_dns(&c, &[upstream_flag.as_str()]).await?;

    // A ClusterIP Service: its cluster IP, case-insensitively, authoritative.
    let m = ask(dns, "WEB.t.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(data(&m.answers), ["10.96.5.20"]);
    assert_eq!(m.answers[0].name.to_ascii(), "WEB.t.svc.cluster.local.");
    // No AAAA for an IPv4 Service: NODATA with the SOA.
    let m = ask(dns, "web.t.svc.cluster.local.", RecordType::AAAA).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

    // SRV for named ports, with the target's address in the additional section.
    let m = ask(dns, "_http._tcp.web.t.svc.cluster.local.", RecordType::SRV).await?;
    assert_eq!(data(&m.answers), ["0 100 80 web.t.svc.cluster.local."]);
    assert_eq!(data(&m.additionals), ["10.96.5.20"]);
    let m = ask(dns, "_dns._udp.web.t.svc.cluster.local.", RecordType::SRV).await?;
    assert_eq!(data(&m.answers), ["0 100 53 web.t.svc.cluster.local."]);

    // Headless: the ready endpoints; each has its own name (hostname or dashed IP).
    let m = ask(dns, "db.prod.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(data(&m.answers), ["10.244.0.5", "10.244.0.6"]);
    let m = ask(dns, "db-0.db.prod.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(data(&m.answers), ["10.244.0.5"]);
    let m = ask(dns, "10-244-0-6.db.prod.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(data(&m.answers), ["10.244.0.6"]);
    let m = ask(dns, "_pg._tcp.db.prod.svc.cluster.local.", RecordType::SRV).await?;
    assert_eq!(
        data(&m.answers),
        [
            "0 50 5432 10-244-0-6.db.prod.svc.cluster.local.",
            "0 50 5432 db-0.db.prod.svc.cluster.local."
        ]
    );
    assert_eq!(data(&m.additionals), ["10.244.0.5", "10.244.0.6"]);

    // Pod records.
    let m = ask(dns, "10-244-3-7.t.pod.cluster.local.", RecordType::A).await?;
    assert_eq!(data(&m.answers), ["10.244.3.7"]);

    // PTR for a cluster IP and a headless endpoint.
    let m = ask(dns, "20.5.96.10.in-addr.arpa.", RecordType::PTR).await?;
    assert_eq!(data(&m.answers), ["web.t.svc.cluster.local."]);
    let m = ask(dns, "5.0.244.10.in-addr.arpa.", RecordType::PTR).await?;
    assert_eq!(data(&m.answers), ["db-0.db.prod.svc.cluster.local."]);

    // ExternalName: a CNAME, its target resolved upstream.
    let m = ask(dns, "ext.t.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(data(&m.answers), ["192.0.2.99", "www.example.com."]);
    assert_eq!(m.answers[0].record_type(), RecordType::CNAME);

    // Missing names under the cluster domain: NXDOMAIN with the SOA, never forwarded.
    let before = up.queries.load(Ordering::SeqCst);
    for name in [
        "nope.t.svc.cluster.local.",
        "www.example.com.t.svc.cluster.local.",
        "10-244-0-7.db.prod.svc.cluster.local.",
    ] {
        let m = ask(dns, name, RecordType::A).await?;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        match &m.authorities[0].data {
            RData::SOA(soa) => {
                assert_eq!(soa.mname.to_ascii(), "ns.dns.cluster.local.");
                assert_eq!(soa.rname.to_ascii(), "hostmaster.cluster.local.");
            }
            other => panic!("authority is not an SOA: {other:?}"),
        }
    }
    assert_eq!(up.queries.load(Ordering::SeqCst), before);

    // EDNS queries get an OPT back.
    let mut q = query("web.t.svc.cluster.local.", RecordType::A)?;
    q.set_edns(Edns::new());
    let m = ask_udp(dns, &q).await?;
    assert!(m.edns.is_some());
    assert_eq!(data(&m.answers), ["10.96.5.20"]);
    Ok(())
}

#[tokio::test]
async fn large_answers_are_truncated_over_udp_and_whole_over_tcp() -> Result<()> {
    let c = cluster().await?;
    create::<Service>(
        &c.client,
        "t",
        json!({"metadata": {"name": "big"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}),
    )
    .await?;
    let endpoints: Vec<_> = (1..=60)
        .map(|i| json!({"addresses": [format!("10.244.1.{i}")]}))
        .collect();
    create::<EndpointSlice>(
        &c.client,
        "t",
        json!({"metadata": {"name": "big-1", "labels": {"kubernetes.io/service-name": "big"}},
               "addressType": "IPv4", "endpoints": endpoints}),
    )
    .await?;
    let dns = start_dns(&c, &[]).await?;
    let q = query("big.t.svc.cluster.local.", RecordType::A)?;
    let udp = ask_udp(dns, &q).await?;
    assert!(udp.metadata.truncation);
    let tcp = ask_tcp(dns, &q).await?;
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 60);
    Ok(())
}

#[tokio::test]
async fn a_new_service_is_answered_within_a_second() -> Result<()> {
    let c = cluster().await?;
    let dns = start_dns(&c, &[]).await?;
    let m = ask(dns, "late.t.svc.cluster.local.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let created = Instant::now();
    create::<Service>(
        &c.client,
        "t",
        json!({"metadata": {"name": "late"},
               "spec": {"clusterIP": "10.96.5.30", "ports": [{"port": 80}]}}),
    )
    .await?;
    let m = wait_for_answer(dns, "late.t.svc.cluster.local.", RecordType::A).await?;
    let took = created.elapsed();
    assert_eq!(data(&m.answers), ["10.96.5.30"]);
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    // Deleted again: NXDOMAIN.
    Api::<Service>::namespaced(c.client.clone(), "t")
        .delete("late", &Default::default())
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = ask_udp(dns, &query("late.t.svc.cluster.local.", RecordType::A)?).await?;
        if m.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(Instant::now() < deadline, "still answered after delete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn other_names_are_forwarded_upstream() -> Result<()> {
    let c = cluster().await?;
    let up = upstream().await?;
    // A resolv.conf cannot carry a port: the fake upstream comes in through the flag.
    let upstream_flag = format!("--upstream={}", up.addr);
    let dns = start_dns(&c, &[upstream_flag.as_str()]).await?;
    let m = ask(dns, "www.example.org.", RecordType::A).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(data(&m.answers), ["192.0.2.99"]);
    assert_eq!(up.queries.load(Ordering::SeqCst), 2, "one UDP, one TCP");
    // Reverse names outside the cluster's addresses go upstream too.
    let m = ask(dns, "1.2.0.192.in-addr.arpa.", RecordType::PTR).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(up.queries.load(Ordering::SeqCst), 4);
    Ok(())
}

#[tokio::test]
async fn without_upstreams_other_names_fail_fast() -> Result<()> {
    let c = cluster().await?;
    let dir = tempfile::tempdir()?;
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.96.0.10\n")?;
    let flag = format!("--resolv-conf={}", resolv.display());
    let dns = start_dns(&c, &[flag.as_str()]).await?;
    let started = Instant::now();
    let m = ask_udp(dns, &query("www.example.org.", RecordType::A)?).await?;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() < Duration::from_secs(1));
    Ok(())
}

#[tokio::test]
async fn kube_dns_service_points_at_the_server() -> Result<()> {
    let c = cluster().await?;
    let dns = start_dns(&c, &[]).await?;
    let services: Api<Service> = Api::namespaced(c.client.clone(), "kube-system");
    let slices: Api<EndpointSlice> = Api::namespaced(c.client.clone(), "kube-system");
    let deadline = Instant::now() + Duration::from_secs(10);
    let slice_name = format!("kube-dns-{}", dns.ip().to_string().replace('.', "-"));
    let (svc, slice) = loop {
        if let (Some(s), Some(e)) = (
            services.get_opt("kube-dns").await?,
            slices.get_opt(&slice_name).await?,
        ) {
            break (s, e);
        }
        assert!(Instant::now() < deadline, "no kube-dns Service and slice");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let spec = svc.spec.clone().unwrap_or_default();
    assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.10"));
    let ports: Vec<_> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            (
                p.name.clone().unwrap_or_default(),
                p.port,
                p.protocol.clone(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("dns".to_string(), 53, Some("UDP".to_string())),
            ("dns-tcp".to_string(), 53, Some("TCP".to_string()))
        ]
    );
    assert_eq!(
        svc.metadata.labels.unwrap_or_default().get("k8s-app"),
        Some(&"kube-dns".to_string())
    );
    assert_eq!(slice.endpoints[0].addresses, ["127.0.0.1"]);
    let sports: Vec<_> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| (p.port, p.protocol.clone()))
        .collect();
    let port = i32::from(dns.port());
    assert_eq!(
        sports,
        [
            (Some(port), Some("UDP".into())),
            (Some(port), Some("TCP".into()))
        ]
    );
    let ep = Api::<Endpoints>::namespaced(c.client.clone(), "kube-system")
        .get("kube-dns")
        .await?;
    let subset = &ep.subsets.unwrap_or_default()[0];
    assert_eq!(
        subset.addresses.as_ref().expect("addresses")[0].ip,
        "127.0.0.1"
    );

    // Ensuring again changes nothing.
    dns::kube_dns::ensure(&c.client, "10.96.0.10", dns).await?;
    dns::kube_dns::ensure(&c.client, "10.96.0.10", dns).await?;
    assert_eq!(
        services.get("kube-dns").await?.metadata.uid,
        svc.metadata.uid
    );

    // The kube-dns Service is answered by name like any other.
    let m = wait_for_answer(
        dns,
        "kube-dns.kube-system.svc.cluster.local.",
        RecordType::A,
    )
    .await?;
    assert_eq!(data(&m.answers), ["10.96.0.10"]);

    // A second server on another port: the same Service (idempotent), its slice follows.
    let dns2 = start_dns(&c, &[]).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = slices.get(&slice_name).await?;
        let p = s.ports.unwrap_or_default()[0].port;
        if p == Some(i32::from(dns2.port())) {
            break;
        }
        assert!(Instant::now() < deadline, "the slice did not follow: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = services.get("kube-dns").await?;
    assert_eq!(again.metadata.uid, svc.metadata.uid);
    assert_eq!(
        again.spec.and_then(|s| s.cluster_ip),
        Some("10.96.0.10".into())
    );
    Ok(())
}
