//! How the SDK trusts edges: QUIC + TLS configuration of client links (TLS
//! 1.3 only, ALPN `rtn-client/1`, no client certificate).
//!
//! Clients trust edges like web servers (docs/security.md, "Client-facing
//! certificates"); the mesh CA is the edges' own business and apps never
//! ship it. [`EdgeTrust`] says how an edge's certificate is verified:
//! against the system's WebPKI roots (the default: production edges carry
//! ACME or other publicly trusted certificates for their names), against a
//! custom CA (a private deployment), or by the SHA-256 digests the edge
//! publishes for its short-lived self-signed certificates (development and
//! the lab; the same digests browsers pass as `serverCertificateHashes`).

use std::sync::Arc;
use std::time::Duration;

use protocol::CertHash;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::EdgeCandidate;
use crate::error::SdkError;

/// How edges' certificates are verified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum EdgeTrust {
    /// The system's trust store (rustls-platform-verifier): certificates
    /// from public CAs, valid for the candidate's `server_name`.
    #[default]
    WebPki,
    /// PEM CA certificate(s) the edges' certificates chain to, valid for
    /// the candidate's `server_name` (a private deployment's own CA).
    Ca(Vec<u8>),
    /// Each candidate's published digests (`EdgeCandidate::cert_sha256`,
    /// from the controller's nearest-edge answer or a goaway redirect): the
    /// edge's certificate must be one of them. For development and lab
    /// edges with self-signed certificates; a candidate without digests is
    /// refused.
    PinnedHashes,
}

/// Parse every certificate in `ca_pem` into a root store.
pub fn roots(ca_pem: &[u8]) -> Result<rustls::RootCertStore, SdkError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| SdkError::Invalid(format!("trust CA: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| SdkError::Invalid(format!("trust CA: bad CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(SdkError::Invalid(
            "trust CA: no CERTIFICATE block found".into(),
        ));
    }
    Ok(roots)
}

/// The QUIC client configs of one client: built once, except with pinned
/// digests, where each edge gets a verifier of its own digests.
#[derive(Clone)]
pub(crate) struct EdgeTls {
    /// WebPKI or CA: the one config for every edge.
    shared: Option<quinn::ClientConfig>,
    idle: Duration,
    /// Signalled when an edge shows a certificate whose digest is not
    /// pinned: the candidate list is stale (the edge restarted or rotated
    /// since), which no retry of it can get past.
    stale_pins: Arc<tokio::sync::Notify>,
}

impl EdgeTls {
    pub(crate) fn new(trust: &EdgeTrust, idle: Duration) -> Result<EdgeTls, SdkError> {
        let shared = match trust {
            EdgeTrust::WebPki => {
                let provider = provider();
                let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
                    .map_err(|e| SdkError::Invalid(format!("system trust store: {e}")))?;
                Some(quic_config(
                    tls_builder(&provider)?
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(verifier))
                        .with_no_client_auth(),
                    idle,
                )?)
            }
            EdgeTrust::Ca(pem) => Some(quic_config(
                tls_builder(&provider())?
                    .with_root_certificates(roots(pem)?)
                    .with_no_client_auth(),
                idle,
            )?),
            EdgeTrust::PinnedHashes => None,
        };
        Ok(EdgeTls {
            shared,
            idle,
            stale_pins: Arc::default(),
        })
    }

    /// Notified (a permit is kept if nobody waits) each time a pinned
    /// digest did not match.
    pub(crate) fn stale_pins(&self) -> Arc<tokio::sync::Notify> {
        self.stale_pins.clone()
    }

    /// The config to dial `edge` with.
    pub(crate) fn config_for(&self, edge: &EdgeCandidate) -> Result<quinn::ClientConfig, String> {
        if let Some(shared) = &self.shared {
            return Ok(shared.clone());
        }
        if edge.cert_sha256.is_empty() {
            return Err(format!(
                "{} publishes no certificate digest to pin (trust is PinnedHashes)",
                edge.addr
            ));
        }
        let provider = provider();
        let verifier = PinnedVerifier::new(edge.cert_sha256.clone())
            .notifying_mismatch(self.stale_pins.clone());
        let tls = tls_builder(&provider)
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        quic_config(tls, self.idle).map_err(|e| e.to_string())
    }
}

/// The TLS connector of the controller lookup over HTTPS: the system's
/// roots, or the custom CA when `trust` names one.
pub(crate) fn https_connector(trust: &EdgeTrust) -> Result<tokio_rustls::TlsConnector, SdkError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| SdkError::Invalid(format!("TLS: {e}")))?;
    let mut tls = match trust {
        EdgeTrust::Ca(pem) => builder.with_root_certificates(roots(pem)?),
        EdgeTrust::WebPki | EdgeTrust::PinnedHashes => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                rustls_platform_verifier::Verifier::new(provider)
                    .map_err(|e| SdkError::Invalid(format!("system trust store: {e}")))?,
            )),
    }
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_builder(
    provider: &Arc<CryptoProvider>,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, SdkError> {
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SdkError::Invalid(format!("TLS: {e}")))
}

fn quic_config(
    mut tls: rustls::ClientConfig,
    idle: Duration,
) -> Result<quinn::ClientConfig, SdkError> {
    tls.alpn_protocols = vec![protocol::alpn::CLIENT_V1.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| SdkError::Invalid(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    // A backstop only: the SDK's own liveness check is much faster.
    transport.max_idle_timeout(idle.try_into().ok());
    // Liveness and keepalives are the SDK's (application-level, so a hung
    // edge process is noticed even while its QUIC stack still acks).
    transport.keep_alive_interval(None);
    transport.datagram_receive_buffer_size(Some(1 << 20));
    transport.datagram_send_buffer_size(1 << 20);
    // As the edges (see their transport): BBR, not a window halved by
    // every random loss of a weak last mile.
    transport.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

/// Accepts exactly the certificates whose SHA-256 digest is pinned, as a
/// browser does with `serverCertificateHashes`: the digest is the identity,
/// so neither the name nor a chain is checked; the handshake signature is.
#[derive(Debug)]
pub struct PinnedVerifier {
    pins: Vec<CertHash>,
    provider: Arc<CryptoProvider>,
    mismatch: Option<Arc<tokio::sync::Notify>>,
}

impl PinnedVerifier {
    pub fn new(pins: Vec<CertHash>) -> PinnedVerifier {
        PinnedVerifier {
            pins,
            provider: provider(),
            mismatch: None,
        }
    }

    /// Signal `notify` whenever a certificate is refused for its digest.
    pub fn notifying_mismatch(mut self, notify: Arc<tokio::sync::Notify>) -> PinnedVerifier {
        self.mismatch = Some(notify);
        self
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash = CertHash::of(end_entity);
        if self.pins.contains(&hash) {
            Ok(ServerCertVerified::assertion())
        } else {
            if let Some(n) = &self.mismatch {
                n.notify_one();
            }
            Err(rustls::Error::General(format!(
                "certificate digest {hash} is not one the edge published (rotated since the candidate list was fetched?)"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle() -> Duration {
        Duration::from_secs(10)
    }

    #[test]
    fn pem_without_certificates_is_refused() {
        assert!(matches!(
            EdgeTls::new(&EdgeTrust::Ca(b"not a pem".to_vec()), idle()),
            Err(SdkError::Invalid(m)) if m.contains("trust CA")
        ));
    }

    #[test]
    fn a_real_ca_and_the_system_roots_are_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        assert!(EdgeTls::new(&EdgeTrust::Ca(ca.pem().into_bytes()), idle()).is_ok());
        assert!(EdgeTls::new(&EdgeTrust::WebPki, idle()).is_ok());
    }

    #[test]
    fn pinning_needs_digests_and_accepts_only_them() {
        let tls = EdgeTls::new(&EdgeTrust::PinnedHashes, idle()).unwrap();
        let bare = EdgeCandidate::new("127.0.0.1:4433".parse().unwrap(), "localhost");
        assert!(tls
            .config_for(&bare)
            .unwrap_err()
            .contains("no certificate digest"));
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = cert.cert.der().clone();
        let verifier = PinnedVerifier::new(vec![CertHash::of(&der)]);
        let name = ServerName::try_from("anything").unwrap();
        assert!(verifier
            .verify_server_cert(&der, &[], &name, &[], UnixTime::now())
            .is_ok());
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        assert!(verifier
            .verify_server_cert(other.cert.der(), &[], &name, &[], UnixTime::now())
            .is_err());
        let pinned = bare.with_cert_hashes(vec![CertHash::of(&der)]);
        assert!(tls.config_for(&pinned).is_ok());
    }
}
