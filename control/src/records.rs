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
    /// What routing minimises along `best` and `backup`, µs: published
    /// with hierarchical routes, where the edge composes its routes to other
    /// regions from these ([`RegionRecord`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_cost_us: Option<u64>,
}

impl RoutesRecord {
    /// The routes as a route set (costs as published, zero where absent;
    /// RTTs are not published).
    pub fn route_set(&self) -> topology::RouteSet {
        let path = |edges: &Vec<EdgeId>, cost_us: Option<u64>| topology::Path {
            edges: edges.clone(),
            cost_ms: cost_us.unwrap_or(0) as f64 / 1000.0,
            rtt_ms: 0.0,
        };
        topology::RouteSet::new(
            self.edge,
            self.routes
                .iter()
                .map(|r| topology::Route {
                    destination: r.dest,
                    best: path(&r.best, r.cost_us),
                    backup: r.backup.as_ref().map(|b| path(b, r.backup_cost_us)),
                })
                .collect(),
        )
    }

    /// Whether `other` says the same as this record: the same paths, and
    /// (if published) costs within [`costs_close`]'s band (that of
    /// `edge-node`'s `materially_changed`: costs follow from probes).
    pub fn same_routes(&self, other: &RoutesRecord) -> bool {
        let close = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => costs_close(a, b),
            (a, b) => a == b,
        };
        self.routes.len() == other.routes.len()
            && self.routes.iter().zip(&other.routes).all(|(a, b)| {
                a.dest == b.dest
                    && a.best == b.best
                    && a.backup == b.backup
                    && close(a.cost_us, b.cost_us)
                    && close(a.backup_cost_us, b.backup_cost_us)
            })
    }
}

/// Whether two published costs (µs) are within the band probe summaries
/// are published in (1 ms and 2%): a smaller move is noise, not news.
fn costs_close(a: u64, b: u64) -> bool {
    a.abs_diff(b) as f64 <= 1_000f64.max(0.02 * a.max(b) as f64)
}

/// Whether two link lists (`[from, to, cost in µs]`) name the same links in
/// the same order at costs within [`costs_close`].
fn same_links(a: &[(EdgeId, EdgeId, u64)], b: &[(EdgeId, EdgeId, u64)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(a, b)| a.0 == b.0 && a.1 == b.1 && costs_close(a.2, b.2))
}

/// A region's share of hierarchical routes (docs/control-plane.md "Routes
/// at scale"), written by the region's leader when the mesh is routed
/// hierarchically and read by every edge: its hubs, the best paths inside
/// the region from each hub to each of its edges, each edge's transit
/// penalty, and its hubs' links to other regions' hubs. With every
/// region's record an edge composes its routes to edges of other regions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionRecord {
    pub region: String,
    pub controller: String,
    pub computed_at_ms: u64,
    /// The region's edges; the table numbers them in this order.
    pub members: Vec<EdgeId>,
    /// Hubs, among the members: where paths from other regions come in.
    pub hubs: Vec<EdgeId>,
    /// `hubs × members`, row by hub: cost in µs of the best path from the
    /// hub to the member inside the region; `null` where unreachable.
    pub cost_us: Vec<Option<u64>>,
    /// `hubs × members`: the number (in `members`) of the edge before the
    /// member on that path; `null` at the hub and where unreachable.
    pub pred: Vec<Option<u32>>,
    /// Each member's transit penalty, µs.
    pub toll_us: Vec<u64>,
    /// `[hub, hub of another region, link cost in µs]`: the probed links
    /// from this region's hubs.
    pub hub_links: Vec<(EdgeId, EdgeId, u64)>,
}

impl RegionRecord {
    /// The record of `table` and the links in `links` from its hubs.
    pub fn new(
        table: &topology::hierarchy::RegionTable,
        links: &[topology::hierarchy::HubLink],
        controller: &str,
        at_ms: u64,
    ) -> RegionRecord {
        let own: std::collections::HashSet<EdgeId> = table.hubs().iter().copied().collect();
        RegionRecord {
            region: table.region().into(),
            controller: controller.into(),
            computed_at_ms: at_ms,
            members: table.members().to_vec(),
            hubs: table.hubs().to_vec(),
            cost_us: table
                .costs_us()
                .iter()
                .map(|&c| (c != u64::MAX).then_some(c))
                .collect(),
            pred: table
                .preds()
                .iter()
                .map(|&p| (p != u32::MAX).then_some(p))
                .collect(),
            toll_us: table.tolls_us().to_vec(),
            hub_links: links
                .iter()
                .filter(|l| own.contains(&l.from))
                .map(|l| (l.from, l.to, l.cost_us))
                .collect(),
        }
    }

    /// The region's table, checked.
    pub fn table(&self) -> Result<topology::hierarchy::RegionTable, String> {
        topology::hierarchy::RegionTable::from_parts(
            self.region.clone(),
            self.members.clone(),
            self.hubs.clone(),
            self.cost_us.iter().map(|c| c.unwrap_or(u64::MAX)).collect(),
            self.pred.iter().map(|p| p.unwrap_or(u32::MAX)).collect(),
            self.toll_us.clone(),
        )
    }

    /// The links from the region's hubs.
    pub fn hub_links(&self) -> impl Iterator<Item = topology::hierarchy::HubLink> + '_ {
        self.hub_links
            .iter()
            .map(|&(from, to, cost_us)| topology::hierarchy::HubLink { from, to, cost_us })
    }

    /// Whether `other` has the same members, hubs and reachability (what
    /// edges cannot do without at once); paths and costs aside.
    pub fn same_reach(&self, other: &RegionRecord) -> bool {
        self.members == other.members
            && self.hubs == other.hubs
            && self.cost_us.len() == other.cost_us.len()
            && self
                .cost_us
                .iter()
                .zip(&other.cost_us)
                .all(|(a, b)| a.is_some() == b.is_some())
    }

    /// Every link the record's paths and hub links use, `(from, to)`.
    pub fn links(&self) -> impl Iterator<Item = (EdgeId, EdgeId)> + '_ {
        let n = self.members.len().max(1);
        let table = self.pred.iter().enumerate().filter_map(move |(cell, p)| {
            let from = self.members.get((*p)? as usize)?;
            Some((*from, self.members[cell % n]))
        });
        table.chain(self.hub_links.iter().map(|l| (l.0, l.1)))
    }

    /// Whether `other` says the same: members, hubs, paths and links, with
    /// costs within [`RoutesRecord::same_routes`]'s band.
    pub fn same_as(&self, other: &RegionRecord) -> bool {
        let close = costs_close;
        self.members == other.members
            && self.hubs == other.hubs
            && self.pred == other.pred
            && self.cost_us.len() == other.cost_us.len()
            && self
                .cost_us
                .iter()
                .zip(&other.cost_us)
                .all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => close(*a, *b),
                    (a, b) => a == b,
                })
            && self.toll_us.len() == other.toll_us.len()
            && self
                .toll_us
                .iter()
                .zip(&other.toll_us)
                .all(|(a, b)| close(*a, *b))
            && same_links(&self.hub_links, &other.hub_links)
    }
}

impl Record for RegionRecord {
    fn validate(&self) -> Result<(), String> {
        if self.region.is_empty() || self.region.contains('/') {
            return Err(format!("region name {:?} is invalid", self.region));
        }
        self.table().map(|_| ())
    }
}

/// A region's exits (hierarchical routing): links from its edges straight
/// to edges of other regions that are not hubs, where such a link beats
/// entering the destination's region at a hub. Read by the region's edges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExitsRecord {
    pub region: String,
    pub controller: String,
    pub computed_at_ms: u64,
    /// `[edge of the region, edge of another region, link cost in µs]`.
    pub links: Vec<(EdgeId, EdgeId, u64)>,
}

impl ExitsRecord {
    pub fn new(
        region: &str,
        exits: &topology::hierarchy::Exits,
        controller: &str,
        at_ms: u64,
    ) -> ExitsRecord {
        ExitsRecord {
            region: region.into(),
            controller: controller.into(),
            computed_at_ms: at_ms,
            links: exits
                .links()
                .into_iter()
                .map(|l| (l.from, l.to, l.cost_us))
                .collect(),
        }
    }

    pub fn exits(&self) -> topology::hierarchy::Exits {
        topology::hierarchy::Exits::from_links(
            self.links
                .iter()
                .map(|&(from, to, cost_us)| topology::hierarchy::ExitLink { from, to, cost_us }),
        )
    }

    /// Whether `other` lists the same links at about the same costs.
    pub fn same_as(&self, other: &ExitsRecord) -> bool {
        same_links(&self.links, &other.links)
    }
}

impl Record for ExitsRecord {
    fn validate(&self) -> Result<(), String> {
        match self.links.iter().find(|l| l.0 == l.1) {
            Some(l) => Err(format!("exit {} -> {} loops", l.0, l.1)),
            None => Ok(()),
        }
    }
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
                cost_us: None,
                backup_cost_us: None,
            }],
        };
        assert_eq!(RoutesRecord::from_bytes(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn region_records_round_trip_and_bad_tables_are_refused() {
        let table = topology::hierarchy::RegionTable::from_parts(
            "eu".into(),
            vec![1, 2, 3],
            vec![1],
            vec![0, 4_000, u64::MAX],
            vec![u32::MAX, 0, u32::MAX],
            vec![1_000; 3],
        )
        .unwrap();
        let link = topology::hierarchy::HubLink {
            from: 1,
            to: 9,
            cost_us: 70_000,
        };
        let r = RegionRecord::new(&table, &[link], "c", 5);
        assert_eq!(r.cost_us, vec![Some(0), Some(4_000), None]);
        let back = RegionRecord::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.table().unwrap().path(0, 2), Some(vec![1, 2]));
        assert_eq!(back.hub_links().collect::<Vec<_>>(), vec![link]);
        let mut moved = r.clone();
        moved.cost_us[1] = Some(4_500);
        assert!(r.same_as(&moved), "0.5 ms is noise");
        moved.cost_us[1] = Some(6_000);
        assert!(!r.same_as(&moved));
        assert!(r.same_reach(&moved), "costs are not reach");
        moved.cost_us[1] = None;
        assert!(!r.same_reach(&moved));
        assert_eq!(r.links().collect::<Vec<_>>(), vec![(1, 2), (1, 9)]);
        let mut bad = r.clone();
        bad.pred[1] = Some(7);
        assert!(matches!(
            RegionRecord::from_bytes(&bad.to_bytes()),
            Err(RecordError::Invalid(_))
        ));
        let mut bad = r;
        bad.region = "a/b".into();
        assert!(RegionRecord::from_bytes(&bad.to_bytes()).is_err());
        let exits = ExitsRecord {
            region: "eu".into(),
            controller: "c".into(),
            computed_at_ms: 1,
            links: vec![(2, 2, 5)],
        };
        assert!(ExitsRecord::from_bytes(&exits.to_bytes()).is_err());
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
                cost_us: None,
                backup_cost_us: None,
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
