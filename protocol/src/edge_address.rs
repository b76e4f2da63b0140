//! How to reach an edge: the address of its QUIC endpoint, the TLS name
//! its certificate is verified against and, for an edge with a short-lived
//! self-signed client certificate, that certificate's digests.
//!
//! One type for everyone holding that pair: the SDK's candidate edges and
//! the edge it connects to, an edge's peers in its route table. Control
//! store registrations and `[[peers]]` config entries keep their own fields
//! (their formats are documented) and convert to it; a goaway carries it as
//! [`pb::EdgeAddress`] ([`EdgeAddress::to_pb`]).
//!
//! Which edge it is (its id) is not part of it: a client's candidates have
//! none, and an edge's table is keyed by id.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::cert_hash::CertHash;
use crate::ids::EdgeId;
use crate::pb;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EdgeAddress {
    /// UDP address of the edge's QUIC endpoint (clients and relay links
    /// share it).
    pub addr: SocketAddr,
    /// TLS server name the edge's certificate is valid for.
    pub server_name: String,
    /// Digests of the edge's client-facing certificates a client may pin
    /// instead of verifying a WebPKI chain (browsers:
    /// `serverCertificateHashes`); empty for an edge with a WebPKI
    /// certificate, and left out of JSON then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_sha256: Vec<CertHash>,
}

impl EdgeAddress {
    pub fn new(addr: SocketAddr, server_name: impl Into<String>) -> Self {
        EdgeAddress {
            addr,
            server_name: server_name.into(),
            cert_sha256: Vec::new(),
        }
    }

    pub fn with_cert_hashes(mut self, hashes: Vec<CertHash>) -> Self {
        self.cert_sha256 = hashes;
        self
    }

    /// The protobuf form (a goaway's redirects); `id` `None` is sent as 0,
    /// "not known" (edge ids start at 1).
    pub fn to_pb(&self, id: Option<EdgeId>) -> pb::EdgeAddress {
        pb::EdgeAddress {
            edge_id: id.unwrap_or(0),
            addr: self.addr.to_string(),
            server_name: self.server_name.clone(),
            cert_sha256: self.cert_sha256.iter().map(|h| h.0.to_vec()).collect(),
        }
    }
}

/// The digests of a protobuf [`pb::EdgeAddress`]; entries that are not 32
/// bytes long are skipped.
pub fn hashes_from_pb(a: &pb::EdgeAddress) -> Vec<CertHash> {
    a.cert_sha256
        .iter()
        .filter_map(|b| CertHash::from_bytes(b))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frankfurt() -> EdgeAddress {
        EdgeAddress::new("203.0.113.7:4433".parse().unwrap(), "edge2.rtn.test")
    }

    #[test]
    fn protobuf_form_names_the_edge_when_known() {
        let a = frankfurt();
        assert_eq!(
            a.to_pb(Some(2)),
            pb::EdgeAddress {
                edge_id: 2,
                addr: "203.0.113.7:4433".into(),
                server_name: "edge2.rtn.test".into(),
                cert_sha256: vec![],
            }
        );
        let pinned = a.clone().with_cert_hashes(vec![CertHash::of(b"cert")]);
        assert_eq!(hashes_from_pb(&pinned.to_pb(None)), pinned.cert_sha256);
        assert_eq!(a.to_pb(None).edge_id, 0);
        let v6 = EdgeAddress::new("[2001:db8::1]:4433".parse().unwrap(), "e");
        assert_eq!(v6.to_pb(None).addr, "[2001:db8::1]:4433");
    }

    #[test]
    fn json_form_uses_the_field_names_of_registrations() {
        let json = serde_json::to_string(&frankfurt()).unwrap();
        assert_eq!(
            json,
            r#"{"addr":"203.0.113.7:4433","server_name":"edge2.rtn.test"}"#
        );
        assert_eq!(
            serde_json::from_str::<EdgeAddress>(&json).unwrap(),
            frankfurt()
        );
        // An edge registration (docs/control-plane.md) holds the same two
        // fields among others.
        let record = r#"{"id":2,"region":"eu","addr":"203.0.113.7:4433","server_name":"edge2.rtn.test","capacity":10}"#;
        assert_eq!(
            serde_json::from_str::<EdgeAddress>(record).unwrap(),
            frankfurt()
        );
        assert!(
            serde_json::from_str::<EdgeAddress>(r#"{"addr":"nowhere","server_name":"e"}"#).is_err()
        );
        let pinned = frankfurt().with_cert_hashes(vec![CertHash([0xab; 32])]);
        let json = serde_json::to_string(&pinned).unwrap();
        assert!(json.ends_with(&format!(r#""cert_sha256":["{}"]}}"#, "ab".repeat(32))));
        assert_eq!(serde_json::from_str::<EdgeAddress>(&json).unwrap(), pinned);
    }
}
