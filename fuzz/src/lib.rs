//! Checks shared by the fuzz targets (and `examples/check_corpus.rs`).
//!
//! Each target feeds one text format an operator or tester writes to the
//! parser and validator RTN uses for it, then does more than "no panic":
//! whatever validates must also get through everything the program derives
//! from it before it does any I/O (a config that `check-config` accepts must
//! not fail or panic later at start), and cheap invariants must hold (round
//! trips, finite delays, times in order, rule lookups as documented).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use edge_node::config::{EdgeConfig, NetemSection};
use netem::{LinkProfile, LinkRule, Wan};
use loadtest::lab::chaos::{Action, Plan, MAX_AT_S};
use loadtest::lab::world::{LinkOverride, TopologyFile, World, MAX_CLIENTS, MAX_EDGES};
use region_controller::config::ControllerConfig;
use control::keys::KeyLayout;

/// Environment variable the corpus's `secrets_env` entries name; set once
/// per process, to a valid secret list.
pub const SECRETS_ENV: &str = "RTN_FUZZ_APP_SECRETS";

fn set_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var(SECRETS_ENV, "fuzz-secret-0123456789, fuzz-secret-next-0123");
    });
}

/// edge-node's config: `EdgeConfig::from_toml`, `validate`, then what
/// `Edge::start` and each session derive from a validated config without
/// I/O. The key and certificate files are never read.
pub fn check_edge_config(text: &str) {
    set_env();
    let Ok(cfg) = EdgeConfig::from_toml(text, Path::new("fuzz.toml")) else {
        return;
    };
    // Secrets never reach the logs: the Debug output (what a `{:?}` in a log
    // line shows) does not change when the secrets do.
    let mut blank = cfg.clone();
    for app in &mut blank.apps {
        for s in &mut app.secrets {
            *s = String::new();
        }
    }
    assert_eq!(
        format!("{cfg:?}"),
        format!("{blank:?}"),
        "a secret shows in the config's Debug output"
    );
    let location = cfg.location();
    if let Ok((lat, lon)) = location {
        assert!((-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon));
    }
    if cfg.validate().is_err() {
        return;
    }
    // Validated: everything start-up derives must now succeed.
    let me = cfg.edge.id;
    assert_ne!(me, 0);
    KeyLayout::new(&cfg.control.store.prefix).expect("validated prefix makes a key layout");
    if !cfg.control.store.etcd_endpoints.is_empty() {
        location.expect("validated edge with a control plane has a location");
    }
    for app in &cfg.apps {
        let secrets = app.resolved_secrets().expect("validated secrets resolve");
        assert!(!secrets.is_empty() && secrets.iter().all(|s| s.len() >= 16));
    }
    if let Some(n) = &cfg.netem {
        Wan::new(n.links.clone()).expect("validated [netem] rules are accepted by the WAN");
    }
    // The static routes (`RouteTable::from_config`): every [[routes]] entry
    // must be usable, i.e. a loop-free path from this edge that the route
    // trees media is sent on accept, and the only one to its destination.
    let table = edge_node::routes::RouteTable::from_config(&cfg);
    assert_eq!(table.peers.len(), cfg.peers.len());
    for r in &cfg.routes {
        let path = table
            .path(me, r.dest)
            .expect("a route's destination has a path");
        assert_eq!(path.first(), Some(&me));
        assert_eq!(path.last(), Some(&r.dest));
        assert_eq!(
            &path[1..path.len() - 1],
            r.via.as_slice(),
            "two [[routes]] entries for edge {}: one is silently ignored",
            r.dest
        );
        let trees = protocol::route_tree::RouteTree::build(me, &[&path]);
        let delivers = trees.iter().any(|t| t.destinations().any(|d| d == r.dest));
        assert!(
            delivers,
            "static route {path:?} is dropped when media trees are built"
        );
    }
    // Per-session queues (session.rs): tokio refuses absurd capacities by
    // panicking, in every session task.
    let (_tx, _rx) = tokio::sync::mpsc::channel::<()>(cfg.limits.client_frame_queue);
    // Timers derived from the limits.
    let now = Instant::now();
    for ms in [
        cfg.limits.join_timeout_ms,
        cfg.limits.client_idle_timeout_ms,
        cfg.limits.drain_timeout_ms,
        cfg.control.lease_ttl_ms,
    ] {
        assert!(now.checked_add(Duration::from_millis(ms)).is_some());
    }
    assert_eq!(
        cfg.join_timeout().as_millis(),
        cfg.limits.join_timeout_ms as u128
    );
}

/// region-controller's config: `ControllerConfig::from_toml`, `validate`,
/// then what the binary's `run` derives before binding anything.
pub fn check_controller_config(text: &str) {
    let Ok(cfg) = ControllerConfig::from_toml(text) else {
        return;
    };
    if cfg.validate().is_err() {
        return;
    }
    let keys = KeyLayout::new(&cfg.store.store.prefix).expect("validated prefix makes a key layout");
    let leader = keys.leader(&cfg.controller.region);
    assert!(leader.starts_with(keys.prefix()) && leader.ends_with("/leader"));
    // The region is one key segment: the leader key of another region never
    // starts with this region's.
    assert!(!cfg.controller.region.contains('/'));
    let proxies = region_controller::api::parse_proxies(&cfg.api.trusted_proxies)
        .expect("validated trusted_proxies parse");
    assert_eq!(proxies.len(), cfg.api.trusted_proxies.len());
    if let Some(h) = &cfg.api.client_ip_header {
        hyper::header::HeaderName::try_from(h.as_str()).unwrap_or_else(|e| {
            panic!("validated api.client_ip_header {h:?} is refused at start: {e}")
        });
    }
    assert!(cfg.api.lookups_per_ip_per_s >= 1);
    let now = Instant::now();
    for ms in [
        cfg.controller.debounce_ms,
        cfg.controller.recompute_ms,
        cfg.store.election_ttl_ms,
    ] {
        assert!(now.checked_add(Duration::from_millis(ms)).is_some());
    }
    assert_eq!(
        cfg.election_ttl(),
        Duration::from_millis(cfg.store.election_ttl_ms)
    );
}

/// The lab's topology: `TopologyFile::from_toml`, `World::new`, then the
/// World used as the lab uses it.
pub fn check_lab_topology(text: &str) {
    let Ok(file) = TopologyFile::from_toml(text) else {
        return;
    };
    let Ok(world) = World::new(file.clone()) else {
        return;
    };
    check_world(&world);
    // Same file (same seed), same world.
    let again = World::new(file).expect("a topology that built once builds again");
    if let (Some(a), Some(b)) = (world.edges.first(), world.edges.last()) {
        assert_eq!(
            world.profile(&a.host, &b.host),
            again.profile(&a.host, &b.host)
        );
    }
}

fn check_world(world: &World) {
    let (ne, nc) = (world.edges.len(), world.clients.len());
    assert!((1..=MAX_EDGES).contains(&ne) && nc <= MAX_CLIENTS);
    // Edge ids are 1.. in file order, host addresses unique.
    for (i, e) in world.edges.iter().enumerate() {
        assert_eq!(e.id as usize, i + 1);
        assert_eq!(world.edge(e.id).map(|x| x.id), Some(e.id));
    }
    let mut ips = HashSet::new();
    for h in world.edges.iter().map(|e| &e.host).chain(&world.clients) {
        assert!(ips.insert(h.ip), "two hosts at {}", h.ip);
    }
    // Every WAN rule is one the emulation accepts (else the lab fails at
    // start), with a finite, non-negative delay.
    let rules = world.rules();
    let hosts = ne + nc;
    assert_eq!(rules.len(), hosts * (hosts - 1) - nc * nc.saturating_sub(1));
    for r in &rules {
        check_profile(&r.profile);
    }
    // True RTTs: finite, non-negative, symmetric.
    let ids: Vec<u32> = world.edges.iter().map(|e| e.id).collect();
    for &a in &ids {
        for &b in &ids {
            let ab = world.edge_rtt(a, b);
            assert_eq!(ab, world.edge_rtt(b, a));
            if let Some(rtt) = ab {
                assert!(rtt.is_finite() && rtt >= 0.0, "RTT {a}-{b}: {rtt}");
            }
        }
    }
    // Optimal paths from the first and the last edge.
    for &from in [ids[0], ids[ids.len() - 1]].iter().collect::<HashSet<_>>() {
        let best = world.optimal_paths(from, &ids);
        assert_eq!(best[&from].0, 0.0);
        for (to, (d, path)) in &best {
            assert!(d.is_finite() && *d >= 0.0);
            assert_eq!(path.first(), Some(&from));
            assert_eq!(path.last(), Some(to));
            let along = world.path_rtt(path).expect("an optimal path is up");
            assert!(
                (along - d).abs() <= 1e-9 * along.max(1.0),
                "path {path:?}: {along} != {d}"
            );
            if let Some(direct) = world.edge_rtt(from, *to) {
                assert!(*d <= direct + 1e-9 * direct.max(1.0));
            }
        }
    }
    // GeoIP: every host's address is in its city's network.
    let geo = world.geoip_entries();
    assert_eq!(geo.len(), 2 * world.file.cities.len());
    for h in world.edges.iter().map(|e| &e.host).chain(&world.clients) {
        let IpAddr::V4(ip) = h.ip else {
            panic!("lab hosts are IPv4")
        };
        let entry = geo
            .iter()
            .find(|(net, len, _)| {
                let mask = u32::MAX << (32 - *len as u32);
                u32::from(*net) & mask == u32::from(ip) & mask
            })
            .expect("every host has a GeoIP entry");
        assert_eq!(entry.2.city.as_deref(), Some(h.city.name));
    }
}

fn check_profile(p: &LinkProfile) {
    assert!(
        p.validate().is_ok(),
        "the World made a link profile the WAN refuses: {p:?}"
    );
    assert!(p.delay_ms.is_finite() && p.delay_ms >= 0.0);
}

fn builtin_world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World::new(TopologyFile::builtin()).expect("built-in world"))
}

/// The lab's chaos plan: `Plan::from_toml` (parse, validate, sort), then the
/// plan scheduled and its link changes applied as `lab::run` does.
pub fn check_chaos_plan(text: &str) {
    let Ok(plan) = Plan::from_toml(text) else {
        return;
    };
    // The same events as the file, stably sorted by time.
    let raw: Plan = toml::from_str(text).expect("a validated plan parses");
    let mut sorted = raw.events.clone();
    sorted.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    assert_eq!(plan.events, sorted);
    let start = Instant::now();
    let mut last = 0.0;
    let mut world = builtin_world().clone();
    for e in &plan.events {
        assert!(e.at_s.is_finite() && (0.0..=MAX_AT_S).contains(&e.at_s));
        assert!(e.at_s >= last, "events out of order");
        last = e.at_s;
        // The run loop's timer for the event.
        let at = |s: f64| {
            let d = Duration::try_from_secs_f64(s)
                .unwrap_or_else(|err| panic!("event time {s} s is not a timer: {err}"));
            assert!(start.checked_add(d).is_some());
        };
        at(e.at_s);
        match &e.action {
            // Expanded by the run loop into a drain and a restart per edge.
            Action::RollingRestart { every_s } => {
                for k in [0, 1, MAX_EDGES - 1] {
                    let t = e.at_s + k as f64 * every_s;
                    at(t);
                    at(t + every_s / 2.0);
                }
            }
            Action::DegradeLink {
                a,
                b,
                extra_delay_ms,
                jitter_ms,
                loss,
            } => world
                .set_override(LinkOverride {
                    a: a.clone(),
                    b: b.clone(),
                    extra_delay_ms: *extra_delay_ms,
                    jitter_ms: *jitter_ms,
                    loss: *loss,
                    down: false,
                })
                .expect("a validated degrade_link applies"),
            Action::Partition { a, b } => world
                .set_override(LinkOverride {
                    a: a.clone(),
                    b: b.clone(),
                    extra_delay_ms: 0.0,
                    jitter_ms: None,
                    loss: None,
                    down: true,
                })
                .expect("a validated partition applies"),
            Action::HealLink { a, b } => world
                .clear_override(a, b)
                .expect("a validated heal_link applies"),
            _ => {}
        }
    }
    // After the link changes the lab replaces the WAN's rules: it must
    // accept them.
    for r in world.rules() {
        check_profile(&r.profile);
    }
}

/// WAN emulation rules, in both forms RTN reads: the JSON list `PUT /netem`
/// takes (`serde_json::from_slice::<Vec<LinkRule>>` then `Wan::replace`, as
/// `admin.rs` does) and the `[netem]` config section (TOML, checked by
/// `EdgeConfig::validate` and installed with `Wan::new`).
pub fn check_netem_rules(text: &str) {
    if let Ok(rules) = serde_json::from_str::<Vec<LinkRule>>(text) {
        check_rules(rules);
    }
    if let Ok(section) = toml::from_str::<NetemSection>(text) {
        let config_ok = section.links.iter().all(|r| r.profile.validate().is_ok());
        assert_eq!(
            Wan::new(section.links.clone()).is_ok(),
            config_ok,
            "config validation and the WAN disagree"
        );
        check_rules(section.links);
    }
}

#[derive(serde::Serialize)]
struct NetemDoc<'a> {
    links: &'a [LinkRule],
}

fn check_rules(rules: Vec<LinkRule>) {
    let wan = match Wan::new(rules.clone()) {
        Ok(w) => w,
        Err(e) => {
            assert!(rules.iter().any(|r| r.profile.validate().is_err()));
            assert!(e.contains("link "), "unclear error: {e}");
            return;
        }
    };
    assert_eq!(wan.rules(), rules);
    // `GET /netem` then `PUT` it back: the same rules.
    let json = serde_json::to_string(&wan.rules()).expect("rules serialise");
    let back: Vec<LinkRule> = serde_json::from_str(&json).expect("GET /netem output parses");
    assert_eq!(back, rules);
    wan.replace(back).expect("GET /netem output is accepted");
    // Written as a [netem] section and read back: the same rules.
    let toml_text = toml::to_string(&NetemDoc { links: &rules }).expect("rules as TOML");
    let section: NetemSection = toml::from_str(&toml_text)
        .unwrap_or_else(|e| panic!("[netem] written as {toml_text:?} does not parse: {e}"));
    assert_eq!(section.links, rules);
    // Lookups: the most specific matching rule wins (later on a tie), a
    // down rule of either host wins over everything, no match is a clean
    // link. Probed at the addresses the rules name.
    let mut probes: Vec<IpAddr> = rules
        .iter()
        .flat_map(|r| {
            [
                r.from.addr(),
                r.to.addr(),
                r.from.broadcast(),
                r.to.network(),
            ]
        })
        .take(16)
        .collect();
    probes.push("127.0.0.1".parse().expect("literal"));
    for &from in &probes {
        for &to in &probes {
            let got = wan.profile(from, to);
            assert_eq!(got, expected_profile(&rules, from, to), "{from} -> {to}");
            assert!(got.validate().is_ok());
            assert_eq!(wan.profile(from, to), got, "cached lookup differs");
        }
    }
}

/// The documented lookup, written independently of `Wan::profile`.
fn expected_profile(rules: &[LinkRule], from: IpAddr, to: IpAddr) -> LinkProfile {
    let mut best: Option<(u16, &LinkRule)> = None;
    let mut down = false;
    for r in rules {
        if r.from.contains(&from) && r.to.contains(&to) {
            down |= r.profile.down;
            let s = r.from.prefix_len() as u16 + r.to.prefix_len() as u16;
            if best.is_none_or(|(b, _)| s >= b) {
                best = Some((s, r));
            }
        }
    }
    let mut p = best.map(|(_, r)| r.profile).unwrap_or_default();
    p.down |= down;
    p
}
