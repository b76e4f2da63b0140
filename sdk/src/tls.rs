//! QUIC + TLS configuration of client links: TLS 1.3 only, ALPN
//! `rtn-client/1`, the edge certificate verified against the configured CA
//! roots and the candidate's server name, no client certificate.

use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;

use crate::error::SdkError;

/// Parse every certificate in `ca_pem` into a root store.
pub fn roots(ca_pem: &[u8]) -> Result<rustls::RootCertStore, SdkError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| SdkError::Invalid(format!("ca_pem: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| SdkError::Invalid(format!("ca_pem: bad CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(SdkError::Invalid(
            "ca_pem: no CERTIFICATE block found".into(),
        ));
    }
    Ok(roots)
}

pub fn quic_config(ca_pem: &[u8], idle: Duration) -> Result<quinn::ClientConfig, SdkError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SdkError::Invalid(format!("TLS: {e}")))?
        .with_root_certificates(roots(ca_pem)?)
        .with_no_client_auth();
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
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_refused() {
        assert!(matches!(
            quic_config(b"not a pem", Duration::from_secs(10)),
            Err(SdkError::Invalid(m)) if m.contains("ca_pem")
        ));
    }

    #[test]
    fn a_real_ca_is_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        assert!(quic_config(ca.pem().as_bytes(), Duration::from_secs(10)).is_ok());
    }
}
