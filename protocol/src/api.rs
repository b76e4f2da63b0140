//! The JSON wire format of the region controller's public HTTP API: the
//! nearest-edge answer (`GET /v1/edges/nearest`, docs/control-plane.md,
//! "Nearest edge") and the error body every endpoint answers with
//! (docs/api.md, "Errors"). The controller serialises these types and the
//! SDK parses them, so the two cannot drift apart. Types only, no I/O.
//!
//! Fields are declared in alphabetical order: the controller used to build
//! these answers as `serde_json::Value`s, whose objects serialise their keys
//! sorted, and declaring them in that order keeps its answers byte for byte
//! what they were. Absent values are `null`, never left out.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::{CertHash, EdgeId};

/// `GET /v1/edges/nearest`: who the controller took the client for, and the
/// edges it ranks for that client, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearestAnswer {
    pub client: NearestClient,
    pub edges: Vec<NearestEdge>,
}

/// The client the edges were ranked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearestClient {
    pub ip: IpAddr,
    /// Where it was located by GeoIP; `null` when the database does not know
    /// the address (the edges are then spread over regions).
    pub location: Option<ClientLocation>,
    pub source: ClientIpSource,
}

/// Where the client's address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientIpSource {
    /// The request's `ip` parameter.
    Query,
    /// The client-address header of a trusted proxy.
    Header,
    /// The address the request came from.
    Peer,
    /// A source a later controller names that this build does not know:
    /// clients keep working against newer controllers.
    #[serde(other)]
    Unknown,
}

/// A client's GeoIP location.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientLocation {
    /// City name, when the database has one for the address.
    pub city: Option<String>,
    /// ISO 3166-1 country code, when the database has one.
    pub country: Option<String>,
    pub lat: f64,
    pub lon: f64,
}

/// One edge of a nearest-edge answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearestEdge {
    /// Where clients connect (QUIC, `host:port`; a literal socket address
    /// from this controller).
    pub addr: String,
    /// SHA-256 digests of the edge's short-lived self-signed client
    /// certificates (current and next), for browsers'
    /// `serverCertificateHashes` and SDKs that pin; empty for an edge with a
    /// WebPKI certificate (then verify `server_name`). Absent from answers
    /// of older controllers.
    #[serde(default)]
    pub cert_sha256: Vec<CertHash>,
    /// The edge's city code.
    pub city: String,
    /// Great-circle distance from the client; `null` without a location.
    pub distance_km: Option<f64>,
    /// Estimated RTT from the client; `null` without a location.
    pub est_rtt_ms: Option<f64>,
    pub id: EdgeId,
    /// The edge's last reported load, 0 to 1.
    pub load: f64,
    pub region: String,
    /// The controller's ranking score, lower first.
    pub score: f64,
    /// The TLS name of the edge's client-facing certificate.
    pub server_name: String,
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}` with
/// a 4xx/5xx status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: ErrorBody,
}

/// A machine-readable code (docs/api.md lists them) and a sentence for
/// people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ErrorAnswer {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorAnswer {
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    const CONTROL_PLANE_MD: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/control-plane.md"
    ));
    const API_MD: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md"));

    /// The first JSON example after `heading` in a Markdown document.
    fn example(doc: &str, heading: &str) -> Value {
        let section = doc
            .split_once(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("no heading {heading:?}"))
            .1;
        let block = section
            .split_once("```json\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .unwrap_or_else(|| panic!("no JSON example under {heading:?}"))
            .0;
        serde_json::from_str(block).unwrap_or_else(|e| panic!("{heading:?} example: {e}"))
    }

    fn located() -> NearestAnswer {
        NearestAnswer {
            client: NearestClient {
                ip: "81.2.69.142".parse().unwrap(),
                location: Some(ClientLocation {
                    city: Some("London".into()),
                    country: Some("GB".into()),
                    lat: 51.5142,
                    lon: -0.0931,
                }),
                source: ClientIpSource::Query,
            },
            edges: vec![NearestEdge {
                addr: "203.0.113.7:4433".into(),
                cert_sha256: vec![],
                city: "lhr".into(),
                distance_km: Some(12.5),
                est_rtt_ms: Some(0.2),
                id: 3,
                load: 0.05,
                region: "eu-west".into(),
                score: 0.3,
                server_name: "edge3.example.net".into(),
            }],
        }
    }

    fn unlocated() -> NearestAnswer {
        NearestAnswer {
            client: NearestClient {
                ip: "2001:db8::1".parse().unwrap(),
                location: None,
                source: ClientIpSource::Header,
            },
            edges: vec![NearestEdge {
                addr: "[2001:db8::7]:4433".into(),
                cert_sha256: vec![CertHash([0x5c; 32])],
                city: "sin".into(),
                distance_km: None,
                est_rtt_ms: None,
                id: 7,
                load: 0.0,
                region: "ap".into(),
                score: 0.0,
                server_name: "edge7.example.net".into(),
            }],
        }
    }

    #[test]
    fn answers_survive_a_round_trip() {
        for answer in [located(), unlocated()] {
            let text = serde_json::to_string(&answer).unwrap();
            let back: NearestAnswer = serde_json::from_str(&text).unwrap();
            assert_eq!(back, answer, "{text}");
        }
        let error = ErrorAnswer::new("rate_limited", "too many lookups");
        let text = serde_json::to_string(&error).unwrap();
        assert_eq!(serde_json::from_str::<ErrorAnswer>(&text).unwrap(), error);
    }

    #[test]
    fn the_nearest_answer_is_the_documented_one() {
        let documented = example(CONTROL_PLANE_MD, "## Nearest edge");
        assert_eq!(serde_json::to_value(located()).unwrap(), documented);
        let parsed: NearestAnswer = serde_json::from_value(documented).unwrap();
        assert_eq!(parsed, located());
    }

    #[test]
    fn the_error_answer_is_the_documented_one() {
        let documented = example(API_MD, "## Errors");
        let error = ErrorAnswer::new("invalid_edge", "to=\"x\" is not an edge id");
        assert_eq!(serde_json::to_value(&error).unwrap(), documented);
        assert_eq!(
            serde_json::from_value::<ErrorAnswer>(documented).unwrap(),
            error
        );
        assert_eq!(
            error.error.to_string(),
            "invalid_edge: to=\"x\" is not an edge id"
        );
    }

    /// The bytes are those of the same answer built as a `serde_json::Value`
    /// (sorted keys), as the controller built it before these types, with
    /// every absent value an explicit `null`.
    #[test]
    fn serialised_bytes_are_sorted_with_explicit_nulls() {
        for answer in [located(), unlocated()] {
            let text = serde_json::to_string(&answer).unwrap();
            let as_value = serde_json::to_value(&answer).unwrap().to_string();
            assert_eq!(text, as_value);
        }
        assert_eq!(
            serde_json::to_string(&unlocated()).unwrap(),
            r#"{"client":{"ip":"2001:db8::1","location":null,"source":"header"},"edges":[{"addr":"[2001:db8::7]:4433","cert_sha256":["5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c5c"],"city":"sin","distance_km":null,"est_rtt_ms":null,"id":7,"load":0.0,"region":"ap","score":0.0,"server_name":"edge7.example.net"}]}"#
        );
        let error = serde_json::to_string(&ErrorAnswer::new("not_found", "no such endpoint"));
        assert_eq!(
            error.unwrap(),
            json!({"error": {"code": "not_found", "message": "no such endpoint"}}).to_string()
        );
    }

    #[test]
    fn every_address_source_is_a_lowercase_word() {
        for (source, word) in [
            (ClientIpSource::Query, "query"),
            (ClientIpSource::Header, "header"),
            (ClientIpSource::Peer, "peer"),
        ] {
            assert_eq!(serde_json::to_value(source).unwrap(), word);
            assert_eq!(
                serde_json::from_value::<ClientIpSource>(word.into()).unwrap(),
                source
            );
        }
        // A word a later controller may add does not break older clients.
        assert_eq!(
            serde_json::from_value::<ClientIpSource>("proxy".into()).unwrap(),
            ClientIpSource::Unknown
        );
    }
}
