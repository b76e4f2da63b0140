//! The control store on a real etcd cluster (etcd-client crate).
//!
//! What the crate leaves to us, handled here:
//! - reconnecting: every failed call drops the connection and the next call
//!   dials again (after an etcd restart, calls fail until it is back, then
//!   work without a restart of ours);
//! - several members: calls and watches go to one member at a time and move
//!   on to the next endpoint after a failure (see [`Target::connect`]), so a
//!   dead member costs a call, not a share of every call; a hung member
//!   (connections open, no answer) costs one short timeout: calls that may
//!   be repeated go on to the next member at once, and watches follow the
//!   calls away from a failing member (see [`EtcdStore::call`]);
//! - watches: a broken or silent watch is re-created from the last seen
//!   revision + 1, so no event is missed or repeated; silence is detected by
//!   asking for progress notifications and timing out when none come;
//! - leases: callers refresh at TTL/3 (see `election.rs`); a refresh that
//!   finds the lease gone reports `LeaseNotFound`;
//! - TLS ([`EtcdTls`]): the members' certificates are verified against the
//!   etcd CA and a client certificate is presented (the cluster requires
//!   one). The material is parsed and checked when the store is built, so a
//!   bad file fails at start, not at every redial; TLS failures while dialing
//!   are reported with their cause (unknown issuer, certificate required...).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn};

use super::{
    ControlStore, Expect, KeyValue, LeaseId, Result, Revision, StoreError, WatchEvent, WatchStream,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A call on one key or one lease: a healthy member answers in milliseconds
/// (a write waits for a raft round, one WAN round trip at most). A member
/// that hangs (stalled disk, frozen VM: connections open, no answer) must
/// cost a lease holder less than its refresh period plus one retry: leases
/// are refreshed at TTL/3 and the shortest TTL is the controllers' 2 s, so
/// 1 s here keeps an edge's 3 s lease and a leader's 2 s lease alive through
/// it (found by edge-node/tests/etcd_cluster.rs: with 5 s every lease kept
/// through a hung follower expired).
const POINT_CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// A prefix read can carry thousands of records (a mirror's first load):
/// it may take this long, as long as its member keeps answering pings (see
/// [`unresponsive`]).
const LIST_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A watch that has said nothing for this long is asked for progress; one
/// that stays silent for twice as long is re-created. A watch on a member
/// that failed a call moves sooner (see [`run_watch`]).
const WATCH_SILENCE: Duration = Duration::from_secs(5);
/// How often a watch checks whether its member failed one of the store's
/// calls meanwhile.
const WATCH_MEMBER_CHECK: Duration = Duration::from_millis(250);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

pub struct EtcdStore {
    target: Target,
    /// The connection and the index of the member it goes to.
    client: Mutex<Option<(Client, usize)>>,
}

/// TLS settings of the etcd client: the CA that signed the members'
/// certificates, the client certificate and key presented to them (etcd
/// with `client-cert-auth` refuses clients without one), and optionally the
/// name the members' certificates are verified against (default: each
/// endpoint's host, an IP address SAN for IP endpoints).
#[derive(Clone)]
pub struct EtcdTls {
    ca_pem: Vec<u8>,
    /// (certificate chain PEM, private key PEM)
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("EtcdTls")
            .field("client_cert", &self.identity.is_some())
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn invalid(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Invalid(format!("{what}: {e}"))
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl EtcdTls {
    /// Verify the members against the CA certificate(s) in `ca_pem`.
    pub fn new(ca_pem: impl Into<Vec<u8>>) -> Result<Self> {
        let ca_pem = ca_pem.into();
        roots(&ca_pem)?;
        Ok(EtcdTls {
            ca_pem,
            identity: None,
            server_name: None,
        })
    }

    /// Present this certificate (chain) and key to the members. Checked:
    /// both parse and the key is the certificate's.
    pub fn with_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Result<Self> {
        let (cert_pem, key_pem) = (cert_pem.into(), key_pem.into());
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| invalid("etcd client certificate", e))?;
        if chain.is_empty() {
            return Err(invalid(
                "etcd client certificate",
                "no PEM CERTIFICATE block",
            ));
        }
        let key =
            PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid("etcd client key", e))?;
        rustls::ClientConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("etcd client TLS", e))?
            .with_root_certificates(roots(&self.ca_pem)?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| invalid("etcd client certificate and key", e))?;
        self.identity = Some((cert_pem, key_pem));
        Ok(self)
    }

    /// Verify the members' certificates against `name` instead of each
    /// endpoint's host (for certificates that name the cluster, e.g.
    /// `etcd.internal`, reached at IP addresses).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        ServerName::try_from(name.as_str()).map_err(|e| invalid("etcd server name", e))?;
        self.server_name = Some(name);
        Ok(self)
    }

    /// Read the CA and, when given, the client certificate and key.
    pub fn from_files(ca: &Path, client: Option<(&Path, &Path)>) -> Result<Self> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| invalid(&format!("{what} {}", p.display()), e))
        };
        // Name the files in the errors about their contents.
        let within = |files: String, e: StoreError| match e {
            StoreError::Invalid(m) => StoreError::Invalid(format!("{m} ({files})")),
            other => other,
        };
        let tls =
            EtcdTls::new(read("etcd CA", ca)?).map_err(|e| within(ca.display().to_string(), e))?;
        match client {
            Some((cert, key)) => tls
                .with_client_cert(
                    read("etcd client certificate", cert)?,
                    read("etcd client key", key)?,
                )
                .map_err(|e| within(format!("{}, {}", cert.display(), key.display()), e)),
            None => Ok(tls),
        }
    }

    /// The TLS settings of a config's `etcd_ca`, `etcd_cert`, `etcd_key` and
    /// `etcd_server_name`: None without a CA (plain http). The config's
    /// validation already checked that the files exist and that certificate
    /// and key come together; this reads and checks their contents.
    pub fn from_paths(
        ca: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        server_name: Option<&str>,
    ) -> Result<Option<Self>> {
        let Some(ca) = ca else {
            if cert.is_some() || key.is_some() || server_name.is_some() {
                return Err(StoreError::Invalid(
                    "an etcd client certificate, key or server name needs the etcd CA".into(),
                ));
            }
            return Ok(None);
        };
        let client = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(StoreError::Invalid(
                    "the etcd client certificate and key go together".into(),
                ))
            }
        };
        let tls = Self::from_files(ca, client)?;
        match server_name {
            Some(n) => tls.with_server_name(n).map(Some),
            None => Ok(Some(tls)),
        }
    }

    pub fn has_client_cert(&self) -> bool {
        self.identity.is_some()
    }

    fn options(&self) -> TlsOptions {
        let mut o = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            o = o.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            o = o.domain_name(name.clone());
        }
        o
    }
}

fn roots(ca_pem: &[u8]) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        let cert = cert.map_err(|e| invalid("etcd CA", e))?;
        roots.add(cert).map_err(|e| invalid("etcd CA", e))?;
    }
    if roots.is_empty() {
        return Err(invalid("etcd CA", "no PEM CERTIFICATE block"));
    }
    Ok(roots)
}

/// Where and how to dial: endpoints and TLS, checked against each other.
#[derive(Clone)]
struct Target {
    endpoints: Vec<String>,
    tls: Option<TlsOptions>,
    /// None without TLS, else whether a client certificate is presented.
    client_cert: Option<bool>,
    /// The member dialed next (index into `endpoints`), shared by a store's
    /// calls and its watches so that what one learns the others use.
    current: Arc<AtomicUsize>,
}

impl Target {
    fn new(endpoints: Vec<String>, tls: Option<&EtcdTls>) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(StoreError::Invalid("no etcd endpoints".into()));
        }
        for e in &endpoints {
            let https = e.starts_with("https://");
            if https && tls.is_none() {
                return Err(StoreError::Invalid(format!(
                    "etcd endpoint {e} is https:// but no TLS settings were given (the etcd CA, and a client certificate and key)"
                )));
            }
            if !https && tls.is_some() {
                return Err(StoreError::Invalid(format!(
                    "etcd endpoint {e} is not https:// but TLS settings were given: use https:// endpoints, or no TLS settings for plain http"
                )));
            }
        }
        Ok(Target {
            endpoints,
            tls: tls.map(EtcdTls::options),
            client_cert: tls.map(EtcdTls::has_client_cert),
            current: Arc::default(),
        })
    }

    /// Dial one member: the current one; returns its index for
    /// [`Target::failed`].
    ///
    /// Not etcd-client's balanced channel over every endpoint: tonic's
    /// balancer counts an endpoint that refuses connections as ready and
    /// fails the calls it sends there, so with one member of three dead
    /// about half of all calls failed, and edges, whose lease keepalives run
    /// at TTL/3, lost their leases within seconds (found by
    /// edge-node/tests/etcd_cluster.rs). One member at a time, moving on
    /// after a failure, is what etcd's own Go client did up to v3.3 (a
    /// pinned endpoint with failover).
    async fn connect(&self) -> Result<(Client, usize)> {
        let i = self.current.load(Ordering::Relaxed) % self.endpoints.len();
        let opts = self.tls.clone().map(|t| ConnectOptions::new().with_tls(t));
        let endpoint = [self.endpoints[i].as_str()];
        match tokio::time::timeout(CONNECT_TIMEOUT, Client::connect(endpoint, opts)).await {
            Ok(Ok(c)) => Ok((c, i)),
            Ok(Err(e)) => {
                self.failed(i);
                Err(unavailable(self, e))
            }
            Err(_) => {
                self.failed(i);
                Err(StoreError::Unavailable("connect timed out".into()))
            }
        }
    }

    /// Returns once the target has moved on from member `i` (a call or a
    /// watch found it failing).
    async fn moved_from(&self, i: usize) {
        while self.current.load(Ordering::Relaxed) % self.endpoints.len() == i {
            tokio::time::sleep(WATCH_MEMBER_CHECK).await;
        }
    }

    /// Member `i` failed a call: the next dial goes to the next endpoint
    /// (unless another caller has moved on already).
    fn failed(&self, i: usize) {
        let next = (i + 1) % self.endpoints.len();
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

fn to_kv(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: (kv.lease() != 0).then_some(kv.lease()),
    }
}

/// An etcd-client error as an operator can act on it: the innermost causes
/// (a refused connection, an alert from etcd, a certificate that does not
/// verify) rather than the gRPC wrapping, with a hint for TLS failures.
fn unavailable(target: &Target, e: etcd_client::Error) -> StoreError {
    use etcd_client::Error as E;
    use std::error::Error as _;
    let (mut msg, mut source) = match &e {
        E::GRpcStatus(s) => (s.message().to_string(), s.source()),
        E::TransportError(t) => (t.to_string(), t.source()),
        other => (other.to_string(), None),
    };
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    if let Some(hint) = tls_hint(&msg, target.client_cert) {
        msg.push_str(" (");
        msg.push_str(hint);
        msg.push(')');
    }
    StoreError::Unavailable(msg)
}

/// `client_cert`: None without TLS, else whether a certificate is presented.
fn tls_hint(msg: &str, client_cert: Option<bool>) -> Option<&'static str> {
    // With TLS 1.3 etcd checks the client's certificate after the client
    // finished its handshake: the refusal shows as an alert or, as often,
    // as a connection closed under the first request.
    let closed = [
        "received fatal alert",
        "connection closed",
        "broken pipe",
        "connection reset",
    ]
    .iter()
    .any(|m| msg.to_lowercase().contains(m));
    if msg.contains("invalid peer certificate") {
        Some("etcd's certificate does not verify against the configured etcd CA, or is not valid for the endpoint's name")
    } else if msg.contains("tls handshake eof") || msg.contains("InvalidContentType") {
        Some("the endpoint does not speak TLS: is it etcd's TLS client port?")
    } else if closed && client_cert == Some(false) {
        Some("no client certificate is configured: etcd with client-cert-auth ends such sessions; set the etcd client certificate and key")
    } else if closed && client_cert == Some(true) {
        Some("if this persists: etcd ends the sessions of client certificates that its CA did not sign or that expired, and a port without TLS does too")
    } else if closed && client_cert.is_none() {
        Some("if the endpoint serves TLS, use https:// with the etcd CA and a client certificate")
    } else {
        None
    }
}

impl EtcdStore {
    /// Connect to `endpoints` over plain http (e.g. `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: Vec<String>) -> Result<Self> {
        Self::connect_with(endpoints, None).await
    }

    /// Connect to `endpoints`: `https://` ones with `tls` (required for
    /// them, refused for `http://` ones). The first call is made here, so
    /// a refused certificate fails now.
    pub async fn connect_with(endpoints: Vec<String>, tls: Option<&EtcdTls>) -> Result<Self> {
        let store = Self::lazy_with(endpoints, tls)?;
        // Dialing is lazy inside etcd-client: a status call proves the
        // connection (and the TLS handshake both ways).
        store
            .call(CallKind::Point, |mut c| async move { c.status().await })
            .await?;
        Ok(store)
    }

    /// A plain http store that dials on first use, so a process can start
    /// (and serve on its last known state) while etcd is down.
    pub fn lazy(endpoints: Vec<String>) -> Result<Self> {
        Self::lazy_with(endpoints, None)
    }

    /// [`EtcdStore::lazy`] with TLS for `https://` endpoints (see
    /// [`EtcdStore::connect_with`]). Endpoints and TLS material are checked
    /// here; nothing is dialed.
    pub fn lazy_with(endpoints: Vec<String>, tls: Option<&EtcdTls>) -> Result<Self> {
        Ok(EtcdStore {
            target: Target::new(endpoints, tls)?,
            client: Mutex::new(None),
        })
    }

    async fn client(&self) -> Result<(Client, usize)> {
        let mut guard = self.client.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let c = self.target.connect().await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Forget the connection to member `i` (if it is still the current one)
    /// and move on to the next member.
    async fn drop_client(&self, i: usize) {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_some_and(|(_, at)| *at == i) {
            *guard = None;
        }
        self.target.failed(i);
    }

    /// Run one call; on failure forget the connection so the next call
    /// redials, on the next member. A call that may go to the next member
    /// does so at once, each member tried once: one the connection to which
    /// was refused (it never saw the request, so even a compare-and-swap may
    /// go on), and a [`CallKind::repeatable`] one after any failure of the
    /// member (a timeout, a broken connection). So a dead or hung member
    /// costs a caller one timeout at most, not the call.
    async fn call<T, F, Fut>(&self, kind: CallKind, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let mut tries = self.target.endpoints.len();
        loop {
            tries -= 1;
            let (client, i) = match self.client().await {
                Ok(c) => c,
                // Not dialed: nothing was sent (the target moved on).
                Err(e) if tries > 0 => {
                    debug!(error = %e, "etcd member unreachable; trying the next");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let timeout = kind.timeout();
            let attempt = tokio::time::timeout(timeout, f(client.clone()));
            let answer = match kind {
                // A long read is given up early only if the member stops
                // answering altogether.
                CallKind::List => tokio::select! {
                    r = attempt => r.ok(),
                    _ = unresponsive(client) => None,
                },
                CallKind::Point | CallKind::Once => attempt.await.ok(),
            };
            let e = match answer {
                Some(Ok(t)) => return Ok(t),
                // An answer ("lease not found", a failed precondition): the
                // member is fine and another would say the same.
                Some(Err(e)) if !is_connection_error(&e) => {
                    return Err(unavailable(&self.target, e))
                }
                Some(Err(e)) => {
                    self.drop_client(i).await;
                    unavailable(&self.target, e)
                }
                None => {
                    self.drop_client(i).await;
                    StoreError::Unavailable(format!(
                        "etcd member {} did not answer in time",
                        self.target.endpoints[i]
                    ))
                }
            };
            if tries > 0 && (kind.repeatable() || never_sent(&e)) {
                debug!(endpoint = %self.target.endpoints[i], error = %e, "etcd member failed a call; trying the next");
                continue;
            }
            return Err(e);
        }
    }
}

/// Returns once the member behind `client` leaves a status request (served
/// by the member itself, even while raft elects a leader) unanswered for
/// [`POINT_CALL_TIMEOUT`]: asked after each second of a long call.
async fn unresponsive(mut client: Client) {
    loop {
        tokio::time::sleep(POINT_CALL_TIMEOUT).await;
        match tokio::time::timeout(POINT_CALL_TIMEOUT, client.status()).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
    }
}

/// What a call is, for its timeout and whether it may be sent again.
#[derive(Clone, Copy, Debug, PartialEq)]
enum CallKind {
    /// One key or one lease, the same effect if applied twice: a get, put,
    /// delete, lease keepalive or revoke (a second revoke or delete finds
    /// nothing), or a lease grant (a second lease granted goes unused and
    /// expires after its TTL).
    Point,
    /// A read of a whole prefix.
    List,
    /// A compare-and-swap: a reply lost after it was sent does not tell
    /// whether it was applied, and sending it again would fail the compare
    /// against its own write.
    Once,
}

impl CallKind {
    fn timeout(self) -> Duration {
        match self {
            CallKind::List => LIST_CALL_TIMEOUT,
            CallKind::Point | CallKind::Once => POINT_CALL_TIMEOUT,
        }
    }

    fn repeatable(self) -> bool {
        self != CallKind::Once
    }
}

/// Errors after which the connection is re-dialed (not answers like "lease
/// not found", which the same connection serves fine).
fn is_connection_error(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    match e {
        // Matched by name: etcd-client does not re-export tonic's Code, and
        // depending on tonic directly would pin its version twice.
        E::GRpcStatus(s) => !matches!(
            format!("{:?}", s.code()).as_str(),
            "NotFound" | "InvalidArgument" | "FailedPrecondition" | "OutOfRange"
        ),
        _ => true,
    }
}

/// The connection was refused: the request was never sent.
fn never_sent(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains("tcp connect error"))
}

fn lease_gone(e: &StoreError) -> bool {
    matches!(e, StoreError::Unavailable(m) if m.contains("lease not found"))
}

#[async_trait]
impl ControlStore for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_string();
        let resp = self
            .call(CallKind::Point, |mut c| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await?;
        Ok(resp.kvs().first().map(to_kv))
    }

    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision)> {
        let prefix = prefix.to_string();
        let resp = self
            .call(CallKind::List, |mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.kvs().iter().map(to_kv).collect(), rev))
    }

    async fn put(&self, key: &str, value: Bytes, lease: Option<LeaseId>) -> Result<Revision> {
        let key = key.to_string();
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let resp = self
            .call(CallKind::Point, |mut c| {
                let (key, value, opts) = (key.clone(), value.to_vec(), opts.clone());
                async move { c.put(key, value, opts).await }
            })
            .await
            .map_err(|e| match lease {
                Some(l) if lease_gone(&e) => StoreError::LeaseNotFound(l),
                _ => e,
            })?;
        Ok(resp.header().map(|h| h.revision()).unwrap_or(0))
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let key = key.to_string();
        let resp = self
            .call(CallKind::Point, |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        Ok(resp.deleted() > 0)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expect: Expect,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<std::result::Result<Revision, Option<KeyValue>>> {
        let cmp = match expect {
            // A key that does not exist has create_revision 0.
            Expect::Absent => Compare::create_revision(key, CompareOp::Equal, 0),
            Expect::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, r),
        };
        let txn = Txn::new()
            .when([cmp])
            .and_then([TxnOp::put(
                key,
                value.to_vec(),
                lease.map(|l| PutOptions::new().with_lease(l)),
            )])
            .or_else([TxnOp::get(key, None)]);
        let resp = self
            .call(CallKind::Once, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        if resp.succeeded() {
            return Ok(Ok(resp.header().map(|h| h.revision()).unwrap_or(0)));
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(to_kv)),
            _ => None,
        });
        Ok(Err(current.flatten()))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let secs = ttl.as_secs_f64().ceil() as i64;
        if secs <= 0 {
            return Err(StoreError::Invalid("lease TTL must be positive".into()));
        }
        let resp = self
            .call(CallKind::Point, |mut c| async move {
                c.lease_grant(secs, None).await
            })
            .await?;
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<()> {
        let ttl = match self
            .call(CallKind::Point, |mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map(|r| r.ttl()).unwrap_or(0))
            })
            .await
        {
            Err(e) if lease_gone(&e) => return Err(StoreError::LeaseNotFound(lease)),
            other => other?,
        };
        if ttl <= 0 {
            return Err(StoreError::LeaseNotFound(lease));
        }
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.call(CallKind::Point, |mut c| async move {
            c.lease_revoke(lease).await
        })
        .await
        .map_err(|e| {
            if lease_gone(&e) {
                StoreError::LeaseNotFound(lease)
            } else {
                e
            }
        })?;
        Ok(())
    }

    async fn watch_prefix(&self, prefix: &str, from: Revision) -> Result<WatchStream> {
        let (tx, rx) = mpsc::channel(1_024);
        let start = if from > 0 {
            from
        } else {
            // "Only new changes": start right after the current revision.
            self.get_prefix(prefix).await?.1 + 1
        };
        // Fail fast if etcd is unreachable now; later breaks are healed.
        self.client().await?;
        tokio::spawn(run_watch(
            self.target.clone(),
            prefix.to_string(),
            start,
            tx,
        ));
        Ok(rx)
    }
}

/// Keep one prefix watch alive across etcd restarts, resuming from the next
/// revision each time, until the receiver is dropped.
async fn run_watch(
    target: Target,
    prefix: String,
    mut next: Revision,
    tx: mpsc::Sender<Result<Vec<WatchEvent>>>,
) {
    let mut backoff = RETRY_MIN;
    loop {
        if tx.is_closed() {
            return;
        }
        let mut member = None;
        let opened = async {
            let (mut client, i) = target.connect().await?;
            member = Some(i);
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(next)
                .with_progress_notify();
            // Opening is one round trip; a hung member never answers it.
            match tokio::time::timeout(POINT_CALL_TIMEOUT, client.watch(prefix.clone(), Some(opts)))
                .await
            {
                Ok(r) => r.map_err(|e| unavailable(&target, e)),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "etcd member {} did not open the watch within {POINT_CALL_TIMEOUT:?}",
                    target.endpoints[i]
                ))),
            }
        };
        let opened = opened.await;
        // The member this watch is on; it moves on after any failure.
        let failed = |member: Option<usize>| {
            if let Some(i) = member {
                target.failed(i);
            }
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => {
                failed(member);
                debug!(%prefix, error = %e, "watch: etcd unreachable, retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
        };
        backoff = RETRY_MIN;
        let mut asked_progress = false;
        let on = member.expect("an open watch has its member");
        loop {
            let msg = tokio::select! {
                m = tokio::time::timeout(WATCH_SILENCE, stream.message()) => m,
                _ = tx.closed() => return,
                // The store's calls found this member failing (a hung one
                // says nothing, so the watch alone would wait out its
                // silence): follow them to the next.
                _ = target.moved_from(on) => {
                    debug!(%prefix, endpoint = %target.endpoints[on], "watch: its member failed a call; moving");
                    break;
                }
            };
            match msg {
                Err(_) if !asked_progress => {
                    // Silent: a healthy watch answers a progress request.
                    asked_progress = stream.request_progress().await.is_ok();
                    if !asked_progress {
                        break;
                    }
                }
                Err(_) => {
                    warn!(%prefix, "watch silent after a progress request; re-creating");
                    break;
                }
                Ok(Ok(Some(resp))) => {
                    asked_progress = false;
                    if resp.compact_revision() > 0 && resp.compact_revision() >= next {
                        let _ = tx
                            .send(Err(StoreError::Compacted {
                                requested: next,
                                oldest: resp.compact_revision(),
                            }))
                            .await;
                        return;
                    }
                    if resp.canceled() {
                        break;
                    }
                    let events: Vec<WatchEvent> = resp
                        .events()
                        .iter()
                        .filter_map(|e| {
                            let kv = e.kv()?;
                            Some(match e.event_type() {
                                EventType::Put => WatchEvent::Put(to_kv(kv)),
                                EventType::Delete => WatchEvent::Delete {
                                    key: String::from_utf8_lossy(kv.key()).into_owned(),
                                    mod_revision: kv.mod_revision(),
                                },
                            })
                        })
                        .filter(|e| e.revision() >= next)
                        .collect();
                    if let Some(last) = events.last() {
                        next = last.revision() + 1;
                        if tx.send(Ok(events)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Ok(None)) | Ok(Err(_)) => break,
            }
        }
        failed(member);
        tokio::time::sleep(RETRY_MIN).await;
    }
}
