//! Geography: points on the globe, great-circle distance and the delay it
//! implies, plus a table of real cities.
//!
//! Why: with no probe data yet (a client we have never seen, a new edge, the
//! lab's emulated WAN) the best latency estimate we have is physics. Light in
//! fiber covers about 200 km per millisecond, and real routes are longer than
//! the great circle: published cloud inter-region RTTs are about 1.4-2.1 times
//! the great-circle fiber bound, with a median near 1.6. Those two numbers are
//! the constants below.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Mean Earth radius in km (IUGG), the radius the haversine formula uses.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Distance light travels in optical fiber per millisecond (refractive index
/// about 1.5, so about two thirds of c).
pub const FIBER_KM_PER_MS: f64 = 200.0;

/// Median ratio of measured inter-region RTT to the great-circle fiber bound.
pub const DEFAULT_INFLATION: f64 = 1.6;

/// Lowest ratio seen in published inter-region RTTs (well-built, direct
/// routes).
pub const MIN_INFLATION: f64 = 1.4;

/// Highest ratio seen in published inter-region RTTs (detours through
/// distant exchange points).
pub const MAX_INFLATION: f64 = 2.1;

/// A coordinate rejected by [`GeoPoint::new`].
#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum GeoError {
    /// Latitude outside -90..=90 or not a number.
    #[error("latitude {0} is outside -90..=90")]
    Latitude(f64),
    /// Longitude outside -180..=180 or not a number.
    #[error("longitude {0} is outside -180..=180")]
    Longitude(f64),
}

/// A point on the globe in degrees. Always holds a valid, finite coordinate:
/// the only ways in are [`GeoPoint::new`] and deserialisation, and both
/// validate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawGeoPoint")]
pub struct GeoPoint {
    lat: f64,
    lon: f64,
}

#[derive(Deserialize)]
struct RawGeoPoint {
    lat: f64,
    lon: f64,
}

impl TryFrom<RawGeoPoint> for GeoPoint {
    type Error = GeoError;
    fn try_from(raw: RawGeoPoint) -> Result<Self, GeoError> {
        GeoPoint::new(raw.lat, raw.lon)
    }
}

impl GeoPoint {
    /// A point at `lat` (-90..=90) and `lon` (-180..=180) degrees.
    pub fn new(lat: f64, lon: f64) -> Result<Self, GeoError> {
        if !(-90.0..=90.0).contains(&lat) {
            return Err(GeoError::Latitude(lat));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(GeoError::Longitude(lon));
        }
        Ok(GeoPoint { lat, lon })
    }

    /// Latitude in degrees.
    pub fn lat(&self) -> f64 {
        self.lat
    }

    /// Longitude in degrees.
    pub fn lon(&self) -> f64 {
        self.lon
    }

    /// Great-circle distance to `other` in km.
    pub fn distance_km(&self, other: &GeoPoint) -> f64 {
        great_circle_km(*self, *other)
    }
}

/// Great-circle distance in km between two points (haversine formula, which
/// stays accurate for short distances where the spherical law of cosines
/// loses precision).
pub fn great_circle_km(a: GeoPoint, b: GeoPoint) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    // Rounding can push h a hair above 1 for antipodal points.
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// One-way delay in ms of a straight fiber along the great circle: the
/// physical lower bound for a packet from `a` to `b`.
pub fn fiber_one_way_ms(a: GeoPoint, b: GeoPoint) -> f64 {
    great_circle_km(a, b) / FIBER_KM_PER_MS
}

/// Round-trip time in ms of a straight fiber along the great circle: the
/// lower bound for any RTT between `a` and `b`.
pub fn fiber_rtt_ms(a: GeoPoint, b: GeoPoint) -> f64 {
    2.0 * fiber_one_way_ms(a, b)
}

/// Estimated real RTT in ms: the fiber bound times `inflation` (use
/// [`DEFAULT_INFLATION`] when nothing better is known). An inflation below 1
/// or not a number is taken as 1, since nothing beats the fiber bound.
pub fn estimated_rtt_ms(a: GeoPoint, b: GeoPoint, inflation: f64) -> f64 {
    let inflation = if inflation >= 1.0 { inflation } else { 1.0 };
    fiber_rtt_ms(a, b) * inflation
}

/// A real city where edges and clients may sit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct City {
    /// English name.
    pub name: &'static str,
    /// Short code, the main airport's IATA code in lower case ("fra").
    pub code: &'static str,
    /// ISO 3166-1 alpha-2 country code.
    pub country: &'static str,
    /// RTN region the city belongs to ("eu-central", "us-east", ...).
    pub region: &'static str,
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

impl City {
    /// The city's location.
    pub fn point(&self) -> GeoPoint {
        // The table is checked by a test; build directly so this cannot fail.
        GeoPoint {
            lat: self.lat,
            lon: self.lon,
        }
    }
}

macro_rules! cities {
    ($(($name:expr, $code:expr, $country:expr, $region:expr, $lat:expr, $lon:expr)),* $(,)?) => {
        &[$(City { name: $name, code: $code, country: $country, region: $region, lat: $lat, lon: $lon }),*]
    };
}

/// Built-in table of cities that host cloud regions or large exchange points,
/// grouped into RTN regions. Coordinates are city centres.
pub static CITIES: &[City] = cities![
    // Europe
    ("Frankfurt", "fra", "DE", "eu-central", 50.1109, 8.6821),
    ("Zurich", "zrh", "CH", "eu-central", 47.3769, 8.5417),
    ("Warsaw", "waw", "PL", "eu-central", 52.2297, 21.0122),
    ("Amsterdam", "ams", "NL", "eu-west", 52.3676, 4.9041),
    ("London", "lhr", "GB", "eu-west", 51.5074, -0.1278),
    ("Paris", "cdg", "FR", "eu-west", 48.8566, 2.3522),
    ("Dublin", "dub", "IE", "eu-west", 53.3498, -6.2603),
    ("Madrid", "mad", "ES", "eu-south", 40.4168, -3.7038),
    ("Milan", "mxp", "IT", "eu-south", 45.4642, 9.1900),
    ("Stockholm", "arn", "SE", "eu-north", 59.3293, 18.0686),
    ("Helsinki", "hel", "FI", "eu-north", 60.1699, 24.9384),
    // Middle East and Africa
    ("Istanbul", "ist", "TR", "me-west", 41.0082, 28.9784),
    ("Tel Aviv", "tlv", "IL", "me-west", 32.0853, 34.7818),
    ("Dubai", "dxb", "AE", "me-central", 25.2048, 55.2708),
    ("Johannesburg", "jnb", "ZA", "af-south", -26.2041, 28.0473),
    ("Lagos", "los", "NG", "af-west", 6.5244, 3.3792),
    ("Nairobi", "nbo", "KE", "af-east", -1.2921, 36.8219),
    // Asia and Oceania
    ("Mumbai", "bom", "IN", "ap-south", 19.0760, 72.8777),
    ("Chennai", "maa", "IN", "ap-south", 13.0827, 80.2707),
    ("Delhi", "del", "IN", "ap-south", 28.7041, 77.1025),
    ("Singapore", "sin", "SG", "ap-southeast", 1.3521, 103.8198),
    ("Jakarta", "cgk", "ID", "ap-southeast", -6.2088, 106.8456),
    ("Hong Kong", "hkg", "HK", "ap-east", 22.3193, 114.1694),
    ("Taipei", "tpe", "TW", "ap-east", 25.0330, 121.5654),
    ("Tokyo", "nrt", "JP", "ap-northeast", 35.6762, 139.6503),
    ("Osaka", "kix", "JP", "ap-northeast", 34.6937, 135.5023),
    ("Seoul", "icn", "KR", "ap-northeast", 37.5665, 126.9780),
    ("Sydney", "syd", "AU", "oc-east", -33.8688, 151.2093),
    ("Melbourne", "mel", "AU", "oc-east", -37.8136, 144.9631),
    ("Auckland", "akl", "NZ", "oc-east", -36.8485, 174.7633),
    // North America
    ("Ashburn", "iad", "US", "us-east", 39.0438, -77.4874),
    ("New York", "jfk", "US", "us-east", 40.7128, -74.0060),
    ("Atlanta", "atl", "US", "us-east", 33.7490, -84.3880),
    ("Miami", "mia", "US", "us-east", 25.7617, -80.1918),
    ("Chicago", "ord", "US", "us-central", 41.8781, -87.6298),
    ("Dallas", "dfw", "US", "us-central", 32.7767, -96.7970),
    ("Denver", "den", "US", "us-central", 39.7392, -104.9903),
    ("Los Angeles", "lax", "US", "us-west", 34.0522, -118.2437),
    ("San Jose", "sjc", "US", "us-west", 37.3382, -121.8863),
    ("Seattle", "sea", "US", "us-west", 47.6062, -122.3321),
    ("Toronto", "yyz", "CA", "ca-central", 43.6532, -79.3832),
    ("Montreal", "yul", "CA", "ca-central", 45.5019, -73.5674),
    // Latin America
    ("Mexico City", "mex", "MX", "mx-central", 19.4326, -99.1332),
    ("Bogotá", "bog", "CO", "sa-north", 4.7110, -74.0721),
    ("São Paulo", "gru", "BR", "sa-east", -23.5505, -46.6333),
    ("Buenos Aires", "eze", "AR", "sa-south", -34.6037, -58.3816),
    ("Santiago", "scl", "CL", "sa-south", -33.4489, -70.6693),
];

/// The city with this code, ignoring case ("FRA" finds Frankfurt).
pub fn city_by_code(code: &str) -> Option<&'static City> {
    CITIES.iter().find(|c| c.code.eq_ignore_ascii_case(code))
}

/// The city with this name, ignoring case, including non-ASCII letters
/// ("são paulo" finds São Paulo).
pub fn city_by_name(name: &str) -> Option<&'static City> {
    CITIES.iter().find(|c| eq_ignore_case(c.name, name))
}

/// The city with this code or, failing that, this name, ignoring case.
pub fn find_city(code_or_name: &str) -> Option<&'static City> {
    city_by_code(code_or_name).or_else(|| city_by_name(code_or_name))
}

/// The distinct regions of [`CITIES`], in table order.
pub fn regions() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for city in CITIES {
        if !out.contains(&city.region) {
            out.push(city.region);
        }
    }
    out
}

fn eq_ignore_case(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn city(code: &str) -> GeoPoint {
        city_by_code(code).expect("city in table").point()
    }

    #[test]
    fn rejects_out_of_range_coordinates() {
        assert!(GeoPoint::new(90.0, 180.0).is_ok());
        assert!(GeoPoint::new(-90.0, -180.0).is_ok());
        assert_eq!(GeoPoint::new(90.5, 0.0), Err(GeoError::Latitude(90.5)));
        assert_eq!(GeoPoint::new(0.0, -180.1), Err(GeoError::Longitude(-180.1)));
        assert!(GeoPoint::new(f64::NAN, 0.0).is_err());
        assert!(GeoPoint::new(0.0, f64::INFINITY).is_err());
    }

    #[test]
    fn deserialisation_validates() {
        let ok: GeoPoint = serde_json::from_str(r#"{"lat":50.1,"lon":8.7}"#).expect("valid");
        assert_eq!((ok.lat(), ok.lon()), (50.1, 8.7));
        assert!(serde_json::from_str::<GeoPoint>(r#"{"lat":91,"lon":0}"#).is_err());
        let json = serde_json::to_string(&ok).expect("serialise");
        assert_eq!(
            serde_json::from_str::<GeoPoint>(&json).expect("roundtrip"),
            ok
        );
    }

    #[test]
    fn known_distances() {
        // Reference values from standard great-circle calculators (±0.5%).
        let cases = [
            ("lhr", "jfk", 5570.0),
            ("fra", "nrt", 9350.0),
            ("syd", "lax", 12060.0),
            ("fra", "ams", 365.0),
        ];
        for (a, b, km) in cases {
            let d = great_circle_km(city(a), city(b));
            assert!(
                (d - km).abs() / km < 0.005,
                "{a}-{b}: {d} km, expected {km}"
            );
        }
        assert_eq!(great_circle_km(city("fra"), city("fra")), 0.0);
    }

    #[test]
    fn antipodes_are_half_the_circumference() {
        let a = GeoPoint::new(0.0, 0.0).expect("valid");
        let b = GeoPoint::new(0.0, 180.0).expect("valid");
        let d = great_circle_km(a, b);
        assert!((d - std::f64::consts::PI * EARTH_RADIUS_KM).abs() < 1e-6);
    }

    #[test]
    fn fiber_delay_and_inflation() {
        let (lhr, jfk) = (city("lhr"), city("jfk"));
        let rtt = fiber_rtt_ms(lhr, jfk);
        // 5570 km one way, 200 km/ms, both directions: about 55.7 ms.
        assert!((rtt - 55.7).abs() < 0.5, "{rtt}");
        assert!((fiber_one_way_ms(lhr, jfk) * 2.0 - rtt).abs() < 1e-9);
        let est = estimated_rtt_ms(lhr, jfk, DEFAULT_INFLATION);
        assert!((est - rtt * 1.6).abs() < 1e-9);
        // Measured London-New York RTTs are 65-80 ms: within the published band.
        assert!(rtt * MIN_INFLATION < 80.0 && rtt * MAX_INFLATION > 65.0);
        assert_eq!(estimated_rtt_ms(lhr, jfk, 0.5), rtt);
        assert_eq!(estimated_rtt_ms(lhr, jfk, f64::NAN), rtt);
    }

    #[test]
    fn city_table_is_valid_and_unique() {
        assert!(CITIES.len() >= 40);
        for (i, c) in CITIES.iter().enumerate() {
            assert!(GeoPoint::new(c.lat, c.lon).is_ok(), "{}", c.name);
            assert_eq!(c.code.len(), 3, "{}", c.name);
            assert_eq!(c.code, c.code.to_ascii_lowercase(), "{}", c.name);
            assert_eq!(c.country.len(), 2, "{}", c.name);
            for other in &CITIES[i + 1..] {
                assert_ne!(c.code, other.code);
                assert_ne!(c.name, other.name);
            }
        }
        assert!(regions().len() >= 15);
    }

    #[test]
    fn lookup_by_code_or_name_ignores_case() {
        assert_eq!(city_by_code("FRA").map(|c| c.name), Some("Frankfurt"));
        assert_eq!(city_by_name("tokyo").map(|c| c.code), Some("nrt"));
        assert_eq!(city_by_name("SÃO PAULO").map(|c| c.code), Some("gru"));
        assert_eq!(find_city("Lhr").map(|c| c.name), Some("London"));
        assert_eq!(find_city("new york").map(|c| c.region), Some("us-east"));
        assert!(find_city("atlantis").is_none());
        assert!(city_by_code("").is_none());
    }

    fn point() -> impl Strategy<Value = GeoPoint> {
        (-90.0..=90.0f64, -180.0..=180.0f64)
            .prop_map(|(lat, lon)| GeoPoint::new(lat, lon).expect("in range"))
    }

    proptest! {
        #[test]
        fn distance_is_a_metric(a in point(), b in point(), c in point()) {
            let ab = great_circle_km(a, b);
            // Tolerances cover asin's loss of precision near antipodes (~1e-4 km).
            prop_assert!((0.0..=std::f64::consts::PI * EARTH_RADIUS_KM + 1e-3).contains(&ab));
            prop_assert!((ab - great_circle_km(b, a)).abs() < 1e-3);
            prop_assert!(great_circle_km(a, a) < 1e-3);
            prop_assert!(ab <= great_circle_km(a, c) + great_circle_km(c, b) + 1e-3);
        }
    }
}
