//! etcd's /metrics, and the run's report: its figures, goals and summary.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tracing::warn;

use super::controllers::{logged_compute_ms, ControllerProc, ControllerSample};
use super::edges::{CounterSnapshot, Ctx, Events, Kind, KINDS};
use super::{Args, GOAL_ROUTE_UPDATE_MS, GOAL_WRITES_PER_EDGE};
use crate::stats::percentile;
use testkit::scrape::metric_sum;

/// The host:port of an `http://` URL on loopback; anything else is refused.
pub(super) fn loopback_endpoint(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--etcd {url:?} must be an http:// URL"))?;
    let hostport = rest.trim_end_matches('/');
    let (host, port) = hostport
        .rsplit_once(':')
        .with_context(|| format!("--etcd {url:?} needs a port"))?;
    let port: u16 = port
        .parse()
        .with_context(|| format!("--etcd {url:?}: bad port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse()
            .with_context(|| format!("--etcd {url:?}: the host must be a loopback address"))?
    };
    anyhow::ensure!(
        ip.is_loopback(),
        "--etcd {url:?} is not on loopback: this test floods the etcd it is given"
    );
    Ok(SocketAddr::new(ip, port))
}

/// What etcd's /metrics says at one moment.
pub(super) struct EtcdSample {
    text: String,
}

impl EtcdSample {
    pub(super) async fn scrape(addr: SocketAddr) -> Option<EtcdSample> {
        match testkit::scrape::http(addr, "GET", "/metrics", &[], "").await {
            Ok((200, text)) => Some(EtcdSample { text }),
            Ok((code, _)) => {
                warn!(code, "etcd /metrics answered with an error");
                None
            }
            Err(e) => {
                warn!(error = %e, "etcd /metrics not reachable");
                None
            }
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<f64> {
        metric_sum(&self.text, name, &[])
    }
}

#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct P50Max {
    pub p50: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct MeanMax {
    pub mean: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct RouteUpdate {
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Edges whose routes changed in time.
    pub samples: usize,
    /// Affected edges whose routes did not change within the timeout.
    pub misses: usize,
    /// Links marked dead.
    pub events: usize,
    /// Affected edges over all events.
    pub affected: usize,
}

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct KindFigures {
    pub writes: u64,
    pub writes_per_s: f64,
    pub bytes_per_s: f64,
    pub mean_bytes: f64,
}

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct EtcdFigures {
    /// All puts (edges' and controllers') per second.
    pub puts_per_s: Option<f64>,
    pub db_size_bytes: Option<f64>,
    pub db_size_in_use_bytes: Option<f64>,
    pub keys: Option<f64>,
    pub lease_renewals_per_s: Option<f64>,
    pub cpu_cores: Option<f64>,
    pub rss_mib: Option<f64>,
    pub client_bytes_received_per_s: Option<f64>,
}

impl EtcdFigures {
    pub(super) fn between(
        a: Option<&EtcdSample>,
        b: Option<&EtcdSample>,
        secs: f64,
    ) -> Option<Self> {
        let b = b?;
        let rate = |name: &str| Some((b.get(name)? - a?.get(name)?) / secs);
        Some(EtcdFigures {
            puts_per_s: rate("etcd_mvcc_put_total"),
            db_size_bytes: b.get("etcd_mvcc_db_total_size_in_bytes"),
            db_size_in_use_bytes: b.get("etcd_mvcc_db_total_size_in_use_in_bytes"),
            keys: b.get("etcd_debugging_mvcc_keys_total"),
            lease_renewals_per_s: rate("etcd_debugging_lease_renewed_total"),
            cpu_cores: rate("process_cpu_seconds_total"),
            rss_mib: b
                .get("process_resident_memory_bytes")
                .map(|v| v / 1048576.0),
            client_bytes_received_per_s: rate("etcd_network_client_grpc_received_bytes_total"),
        })
    }
}

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct ControllerFigures {
    pub name: String,
    pub region: String,
    pub leader: bool,
    /// CPU over the measured window, in cores.
    pub cpu_cores: Option<f64>,
    pub rss_mib: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    /// Computations in the window and their mean (from its /metrics).
    pub computes: Option<f64>,
    pub compute_mean_ms: Option<f64>,
}

#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Goal {
    pub target: f64,
    pub measured: Option<f64>,
    pub met: bool,
}

#[derive(Serialize, Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub edges: usize,
    pub regions: usize,
    pub controllers: usize,
    pub standby: bool,
    pub seed: u64,
    pub duration_s: f64,
    pub registration_s: f64,
    pub warmup_s: f64,
    pub warmup_edges_with_routes: usize,
    /// Edges that registered at least once (the rates below are per
    /// registered edge).
    pub edges_registered: usize,
    /// Steady-state writes of the edges (registration, load, probes; not
    /// the measurement's own), per edge per second.
    pub writes_per_s_per_edge: f64,
    pub edge_writes_per_s: f64,
    pub edge_write_bytes_per_s: f64,
    pub by_kind: BTreeMap<String, KindFigures>,
    pub keepalives_per_s: f64,
    pub keepalive_failures: u64,
    pub leases_lost: u64,
    /// Routes records as the edges received them (whole run).
    pub routes_record_bytes: MeanMax,
    pub routes_records_received: u64,
    /// Region and exits records the edges received (hierarchical routing;
    /// whole run), and their bytes per edge per second of the run.
    pub region_records_received: u64,
    pub region_bytes_per_s_per_edge: f64,
    pub etcd: Option<EtcdFigures>,
    pub controller_cpu_cores_total: Option<f64>,
    pub controller_rss_mib_total: Option<f64>,
    pub controller: Vec<ControllerFigures>,
    /// Recompute times (ms) logged by the controllers in the window
    /// (computations that changed routes); p50 over them, and the max.
    pub region_recompute_ms: P50Max,
    pub recompute_samples: usize,
    pub route_update_ms: RouteUpdate,
    pub goals: BTreeMap<String, Goal>,
    pub run_s: f64,
    /// What failed or timed out; empty when nothing did.
    pub broke: Vec<String>,
}

impl Report {
    pub(super) fn new(args: &Args, regions: usize, controllers: usize) -> Report {
        Report {
            edges: args.edges,
            regions,
            controllers,
            standby: args.standby,
            seed: args.seed,
            ..Report::default()
        }
    }

    pub(super) fn record_writes(
        &mut self,
        a: &CounterSnapshot,
        b: &CounterSnapshot,
        secs: f64,
        n: usize,
    ) {
        self.duration_s = secs;
        let mut writes = 0;
        let mut bytes = 0;
        for kind in KINDS {
            let k = kind as usize;
            let (w, by) = (b.writes[k] - a.writes[k], b.bytes[k] - a.bytes[k]);
            if kind != Kind::Forced {
                writes += w;
                bytes += by;
            }
            self.by_kind.insert(
                kind.name().into(),
                KindFigures {
                    writes: w,
                    writes_per_s: w as f64 / secs,
                    bytes_per_s: by as f64 / secs,
                    mean_bytes: if w > 0 { by as f64 / w as f64 } else { 0.0 },
                },
            );
        }
        self.edge_writes_per_s = writes as f64 / secs;
        self.edge_write_bytes_per_s = bytes as f64 / secs;
        self.writes_per_s_per_edge = self.edge_writes_per_s / n as f64;
        self.keepalives_per_s = (b.keepalives - a.keepalives) as f64 / secs;
        self.keepalive_failures = b.keepalive_failures - a.keepalive_failures;
        self.leases_lost = b.leases_lost - a.leases_lost;
    }

    pub(super) fn record_controllers(
        &mut self,
        procs: &[ControllerProc],
        a: &[ControllerSample],
        b: &[ControllerSample],
        secs: f64,
    ) {
        let mut logged = Vec::new();
        for ((p, a), b) in procs.iter().zip(a).zip(b) {
            let computes = a
                .computes
                .zip(b.computes)
                .map(|(x, y)| (y.0 - x.0, y.1 - x.1));
            self.controller.push(ControllerFigures {
                name: p.name.clone(),
                region: p.region.clone(),
                leader: b.leader,
                cpu_cores: a.cpu_s.zip(b.cpu_s).map(|(x, y)| (y - x) / secs),
                rss_mib: b.rss_mib,
                peak_rss_mib: b.peak_rss_mib,
                computes: computes.map(|c| c.0),
                compute_mean_ms: computes.filter(|c| c.0 > 0.0).map(|c| c.1 / c.0 * 1e3),
            });
            // Only the window's lines: from where the log ended at its start.
            logged.extend(logged_compute_ms(&p.log, a.log_len..b.log_len));
        }
        self.controller_cpu_cores_total = self.controller.iter().map(|c| c.cpu_cores).sum();
        self.controller_rss_mib_total = self.controller.iter().map(|c| c.rss_mib).sum();
        self.recompute_samples = logged.len();
        self.region_recompute_ms = P50Max {
            p50: percentile(&mut logged, 50.0),
            max: percentile(&mut logged, 100.0),
        };
        if logged.is_empty() {
            self.broke
                .push("no controller logged a route computation in the window".into());
        }
    }

    pub(super) fn record_routes(&mut self, ctx: &Ctx, ev: Events) {
        let mut lat = ctx.latencies_ms.lock().expect("latencies lock").clone();
        self.route_update_ms = RouteUpdate {
            p50: percentile(&mut lat, 50.0),
            p99: percentile(&mut lat, 99.0),
            max: percentile(&mut lat, 100.0),
            samples: lat.len(),
            misses: ev.misses,
            events: ev.events,
            affected: ev.affected,
        };
        let c = &ctx.counters;
        let n = c.routes_updates.load(Ordering::Relaxed);
        self.routes_records_received = n;
        self.region_records_received = c.region_updates.load(Ordering::Relaxed);
        self.region_bytes_per_s_per_edge = c.region_bytes.load(Ordering::Relaxed) as f64
            / ctx.routes.lock().expect("routes lock").len().max(1) as f64
            / ctx.started.elapsed().as_secs_f64().max(1e-3);
        self.routes_record_bytes = MeanMax {
            mean: (n > 0).then(|| c.routes_bytes.load(Ordering::Relaxed) as f64 / n as f64),
            max: (n > 0).then(|| c.routes_bytes_max.load(Ordering::Relaxed) as f64),
        };
        if ev.misses > 0 {
            self.broke.push(format!(
                "route updates: {} of {} affected edges got no routes without the dead link within the timeout",
                ev.misses, ev.affected
            ));
        }
        if ev.events == 0 {
            self.broke.push(format!(
                "route updates: no link carrying routes to measure ({} tries)",
                ev.skipped
            ));
        }
        self.broke.extend(ev.failed);
    }

    pub(super) fn finish(&mut self, run: Duration) {
        self.run_s = run.as_secs_f64();
        let measured = self.duration_s > 0.0;
        self.goals.insert(
            "writes_per_s_per_edge".into(),
            Goal {
                target: GOAL_WRITES_PER_EDGE,
                measured: measured.then_some(self.writes_per_s_per_edge),
                // Edges re-registering after lost leases are no steady
                // state, whatever their rate.
                met: measured
                    && self.edges_registered == self.edges
                    && self.leases_lost == 0
                    && self.writes_per_s_per_edge < GOAL_WRITES_PER_EDGE,
            },
        );
        let p99 = self.route_update_ms.p99;
        self.goals.insert(
            "route_update_ms".into(),
            Goal {
                target: GOAL_ROUTE_UPDATE_MS,
                measured: p99,
                met: p99.is_some_and(|p| p < GOAL_ROUTE_UPDATE_MS)
                    && self.route_update_ms.misses == 0,
            },
        );
    }

    pub(super) fn print(&self) {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let met = |k: &str| {
            if self.goals.get(k).is_some_and(|g| g.met) {
                "met"
            } else {
                "NOT MET"
            }
        };
        println!(
            "\n== control-scale: {} edges, {} regions, {} controllers, {:.0} s steady state ==",
            self.edges, self.regions, self.controllers, self.duration_s
        );
        println!(
            "registration {:.1} s; warm-up {:.1} s, routes at {}/{} edges",
            self.registration_s, self.warmup_s, self.warmup_edges_with_routes, self.edges
        );
        println!(
            "edge writes: {:.3} /s per edge (goal < {GOAL_WRITES_PER_EDGE}: {}), {:.0} /s, {:.0} KB/s",
            self.writes_per_s_per_edge,
            met("writes_per_s_per_edge"),
            self.edge_writes_per_s,
            self.edge_write_bytes_per_s / 1e3
        );
        for (kind, k) in &self.by_kind {
            println!(
                "  {kind:<14} {:>7} writes {:>9.1} /s {:>9.1} KB/s  {:>8.0} B mean",
                k.writes,
                k.writes_per_s,
                k.bytes_per_s / 1e3,
                k.mean_bytes
            );
        }
        println!(
            "lease keepalives: {:.0} /s ({} failed, {} leases lost)",
            self.keepalives_per_s, self.keepalive_failures, self.leases_lost
        );
        match &self.etcd {
            Some(e) => println!(
                "etcd: {} puts/s (all writers), {} lease renewals/s, {} keys, db {} MiB ({} MiB in use), cpu {} cores, rss {} MiB, {} KB/s from clients",
                f(e.puts_per_s),
                f(e.lease_renewals_per_s),
                f(e.keys),
                f(e.db_size_bytes.map(|b| b / 1048576.0)),
                f(e.db_size_in_use_bytes.map(|b| b / 1048576.0)),
                e.cpu_cores.map_or("-".into(), |c| format!("{c:.2}")),
                f(e.rss_mib),
                f(e.client_bytes_received_per_s.map(|b| b / 1e3)),
            ),
            None => println!("etcd: /metrics not read"),
        }
        println!(
            "controllers: cpu {} cores in all, rss {} MiB in all; routes records {} received, {} KB mean, {} KB max; region and exits records {} received, {} KB/s per edge",
            self.controller_cpu_cores_total.map_or("-".into(), |c| format!("{c:.2}")),
            f(self.controller_rss_mib_total),
            self.routes_records_received,
            f(self.routes_record_bytes.mean.map(|b| b / 1e3)),
            f(self.routes_record_bytes.max.map(|b| b / 1e3)),
            self.region_records_received,
            f(Some(self.region_bytes_per_s_per_edge / 1e3)),
        );
        let busiest = self.controller.iter().max_by(|a, b| {
            a.cpu_cores
                .unwrap_or(0.0)
                .total_cmp(&b.cpu_cores.unwrap_or(0.0))
        });
        if let Some(c) = busiest {
            println!(
                "  busiest: {} cpu {} cores, rss {} MiB (peak {}), {} computations, mean {} ms",
                c.name,
                c.cpu_cores.map_or("-".into(), |v| format!("{v:.2}")),
                f(c.rss_mib),
                f(c.peak_rss_mib),
                f(c.computes),
                f(c.compute_mean_ms)
            );
        }
        println!(
            "region recompute: p50 {} ms, max {} ms ({} logged computations)",
            f(self.region_recompute_ms.p50),
            f(self.region_recompute_ms.max),
            self.recompute_samples
        );
        let r = &self.route_update_ms;
        println!(
            "route update: p50 {} ms, p99 {} ms, max {} ms (goal < {GOAL_ROUTE_UPDATE_MS:.0} ms: {}); {} events, {} affected, {} misses",
            f(r.p50),
            f(r.p99),
            f(r.max),
            met("route_update_ms"),
            r.events,
            r.affected,
            r.misses
        );
        if self.broke.is_empty() {
            println!("broke: nothing");
        }
        for b in &self.broke {
            println!("broke: {b}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_etcd_is_accepted() {
        assert!(loopback_endpoint("http://127.0.0.1:23790").is_ok());
        assert!(loopback_endpoint("http://localhost:2379/").is_ok());
        assert!(loopback_endpoint("http://[::1]:2379").is_ok());
        assert!(loopback_endpoint("http://10.0.0.5:2379").is_err());
        assert!(loopback_endpoint("https://127.0.0.1:2379").is_err());
        assert!(loopback_endpoint("http://etcd.internal:2379").is_err());
    }

    #[test]
    fn the_report_has_the_promised_fields_and_goals() {
        let mut r = Report {
            edges: 10,
            edges_registered: 10,
            ..Report::default()
        };
        let a = CounterSnapshot::default();
        let mut b = a;
        b.writes[Kind::Probes as usize] = 10;
        b.writes[Kind::Forced as usize] = 100;
        r.record_writes(&a, &b, 10.0, 10);
        r.route_update_ms.p99 = Some(1_500.0);
        r.finish(Duration::from_secs(1));
        // Forced writes are the measurement's, not the steady state's.
        assert!((r.writes_per_s_per_edge - 0.1).abs() < 1e-9);
        assert!(r.goals["writes_per_s_per_edge"].met);
        assert!(r.goals["route_update_ms"].met);
        // Lost leases: edges re-registering, not a steady state.
        r.leases_lost = 1;
        r.finish(Duration::from_secs(1));
        assert!(!r.goals["writes_per_s_per_edge"].met);
        let json = serde_json::to_value(&r).unwrap();
        for field in [
            "writes_per_s_per_edge",
            "region_recompute_ms",
            "route_update_ms",
            "edges",
            "duration_s",
            "broke",
            "keepalives_per_s",
            "etcd",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert!(json["region_recompute_ms"].get("p50").is_some());
        assert!(json["region_recompute_ms"].get("max").is_some());
        assert!(json["route_update_ms"].get("p99").is_some());
    }
}
