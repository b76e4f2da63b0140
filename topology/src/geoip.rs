//! GeoIP lookup: client IP address to location, from any MaxMind-format
//! database whose records have coordinates, plus a writer for the lab's own
//! small database (and for tests, databases of any shape).
//!
//! Why: the nearest-edge shortlist (docs/control-plane.md, "Nearest edge") starts from where the client
//! probably is. Databases come from outside (a downloaded GeoLite2 file, an
//! operator's mount), so every failure is a typed error, never a panic: a
//! missing file, a corrupt file, or a database without coordinates (Country
//! or ASN databases) is reported when opening, and a corrupt record when
//! looking it up. The caller can then fall back to the region-spread
//! shortlist.
//!
//! Which databases: judged by what their records hold, not by their type
//! name, since vendors name them freely. Opening samples records to find
//! the fields ([`GeoIpFields`]): GeoIP2-shaped records (GeoIP2/GeoLite2
//! City, GeoIP2 Enterprise, ISP-plus-location, DB-IP: `location.latitude`,
//! `location.longitude`, `city.names.en`, `country.iso_code`) or IPinfo's
//! flat ones (`lat`/`lng` as strings or doubles, `city`, `country`).
//!
//! The lab places loopback addresses (127.x.y.z) in real cities; it writes
//! its database with [`write_lab_db`] and reads it back through the same
//! [`GeoIpDb`] as production.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use maxminddb::{LookupResult, MaxMindDbError, PathElement, Reader, WithinOptions};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

use crate::geo::GeoPoint;

mod writer;

pub use writer::{write_db, write_lab_db, MmdbValue, LAB_DATABASE_TYPE};

/// How many records opening reads at most to find a database's fields.
/// Why a bound: a full database has millions of networks and opening must
/// stay fast (the controller opens it at start and on every reload); a
/// location database has coordinates in its first records, so 10,000
/// (milliseconds of decoding) is far more than needed to tell it from a
/// Country or ASN database, which has none anywhere.
pub const SAMPLE_RECORDS: usize = 10_000;

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

/// How a database's records hold their coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeoIpSchema {
    /// GeoIP2 maps: `location.latitude`/`longitude`, `city.names.en`,
    /// `country.iso_code` (MaxMind, DB-IP).
    GeoIp2,
    /// IPinfo's flat fields: `lat`/`lng`, `city`, `country`.
    IpInfo,
}

/// What opening found in a database's sampled records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoIpFields {
    /// Where the coordinates are (every accepted database has them).
    pub schema: GeoIpSchema,
    /// Some sampled record names a city.
    pub city: bool,
    /// Some sampled record names a country.
    pub country: bool,
}

impl fmt::Display for GeoIpFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.schema {
            GeoIpSchema::GeoIp2 => f.write_str("coordinates (GeoIP2 location)")?,
            GeoIpSchema::IpInfo => f.write_str("coordinates (IPinfo lat/lng)")?,
        }
        if self.city {
            f.write_str(", city")?;
        }
        if self.country {
            f.write_str(", country")?;
        }
        Ok(())
    }
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
    /// A valid database, but none of its sampled records has coordinates
    /// (a Country or ASN database, say).
    #[error(
        "GeoIP database of type {database_type:?} has no location data: no coordinates in its sampled records (fields found: {})",
        list_or_none(fields)
    )]
    NoLocationData {
        /// The type the database declares.
        database_type: String,
        /// The top-level fields of its sampled records, sorted.
        fields: Vec<String>,
    },
    /// A lookup hit a corrupt part of the database.
    #[error("corrupt GeoIP record for {ip}: {reason}")]
    CorruptRecord {
        /// The address looked up.
        ip: IpAddr,
        /// What went wrong.
        reason: String,
    },
    /// [`write_lab_db`] or [`write_db`] was given an entry it cannot write.
    #[error("cannot write lab GeoIP database: {0}")]
    LabDb(String),
}

fn list_or_none(fields: &[String]) -> String {
    if fields.is_empty() {
        "none".to_string()
    } else {
        fields.join(", ")
    }
}

/// An open database with location data.
pub struct GeoIpDb {
    reader: Reader<Vec<u8>>,
    fields: GeoIpFields,
}

impl std::fmt::Debug for GeoIpDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.reader.metadata();
        f.debug_struct("GeoIpDb")
            .field("database_type", &m.database_type)
            .field("ip_version", &m.ip_version)
            .field("node_count", &m.node_count)
            .field("fields", &self.fields)
            .finish()
    }
}

/// The subset of a GeoIP2 record this crate reads.
#[derive(Deserialize)]
struct GeoIp2Record {
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

/// The subset of an IPinfo record this crate reads.
#[derive(Deserialize)]
struct IpInfoRecord {
    #[serde(default)]
    lat: Option<Coordinate>,
    #[serde(default)]
    lng: Option<Coordinate>,
    #[serde(default)]
    city: Option<String>,
    #[serde(default)]
    country: Option<String>,
}

/// A latitude or longitude stored as a number or as a decimal string
/// (IPinfo writes strings); an empty string means "unknown".
struct Coordinate(Option<f64>);

impl<'de> Deserialize<'de> for Coordinate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Coordinate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a coordinate (number or decimal string)")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Coordinate, E> {
                Ok(Coordinate(Some(v)))
            }
            fn visit_f32<E: serde::de::Error>(self, v: f32) -> Result<Coordinate, E> {
                Ok(Coordinate(Some(v.into())))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Coordinate, E> {
                Ok(Coordinate(Some(v as f64)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Coordinate, E> {
                Ok(Coordinate(Some(v as f64)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Coordinate, E> {
                let v = v.trim();
                if v.is_empty() {
                    return Ok(Coordinate(None));
                }
                v.parse()
                    .map(|c| Coordinate(Some(c)))
                    .map_err(|_| E::custom(format!("coordinate {v:?} is not a number")))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A record's place, before its coordinates are checked.
struct Place {
    lat: f64,
    lon: f64,
    city: Option<String>,
    country: Option<String>,
}

impl GeoIp2Record {
    fn place(self) -> Option<Place> {
        let Location {
            latitude: Some(lat),
            longitude: Some(lon),
        } = self.location?
        else {
            return None;
        };
        Some(Place {
            lat,
            lon,
            city: self.city.and_then(|c| c.names).and_then(|n| n.en),
            country: self.country.and_then(|c| c.iso_code),
        })
    }
}

impl IpInfoRecord {
    fn place(self) -> Option<Place> {
        Some(Place {
            lat: self.lat?.0?,
            lon: self.lng?.0?,
            city: self.city.filter(|c| !c.is_empty()),
            country: self.country.filter(|c| !c.is_empty()),
        })
    }
}

/// What sampling a database's records found.
#[derive(Default)]
struct Sample {
    /// Top-level fields of the records read.
    keys: BTreeSet<String>,
    /// Where the first record with coordinates had them.
    schema: Option<GeoIpSchema>,
    /// The first record that failed to decode, if any.
    corrupt: Option<String>,
}

impl Sample {
    fn has(&self, key: &str) -> bool {
        self.keys.contains(key)
    }

    /// Enough seen: coordinates, a city and a country.
    fn complete(&self) -> bool {
        self.schema.is_some() && self.has("city") && self.has("country")
    }

    /// Reads one record into the sample.
    fn add(&mut self, result: &LookupResult<'_, Vec<u8>>) -> Result<(), MaxMindDbError> {
        let Some(keys) = result.decode::<BTreeMap<String, IgnoredAny>>()? else {
            return Ok(());
        };
        if self.schema.is_none() {
            self.schema = record_schema(result, &keys)?;
        }
        self.keys.extend(keys.into_keys());
        Ok(())
    }

    /// The fields of a database with coordinates, or why it is refused.
    fn into_fields(self, database_type: &str) -> Result<GeoIpFields, GeoIpError> {
        match (self.schema, self.corrupt) {
            (Some(schema), _) => Ok(GeoIpFields {
                schema,
                city: self.keys.contains("city"),
                country: self.keys.contains("country"),
            }),
            (None, Some(reason)) => Err(GeoIpError::Corrupt(reason)),
            (None, None) => Err(GeoIpError::NoLocationData {
                database_type: database_type.to_string(),
                fields: self.keys.into_iter().collect(),
            }),
        }
    }
}

/// Where a record with top-level `keys` has its coordinates, if it has any.
fn record_schema(
    result: &LookupResult<'_, Vec<u8>>,
    keys: &BTreeMap<String, IgnoredAny>,
) -> Result<Option<GeoIpSchema>, MaxMindDbError> {
    if keys.contains_key("lat") && keys.contains_key("lng") {
        return Ok(Some(GeoIpSchema::IpInfo));
    }
    if !keys.contains_key("location") {
        return Ok(None);
    }
    let location: Option<BTreeMap<String, IgnoredAny>> =
        result.decode_path(&[PathElement::Key("location")])?;
    Ok(location
        .filter(|l| l.contains_key("latitude") && l.contains_key("longitude"))
        .map(|_| GeoIpSchema::GeoIp2))
}

/// Reads up to [`SAMPLE_RECORDS`] records, in address order, until it has
/// seen coordinates, a city and a country. A record that fails to decode is
/// noted and skipped (the database is refused as corrupt only if no other
/// record shows coordinates); a broken search tree fails at once.
fn sample(reader: &Reader<Vec<u8>>) -> Result<Sample, String> {
    let mut sample = Sample::default();
    let networks = reader
        .networks(WithinOptions::default())
        .map_err(|e| e.to_string())?;
    for item in networks.take(SAMPLE_RECORDS) {
        let result = item.map_err(|e| e.to_string())?;
        if let Err(e) = sample.add(&result) {
            sample.corrupt.get_or_insert_with(|| e.to_string());
        }
        if sample.complete() {
            break;
        }
    }
    Ok(sample)
}

impl GeoIpDb {
    /// Opens the database at `path` (read fully into memory).
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

    /// Opens a database held in memory, sampling its records to find its
    /// fields; refused when no sampled record has coordinates.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GeoIpError> {
        let reader = parse(bytes)?;
        let found = guard(|| sample(&reader))
            .and_then(|r| r)
            .map_err(GeoIpError::Corrupt)?;
        let fields = found.into_fields(&reader.metadata().database_type)?;
        Ok(GeoIpDb { reader, fields })
    }

    /// The type the database declares ("GeoLite2-City", "RTN-Lab-City").
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }

    /// The IP version of the database's tree: 4 (IPv4 only) or 6.
    pub fn ip_version(&self) -> u16 {
        self.reader.metadata().ip_version
    }

    /// What opening found in the records.
    pub fn fields(&self) -> GeoIpFields {
        self.fields
    }

    /// Walks the whole database and checks its structure. Opening only checks
    /// the metadata and a sample of records; this finds corrupt trees and
    /// records up front, at a cost proportional to the database size (seconds
    /// for a full GeoLite2 City).
    pub fn verify(&self) -> Result<(), GeoIpError> {
        guard(|| self.reader.verify())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .map_err(GeoIpError::Corrupt)
    }

    /// The location of `ip`: `Ok(None)` when the database has no record for
    /// it or the record has no coordinates, and for IPv6 addresses in an
    /// IPv4-only database. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are
    /// always looked up as IPv4: that is the client's real address (a
    /// dual-stack socket's view of an IPv4 peer).
    pub fn lookup(&self, ip: IpAddr) -> Result<Option<GeoLocation>, GeoIpError> {
        let ip = match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None if self.ip_version() == 4 => return Ok(None),
                None => ip,
            },
            v4 => v4,
        };
        let corrupt = |reason: String| GeoIpError::CorruptRecord { ip, reason };
        let place = guard(|| self.place(ip))
            .map_err(corrupt)?
            .map_err(|e| corrupt(e.to_string()))?;
        let Some(place) = place else {
            return Ok(None);
        };
        let point = GeoPoint::new(place.lat, place.lon).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(GeoLocation {
            point,
            city: place.city,
            country: place.country,
        }))
    }

    /// The record of `ip`, decoded in the database's schema.
    fn place(&self, ip: IpAddr) -> Result<Option<Place>, MaxMindDbError> {
        let result = self.reader.lookup(ip)?;
        if !result.has_data() {
            return Ok(None);
        }
        Ok(match self.fields.schema {
            GeoIpSchema::GeoIp2 => result
                .decode::<GeoIp2Record>()?
                .and_then(GeoIp2Record::place),
            GeoIpSchema::IpInfo => result
                .decode::<IpInfoRecord>()?
                .and_then(IpInfoRecord::place),
        })
    }
}

/// Parses any MaxMind database, whatever its type.
fn parse(bytes: Vec<u8>) -> Result<Reader<Vec<u8>>, GeoIpError> {
    guard(|| Reader::from_source(bytes))
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(GeoIpError::Corrupt)
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

    /// The fields of a GeoIP2 City database, for reading broken ones that
    /// opening refuses.
    const GEOIP2: GeoIpFields = GeoIpFields {
        schema: GeoIpSchema::GeoIp2,
        city: true,
        country: true,
    };

    fn path(name: &str) -> PathBuf {
        PathBuf::from(DIR).join(name)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    /// Each of `addrs` looks up fine, without a location.
    fn assert_unknown(db: &GeoIpDb, addrs: &[&str]) {
        for a in addrs {
            assert_eq!(db.lookup(ip(a)).expect("ok"), None, "{a}");
        }
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
        assert_unknown(&db, &["10.0.0.1", "127.0.0.1", "::1"]);
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
    fn databases_without_coordinates_are_refused_with_their_fields() {
        for (name, field) in [
            ("GeoLite2-Country-Test.mmdb", "country"),
            ("GeoLite2-ASN-Test.mmdb", "autonomous_system_number"),
        ] {
            match GeoIpDb::open(path(name)) {
                Err(e @ GeoIpError::NoLocationData { .. }) => {
                    let GeoIpError::NoLocationData {
                        database_type,
                        fields,
                    } = &e
                    else {
                        unreachable!()
                    };
                    assert!(name.starts_with(database_type.as_str()), "{name}: {e}");
                    assert!(fields.iter().any(|f| f == field), "{name}: {fields:?}");
                    assert!(
                        !fields.iter().any(|f| f == "location"),
                        "{name}: {fields:?}"
                    );
                    let text = e.to_string();
                    assert!(
                        text.contains(database_type.as_str()) && text.contains(field),
                        "{text}"
                    );
                }
                other => panic!("{name}: expected NoLocationData, got {other:?}"),
            }
        }
    }

    #[test]
    fn maxmind_city_databases_report_their_fields() {
        for name in ["GeoLite2-City-Test.mmdb", "GeoIP2-City-Test.mmdb"] {
            let db = GeoIpDb::open(path(name)).expect(name);
            let fields = db.fields();
            assert_eq!(fields.schema, GeoIpSchema::GeoIp2, "{name}");
            assert!(fields.city && fields.country, "{name}: {fields:?}");
            assert_eq!(
                fields.to_string(),
                "coordinates (GeoIP2 location), city, country"
            );
            assert_eq!(db.ip_version(), 6);
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
        let db = GeoIpDb::open(path("GeoLite2-City-Test.mmdb")).expect("city db");
        let mapped = db
            .lookup(ip("::ffff:81.2.69.142"))
            .expect("ok")
            .expect("found");
        assert_eq!(mapped.city.as_deref(), Some("London"));
        assert_eq!(Some(mapped), db.lookup(ip("81.2.69.142")).expect("ok"));
    }

    fn ipinfo(lat: MmdbValue, lng: MmdbValue, city: &str, country: &str) -> MmdbValue {
        MmdbValue::map([
            ("city", MmdbValue::str(city)),
            ("country", MmdbValue::str(country)),
            ("lat", lat),
            ("lng", lng),
            ("postal_code", MmdbValue::str("")),
        ])
    }

    #[test]
    fn ipinfo_databases_with_string_or_double_coordinates() {
        let bytes = write_db(
            "ipinfo standard_location.mmdb",
            6,
            &[
                (
                    ip("81.2.69.0"),
                    24,
                    ipinfo(
                        MmdbValue::str("51.5142"),
                        MmdbValue::str("-0.0931"),
                        "London",
                        "GB",
                    ),
                ),
                (
                    ip("2001:db8::"),
                    32,
                    ipinfo(
                        MmdbValue::Double(35.6895),
                        MmdbValue::Double(139.6917),
                        "Tokyo",
                        "JP",
                    ),
                ),
                (
                    ip("10.0.0.0"),
                    8,
                    ipinfo(MmdbValue::str(""), MmdbValue::str(""), "", ""),
                ),
            ],
        )
        .expect("write");
        let db = GeoIpDb::from_bytes(bytes).expect("ipinfo db");
        assert_eq!(db.fields().schema, GeoIpSchema::IpInfo);
        assert_eq!(
            db.fields().to_string(),
            "coordinates (IPinfo lat/lng), city, country"
        );
        let london = db.lookup(ip("81.2.69.142")).expect("ok").expect("found");
        assert_eq!((london.point.lat(), london.point.lon()), (51.5142, -0.0931));
        assert_eq!(london.city.as_deref(), Some("London"));
        assert_eq!(london.country.as_deref(), Some("GB"));
        let mapped = db.lookup(ip("::ffff:81.2.69.1")).expect("ok");
        assert_eq!(mapped.and_then(|l| l.city).as_deref(), Some("London"));
        let tokyo = db.lookup(ip("2001:db8::7")).expect("ok").expect("found");
        assert_eq!((tokyo.point.lat(), tokyo.point.lon()), (35.6895, 139.6917));
        assert_eq!(tokyo.country.as_deref(), Some("JP"));
        // A record with empty coordinates, and addresses with no record.
        assert_unknown(&db, &["10.1.2.3", "8.8.8.8", "2001:db9::1"]);
        db.verify().expect("valid");
    }

    #[test]
    fn enterprise_shaped_database_without_city_in_its_name() {
        let record = |lat: f64, lon: f64| {
            MmdbValue::map([
                ("isp", MmdbValue::str("Example ISP")),
                (
                    "traits",
                    MmdbValue::map([("autonomous_system_number", MmdbValue::U32(64_500))]),
                ),
                (
                    "country",
                    MmdbValue::map([("iso_code", MmdbValue::str("SE"))]),
                ),
                (
                    "location",
                    MmdbValue::map([
                        ("accuracy_radius", MmdbValue::U16(20)),
                        ("latitude", MmdbValue::Double(lat)),
                        ("longitude", MmdbValue::Double(lon)),
                    ]),
                ),
            ])
        };
        let traits_only = MmdbValue::map([("isp", MmdbValue::str("Anycast"))]);
        let bytes = write_db(
            "GeoIP2-Enterprise",
            4,
            &[
                (ip("1.0.0.0"), 24, traits_only),
                (ip("89.160.20.0"), 24, record(58.4167, 15.6167)),
            ],
        )
        .expect("write");
        let db = GeoIpDb::from_bytes(bytes).expect("enterprise db");
        assert!(!db.database_type().contains("City"));
        assert_eq!(db.ip_version(), 4);
        assert_eq!(
            db.fields().to_string(),
            "coordinates (GeoIP2 location), country"
        );
        let loc = db.lookup(ip("89.160.20.200")).expect("ok").expect("found");
        assert_eq!((loc.point.lat(), loc.point.lon()), (58.4167, 15.6167));
        assert_eq!((loc.city, loc.country.as_deref()), (None, Some("SE")));
        // A record without location, no record, IPv6 in an IPv4 database.
        assert_unknown(&db, &["1.0.0.1", "9.9.9.9", "2001:db8::1"]);
        assert!(db.lookup(ip("::ffff:89.160.20.1")).expect("ok").is_some());
    }

    #[test]
    fn written_database_without_coordinates_lists_its_fields() {
        let asn = MmdbValue::map([
            ("autonomous_system_number", MmdbValue::U32(64_500)),
            ("city", MmdbValue::str("not a place")),
        ]);
        let bytes = write_db("Any-City-Name", 6, &[(ip("2001:db8::"), 32, asn)]).expect("write");
        match GeoIpDb::from_bytes(bytes) {
            Err(GeoIpError::NoLocationData {
                database_type,
                fields,
            }) => {
                assert_eq!(database_type, "Any-City-Name");
                assert_eq!(fields, ["autonomous_system_number", "city"]);
            }
            other => panic!("expected NoLocationData, got {other:?}"),
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
                // The two "Test" databases are corrupt or have no location
                // data.
                Err(e) => {
                    saw_error += 1;
                    assert!(
                        matches!(
                            e,
                            GeoIpError::NoLocationData { .. } | GeoIpError::Corrupt(_)
                        ),
                        "{name}: {e}"
                    );
                }
                Ok(db) => {
                    // The broken City database opens (sampling reads records
                    // with well-formed coordinates); its corruption shows on
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
            // Whatever sampling says, reading the corrupt parts must not
            // panic either.
            let db = GeoIpDb {
                reader: parse(bytes).expect("metadata is intact"),
                fields: GEOIP2,
            };
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
