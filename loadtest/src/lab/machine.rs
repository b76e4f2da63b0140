//! Whether the machine kept up. The lab runs every edge, controller, client
//! and the WAN emulation in one process: on a machine short of CPU, emulated
//! delays grow, probes read run-queue waits as RTT and jitter, and routes and
//! latencies measure the CPU, not the network. Three witnesses, over the
//! traffic window:
//!
//! - how late the WAN emulation sent delayed datagrams (`Wan::lateness`);
//! - how late the tokio runtime woke a task sleeping [`LAG_PROBE_EVERY`];
//! - the CPU time the process used, in cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_node::probe::{DEAD_AFTER_INTERVALS, PROBE_INTERVAL};
use serde::Serialize;
use testkit::netem::{LateHistogram, Lateness, Wan};

/// The WAN emulation's datagrams may leave this late at p99. Each is that
/// much later than the world says, and a probe's RTT crosses twice: 2 ms
/// late per crossing is 4 ms of RTT, the whole 5% stretch budget of an
/// 80 ms path, and jitter of the size of the lab's default links' (0.3 ms)
/// is lost under it.
pub const NETEM_LATE_P99_LIMIT: Duration = Duration::from_millis(2);
/// Tasks may wake this late at p99. Edges time probes and relay media,
/// clients timestamp media, from tasks: 20 ms is half an audio packet
/// interval and more than the RTT of the shortest links, so latencies and
/// probe RTTs would measure the run queue.
pub const RUNTIME_LAG_P99_LIMIT: Duration = Duration::from_millis(20);
/// Any single stall (of the emulation or the runtime) may last this long at
/// most: half the silence after which an edge declares a live peer dead
/// (three probe intervals), so a longer stall can break links that are up
/// and change routes without any change in the network.
pub const STALL_LIMIT: Duration =
    Duration::from_millis(PROBE_INTERVAL.as_millis() as u64 * DEAD_AFTER_INTERVALS as u64 / 2);
/// The process may use this share of the cores available to it: past it
/// there is no headroom for bursts (a failover, a route recomputation) and
/// every timer waits in the run queue.
pub const CPU_BUSY_LIMIT: f64 = 0.9;
/// The runtime lag probe's sleep: short enough to see a stall of a probe
/// interval many times over, cheap (100 wakeups a second). Tokio's timer
/// ticks in milliseconds, so up to 1 ms of lag is its granularity.
const LAG_PROBE_EVERY: Duration = Duration::from_millis(10);
/// Linux reports `/proc` CPU times in USER_HZ, 100 on every architecture the
/// lab runs on (x86-64, arm64); `sysconf(_SC_CLK_TCK)` would say the same,
/// but needs libc.
const USER_HZ: f64 = 100.0;

/// Percentiles of a lateness, ms.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Delays {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Delays {
    /// Percentiles are upper bounds, within 25% (see `Lateness::percentile`).
    fn of(l: &Lateness) -> Delays {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        Delays {
            p50: ms(l.percentile(50.0)),
            p99: ms(l.percentile(99.0)),
            max: ms(l.max()),
        }
    }
}

/// `machine` of the report.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Machine {
    /// How late delayed datagrams left the WAN emulation, past their time.
    pub netem_late_ms: Delays,
    /// How late a task sleeping 10 ms woke.
    pub runtime_lag_ms: Delays,
    /// CPU time of the lab process over wall time: cores kept busy.
    pub cpu_cores_busy: f64,
    /// Cores available to the process.
    pub cores: usize,
    /// The figures of this report measure the CPU, not the network.
    pub overloaded: bool,
    /// Why, limit by limit.
    pub why: Vec<String>,
}

/// Watches the machine from the start of the traffic to [`Watch::finish`].
pub struct Watch {
    started: Instant,
    cpu_started: Option<f64>,
    netem_started: Lateness,
    lag: Arc<LateHistogram>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    /// Call inside the lab's runtime.
    pub fn start(wan: &Wan) -> Watch {
        let lag = Arc::new(LateHistogram::default());
        let recorder = lag.clone();
        let task = tokio::spawn(async move {
            loop {
                let asleep = Instant::now();
                tokio::time::sleep(LAG_PROBE_EVERY).await;
                recorder.record(asleep.elapsed().saturating_sub(LAG_PROBE_EVERY));
            }
        });
        Watch {
            started: Instant::now(),
            cpu_started: process_cpu_seconds(),
            netem_started: wan.lateness(),
            lag,
            task,
        }
    }

    pub fn finish(self, wan: &Wan) -> Machine {
        self.task.abort();
        let wall = self.started.elapsed().as_secs_f64();
        let cpu = match (self.cpu_started, process_cpu_seconds()) {
            (Some(a), Some(b)) if wall > 0.0 => (b - a) / wall,
            _ => 0.0,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        judge(Machine {
            netem_late_ms: Delays::of(&wan.lateness().since(&self.netem_started)),
            runtime_lag_ms: Delays::of(&self.lag.snapshot()),
            cpu_cores_busy: cpu,
            cores,
            overloaded: false,
            why: Vec::new(),
        })
    }
}

/// Sets `overloaded` and `why` from the figures and the limits.
fn judge(mut m: Machine) -> Machine {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let mut why = Vec::new();
    if m.netem_late_ms.p99 > ms(NETEM_LATE_P99_LIMIT) {
        why.push(format!(
            "the WAN emulation sent datagrams late: p99 {:.1} ms past their time (limit {:.0} ms); every emulated delay grew by that much",
            m.netem_late_ms.p99,
            ms(NETEM_LATE_P99_LIMIT)
        ));
    }
    if m.runtime_lag_ms.p99 > ms(RUNTIME_LAG_P99_LIMIT) {
        why.push(format!(
            "tasks woke late: p99 {:.1} ms (limit {:.0} ms); probe RTTs and media latency include the run queue",
            m.runtime_lag_ms.p99,
            ms(RUNTIME_LAG_P99_LIMIT)
        ));
    }
    for (what, max) in [
        ("the WAN emulation", m.netem_late_ms.max),
        ("the runtime", m.runtime_lag_ms.max),
    ] {
        if max > ms(STALL_LIMIT) {
            why.push(format!(
                "{what} stalled for {max:.0} ms (limit {:.0} ms): long enough for probes to find a live link dead",
                ms(STALL_LIMIT)
            ));
        }
    }
    if m.cpu_cores_busy > CPU_BUSY_LIMIT * m.cores as f64 {
        why.push(format!(
            "the lab kept {:.2} of {} cores busy (limit {:.0}%): no headroom",
            m.cpu_cores_busy,
            m.cores,
            CPU_BUSY_LIMIT * 100.0
        ));
    }
    m.overloaded = !why.is_empty();
    m.why = why;
    m
}

/// User plus system CPU time of this process (all threads), in seconds:
/// fields 14 and 15 of `/proc/self/stat`, counted after the command name
/// (which may hold spaces and parentheses).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) is the 12th here.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_figures_past_their_limits_say_why() {
        let calm = judge(Machine {
            netem_late_ms: Delays {
                p50: 0.05,
                p99: 0.4,
                max: 3.0,
            },
            runtime_lag_ms: Delays {
                p50: 1.0,
                p99: 2.0,
                max: 40.0,
            },
            cpu_cores_busy: 1.2,
            cores: 2,
            ..Machine::default()
        });
        assert!(!calm.overloaded, "{:?}", calm.why);
        let busy = judge(Machine {
            netem_late_ms: Delays {
                p50: 1.0,
                p99: 6.0,
                max: 900.0,
            },
            cpu_cores_busy: 1.95,
            ..calm
        });
        assert!(busy.overloaded);
        assert_eq!(busy.why.len(), 3, "{:?}", busy.why);
        assert!(busy.why[0].contains("p99 6.0 ms"), "{:?}", busy.why);
        assert_eq!(STALL_LIMIT, Duration::from_millis(300));
    }

    #[test]
    fn cpu_time_is_read_and_grows() {
        let before = process_cpu_seconds().expect("/proc/self/stat");
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let after = process_cpu_seconds().unwrap();
        assert!(after >= before, "{before} -> {after}");
    }
}
