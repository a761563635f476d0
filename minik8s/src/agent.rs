//! `minik8s agent`: joins this machine to a cluster with a bootstrap token, as kubeadm's
//! TLS bootstrap does, then runs its kubelet as `system:node:<name>`.
//!
//! 1. Fetch `kube-public/cluster-info` anonymously (TLS not yet verified) and check its CA
//!    against the pin (`sha256:` of the CA's public key) carried in the join token
//!    `K10<hex>::<id>.<secret>` or given with `--ca-cert-hash`. Only then is the token sent.
//! 2. With the token (user `system:bootstrap:<id>`), submit a CertificateSigningRequest for
//!    `system:node:<name>` / `system:nodes` to signer `kubernetes.io/kube-apiserver-client-kubelet`;
//!    the API server approves it (SubjectAccessReview on `certificatesigningrequests/nodeclient`)
//!    and signs it.
//! 3. Write `<data-dir>/kubelet.kubeconfig` (0600) and run the kubelet with it. A later
//!    start reuses that kubeconfig and does not need the token again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Flags of `minik8s agent`.
#[derive(clap::Args, Clone)]
pub struct AgentArgs {
    /// The API server to join: https://HOST:PORT
    #[arg(long, env = "MINIK8S_URL")]
    pub server: String,

    /// The join token: the content of the server's <data-dir>/node-token
    /// (K10<ca hash>::<id>.<secret>), or a bare bootstrap token <id>.<secret> with --ca-cert-hash
    #[arg(long, env = "MINIK8S_TOKEN", hide_env_values = true)]
    pub token: String,

    /// sha256:<hex> of the cluster CA's public key (kubeadm's --discovery-token-ca-cert-hash);
    /// taken from a K10 token when not given
    #[arg(long)]
    pub ca_cert_hash: Option<String>,

    /// Where the agent keeps its credentials [default: <minik8s data dir>/agent]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// How long to wait for the node's certificate to be approved and signed
    #[arg(long, value_parser = kubelet::parse_duration, default_value = "5m")]
    pub join_timeout: Duration,

    #[command(flatten)]
    pub kubelet: kubelet::Config,
}

/// Joins (unless already joined with a certificate that is still valid), then runs the
/// kubelet until `shutdown`, rotating the node's client certificate as it nears expiry.
pub async fn run(args: AgentArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| apiserver::config::default_data_dir().join("agent"));
    let kubeconfig = data_dir.join("kubelet.kubeconfig");
    let node = args.kubelet.node_name();
    let joined = match Credentials::read(&kubeconfig) {
        Ok(c) if c.expired() => {
            tracing::warn!(
                kubeconfig = %kubeconfig.display(),
                expired = %c.not_after_text(),
                "the node's client certificate has expired; joining again with the token"
            );
            false
        }
        Ok(_) => {
            tracing::info!(kubeconfig = %kubeconfig.display(), "already joined; using the node's credentials");
            true
        }
        Err(e) if kubeconfig.exists() => {
            tracing::warn!(kubeconfig = %kubeconfig.display(), error = %e, "the node's kubeconfig is unusable; joining again with the token");
            false
        }
        Err(_) => false,
    };
    if !joined {
        tokio::select! {
            r = join(&args, &node, &kubeconfig) => r?,
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
    let (client, reloader) = client::reloading::from_kubeconfig(&kubeconfig, "kubelet").await?;
    let rotation = tokio::spawn(rotate(
        client.clone(),
        reloader,
        node.clone(),
        args.join_timeout,
        shutdown.clone(),
    ));
    let mut cfg = args.kubelet;
    cfg.node_name = Some(node);
    cfg.client = client::ClientArgs::with_kubeconfig(&kubeconfig);
    let r = kubelet::run_with_client(client, cfg, shutdown.clone()).await;
    shutdown.cancel();
    let _ = rotation.await;
    r
}

/// What the node's kubeconfig holds: where the server is, its CA, and the node's
/// certificate and key.
struct Credentials {
    server: String,
    ca: String,
    not_before: i64,
    not_after: i64,
}

impl Credentials {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let kc = kube::config::Kubeconfig::read_from(path)?;
        let b64 = |s: Option<&String>, what: &str| -> anyhow::Result<String> {
            let s = s.with_context(|| format!("{} has no {what}", path.display()))?;
            Ok(String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(s.trim())
                    .with_context(|| format!("{what} is not base64"))?,
            )?)
        };
        let cluster = kc
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .with_context(|| format!("{} names no cluster", path.display()))?;
        let user = kc
            .auth_infos
            .first()
            .and_then(|u| u.auth_info.as_ref())
            .with_context(|| format!("{} names no user", path.display()))?;
        let cert = b64(
            user.client_certificate_data.as_ref(),
            "client-certificate-data",
        )?;
        let info = apiserver::pki::user_from_client_cert_pem(&cert).with_context(|| {
            format!("{}: the client certificate cannot be read", path.display())
        })?;
        Ok(Credentials {
            server: cluster.server.clone().unwrap_or_default(),
            ca: b64(
                cluster.certificate_authority_data.as_ref(),
                "certificate-authority-data",
            )?,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    fn expired(&self) -> bool {
        self.not_after <= now()
    }

    fn not_after_text(&self) -> String {
        rfc3339(self.not_after)
    }

    /// Upstream's `nextRotationDeadline`: a random point between 70% and 90% of the
    /// certificate's lifetime, so that a fleet of nodes does not renew all at once.
    fn rotation_deadline(&self) -> i64 {
        let total = (self.not_after - self.not_before).max(0) as f64;
        let jitter = 0.7 + 0.2 * rand::random::<f64>();
        self.not_before + (total * jitter) as i64
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Renews the node's client certificate at its rotation deadline, as upstream's kubelet
/// certificate manager does: a new key, a CSR made with the current certificate (which the
/// API server approves for `system:node:<name>` renewing its own, `selfnodeclient`), the
/// kubeconfig rewritten and the client's connections switched to it. Failures are retried
/// with back-off up to 5 minutes.
async fn rotate(
    client: kube::Client,
    reloader: client::reloading::Reloader,
    node: String,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let path = reloader.path().to_path_buf();
    let mut backoff = Duration::from_secs(2);
    loop {
        let creds = match Credentials::read(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the node's credentials for rotation");
                return;
            }
        };
        let deadline = creds.rotation_deadline();
        let wait = Duration::from_secs((deadline - now()).max(0) as u64);
        tracing::info!(
            expires = %creds.not_after_text(),
            rotation = %rfc3339(deadline),
            "node client certificate: rotation scheduled"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
        loop {
            let r = tokio::select! {
                r = renew(&client, &reloader, &creds, &node, timeout) => r,
                _ = shutdown.cancelled() => return,
            };
            match r {
                Ok(()) => {
                    backoff = Duration::from_secs(2);
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "rotating the node client certificate failed");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(300));
                }
            }
        }
    }
}

async fn renew(
    client: &kube::Client,
    reloader: &client::reloading::Reloader,
    creds: &Credentials,
    node: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let (cert, key, name) = request_certificate(client.clone(), node, timeout).await?;
    let text = kubeconfig_text(&creds.server, Some(&creds.ca), client_user(&cert, &key));
    write_private(reloader.path(), &text)
        .with_context(|| format!("cannot write {}", reloader.path().display()))?;
    reloader.reload().await?;
    let until = apiserver::pki::user_from_client_cert_pem(&cert)
        .map(|u| rfc3339(u.not_after))
        .unwrap_or_default();
    tracing::info!(csr = %name, valid_until = %until, "rotated the node client certificate");
    Ok(())
}

fn client_user(cert: &str, key: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"client-certificate-data": b64(cert), "client-key-data": b64(key)})
}

/// A kubeconfig (JSON, which YAML readers accept) for `server`.
fn kubeconfig_text(server: &str, ca_pem: Option<&str>, user: Value) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cluster = match ca_pem {
        Some(ca) => json!({"server": server, "certificate-authority-data": b64(ca)}),
        None => json!({"server": server, "insecure-skip-tls-verify": true}),
    };
    json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "ctx", "context": {"cluster": "cluster", "user": "user"}}],
        "current-context": "ctx",
    })
    .to_string()
}

async fn client_for(text: &str) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::from_yaml(text)?;
    let conf = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(conf)?)
}

/// The cluster CA from `kube-public/cluster-info`, checked against `pin`.
async fn discover_ca(server: &str, pin: &str) -> anyhow::Result<String> {
    let anonymous = client_for(&kubeconfig_text(server, None, json!({}))).await?;
    let cm = Api::<ConfigMap>::namespaced(anonymous, "kube-public")
        .get("cluster-info")
        .await
        .with_context(|| format!("cannot read kube-public/cluster-info from {server}"))?;
    let text = cm
        .data
        .and_then(|d| d.get("kubeconfig").cloned())
        .context("cluster-info has no kubeconfig")?;
    let kc = kube::config::Kubeconfig::from_yaml(&text).context("cluster-info's kubeconfig")?;
    let ca_b64 = kc
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.clone())
        .context("cluster-info names no CA")?;
    let ca = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ca_b64.trim())
            .context("cluster-info's CA is not base64")?,
    )?;
    let got =
        apiserver::pki::ca_cert_hash(&ca).context("cluster-info's CA is not a certificate")?;
    if !got.eq_ignore_ascii_case(pin) {
        bail!("the cluster CA at {server} has public key hash {got}, not {pin} as the token says: refusing to join");
    }
    Ok(ca)
}

async fn join(args: &AgentArgs, node: &str, kubeconfig: &Path) -> anyhow::Result<()> {
    let (token_pin, token) = apiserver::auth::bootstrap_token::split_full(args.token.trim());
    let Some(pin) = args.ca_cert_hash.clone().or(token_pin) else {
        bail!("the token carries no CA hash: pass the server's <data-dir>/node-token (K10...) or --ca-cert-hash sha256:<hex>");
    };
    if apiserver::auth::bootstrap_token::parse(token).is_none() {
        bail!("the token is not a bootstrap token <id>.<secret> ([a-z0-9]{{6}}.[a-z0-9]{{16}})");
    }
    let ca = discover_ca(&args.server, &pin).await?;
    tracing::info!(server = %args.server, node, "cluster CA verified; requesting a node certificate");
    let bootstrap = client_for(&kubeconfig_text(
        &args.server,
        Some(&ca),
        json!({"token": token}),
    ))
    .await?;

    let (cert, key, name) = request_certificate(bootstrap, node, args.join_timeout)
        .await
        .map_err(|e| match e.downcast_ref::<kube::Error>() {
            Some(kube::Error::Api(s)) if s.code == 401 => anyhow::anyhow!(
                "the server refused the join token (401 Unauthorized): it has expired or was deleted. Create a new one on the server with `minik8s token create` and pass it with --token"
            ),
            _ => e,
        })?;
    let text = kubeconfig_text(&args.server, Some(&ca), client_user(&cert, &key));
    write_private(kubeconfig, &text)
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    tracing::info!(node, csr = %name, kubeconfig = %kubeconfig.display(), "joined the cluster");
    Ok(())
}

/// Creates a CSR for `system:node:<node>` / `system:nodes` with a fresh ECDSA P-256 key
/// (which never leaves this machine) and waits for it to be approved and signed. Returns
/// the certificate and key PEM and the CSR's name.
async fn request_certificate(
    client: kube::Client,
    node: &str,
    timeout: Duration,
) -> anyhow::Result<(String, String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("system:node:{node}"));
    let request = params.serialize_request(&key)?.pem()?;
    let csrs: Api<k8s_openapi::api::certificates::v1::CertificateSigningRequest> = Api::all(client);
    let csr = serde_json::from_value(json!({
        "metadata": {"generateName": "node-csr-"},
        "spec": {
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
            "request": base64::engine::general_purpose::STANDARD.encode(&request),
        },
    }))?;
    let created = csrs
        .create(&PostParams::default(), &csr)
        .await
        .context("cannot create the CertificateSigningRequest")?;
    let name = created.metadata.name.unwrap_or_default();
    let deadline = Instant::now() + timeout;
    let cert = loop {
        let c = csrs
            .get(&name)
            .await
            .with_context(|| format!("reading CSR {name}"))?;
        let status = c.status.unwrap_or_default();
        for cond in status.conditions.unwrap_or_default() {
            if cond.type_ == "Denied" || cond.type_ == "Failed" {
                bail!(
                    "CSR {name} was {}: {}",
                    cond.type_.to_lowercase(),
                    cond.message.unwrap_or_default()
                );
            }
        }
        if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
            break String::from_utf8(cert.0).context("the issued certificate is not PEM")?;
        }
        if Instant::now() > deadline {
            bail!("CSR {name} was not approved and signed within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Ok((cert, key.serialize_pem(), name))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
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
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
