//! Edge configuration: a TOML file whose every key of the sections `[edge]`,
//! `[tls]`, `[client_tls]`, `[limits]`, `[admission]`, `[repair]` and `[control]` is also a flag
//! `--<section>-<field>` and an environment variable `RTN_<SECTION>_<FIELD>`
//! that override it (`control::flags`; the older short flags, such as
//! `--max-sessions`, are aliases), validated at start with errors that name
//! the field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use control::flags::{redact_each, Flagged, Section};
use control::section;
use control::settings::{refuse_unknown, StoreSettings, UnknownKeys};
use protocol::{EdgeAddress, EdgeId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    pub edge: EdgeSection,
    #[serde(default)]
    pub tls: TlsSection,
    /// The certificate clients and browsers verify (the `[tls]` material
    /// is the mesh's, for relay links only).
    #[serde(default)]
    pub client_tls: ClientTlsSection,
    #[serde(default)]
    pub apps: Vec<AppSection>,
    #[serde(default)]
    pub limits: LimitsSection,
    /// Who may connect and how fast: rate limits and QUIC address
    /// validation against floods (see [`crate::admission`]).
    #[serde(default)]
    pub admission: AdmissionSection,
    /// Media loss repair on every hop (NACK and retransmission).
    #[serde(default)]
    pub repair: RepairSection,
    /// Other edges this edge may forward to (until the control plane feeds
    /// them, or in addition to it).
    #[serde(default)]
    pub peers: Vec<PeerSection>,
    /// Static overlay paths; a peer without one is reached directly.
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    /// The control plane: registration, probes and routes through etcd.
    #[serde(default)]
    pub control: ControlSection,
    /// WAN emulation on this edge's socket: lab code, taken only by an
    /// edge-node built with the `netem` feature (the terraform local
    /// example emulates a WAN between edges on one host); refused otherwise.
    /// Absent: the socket is used as it is.
    #[serde(default)]
    #[cfg_attr(not(feature = "netem"), serde(skip_serializing))]
    pub netem: Option<NetemSection>,
}

/// Every key of these sections is a flag and a variable; the lists of
/// tables are file-only (and app secrets are never flags).
impl Flagged for EdgeConfig {
    fn sections() -> Vec<Section<Self>> {
        vec![
            section!(EdgeConfig, edge),
            section!(EdgeConfig, tls),
            section!(EdgeConfig, client_tls),
            section!(EdgeConfig, limits),
            section!(EdgeConfig, admission),
            section!(EdgeConfig, repair),
            section!(EdgeConfig, control),
        ]
    }

    const FILE_ONLY: &'static [&'static str] = &["apps", "peers", "routes", "netem"];

    fn env(section: &str, field: &str) -> String {
        match (section, field) {
            // Named so before every key had a variable; deployments set it.
            ("control", "etcd_endpoints") => "RTN_CONTROL_ETCD".into(),
            _ => format!("RTN_{section}_{field}").to_uppercase(),
        }
    }
}

/// `[netem]`: one-way link rules applied to what this edge sends; read and
/// replaced at run time through `GET`/`PUT /netem` on the admin port (with
/// the admin token).
#[cfg(feature = "netem")]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetemSection {
    #[serde(default)]
    pub links: Vec<netem::LinkRule>,
}

/// Without the `netem` feature a `[netem]` section is read only to be
/// refused with a clear error (see `EdgeConfig::validate`).
#[cfg(not(feature = "netem"))]
pub type NetemSection = serde::de::IgnoredAny;

/// `[control]`: the control store ([`StoreSettings`]: etcd endpoints and
/// TLS, key prefix) and how this edge takes part in the control plane.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct ControlSection {
    /// Where the store is. No etcd endpoints: no control plane (static
    /// peers and routes).
    #[serde(flatten)]
    #[command(flatten)]
    pub store: StoreSettings,
    /// TTL of the edge's lease: a killed edge leaves the registry after
    /// this. 3 s: etcd's floor is about 2 s, and directory homes and
    /// nearest-edge answers move on within a few seconds (traffic itself
    /// reroutes sooner, on the edges' own probes).
    #[serde(default = "default_lease_ttl_ms")]
    #[arg(visible_alias = "lease-ttl-ms")]
    pub lease_ttl_ms: u64,
    /// Best-measured edges of each other region this edge keeps probing
    /// once the mesh is larger than `probe_full_mesh_max_edges` (plus one
    /// explored at random; see `topology::targets` for the budget): keeps
    /// the probe degree independent of the mesh size.
    #[serde(default = "default_probes_per_region")]
    #[arg(visible_alias = "probes-per-other-region")]
    pub probes_per_other_region: usize,
    /// Meshes of at most this many edges are probed in full (every edge
    /// probes every other). 64: 63 targets at the slow probe rate (one
    /// every 2 s) cost about 2.2 KB/s each way.
    #[serde(default = "default_probe_full_mesh_max_edges")]
    #[arg(visible_alias = "probe-full-mesh-max-edges")]
    pub probe_full_mesh_max_edges: usize,
    /// Keys no field took, refused by `validate` (see [`UnknownKeys`]).
    #[serde(flatten, skip_serializing)]
    #[arg(skip)]
    pub unknown: UnknownKeys,
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection {
            store: StoreSettings::default(),
            lease_ttl_ms: default_lease_ttl_ms(),
            probes_per_other_region: default_probes_per_region(),
            probe_full_mesh_max_edges: default_probe_full_mesh_max_edges(),
            unknown: UnknownKeys::new(),
        }
    }
}

fn default_lease_ttl_ms() -> u64 {
    3_000
}
fn default_probes_per_region() -> usize {
    3
}
fn default_probe_full_mesh_max_edges() -> usize {
    topology::ProbePolicy::default().full_mesh_max_edges
}

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct EdgeSection {
    /// This edge's id: a positive integer, unique in the mesh.
    #[arg(visible_alias = "id")]
    pub id: EdgeId,
    /// Region this edge belongs to (its region controller's).
    #[serde(default = "default_region")]
    #[arg(visible_alias = "region")]
    pub region: String,
    /// City code or name from the lab's table (e.g. "FRA"); gives the
    /// edge's location unless `lat`/`lon` are set.
    #[serde(default)]
    #[arg(visible_alias = "city")]
    pub city: String,
    /// Latitude in degrees, with `lon` (instead of `city`).
    #[serde(default)]
    #[arg(visible_alias = "lat")]
    pub lat: Option<f64>,
    /// Longitude in degrees, with `lat`.
    #[serde(default)]
    #[arg(visible_alias = "lon")]
    pub lon: Option<f64>,
    /// UDP address of the QUIC endpoint (clients and relay links share it).
    #[serde(default = "default_listen")]
    #[arg(visible_alias = "listen")]
    pub listen: SocketAddr,
    /// Address clients and peers should use, when `listen` is a wildcard.
    #[serde(default)]
    #[arg(visible_alias = "public-addr")]
    pub public_addr: Option<SocketAddr>,
    /// TCP address of the admin HTTP server (/metrics, /healthz, /readyz).
    #[serde(default = "default_admin")]
    #[arg(visible_alias = "admin-listen")]
    pub admin_listen: SocketAddr,
    /// Environment variable holding the bearer token of the admin port's
    /// operator endpoints (`/netem`). Unset: they are refused (403).
    #[serde(default)]
    pub admin_token_env: Option<String>,
    /// TLS server name this edge's certificate is valid for.
    #[serde(default = "default_server_name")]
    #[arg(visible_alias = "server-name")]
    pub server_name: String,
    /// Requested UDP socket buffer size, bytes (the kernel may grant less;
    /// the granted size is logged).
    #[serde(default = "default_udp_buffer")]
    #[arg(visible_alias = "udp-buffer-bytes")]
    pub udp_buffer_bytes: usize,
    /// QUIC endpoints serving `listen`, each on its own UDP socket
    /// (SO_REUSEPORT: the kernel spreads clients over them by address, and
    /// each endpoint's receive path runs on its own task, so on another
    /// core). 1: one socket, no SO_REUSEPORT. Above 1, relay links are
    /// dialed from a socket of their own (an ephemeral port), since a reply
    /// to a dial could land on any socket of the group. A client whose
    /// address changes mid-connection (NAT rebinding) lands on another
    /// endpoint, which resets it: the SDKs reconnect and resume.
    #[serde(default = "default_endpoints")]
    pub endpoints: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain of this edge (server and relay-client auth).
    pub cert: Option<PathBuf>,
    /// PEM private key of this edge.
    pub key: Option<PathBuf>,
    /// PEM certificate of the mesh CA that signs every edge's certificate.
    pub mesh_ca: Option<PathBuf>,
    /// Development only: generate a throwaway CA and certificate at start.
    /// Relay links then only work between edges of one process.
    #[serde(default)]
    pub dev_self_signed: bool,
}

/// `[client_tls]`: the certificate an edge shows clients (SDKs and
/// browsers). See `control::certs`, `edge_node::tls` and docs/security.md.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ClientTlsSection {
    /// `self_signed` (development, the lab: a short-lived ECDSA certificate
    /// the edge rotates itself and whose digests it publishes for
    /// browsers' `serverCertificateHashes`) or `files` (production: `cert`
    /// and `key` from any CA, e.g. ACME, reloaded when they change).
    #[serde(default)]
    #[arg(value_enum)]
    pub mode: ClientTlsMode,
    /// PEM certificate chain for the edge's name (`files` mode).
    #[serde(default)]
    #[arg(id = "client_tls_cert")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (`files` mode).
    #[serde(default)]
    #[arg(id = "client_tls_key")]
    pub key: Option<PathBuf>,
    /// How often the files are checked for a change, ms.
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
    /// Validity of each self-signed certificate, seconds (at most 14 days:
    /// browsers refuse longer-lived pinned certificates).
    #[serde(default = "default_self_signed_validity_s")]
    pub self_signed_validity_s: u64,
    /// How often a self-signed certificate is replaced, seconds (at most
    /// half the validity less a minute).
    #[serde(default = "default_self_signed_rotate_s")]
    pub self_signed_rotate_s: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClientTlsMode {
    #[default]
    SelfSigned,
    Files,
}

impl Default for ClientTlsSection {
    fn default() -> Self {
        ClientTlsSection {
            mode: ClientTlsMode::default(),
            cert: None,
            key: None,
            reload_check_ms: default_reload_check_ms(),
            self_signed_validity_s: default_self_signed_validity_s(),
            self_signed_rotate_s: default_self_signed_rotate_s(),
        }
    }
}

fn default_reload_check_ms() -> u64 {
    2_000
}
/// 13 days: under Chromium's 14-day limit with room for clock skew.
fn default_self_signed_validity_s() -> u64 {
    13 * 24 * 3600
}
/// 4 days: each certificate is published 4 days before use, used 4 days,
/// and still valid 5 more.
fn default_self_signed_rotate_s() -> u64 {
    4 * 24 * 3600
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSection {
    pub id: String,
    /// Current secrets (several during a rotation). Prefer `secrets_env`.
    /// Never serialized (`check-config` prints them redacted).
    #[serde(default, serialize_with = "redact_each")]
    pub secrets: Vec<String>,
    /// Name of an environment variable holding comma-separated secrets.
    #[serde(default)]
    pub secrets_env: Option<String>,
}

impl std::fmt::Debug for AppSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppSection")
            .field("id", &self.id)
            .field(
                "secrets",
                &format_args!("[{} redacted]", self.secrets.len()),
            )
            .field("secrets_env", &self.secrets_env)
            .finish()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Client sessions this edge holds at once.
    #[arg(visible_alias = "max-sessions")]
    pub max_sessions: usize,
    /// A connection that has not joined a channel by then is closed.
    #[arg(visible_alias = "join-timeout-ms")]
    pub join_timeout_ms: u64,
    /// Media packets queued per subscriber before the oldest are dropped.
    #[arg(visible_alias = "subscriber-queue")]
    pub subscriber_queue: usize,
    /// Control frames queued per client before it is disconnected as too slow.
    #[arg(visible_alias = "client-frame-queue")]
    pub client_frame_queue: usize,
    /// Idle timeout of client connections (clients send keepalives).
    #[arg(visible_alias = "client-idle-timeout-ms")]
    pub client_idle_timeout_ms: u64,
    /// How long SIGTERM waits for clients to move after the goaway.
    #[arg(visible_alias = "drain-timeout-ms")]
    pub drain_timeout_ms: u64,
    /// Clients are told to reconnect after this, plus a random spread of the same.
    #[arg(visible_alias = "goaway-reconnect-ms")]
    pub goaway_reconnect_ms: u32,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_sessions: 10_000,
            join_timeout_ms: 10_000,
            subscriber_queue: 256,
            client_frame_queue: 4_096,
            client_idle_timeout_ms: 10_000,
            drain_timeout_ms: 5_000,
            goaway_reconnect_ms: 50,
        }
    }
}

/// `[repair]`: media loss repaired where it happens (docs/protocol.md §5.1):
/// the receiving end of every hop asks for what it misses (NACK), the
/// sending end keeps what it sent lately and sends it again while it can
/// arrive in time, within a budget of half the hop's media.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct RepairSection {
    /// Repair loss on relay links and client links (`false`: media is
    /// forwarded best-effort, as before repair existed; NACKs are ignored,
    /// and no copies go around suspect next hops either).
    #[arg(id = "repair_enabled")]
    pub enabled: bool,
    /// Packets kept per track of each relay link for retransmission (the
    /// oldest are forgotten first; nothing is kept past the video
    /// deadline, 500 ms, which bounds the total by the link's rate).
    pub relay_history_packets: usize,
    /// Packets kept per track of each client link (to subscribers) for
    /// retransmission.
    pub client_history_packets: usize,
    /// Copies of media around a relay link that loses 15% or more (a
    /// redundant path, docs/protocol.md §9.4), at most this share of the
    /// media sent on that link, audio first (0: no redundant paths).
    pub redundant_path_share: f64,
}

impl Default for RepairSection {
    fn default() -> Self {
        RepairSection {
            enabled: true,
            // 300 ms of a 100 Mbit/s link in 1,000-byte packets.
            relay_history_packets: 4_096,
            // 300 ms of several HD video tracks to one subscriber.
            client_history_packets: 1_024,
            redundant_path_share: repair::redundant::DEFAULT_SHARE,
        }
    }
}

/// When the edge answers a new connection with a QUIC Retry, which makes
/// the client prove it receives at its source address before the edge
/// keeps any state for it (one extra round trip).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    /// Only under a handshake flood (`retry_above_handshakes`), or for an
    /// address over its rate limit: normal joins keep their round trip.
    Auto,
    /// Every unvalidated connection: for edges under sustained attack.
    Always,
    /// Never (spoofed floods then cost handshake state up to the cap).
    Never,
}

/// `[admission]`: the limits the edge applies before and around a session.
/// Zero disables a rate limit. The defaults leave a legitimate user far
/// below every limit (an SDK opens one connection per edge and reconnects
/// with backoff) while making a flood from one address cheap to refuse.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionSection {
    /// When new connections get a QUIC Retry (address validation).
    #[arg(visible_alias = "retry")]
    pub retry: RetryMode,
    /// Handshakes in progress above which unvalidated addresses get a Retry
    /// (auto mode). A normal edge has a handful at a time.
    #[arg(visible_alias = "retry-above-handshakes")]
    pub retry_above_handshakes: usize,
    /// Handshakes in progress above which new connections are ignored
    /// outright: bounds the memory a flood can pin.
    #[arg(visible_alias = "max-handshakes")]
    pub max_handshakes: usize,
    /// A handshake not finished by then is dropped.
    #[arg(visible_alias = "handshake-timeout-ms")]
    pub handshake_timeout_ms: u64,
    /// New connections per second from one IP address (burst: twice this).
    /// 20: a whole office behind one NAT reconnecting at once fits.
    #[arg(visible_alias = "connections-per-ip-per-s")]
    pub connections_per_ip_per_s: u32,
    /// Connections open at once from one IP address.
    #[arg(visible_alias = "max-connections-per-ip")]
    pub max_connections_per_ip: usize,
    /// Joins per second with one token (burst: twice this). A token is a
    /// bearer credential; a replayed one cannot join faster than this.
    #[arg(visible_alias = "joins-per-token-per-s")]
    pub joins_per_token_per_s: u32,
    /// Messages per second one session may send (burst: twice this);
    /// faster ones are refused with `RATE_LIMITED`.
    #[arg(visible_alias = "messages-per-session-per-s")]
    pub messages_per_session_per_s: u32,
    /// Media bytes per second one session may publish (burst: one second's
    /// worth more); the excess is dropped and counted. 6.25 MB/s is
    /// 50 Mbit/s: several 4K video tracks.
    #[arg(visible_alias = "media-bytes-per-session-per-s")]
    pub media_bytes_per_session_per_s: u64,
    /// Datagrams per second of one session the edge may drop (malformed,
    /// foreign track, over the media rate) before closing it, with ten
    /// seconds' worth of burst: a few are normal, a steady stream is a
    /// flood that costs decryption even when dropped.
    #[arg(visible_alias = "dropped-datagrams-per-session-per-s")]
    pub dropped_datagrams_per_session_per_s: u32,
}

impl Default for AdmissionSection {
    fn default() -> Self {
        AdmissionSection {
            retry: RetryMode::Auto,
            retry_above_handshakes: 64,
            max_handshakes: 4_096,
            handshake_timeout_ms: 5_000,
            connections_per_ip_per_s: 20,
            max_connections_per_ip: 256,
            joins_per_token_per_s: 5,
            messages_per_session_per_s: 500,
            media_bytes_per_session_per_s: 6_250_000,
            dropped_datagrams_per_session_per_s: 50,
        }
    }
}

impl AdmissionSection {
    /// No rate limit at all (benchmarks that saturate an edge on purpose).
    pub fn unlimited() -> Self {
        AdmissionSection {
            retry: RetryMode::Never,
            retry_above_handshakes: usize::MAX,
            max_handshakes: usize::MAX,
            connections_per_ip_per_s: 0,
            max_connections_per_ip: usize::MAX,
            joins_per_token_per_s: 0,
            messages_per_session_per_s: 0,
            media_bytes_per_session_per_s: 0,
            dropped_datagrams_per_session_per_s: 0,
            ..AdmissionSection::default()
        }
    }
}

/// A `[[peers]]` entry. Its fields are the file format; the edge reaches
/// the peer by [`PeerSection::address`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerSection {
    pub id: EdgeId,
    /// UDP address of the peer's QUIC endpoint.
    pub addr: SocketAddr,
    pub server_name: String,
    /// The peer's region, for the operator's reference: forwarding does not
    /// use it.
    #[serde(default)]
    pub region: String,
}

impl PeerSection {
    pub fn address(&self) -> EdgeAddress {
        EdgeAddress::new(self.addr, self.server_name.clone())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub dest: EdgeId,
    /// Intermediate edges, in order (empty = direct).
    #[serde(default)]
    pub via: Vec<EdgeId>,
}

fn default_region() -> String {
    "local".into()
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4433))
}
fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9433))
}
fn default_server_name() -> String {
    "localhost".into()
}
fn default_endpoints() -> usize {
    1
}

/// More endpoints than this on one port is a typo, not a machine.
pub const MAX_ENDPOINTS: usize = 64;

fn default_udp_buffer() -> usize {
    // moq-relay and quinn users ask for several MiB: a relay receives bursts
    // from many senders at once.
    8 * 1024 * 1024
}

/// Largest `limits.subscriber_queue` and `limits.client_frame_queue`.
pub const MAX_QUEUE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

impl EdgeConfig {
    pub fn from_toml(text: &str, path: &std::path::Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// A config for tests and the lab: loopback, dev TLS, one app.
    pub fn dev(id: EdgeId, app_id: &str, secret: &str) -> Self {
        EdgeConfig {
            edge: EdgeSection {
                id,
                region: default_region(),
                city: String::new(),
                lat: None,
                lon: None,
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                public_addr: None,
                admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                admin_token_env: None,
                server_name: default_server_name(),
                udp_buffer_bytes: default_udp_buffer(),
                endpoints: default_endpoints(),
            },
            tls: TlsSection {
                dev_self_signed: true,
                ..TlsSection::default()
            },
            client_tls: ClientTlsSection::default(),
            apps: vec![AppSection {
                id: app_id.into(),
                secrets: vec![secret.into()],
                secrets_env: None,
            }],
            limits: LimitsSection::default(),
            admission: AdmissionSection::default(),
            repair: RepairSection::default(),
            peers: vec![],
            routes: vec![],
            control: ControlSection::default(),
            netem: None,
        }
    }

    /// Where the edge is: `lat`/`lon`, else its city's coordinates.
    pub fn location(&self) -> Result<(f64, f64), ConfigError> {
        match (self.edge.lat, self.edge.lon) {
            (Some(lat), Some(lon)) => topology::GeoPoint::new(lat, lon)
                .map(|p| (p.lat(), p.lon()))
                .map_err(|e| ConfigError::Invalid(format!("edge.lat/edge.lon: {e}"))),
            (None, None) => topology::geo::find_city(&self.edge.city)
                .map(|c| (c.point().lat(), c.point().lon()))
                .ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "edge.city {:?} is not a known city; set edge.lat and edge.lon",
                        self.edge.city
                    ))
                }),
            _ => Err(ConfigError::Invalid(
                "edge.lat and edge.lon must be set together".into(),
            )),
        }
    }

    /// Check everything that can be checked without binding sockets.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.edge.id == 0 {
            return bad("edge.id must be a positive integer (0 is reserved)".into());
        }
        if self.edge.server_name.is_empty() {
            return bad("edge.server_name must not be empty".into());
        }
        if self.edge.listen == self.edge.admin_listen && self.edge.listen.port() != 0 {
            return bad("edge.listen and edge.admin_listen must differ".into());
        }
        if !(1..=MAX_ENDPOINTS).contains(&self.edge.endpoints) {
            return bad(format!(
                "edge.endpoints must be 1..={MAX_ENDPOINTS} (got {})",
                self.edge.endpoints
            ));
        }
        let tls = &self.tls;
        if !tls.dev_self_signed {
            for (name, v) in [
                ("tls.cert", &tls.cert),
                ("tls.key", &tls.key),
                ("tls.mesh_ca", &tls.mesh_ca),
            ] {
                match v {
                    None => {
                        return bad(format!(
                            "{name} is required unless tls.dev_self_signed = true"
                        ))
                    }
                    Some(p) if !p.exists() => {
                        return bad(format!("{name}: file {} does not exist", p.display()))
                    }
                    _ => {}
                }
            }
        }
        let ct = &self.client_tls;
        if ct.mode == ClientTlsMode::Files {
            for (name, v) in [("client_tls.cert", &ct.cert), ("client_tls.key", &ct.key)] {
                match v {
                    None => {
                        return bad(format!(
                            "{name} is required with client_tls.mode = \"files\""
                        ))
                    }
                    Some(p) if !p.exists() => {
                        return bad(format!("{name}: file {} does not exist", p.display()))
                    }
                    _ => {}
                }
            }
        }
        if ct.reload_check_ms == 0 {
            return bad("client_tls.reload_check_ms must be positive".into());
        }
        if self.apps.is_empty() {
            return bad("at least one [[apps]] entry with a secret is required".into());
        }
        for app in &self.apps {
            if app.id.is_empty() {
                return bad("apps.id must not be empty".into());
            }
            let secrets = app.resolved_secrets()?;
            if secrets.is_empty() {
                return bad(format!(
                    "app {:?} has no secret (set secrets or secrets_env)",
                    app.id
                ));
            }
            if secrets.iter().any(|s| s.len() < 16) {
                return bad(format!(
                    "app {:?}: secrets must be at least 16 bytes",
                    app.id
                ));
            }
        }
        let l = &self.limits;
        // tokio refuses (panics on) a channel of more than 2^61 slots, in
        // every session; 2^20 queued frames or packets is already absurd.
        for (name, v) in [
            ("limits.subscriber_queue", l.subscriber_queue),
            ("limits.client_frame_queue", l.client_frame_queue),
        ] {
            if v > MAX_QUEUE {
                return bad(format!("{name} must be at most {MAX_QUEUE}"));
            }
        }
        for (name, v) in [
            ("limits.max_sessions", l.max_sessions as u64),
            ("limits.join_timeout_ms", l.join_timeout_ms),
            ("limits.subscriber_queue", l.subscriber_queue as u64),
            ("limits.client_frame_queue", l.client_frame_queue as u64),
            ("limits.client_idle_timeout_ms", l.client_idle_timeout_ms),
        ] {
            if v == 0 {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        let r = &self.repair;
        if r.enabled && (r.relay_history_packets == 0 || r.client_history_packets == 0) {
            return bad(
                "repair.relay_history_packets and repair.client_history_packets must be greater than 0 (or repair.enabled = false)".into(),
            );
        }
        if r.relay_history_packets > MAX_QUEUE || r.client_history_packets > MAX_QUEUE {
            return bad(format!(
                "repair.relay_history_packets and repair.client_history_packets must be at most {MAX_QUEUE}"
            ));
        }
        if !(0.0..=1.0).contains(&r.redundant_path_share) {
            return bad(format!(
                "repair.redundant_path_share must be between 0 and 1 (a share of the lossy link's media), not {}",
                r.redundant_path_share
            ));
        }
        let a = &self.admission;
        if a.max_handshakes == 0 || a.max_connections_per_ip == 0 || a.handshake_timeout_ms == 0 {
            return bad("admission.max_handshakes, max_connections_per_ip and handshake_timeout_ms must be greater than 0".into());
        }
        let mut ids = std::collections::HashSet::new();
        for p in &self.peers {
            if p.id == self.edge.id || p.id == 0 || !ids.insert(p.id) {
                return bad(format!(
                    "peers: id {} is zero, this edge's own, or repeated",
                    p.id
                ));
            }
        }
        let mut dests = std::collections::HashSet::new();
        for r in &self.routes {
            let mut hops = std::collections::HashSet::new();
            for hop in r.via.iter().chain(std::iter::once(&r.dest)) {
                if !ids.contains(hop) {
                    return bad(format!("routes: edge {hop} is not among [[peers]]"));
                }
                if !hops.insert(hop) {
                    return bad(format!(
                        "routes: the route to edge {} passes edge {hop} twice",
                        r.dest
                    ));
                }
            }
            if !dests.insert(r.dest) {
                return bad(format!("routes: two routes to edge {}", r.dest));
            }
        }
        let c = &self.control;
        #[cfg(feature = "netem")]
        if let Some(n) = &self.netem {
            for r in &n.links {
                r.profile.validate().map_err(|e| {
                    ConfigError::Invalid(format!("netem link {} -> {}: {e}", r.from, r.to))
                })?;
            }
        }
        #[cfg(not(feature = "netem"))]
        if self.netem.is_some() {
            return bad("[netem] (WAN emulation, lab code) needs an edge-node built with `--features netem`".into());
        }
        refuse_unknown("control", &c.unknown).map_err(ConfigError::Invalid)?;
        c.store.validate("control").map_err(ConfigError::Invalid)?;
        if !(2_000..=60_000).contains(&c.lease_ttl_ms) {
            return bad(
                "control.lease_ttl_ms must be within 2000..=60000 (etcd's floor is about 2 s)"
                    .into(),
            );
        }
        if !c.store.etcd_endpoints.is_empty() {
            self.location()?;
        }
        Ok(())
    }

    pub fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.join_timeout_ms)
    }
}

impl AppSection {
    pub fn resolved_secrets(&self) -> Result<Vec<String>, ConfigError> {
        let mut out = self.secrets.clone();
        if let Some(var) = &self.secrets_env {
            let v = std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!(
                    "app {:?}: environment variable {var} is not set",
                    self.id
                ))
            })?;
            out.extend(
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<EdgeConfig, ConfigError> {
        EdgeConfig::from_toml(s, std::path::Path::new("test.toml"))
    }

    const GOOD: &str = r#"
        [edge]
        id = 3
        region = "eu-west"
        listen = "127.0.0.1:4500"
        admin_listen = "127.0.0.1:9500"
        [tls]
        dev_self_signed = true
        [[apps]]
        id = "demo"
        secrets = ["0123456789abcdef"]
        [[peers]]
        id = 4
        addr = "127.0.0.1:4501"
        server_name = "localhost"
        [[routes]]
        dest = 4
    "#;

    #[test]
    fn good_config_validates() {
        parse(GOOD).unwrap().validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let err = parse(&GOOD.replace("region =", "regoin ="))
            .unwrap_err()
            .to_string();
        assert!(err.contains("regoin"), "{err}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let cases = [
            (GOOD.replace("id = 3", "id = 0"), "edge.id"),
            (
                GOOD.replace("dev_self_signed = true", "dev_self_signed = false"),
                "tls.cert",
            ),
            (
                GOOD.replace("\"0123456789abcdef\"", "\"short\""),
                "16 bytes",
            ),
            (GOOD.replace("dest = 4", "dest = 9"), "routes"),
            (
                format!("{GOOD}\n[control]\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n"),
                "edge.city",
            ),
            (
                format!("{GOOD}\n[control]\nlease_ttl_ms = 100\n"),
                "control.lease_ttl_ms",
            ),
            (
                format!("{GOOD}\n[control]\nprefix = \"rtn\"\n"),
                "control.prefix",
            ),
            (
                format!("{GOOD}\n[repair]\nredundant_path_share = 1.5\n"),
                "repair.redundant_path_share",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn control_section_takes_the_shared_store_settings() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["ca.pem", "client.pem", "client.key"] {
            std::fs::write(dir.path().join(f), "pem").unwrap();
        }
        let d = dir.path().display();
        let control = |extra: &str| {
            format!("{GOOD}\n[control]\netcd_endpoints = [\"https://10.0.0.5:2379\"]\n{extra}")
                .replace(
                    "region = \"eu-west\"",
                    "region = \"eu-west\"\ncity = \"FRA\"",
                )
        };
        let full = format!(
            "etcd_ca = \"{d}/ca.pem\"\netcd_cert = \"{d}/client.pem\"\netcd_key = \"{d}/client.key\"\n"
        );
        let c = parse(&control(&full)).unwrap();
        c.validate().unwrap();
        assert_eq!(c.control.store.etcd_ca, Some(dir.path().join("ca.pem")));
        // Every check of the shared settings is in `control::settings`;
        // here, that they run on `[control]` and name it, and typos are
        // refused.
        let cases = [
            (control(""), "needs control.etcd_ca"),
            (
                control(&format!("{full}etcd_endpoint = []\n")),
                "control: unknown field `etcd_endpoint`",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn every_key_is_a_flag_with_its_variable_and_no_secret_shows() {
        let sample = EdgeConfig::dev(1, "demo", "0123456789abcdef");
        control::flags::check(&sample).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    }

    #[test]
    fn flags_and_variables_named_before_the_scheme_still_work() {
        // (key, flag and variable it had before every key had
        // --<section>-<field>): unit files, scripts and docs use them.
        let kept = [
            ("edge.id", "id", "RTN_EDGE_ID"),
            ("edge.region", "region", "RTN_EDGE_REGION"),
            ("edge.city", "city", "RTN_EDGE_CITY"),
            ("edge.listen", "listen", "RTN_EDGE_LISTEN"),
            ("edge.public_addr", "public-addr", "RTN_EDGE_PUBLIC_ADDR"),
            ("edge.admin_listen", "admin-listen", "RTN_EDGE_ADMIN_LISTEN"),
            ("edge.server_name", "server-name", "RTN_EDGE_SERVER_NAME"),
            (
                "edge.udp_buffer_bytes",
                "udp-buffer-bytes",
                "RTN_EDGE_UDP_BUFFER_BYTES",
            ),
            ("edge.lat", "lat", "RTN_EDGE_LAT"),
            ("edge.lon", "lon", "RTN_EDGE_LON"),
            ("tls.cert", "tls-cert", "RTN_TLS_CERT"),
            ("tls.key", "tls-key", "RTN_TLS_KEY"),
            ("tls.mesh_ca", "tls-mesh-ca", "RTN_TLS_MESH_CA"),
            (
                "tls.dev_self_signed",
                "tls-dev-self-signed",
                "RTN_TLS_DEV_SELF_SIGNED",
            ),
            (
                "limits.max_sessions",
                "max-sessions",
                "RTN_LIMITS_MAX_SESSIONS",
            ),
            (
                "limits.join_timeout_ms",
                "join-timeout-ms",
                "RTN_LIMITS_JOIN_TIMEOUT_MS",
            ),
            (
                "limits.subscriber_queue",
                "subscriber-queue",
                "RTN_LIMITS_SUBSCRIBER_QUEUE",
            ),
            (
                "limits.client_frame_queue",
                "client-frame-queue",
                "RTN_LIMITS_CLIENT_FRAME_QUEUE",
            ),
            (
                "limits.client_idle_timeout_ms",
                "client-idle-timeout-ms",
                "RTN_LIMITS_CLIENT_IDLE_TIMEOUT_MS",
            ),
            (
                "limits.drain_timeout_ms",
                "drain-timeout-ms",
                "RTN_LIMITS_DRAIN_TIMEOUT_MS",
            ),
            (
                "limits.goaway_reconnect_ms",
                "goaway-reconnect-ms",
                "RTN_LIMITS_GOAWAY_RECONNECT_MS",
            ),
            ("admission.retry", "retry", "RTN_ADMISSION_RETRY"),
            (
                "admission.retry_above_handshakes",
                "retry-above-handshakes",
                "RTN_ADMISSION_RETRY_ABOVE_HANDSHAKES",
            ),
            (
                "admission.max_handshakes",
                "max-handshakes",
                "RTN_ADMISSION_MAX_HANDSHAKES",
            ),
            (
                "admission.handshake_timeout_ms",
                "handshake-timeout-ms",
                "RTN_ADMISSION_HANDSHAKE_TIMEOUT_MS",
            ),
            (
                "admission.connections_per_ip_per_s",
                "connections-per-ip-per-s",
                "RTN_ADMISSION_CONNECTIONS_PER_IP_PER_S",
            ),
            (
                "admission.max_connections_per_ip",
                "max-connections-per-ip",
                "RTN_ADMISSION_MAX_CONNECTIONS_PER_IP",
            ),
            (
                "admission.joins_per_token_per_s",
                "joins-per-token-per-s",
                "RTN_ADMISSION_JOINS_PER_TOKEN_PER_S",
            ),
            (
                "admission.messages_per_session_per_s",
                "messages-per-session-per-s",
                "RTN_ADMISSION_MESSAGES_PER_SESSION_PER_S",
            ),
            (
                "admission.media_bytes_per_session_per_s",
                "media-bytes-per-session-per-s",
                "RTN_ADMISSION_MEDIA_BYTES_PER_SESSION_PER_S",
            ),
            (
                "admission.dropped_datagrams_per_session_per_s",
                "dropped-datagrams-per-session-per-s",
                "RTN_ADMISSION_DROPPED_DATAGRAMS_PER_SESSION_PER_S",
            ),
            ("control.etcd_endpoints", "etcd", "RTN_CONTROL_ETCD"),
            ("control.etcd_ca", "etcd-ca", "RTN_CONTROL_ETCD_CA"),
            ("control.etcd_cert", "etcd-cert", "RTN_CONTROL_ETCD_CERT"),
            ("control.etcd_key", "etcd-key", "RTN_CONTROL_ETCD_KEY"),
            (
                "control.etcd_server_name",
                "etcd-server-name",
                "RTN_CONTROL_ETCD_SERVER_NAME",
            ),
            ("control.prefix", "control-prefix", "RTN_CONTROL_PREFIX"),
            (
                "control.lease_ttl_ms",
                "lease-ttl-ms",
                "RTN_CONTROL_LEASE_TTL_MS",
            ),
            (
                "control.probes_per_other_region",
                "probes-per-other-region",
                "RTN_CONTROL_PROBES_PER_OTHER_REGION",
            ),
            (
                "control.probe_full_mesh_max_edges",
                "probe-full-mesh-max-edges",
                "RTN_CONTROL_PROBE_FULL_MESH_MAX_EDGES",
            ),
        ];
        control::flags::check_kept_names::<EdgeConfig>(&kept)
            .unwrap_or_else(|p| panic!("{}", p.join("\n")));
    }

    #[test]
    fn static_routes_are_one_per_edge_and_loop_free() {
        // Found by fuzz/ (edge_config): a second route to an edge silently
        // replaced the first, and a route through an edge twice was
        // silently skipped when media trees were built.
        let cases = [
            (
                format!("{GOOD}\n[[routes]]\ndest = 4\n"),
                "two routes to edge 4",
            ),
            (
                GOOD.replace("dest = 4", "dest = 4\nvia = [4]"),
                "passes edge 4 twice",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn queue_limits_are_bounded() {
        // Found by fuzz/ (edge_config): a client_frame_queue above 2^61
        // validated, then panicked in tokio in every session task.
        let limits = |q: &str| {
            format!("{GOOD}\n[limits]\nmax_sessions = 1\njoin_timeout_ms = 1\nsubscriber_queue = 1\nclient_frame_queue = {q}\nclient_idle_timeout_ms = 1\ndrain_timeout_ms = 1\ngoaway_reconnect_ms = 1\n")
        };
        parse(&limits("1048576")).unwrap().validate().unwrap();
        let cases = [
            (
                limits("2305843009213693952"),
                "limits.client_frame_queue must be at most 1048576",
            ),
            (
                limits("1").replace(
                    "subscriber_queue = 1",
                    "subscriber_queue = 18446744073709551615",
                ),
                "limits.subscriber_queue must be at most",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap().validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
