//! The values the control plane stores, as JSON.
//!
//! JSON rather than protobuf: these records are small, written at most about
//! once a second per edge, and operators read them with `etcdctl get`. Every
//! record is validated when read back: a malformed value written by a buggy
//! or foreign process is skipped with a warning, never trusted.

use std::net::SocketAddr;

use protocol::{EdgeAddress, EdgeId};
use serde::{Deserialize, Serialize};

/// Upper bound on any stored record: routes for 10,000 destinations with a
/// backup each fit comfortably; anything larger is corrupt.
pub const MAX_RECORD_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record too large ({0} bytes)")]
    TooLarge(usize),
    #[error("malformed record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid record: {0}")]
    Invalid(String),
}

pub trait Record: Serialize + for<'de> Deserialize<'de> {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    /// The edge the record says it is about, when it carries one (it must
    /// match the edge id of its key).
    fn edge_id(&self) -> Option<EdgeId> {
        None
    }

    fn to_bytes(&self) -> bytes::Bytes {
        serde_json::to_vec(self)
            .expect("records serialise: no maps with non-string keys")
            .into()
    }

    fn from_bytes(b: &[u8]) -> Result<Self, RecordError> {
        if b.len() > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge(b.len()));
        }
        let r: Self = serde_json::from_slice(b)?;
        r.validate().map_err(RecordError::Invalid)?;
        Ok(r)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EdgeState {
    Serving,
    /// Shutting down: no new clients, no new transit traffic.
    Draining,
}

/// An edge's registration: written once at start (and on state changes)
/// under the edge's lease, so it disappears when the edge dies. `addr` and
/// `server_name` stay fields of their own (the stored JSON is documented in
/// docs/control-plane.md); [`EdgeRecord::address`] is how to reach the edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeRecord {
    pub id: EdgeId,
    pub region: String,
    /// City code from the lab's table or an operator's label.
    pub city: String,
    pub lat: f64,
    pub lon: f64,
    /// QUIC address for clients and relay links.
    pub addr: SocketAddr,
    /// TLS server name of the edge's certificate.
    pub server_name: String,
    /// Digests of the edge's short-lived self-signed client certificates
    /// (current, next) for clients that pin them (browsers); absent for an
    /// edge with a certificate from files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sha256: Vec<protocol::CertHash>,
    /// Admin HTTP address (/metrics, /healthz).
    pub admin_addr: Option<SocketAddr>,
    /// Sessions the edge accepts at most.
    pub capacity: u32,
    pub state: EdgeState,
    pub version: String,
    pub started_at_ms: u64,
}

impl EdgeRecord {
    pub fn address(&self) -> EdgeAddress {
        EdgeAddress::new(self.addr, self.server_name.clone())
            .with_cert_hashes(self.cert_sha256.clone())
    }
}

impl Record for EdgeRecord {
    fn edge_id(&self) -> Option<EdgeId> {
        Some(self.id)
    }

    fn validate(&self) -> Result<(), String> {
        if !(-90.0..=90.0).contains(&self.lat) || !(-180.0..=180.0).contains(&self.lon) {
            return Err(format!(
                "edge {}: lat/lon {},{} out of range",
                self.id, self.lat, self.lon
            ));
        }
        if self.region.is_empty() || self.server_name.is_empty() {
            return Err(format!("edge {}: empty region or server name", self.id));
        }
        Ok(())
    }
}

/// The small, frequently refreshed part of an edge's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadRecord {
    pub sessions: u32,
    pub channels: u32,
    /// Sessions over capacity, 0..1 (may exceed 1 when overloaded).
    pub load: f64,
    pub at_ms: u64,
}

impl Record for LoadRecord {
    fn validate(&self) -> Result<(), String> {
        if !(self.load.is_finite() && self.load >= 0.0) {
            return Err(format!("load {} is not a non-negative number", self.load));
        }
        Ok(())
    }
}

/// One measured link, as the prober sees it from `ProbeRecord::from`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeLink {
    pub to: EdgeId,
    pub rtt_ms: f64,
    pub jitter_ms: f64,
    pub loss: f64,
    pub samples: u64,
    /// Heard from recently (a silent peer's last figures are still listed,
    /// marked dead).
    pub alive: bool,
}

/// An edge's probe summary of all the peers it probes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeRecord {
    pub from: EdgeId,
    pub at_ms: u64,
    pub links: Vec<ProbeLink>,
}

impl Record for ProbeRecord {
    fn edge_id(&self) -> Option<EdgeId> {
        Some(self.from)
    }

    fn validate(&self) -> Result<(), String> {
        for l in &self.links {
            let ok = l.rtt_ms.is_finite()
                && l.rtt_ms >= 0.0
                && l.jitter_ms.is_finite()
                && l.jitter_ms >= 0.0
                && (0.0..=1.0).contains(&l.loss);
            if !ok || l.to == self.from {
                return Err(format!("probe link {} -> {} is invalid", self.from, l.to));
            }
        }
        Ok(())
    }
}

/// The paths one edge forwards along, published by its region's leader.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoutesRecord {
    pub edge: EdgeId,
    /// The edge's region: whose leader owns (and eventually deletes) it.
    #[serde(default)]
    pub region: String,
    /// Name of the controller that computed them.
    pub controller: String,
    pub computed_at_ms: u64,
    pub routes: Vec<RouteRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    pub dest: EdgeId,
    /// `[edge, hop, ..., dest]`.
    pub best: Vec<EdgeId>,
    /// Avoids `best`'s first hop; used when the edge sees that hop dead
    /// before the controller does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<Vec<EdgeId>>,
}

impl Record for RoutesRecord {
    fn edge_id(&self) -> Option<EdgeId> {
        Some(self.edge)
    }

    fn validate(&self) -> Result<(), String> {
        for r in &self.routes {
            for p in std::iter::once(&r.best).chain(r.backup.as_ref()) {
                let ends = p.first() == Some(&self.edge) && p.last() == Some(&r.dest);
                let mut seen = std::collections::HashSet::new();
                if !ends || p.len() < 2 || !p.iter().all(|e| seen.insert(*e)) {
                    return Err(format!(
                        "route {} -> {}: path {p:?} is not a simple path between them",
                        self.edge, r.dest
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge() -> EdgeRecord {
        EdgeRecord {
            id: 1,
            region: "eu".into(),
            city: "FRA".into(),
            lat: 50.1,
            lon: 8.7,
            addr: "127.0.0.1:4433".parse().unwrap(),
            server_name: "edge1.rtn.test".into(),
            cert_sha256: vec![],
            admin_addr: None,
            capacity: 100,
            state: EdgeState::Serving,
            version: "0.1.0".into(),
            started_at_ms: 1,
        }
    }

    #[test]
    fn a_registration_says_how_to_reach_its_edge() {
        let e = edge();
        let want = EdgeAddress::new("127.0.0.1:4433".parse().unwrap(), "edge1.rtn.test");
        assert_eq!(e.address(), want);
        // The stored JSON keeps `addr` and `server_name` at the top level,
        // where the shared type reads them too.
        let json: serde_json::Value = serde_json::from_slice(&e.to_bytes()).unwrap();
        assert_eq!(json["addr"], "127.0.0.1:4433");
        assert_eq!(json["server_name"], "edge1.rtn.test");
        assert_eq!(serde_json::from_value::<EdgeAddress>(json).unwrap(), want);
    }

    #[test]
    fn records_round_trip() {
        let e = edge();
        assert_eq!(EdgeRecord::from_bytes(&e.to_bytes()).unwrap(), e);
        let r = RoutesRecord {
            edge: 1,
            region: "eu".into(),
            controller: "c".into(),
            computed_at_ms: 5,
            routes: vec![RouteRecord {
                dest: 3,
                best: vec![1, 2, 3],
                backup: Some(vec![1, 3]),
            }],
        };
        assert_eq!(RoutesRecord::from_bytes(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn malformed_and_invalid_records_are_refused() {
        assert!(matches!(
            EdgeRecord::from_bytes(b"{\"id\":1"),
            Err(RecordError::Json(_))
        ));
        let mut e = edge();
        e.lat = 91.0;
        assert!(matches!(
            EdgeRecord::from_bytes(&e.to_bytes()),
            Err(RecordError::Invalid(_))
        ));
        let looped = RoutesRecord {
            edge: 1,
            region: "eu".into(),
            controller: "c".into(),
            computed_at_ms: 5,
            routes: vec![RouteRecord {
                dest: 3,
                best: vec![1, 2, 1, 3],
                backup: None,
            }],
        };
        assert!(RoutesRecord::from_bytes(&looped.to_bytes()).is_err());
        let p = ProbeRecord {
            from: 1,
            at_ms: 0,
            links: vec![ProbeLink {
                to: 2,
                rtt_ms: f64::NAN.max(-1.0),
                jitter_ms: 0.0,
                loss: 0.0,
                samples: 1,
                alive: true,
            }],
        };
        assert!(ProbeRecord::from_bytes(&p.to_bytes()).is_err());
        let huge = vec![b' '; MAX_RECORD_BYTES + 1];
        assert!(matches!(
            LoadRecord::from_bytes(&huge),
            Err(RecordError::TooLarge(_))
        ));
    }
}
