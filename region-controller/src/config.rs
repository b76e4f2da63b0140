//! Controller configuration: a TOML file whose every key is also a flag
//! `--<section>-<field>` and an environment variable `RTN_CTL_<FIELD>` that
//! override it (`control::flags`; the older short flags, such as
//! `--region`, are aliases), validated at start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use control::flags::{Flagged, Section};
use control::section;
use control::settings::{refuse_unknown, StoreSettings, UnknownKeys};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerConfig {
    pub controller: ControllerSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub api: ApiSection,
    #[serde(default)]
    pub admin: AdminSection,
}

/// Every key is a flag and a variable.
impl Flagged for ControllerConfig {
    fn sections() -> Vec<Section<Self>> {
        vec![
            section!(ControllerConfig, controller),
            section!(ControllerConfig, store),
            section!(ControllerConfig, api),
            section!(ControllerConfig, admin),
        ]
    }

    const FILE_ONLY: &'static [&'static str] = &[];

    /// `RTN_CTL_<FIELD>`: field names are unique across the sections
    /// (their flags are matched by them, `control::flags`).
    fn env(section: &str, field: &str) -> String {
        match (section, field) {
            // Named so before every key had a variable; deployments set them.
            ("store", "etcd_endpoints") => "RTN_CTL_ETCD".into(),
            ("api", "listen") => "RTN_CTL_API_LISTEN".into(),
            ("admin", "listen") => "RTN_CTL_ADMIN_LISTEN".into(),
            // The variable it had in `[api]`, before the admin face.
            ("admin", "token_env") => "RTN_CTL_ADMIN_TOKEN_ENV".into(),
            _ => format!("RTN_CTL_{}", field.to_uppercase()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ControllerSection {
    /// The region whose edges this controller computes routes for.
    #[arg(visible_alias = "region")]
    pub region: String,
    /// Unique name among the candidates (default: host name and pid).
    #[serde(default)]
    #[arg(visible_alias = "name")]
    pub name: Option<String>,
    /// A burst of store changes is collected for this long before routes
    /// are recomputed: probe summaries of a whole region arrive within a few
    /// hundred ms of each other, and one computation serves them all.
    #[serde(default = "default_debounce_ms")]
    #[arg(visible_alias = "debounce-ms")]
    pub debounce_ms: u64,
    /// Routes are recomputed at least this often even without changes.
    #[serde(default = "default_recompute_ms")]
    pub recompute_ms: u64,
    /// Route hierarchically (hubs between regions, docs/control-plane.md
    /// "Routes at scale") from this many registered edges on; flat below
    /// 90% of it. Every controller of a mesh must use the same value. 0:
    /// always hierarchical.
    #[serde(default = "default_hierarchical_from_edges")]
    pub hierarchical_from_edges: usize,
    /// Hierarchical routing: this region's hubs at most, the edges other
    /// regions' traffic enters it by (spread over its sites). More hubs:
    /// paths closer to the flat optimum, a larger region record and hub
    /// graph (`topology::hierarchy::HubPolicy`).
    #[serde(default = "default_hubs_per_region")]
    pub hubs_per_region: usize,
}

/// `[store]`: the control store ([`StoreSettings`]: etcd endpoints and TLS,
/// key prefix; the same keys as the edge's `[control]`) and the election.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct StoreSection {
    #[serde(flatten)]
    #[command(flatten)]
    pub store: StoreSettings,
    /// Lease of the leader key: a dead leader is replaced within this.
    #[serde(default = "default_election_ttl_ms")]
    #[arg(visible_alias = "election-ttl-ms")]
    pub election_ttl_ms: u64,
    /// Keys no field took, refused by `validate` (see [`UnknownKeys`]).
    #[serde(flatten, skip_serializing)]
    #[arg(skip)]
    pub unknown: UnknownKeys,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            store: StoreSettings::default(),
            election_ttl_ms: default_election_ttl_ms(),
            unknown: UnknownKeys::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// The public API: the nearest-edge lookup, /healthz and /readyz (the
    /// one port to open to the internet).
    #[serde(default = "default_api_listen")]
    pub listen: SocketAddr,
    /// MaxMind City database for client locations. Without one, shortlists
    /// spread over regions instead of ranking by distance.
    #[serde(default)]
    #[arg(visible_alias = "geoip-db")]
    pub geoip_db: Option<PathBuf>,
    /// Header carrying the client address when the request comes from a
    /// trusted proxy (e.g. `x-forwarded-for`).
    #[serde(default)]
    pub client_ip_header: Option<String>,
    /// Peers allowed to set `client_ip_header`, as addresses or CIDRs
    /// (comma-separated as a flag).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Moved to `[admin] token_env` (the operator endpoints are on
    /// the admin listener); refused here with a message saying so.
    #[serde(default, rename = "admin_token_env", skip_serializing)]
    #[arg(skip)]
    pub moved_admin_token_env: Option<String>,
    /// Public lookups allowed per client address per second (burst: twice).
    #[serde(default = "default_rate")]
    pub lookups_per_ip_per_s: u32,
    /// Web page origins (`https://app.example.com`) allowed to call the
    /// nearest-edge lookup from a browser (CORS); none by default. `*`
    /// allows every page (comma-separated as a flag).
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// PEM certificate chain of the API's HTTPS (any CA; ACME-issued in
    /// production), reloaded when it changes. Unset: plain HTTP (behind a
    /// TLS-terminating proxy, or the lab).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// How often `tls_cert` and `tls_key` are checked for a change, ms.
    #[serde(default = "default_tls_reload_check_ms")]
    pub tls_reload_check_ms: u64,
}

impl Default for ApiSection {
    fn default() -> Self {
        ApiSection {
            listen: default_api_listen(),
            geoip_db: None,
            client_ip_header: None,
            trusted_proxies: Vec::new(),
            moved_admin_token_env: None,
            lookups_per_ip_per_s: default_rate(),
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_reload_check_ms: default_tls_reload_check_ms(),
        }
    }
}

/// `[admin]`: the operator's face, on an internal address.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// The admin listener: `/v1/mesh`, `/v1/links/history`, the dashboard,
    /// `/metrics`, /healthz and /readyz. Plain HTTP: bind it to an internal
    /// address (loopback by default) and never open it to the internet.
    #[serde(default = "default_admin_listen")]
    #[arg(id = "admin_listen")]
    pub listen: SocketAddr,
    /// Environment variable holding the bearer token of the operator
    /// endpoints (`/v1/mesh`, `/v1/links/history`). Unset: those endpoints
    /// are refused (403).
    #[serde(default)]
    pub token_env: Option<String>,
}

impl Default for AdminSection {
    fn default() -> Self {
        AdminSection {
            listen: default_admin_listen(),
            token_env: None,
        }
    }
}

pub(crate) fn default_debounce_ms() -> u64 {
    200
}
pub(crate) fn default_recompute_ms() -> u64 {
    5_000
}
/// 500: flat routes are the exact optimum and cost a region's controller
/// about 1 s at 1,000 edges on two cores, but the flat control plane broke
/// from 500 edges on one 2-core machine (docs/benchmarks.md, control-scale).
pub(crate) fn default_hierarchical_from_edges() -> usize {
    500
}
fn default_hubs_per_region() -> usize {
    topology::hierarchy::HubPolicy::default().hubs_per_region
}
pub(crate) fn default_election_ttl_ms() -> u64 {
    3_000
}
fn default_api_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("literal address")
}
fn default_admin_listen() -> SocketAddr {
    "127.0.0.1:9434".parse().expect("literal address")
}
fn default_rate() -> u32 {
    20
}
fn default_tls_reload_check_ms() -> u64 {
    2_000
}

impl ControllerConfig {
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        let c = &self.controller;
        if c.region.is_empty() || c.region.contains('/') {
            bail!("controller.region must be a non-empty name without '/'");
        }
        if !(10..=10_000).contains(&c.debounce_ms) {
            bail!("controller.debounce_ms must be within 10..=10000");
        }
        if !(100..=600_000).contains(&c.recompute_ms) {
            bail!("controller.recompute_ms must be within 100..=600000");
        }
        if !(1..=256).contains(&c.hubs_per_region) {
            bail!("controller.hubs_per_region must be within 1..=256");
        }
        refuse_unknown("store", &self.store.unknown).map_err(anyhow::Error::msg)?;
        self.store
            .store
            .validate("store")
            .map_err(anyhow::Error::msg)?;
        // etcd's minimum lease TTL is about 2 s (its election timeout).
        if !(2_000..=60_000).contains(&self.store.election_ttl_ms) {
            bail!("store.election_ttl_ms must be within 2000..=60000");
        }
        crate::api::parse_proxies(&self.api.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("api.trusted_proxies: {e}"))?;
        if let Some(h) = &self.api.client_ip_header {
            // Checked at start too (`run`), but only after check-config had
            // said the config is fine.
            hyper::header::HeaderName::try_from(h.as_str()).map_err(|_| {
                anyhow::anyhow!("api.client_ip_header {h:?} is not a valid HTTP header name")
            })?;
        }
        if self.api.lookups_per_ip_per_s == 0 {
            bail!("api.lookups_per_ip_per_s must be at least 1");
        }
        if self.api.moved_admin_token_env.is_some() {
            bail!("api.admin_token_env moved to [admin] token_env (the operator endpoints are served on the admin listener, [admin] listen)");
        }
        let (public, admin) = (self.api.listen, self.admin.listen);
        if public == admin
            || (public.port() == admin.port()
                && (public.ip().is_unspecified() || admin.ip().is_unspecified()))
        {
            bail!("admin.listen {admin} overlaps api.listen {public}: the admin face (metrics, mesh, dashboard) must have its own internal address or port");
        }
        Ok(())
    }

    pub fn name(&self) -> String {
        self.controller.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "controller".into());
            format!("{host}-{}", std::process::id())
        })
    }

    pub fn election_ttl(&self) -> Duration {
        Duration::from_millis(self.store.election_ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_and_bad_fields() {
        let c = ControllerConfig::from_toml("[controller]\nregion = \"eu\"\n").unwrap();
        c.validate().unwrap();
        assert_eq!(c.store.store.prefix, "/rtn/v1/");
        assert!(ControllerConfig::from_toml("[controller]\nregion = \"eu\"\nbogus = 1\n").is_err());
        let mut bad = c.clone();
        bad.store.election_ttl_ms = 500;
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("election_ttl_ms"));
        let mut bad = c.clone();
        bad.api.trusted_proxies = vec!["10.0.0.0/99".into()];
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("trusted_proxies"));
        // Found by fuzz/ (controller_config): a header name hyper refuses
        // passed check-config and only failed at start.
        for h in ["x forwarded", "", "x-real-ip}", "é"] {
            let mut bad = c.clone();
            bad.api.client_ip_header = Some(h.into());
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("api.client_ip_header"), "{h:?}: {err}");
        }
        let mut ok = c.clone();
        ok.api.client_ip_header = Some("X-Forwarded-For".into());
        ok.validate().unwrap();
        // The two faces never share a listener.
        for (api, admin) in [
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("0.0.0.0:8080", "10.0.0.5:8080"),
            ("10.0.0.5:9000", "0.0.0.0:9000"),
        ] {
            let mut bad = c.clone();
            (bad.api.listen, bad.admin.listen) = (api.parse().unwrap(), admin.parse().unwrap());
            let err = bad.validate().unwrap_err().to_string();
            assert!(err.contains("admin.listen"), "{api} {admin}: {err}");
        }
        let mut ok = c.clone();
        (ok.api.listen, ok.admin.listen) = (
            "0.0.0.0:8080".parse().unwrap(),
            "10.0.0.5:9434".parse().unwrap(),
        );
        ok.validate().unwrap();
        // A key that moved says where to.
        let moved = ControllerConfig::from_toml(
            "[controller]\nregion = \"eu\"\n[api]\nadmin_token_env = \"T\"\n",
        )
        .unwrap();
        let err = moved.validate().unwrap_err().to_string();
        assert!(err.contains("[admin] token_env"), "{err}");
        let mut bad = c;
        bad.store.store.etcd_endpoints = vec!["127.0.0.1:2379".into()];
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("etcd_endpoints"));
    }

    #[test]
    fn every_key_is_a_flag_with_its_variable() {
        let mut sample = ControllerConfig::from_toml("[controller]\nregion = \"eu\"\n").unwrap();
        sample.api.trusted_proxies = vec!["10.0.0.0/8".into()];
        control::flags::check(&sample).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    }

    #[test]
    fn flags_and_variables_named_before_the_scheme_still_work() {
        // (key, flag and variable it had before every key had
        // --<section>-<field>): unit files, scripts and docs use them.
        let kept = [
            ("controller.region", "region", "RTN_CTL_REGION"),
            ("controller.name", "name", "RTN_CTL_NAME"),
            (
                "controller.debounce_ms",
                "debounce-ms",
                "RTN_CTL_DEBOUNCE_MS",
            ),
            ("store.etcd_endpoints", "etcd", "RTN_CTL_ETCD"),
            ("store.etcd_ca", "etcd-ca", "RTN_CTL_ETCD_CA"),
            ("store.etcd_cert", "etcd-cert", "RTN_CTL_ETCD_CERT"),
            ("store.etcd_key", "etcd-key", "RTN_CTL_ETCD_KEY"),
            (
                "store.etcd_server_name",
                "etcd-server-name",
                "RTN_CTL_ETCD_SERVER_NAME",
            ),
            ("store.prefix", "prefix", "RTN_CTL_PREFIX"),
            (
                "store.election_ttl_ms",
                "election-ttl-ms",
                "RTN_CTL_ELECTION_TTL_MS",
            ),
            ("api.listen", "api-listen", "RTN_CTL_API_LISTEN"),
            ("api.geoip_db", "geoip-db", "RTN_CTL_GEOIP_DB"),
            (
                "admin.token_env",
                "admin-token-env",
                "RTN_CTL_ADMIN_TOKEN_ENV",
            ),
        ];
        control::flags::check_kept_names::<ControllerConfig>(&kept)
            .unwrap_or_else(|p| panic!("{}", p.join("\n")));
    }

    #[test]
    fn the_store_section_takes_the_shared_store_settings() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "pem").unwrap();
            p
        };
        let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
        let https = vec!["https://10.0.0.5:2379".to_string()];
        let ok = |c: &ControllerConfig| c.validate().map_err(|e| e.to_string());
        let text = format!(
            "[controller]\nregion = \"eu\"\n[store]\netcd_endpoints = {https:?}\netcd_ca = {ca:?}\netcd_cert = {cert:?}\netcd_key = {key:?}\netcd_server_name = \"etcd.internal\"\n"
        );
        let parsed = ControllerConfig::from_toml(&text).unwrap();
        ok(&parsed).unwrap();
        assert_eq!(parsed.store.store.etcd_ca.as_deref(), Some(ca.as_path()));
        assert_eq!(
            parsed.store.store.etcd_server_name.as_deref(),
            Some("etcd.internal")
        );
        let typo = ControllerConfig::from_toml(&format!("{text}etcd_endpoint = []\n")).unwrap();
        assert_eq!(
            ok(&typo).unwrap_err(),
            "store: unknown field `etcd_endpoint`"
        );
    }
}
