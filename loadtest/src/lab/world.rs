//! The lab's emulated world: which hosts sit in which city, the true one-way
//! delay of every link, and what that makes the best overlay paths — by RTT,
//! and by the controller's cost ([`TrueMesh`]: what probes would publish if
//! they measured exactly).
//!
//! Loopback addresses stand for hosts: edge `j` of the `i`-th city of the
//! topology file is `127.10.i.j`, client `k` there is `127.20.i.k` (both
//! 1-based). The RTT between two cities is [`link_rtt_ms`]: a fixed
//! overhead plus the great-circle fiber bound times an inflation, both
//! calibrated against published inter-region RTTs ([`super::calibration`]).
//! Every link of a city pair gets half of it each way, plus any `[[link]]`
//! override, plus the last mile of each client end: `access_ms` of delay,
//! or a named [`LastMile`] profile (broadband, 4G, congested Wi-Fi: delay,
//! jitter, bursty loss, reordering) per city. One deterministic formula for
//! every pair keeps the triangle inequality, as real networks mostly do;
//! their real violations are specific bad links, which `[[link]]` overrides
//! express. A [`WeakNetwork`] adds loss and jitter to every link on top, for
//! benchmarks of how the network copes where users actually live.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use anyhow::{bail, Context};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use testkit::netem::{LinkProfile, LinkRule, MAX_BURST_LEN};
use topology::geo::{fiber_rtt_ms, find_city, City};
use topology::synth::XorShift64;
use topology::{CostModel, LinkSummary, MeshGraph, NodeInfo};

/// The topology file (TOML). See `docs/lab.md` and `loadtest/topologies/`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// Seed of the per-pair inflation draws when `inflation` is a range
    /// (same seed, same world).
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// RTT inflation over the fiber bound: one number for every city pair,
    /// or a range `[low, high]` to draw each pair's from.
    #[serde(default = "default_inflation")]
    pub inflation: Inflation,
    /// RTT added to every link between two cities, whatever its length.
    #[serde(default = "default_rtt_overhead_ms")]
    pub rtt_overhead_ms: f64,
    /// One-way delay between a client and the network (last mile), added to
    /// every client link.
    #[serde(default = "default_access_ms")]
    pub access_ms: f64,
    /// One-way delay between two hosts of the same city.
    #[serde(default = "default_metro_ms")]
    pub metro_ms: f64,
    /// Jitter of every link (each way), ms.
    #[serde(default = "default_jitter_ms")]
    pub jitter_ms: f64,
    /// Loss of every link (each way).
    #[serde(default)]
    pub loss: f64,
    #[serde(rename = "city")]
    pub cities: Vec<CitySpec>,
    /// Per-city-pair changes on top of the geography.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkOverride>,
    /// Every client's last mile unless its city says otherwise: a name of
    /// [`LAST_MILES`], or `"none"` (the default) for `access_ms` of delay and
    /// nothing else, the world as it was before profiles existed.
    #[serde(default)]
    pub last_mile: Option<String>,
    /// Loss and jitter added to every link (see [`WeakNetwork`]); none by
    /// default.
    #[serde(default)]
    pub weak_network: Option<WeakNetwork>,
}

fn default_seed() -> u64 {
    1
}
fn default_inflation() -> Inflation {
    Inflation::Fixed(DEFAULT_INFLATION)
}
fn default_rtt_overhead_ms() -> f64 {
    DEFAULT_RTT_OVERHEAD_MS
}
fn default_access_ms() -> f64 {
    3.0
}
fn default_metro_ms() -> f64 {
    1.0
}
fn default_jitter_ms() -> f64 {
    0.3
}

/// RTT over the fiber bound of the calibrated model, fitted with
/// [`DEFAULT_RTT_OVERHEAD_MS`] to published inter-region RTTs by least
/// absolute log error (`loadtest calibration`, docs/lab.md "Calibration").
pub const DEFAULT_INFLATION: f64 = 1.65;

/// RTT every link between two cities pays whatever its length, fitted with
/// [`DEFAULT_INFLATION`]: routers, metro and backhaul fiber, and data
/// centres away from the city centres the distance is measured from. It is
/// why short pairs are inflated most (London-Paris is published at 3.6
/// times its fiber bound, London-Singapore at 1.7).
pub const DEFAULT_RTT_OVERHEAD_MS: f64 = 9.0;

/// Lowest and highest inflation a topology may ask for: nothing beats the
/// fiber bound, and 5 is well past the worst published detour.
const INFLATION_BOUNDS: (f64, f64) = (1.0, 5.0);

/// Most `rtt_overhead_ms` a topology may ask for.
const MAX_RTT_OVERHEAD_MS: f64 = 1_000.0;

/// The model's RTT between two cities whose great-circle fiber RTT is
/// `fiber_rtt_ms`. Affine with a non-negative overhead, so a relay through a
/// third city never beats the direct link: the fiber bound keeps the
/// triangle inequality, and each extra link pays the overhead again.
pub fn link_rtt_ms(fiber_rtt_ms: f64, inflation: f64, rtt_overhead_ms: f64) -> f64 {
    rtt_overhead_ms + inflation * fiber_rtt_ms
}

/// RTT inflation over the fiber bound (`inflation` in the topology file).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Inflation {
    /// The same for every city pair (`inflation = 1.65`): the calibrated
    /// default.
    Fixed(f64),
    /// Drawn uniformly per city pair from `[low, high]` with `seed`
    /// (`inflation = [1.4, 2.1]`, the lab's model before calibration). The
    /// draws make up triangle-inequality violations that real networks
    /// mostly do not have.
    Range(f64, f64),
}

impl Inflation {
    fn check(self) -> anyhow::Result<()> {
        let (min, max) = INFLATION_BOUNDS;
        // Written so that NaN fails: `hi < lo || hi > 5.0` let a NaN high
        // end through, and every delay came out NaN.
        match self {
            Inflation::Fixed(x) if !(min..=max).contains(&x) => {
                bail!("inflation = {x} is not within {min}-{max}")
            }
            Inflation::Range(lo, hi) if !(min..=max).contains(&lo) || !(lo..=max).contains(&hi) => {
                bail!("inflation = [{lo}, {hi}] must satisfy {min} <= low <= high <= {max}")
            }
            _ => Ok(()),
        }
    }
}

/// A number or a two-number array; hand-written so a wrong value says
/// what `inflation` takes.
impl<'de> Deserialize<'de> for Inflation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InflationVisitor;
        impl<'de> Visitor<'de> for InflationVisitor {
            type Value = Inflation;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number (1.65) or a range [low, high]")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Inflation, E> {
                Ok(Inflation::Fixed(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Inflation, E> {
                Ok(Inflation::Fixed(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Inflation, E> {
                Ok(Inflation::Fixed(v as f64))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Inflation, A::Error> {
                let lo: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let hi: f64 = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(Inflation::Range(lo, hi))
            }
        }
        d.deserialize_any(InflationVisitor)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CitySpec {
    /// A city of `topology::geo::CITIES`, by code ("fra") or name.
    pub city: String,
    #[serde(default)]
    pub edges: u8,
    #[serde(default)]
    pub clients: u8,
    /// The last mile of this city's clients, replacing the file's
    /// `last_mile` (`"none"`: `access_ms`).
    #[serde(default)]
    pub last_mile: Option<String>,
}

/// A named last mile: the access network between a client and the
/// internet (home broadband, a mobile network, Wi-Fi), which most of what
/// users suffer comes from: the backbone between edges is clean next to it.
/// Its profile is paid on every link of the client, one way, on top of the
/// geography (see [`World::profile`]), in place of `access_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LastMile {
    /// Its name in topology files and chaos plans.
    pub name: &'static str,
    /// One way. As the WAN emulation applies it: `delay_ms` is the mean
    /// delay and jitter varies it uniformly either way, so a profile's
    /// `delay_ms` is at least its `jitter_ms` (its floor is the difference)
    /// and no datagram's delay is cut off at zero.
    pub profile: LinkProfile,
    /// Why these figures, in a line.
    pub why: &'static str,
}

/// The last miles a topology file or a chaos plan can name (docs/lab.md has
/// the same table).
pub const LAST_MILES: [LastMile; 3] = [
    LastMile {
        name: "broadband",
        profile: LinkProfile {
            delay_ms: 5.0,
            jitter_ms: 1.0,
            loss: 0.001,
            down: false,
            burst_len: 0.0,
            reorder: false,
            rate_kbps: 0.0,
        },
        why: "home fiber or cable: a few ms to the ISP, shallow queues, rare isolated loss",
    },
    LastMile {
        name: "4g",
        profile: LinkProfile {
            delay_ms: 25.0,
            jitter_ms: 15.0,
            loss: 0.02,
            down: false,
            burst_len: 3.0,
            reorder: true,
            rate_kbps: 0.0,
        },
        why: "LTE: radio scheduling and retransmissions make 10-40 ms; fades and handovers lose short runs; parallel radio paths reorder",
    },
    LastMile {
        name: "wifi-congested",
        profile: LinkProfile {
            delay_ms: 38.0,
            jitter_ms: 30.0,
            loss: 0.05,
            down: false,
            burst_len: 4.0,
            reorder: true,
            rate_kbps: 0.0,
        },
        why: "busy shared Wi-Fi: an 8 ms floor plus up to 60 ms of contention and retries; collisions and interference lose runs",
    },
];

/// The name that stands for no profile: the client's last mile is
/// `access_ms` of delay, as before profiles existed.
pub const NO_LAST_MILE: &str = "none";

/// The last mile named `name`: `None` for [`NO_LAST_MILE`], an error that
/// lists the names for anything unknown.
pub fn last_mile(name: &str) -> anyhow::Result<Option<&'static LastMile>> {
    if name == NO_LAST_MILE {
        return Ok(None);
    }
    match LAST_MILES.iter().find(|m| m.name == name) {
        Some(m) => Ok(Some(m)),
        None => {
            let names: Vec<&str> = LAST_MILES.iter().map(|m| m.name).collect();
            bail!(
                "unknown last_mile {name:?} (one of {}, {NO_LAST_MILE})",
                names.join(", ")
            )
        }
    }
}

/// A weak network over the whole world: loss (bursty if `burst_len`) and
/// jitter added to every link, edge to edge and client to edge, on top of
/// the geography and the last miles. For benchmarks of how media and
/// routing hold up when no path is clean ([`World::set_weak_network`], or
/// `weak_network = { ... }` in a topology file). The default adds nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeakNetwork {
    /// Loss added to every link, each way (0-1).
    #[serde(default)]
    pub loss: f64,
    /// Jitter added to every link, each way, ms (0-1000).
    #[serde(default)]
    pub jitter_ms: f64,
    /// Mean burst of that loss, datagrams (0: independent; else >= 1).
    #[serde(default)]
    pub burst_len: f64,
    /// Whether every link reorders (see `netem::LinkProfile::reorder`).
    #[serde(default)]
    pub reorder: bool,
}

impl WeakNetwork {
    /// What it adds to a link.
    pub fn profile(&self) -> LinkProfile {
        LinkProfile {
            jitter_ms: self.jitter_ms,
            loss: self.loss,
            burst_len: self.burst_len,
            reorder: self.reorder,
            ..LinkProfile::default()
        }
    }

    fn is_off(&self) -> bool {
        *self == WeakNetwork::default()
    }

    fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=1_000.0).contains(&self.jitter_ms) {
            bail!(
                "weak_network: jitter_ms {} is not within 0-1000",
                self.jitter_ms
            );
        }
        self.profile()
            .validate()
            .map_err(|e| anyhow::anyhow!("weak_network: {e}"))
    }
}

/// Changes to the links between the hosts of two cities (both directions).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LinkOverride {
    pub a: String,
    pub b: String,
    /// Added to the geographic one-way delay (a congested or detoured path).
    #[serde(default)]
    pub extra_delay_ms: f64,
    /// Replaces the default jitter.
    pub jitter_ms: Option<f64>,
    /// Replaces the default loss.
    pub loss: Option<f64>,
    #[serde(default)]
    pub down: bool,
}

impl TopologyFile {
    pub fn load(path: &Path) -> anyhow::Result<TopologyFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the topology {}", path.display()))?;
        TopologyFile::from_toml(&text)
            .with_context(|| format!("parsing the topology {}", path.display()))
    }

    /// Parse a topology file's text (checked when [`World::new`] builds it).
    pub fn from_toml(text: &str) -> anyhow::Result<TopologyFile> {
        Ok(toml::from_str(text)?)
    }

    /// The built-in world: two edges in each of five regions on four
    /// continents, clients in every edge city, and a detour on the direct
    /// Europe-Singapore link that makes relaying through Mumbai faster.
    pub fn builtin() -> TopologyFile {
        toml::from_str(include_str!("../../topologies/world.toml")).expect("built-in topology")
    }
}

/// One host of the world.
#[derive(Clone, Debug)]
pub struct Host {
    pub ip: IpAddr,
    pub city: &'static City,
    /// Clients pay the last mile on every link.
    pub is_client: bool,
}

/// An edge of the world.
#[derive(Clone, Debug)]
pub struct EdgeSpec {
    pub id: u32,
    pub host: Host,
}

/// Most edges a topology may have in all: every edge runs in the lab's
/// process and probes the others, and the WAN emulation holds a rule per
/// host pair.
pub const MAX_EDGES: usize = 256;
/// Most clients a topology may have in all.
pub const MAX_CLIENTS: usize = 1_024;

/// The world a topology file describes.
#[derive(Clone, Debug)]
pub struct World {
    pub file: TopologyFile,
    pub edges: Vec<EdgeSpec>,
    pub clients: Vec<Host>,
    /// Inflation per unordered city pair (by city code).
    inflation: HashMap<(&'static str, &'static str), f64>,
    /// Overrides in force (the file's, then the chaos plan's).
    overrides: Vec<LinkOverride>,
    /// The last mile of each city's clients (by city code), where it has a
    /// profile; cities not here pay `access_ms`.
    last_miles: HashMap<&'static str, &'static LastMile>,
    /// Added to every link; off by default.
    weak: WeakNetwork,
}

impl World {
    pub fn new(file: TopologyFile) -> anyhow::Result<World> {
        file.inflation.check()?;
        if !(0.0..=MAX_RTT_OVERHEAD_MS).contains(&file.rtt_overhead_ms) {
            bail!(
                "rtt_overhead_ms = {} is not within 0-{MAX_RTT_OVERHEAD_MS}",
                file.rtt_overhead_ms
            );
        }
        for (name, v) in [
            ("access_ms", file.access_ms),
            ("metro_ms", file.metro_ms),
            ("jitter_ms", file.jitter_ms),
        ] {
            if !(0.0..=1_000.0).contains(&v) {
                bail!("{name} = {v} is not within 0-1000");
            }
        }
        if !(0.0..=1.0).contains(&file.loss) {
            bail!("loss = {} is not within 0-1", file.loss);
        }
        let default_mile = match &file.last_mile {
            Some(name) => last_mile(name)?,
            None => None,
        };
        let weak = file.weak_network.unwrap_or_default();
        weak.validate()?;
        if file.cities.is_empty() || file.cities.len() > 250 {
            bail!("a topology needs 1 to 250 [[city]] entries");
        }
        let mut edges = Vec::new();
        let mut clients = Vec::new();
        let mut next_id = 1;
        let mut seen = Vec::new();
        let mut last_miles = HashMap::new();
        for (i, spec) in file.cities.iter().enumerate() {
            let city = find_city(&spec.city).with_context(|| {
                format!("unknown city {:?} (see topology::geo::CITIES)", spec.city)
            })?;
            if seen.contains(&city.code) {
                bail!("city {} is listed twice", city.code);
            }
            seen.push(city.code);
            let mile = match &spec.last_mile {
                Some(name) => last_mile(name).with_context(|| format!("city {}", city.code))?,
                None => default_mile,
            };
            if let Some(m) = mile {
                last_miles.insert(city.code, m);
            }
            let i = i as u8 + 1;
            for j in 1..=spec.edges {
                edges.push(EdgeSpec {
                    id: next_id,
                    host: Host {
                        ip: Ipv4Addr::new(127, 10, i, j).into(),
                        city,
                        is_client: false,
                    },
                });
                next_id += 1;
            }
            for k in 1..=spec.clients {
                clients.push(Host {
                    ip: Ipv4Addr::new(127, 20, i, k).into(),
                    city,
                    is_client: true,
                });
            }
        }
        if edges.is_empty() {
            bail!("the topology has no edges");
        }
        if edges.len() > MAX_EDGES || clients.len() > MAX_CLIENTS {
            bail!(
                "the topology has {} edges and {} clients: at most {MAX_EDGES} edges and {MAX_CLIENTS} clients in all",
                edges.len(),
                clients.len()
            );
        }
        for o in &file.links {
            for c in [&o.a, &o.b] {
                if find_city(c).is_none_or(|c| !seen.contains(&c.code)) {
                    bail!("[[link]] names {c:?}, which is not a city of this topology");
                }
            }
            validate_override(o)?;
        }
        // A range draws in the same order from the same seed as before
        // calibration, so an old file with `rtt_overhead_ms = 0` gives the
        // same world it always did.
        let mut rng = XorShift64::new(file.seed);
        let mut inflation = HashMap::new();
        for (i, a) in seen.iter().enumerate() {
            for b in &seen[i + 1..] {
                let x = match file.inflation {
                    Inflation::Fixed(x) => x,
                    Inflation::Range(lo, hi) => rng.range(lo, hi),
                };
                inflation.insert(pair(a, b), x);
            }
        }
        let overrides = file.links.clone();
        Ok(World {
            file,
            edges,
            clients,
            inflation,
            overrides,
            last_miles,
            weak,
        })
    }

    pub fn edge(&self, id: u32) -> Option<&EdgeSpec> {
        self.edges.iter().find(|e| e.id == id)
    }

    /// Apply a change to the links between two cities (chaos), replacing an
    /// earlier change of the same pair.
    pub fn set_override(&mut self, o: LinkOverride) -> anyhow::Result<()> {
        validate_override(&o)?;
        let (a, b) = (city_code(&o.a)?, city_code(&o.b)?);
        self.overrides.retain(|x| !links(x, a, b));
        self.overrides.push(o);
        Ok(())
    }

    /// Remove any change between two cities, file's included.
    pub fn clear_override(&mut self, a: &str, b: &str) -> anyhow::Result<()> {
        let (a, b) = (city_code(a)?, city_code(b)?);
        self.overrides.retain(|x| !links(x, a, b));
        Ok(())
    }

    /// Change the last mile of every client in `city` (chaos): `profile` is
    /// a name of [`LAST_MILES`], or [`NO_LAST_MILE`] for `access_ms`.
    pub fn set_last_mile(&mut self, city: &str, profile: &str) -> anyhow::Result<()> {
        let code = city_code(city)?;
        anyhow::ensure!(
            self.file
                .cities
                .iter()
                .any(|c| find_city(&c.city).is_some_and(|c| c.code == code)),
            "{city:?} is not a city of this topology"
        );
        anyhow::ensure!(
            self.clients.iter().any(|c| c.city.code == code),
            "city {code} has no clients, so no last mile to change"
        );
        match last_mile(profile)? {
            Some(m) => self.last_miles.insert(code, m),
            None => self.last_miles.remove(code),
        };
        Ok(())
    }

    /// The last mile profile of a host: `None` for an edge, or a client
    /// that pays `access_ms`.
    pub fn last_mile_of(&self, host: &Host) -> Option<&'static LastMile> {
        if !host.is_client {
            return None;
        }
        self.last_miles.get(host.city.code).copied()
    }

    /// Add loss and jitter to every link of the world, edge to edge and
    /// client to edge, on top of the geography and the last miles
    /// ([`WeakNetwork::default`]: none, as at start without the file's
    /// `weak_network`). Takes effect in [`World::rules`] (the lab's WAN
    /// follows once they are applied) and in the true figures
    /// ([`World::true_summary`], [`World::true_mesh`]).
    pub fn set_weak_network(&mut self, weak: WeakNetwork) -> anyhow::Result<()> {
        weak.validate()?;
        self.weak = weak;
        Ok(())
    }

    /// What [`World::set_weak_network`] (or the file) added to every link.
    pub fn weak_network(&self) -> WeakNetwork {
        self.weak
    }

    fn override_for(&self, a: &City, b: &City) -> Option<&LinkOverride> {
        self.overrides
            .iter()
            .rev()
            .find(|o| links(o, a.code, b.code))
    }

    /// The one-way profile from host `a` to host `b`: the geography (and
    /// any `[[link]]` override of the city pair), then the last mile of each
    /// client end (its profile, or `access_ms` of delay), then the weak
    /// network. Each stage adds to the one before as links in series do
    /// (see [`stack`]); with no last-mile profile and no weak network the
    /// figures are exactly those of the world before profiles existed.
    pub fn profile(&self, a: &Host, b: &Host) -> LinkProfile {
        let geo = if a.city.code == b.city.code {
            self.file.metro_ms
        } else {
            let inflation = self.inflation[&pair(a.city.code, b.city.code)];
            let fiber = fiber_rtt_ms(a.city.point(), b.city.point());
            link_rtt_ms(fiber, inflation, self.file.rtt_overhead_ms) / 2.0
        };
        let miles = [a, b].map(|h| self.last_mile_of(h));
        let plain_clients = [a, b]
            .iter()
            .zip(&miles)
            .filter(|(h, m)| h.is_client && m.is_none())
            .count();
        let access = self.file.access_ms * plain_clients as f64;
        let mut p = LinkProfile {
            delay_ms: geo + access,
            jitter_ms: self.file.jitter_ms,
            loss: self.file.loss,
            ..LinkProfile::default()
        };
        if let Some(o) = self.override_for(a.city, b.city) {
            p.delay_ms += o.extra_delay_ms;
            p.jitter_ms = o.jitter_ms.unwrap_or(p.jitter_ms);
            p.loss = o.loss.unwrap_or(p.loss);
            p.down = o.down;
        }
        for m in miles.into_iter().flatten() {
            p = stack(p, m.profile);
        }
        if !self.weak.is_off() {
            p = stack(p, self.weak.profile());
        }
        p
    }

    /// Every host pair's rule, for the WAN emulation.
    pub fn rules(&self) -> Vec<LinkRule> {
        let hosts: Vec<&Host> = self
            .edges
            .iter()
            .map(|e| &e.host)
            .chain(self.clients.iter())
            .collect();
        let mut rules = Vec::with_capacity(hosts.len() * hosts.len());
        for a in &hosts {
            for b in &hosts {
                if a.ip != b.ip && !(a.is_client && b.is_client) {
                    rules.push(LinkRule::between(a.ip, b.ip, self.profile(a, b)));
                }
            }
        }
        rules
    }

    /// True RTT of the direct link between two edges (`None` if down).
    pub fn edge_rtt(&self, a: u32, b: u32) -> Option<f64> {
        let (a, b) = (self.edge(a)?, self.edge(b)?);
        let (ab, ba) = (
            self.profile(&a.host, &b.host),
            self.profile(&b.host, &a.host),
        );
        (!ab.down && !ba.down).then_some(ab.delay_ms + ba.delay_ms)
    }

    /// True RTT along an overlay path of edge ids.
    pub fn path_rtt(&self, path: &[u32]) -> Option<f64> {
        path.windows(2).map(|w| self.edge_rtt(w[0], w[1])).sum()
    }

    /// The lowest true RTT from `from` to every edge in `alive`, over any
    /// overlay path among them (Dijkstra on the full mesh), with the path.
    pub fn optimal_paths(&self, from: u32, alive: &[u32]) -> HashMap<u32, (f64, Vec<u32>)> {
        self.true_mesh(alive).optimal_paths(from)
    }

    /// What the probes of edge `a` would publish about its link to `b` in
    /// the limit of many probes (`None` if the link is down).
    pub fn true_summary(&self, a: u32, b: u32) -> Option<LinkSummary> {
        let (a, b) = (self.edge(a)?, self.edge(b)?);
        true_summary(
            self.profile(&a.host, &b.host),
            self.profile(&b.host, &a.host),
        )
    }

    /// The true links among the edges of `alive` (others, and unknown ids,
    /// are left out) at this moment.
    pub fn true_mesh(&self, alive: &[u32]) -> TrueMesh {
        let mut edges: Vec<&EdgeSpec> = alive.iter().filter_map(|id| self.edge(*id)).collect();
        edges.sort_by_key(|e| e.id);
        edges.dedup_by_key(|e| e.id);
        let n = edges.len();
        let mut builder = MeshGraph::builder(CostModel::default());
        for e in &edges {
            builder
                .add_node(NodeInfo {
                    id: e.id,
                    region: e.host.city.region.into(),
                    location: e.host.city.point(),
                    load: 0.0,
                    draining: false,
                })
                .expect("ids are unique");
        }
        let mut rtt = vec![None; n * n];
        for (i, a) in edges.iter().enumerate() {
            for (j, b) in edges.iter().enumerate().filter(|(j, _)| *j != i) {
                let ab = self.profile(&a.host, &b.host);
                let Some(summary) = true_summary(ab, self.profile(&b.host, &a.host)) else {
                    continue;
                };
                rtt[i * n + j] = Some(ab.delay_ms + self.profile(&b.host, &a.host).delay_ms);
                // World::new and set_override bound every delay, jitter and
                // loss, so the graph cannot refuse these figures.
                builder
                    .add_link(a.id, b.id, summary)
                    .expect("true figures are valid");
            }
        }
        TrueMesh {
            ids: edges.iter().map(|e| e.id).collect(),
            rtt,
            graph: builder.build().expect("a graph of live edges builds"),
        }
    }

    /// The lab GeoIP entries: each city's edge and client networks.
    pub fn geoip_entries(&self) -> Vec<(Ipv4Addr, u8, topology::geoip::GeoLocation)> {
        let mut out = Vec::new();
        for (i, spec) in self.file.cities.iter().enumerate() {
            let city = find_city(&spec.city).expect("checked in World::new");
            let loc = topology::geoip::GeoLocation {
                point: city.point(),
                city: Some(city.name.to_string()),
                country: Some(city.country.to_string()),
            };
            let i = i as u8 + 1;
            out.push((Ipv4Addr::new(127, 10, i, 0), 24, loc.clone()));
            out.push((Ipv4Addr::new(127, 20, i, 0), 24, loc));
        }
        out
    }
}

/// What a host's probes would measure of its link to another in the limit of
/// many probes, from the true one-way profiles there (`ab`) and back (`ba`):
/// `None` if either way is down.
///
/// - RTT: the 25th percentile of the RTT samples (the statistic edges
///   publish): the two delays less half the interquartile range, the
///   jitter being symmetric;
/// - loss: a probe counts as lost if it or its reply is;
/// - jitter: what edges publish, twice the distance from the RTT samples'
///   25th percentile to their median: for this symmetric noise, their
///   interquartile range, see [`rtt_jitter_iqr`].
pub fn true_summary(ab: LinkProfile, ba: LinkProfile) -> Option<LinkSummary> {
    let iqr = rtt_jitter_iqr(ab.jitter_ms, ba.jitter_ms);
    (!ab.down && !ba.down).then(|| LinkSummary {
        rtt_ms: (ab.delay_ms + ba.delay_ms - iqr / 2.0).max(0.0),
        jitter_ms: iqr,
        loss: 1.0 - (1.0 - ab.loss) * (1.0 - ba.loss),
        samples: TRUE_SUMMARY_SAMPLES,
    })
}

/// The RTT samples behind a true summary: a link probed for a long while
/// (200 s at five probes a second), the limit the true figures stand for.
/// Route computation reads no sample count; it is there for the record.
const TRUE_SUMMARY_SAMPLES: u64 = 1_000;

/// The interquartile range (p75 - p25) of `U(-j1, j1) + U(-j2, j2)`: the
/// jitter a prober publishes for a link whose two directions jitter by `j1`
/// and `j2`.
///
/// Why this shape: the WAN emulation varies each datagram's delay uniformly
/// by up to `jitter_ms` either way (`netem`), and a probe's RTT
/// crosses the link once each way, so its noise is the sum of two
/// independent uniforms, and edges publish the IQR of their RTT samples as
/// jitter. (Delays clamped at zero when jitter exceeds the delay are not
/// modelled: no link of the geography is that short and that jittery, but
/// a metro link under a jittery [`WeakNetwork`] is, and its true jitter
/// then comes out somewhat high.)
///
/// The sum has a trapezoid density, symmetric about 0, so the IQR is twice
/// its 75th percentile `q`. With `a >= b` the two half-widths: the density
/// is flat (`1/2a`) on `[-(a-b), a-b]` and falls linearly to 0 at `a+b`, the
/// tail beyond `s` holding `(a+b-s)^2 / 8ab`. If the flat part holds the
/// quartile (`b <= a/2`), `q = a/2`; otherwise the tail holds a quarter at
/// `q = a + b - sqrt(2ab)` (for `a = b = j`: IQR = `4j(1 - 1/sqrt 2)`, about
/// `1.17 j`).
pub fn rtt_jitter_iqr(j1: f64, j2: f64) -> f64 {
    let (a, b) = (j1.max(j2), j1.min(j2));
    if a <= 0.0 {
        return 0.0;
    }
    let q = if b <= a / 2.0 {
        a / 2.0
    } else {
        a + b - (2.0 * a * b).sqrt()
    };
    2.0 * q
}

/// The true links among the live edges at one moment: true RTTs, and the
/// graph of true summaries that route computation would see if probes were
/// exact (the yardstick for the controller's cost). Built once per sample
/// and used for every pair.
pub struct TrueMesh {
    /// Live edges, by increasing id.
    ids: Vec<u32>,
    /// `rtt[i * n + j]`: true RTT from `ids[i]` to `ids[j]`, `None` if down.
    rtt: Vec<Option<f64>>,
    graph: MeshGraph,
}

impl TrueMesh {
    fn idx(&self, id: u32) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }

    /// True RTT of the direct link (`None` if down or an end is not live).
    pub fn rtt(&self, a: u32, b: u32) -> Option<f64> {
        let (i, j) = (self.idx(a)?, self.idx(b)?);
        self.rtt[i * self.ids.len() + j]
    }

    /// True RTT along `path`: `None` if it is empty, or crosses a down link
    /// or an edge that is not live.
    pub fn path_rtt(&self, path: &[u32]) -> Option<f64> {
        self.idx(*path.first()?)?;
        path.windows(2).map(|w| self.rtt(w[0], w[1])).sum()
    }

    /// Live edges, by increasing id.
    pub fn edges(&self) -> &[u32] {
        &self.ids
    }

    /// The true links' summaries as a graph ([`CostModel::default`]; nodes
    /// unloaded, not draining).
    pub fn graph(&self) -> &MeshGraph {
        &self.graph
    }

    /// The lowest true RTT from `from` to every live edge it can reach
    /// (itself included, at 0), with the path: Dijkstra on the matrix, ties
    /// to the lower id.
    pub fn optimal_paths(&self, from: u32) -> HashMap<u32, (f64, Vec<u32>)> {
        let Some(s) = self.idx(from) else {
            return HashMap::new();
        };
        let n = self.ids.len();
        let mut dist = vec![f64::INFINITY; n];
        let mut prev = vec![usize::MAX; n];
        let mut done = vec![false; n];
        dist[s] = 0.0;
        while let Some(u) = (0..n)
            .filter(|&v| !done[v] && dist[v].is_finite())
            .min_by(|&x, &y| dist[x].total_cmp(&dist[y]))
        {
            done[u] = true;
            for v in (0..n).filter(|&v| !done[v]) {
                if let Some(w) = self.rtt[u * n + v] {
                    if dist[u] + w < dist[v] {
                        dist[v] = dist[u] + w;
                        prev[v] = u;
                    }
                }
            }
        }
        (0..n)
            .filter(|&v| done[v])
            .map(|v| {
                let mut path = vec![self.ids[v]];
                let mut at = v;
                while prev[at] != usize::MAX {
                    at = prev[at];
                    path.push(self.ids[at]);
                }
                path.reverse();
                (self.ids[v], (dist[v], path))
            })
            .collect()
    }
}

/// Two stages of a path in series, one way (the geography, then a last mile
/// or a weak network): delays add; jitters add (the range of the sum of two
/// independent uniform delays; the emulation only draws uniforms); a
/// datagram gets through if it survives both losses; down if either is;
/// reordered if either reorders.
///
/// Bursts: the emulation has one chain per link, so the sum's loss gets the
/// mean burst length of the two loss processes merged: its loss over the
/// rate at which bursts start, each stage starting `loss / burst_len` a
/// datagram (`burst_len` 1 if independent). That is exact for one bursty
/// stage over a clean one, and to first order in the losses otherwise.
/// Raised if need be to the shortest mean burst the total loss allows (see
/// `netem::GilbertElliott`), so the result is always a valid profile. With
/// neither stage bursty the loss stays independent.
fn stack(base: LinkProfile, extra: LinkProfile) -> LinkProfile {
    // 1 - (1 - a)(1 - b), written so that a lossless stage leaves the other's
    // loss exactly as it was.
    let loss = base.loss + extra.loss - base.loss * extra.loss;
    let mean_burst = match (base.loss > 0.0, extra.loss > 0.0) {
        (false, false) => 0.0,
        // One lossy stage: its loss and its bursts, exactly.
        (true, false) => base.burst_len,
        (false, true) => extra.burst_len,
        (true, true) if base.burst_len == 0.0 && extra.burst_len == 0.0 => 0.0,
        (true, true) => {
            let starts: f64 = [base, extra]
                .iter()
                .map(|p| p.loss / p.burst_len.max(1.0))
                .sum();
            loss / starts
        }
    };
    // The shortest mean burst this much loss allows, a hair above so that
    // rounding cannot put the loss past its bound.
    let shortest = loss / (1.0 - loss) * (1.0 + 1e-9);
    let burst_len = if mean_burst == 0.0 || loss >= 1.0 || shortest > MAX_BURST_LEN {
        // Independent loss; or all (or nearly all) lost, nothing left to
        // come in bursts.
        0.0
    } else if mean_burst >= shortest {
        mean_burst.clamp(1.0, MAX_BURST_LEN)
    } else {
        shortest.max(1.0)
    };
    LinkProfile {
        delay_ms: base.delay_ms + extra.delay_ms,
        jitter_ms: base.jitter_ms + extra.jitter_ms,
        loss,
        down: base.down || extra.down,
        burst_len,
        reorder: base.reorder || extra.reorder,
        // The narrower of two limits (0: none).
        rate_kbps: match (base.rate_kbps, extra.rate_kbps) {
            (0.0, r) | (r, 0.0) => r,
            (a, b) => a.min(b),
        },
    }
}

pub(crate) fn validate_override(o: &LinkOverride) -> anyhow::Result<()> {
    if !(0.0..=5_000.0).contains(&o.extra_delay_ms) {
        bail!(
            "link {}-{}: extra_delay_ms {} is not within 0-5000",
            o.a,
            o.b,
            o.extra_delay_ms
        );
    }
    if o.jitter_ms.is_some_and(|j| !(0.0..=1_000.0).contains(&j)) {
        bail!("link {}-{}: jitter_ms is not within 0-1000", o.a, o.b);
    }
    if o.loss.is_some_and(|l| !(0.0..=1.0).contains(&l)) {
        bail!("link {}-{}: loss is not within 0-1", o.a, o.b);
    }
    Ok(())
}

fn city_code(name: &str) -> anyhow::Result<&'static str> {
    find_city(name)
        .map(|c| c.code)
        .with_context(|| format!("unknown city {name:?}"))
}

/// Whether `o` is about the link between the cities coded `a` and `b`.
fn links(o: &LinkOverride, a: &str, b: &str) -> bool {
    match (city_code(&o.a), city_code(&o.b)) {
        (Ok(x), Ok(y)) => pair(x, y) == pair(a, b),
        _ => false,
    }
}

fn pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_world_has_five_regions_and_a_relay_that_beats_the_direct_link() {
        let w = World::new(TopologyFile::builtin()).unwrap();
        let mut regions: Vec<&str> = w.edges.iter().map(|e| e.host.city.region).collect();
        regions.sort();
        regions.dedup();
        assert!(regions.len() >= 5, "{regions:?}");
        let ids: Vec<u32> = w.edges.iter().map(|e| e.id).collect();
        let mut relayed_better = 0;
        for &a in &ids {
            let best = w.optimal_paths(a, &ids);
            for &b in &ids {
                if a != b && best[&b].0 < w.edge_rtt(a, b).unwrap() - 1.0 {
                    relayed_better += 1;
                }
            }
        }
        assert!(relayed_better > 0, "the detour must make some relay win");
    }

    #[test]
    fn the_rtt_jitter_iqr_matches_a_monte_carlo_estimate() {
        let mut rng = XorShift64::new(42);
        for (j1, j2) in [
            (1.0, 1.0),
            (0.3, 0.3),
            (4.0, 0.3),
            (1.0, 0.6),
            (0.0, 2.0),
            (2.0, 1.5),
        ] {
            let mut rtts: Vec<f64> = (0..400_000)
                .map(|_| rng.range(-j1, j1) + rng.range(-j2, j2))
                .collect();
            let p75 = crate::stats::percentile(&mut rtts, 75.0).unwrap();
            let p25 = crate::stats::percentile(&mut rtts, 25.0).unwrap();
            let exact = rtt_jitter_iqr(j1, j2);
            assert!(
                (p75 - p25 - exact).abs() <= 0.01 * exact,
                "j1 {j1} j2 {j2}: Monte Carlo {} exact {exact}",
                p75 - p25
            );
        }
        assert!((rtt_jitter_iqr(1.0, 1.0) - 4.0 * (1.0 - 0.5f64.sqrt())).abs() < 1e-12);
        assert_eq!(rtt_jitter_iqr(0.0, 0.0), 0.0);
        assert_eq!(rtt_jitter_iqr(2.0, 0.5), rtt_jitter_iqr(0.5, 2.0));
    }

    #[test]
    fn the_true_mesh_has_the_links_figures_and_leaves_dead_edges_out() {
        let f = TopologyFile::from_toml(
            "jitter_ms = 1.0\nloss = 0.01\n[[city]]\ncity = \"lhr\"\nedges = 1\n[[city]]\ncity = \"ams\"\nedges = 1\n[[city]]\ncity = \"fra\"\nedges = 1\n[[link]]\na = \"lhr\"\nb = \"fra\"\ndown = true",
        )
        .unwrap();
        let w = World::new(f).unwrap();
        let s = w.true_summary(1, 2).unwrap();
        // The 25th percentile: the mean RTT less half the interquartile
        // range.
        let rtt = w.edge_rtt(1, 2).unwrap();
        assert!((s.rtt_ms - (rtt - s.jitter_ms / 2.0)).abs() < 1e-9, "{s:?}");
        assert!((s.loss - (1.0 - 0.99 * 0.99)).abs() < 1e-12);
        assert!((s.jitter_ms - 1.1716).abs() < 1e-4, "{}", s.jitter_ms);
        assert!(w.true_summary(1, 3).is_none(), "lhr-fra is down");
        let mesh = w.true_mesh(&[1, 2, 3]);
        assert_eq!(mesh.rtt(1, 2), Some(rtt));
        assert_eq!(mesh.graph().link(1, 2), Some(&s));
        assert!(mesh.graph().link(1, 3).is_none());
        // lhr -> fra only through ams; the cost graph agrees.
        let (d, path) = &mesh.optimal_paths(1)[&3];
        assert_eq!(path, &vec![1, 2, 3]);
        assert_eq!(mesh.path_rtt(path), Some(*d));
        assert_eq!(mesh.path_rtt(&[1, 3]), None);
        let cost = mesh.graph().path_metrics(path).unwrap().cost_ms;
        let best = topology::compute_routes(mesh.graph(), 1).unwrap();
        assert!((best.get(3).unwrap().best.cost_ms - cost).abs() < 1e-3);
        // ams dead: fra is out of reach, and a path through ams is broken.
        let without = w.true_mesh(&[1, 3]);
        assert!(!without.optimal_paths(1).contains_key(&3));
        assert_eq!(without.path_rtt(&[1, 2, 3]), None);
        assert_eq!(without.edges(), &[1, 3]);
    }

    #[test]
    fn delays_follow_geography_and_overrides() {
        let w = World::new(TopologyFile::builtin()).unwrap();
        // world.toml spells out the calibrated defaults: they must agree.
        assert_eq!(w.file.inflation, Inflation::Fixed(DEFAULT_INFLATION));
        assert_eq!(w.file.rtt_overhead_ms, DEFAULT_RTT_OVERHEAD_MS);
        let by_city = |code: &str| w.edges.iter().find(|e| e.host.city.code == code).unwrap();
        let (lhr, ams) = (by_city("lhr"), by_city("ams"));
        let near = w.profile(&lhr.host, &ams.host).delay_ms;
        // ~360 km: 3.6 ms of fiber RTT, 9 + 1.65 x 3.6 = 14.9 ms RTT (12.5
        // published), half of it each way.
        let fiber = fiber_rtt_ms(lhr.host.city.point(), ams.host.city.point());
        assert_eq!(near, (9.0 + 1.65 * fiber) / 2.0);
        assert!((7.3..7.6).contains(&near), "{near}");
        // The file's detour on top of the model.
        let sin = by_city("sin");
        let fiber = fiber_rtt_ms(lhr.host.city.point(), sin.host.city.point());
        let detoured = w.profile(&lhr.host, &sin.host).delay_ms;
        assert!((detoured - ((9.0 + 1.65 * fiber) / 2.0 + 60.0)).abs() < 1e-9);
        let client = w.clients.iter().find(|c| c.city.code == "lhr").unwrap();
        let access = w.profile(client, &lhr.host).delay_ms;
        assert_eq!(access, w.file.metro_ms + w.file.access_ms);
        // Same file, same world.
        let again = World::new(TopologyFile::builtin()).unwrap();
        assert_eq!(again.profile(&lhr.host, &ams.host).delay_ms, near);
    }

    #[test]
    fn without_overrides_no_relay_beats_a_direct_link() {
        // Real networks mostly keep the triangle inequality; the old
        // per-pair draws broke it at random. Only `[[link]]` overrides
        // should make relays win.
        let mut file = TopologyFile::builtin();
        file.links.clear();
        let w = World::new(file).unwrap();
        let ids: Vec<u32> = w.edges.iter().map(|e| e.id).collect();
        for &a in &ids {
            let best = w.optimal_paths(a, &ids);
            for &b in ids.iter().filter(|&&b| b != a) {
                let (rtt, path) = &best[&b];
                assert_eq!(*rtt, w.edge_rtt(a, b).unwrap(), "{a}-{b} via {path:?}");
            }
        }
    }

    #[test]
    fn inflation_is_a_number_or_an_old_style_range() {
        let world = |text: &str| World::new(TopologyFile::from_toml(text).unwrap()).unwrap();
        let cities = "[[city]]\ncity = \"lhr\"\nedges = 1\n[[city]]\ncity = \"sin\"\nedges = 1\n[[city]]\ncity = \"nrt\"\nedges = 1";
        let fiber = fiber_rtt_ms(
            find_city("lhr").unwrap().point(),
            find_city("sin").unwrap().point(),
        );
        // A number, an integer too, with or without the overhead.
        let w = world(&format!("inflation = 2\nrtt_overhead_ms = 0\n{cities}"));
        assert!((w.edge_rtt(1, 2).unwrap() - 2.0 * fiber).abs() < 1e-9);
        let w = world(&format!("inflation = 1.5\nrtt_overhead_ms = 10\n{cities}"));
        assert!((w.edge_rtt(1, 2).unwrap() - (10.0 + 1.5 * fiber)).abs() < 1e-9);
        // A range draws per pair from the seed, as before calibration.
        let old = world(&format!(
            "seed = 3\ninflation = [1.4, 2.1]\nrtt_overhead_ms = 0\n{cities}"
        ));
        let mut rng = XorShift64::new(3);
        // Pairs are drawn in file order: lhr-sin, lhr-nrt, sin-nrt.
        let drawn = rng.range(1.4, 2.1);
        assert!((old.edge_rtt(1, 2).unwrap() - drawn * fiber).abs() < 1e-9);
        let ratio = |w: &World, a, b| {
            let (x, y) = (&w.edge(a).unwrap().host, &w.edge(b).unwrap().host);
            w.edge_rtt(a, b).unwrap() / fiber_rtt_ms(x.city.point(), y.city.point())
        };
        assert_ne!(ratio(&old, 1, 3), ratio(&old, 2, 3));
        // The default: the calibrated constants.
        let w = world(cities);
        assert_eq!(w.file.inflation, Inflation::Fixed(DEFAULT_INFLATION));
        assert_eq!(w.file.rtt_overhead_ms, DEFAULT_RTT_OVERHEAD_MS);
        // Anything else says what it takes.
        for bad in ["\"high\"", "[1.4]", "[1.4, 2.0, 3.0]", "{ low = 1.4 }"] {
            let err = TopologyFile::from_toml(&format!("inflation = {bad}\n{cities}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("a number (1.65) or a range"), "{bad}: {err}");
        }
    }

    #[test]
    fn bad_topologies_are_refused_with_the_reason() {
        let bad = |text: &str| {
            let f: TopologyFile = toml::from_str(text).unwrap();
            World::new(f).unwrap_err().to_string()
        };
        assert!(bad("[[city]]\ncity = \"atlantis\"\nedges = 1").contains("unknown city"));
        assert!(bad("[[city]]\ncity = \"fra\"\nclients = 1").contains("no edges"));
        assert!(
            bad("inflation = [0.5, 1.0]\n[[city]]\ncity = \"fra\"\nedges = 1")
                .contains("inflation")
        );
        assert!(bad("inflation = 0.9\n[[city]]\ncity = \"fra\"\nedges = 1").contains("inflation"));
        assert!(
            bad("rtt_overhead_ms = -1\n[[city]]\ncity = \"fra\"\nedges = 1")
                .contains("rtt_overhead_ms")
        );
        assert!(
            bad("[[city]]\ncity = \"fra\"\nedges = 1\n[[link]]\na = \"fra\"\nb = \"sin\"")
                .contains("not a city of this topology")
        );
        assert!(toml::from_str::<TopologyFile>("[[city]]\ncity = \"fra\"\nedgez = 1").is_err());
    }

    /// lhr: an edge and two clients; ams: an edge and a client; sin: an
    /// edge and a client. `extra` goes at the top of the file, `cities`
    /// after each city's `clients` line, in order.
    fn small_world(extra: &str, cities: [&str; 3]) -> anyhow::Result<World> {
        let [lhr, ams, sin] = cities;
        World::new(TopologyFile::from_toml(&format!(
            "{extra}\n[[city]]\ncity = \"lhr\"\nedges = 1\nclients = 2\n{lhr}\n[[city]]\ncity = \"ams\"\nedges = 1\nclients = 1\n{ams}\n[[city]]\ncity = \"sin\"\nedges = 1\nclients = 1\n{sin}"
        ))?)
    }

    fn client<'a>(w: &'a World, city: &str) -> &'a Host {
        w.clients.iter().find(|c| c.city.code == city).unwrap()
    }

    fn edge_host<'a>(w: &'a World, city: &str) -> &'a Host {
        &w.edges
            .iter()
            .find(|e| e.host.city.code == city)
            .unwrap()
            .host
    }

    #[test]
    fn the_last_mile_profiles_are_valid_and_never_cut_at_zero() {
        let names: Vec<&str> = LAST_MILES.iter().map(|m| m.name).collect();
        assert_eq!(names, ["broadband", "4g", "wifi-congested"]);
        for m in &LAST_MILES {
            assert!(m.profile.validate().is_ok(), "{}", m.name);
            assert!(m.profile.delay_ms >= m.profile.jitter_ms, "{}", m.name);
            assert!(!m.profile.down && !m.why.is_empty());
            assert_eq!(last_mile(m.name).unwrap(), Some(m));
        }
        assert_eq!(last_mile("none").unwrap(), None);
        let e = last_mile("5g").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown last_mile \"5g\" (one of broadband, 4g, wifi-congested, none)"
        );
    }

    #[test]
    fn without_profiles_the_world_is_the_one_it_always_was() {
        // "none" spelt out, and a weak network that adds nothing: the same
        // rules, bit for bit, as a file without them.
        let plain = small_world("", ["", "", ""]).unwrap();
        let none = small_world(
            "last_mile = \"none\"\nweak_network = {}",
            ["", "last_mile = \"none\"", ""],
        )
        .unwrap();
        assert_eq!(plain.rules(), none.rules());
        // Every repository world but the weak one has no profile: nothing
        // bursty or reordering, clients pay access_ms.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "weak.toml" {
                continue;
            }
            let w = World::new(TopologyFile::load(&path).unwrap()).unwrap();
            assert!(w.clients.iter().all(|c| w.last_mile_of(c).is_none()));
            assert!(
                w.rules()
                    .iter()
                    .all(|r| r.profile.burst_len == 0.0 && !r.profile.reorder),
                "{}",
                path.display()
            );
        }
    }

    #[test]
    fn a_client_link_is_the_geography_plus_its_last_mile() {
        let w = small_world(
            "last_mile = \"broadband\"",
            ["", "last_mile = \"4g\"", "last_mile = \"none\""],
        )
        .unwrap();
        let plain = small_world("", ["", "", ""]).unwrap();
        let (lhr, ams) = (edge_host(&w, "lhr"), edge_host(&w, "ams"));
        // Edge to edge: untouched.
        assert_eq!(w.profile(lhr, ams), plain.profile(lhr, ams));
        assert_eq!(w.true_summary(1, 2), plain.true_summary(1, 2));
        // Broadband (the file's default) in place of access_ms, both ways.
        let c = client(&w, "lhr");
        for p in [w.profile(c, lhr), w.profile(lhr, c)] {
            assert_eq!(p.delay_ms, w.file.metro_ms + 5.0);
            assert_eq!(p.jitter_ms, w.file.jitter_ms + 1.0);
            assert!((p.loss - 0.001).abs() < 1e-15, "{p:?}");
            assert_eq!((p.burst_len, p.reorder), (0.0, false));
        }
        // 4G from Amsterdam to the London edge: the geography plus 25 ms,
        // its bursts and its reordering.
        let c = client(&w, "ams");
        let geo = plain.profile(edge_host(&w, "ams"), lhr).delay_ms;
        let p = w.profile(c, lhr);
        assert!((p.delay_ms - (geo + 25.0)).abs() < 1e-9, "{p:?}");
        assert_eq!(p.jitter_ms, w.file.jitter_ms + 15.0);
        assert!((p.loss - 0.02).abs() < 1e-15);
        assert!((p.burst_len - 3.0).abs() < 1e-9, "{p:?}");
        assert!(p.reorder);
        assert_eq!(w.last_mile_of(c).map(|m| m.name), Some("4g"));
        // "none" in a city beats the file's default: access_ms.
        let c = client(&w, "sin");
        assert_eq!(w.last_mile_of(c), None);
        assert_eq!(w.profile(c, lhr), plain.profile(c, lhr));
        assert!(w.rules().iter().all(|r| r.profile.validate().is_ok()));
    }

    #[test]
    fn set_last_mile_changes_a_city_and_none_undoes_it() {
        let mut w = small_world("", ["", "", ""]).unwrap();
        let before = w.rules();
        w.set_last_mile("London", "wifi-congested").unwrap();
        let (c, lhr) = (client(&w, "lhr").clone(), edge_host(&w, "lhr").clone());
        let p = w.profile(&c, &lhr);
        assert_eq!(p.delay_ms, w.file.metro_ms + 38.0);
        assert_eq!((p.burst_len, p.reorder), (4.0, true));
        // Both London clients, nobody else.
        let changed: Vec<_> = w
            .rules()
            .iter()
            .zip(&before)
            .filter(|(a, b)| a != b)
            .map(|(a, _)| (a.from, a.to))
            .collect();
        assert!(!changed.is_empty());
        assert!(changed.iter().all(|(from, to)| [from, to].iter().any(|n| {
            w.clients
                .iter()
                .any(|c| c.city.code == "lhr" && n.contains(&c.ip))
        })));
        w.set_last_mile("lhr", "none").unwrap();
        assert_eq!(w.rules(), before);
        let err = |w: &mut World, city: &str, profile: &str| {
            w.set_last_mile(city, profile).unwrap_err().to_string()
        };
        assert!(err(&mut w, "lhr", "dialup").contains("unknown last_mile \"dialup\""));
        assert!(err(&mut w, "atlantis", "4g").contains("unknown city"));
        assert!(err(&mut w, "fra", "4g").contains("\"fra\" is not a city of this topology"));
        let mut edges_only =
            World::new(TopologyFile::from_toml("[[city]]\ncity = \"fra\"\nedges = 1").unwrap())
                .unwrap();
        assert!(err(&mut edges_only, "fra", "4g").contains("no clients"));
    }

    #[test]
    fn a_weak_network_adds_loss_and_jitter_to_every_link() {
        let mut w = small_world("last_mile = \"4g\"", ["", "", ""]).unwrap();
        let before = w.clone();
        let weak = WeakNetwork {
            loss: 0.03,
            jitter_ms: 4.0,
            burst_len: 2.0,
            reorder: true,
        };
        w.set_weak_network(weak).unwrap();
        assert_eq!(w.weak_network(), weak);
        let rules = w.rules();
        assert_eq!(rules.len(), before.rules().len());
        for (r, old) in rules.iter().zip(before.rules()) {
            let (p, o) = (r.profile, old.profile);
            assert_eq!(p.delay_ms, o.delay_ms);
            assert!((p.jitter_ms - (o.jitter_ms + 4.0)).abs() < 1e-9);
            assert!((p.loss - (1.0 - (1.0 - o.loss) * 0.97)).abs() < 1e-12);
            assert!(p.burst_len >= 1.0 && p.reorder);
            assert!(p.validate().is_ok(), "{p:?}");
        }
        // Edge links: one bursty stage, its bursts. Client links: two
        // bursty stages (4G's 2% in 3s, the weak network's 3% in 2s): 4.94%
        // lost in bursts starting 0.02/3 + 0.03/2 a datagram, 2.28 long.
        let (lhr, ams) = (edge_host(&w, "lhr").clone(), edge_host(&w, "ams").clone());
        assert!((w.profile(&lhr, &ams).burst_len - 2.0).abs() < 1e-9);
        let b = w.profile(client(&w, "ams"), &lhr).burst_len;
        assert!((b - 0.0494 / (0.02 / 3.0 + 0.015)).abs() < 1e-9, "{b}");
        // The true figures see the loss and the jitter.
        let (s, old) = (
            w.true_summary(1, 2).unwrap(),
            before.true_summary(1, 2).unwrap(),
        );
        assert!((s.loss - (1.0 - 0.97f64.powi(2))).abs() < 1e-12, "{s:?}");
        assert!(s.jitter_ms > old.jitter_ms + 4.0);
        assert_eq!(w.true_mesh(&[1, 2, 3]).graph().link(1, 2), Some(&s));
        // Off again: the world as it was.
        w.set_weak_network(WeakNetwork::default()).unwrap();
        assert_eq!(w.rules(), before.rules());
        for (bad, why) in [
            (
                WeakNetwork {
                    loss: 0.6,
                    burst_len: 1.0,
                    ..WeakNetwork::default()
                },
                "weak_network: loss 0.6 with burst_len 1",
            ),
            (
                WeakNetwork {
                    loss: 0.1,
                    burst_len: 0.5,
                    ..WeakNetwork::default()
                },
                "weak_network: burst_len 0.5",
            ),
            (
                WeakNetwork {
                    jitter_ms: f64::NAN,
                    ..WeakNetwork::default()
                },
                "weak_network: jitter_ms NaN",
            ),
        ] {
            let e = w.set_weak_network(bad).unwrap_err().to_string();
            assert!(e.starts_with(why), "{e}");
        }
        assert_eq!(w.weak_network(), WeakNetwork::default());
        // From the file too.
        let f = small_world(
            "weak_network = { loss = 0.03, jitter_ms = 4.0, burst_len = 2, reorder = true }",
            ["", "", ""],
        )
        .unwrap();
        assert_eq!(f.weak_network(), weak);
    }

    #[test]
    fn stacked_stages_always_make_a_valid_profile() {
        let losses = [0.0, 0.001, 0.05, 0.3, 0.5, 0.75, 0.999, 1.0];
        let bursts = [0.0, 1.0, 3.0, 1_000.0];
        for &l1 in &losses {
            for &b1 in &bursts {
                for &l2 in &losses {
                    for &b2 in &bursts {
                        let p = |loss: f64, burst_len: f64| LinkProfile {
                            loss,
                            // The most loss a valid profile can have.
                            burst_len: if burst_len >= 1.0 && loss > burst_len / (burst_len + 1.0) {
                                0.0
                            } else {
                                burst_len
                            },
                            ..LinkProfile::delay(1.0)
                        };
                        let s = stack(p(l1, b1), p(l2, b2));
                        assert!(s.validate().is_ok(), "{l1} {b1} + {l2} {b2}: {s:?}");
                    }
                }
            }
        }
        // One bursty stage over a clean one keeps its figures.
        let m = LAST_MILES[2].profile;
        let s = stack(LinkProfile::delay(1.0), m);
        assert_eq!((s.loss, s.burst_len), (m.loss, m.burst_len));
        let s = stack(m, LinkProfile::delay(1.0));
        assert_eq!((s.loss, s.burst_len), (m.loss, m.burst_len));
        // Two independent losses stay independent.
        let s = stack(
            LinkProfile {
                loss: 0.1,
                ..LinkProfile::default()
            },
            LAST_MILES[0].profile,
        );
        assert_eq!(s.burst_len, 0.0);
        assert!((s.loss - (1.0 - 0.9 * 0.999)).abs() < 1e-15);
    }

    #[test]
    fn bad_last_miles_and_weak_networks_in_a_file_are_refused() {
        let err = |extra: &str, city: &str| {
            format!("{:#}", small_world(extra, [city, "", ""]).unwrap_err())
        };
        assert!(err("last_mile = \"5g\"", "")
            .contains("unknown last_mile \"5g\" (one of broadband, 4g, wifi-congested, none)"));
        let e = err("", "last_mile = \"dsl\"");
        assert!(
            e.contains("city lhr") && e.contains("unknown last_mile \"dsl\""),
            "{e}"
        );
        assert!(err("weak_network = { loss = 2 }", "").contains("weak_network: loss 2"));
        assert!(err("weak_network = { jitter = 2 }", "").contains("unknown field `jitter`"));
        assert!(err("", "last_mile = 4").contains("last_mile"));
    }

    #[test]
    fn the_weak_world_mixes_last_miles() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/weak.toml");
        let w = World::new(TopologyFile::load(&path).unwrap()).unwrap();
        let mut regions: Vec<&str> = w.edges.iter().map(|e| e.host.city.region).collect();
        regions.dedup();
        assert_eq!((w.edges.len(), regions.len()), (6, 3));
        let mut miles: Vec<&str> = w
            .clients
            .iter()
            .map(|c| w.last_mile_of(c).map_or("none", |m| m.name))
            .collect();
        miles.sort();
        miles.dedup();
        assert_eq!(miles, ["4g", "broadband", "wifi-congested"]);
        assert!(w.rules().iter().all(|r| r.profile.validate().is_ok()));
    }

    #[test]
    fn a_nan_inflation_or_an_oversized_world_is_refused() {
        let bad = |text: &str| {
            World::new(TopologyFile::from_toml(text).unwrap())
                .unwrap_err()
                .to_string()
        };
        // A NaN high end got past `hi < lo || hi > 5.0` and made every
        // inter-city delay NaN, which the WAN emulation then refused.
        assert!(
            bad("inflation = [1.4, nan]\n[[city]]\ncity = \"fra\"\nedges = 1")
                .contains("inflation")
        );
        assert!(
            bad("inflation = [nan, 2.0]\n[[city]]\ncity = \"fra\"\nedges = 1")
                .contains("inflation")
        );
        assert!(bad("inflation = nan\n[[city]]\ncity = \"fra\"\nedges = 1").contains("inflation"));
        assert!(
            bad("rtt_overhead_ms = nan\n[[city]]\ncity = \"fra\"\nedges = 1")
                .contains("rtt_overhead_ms")
        );
        // 2 x 255 edges: a rule per host pair and an edge each in one process.
        let err =
            bad("[[city]]\ncity = \"fra\"\nedges = 255\n[[city]]\ncity = \"sin\"\nedges = 255");
        assert!(err.contains("at most 256 edges"), "{err}");
        let err = bad("[[city]]\ncity = \"fra\"\nedges = 1\nclients = 255\n[[city]]\ncity = \"sin\"\nclients = 255\n[[city]]\ncity = \"lhr\"\nclients = 255\n[[city]]\ncity = \"iad\"\nclients = 255\n[[city]]\ncity = \"nrt\"\nclients = 255");
        assert!(err.contains("1024 clients"), "{err}");
        let ok = World::new(
            TopologyFile::from_toml("[[city]]\ncity = \"fra\"\nedges = 255\nclients = 255")
                .unwrap(),
        )
        .unwrap();
        assert!(ok.rules().iter().all(|r| r.profile.validate().is_ok()));
    }
}
