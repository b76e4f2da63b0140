//! TLS for every link kind on one QUIC endpoint.
//!
//! The server side offers the client, relay and HTTP/3 (WebTransport) ALPNs,
//! shows clients their own certificate and relay links the mesh one
//! ([`crate::client_cert`]), and asks for a client certificate
//! without requiring one: client links present none, relay links must present
//! one signed by the mesh CA (checked by rustls against `mesh_ca`; a relay
//! connection that arrived without one is closed by the edge). When this edge
//! dials a peer it presents its own certificate and checks the peer's against
//! the mesh CA.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;

use control::certs::{read_certs, read_key, ClientCertSource, ClientCerts};
use rustls::server::{ClientHello, ResolvesServerCert};

use crate::config::{ClientTlsMode, EdgeConfig};
use rustls::RootCertStore;

/// An edge's TLS identity and the mesh CA it trusts.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub mesh_ca: Vec<CertificateDer<'static>>,
}

impl TlsMaterial {
    pub fn from_files(cert: &Path, key: &Path, mesh_ca: &Path) -> anyhow::Result<Self> {
        Ok(TlsMaterial {
            chain: read_certs(cert)?,
            key: Arc::new(read_key(key)?),
            mesh_ca: read_certs(mesh_ca)?,
        })
    }

    /// The mesh certificate as rustls signs with it.
    pub fn certified_key(&self) -> anyhow::Result<Arc<CertifiedKey>> {
        let signer = rustls::crypto::ring::default_provider()
            .key_provider
            .load_private_key(self.key.clone_key())
            .context("unusable edge private key")?;
        let key = CertifiedKey::new(self.chain.clone(), signer);
        key.keys_match()
            .context("edge certificate and key do not match")?;
        Ok(Arc::new(key))
    }

    /// The endpoint's server config: relay links get the mesh certificate,
    /// clients (native and WebTransport) `clients`' certificate
    /// ([`CertResolver`]).
    pub fn server_config(&self, clients: Arc<ClientCerts>) -> anyhow::Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots()?), provider.clone())
                .allow_unauthenticated()
                .build()
                .context("building the mesh client-certificate verifier")?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(CertResolver {
                mesh: self.certified_key()?,
                clients,
            }));
        tls.alpn_protocols = protocol::alpn::CLIENT_SUPPORTED
            .iter()
            .chain(protocol::alpn::RELAY_SUPPORTED)
            .chain([&protocol::alpn::WEBTRANSPORT])
            .map(|a| a.to_vec())
            .collect();
        let quic = QuicServerConfig::try_from(tls)?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
    }

    /// Client config for relay links this edge dials.
    pub fn relay_client_config(&self) -> anyhow::Result<quinn::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .context("edge certificate unusable as a client certificate")?;
        tls.alpn_protocols = vec![protocol::alpn::RELAY_V1.to_vec()];
        Ok(quinn::ClientConfig::new(Arc::new(
            QuicClientConfig::try_from(tls)?,
        )))
    }

    fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for c in &self.mesh_ca {
            roots
                .add(c.clone())
                .context("mesh CA certificate is invalid")?;
        }
        Ok(roots)
    }
}

/// Picks the certificate by the ALPN ids a hello offers: the mesh
/// certificate for relay links (a hello offering only relay ids), the
/// client certificate for everything else (`rtn-client/1`, `h3`).
pub struct CertResolver {
    pub mesh: Arc<CertifiedKey>,
    pub clients: Arc<ClientCerts>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let relay_only = hello
            .alpn()
            .is_some_and(|mut ids| ids.all(|id| protocol::alpn::RELAY_SUPPORTED.contains(&id)));
        if relay_only {
            Some(self.mesh.clone())
        } else {
            self.clients.resolve(hello)
        }
    }
}

/// When a certificate expires (its notAfter); None if it does not parse as
/// X.509 (rustls would have refused it before this is asked).
pub fn not_after(cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let (_, c) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let secs = c.validity().not_after.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    }
}

/// The `source` label of a client certificate's expiry: `self_signed` ones
/// live 14 days at most by design and are rotated by the edge itself (the
/// expiry alert leaves them out), `files` are the operator's (ACME or their
/// CA), `memory` an embedder's or a test's.
pub fn cert_source(source: &ClientCertSource) -> &'static str {
    match source {
        ClientCertSource::SelfSigned { .. } => "self_signed",
        ClientCertSource::Files { .. } => "files",
        ClientCertSource::Fixed { .. } => "memory",
    }
}

/// The client certificate `[client_tls]` names. Self-signed certificates
/// are made for the edge's server name and the IP of its address (clients
/// that pin digests check neither).
pub fn client_cert_source(cfg: &EdgeConfig) -> ClientCertSource {
    let ct = &cfg.client_tls;
    match ct.mode {
        ClientTlsMode::Files => ClientCertSource::Files {
            cert: ct.cert.clone().unwrap_or_default(),
            key: ct.key.clone().unwrap_or_default(),
            check_every: Duration::from_millis(ct.reload_check_ms),
        },
        ClientTlsMode::SelfSigned => {
            let mut names = vec![cfg.edge.server_name.clone()];
            for addr in [Some(cfg.edge.listen), cfg.edge.public_addr]
                .into_iter()
                .flatten()
            {
                let ip = addr.ip().to_string();
                if !addr.ip().is_unspecified() && !names.contains(&ip) {
                    names.push(ip);
                }
            }
            ClientCertSource::SelfSigned {
                validity: Duration::from_secs(ct.self_signed_validity_s),
                rotate: Duration::from_secs(ct.self_signed_rotate_s),
                names,
            }
        }
    }
}

/// A development PKI: a mesh CA that issues edge certificates. The lab, the
/// tests and `edge-node dev-certs` use it; production brings its own CA.
pub struct DevPki {
    ca_params: CertificateParams,
    ca_key: KeyPair,
    ca_cert: rcgen::Certificate,
}

impl DevPki {
    pub fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "RTN development mesh CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = params.self_signed(&ca_key)?;
        Ok(DevPki {
            ca_params: params,
            ca_key,
            ca_cert,
        })
    }

    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_cert.der().clone()
    }

    /// Issue a certificate for `names`, usable both as a server certificate
    /// and as a relay client certificate. Returns (cert PEM, key PEM).
    pub fn issue_pem(&self, names: &[String]) -> anyhow::Result<(String, String)> {
        let (cert, key) = self.issue(names)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A client-facing certificate for `names` signed by this CA, held in
    /// memory: tests use the development CA as an operator's own CA for
    /// client certificates (their clients trust it as a custom CA).
    pub fn client_cert(&self, names: &[String]) -> anyhow::Result<ClientCertSource> {
        let (cert, key) = self.issue(names)?;
        Ok(ClientCertSource::Fixed {
            chain: vec![cert.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
        })
    }

    pub fn material(&self, names: &[String]) -> anyhow::Result<TlsMaterial> {
        let (cert, key) = self.issue(names)?;
        Ok(TlsMaterial {
            chain: vec![cert.der().clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
            mesh_ca: vec![self.ca_der()],
        })
    }

    fn issue(&self, names: &[String]) -> anyhow::Result<(rcgen::Certificate, KeyPair)> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_reads_a_certificates_expiry() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["edge-1.test".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let cert = params.self_signed(&key).unwrap();
        let at = not_after(cert.der()).unwrap();
        // 2031-05-17T00:00:00Z
        assert_eq!(
            at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            1_936_742_400
        );
        assert_eq!(
            not_after(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }
}
