//! A certificate a process serves to clients and browsers, kept fresh:
//! the edge's client-facing certificate (its relay links use the mesh one)
//! and the region controller's HTTPS certificate.
//!
//! Clients trust RTN's public endpoints like web servers (docs/security.md,
//! "Client-facing certificates"): the mesh CA is for edge-to-edge mutual
//! TLS only, and apps never ship it. A [`ClientCerts`] holds one of:
//!
//! - **files** (production): a PEM chain and key from any CA, typically
//!   ACME-issued for the name; re-read when either file changes (checked
//!   every `check_every`), so a renewal needs no restart. A pair that does
//!   not load leaves the previous certificate in place.
//! - **self-signed** (development, the lab; edges only): an ECDSA P-256
//!   certificate the process makes itself, valid at most 14 days (what
//!   Chromium accepts with `serverCertificateHashes`) and replaced every
//!   `rotate` by one made a rotation earlier. The digests of the current and
//!   the next one are published ([`ClientCerts::hashes`]: the edge's
//!   registration, the nearest-edge answer, goaway redirects), so a client
//!   holding a list from before a rotation still connects.
//! - **fixed** (embedders and tests): a certificate and key given in memory.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context};
use protocol::CertHash;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::sync::watch;

/// The longest validity Chromium accepts for a certificate pinned with
/// `serverCertificateHashes` (W3C WebTransport, "custom certificate
/// requirements").
pub const MAX_PINNED_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);
/// How far a self-signed certificate's validity starts before its making:
/// clients whose clock is a little behind still accept it.
const BACKDATE: Duration = Duration::from_secs(60);

/// Where the client certificate comes from.
#[derive(Clone, Debug)]
pub enum ClientCertSource {
    SelfSigned {
        /// Validity of each certificate (at most [`MAX_PINNED_VALIDITY`],
        /// at least two rotations: it is published one rotation before use
        /// and used for one).
        validity: Duration,
        rotate: Duration,
        /// Names (DNS names or IP literals) the certificate is made for.
        names: Vec<String>,
    },
    Files {
        cert: PathBuf,
        key: PathBuf,
        check_every: Duration,
    },
    Fixed {
        chain: Vec<CertificateDer<'static>>,
        key: Arc<PrivateKeyDer<'static>>,
    },
}

/// One certificate in use or waiting its turn.
#[derive(Clone)]
struct Issued {
    key: Arc<CertifiedKey>,
    hash: CertHash,
}

/// The edge's client certificate: the one in use, the one next in line
/// (self-signed mode), and the digests published for clients.
pub struct ClientCerts {
    source: ClientCertSource,
    /// The certificate in use; a watch so that who reports on it (the
    /// edge's expiry metric) learns of a reload or rotation when it happens.
    current: watch::Sender<Issued>,
    next: Mutex<Option<Issued>>,
    /// The files' state at the last load (files mode).
    files_seen: Mutex<Option<FilesStamp>>,
    hashes: watch::Sender<Vec<CertHash>>,
}

type FilesStamp = [(Option<SystemTime>, u64); 2];

impl ClientCerts {
    /// Load or make the first certificate (and, self-signed, the next).
    pub fn new(source: ClientCertSource) -> anyhow::Result<Arc<ClientCerts>> {
        let (current, next, stamp) = match &source {
            ClientCertSource::SelfSigned {
                validity,
                rotate,
                names,
            } => {
                check_rotation(*validity, *rotate)?;
                (
                    self_signed(names, *validity)?,
                    Some(self_signed(names, *validity)?),
                    None,
                )
            }
            ClientCertSource::Files { cert, key, .. } => {
                let stamp = files_stamp(cert, key);
                (load_files(cert, key)?, None, Some(stamp))
            }
            ClientCertSource::Fixed { chain, key } => (certified(chain.clone(), key)?, None, None),
        };
        let published = published(&source, &current, next.as_ref());
        Ok(Arc::new(ClientCerts {
            source,
            current: watch::channel(current).0,
            next: Mutex::new(next),
            files_seen: Mutex::new(stamp),
            hashes: watch::channel(published).0,
        }))
    }

    /// Digests clients may pin (current first): self-signed mode only;
    /// empty for a certificate from files or memory (verify its chain).
    pub fn hashes(&self) -> watch::Receiver<Vec<CertHash>> {
        self.hashes.subscribe()
    }

    /// The digest of the certificate in use.
    pub fn current_hash(&self) -> CertHash {
        self.current.borrow().hash
    }

    /// The certificate in use, as rustls signs with it.
    pub fn current_key(&self) -> Arc<CertifiedKey> {
        self.current.borrow().key.clone()
    }

    /// Changes of the certificate in use (a reload or a rotation): wait
    /// with `changed()`, then read [`ClientCerts::current_key`].
    pub fn changes(&self) -> watch::Receiver<impl Sized> {
        self.current.subscribe()
    }

    /// Rotate or reload for as long as the process runs (one of its
    /// loops); `owner` names it in logs and in the
    /// `rtn_cert_reloads_total{owner, result}` counter (e.g. `edge-3`).
    pub async fn maintain(self: Arc<Self>, owner: String) {
        match &self.source {
            ClientCertSource::SelfSigned { rotate, .. } => {
                let rotate = *rotate;
                loop {
                    tokio::time::sleep(rotate).await;
                    match self.rotate() {
                        Ok(hash) => tracing::info!(owner, %hash, "certificate rotated"),
                        Err(e) => {
                            tracing::warn!(owner, error = %e, "certificate rotation failed")
                        }
                    }
                }
            }
            ClientCertSource::Files { check_every, .. } => {
                let mut tick = tokio::time::interval(*check_every);
                loop {
                    tick.tick().await;
                    match self.reload_if_changed() {
                        Ok(Some(hash)) => {
                            metrics::counter!("rtn_cert_reloads_total", "owner" => owner.clone(), "result" => "ok").increment(1);
                            tracing::info!(owner, %hash, "certificate reloaded")
                        }
                        Ok(None) => {}
                        Err(e) => {
                            metrics::counter!("rtn_cert_reloads_total", "owner" => owner.clone(), "result" => "error").increment(1);
                            tracing::warn!(owner, error = %format!("{e:#}"), "certificate files changed but do not load; keeping the previous certificate")
                        }
                    }
                }
            }
            ClientCertSource::Fixed { .. } => std::future::pending().await,
        }
    }

    /// Self-signed mode: the next certificate goes in use and a new one is
    /// made to follow it. Returns the digest now in use.
    pub fn rotate(&self) -> anyhow::Result<CertHash> {
        let ClientCertSource::SelfSigned {
            validity, names, ..
        } = &self.source
        else {
            return Err(anyhow!("only a self-signed certificate rotates"));
        };
        let following = self_signed(names, *validity)?;
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let incoming = next
            .replace(following)
            .expect("self-signed mode keeps a next");
        let hash = incoming.hash;
        self.current.send_replace(incoming.clone());
        self.hashes
            .send_replace(published(&self.source, &incoming, next.as_ref()));
        Ok(hash)
    }

    /// Files mode: load the pair again if either file changed since the
    /// last load. `Ok(Some(digest))` when a new certificate is in use.
    pub fn reload_if_changed(&self) -> anyhow::Result<Option<CertHash>> {
        let ClientCertSource::Files { cert, key, .. } = &self.source else {
            return Ok(None);
        };
        let stamp = files_stamp(cert, key);
        let mut seen = self.files_seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.as_ref() == Some(&stamp) {
            return Ok(None);
        }
        // Remember the attempt either way: a broken pair is reported once,
        // not every check, and retried when the files change again.
        *seen = Some(stamp);
        let loaded = load_files(cert, key)?;
        let hash = loaded.hash;
        self.current.send_replace(loaded);
        Ok(Some(hash))
    }
}

/// Serves the current certificate to every hello (the controller's
/// HTTPS; the edge picks by ALPN first).
impl ResolvesServerCert for ClientCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current_key())
    }
}

impl std::fmt::Debug for ClientCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCerts")
            .field("current", &self.current_hash())
            .finish_non_exhaustive()
    }
}

fn check_rotation(validity: Duration, rotate: Duration) -> anyhow::Result<()> {
    if validity > MAX_PINNED_VALIDITY {
        return Err(anyhow!(
            "self-signed validity: at most 14 days ({} s): browsers refuse longer-lived pinned certificates",
            MAX_PINNED_VALIDITY.as_secs()
        ));
    }
    if rotate.is_zero() || validity < rotate * 2 + BACKDATE {
        return Err(anyhow!(
            "self-signed rotation must be positive and at most half the validity less a minute: a certificate is published one rotation before it is used for one"
        ));
    }
    Ok(())
}

/// The digests to publish: current and next in self-signed mode.
fn published(source: &ClientCertSource, current: &Issued, next: Option<&Issued>) -> Vec<CertHash> {
    match source {
        ClientCertSource::SelfSigned { .. } => std::iter::once(current.hash)
            .chain(next.map(|n| n.hash))
            .collect(),
        _ => Vec::new(),
    }
}

/// Make a self-signed ECDSA P-256 certificate for `names`.
fn self_signed(names: &[String], validity: Duration) -> anyhow::Result<Issued> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().cloned().unwrap_or_else(|| "rtn-edge".into()),
    );
    let start = SystemTime::now() - BACKDATE;
    params.not_before = start.into();
    params.not_after = (start + validity).into();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let cert = params.self_signed(&key)?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    certified(vec![cert.der().clone()], &Arc::new(der))
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'static>,
) -> anyhow::Result<Issued> {
    let first = chain
        .first()
        .ok_or_else(|| anyhow!("no certificate in the chain"))?;
    let hash = CertHash::of(first);
    let signer = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key.clone_key())
        .context("unusable private key")?;
    let key = CertifiedKey::new(chain, signer);
    key.keys_match()
        .context("the certificate and the key do not match")?;
    Ok(Issued {
        key: Arc::new(key),
        hash,
    })
}

fn load_files(cert: &Path, key: &Path) -> anyhow::Result<Issued> {
    let chain = read_certs(cert)?;
    let key = read_key(key)?;
    certified(chain, &key).with_context(|| format!("certificate {}", cert.display()))
}

/// Every certificate of a PEM file (a chain), at least one.
pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
    if certs.is_empty() {
        return Err(anyhow!("{} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn read_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = std::fs::read(path).with_context(|| format!("reading key {}", path.display()))?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .with_context(|| format!("{} is not PEM", path.display()))?
        .ok_or_else(|| anyhow!("{} holds no private key", path.display()))
}

/// What changes when a file is replaced or rewritten (ACME clients rename
/// a new file over the old one).
fn files_stamp(cert: &Path, key: &Path) -> FilesStamp {
    let stamp = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.modified().ok(), m.len()))
            .unwrap_or((None, 0))
    };
    [stamp(cert), stamp(key)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed_source(rotate: Duration) -> ClientCertSource {
        ClientCertSource::SelfSigned {
            validity: Duration::from_secs(13 * 24 * 3600),
            rotate,
            names: vec!["localhost".into(), "127.0.0.1".into()],
        }
    }

    #[test]
    fn self_signed_certificates_rotate_through_the_published_next() {
        let certs = ClientCerts::new(self_signed_source(Duration::from_secs(3600))).unwrap();
        let before = certs.hashes().borrow().clone();
        assert_eq!(before.len(), 2);
        assert_eq!(before[0], certs.current_hash());
        let now_used = certs.rotate().unwrap();
        assert_eq!(
            now_used, before[1],
            "the published next is what comes in use"
        );
        let after = certs.hashes().borrow().clone();
        assert_eq!(after[0], before[1]);
        assert!(!before.contains(&after[1]));
    }

    #[test]
    fn self_signed_certificates_are_ecdsa() {
        let certs = ClientCerts::new(self_signed_source(Duration::from_secs(3600))).unwrap();
        let key = certs.current_key();
        assert_eq!(key.key.algorithm(), rustls::SignatureAlgorithm::ECDSA);
    }

    #[test]
    fn validity_and_rotation_are_checked() {
        let bad = |validity: u64, rotate: u64| {
            ClientCerts::new(ClientCertSource::SelfSigned {
                validity: Duration::from_secs(validity),
                rotate: Duration::from_secs(rotate),
                names: vec!["localhost".into()],
            })
            .is_err()
        };
        assert!(bad(15 * 24 * 3600, 3600), "longer than 14 days");
        assert!(bad(3600, 3600), "rotation longer than half the validity");
        assert!(bad(3600, 0));
        assert!(!bad(3600, 1000));
    }

    #[test]
    fn files_reload_when_they_change_and_a_broken_pair_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let write = |names: &[&str]| {
            let k = rcgen::KeyPair::generate().unwrap();
            let c = rcgen::CertificateParams::new(
                names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            )
            .unwrap()
            .self_signed(&k)
            .unwrap();
            std::fs::write(&cert, c.pem()).unwrap();
            std::fs::write(&key, k.serialize_pem()).unwrap();
            CertHash::of(c.der())
        };
        let first = write(&["a.example"]);
        let certs = ClientCerts::new(ClientCertSource::Files {
            cert: cert.clone(),
            key: key.clone(),
            check_every: Duration::from_secs(1),
        })
        .unwrap();
        assert_eq!(certs.current_hash(), first);
        assert!(certs.hashes().borrow().is_empty(), "files: nothing to pin");
        assert_eq!(certs.reload_if_changed().unwrap(), None);
        let second = write(&["a.example", "b.example-longer-name"]);
        assert_eq!(certs.reload_if_changed().unwrap(), Some(second));
        assert_eq!(certs.current_hash(), second);
        std::fs::write(&key, "not a key at all, and longer than before").unwrap();
        assert!(certs.reload_if_changed().is_err());
        assert_eq!(
            certs.current_hash(),
            second,
            "a broken pair changes nothing"
        );
        assert_eq!(certs.reload_if_changed().unwrap(), None, "reported once");
    }
}
