//! Where the control plane keeps things in the store.
//!
//! Everything lives under one configurable prefix (default `/rtn/v1/`), so
//! several meshes (or a test per etcd) can share a cluster and a future v2
//! layout can sit beside this one during a migration:
//!
//! | key                          | value            | writer            | lease           |
//! |------------------------------|------------------|-------------------|-----------------|
//! | `edges/<id>`                 | [`EdgeRecord`]   | the edge          | the edge's      |
//! | `load/<id>`                  | [`LoadRecord`]   | the edge          | the edge's      |
//! | `probes/<id>`                | [`ProbeRecord`]  | the edge          | the edge's      |
//! | `routes/<id>`                | [`RoutesRecord`] | region's leader   | none (kept)     |
//! | `regions/<region>`           | [`RegionRecord`] | region's leader, hierarchical routing only | none (kept) |
//! | `exits/<region>`             | [`ExitsRecord`]  | region's leader, hierarchical routing only | none (kept) |
//! | `controllers/<region>/leader`| candidate name   | election          | the leader's    |
//! | `health`                     | (never written)  | none: controllers read it to check the store answers | |
//!
//! Ids are written in decimal with zero padding to 10 digits so that a
//! prefix watch on one key (`routes/0000000001`) can never match another
//! (`routes/0000000010`) and listings sort numerically.
//!
//! [`EdgeRecord`]: crate::records::EdgeRecord
//! [`LoadRecord`]: crate::records::LoadRecord
//! [`ProbeRecord`]: crate::records::ProbeRecord
//! [`RoutesRecord`]: crate::records::RoutesRecord
//! [`RegionRecord`]: crate::records::RegionRecord
//! [`ExitsRecord`]: crate::records::ExitsRecord

use protocol::EdgeId;

pub const DEFAULT_PREFIX: &str = "/rtn/v1/";

/// Key builder for one mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLayout {
    prefix: String,
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout {
            prefix: DEFAULT_PREFIX.into(),
        }
    }
}

impl KeyLayout {
    /// A layout under `prefix`, which must start and end with `/`.
    pub fn new(prefix: &str) -> Result<Self, String> {
        if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
            return Err(format!(
                "key prefix {prefix:?} must start and end with '/' (e.g. \"/rtn/v1/\")"
            ));
        }
        if prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!(
                "key prefix {prefix:?} must not contain spaces or control characters"
            ));
        }
        Ok(KeyLayout {
            prefix: prefix.into(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn edges(&self) -> String {
        format!("{}edges/", self.prefix)
    }
    pub fn edge(&self, id: EdgeId) -> String {
        format!("{}edges/{id:010}", self.prefix)
    }
    pub fn loads(&self) -> String {
        format!("{}load/", self.prefix)
    }
    pub fn load(&self, id: EdgeId) -> String {
        format!("{}load/{id:010}", self.prefix)
    }
    pub fn probes(&self) -> String {
        format!("{}probes/", self.prefix)
    }
    pub fn probe(&self, id: EdgeId) -> String {
        format!("{}probes/{id:010}", self.prefix)
    }
    pub fn routes(&self) -> String {
        format!("{}routes/", self.prefix)
    }
    pub fn route(&self, id: EdgeId) -> String {
        format!("{}routes/{id:010}", self.prefix)
    }
    /// Every region's record (a region's name may prefix another's: read
    /// the region from the record, never by prefix).
    pub fn regions(&self) -> String {
        format!("{}regions/", self.prefix)
    }
    pub fn region(&self, region: &str) -> String {
        format!("{}regions/{region}", self.prefix)
    }
    pub fn exits(&self, region: &str) -> String {
        format!("{}exits/{region}", self.prefix)
    }
    /// Read (never written) by controllers to check that the store answers.
    pub fn health(&self) -> String {
        format!("{}health", self.prefix)
    }
    pub fn leader(&self, region: &str) -> String {
        format!("{}controllers/{region}/leader", self.prefix)
    }

    /// The edge id at the end of a per-edge key under `dir` (one of
    /// [`edges`](Self::edges), [`loads`](Self::loads), ...).
    pub fn id_in(&self, dir: &str, key: &str) -> Option<EdgeId> {
        let rest = key.strip_prefix(dir)?;
        if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        rest.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_edge_keys_never_prefix_one_another() {
        let k = KeyLayout::default();
        assert!(!k.route(10).starts_with(&k.route(1)));
        assert_eq!(k.edge(7), "/rtn/v1/edges/0000000007");
        assert_eq!(k.edge(u32::MAX), "/rtn/v1/edges/4294967295");
    }

    #[test]
    fn ids_parse_back_and_junk_is_refused() {
        let k = KeyLayout::new("/lab/").unwrap();
        assert_eq!(k.id_in(&k.edges(), &k.edge(42)), Some(42));
        assert_eq!(k.id_in(&k.edges(), &k.load(42)), None);
        assert_eq!(k.id_in(&k.edges(), "/lab/edges/42"), None);
        assert_eq!(k.id_in(&k.edges(), "/lab/edges/99999999999"), None);
        assert_eq!(k.id_in(&k.edges(), "/lab/edges/9999999999"), None);
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["rtn/", "/rtn", "/", "/r tn/", ""] {
            assert!(KeyLayout::new(p).is_err(), "{p:?}");
        }
    }
}
