//! TLS of the streaming server: a self-signed serving certificate made at start-up (the
//! API server does not verify it, as upstream without `--kubelet-certificate-authority`)
//! and client certificates verified against the cluster CA.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{Error, Result};

/// The rustls configuration: ring provider, ALPN h2 and http/1.1, client certificates
/// optional at the TLS layer (so `/healthz` stays open) but verified when presented.
pub(super) fn server_config(
    client_ca_pem: &str,
    serving_names: &[String],
) -> Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    let mut any = false;
    for cert in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::ClientCa(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| Error::ClientCa(e.to_string()))?;
        any = true;
    }
    if !any {
        return Err(Error::ClientCa("no certificate in the PEM".into()));
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let (chain, key) = self_signed(serving_names)?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn self_signed(names: &[String]) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    for n in names {
        if !sans.contains(n) {
            sans.push(n.clone());
        }
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(sans)?;
    let cn = names.first().cloned().unwrap_or_else(|| "kubelet".into());
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{cn}@kubelet"));
    let cert = params.self_signed(&key)?;
    let der = PrivatePkcs8KeyDer::from(key.serialize_der());
    Ok((vec![cert.der().clone()], PrivateKeyDer::Pkcs8(der)))
}
