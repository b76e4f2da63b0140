//! How to reach an edge: the address of its QUIC endpoint and the TLS name
//! its certificate is verified against.
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

use crate::ids::EdgeId;
use crate::pb;

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EdgeAddress {
    /// UDP address of the edge's QUIC endpoint (clients and relay links
    /// share it).
    pub addr: SocketAddr,
    /// TLS server name the edge's certificate is valid for.
    pub server_name: String,
}

impl EdgeAddress {
    pub fn new(addr: SocketAddr, server_name: impl Into<String>) -> Self {
        EdgeAddress {
            addr,
            server_name: server_name.into(),
        }
    }

    /// The protobuf form (a goaway's redirects); `id` `None` is sent as 0,
    /// "not known" (edge ids start at 1).
    pub fn to_pb(&self, id: Option<EdgeId>) -> pb::EdgeAddress {
        pb::EdgeAddress {
            edge_id: id.unwrap_or(0),
            addr: self.addr.to_string(),
            server_name: self.server_name.clone(),
        }
    }
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
            }
        );
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
    }
}
