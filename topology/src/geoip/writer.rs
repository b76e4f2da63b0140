//! A minimal writer of the MaxMind DB format (version 2.0) for the lab.
//!
//! Why: the lab places loopback addresses in cities and must resolve them
//! through the same GeoIP path as production, so it needs a real database;
//! MaxMind's writer is a Perl/Go tool and the format is small enough to
//! write here. Layout, per the MaxMind DB specification:
//!
//! 1. binary search tree: `node_count` nodes of two records each (left for
//!    bit 0, right for bit 1), IPv4 (depth 32) or IPv6 (depth 128, IPv4 at
//!    `::a.b.c.d`), 24-bit records (32-bit
//!    when the file outgrows 24 bits). A record below `node_count` points to a
//!    node, equal to it means "no data", above it points into the data section
//!    at `record - node_count - 16`;
//! 2. sixteen zero bytes;
//! 3. data section: one value per distinct record: for the lab, a GeoIP2
//!    City map (`city.names.en`, `country.iso_code`,
//!    `location.latitude`/`longitude`); for tests, any shape ([`write_db`]);
//! 4. `"\xAB\xCD\xEFMaxMind.com"` and the metadata map.
//!
//! Overlapping networks resolve to the longest prefix, as in any routing
//! table; for the same network given twice, the last entry wins.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use super::{GeoIpError, GeoLocation};

/// The `database_type` of lab databases. [`super::GeoIpDb`] accepts any
/// database whose records have coordinates; the name only tells operators
/// (and logs) what the file is.
pub const LAB_DATABASE_TYPE: &str = "RTN-Lab-City";

const METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

/// Where IPv4 networks sit in an IPv6 tree: `::a.b.c.d`, below 96 zero bits
/// (the MaxMind DB specification's IPv4 subtree).
const IPV4_IN_IPV6_DEPTH: u8 = 96;

/// A value of the MaxMind DB data section: what [`write_db`] stores for
/// each network (any shape, so tests can write the records of any vendor).
#[derive(Debug, Clone, PartialEq)]
pub enum MmdbValue {
    /// UTF-8 string.
    Str(String),
    /// IEEE 754 double.
    Double(f64),
    /// Unsigned 16-bit integer.
    U16(u16),
    /// Unsigned 32-bit integer.
    U32(u32),
    /// Unsigned 64-bit integer.
    U64(u64),
    /// Map with string keys, in the order given.
    Map(Vec<(String, MmdbValue)>),
    /// Array.
    Array(Vec<MmdbValue>),
}

impl MmdbValue {
    /// A map from `(key, value)` pairs (keys borrowed for brevity).
    pub fn map<'a>(fields: impl IntoIterator<Item = (&'a str, MmdbValue)>) -> Self {
        MmdbValue::Map(
            fields
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// A string value.
    pub fn str(s: &str) -> Self {
        MmdbValue::Str(s.to_string())
    }
}

/// Builds an IPv4 City database mapping each `(network, prefix_len,
/// location)` to its location, as a GeoIP2 City record. Host bits beyond the
/// prefix are ignored (127.1.2.3/16 means 127.1.0.0/16). The output is
/// deterministic (its build time is 0), so the same entries always give the
/// same bytes.
///
/// Fails for a prefix longer than 32 or a database too large for 32-bit
/// records.
pub fn write_lab_db(entries: &[(Ipv4Addr, u8, GeoLocation)]) -> Result<Vec<u8>, GeoIpError> {
    let records: Vec<(IpAddr, u8, MmdbValue)> = entries
        .iter()
        .map(|(net, len, loc)| (IpAddr::V4(*net), *len, city_record(loc)))
        .collect();
    write_db(LAB_DATABASE_TYPE, 4, &records)
}

/// Builds a database of type `database_type` and `ip_version` (4 or 6)
/// mapping each `(network, prefix_len, record)` to its record, whatever the
/// record's shape. In an IPv6 database, IPv4 networks are stored at
/// `::a.b.c.d`; an IPv6 network in an IPv4 database is an error. Host bits
/// beyond the prefix are ignored and the output is deterministic, as for
/// [`write_lab_db`].
pub fn write_db(
    database_type: &str,
    ip_version: u16,
    entries: &[(IpAddr, u8, MmdbValue)],
) -> Result<Vec<u8>, GeoIpError> {
    let width = match ip_version {
        4 => 32,
        6 => 128,
        other => {
            return Err(GeoIpError::LabDb(format!(
                "IP version {other} (expected 4 or 6)"
            )))
        }
    };
    let networks = entries
        .iter()
        .map(|(net, len, _)| tree_network(*net, *len, ip_version))
        .collect::<Result<Vec<_>, _>>()?;

    // Data section: one record per distinct value.
    let mut data = Vec::new();
    let mut offsets: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut entry_data = Vec::with_capacity(entries.len());
    for (_, _, value) in entries {
        let mut record = Vec::new();
        encode(value, &mut record)?;
        let offset = *offsets.entry(record).or_insert_with_key(|record| {
            let at = data.len();
            data.extend_from_slice(record);
            at
        });
        entry_data.push(offset);
    }

    // Search tree. Inserting shorter prefixes first lets longer ones split
    // the records they fall into; a stable sort keeps "last entry wins".
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by_key(|&i| networks[i].1);
    let mut tree = Tree::new(width);
    for i in order {
        let (bits, len) = networks[i];
        tree.insert(bits, len, entry_data[i]);
    }

    let node_count = tree.nodes.len();
    let max_record = node_count as u64 + 16 + data.len() as u64;
    let record_size: u16 = if max_record < 1 << 24 {
        24
    } else if max_record < 1 << 32 {
        32
    } else {
        return Err(GeoIpError::LabDb(
            "database too large for 32-bit records".into(),
        ));
    };
    let node_count_u32 =
        u32::try_from(node_count).map_err(|_| GeoIpError::LabDb("too many tree nodes".into()))?;

    let mut out = Vec::with_capacity(node_count * record_size as usize / 4 + 16 + data.len() + 512);
    for node in &tree.nodes {
        for child in node {
            let value = match *child {
                Child::Empty => node_count as u64,
                Child::Node(n) => n as u64,
                Child::Data(offset) => node_count as u64 + 16 + offset as u64,
            };
            let bytes = value.to_be_bytes();
            out.extend_from_slice(&bytes[8 - record_size as usize / 8..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(METADATA_MARKER);
    let metadata = MmdbValue::map([
        ("binary_format_major_version", MmdbValue::U16(2)),
        ("binary_format_minor_version", MmdbValue::U16(0)),
        ("build_epoch", MmdbValue::U64(0)),
        ("database_type", MmdbValue::str(database_type)),
        (
            "description",
            MmdbValue::map([("en", MmdbValue::str("RTN lab database"))]),
        ),
        ("ip_version", MmdbValue::U16(ip_version)),
        ("languages", MmdbValue::Array(vec![MmdbValue::str("en")])),
        ("node_count", MmdbValue::U32(node_count_u32)),
        ("record_size", MmdbValue::U16(record_size)),
    ]);
    encode(&metadata, &mut out)?;
    Ok(out)
}

/// The bits and prefix length of `net/len` in a tree of `ip_version`.
fn tree_network(net: IpAddr, len: u8, ip_version: u16) -> Result<(u128, u8), GeoIpError> {
    let max = if net.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(GeoIpError::LabDb(format!(
            "prefix {net}/{len} is longer than {max} bits"
        )));
    }
    match (net, ip_version) {
        (IpAddr::V4(v4), 4) => Ok((u32::from(v4) as u128, len)),
        (IpAddr::V4(v4), _) => Ok((u32::from(v4) as u128, len + IPV4_IN_IPV6_DEPTH)),
        (IpAddr::V6(v6), 6) => Ok((u128::from(v6), len)),
        (IpAddr::V6(v6), _) => Err(GeoIpError::LabDb(format!(
            "IPv6 network {v6}/{len} in an IPv4 database"
        ))),
    }
}

fn city_record(loc: &GeoLocation) -> MmdbValue {
    let mut fields = Vec::new();
    if let Some(city) = &loc.city {
        fields.push((
            "city",
            MmdbValue::map([("names", MmdbValue::map([("en", MmdbValue::str(city))]))]),
        ));
    }
    if let Some(country) = &loc.country {
        fields.push((
            "country",
            MmdbValue::map([("iso_code", MmdbValue::str(country))]),
        ));
    }
    fields.push((
        "location",
        MmdbValue::map([
            ("latitude", MmdbValue::Double(loc.point.lat())),
            ("longitude", MmdbValue::Double(loc.point.lon())),
        ]),
    ));
    MmdbValue::map(fields)
}

#[derive(Debug, Clone, Copy)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

struct Tree {
    nodes: Vec<[Child; 2]>,
    /// Address bits: 32 (IPv4 tree) or 128 (IPv6 tree).
    width: u8,
}

impl Tree {
    fn new(width: u8) -> Self {
        Tree {
            nodes: vec![[Child::Empty; 2]],
            width,
        }
    }

    /// Points every address of `bits/len` at `data`, replacing what covered
    /// it so far (callers insert shorter prefixes first).
    fn insert(&mut self, bits: u128, len: u8, data: usize) {
        if len == 0 {
            // The whole space: the root is the only node left in use.
            self.nodes.truncate(1);
            self.nodes[0] = [Child::Data(data); 2];
            return;
        }
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (self.width - 1 - depth)) & 1) as usize;
            if depth + 1 == len {
                self.nodes[node][bit] = Child::Data(data);
                return;
            }
            node = match self.nodes[node][bit] {
                Child::Node(next) => next,
                // Split: a new node whose halves inherit what was there.
                inherited @ (Child::Empty | Child::Data(_)) => {
                    let next = self.nodes.len();
                    self.nodes.push([inherited; 2]);
                    self.nodes[node][bit] = Child::Node(next);
                    next
                }
            };
        }
    }
}

// Type numbers from the specification.
const TYPE_STRING: u8 = 2;
const TYPE_DOUBLE: u8 = 3;
const TYPE_UINT16: u8 = 5;
const TYPE_UINT32: u8 = 6;
const TYPE_MAP: u8 = 7;
const TYPE_UINT64: u8 = 9;
const TYPE_ARRAY: u8 = 11;

fn encode(value: &MmdbValue, out: &mut Vec<u8>) -> Result<(), GeoIpError> {
    match value {
        MmdbValue::Str(s) => {
            control(TYPE_STRING, s.len(), out)?;
            out.extend_from_slice(s.as_bytes());
        }
        MmdbValue::Double(d) => {
            control(TYPE_DOUBLE, 8, out)?;
            out.extend_from_slice(&d.to_be_bytes());
        }
        MmdbValue::U16(v) => uint(TYPE_UINT16, *v as u64, out)?,
        MmdbValue::U32(v) => uint(TYPE_UINT32, *v as u64, out)?,
        MmdbValue::U64(v) => uint(TYPE_UINT64, *v, out)?,
        MmdbValue::Map(fields) => {
            control(TYPE_MAP, fields.len(), out)?;
            for (key, value) in fields {
                control(TYPE_STRING, key.len(), out)?;
                out.extend_from_slice(key.as_bytes());
                encode(value, out)?;
            }
        }
        MmdbValue::Array(items) => {
            control(TYPE_ARRAY, items.len(), out)?;
            for item in items {
                encode(item, out)?;
            }
        }
    }
    Ok(())
}

/// Unsigned integers are stored big-endian without leading zero bytes.
fn uint(type_num: u8, v: u64, out: &mut Vec<u8>) -> Result<(), GeoIpError> {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    control(type_num, 8 - skip, out)?;
    out.extend_from_slice(&bytes[skip..]);
    Ok(())
}

/// The control byte: type in the top 3 bits (0 plus an extra byte for types
/// above 7), size in the low 5 bits with 1-3 extension bytes for sizes of 29
/// and more.
fn control(type_num: u8, size: usize, out: &mut Vec<u8>) -> Result<(), GeoIpError> {
    let (size_bits, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, Vec::new())
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else if size < 285 + 65_536 {
        let v = (size - 285) as u16;
        (30, v.to_be_bytes().to_vec())
    } else if size < 65_821 + (1 << 24) {
        let v = (size - 65_821) as u32;
        (31, v.to_be_bytes()[1..].to_vec())
    } else {
        return Err(GeoIpError::LabDb(format!(
            "value of {size} bytes is too large"
        )));
    };
    if type_num <= 7 {
        out.push((type_num << 5) | size_bits);
    } else {
        out.push(size_bits);
        out.push(type_num - 7);
    }
    out.extend_from_slice(&extra);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geo::{city_by_code, GeoPoint};
    use crate::geoip::GeoIpDb;
    use maxminddb::Reader;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn city(code: &str) -> GeoLocation {
        let c = city_by_code(code).expect("city");
        GeoLocation {
            point: c.point(),
            city: Some(c.name.to_string()),
            country: Some(c.country.to_string()),
        }
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    #[test]
    fn loopback_networks_in_frankfurt_and_tokyo() {
        let bytes = write_lab_db(&[
            (Ipv4Addr::new(127, 1, 0, 0), 16, city("fra")),
            (Ipv4Addr::new(127, 2, 0, 0), 16, city("nrt")),
        ])
        .expect("write");

        // The maxminddb reader accepts and verifies it.
        let reader = Reader::from_source(bytes.clone()).expect("valid database");
        reader.verify().expect("verifies");
        let m = reader.metadata();
        assert_eq!(m.database_type, LAB_DATABASE_TYPE);
        assert_eq!((m.ip_version, m.record_size), (4, 24));
        assert_eq!(m.languages, vec!["en".to_string()]);
        let hit = reader.lookup(v4(127, 1, 200, 3)).expect("lookup");
        assert_eq!(hit.network().expect("network").to_string(), "127.1.0.0/16");
        let rec: maxminddb::geoip2::City = hit.decode().expect("decode").expect("record");
        assert_eq!(rec.city.names.english, Some("Frankfurt"));
        assert_eq!(rec.country.iso_code, Some("DE"));
        assert_eq!(rec.location.latitude, Some(50.1109));

        let db = GeoIpDb::from_bytes(bytes).expect("city database");
        let fra = db.lookup(v4(127, 1, 0, 1)).expect("ok").expect("found");
        assert_eq!(fra, city("fra"));
        let nrt = db.lookup(v4(127, 2, 255, 255)).expect("ok").expect("found");
        assert_eq!(nrt.point, city_by_code("nrt").expect("city").point());
        assert_eq!(nrt.city.as_deref(), Some("Tokyo"));
        assert_eq!(nrt.country.as_deref(), Some("JP"));
        for outside in [
            v4(127, 0, 0, 1),
            v4(127, 3, 0, 1),
            v4(127, 0, 255, 255),
            v4(8, 8, 8, 8),
            v4(255, 255, 255, 255),
            v4(0, 0, 0, 0),
        ] {
            assert_eq!(db.lookup(outside).expect("ok"), None, "{outside}");
        }
        // IPv6: mapped addresses resolve as IPv4, others are simply unknown.
        let mapped: IpAddr = "::ffff:127.1.2.3".parse().expect("addr");
        assert_eq!(db.lookup(mapped).expect("ok"), Some(city("fra")));
        assert_eq!(db.lookup("::1".parse().expect("addr")).expect("ok"), None);
    }

    #[test]
    fn longest_prefix_wins_and_last_duplicate_wins() {
        let bytes = write_lab_db(&[
            (Ipv4Addr::new(127, 9, 9, 9), 8, city("lhr")),
            (Ipv4Addr::new(127, 5, 0, 0), 16, city("sin")),
            (Ipv4Addr::new(127, 5, 7, 7), 32, city("syd")),
            (Ipv4Addr::new(127, 5, 0, 0), 16, city("gru")),
        ])
        .expect("write");
        let db = GeoIpDb::from_bytes(bytes).expect("city database");
        let at = |ip| db.lookup(ip).expect("ok").and_then(|l| l.city);
        assert_eq!(at(v4(127, 0, 0, 1)).as_deref(), Some("London"));
        assert_eq!(at(v4(127, 5, 1, 1)).as_deref(), Some("São Paulo"));
        assert_eq!(at(v4(127, 5, 7, 7)).as_deref(), Some("Sydney"));
        assert_eq!(at(v4(127, 5, 7, 8)).as_deref(), Some("São Paulo"));
        assert_eq!(at(v4(128, 0, 0, 0)), None);
    }

    #[test]
    fn whole_space_empty_and_optional_names() {
        let bare = GeoLocation {
            point: GeoPoint::new(-33.5, 151.25).expect("valid"),
            city: None,
            country: None,
        };
        let db = GeoIpDb::from_bytes(
            write_lab_db(&[(Ipv4Addr::UNSPECIFIED, 0, bare.clone())]).expect("write"),
        )
        .expect("db");
        assert_eq!(db.lookup(v4(1, 2, 3, 4)).expect("ok"), Some(bare.clone()));
        assert_eq!(db.lookup(v4(255, 0, 0, 1)).expect("ok"), Some(bare));
        // An empty database is valid, but has no location data to offer.
        let empty = write_lab_db(&[]).expect("write");
        Reader::from_source(empty.clone())
            .expect("valid")
            .verify()
            .expect("verifies");
        assert!(matches!(
            GeoIpDb::from_bytes(empty),
            Err(GeoIpError::NoLocationData { .. })
        ));
        assert!(matches!(
            write_lab_db(&[(Ipv4Addr::LOCALHOST, 33, city("fra"))]),
            Err(GeoIpError::LabDb(_))
        ));
    }

    #[test]
    fn long_strings_use_size_extensions() {
        for len in [28, 29, 284, 285, 70_000] {
            let loc = GeoLocation {
                city: Some("x".repeat(len)),
                ..city("fra")
            };
            let bytes = write_lab_db(&[(Ipv4Addr::new(10, 0, 0, 0), 8, loc)]).expect("write");
            let db = GeoIpDb::from_bytes(bytes).expect("db");
            let got = db.lookup(v4(10, 1, 1, 1)).expect("ok").expect("found");
            assert_eq!(got.city.map(|c| c.len()), Some(len));
        }
    }

    #[test]
    fn deterministic_output() {
        let entries = [(Ipv4Addr::new(127, 1, 0, 0), 16, city("fra"))];
        assert_eq!(
            write_lab_db(&entries).expect("a"),
            write_lab_db(&entries).expect("b")
        );
    }

    fn entry() -> impl Strategy<Value = (Ipv4Addr, u8, GeoLocation)> {
        (
            any::<u32>(),
            0..=32u8,
            -90.0..=90.0f64,
            -180.0..=180.0f64,
            any::<bool>(),
        )
            .prop_map(|(bits, len, lat, lon, named)| {
                let loc = GeoLocation {
                    point: GeoPoint::new(lat, lon).expect("in range"),
                    city: named.then(|| format!("city-{bits:x}")),
                    country: named.then(|| "ZZ".to_string()),
                };
                (Ipv4Addr::from(bits), len, loc)
            })
    }

    fn mask(bits: u32, len: u8) -> u32 {
        if len == 0 {
            0
        } else {
            bits & (u32::MAX << (32 - len as u32))
        }
    }

    /// The entry a lookup of `addr` must return: longest prefix, then last.
    fn expected(entries: &[(Ipv4Addr, u8, GeoLocation)], addr: u32) -> Option<&GeoLocation> {
        let mut best: Option<(u8, &GeoLocation)> = None;
        for (net, len, loc) in entries {
            if mask(addr, *len) == mask(u32::from(*net), *len)
                && best.is_none_or(|(l, _)| *len >= l)
            {
                best = Some((*len, loc));
            }
        }
        best.map(|(_, loc)| loc)
    }

    proptest! {
        #[test]
        fn random_prefixes_read_back(entries in prop::collection::vec(entry(), 0..24), probes in prop::collection::vec(any::<u32>(), 0..32)) {
            let bytes = write_lab_db(&entries).expect("write");
            let reader = Reader::from_source(bytes.clone()).expect("valid database");
            prop_assert!(reader.verify().is_ok());
            if entries.is_empty() {
                return Ok(());
            }
            let db = GeoIpDb::from_bytes(bytes).expect("city database");
            // Every network's first and last address, plus random addresses.
            let mut addrs = probes;
            for (net, len, _) in &entries {
                let base = mask(u32::from(*net), *len);
                addrs.push(base);
                addrs.push(base | !mask(u32::MAX, *len));
            }
            for addr in addrs {
                let got = db.lookup(IpAddr::V4(Ipv4Addr::from(addr))).expect("lookup");
                prop_assert_eq!(got.as_ref(), expected(&entries, addr), "address {}", Ipv4Addr::from(addr));
            }
        }
    }
}
