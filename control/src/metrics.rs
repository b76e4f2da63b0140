//! The process-wide Prometheus recorder. One per process: the lab runs edges
//! and controllers in one process, and they all render through this handle
//! (edges' series carry an `edge` label, the controller's a `region` and,
//! where two controllers of a region could share a process, a `controller`).
//! Each binary's crate describes its own metrics on top
//! (`edge_node::metrics::prometheus`, `region_controller::metrics::prometheus`).
//!
//! Naming follows Prometheus' conventions: `rtn_` prefix, base units in the
//! name (`_seconds`, `_bytes`, `_ratio`), `_total` on counters, and labels
//! with bounded values only (edge and peer ids, regions, controller names,
//! reasons); never user, session or channel ids. Every metric is listed in
//! `docs/observability.md`.
//!
//! **Series that end.** Series carrying a [`REMOVABLE_LABEL`] (`peer`: one
//! per other edge) are kept apart from the exporter's registry so that they
//! can be removed when that edge leaves for good ([`forget`]): the mesh
//! churns (edges are replaced, not repaired), and a process that kept every
//! departed peer's series would grow its exposition without bound.
//! `metrics-exporter-prometheus` offers no way to remove a series; its
//! `PrometheusBuilder::idle_timeout` drops series not updated for a while,
//! but it drops them from its registry while code still holds their handles
//! (this code registers handles once and keeps them, off the hot path), and
//! from then on those handles update storage nothing renders
//! (metrics-rs/metrics#314): a gauge that is set rarely (the leader flag,
//! store health) or a counter of rare events would vanish for good. So the
//! process's recorder ([`Recorder`]) routes `peer` series to a small
//! registry of its own, which removes a forgotten series once no handle to
//! it is held any more, and renders them after the exporter's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};
use metrics_exporter_prometheus::formatting::{
    sanitize_label_key, sanitize_label_value, write_help_line, write_type_line,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

/// Buckets for link round-trip times: loopback to the far side of the
/// planet through a congested path (1 ms .. 1 s; ITU-T G.114 puts
/// unacceptable one-way delay at 400 ms).
pub const WAN_RTT_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.010, 0.020, 0.050, 0.100, 0.150, 0.200, 0.300, 0.500, 1.0,
];
/// Buckets for route computations: sub-millisecond for a small region up to
/// the design's 1 s budget for 1,000 edges and beyond.
pub const COMPUTE_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Buckets for the controller's watch lag (a record's write to its arrival
/// in the controller's view): milliseconds normally, seconds in trouble.
pub const WATCH_LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Histograms whose buckets differ from the exporter's default (summaries
/// otherwise), for every process kind: the recorder is installed once,
/// by whichever starts first.
const HISTOGRAMS: &[(&str, &[f64])] = &[
    ("rtn_edge_link_rtt_seconds", WAN_RTT_BUCKETS),
    ("rtn_controller_compute_seconds", COMPUTE_BUCKETS),
    ("rtn_controller_watch_lag_seconds", WATCH_LAG_BUCKETS),
];

/// The label that makes a series removable ([`forget`]).
pub const REMOVABLE_LABEL: &str = "peer";

/// Buckets of a removable histogram without its own in [`HISTOGRAMS`]
/// (Prometheus' client libraries' defaults).
const DEFAULT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Renders everything the process records: the exporter's series, then the
/// removable ones.
#[derive(Clone)]
pub struct Handle {
    prom: PrometheusHandle,
    removable: Arc<Removable>,
}

impl Handle {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = self.prom.render();
        self.removable.render_into(&mut out);
        out
    }
}

/// The process's recorder, installed on first use. Another recorder may
/// already be installed (an embedding app): then this handle renders
/// nothing.
pub fn prometheus() -> Handle {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in HISTOGRAMS {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                    .expect("bucket lists are not empty");
            }
            let prom = builder.build_recorder();
            let handle = Handle {
                prom: prom.handle(),
                removable: Arc::default(),
            };
            let _ = metrics::set_global_recorder(Recorder {
                prom,
                removable: handle.removable.clone(),
            });
            handle
        })
        .clone()
}

/// Prometheus' standard process metrics under a role's prefix:
/// `<prefix>process_cpu_seconds_total`, `_resident_memory_bytes`,
/// `_open_fds`, `_max_fds`, `_start_time_seconds`, `_threads`, ... (the
/// `metrics-process` crate, read from /proc on Linux). Prefixed by the role
/// (`rtn_edge_`, `rtn_controller_`) like every other metric: names all start
/// with `rtn_`, and the lab's one process holds edges and controllers, so a
/// bare `process_` would not say whose. Read when scraped ([`Self::render`]),
/// the only time they are worth reading.
pub struct ProcessMetrics(metrics_process::Collector);

impl ProcessMetrics {
    /// The collector, its metrics described.
    pub fn new(prefix: &'static str) -> Self {
        let collector = metrics_process::Collector::new(prefix);
        collector.describe();
        ProcessMetrics(collector)
    }

    /// The process's exposition, these metrics read now.
    pub fn render(&self, handle: &Handle) -> String {
        self.0.collect();
        handle.render()
    }
}

/// Remove every removable series whose labels include all of `labels`
/// (e.g. `[("edge", "3"), ("peer", "17")]`: what edge 3 recorded about edge
/// 17), at once or, for a series whose handle some code still holds (a relay
/// link closing), as soon as it is dropped. Registering such a series again
/// before then keeps it (the peer is back).
pub fn forget(labels: &[(&str, &str)]) {
    prometheus().removable.forget(labels);
}

/// Every metric described in this process so far (by the edge's and the
/// controller's `describe` lists), with its kind: what a dashboard or an
/// alert rule may query (edge-node/tests/alert_rules.rs).
pub fn described() -> BTreeMap<String, MetricKind> {
    prometheus()
        .removable
        .descriptions
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(name, (kind, _))| (name.clone(), *kind))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// The process-wide recorder: the exporter's, except for series with a
/// [`REMOVABLE_LABEL`].
struct Recorder {
    prom: PrometheusRecorder,
    removable: Arc<Removable>,
}

fn is_removable(key: &Key) -> bool {
    key.labels().any(|l| l.key() == REMOVABLE_LABEL)
}

impl metrics::Recorder for Recorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.removable
            .describe(key.as_str(), MetricKind::Counter, &description);
        self.prom.describe_counter(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.removable
            .describe(key.as_str(), MetricKind::Gauge, &description);
        self.prom.describe_gauge(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.removable
            .describe(key.as_str(), MetricKind::Histogram, &description);
        self.prom.describe_histogram(key, unit, description);
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if is_removable(key) {
            self.removable.counter(key)
        } else {
            self.prom.register_counter(key, metadata)
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if is_removable(key) {
            self.removable.gauge(key)
        } else {
            self.prom.register_gauge(key, metadata)
        }
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if is_removable(key) {
            self.removable.histogram(key)
        } else {
            self.prom.register_histogram(key, metadata)
        }
    }
}

/// The removable series, their descriptions (every metric's, in fact:
/// [`described`]), and the series forgotten but still held.
#[derive(Default)]
struct Removable {
    descriptions: RwLock<HashMap<String, (MetricKind, String)>>,
    series: Mutex<Series>,
}

#[derive(Default)]
struct Series {
    counters: HashMap<Key, Arc<AtomicU64>>,
    gauges: HashMap<Key, Arc<AtomicU64>>,
    histograms: HashMap<Key, Arc<Buckets>>,
    /// Forgotten, to be removed once nothing but this registry holds them.
    forgotten: HashSet<Key>,
}

impl Series {
    /// Remove the forgotten series nobody holds a handle to any more. The
    /// registry's lock is held: no new handle can be handed out meanwhile.
    fn sweep(&mut self) {
        let Series {
            counters,
            gauges,
            histograms,
            forgotten,
        } = self;
        forgotten.retain(|key| {
            let held = |n: Option<usize>| n.is_some_and(|n| n > 1);
            let counter = counters.get(key).map(Arc::strong_count);
            let gauge = gauges.get(key).map(Arc::strong_count);
            let histogram = histograms.get(key).map(Arc::strong_count);
            if held(counter) || held(gauge) || held(histogram) {
                return true;
            }
            counters.remove(key);
            gauges.remove(key);
            histograms.remove(key);
            false
        });
    }
}

impl Removable {
    fn describe(&self, name: &str, kind: MetricKind, help: &str) {
        self.descriptions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), (kind, help.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.series.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn counter(&self, key: &Key) -> Counter {
        let mut s = self.lock();
        s.forgotten.remove(key);
        Counter::from_arc(s.counters.entry(key.clone()).or_default().clone())
    }

    fn gauge(&self, key: &Key) -> Gauge {
        let mut s = self.lock();
        s.forgotten.remove(key);
        Gauge::from_arc(s.gauges.entry(key.clone()).or_default().clone())
    }

    fn histogram(&self, key: &Key) -> Histogram {
        let mut s = self.lock();
        s.forgotten.remove(key);
        let h = s.histograms.entry(key.clone()).or_insert_with(|| {
            let bounds = HISTOGRAMS
                .iter()
                .find(|(name, _)| *name == key.name())
                .map_or(DEFAULT_BUCKETS, |(_, b)| *b);
            Arc::new(Buckets::new(bounds))
        });
        Histogram::from_arc(h.clone())
    }

    fn forget(&self, labels: &[(&str, &str)]) {
        let matches = |key: &Key| {
            labels
                .iter()
                .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        };
        let mut s = self.lock();
        let keys: Vec<Key> = (s.counters.keys())
            .chain(s.gauges.keys())
            .chain(s.histograms.keys())
            .filter(|k| matches(k))
            .cloned()
            .collect();
        s.forgotten.extend(keys);
        s.sweep();
    }

    /// Append the series in the exporter's format: per metric a HELP and a
    /// TYPE line, its series sorted by labels, a blank line.
    fn render_into(&self, out: &mut String) {
        let mut s = self.lock();
        s.sweep();
        let descriptions = self.descriptions.read().unwrap_or_else(|e| e.into_inner());
        let mut families: Families<'_> = BTreeMap::new();
        for (key, v) in &s.counters {
            let sample = Sample::Counter(v.load(Ordering::Relaxed));
            add(&mut families, key, "counter", sample);
        }
        for (key, v) in &s.gauges {
            let sample = Sample::Gauge(f64::from_bits(v.load(Ordering::Relaxed)));
            add(&mut families, key, "gauge", sample);
        }
        for (key, h) in &s.histograms {
            add(&mut families, key, "histogram", Sample::Histogram(h));
        }
        for (name, (ty, mut series)) in families {
            if let Some((_, help)) = descriptions.get(name) {
                write_help_line(out, name, None, None, help);
            }
            write_type_line(out, name, None, None, ty);
            series.sort_by(|a, b| a.0.cmp(&b.0));
            for (labels, sample) in series {
                sample.write(out, name, &labels);
            }
            out.push('\n');
        }
    }
}

/// Series by metric name: the metric's type, and each series' labels
/// (rendered) and sample.
type Families<'a> = BTreeMap<&'a str, (&'static str, Vec<(String, Sample<'a>)>)>;

fn add<'a>(families: &mut Families<'a>, key: &'a Key, ty: &'static str, sample: Sample<'a>) {
    let labels = key
        .labels()
        .map(|l| {
            format!(
                "{}=\"{}\"",
                sanitize_label_key(l.key()),
                sanitize_label_value(l.value())
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    families
        .entry(key.name())
        .or_insert((ty, vec![]))
        .1
        .push((labels, sample));
}

enum Sample<'a> {
    Counter(u64),
    Gauge(f64),
    Histogram(&'a Buckets),
}

impl Sample<'_> {
    fn write(&self, out: &mut String, name: &str, labels: &str) {
        use std::fmt::Write;
        let braced = |extra: &str| {
            let all = [labels, extra]
                .into_iter()
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(",");
            if all.is_empty() {
                all
            } else {
                format!("{{{all}}}")
            }
        };
        match self {
            Sample::Counter(v) => {
                let _ = writeln!(out, "{name}{} {v}", braced(""));
            }
            Sample::Gauge(v) => {
                let _ = writeln!(out, "{name}{} {v}", braced(""));
            }
            Sample::Histogram(h) => {
                // One read of the counts: +Inf and _count agree with the
                // buckets even while probes are being recorded.
                let counts: Vec<u64> = h.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                let mut cumulative = 0;
                for (bound, n) in h.bounds.iter().zip(&counts) {
                    cumulative += n;
                    let le = braced(&format!("le=\"{bound}\""));
                    let _ = writeln!(out, "{name}_bucket{le} {cumulative}");
                }
                let total: u64 = counts.iter().sum();
                let _ = writeln!(out, "{name}_bucket{} {total}", braced("le=\"+Inf\""));
                let sum = f64::from_bits(h.sum.load(Ordering::Relaxed));
                let _ = writeln!(out, "{name}_sum{} {sum}", braced(""));
                let _ = writeln!(out, "{name}_count{} {total}", braced(""));
            }
        }
    }
}

/// A histogram with fixed buckets: a count per bucket (the last one past
/// every bound) and the sum, all atomics.
struct Buckets {
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Buckets {
    fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((f64::from_bits(s) + value).to_bits())
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(k, v)| metrics::Label::new(*k, *v))
            .collect();
        Key::from_parts(name, labels)
    }

    fn rendered(r: &Removable) -> String {
        let mut out = String::new();
        r.render_into(&mut out);
        out
    }

    #[test]
    fn removable_series_render_like_the_exporter_and_go_when_forgotten() {
        let r = Removable::default();
        r.describe("rtn_edge_link_up", MetricKind::Gauge, "1 while up.");
        r.describe("rtn_edge_link_rtt_seconds", MetricKind::Histogram, "RTT.");
        let up = r.gauge(&key("rtn_edge_link_up", &[("edge", "1"), ("peer", "2")]));
        up.set(1.0);
        let other = r.gauge(&key("rtn_edge_link_up", &[("edge", "1"), ("peer", "3")]));
        other.set(0.0);
        let rtt = r.histogram(&key(
            "rtn_edge_link_rtt_seconds",
            &[("edge", "1"), ("peer", "2")],
        ));
        rtt.record(0.004);
        rtt.record(0.03);
        rtt.record(7.0);
        let sent = r.counter(&key(
            "rtn_edge_probes_sent_total",
            &[("edge", "1"), ("peer", "2")],
        ));
        sent.increment(3);
        let text = rendered(&r);
        assert!(text.contains("# HELP rtn_edge_link_up 1 while up.\n# TYPE rtn_edge_link_up gauge\nrtn_edge_link_up{edge=\"1\",peer=\"2\"} 1\nrtn_edge_link_up{edge=\"1\",peer=\"3\"} 0\n\n"), "{text}");
        assert!(text.contains("# TYPE rtn_edge_probes_sent_total counter\nrtn_edge_probes_sent_total{edge=\"1\",peer=\"2\"} 3\n"), "{text}");
        // WAN buckets, cumulative, then +Inf, sum and count.
        for line in [
            "rtn_edge_link_rtt_seconds_bucket{edge=\"1\",peer=\"2\",le=\"0.002\"} 0",
            "rtn_edge_link_rtt_seconds_bucket{edge=\"1\",peer=\"2\",le=\"0.005\"} 1",
            "rtn_edge_link_rtt_seconds_bucket{edge=\"1\",peer=\"2\",le=\"0.05\"} 2",
            "rtn_edge_link_rtt_seconds_bucket{edge=\"1\",peer=\"2\",le=\"1\"} 2",
            "rtn_edge_link_rtt_seconds_bucket{edge=\"1\",peer=\"2\",le=\"+Inf\"} 3",
            "rtn_edge_link_rtt_seconds_sum{edge=\"1\",peer=\"2\"} 7.034",
            "rtn_edge_link_rtt_seconds_count{edge=\"1\",peer=\"2\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }

        // Forgetting peer 2 of edge 1: its series stay while their handles
        // are held, then go; peer 3's stay.
        r.forget(&[("edge", "1"), ("peer", "2")]);
        assert!(rendered(&r).contains("peer=\"2\""), "handles still held");
        drop((up, rtt, sent));
        let text = rendered(&r);
        assert!(!text.contains("peer=\"2\""), "{text}");
        assert!(
            text.contains("rtn_edge_link_up{edge=\"1\",peer=\"3\"} 0"),
            "{text}"
        );
        assert!(
            !text.contains("rtn_edge_probes_sent_total"),
            "an empty family goes whole: {text}"
        );

        // Registered again before its handle was dropped: the peer is back,
        // its series stays.
        r.forget(&[("peer", "3")]);
        let again = r.gauge(&key("rtn_edge_link_up", &[("edge", "1"), ("peer", "3")]));
        drop(other);
        assert!(rendered(&r).contains("peer=\"3\""));
        drop(again);
        assert!(
            rendered(&r).contains("peer=\"3\""),
            "not forgotten any more"
        );
    }

    #[test]
    fn the_process_recorder_routes_peer_series_to_the_removable_registry() {
        let handle = prometheus();
        metrics::describe_gauge!("rtn_test_removable_gauge", "A test gauge.");
        let g = metrics::gauge!("rtn_test_removable_gauge", "edge" => "77", "peer" => "78");
        g.set(2.5);
        metrics::counter!("rtn_test_kept_total", "edge" => "77").increment(1);
        let text = handle.render();
        assert!(
            text.contains("rtn_test_removable_gauge{edge=\"77\",peer=\"78\"} 2.5"),
            "{text}"
        );
        assert!(
            text.contains("rtn_test_kept_total{edge=\"77\"} 1"),
            "{text}"
        );
        assert_eq!(
            described().get("rtn_test_removable_gauge"),
            Some(&MetricKind::Gauge)
        );
        drop(g);
        forget(&[("edge", "77")]);
        let text = handle.render();
        assert!(!text.contains("rtn_test_removable_gauge{"), "{text}");
        assert!(
            text.contains("rtn_test_kept_total{edge=\"77\"} 1"),
            "{text}"
        );
    }
}
