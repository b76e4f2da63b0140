//! QUIC client configuration for client links.

use std::sync::Arc;

use quinn::crypto::rustls::QuicClientConfig;

use crate::error::SdkError;

pub fn quic_config(
    ca_pem: &[u8],
    idle: std::time::Duration,
) -> Result<quinn::ClientConfig, SdkError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &ca_pem[..]) {
        let cert = cert.map_err(|e| SdkError::Invalid(format!("CA PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| SdkError::Invalid(format!("CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(SdkError::Invalid("no CA certificate in ca_pem".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| SdkError::Invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![protocol::alpn::CLIENT_V1.to_vec()];
    let quic = QuicClientConfig::try_from(tls).map_err(|e| SdkError::Invalid(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(idle.try_into().ok());
    transport.datagram_receive_buffer_size(Some(1 << 20));
    cfg.transport_config(Arc::new(transport));
    Ok(cfg)
}
