//! GeoIP lookup: client IP address to location, from a MaxMind City
//! database, plus a writer for the lab's own small database.
//!
//! Why: the nearest-edge shortlist (docs/control-plane.md, "Nearest edge") starts from where the client
//! probably is. Databases come from outside (a downloaded GeoLite2 file, an
//! operator's mount), so every failure is a typed error, never a panic: a
//! missing file, a corrupt file, or a database of the wrong kind (Country or
//! ASN databases have no coordinates) is reported when opening, and a corrupt
//! record when looking it up. The caller can then fall back to the
//! region-spread shortlist.
//!
//! The lab places loopback addresses (127.x.y.z) in real cities; it writes
//! its database with [`write_lab_db`] and reads it back through the same
//! [`GeoIpDb`] as production.

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use maxminddb::{MaxMindDbError, Reader};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::geo::GeoPoint;

mod writer;

pub use writer::{write_lab_db, LAB_DATABASE_TYPE};

/// Where an IP address is, as far as the database knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeoLocation {
    /// Coordinates.
    pub point: GeoPoint,
    /// City name in English, if the record has one.
    pub city: Option<String>,
    /// ISO 3166-1 alpha-2 country code, if the record has one.
    pub country: Option<String>,
}

/// Why a database could not be opened or read.
#[derive(Debug, Error)]
pub enum GeoIpError {
    /// The file does not exist.
    #[error("GeoIP database {path} not found")]
    Missing {
        /// The path that was tried.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("cannot read GeoIP database {path}: {source}")]
    Io {
        /// The path that was tried.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The bytes are not a valid MaxMind database.
    #[error("corrupt GeoIP database: {0}")]
    Corrupt(String),
    /// A valid database, but not a City database: it has no coordinates.
    #[error("GeoIP database is of type {database_type:?}, not a City database")]
    NotCityDatabase {
        /// The type the database declares.
        database_type: String,
    },
    /// A lookup hit a corrupt part of the database.
    #[error("corrupt GeoIP record for {ip}: {reason}")]
    CorruptRecord {
        /// The address looked up.
        ip: IpAddr,
        /// What went wrong.
        reason: String,
    },
    /// [`write_lab_db`] was given an entry it cannot write.
    #[error("cannot write lab GeoIP database: {0}")]
    LabDb(String),
}

/// An open City database.
pub struct GeoIpDb {
    reader: Reader<Vec<u8>>,
}

impl std::fmt::Debug for GeoIpDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.reader.metadata();
        f.debug_struct("GeoIpDb")
            .field("database_type", &m.database_type)
            .field("ip_version", &m.ip_version)
            .field("node_count", &m.node_count)
            .finish()
    }
}

/// The subset of the GeoIP2 City record this crate reads.
#[derive(Deserialize)]
struct CityRecord {
    #[serde(default)]
    city: Option<Named>,
    #[serde(default)]
    country: Option<Country>,
    #[serde(default)]
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    names: Option<Names>,
}

#[derive(Deserialize)]
struct Names {
    #[serde(default)]
    en: Option<String>,
}

#[derive(Deserialize)]
struct Country {
    #[serde(default)]
    iso_code: Option<String>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

impl GeoIpDb {
    /// Opens the City database at `path` (read fully into memory).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GeoIpError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                GeoIpError::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                GeoIpError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        Self::from_bytes(bytes)
    }

    /// Opens a City database held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoIpError> {
        let db = Self::parse(bytes)?;
        let database_type = &db.reader.metadata().database_type;
        if !database_type.contains("City") {
            return Err(GeoIpError::NotCityDatabase {
                database_type: database_type.clone(),
            });
        }
        Ok(db)
    }

    /// Parses any MaxMind database, whatever its type.
    fn parse(bytes: Vec<u8>) -> Result<Self, GeoIpError> {
        let reader = guard(|| Reader::from_source(bytes))
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(GeoIpError::Corrupt)?;
        Ok(GeoIpDb { reader })
    }

    /// The type the database declares ("GeoLite2-City", "RTN-Lab-City").
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// Walks the whole database and checks its structure. Opening only checks
    /// the metadata; this finds corrupt trees and records up front, at a cost
    /// proportional to the database size (seconds for a full GeoLite2 City).
    pub fn verify(&self) -> Result<(), GeoIpError> {
        guard(|| self.reader.verify())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(GeoIpError::Corrupt)
    }

    /// The location of `ip`: `Ok(None)` when the database has no record for
    /// it or the record has no coordinates, and for IPv6 addresses in an
    /// IPv4-only database (IPv4-mapped IPv6 addresses are looked up as IPv4).
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<GeoLocation>, GeoIpError> {
        let ip = match ip {
            IpAddr::V6(v6) if self.reader.metadata().ip_version == 4 => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => return Ok(None),
            },
            other => other,
        };
        let corrupt = |reason: String| GeoIpError::CorruptRecord { ip, reason };
        let record = guard(|| -> Result<Option<CityRecord>, MaxMindDbError> {
            let result = self.reader.lookup(ip)?;
            if !result.has_data() {
                return Ok(None);
            }
            result.decode::<CityRecord>()
        })
        .map_err(corrupt)?
        .map_err(|e| corrupt(e.to_string()))?;
        let Some(record) = record else {
            return Ok(None);
        };
        let Some(Location {
            latitude: Some(lat),
            longitude: Some(lon),
        }) = record.location
        else {
            return Ok(None);
        };
        let point = GeoPoint::new(lat, lon).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(GeoLocation {
            point,
            city: record.city.and_then(|c| c.names).and_then(|n| n.en),
            country: record.country.and_then(|c| c.iso_code),
        }))
    }
}

/// Runs a reader call and turns a panic into an error. The maxminddb crate
/// validates its input and is fuzzed, but a database is outside input and a
/// panic would take the controller down; this is the last line of defence.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        format!("reader panicked: {what}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/geoip/");

    fn path(name: &str) -> PathBuf {
        PathBuf::from(DIR).join(name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn geolite2_city_lookup_matches_source_json() {
        let db = GeoIpDb::open(path("GeoLite2-City-Test.mmdb")).expect("city db");
        assert_eq!(db.database_type(), "GeoLite2-City");
        // GeoLite2-City-Test.json: 81.2.69.142/31 is London, GB, 51.5142,-0.0931.
        let loc = db.lookup(ip("81.2.69.142")).expect("ok").expect("found");
        assert_eq!((loc.point.lat(), loc.point.lon()), (51.5142, -0.0931));
        assert_eq!(loc.city.as_deref(), Some("London"));
        assert_eq!(loc.country.as_deref(), Some("GB"));
        // 89.160.20.128/25 is Linköping, SE, 58.4167,15.6167.
        let loc = db.lookup(ip("89.160.20.200")).expect("ok").expect("found");
        assert_eq!((loc.point.lat(), loc.point.lon()), (58.4167, 15.6167));
        assert_eq!(loc.city.as_deref(), Some("Linköping"));
        // 2001:218::/32 has coordinates (Japan) but no city.
        let loc = db.lookup(ip("2001:218::1")).expect("ok").expect("found");
        assert_eq!((loc.point.lat(), loc.point.lon()), (35.68536, 139.75309));
        assert_eq!(loc.city, None);
        assert_eq!(loc.country.as_deref(), Some("JP"));
        // Addresses not in the database.
        assert_eq!(db.lookup(ip("10.0.0.1")).expect("ok"), None);
        assert_eq!(db.lookup(ip("127.0.0.1")).expect("ok"), None);
        assert_eq!(db.lookup(ip("::1")).expect("ok"), None);
        db.verify().expect("valid database");
    }

    #[test]
    fn geoip2_city_ipv4_in_ipv6_tree_and_records_without_coordinates() {
        let db = GeoIpDb::open(path("GeoIP2-City-Test.mmdb")).expect("city db");
        // GeoIP2-City-Test.json: ::214.0.0.0/120 is Singapore, 1.336,103.7716.
        let loc = db.lookup(ip("214.0.0.7")).expect("ok").expect("found");
        assert_eq!((loc.point.lat(), loc.point.lon()), (1.336, 103.7716));
        assert_eq!(loc.city.as_deref(), Some("Singapore"));
        assert_eq!(loc.country.as_deref(), Some("SG"));
        // ::214.0.1.0/120 is Melbourne, AU.
        let loc = db.lookup(ip("214.0.1.1")).expect("ok").expect("found");
        assert_eq!(loc.city.as_deref(), Some("Melbourne"));
        // 214.1.1.0/24 has a record (traits only) but no location.
        assert_eq!(db.lookup(ip("214.1.1.1")).expect("ok"), None);
    }

    #[test]
    fn other_database_types_are_refused() {
        for name in ["GeoLite2-Country-Test.mmdb", "GeoLite2-ASN-Test.mmdb"] {
            match GeoIpDb::open(path(name)) {
                Err(GeoIpError::NotCityDatabase { database_type }) => {
                    assert!(!database_type.contains("City"), "{name}: {database_type}");
                }
                other => panic!("{name}: expected NotCityDatabase, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_and_unreadable_files() {
        match GeoIpDb::open(path("no-such-file.mmdb")) {
            Err(GeoIpError::Missing { path }) => assert!(path.ends_with("no-such-file.mmdb")),
            other => panic!("expected Missing, got {other:?}"),
        }
        match GeoIpDb::open(DIR) {
            Err(GeoIpError::Io { .. }) => {}
            other => panic!("expected Io for a directory, got {other:?}"),
        }
        for bytes in [Vec::new(), b"not a database".to_vec(), vec![0xAB; 4096]] {
            assert!(matches!(
                GeoIpDb::from_bytes(bytes),
                Err(GeoIpError::Corrupt(_))
            ));
        }
        let readme = std::fs::read(path("README.md")).expect("readme");
        assert!(matches!(
            GeoIpDb::from_bytes(readme),
            Err(GeoIpError::Corrupt(_))
        ));
    }

    /// Addresses spread over the IPv4 space and the test databases' IPv6
    /// networks, to walk many parts of a corrupt tree.
    fn sweep() -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = (0..=255u8)
            .flat_map(|a| {
                [0u8, 1, 2, 3, 128, 255].map(move |b| IpAddr::V4(Ipv4Addr::new(a, b, 1, 2)))
            })
            .collect();
        for s in [
            "1.1.1.1",
            "1.1.1.32",
            "2.125.160.216",
            "81.2.69.142",
            "89.160.20.128",
            "214.0.0.1",
            "2001:220::",
            "2001:218::",
            "::1.1.1.1",
            "2a02:cf40::",
            "::ffff:1.1.1.1",
        ] {
            out.push(ip(s));
        }
        out
    }

    #[test]
    fn broken_databases_give_errors_not_panics() {
        let mut saw_error = 0;
        for name in [
            "GeoIP2-City-Test-Broken-Double-Format.mmdb",
            "MaxMind-DB-test-broken-pointers-24.mmdb",
            "MaxMind-DB-test-broken-search-tree-24.mmdb",
        ] {
            let bytes = std::fs::read(path(name)).expect("test file");
            match GeoIpDb::from_bytes(bytes.clone()) {
                Err(e) => {
                    // The two "Test" databases are refused for their type.
                    saw_error += 1;
                    assert!(matches!(
                        e,
                        GeoIpError::NotCityDatabase { .. } | GeoIpError::Corrupt(_)
                    ));
                }
                Ok(db) => {
                    // The broken City database opens; its corruption shows on
                    // lookup (GeoIP2-City-Test.json: 2001:220::/32 has a double).
                    assert!(db.verify().is_err(), "{name}: verify passed");
                    let e = db.lookup(ip("2001:220::1")).expect_err("broken double");
                    assert!(matches!(e, GeoIpError::CorruptRecord { .. }), "{e}");
                    saw_error += 1;
                    for addr in sweep() {
                        let _ = db.lookup(addr);
                    }
                }
            }
            // Whatever the type check says, reading the corrupt parts must
            // not panic either.
            let db = GeoIpDb::parse(bytes).expect("metadata is intact");
            assert!(db.verify().is_err(), "{name}: verify passed");
            let errors = sweep()
                .into_iter()
                .filter(|&a| db.lookup(a).is_err())
                .count();
            if name.contains("pointers") {
                assert!(errors > 0, "{name}: no lookup failed");
            }
        }
        assert_eq!(saw_error, 3);
    }

    #[test]
    fn truncated_and_bit_flipped_databases_never_panic() {
        let good = std::fs::read(path("GeoLite2-City-Test.mmdb")).expect("test file");
        let probes = sweep();
        // Flip bytes all over the file (tree, data, metadata).
        let step = good.len() / 97;
        for i in (0..good.len()).step_by(step.max(1)) {
            let mut bad = good.clone();
            bad[i] ^= 0x5A;
            if let Ok(db) = GeoIpDb::from_bytes(bad) {
                for &a in probes.iter().step_by(7) {
                    let _ = db.lookup(a);
                }
            }
        }
        for cut in [1, 100, good.len() / 2, good.len() - 20] {
            let _ = GeoIpDb::from_bytes(good[..cut].to_vec());
        }
    }
}
