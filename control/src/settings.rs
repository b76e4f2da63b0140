//! Where the control store is and how to reach it: the settings the edge's
//! `[control]` section and the controller's `[store]` section share (both
//! flatten [`StoreSettings`], so the keys are the same in both files), their
//! validation, and the one function that opens the store they name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::keys::{KeyLayout, DEFAULT_PREFIX};
use crate::store::ControlStore;

/// etcd endpoints and TLS, and the key prefix of the mesh. As flags (see
/// [`crate::flags`]) they also answer to the names both binaries gave them
/// before every key had `--<section>-<field>` (`--etcd`, `--etcd-key`...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct StoreSettings {
    /// etcd client URLs, e.g. `["https://10.0.0.5:2379"]`. Empty: no store
    /// (an edge then runs on static peers and routes).
    #[serde(default)]
    #[arg(visible_alias = "etcd")]
    pub etcd_endpoints: Vec<String>,
    /// PEM CA certificate(s) that signed the etcd members' certificates.
    /// Required for (and only allowed with) `https://` endpoints.
    #[serde(default)]
    #[arg(visible_alias = "etcd-ca")]
    pub etcd_ca: Option<PathBuf>,
    /// PEM client certificate presented to etcd (etcd with
    /// `client-cert-auth` requires one), with `etcd_key`.
    #[serde(default)]
    #[arg(visible_alias = "etcd-cert")]
    pub etcd_cert: Option<PathBuf>,
    /// PEM private key of `etcd_cert`.
    #[serde(default)]
    #[arg(visible_alias = "etcd-key")]
    pub etcd_key: Option<PathBuf>,
    /// Name the members' certificates are verified against instead of each
    /// endpoint's host.
    #[serde(default)]
    #[arg(visible_alias = "etcd-server-name")]
    pub etcd_server_name: Option<String>,
    /// Key prefix of the mesh in the store.
    #[serde(default = "default_prefix")]
    #[arg(visible_alias = "prefix")]
    pub prefix: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            etcd_endpoints: Vec::new(),
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
            etcd_server_name: None,
            prefix: default_prefix(),
        }
    }
}

fn default_prefix() -> String {
    DEFAULT_PREFIX.into()
}

impl StoreSettings {
    /// Checks the prefix, the endpoints and the TLS settings together
    /// (`section` names the config section in errors: `store` on
    /// controllers, `control` on edges). The files' contents are checked
    /// when the store is opened ([`StoreSettings::open`], which
    /// check-config runs too).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        KeyLayout::new(&self.prefix).map_err(|e| format!("{section}.prefix: {e}"))?;
        validate_etcd(
            section,
            &self.etcd_endpoints,
            self.etcd_ca.as_deref(),
            self.etcd_cert.as_deref(),
            self.etcd_key.as_deref(),
            self.etcd_server_name.as_deref(),
        )
    }

    /// The key layout under [`StoreSettings::prefix`].
    pub fn keys(&self) -> Result<KeyLayout, String> {
        KeyLayout::new(&self.prefix)
    }

    /// The etcd store these settings name (None without endpoints), over
    /// TLS when they name the etcd CA. Lazy: the process starts and serves
    /// while etcd is down; the TLS files are read and checked here.
    pub fn open(&self) -> anyhow::Result<Option<Arc<dyn ControlStore>>> {
        if self.etcd_endpoints.is_empty() {
            return Ok(None);
        }
        #[cfg(feature = "etcd")]
        {
            use crate::store::{EtcdStore, EtcdTls};
            let tls = EtcdTls::from_paths(
                self.etcd_ca.as_deref(),
                self.etcd_cert.as_deref(),
                self.etcd_key.as_deref(),
                self.etcd_server_name.as_deref(),
            )?;
            let store = EtcdStore::lazy_with(self.etcd_endpoints.clone(), tls.as_ref())?;
            Ok(Some(Arc::new(store)))
        }
        #[cfg(not(feature = "etcd"))]
        anyhow::bail!(
            "etcd_endpoints is set but this binary was built without etcd support (the `etcd` feature, on by default)"
        )
    }
}

/// Checks a config section's etcd endpoints and TLS settings together:
/// http:// or https:// URLs; TLS (a CA) exactly when they are https://;
/// client certificate and key both or neither; every file exists.
pub fn validate_etcd(
    section: &str,
    endpoints: &[String],
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
    server_name: Option<&str>,
) -> Result<(), String> {
    for e in endpoints {
        if !e.starts_with("http://") && !e.starts_with("https://") {
            return Err(format!(
                "{section}.etcd_endpoints: {e:?} must be an http:// or https:// URL"
            ));
        }
    }
    for (name, path) in [("etcd_ca", ca), ("etcd_cert", cert), ("etcd_key", key)] {
        if let Some(p) = path {
            if !p.is_file() {
                return Err(format!(
                    "{section}.{name}: file {} does not exist",
                    p.display()
                ));
            }
        }
    }
    if cert.is_some() != key.is_some() {
        return Err(format!(
            "{section}.etcd_cert and {section}.etcd_key go together: set both or neither"
        ));
    }
    if server_name == Some("") {
        return Err(format!("{section}.etcd_server_name must not be empty"));
    }
    if ca.is_none() {
        if cert.is_some() || server_name.is_some() {
            return Err(format!(
                "{section}.etcd_cert, etcd_key and etcd_server_name need {section}.etcd_ca (TLS)"
            ));
        }
        if let Some(e) = endpoints.iter().find(|e| e.starts_with("https://")) {
            return Err(format!(
                "{section}.etcd_endpoints: {e:?} is https:// and needs {section}.etcd_ca (and etcd_cert, etcd_key when etcd requires client certificates)"
            ));
        }
        return Ok(());
    }
    if endpoints.is_empty() {
        return Err(format!(
            "{section}.etcd_ca is set but {section}.etcd_endpoints is empty"
        ));
    }
    if let Some(e) = endpoints.iter().find(|e| !e.starts_with("https://")) {
        return Err(format!(
            "{section}.etcd_endpoints: {e:?} is not https:// but {section}.etcd_ca is set: TLS endpoints are https://"
        ));
    }
    Ok(())
}

/// Keys of a config section that no field took. serde cannot deny unknown
/// fields in a struct that flattens another (as the sections holding
/// [`StoreSettings`] do), so such sections collect them in a field of this
/// type, declared last, and refuse them with [`refuse_unknown`]. The field
/// is `#[serde(flatten, skip_serializing)]` and `#[arg(skip)]`: not a key,
/// not a flag.
pub type UnknownKeys = std::collections::BTreeMap<String, serde::de::IgnoredAny>;

/// A clear error naming the first unknown key of `section`, if any.
pub fn refuse_unknown(section: &str, unknown: &UnknownKeys) -> Result<(), String> {
    match unknown.keys().next() {
        Some(key) => Err(format!("{section}: unknown field `{key}`")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Section {
        #[serde(flatten)]
        store: StoreSettings,
        #[serde(default)]
        lease_ttl_ms: u64,
        #[serde(flatten)]
        unknown: UnknownKeys,
    }

    fn parse(text: &str) -> Section {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn flattened_settings_take_their_keys_and_leave_typos_to_be_refused() {
        let s = parse(
            r#"{"etcd_endpoints": ["http://127.0.0.1:2379"], "prefix": "/a/", "lease_ttl_ms": 5}"#,
        );
        assert_eq!(s.store.etcd_endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(s.store.prefix, "/a/");
        assert_eq!(s.lease_ttl_ms, 5);
        assert!(refuse_unknown("control", &s.unknown).is_ok());
        s.store.validate("control").unwrap();

        let typo = parse(r#"{"etcd_endpoint": ["http://127.0.0.1:2379"]}"#);
        assert_eq!(typo.store, StoreSettings::default());
        assert_eq!(
            refuse_unknown("control", &typo.unknown).unwrap_err(),
            "control: unknown field `etcd_endpoint`"
        );
    }

    #[test]
    fn validation_names_the_section() {
        let bad = |f: &dyn Fn(&mut StoreSettings)| {
            let mut s = StoreSettings::default();
            f(&mut s);
            s.validate("store").unwrap_err()
        };
        assert!(bad(&|s| s.prefix = "rtn".into()).starts_with("store.prefix"));
        assert!(bad(&|s| s.etcd_endpoints = vec!["127.0.0.1:2379".into()])
            .contains("must be an http:// or https:// URL"));
        assert!(
            bad(&|s| s.etcd_endpoints = vec!["https://10.0.0.5:2379".into()])
                .contains("needs store.etcd_ca")
        );
        assert!(bad(&|s| s.etcd_server_name = Some(String::new())).contains("must not be empty"));
    }

    #[test]
    fn no_endpoints_opens_no_store() {
        assert!(StoreSettings::default().open().unwrap().is_none());
    }

    #[test]
    fn tls_settings_are_checked_against_the_endpoints() {
        let dir = tempfile::tempdir().unwrap();
        let file = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "pem").unwrap();
            p
        };
        let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
        let https = vec!["https://10.0.0.5:2379".to_string()];
        let http = vec!["http://10.0.0.5:2379".to_string()];
        let mut c = StoreSettings::default();
        let ok = |c: &StoreSettings| c.validate("store");
        c.etcd_endpoints = https.clone();
        c.etcd_ca = Some(ca.clone());
        c.etcd_cert = Some(cert.clone());
        c.etcd_key = Some(key.clone());
        ok(&c).unwrap();
        // Without a client certificate (clusters without client-cert-auth).
        let mut v = c.clone();
        v.etcd_cert = None;
        v.etcd_key = None;
        ok(&v).unwrap();
        // Plain http without TLS settings.
        let v = StoreSettings {
            etcd_endpoints: http.clone(),
            ..StoreSettings::default()
        };
        ok(&v).unwrap();
        type Change = Box<dyn Fn(&mut StoreSettings)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|s| s.etcd_key = None),
                "store.etcd_cert and store.etcd_key go together",
            ),
            (Box::new(|s| s.etcd_cert = None), "go together"),
            (
                Box::new(|s| s.etcd_ca = Some("/nonexistent/ca.pem".into())),
                "store.etcd_ca: file /nonexistent/ca.pem does not exist",
            ),
            (
                Box::new(|s| s.etcd_key = Some("/nonexistent/k".into())),
                "store.etcd_key: file",
            ),
            (Box::new(|s| s.etcd_ca = None), "need store.etcd_ca"),
            (
                Box::new(|s| {
                    s.etcd_ca = None;
                    s.etcd_cert = None;
                    s.etcd_key = None
                }),
                "is https:// and needs store.etcd_ca",
            ),
            (
                Box::new(move |s| s.etcd_endpoints = http.clone()),
                "is not https:// but store.etcd_ca is set",
            ),
            (
                Box::new(|s| s.etcd_endpoints.push("http://10.0.0.6:2379".into())),
                "is not https://",
            ),
            (
                Box::new(|s| s.etcd_server_name = Some(String::new())),
                "etcd_server_name must not be empty",
            ),
        ];
        for (change, want) in cases {
            let mut v = c.clone();
            change(&mut v);
            let err = ok(&v).unwrap_err();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }
}
