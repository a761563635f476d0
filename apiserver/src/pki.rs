//! Cluster CA, serving and client certificates, kubeconfig.
//!
//! Everything lives under `<data-dir>/tls/`: created on first start, reused afterwards.
//! The serving certificate is issued again when its SAN set changes or it nears expiry;
//! the CA is never replaced silently, because that would invalidate every kubeconfig.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

/// Name of the admin user in its client certificate and the kubeconfig.
pub const ADMIN_USER: &str = "minik8s-admin";
/// Group every certificate-authenticated user belongs to.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Group that RBAC lets do everything.
pub const MASTERS_GROUP: &str = "system:masters";
/// User the API server is when it calls kubelets (upstream's apiserver-kubelet-client).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const LEAF_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// A leaf certificate closer than this to its end is issued again at start-up.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
/// Backdating covers clocks of clients that run slightly behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// Errors of the PKI module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot issue certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("cannot encode kubeconfig: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cluster's certificates and keys, all PEM.
#[derive(Clone)]
pub struct Pki {
    /// Cluster CA certificate: clients trust it, and it signs client certificates.
    pub ca_cert_pem: String,
    ca_key_pem: String,
    /// Certificate the API server presents.
    pub serving_cert_pem: String,
    /// Key of the serving certificate.
    pub serving_key_pem: String,
    /// Client certificate of `minik8s-admin` (group `system:masters`).
    pub admin_cert_pem: String,
    /// Key of the admin client certificate.
    pub admin_key_pem: String,
    /// Client certificate the API server shows kubelets (CN `kube-apiserver-kubelet-client`).
    pub kubelet_client_cert_pem: String,
    /// Key of the kubelet client certificate.
    pub kubelet_client_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

/// Who a verified client certificate says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
    /// The certificate's validity (unix seconds): upstream's x509 authenticator verifies it on
    /// every request, so a connection opened before a certificate expired cannot keep using it.
    pub not_before: i64,
    pub not_after: i64,
}

impl UserInfo {
    /// Whether the certificate is valid at `now` (unix seconds).
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Loads the certificates under `<dir>/tls/`, creating what is missing.
///
/// `extra_sans` are hostnames or IP addresses added to the serving certificate
/// (the `--tls-san` flag).
pub fn load_or_create(dir: &Path, extra_sans: &[String]) -> Result<Pki> {
    let tls = dir.join("tls");
    fs::create_dir_all(&tls).map_err(|source| Error::Io {
        path: tls.clone(),
        source,
    })?;
    set_mode(&tls, 0o700)?;
    let paths = Paths::new(&tls);

    let (ca_cert_pem, ca_key_pem) = load_or_create_ca(&paths)?;
    let ca = Ca::parse(&ca_cert_pem, &ca_key_pem, &paths.ca_cert)?;
    let now = unix_now();

    let sans = serving_sans(extra_sans);
    let wanted: BTreeSet<String> = sans.iter().cloned().collect();
    let (serving_cert_pem, serving_key_pem) =
        match check_leaf(&paths.serving_cert, &paths.serving_key, &ca, now) {
            Ok((cert, key, have)) if have == wanted => (cert, key),
            outcome => {
                let why = match outcome {
                    Ok(_) => "its names changed".to_string(),
                    Err(why) => why,
                };
                tracing::info!(reason = %why, sans = ?sans, "issuing serving certificate");
                let (cert, key) = ca.issue_serving(&sans)?;
                write_file(&paths.serving_key, &key, 0o600)?;
                write_file(&paths.serving_cert, &cert, 0o644)?;
                (cert, key)
            }
        };

    let (admin_cert_pem, admin_key_pem) =
        match check_leaf(&paths.admin_cert, &paths.admin_key, &ca, now) {
            Ok((cert, key, _)) => (cert, key),
            Err(why) => {
                tracing::info!(reason = %why, "issuing admin client certificate");
                let (cert, key) = ca.issue_client(ADMIN_USER, &[MASTERS_GROUP])?;
                write_file(&paths.admin_key, &key, 0o600)?;
                write_file(&paths.admin_cert, &cert, 0o644)?;
                (cert, key)
            }
        };

    let (kubelet_client_cert_pem, kubelet_client_key_pem) = match check_leaf(
        &paths.kubelet_client_cert,
        &paths.kubelet_client_key,
        &ca,
        now,
    ) {
        Ok((cert, key, _)) => (cert, key),
        Err(why) => {
            tracing::info!(reason = %why, "issuing kubelet client certificate");
            let (cert, key) = ca.issue_client(KUBELET_CLIENT_USER, &[MASTERS_GROUP])?;
            write_file(&paths.kubelet_client_key, &key, 0o600)?;
            write_file(&paths.kubelet_client_cert, &cert, 0o644)?;
            (cert, key)
        }
    };

    Ok(Pki {
        ca_cert_pem,
        ca_key_pem,
        serving_cert_pem,
        serving_key_pem,
        admin_cert_pem,
        admin_key_pem,
        kubelet_client_cert_pem,
        kubelet_client_key_pem,
    })
}

impl Pki {
    /// Same as the free function [`load_or_create`].
    pub fn load_or_create(dir: &Path, extra_sans: &[String]) -> Result<Pki> {
        load_or_create(dir, extra_sans)
    }

    /// TLS configuration of the API server: the ring provider, ALPN `h2` and `http/1.1`,
    /// client certificates optional but verified against the cluster CA when presented.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_der = pem_cert(&self.ca_cert_pem, "cluster CA certificate")?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_der)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()?;
        let chain = vec![pem_cert(&self.serving_cert_pem, "serving certificate")?];
        let key = pem_key(&self.serving_key_pem, "serving key")?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// TLS configuration for calls to kubelets: the kubelet client certificate, and no
    /// check of the kubelet's serving certificate (upstream without
    /// `--kubelet-certificate-authority`). ALPN http/1.1 only, so upgrades work.
    pub fn kubelet_client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let chain = vec![pem_cert(
            &self.kubelet_client_cert_pem,
            "kubelet client certificate",
        )?];
        let key = pem_key(&self.kubelet_client_key_pem, "kubelet client key")?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Issues a client certificate (1 year) for user `name` in `groups` (at most one group);
    /// returns (cert, key) PEM. Nothing is written to disk.
    pub fn issue_client_cert(&self, name: &str, groups: &[&str]) -> Result<(String, String)> {
        let ca = Ca::parse(&self.ca_cert_pem, &self.ca_key_pem, Path::new("cluster CA"))?;
        ca.issue_client(name, groups)
    }

    /// Issues a client certificate valid from `not_before` to `not_after` (unix seconds), for
    /// tests of expiry and rotation; returns (cert, key) PEM.
    pub fn issue_client_cert_between(
        &self,
        name: &str,
        groups: &[&str],
        not_before: i64,
        not_after: i64,
    ) -> Result<(String, String)> {
        let ca = Ca::parse(&self.ca_cert_pem, &self.ca_key_pem, Path::new("cluster CA"))?;
        let params = client_params(name, groups)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = leaf_params(params);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let secs = |t: i64| Duration::from_secs(t.max(0) as u64);
        params.not_before = epoch + secs(not_before);
        params.not_after = epoch + secs(not_after);
        let cert = params.signed_by(&key, &ca.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs a PEM `CERTIFICATE REQUEST` as a client certificate (subject and key from the
    /// request, client-auth usage) valid for `lifetime`, at most 1 year (upstream's default
    /// `--cluster-signing-duration`); returns the certificate PEM.
    pub fn sign_client_csr(&self, csr_pem: &str, lifetime: Option<Duration>) -> Result<String> {
        let ca = Ca::parse(&self.ca_cert_pem, &self.ca_key_pem, Path::new("cluster CA"))?;
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let p = &mut csr.params;
        p.subject_alt_names.clear();
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.custom_extensions.clear();
        p.use_authority_key_identifier_extension = true;
        let lifetime = lifetime.map_or(LEAF_LIFETIME, |l| l.min(LEAF_LIFETIME));
        set_validity(p, unix_now(), lifetime);
        Ok(csr.signed_by(&ca.issuer)?.pem())
    }

    /// Kubeconfig text for the admin user against `server_url`.
    pub fn kubeconfig(&self, server_url: &str) -> Result<String> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "minik8s",
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": b64(&self.ca_cert_pem),
                },
            }],
            "users": [{
                "name": ADMIN_USER,
                "user": {
                    "client-certificate-data": b64(&self.admin_cert_pem),
                    "client-key-data": b64(&self.admin_key_pem),
                },
            }],
            "contexts": [{
                "name": "minik8s",
                "context": { "cluster": "minik8s", "user": ADMIN_USER },
            }],
            "current-context": "minik8s",
            "preferences": {},
        });
        Ok(serde_yaml::to_string(&config)?)
    }

    /// Writes the admin kubeconfig to `path` (mode 0600), creating parent directories.
    pub fn write_kubeconfig(&self, path: &Path, server_url: &str) -> Result<()> {
        let text = self.kubeconfig(server_url)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(|source| Error::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        write_file(path, &text, 0o600)
    }
}

/// Accepts any kubelet serving certificate but still checks the handshake signatures.
#[derive(Debug)]
struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// kubeadm's CA pin: `sha256:<hex>` of the DER SubjectPublicKeyInfo of the first
/// certificate in `ca_pem` (`None` when it is not a certificate).
pub fn ca_cert_hash(ca_pem: &str) -> Option<String> {
    let der = pem_cert(ca_pem, "CA certificate").ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.public_key().raw);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("sha256:{hex}"))
}

/// The user a client certificate names: CN is the user, each O a group, plus
/// `system:authenticated`. Call only with a certificate the TLS layer has verified.
pub fn user_from_client_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_string());
    }
    let validity = cert.validity();
    Some(UserInfo {
        name,
        groups,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// [`user_from_client_cert`] of the first certificate in a PEM text.
pub fn user_from_client_cert_pem(pem: &str) -> Option<UserInfo> {
    let der = pem_cert(pem, "certificate").ok()?;
    user_from_client_cert(der.as_ref())
}

/// SANs of the serving certificate, in a stable order without duplicates.
pub fn serving_sans(extra_sans: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(host_name());
    names.extend(host_addresses().iter().map(IpAddr::to_string));
    names.extend(
        [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
        ]
        .map(String::from),
    );
    names.extend(extra_sans.iter().filter_map(|s| normalize_san(s)));
    let mut seen = BTreeSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

fn normalize_san(s: &str) -> Option<String> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Some(ip.to_string()),
        Err(_) => Some(s.to_ascii_lowercase()),
    }
}

/// The kernel's host name, when it is usable as a DNS name.
fn host_name() -> Option<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = raw.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    valid.then_some(name)
}

/// The host's non-loopback, non-link-local addresses, from procfs.
fn host_addresses() -> Vec<IpAddr> {
    let mut addrs = BTreeSet::new();
    if let Ok(trie) = fs::read_to_string("/proc/net/fib_trie") {
        addrs.extend(ipv4_local_addresses(&trie).into_iter().map(IpAddr::V4));
    }
    if let Ok(table) = fs::read_to_string("/proc/net/if_inet6") {
        addrs.extend(ipv6_global_addresses(&table).into_iter().map(IpAddr::V6));
    }
    addrs.into_iter().collect()
}

/// Addresses the kernel delivers locally: in `/proc/net/fib_trie` each is a `|-- a.b.c.d`
/// line followed by a `/32 host LOCAL` line.
fn ipv4_local_addresses(trie: &str) -> BTreeSet<std::net::Ipv4Addr> {
    let mut out = BTreeSet::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(a) = last.take() {
                if !a.is_loopback() && !a.is_link_local() && !a.is_unspecified() {
                    out.insert(a);
                }
            }
        }
    }
    out
}

/// Global-scope addresses from `/proc/net/if_inet6` (hex address, index, prefix, scope, flags, name).
fn ipv6_global_addresses(table: &str) -> BTreeSet<std::net::Ipv6Addr> {
    let mut out = BTreeSet::new();
    for line in table.lines() {
        let mut fields = line.split_whitespace();
        let (Some(hex), Some(_), Some(_), Some(scope)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if scope != "00" || hex.len() != 32 {
            continue;
        }
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        let addr = std::net::Ipv6Addr::from(bits);
        if !addr.is_loopback() && !addr.is_unspecified() {
            out.insert(addr);
        }
    }
    out
}

struct Paths {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: PathBuf,
    admin_key: PathBuf,
    kubelet_client_cert: PathBuf,
    kubelet_client_key: PathBuf,
}

impl Paths {
    fn new(tls: &Path) -> Self {
        Paths {
            ca_cert: tls.join("ca.crt"),
            ca_key: tls.join("ca.key"),
            serving_cert: tls.join("serving.crt"),
            serving_key: tls.join("serving.key"),
            admin_cert: tls.join("admin.crt"),
            admin_key: tls.join("admin.key"),
            kubelet_client_cert: tls.join("apiserver-kubelet-client.crt"),
            kubelet_client_key: tls.join("apiserver-kubelet-client.key"),
        }
    }
}

/// Reads the CA, or creates one when neither of its files exists. A half-present or
/// broken CA is an error: replacing it would lock every existing client out.
fn load_or_create_ca(paths: &Paths) -> Result<(String, String)> {
    let cert = read_optional(&paths.ca_cert)?;
    let key = read_optional(&paths.ca_key)?;
    match (cert, key) {
        (Some(cert), Some(key)) => Ok((cert, key)),
        (None, None) => {
            let (cert, key) = create_ca()?;
            tracing::info!(path = %paths.ca_cert.display(), "created cluster CA");
            write_file(&paths.ca_key, &key, 0o600)?;
            write_file(&paths.ca_cert, &cert, 0o644)?;
            Ok((cert, key))
        }
        (Some(_), None) => Err(Error::Invalid {
            path: paths.ca_key.clone(),
            reason: format!(
                "missing while {} exists; restore it, or remove the directory to create a new cluster CA",
                paths.ca_cert.display()
            ),
        }),
        (None, Some(_)) => Err(Error::Invalid {
            path: paths.ca_cert.clone(),
            reason: format!(
                "missing while {} exists; restore it, or remove the directory to create a new cluster CA",
                paths.ca_key.display()
            ),
        }),
    }
}

fn create_ca() -> Result<(String, String)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let now = unix_now();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("minik8s-ca@{now}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, now, CA_LIFETIME);
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The parsed CA, ready to sign.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    subject_raw: Vec<u8>,
}

impl Ca {
    fn parse(cert_pem: &str, key_pem: &str, path: &Path) -> Result<Ca> {
        let invalid = |reason: String| Error::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let der = pem_cert(cert_pem, "cluster CA certificate")
            .map_err(|e| invalid(format!("cannot read certificate: {e}")))?;
        let key =
            KeyPair::from_pem(key_pem).map_err(|e| invalid(format!("cannot read CA key: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| invalid(format!("cannot parse certificate: {e}")))?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(invalid(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        if !x509.is_ca() {
            return Err(invalid("not a CA certificate".into()));
        }
        if x509.validity().not_after.timestamp() <= unix_now() as i64 {
            return Err(invalid(
                "the cluster CA has expired; remove the directory to create a new one".into(),
            ));
        }
        let subject_raw = x509.subject().as_raw().to_vec();
        let issuer = Issuer::from_ca_cert_der(&der, key)
            .map_err(|e| invalid(format!("cannot use as issuer: {e}")))?;
        Ok(Ca {
            issuer,
            subject_raw,
        })
    }

    fn issue_serving(&self, sans: &[String]) -> Result<(String, String)> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => Ok(SanType::DnsName(s.clone().try_into()?)),
            })
            .collect::<Result<Vec<_>, rcgen::Error>>()?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    fn issue_client(&self, name: &str, groups: &[&str]) -> Result<(String, String)> {
        self.sign(client_params(name, groups)?)
    }

    fn sign(&self, params: CertificateParams) -> Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = leaf_params(params);
        set_validity(&mut params, unix_now(), LEAF_LIFETIME);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// The subject and usage of a client certificate for `name` in `groups`.
fn client_params(name: &str, groups: &[&str]) -> Result<CertificateParams> {
    if groups.len() > 1 {
        // rcgen keeps one value per attribute type, so a second O would replace the first.
        return Err(Error::Invalid {
            path: PathBuf::from(name),
            reason: "a client certificate can carry at most one group".into(),
        });
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// What every leaf the CA signs has: not a CA, digital signature, the CA's key id.
fn leaf_params(mut params: CertificateParams) -> CertificateParams {
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params
}

/// Reads a leaf certificate and key and checks they are still good: issued by `ca`, key
/// matching, not near expiry. Returns them with the certificate's SAN set, or why not.
fn check_leaf(
    cert_path: &Path,
    key_path: &Path,
    ca: &Ca,
    now: u64,
) -> std::result::Result<(String, String, BTreeSet<String>), String> {
    if !cert_path.exists() {
        return Err("none exists yet".into());
    }
    let cert_pem =
        fs::read_to_string(cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let key_pem =
        fs::read_to_string(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let der = pem_cert(&cert_pem, "certificate").map_err(|e| e.to_string())?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    if x509.issuer().as_raw() != ca.subject_raw.as_slice() {
        return Err("it was issued by another CA".into());
    }
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err("its key does not match".into());
    }
    if x509.validity().not_after.timestamp() < (now + RENEW_BEFORE.as_secs()) as i64 {
        return Err("it expires soon".into());
    }
    let sans = cert_sans(&x509);
    Ok((cert_pem, key_pem, sans))
}

/// The DNS names and IP addresses in a certificate's SAN extension, as strings.
fn cert_sans(x509: &x509_parser::certificate::X509Certificate<'_>) -> BTreeSet<String> {
    let mut sans = BTreeSet::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    sans.insert(d.to_string());
                }
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        sans.insert(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    sans
}

fn set_validity(params: &mut CertificateParams, now: u64, lifetime: Duration) {
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let start = Duration::from_secs(now).saturating_sub(BACKDATE);
    params.not_before = epoch + start;
    params.not_after = epoch + start + BACKDATE + lifetime;
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn pem_cert(pem: &str, what: &str) -> Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Invalid {
        path: PathBuf::from(what),
        reason: format!("not a PEM certificate: {e}"),
    })
}

fn pem_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| Error::Invalid {
        path: PathBuf::from(what),
        reason: format!("not a PEM private key: {e}"),
    })
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` atomically (temporary file, fsync, rename) with `mode`.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io)?;
    // The mode above applies only when the file is new.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use rustls::pki_types::ServerName;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_files_with_modes() {
        let dir = tempfile::tempdir().unwrap();
        let pki = load_or_create(dir.path(), &[]).unwrap();
        let tls = dir.path().join("tls");
        for key in ["ca.key", "serving.key", "admin.key"] {
            assert_eq!(mode_of(&tls.join(key)), 0o600, "{key}");
        }
        for cert in ["ca.crt", "serving.crt", "admin.crt"] {
            assert_eq!(mode_of(&tls.join(cert)), 0o644, "{cert}");
        }
        assert_eq!(mode_of(&tls), 0o700);
        assert_eq!(
            fs::read_to_string(tls.join("ca.crt")).unwrap(),
            pki.ca_cert_pem
        );
        assert!(!tls.join("ca.key.tmp").exists());
    }

    #[test]
    fn reload_reuses_and_san_change_reissues_serving_only() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path(), &[]).unwrap();
        let second = load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(first.ca_cert_pem, second.ca_cert_pem);
        assert_eq!(first.serving_cert_pem, second.serving_cert_pem);
        assert_eq!(first.serving_key_pem, second.serving_key_pem);
        assert_eq!(first.admin_cert_pem, second.admin_cert_pem);

        let third = load_or_create(dir.path(), &["api.example.com".into()]).unwrap();
        assert_eq!(first.ca_cert_pem, third.ca_cert_pem);
        assert_eq!(first.admin_cert_pem, third.admin_cert_pem);
        assert_ne!(first.serving_cert_pem, third.serving_cert_pem);

        // The same extra SAN again keeps the new certificate.
        let fourth = load_or_create(dir.path(), &["API.example.com".into()]).unwrap();
        assert_eq!(third.serving_cert_pem, fourth.serving_cert_pem);
    }

    #[test]
    fn serving_cert_has_expected_sans() {
        let dir = tempfile::tempdir().unwrap();
        let pki = load_or_create(dir.path(), &["10.1.2.3".into()]).unwrap();
        let der = pem_cert(&pki.serving_cert_pem, "t").unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
        let names = cert_sans(&x509);
        for want in [
            "localhost",
            "kubernetes.default.svc.cluster.local",
            "127.0.0.1",
            "10.96.0.1",
            "10.1.2.3",
        ] {
            assert!(names.contains(want), "{want} missing from {names:?}");
        }
    }

    #[test]
    fn half_present_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), &[]).unwrap();
        fs::remove_file(dir.path().join("tls/ca.key")).unwrap();
        let err = load_or_create(dir.path(), &[]).unwrap_err();
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn procfs_parsers() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    |-- 127.0.0.1\n           /32 host LOCAL\n     |-- 192.0.2.2\n        /32 host LOCAL\n\
                    |-- 192.0.2.0\n        /24 link UNICAST\n";
        let v4: Vec<_> = ipv4_local_addresses(trie).into_iter().collect();
        assert_eq!(v4, vec!["192.0.2.2".parse::<std::net::Ipv4Addr>().unwrap()]);
        let table = "fd000000000000000000000000000002 02 40 00 80 eth0\n\
                     00000000000000000000000000000001 01 80 10 80 lo\n\
                     fe800000000000000000000000000001 02 40 20 80 eth0\n";
        let v6: Vec<_> = ipv6_global_addresses(table).into_iter().collect();
        assert_eq!(v6, vec!["fd00::2".parse::<std::net::Ipv6Addr>().unwrap()]);
    }

    /// Runs a TLS handshake in memory; returns the server connection or the first error.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> Result<rustls::ServerConnection, rustls::Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            s.read_tls(&mut buf.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            c.read_tls(&mut buf.as_slice()).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(s);
            }
        }
        panic!("handshake did not finish");
    }

    fn client_config(pki: &Pki, client_cert: Option<(&str, &str)>) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pem_cert(&pki.ca_cert_pem, "ca").unwrap())
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client_cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![pem_cert(cert, "c").unwrap()],
                    pem_key(key, "k").unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(config)
    }

    #[test]
    fn tls_verifies_server_and_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = load_or_create(dir.path(), &[]).unwrap();
        let server = pki.server_config().unwrap();

        // Admin client certificate: accepted and mapped to a user.
        let admin = client_config(&pki, Some((&pki.admin_cert_pem, &pki.admin_key_pem)));
        for name in ["localhost", "127.0.0.1", "kubernetes.default.svc"] {
            let conn = handshake(server.clone(), admin.clone(), name).unwrap();
            assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
            let peer = conn.peer_certificates().unwrap();
            let user = user_from_client_cert(&peer[0]).unwrap();
            assert_eq!(user.name, ADMIN_USER);
            assert_eq!(user.groups, vec![MASTERS_GROUP, AUTHENTICATED_GROUP]);
        }

        // No client certificate: allowed, anonymous at the TLS layer.
        let anon = client_config(&pki, None);
        let conn = handshake(server.clone(), anon, "localhost").unwrap();
        assert!(conn.peer_certificates().is_none());

        // A name not in the serving certificate is refused by the client.
        let anon = client_config(&pki, None);
        assert!(handshake(server.clone(), anon, "example.org").is_err());

        // A client certificate from another CA is refused by the server.
        let other_dir = tempfile::tempdir().unwrap();
        let other = load_or_create(other_dir.path(), &[]).unwrap();
        let stranger = client_config(&pki, Some((&other.admin_cert_pem, &other.admin_key_pem)));
        assert!(handshake(server, stranger, "localhost").is_err());
    }

    #[test]
    fn issued_client_cert_names_user_and_groups() {
        let dir = tempfile::tempdir().unwrap();
        let pki = load_or_create(dir.path(), &[]).unwrap();
        assert!(pki.issue_client_cert("alice", &["dev", "ops"]).is_err());
        let (cert, _key) = pki.issue_client_cert("alice", &["dev"]).unwrap();
        let user = user_from_client_cert(&pem_cert(&cert, "c").unwrap()).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", AUTHENTICATED_GROUP]);
        let now = unix_now() as i64;
        assert!(user.valid_at(now));
        assert!(user.not_after > now + 364 * 24 * 3600, "{user:?}");
        assert!(!user.valid_at(user.not_after + 1));

        let (cert, _key) = pki
            .issue_client_cert_between("bob", &[], now - 100, now - 10)
            .unwrap();
        let user = user_from_client_cert(&pem_cert(&cert, "c").unwrap()).unwrap();
        assert_eq!((user.not_before, user.not_after), (now - 100, now - 10));
        assert!(!user.valid_at(now));
        assert!(user_from_client_cert(b"not a certificate").is_none());
    }

    #[test]
    fn kubeconfig_has_expected_fields() {
        let dir = tempfile::tempdir().unwrap();
        let pki = load_or_create(dir.path(), &[]).unwrap();
        let path = dir.path().join("nested/dir/kubeconfig.yaml");
        pki.write_kubeconfig(&path, "https://127.0.0.1:6443")
            .unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(doc["current-context"].as_str(), Some("minik8s"));
        assert_eq!(doc["kind"].as_str(), Some("Config"));
        let cluster = &doc["clusters"][0];
        assert_eq!(cluster["name"].as_str(), Some("minik8s"));
        assert_eq!(
            cluster["cluster"]["server"].as_str(),
            Some("https://127.0.0.1:6443")
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let ca = b64
            .decode(
                cluster["cluster"]["certificate-authority-data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(ca, pki.ca_cert_pem.as_bytes());
        let user = &doc["users"][0];
        assert_eq!(user["name"].as_str(), Some(ADMIN_USER));
        let key = b64
            .decode(user["user"]["client-key-data"].as_str().unwrap())
            .unwrap();
        assert_eq!(key, pki.admin_key_pem.as_bytes());
        assert!(user["user"]["client-certificate-data"].as_str().is_some());
        let ctx = &doc["contexts"][0];
        assert_eq!(ctx["name"].as_str(), Some("minik8s"));
        assert_eq!(ctx["context"]["cluster"].as_str(), Some("minik8s"));
        assert_eq!(ctx["context"]["user"].as_str(), Some(ADMIN_USER));
    }
}
