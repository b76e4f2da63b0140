//! The real region-controller processes, and what their logs and /proc
//! say about them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use control::keys::KeyLayout;
use control::store::ControlStore;
use testkit::scrape::metric_sum;
use tracing::warn;

use crate::bench_util::proc_status_bytes;

pub(super) struct ControllerProc {
    pub(super) region: String,
    pub(super) name: String,
    pub(super) pid: u32,
    admin: SocketAddr,
    pub(super) log: PathBuf,
    child: Mutex<tokio::process::Child>,
}

impl ControllerProc {
    /// Not exited yet (reaps it when it has).
    pub(super) fn running(&self) -> bool {
        matches!(self.child.lock().expect("child lock").try_wait(), Ok(None))
    }
}

pub(super) struct Controllers {
    pub(super) procs: Vec<ControllerProc>,
    pub(super) regions: Vec<String>,
}

/// A controller's figures at one moment.
#[derive(Clone, Debug, Default)]
pub(super) struct ControllerSample {
    pub(super) cpu_s: Option<f64>,
    pub(super) rss_mib: Option<f64>,
    pub(super) peak_rss_mib: Option<f64>,
    /// `rtn_controller_compute_seconds` count and sum.
    pub(super) computes: Option<(f64, f64)>,
    pub(super) leader: bool,
    /// Bytes of its log read so far (recompute times are read from there).
    pub(super) log_len: u64,
}

pub(super) fn controller_bin(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        anyhow::ensure!(p.is_file(), "--controller-bin {} not found", p.display());
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe().context("finding this executable")?;
    if let Some(sibling) = exe.parent().map(|d| d.join("region-controller")) {
        if sibling.is_file() {
            return Ok(sibling);
        }
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace directory")?;
    println!("building region-controller (release)...");
    let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
        .args(["build", "--release", "-p", "region-controller"])
        .current_dir(workspace)
        .status()
        .context("running cargo build")?;
    anyhow::ensure!(status.success(), "cargo build -p region-controller failed");
    let bin = workspace.join("target/release/region-controller");
    anyhow::ensure!(bin.is_file(), "{} not found after building", bin.display());
    Ok(bin)
}

impl Controllers {
    pub(super) async fn spawn(
        bin: &Path,
        regions: &[String],
        standby: bool,
        etcd: &str,
        keys: &KeyLayout,
        dir: &Path,
        hierarchical_from_edges: usize,
    ) -> anyhow::Result<Controllers> {
        let mut procs = Vec::new();
        let copies = if standby { 2 } else { 1 };
        for region in regions {
            for copy in 0..copies {
                let name = format!("cs-{region}-{copy}");
                let admin = testkit::ports::tcp_local();
                let config = format!(
                    "[controller]\nregion = {region:?}\nname = {name:?}\n\
                     hierarchical_from_edges = {hierarchical_from_edges}\n\n\
                     [store]\netcd_endpoints = [{etcd:?}]\nprefix = {prefix:?}\n\n\
                     [api]\nlisten = \"127.0.0.1:{api}\"\n\n[admin]\nlisten = \"{admin}\"\n",
                    prefix = keys.prefix(),
                    api = testkit::ports::tcp_local().port(),
                );
                let cfg_path = dir.join(format!("{name}.toml"));
                std::fs::write(&cfg_path, config)
                    .with_context(|| format!("writing {}", cfg_path.display()))?;
                let log = dir.join(format!("{name}.log"));
                let out = std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?;
                let mut cmd = tokio::process::Command::new(bin);
                cmd.args(["--log-format", "json", "run", "--config"])
                    .arg(&cfg_path)
                    .env("RUST_LOG", "info")
                    .stdin(std::process::Stdio::null())
                    .stdout(out.try_clone()?)
                    .stderr(out)
                    // Backstop for early returns and panics: never leave a
                    // controller behind.
                    .kill_on_drop(true);
                // SAFETY: prctl is async-signal-safe; this only asks the
                // kernel to SIGTERM the child if this process dies first
                // (killed with SIGKILL, where nothing else can clean up).
                unsafe {
                    cmd.pre_exec(|| {
                        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                        Ok(())
                    });
                }
                let child = cmd
                    .spawn()
                    .with_context(|| format!("starting {}", bin.display()))?;
                procs.push(ControllerProc {
                    region: region.clone(),
                    name,
                    pid: child.id().context("controller pid")?,
                    admin,
                    log,
                    child: Mutex::new(child),
                });
            }
        }
        Ok(Controllers {
            procs,
            regions: regions.to_vec(),
        })
    }

    /// Wait (bounded) until every region has a leader.
    pub(super) async fn await_leaders(
        &self,
        store: &Arc<dyn ControlStore>,
        keys: &KeyLayout,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        for region in &self.regions {
            loop {
                if matches!(store.get(&keys.leader(region)).await, Ok(Some(_))) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("region {region} had no leader after 30 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    /// A controller that exited, described with the end of its log.
    pub(super) fn exited(&self) -> Option<String> {
        for p in &self.procs {
            let status = p.child.lock().expect("child lock").try_wait();
            if let Ok(Some(status)) = status {
                return Some(format!(
                    "controller {} exited ({status}); log ends: {}",
                    p.name,
                    log_tail(&p.log)
                ));
            }
        }
        None
    }

    pub(super) async fn sample(&self) -> Vec<ControllerSample> {
        let mut out = Vec::with_capacity(self.procs.len());
        for p in &self.procs {
            let metrics = testkit::scrape::http(p.admin, "GET", "/metrics", &[], "")
                .await
                .ok()
                .filter(|(code, _)| *code == 200)
                .map(|(_, body)| body);
            let rss = proc_rss_mib(p.pid);
            out.push(ControllerSample {
                cpu_s: proc_cpu_s(p.pid),
                rss_mib: rss.map(|r| r.0),
                peak_rss_mib: rss.map(|r| r.1),
                computes: metrics.as_deref().and_then(|m| {
                    Some((
                        metric_sum(m, "rtn_controller_compute_seconds_count", &[])?,
                        metric_sum(m, "rtn_controller_compute_seconds_sum", &[])?,
                    ))
                }),
                leader: metrics
                    .as_deref()
                    .and_then(|m| metric_sum(m, "rtn_controller_leader", &[]))
                    .is_some_and(|v| v > 0.0),
                log_len: std::fs::metadata(&p.log).map(|m| m.len()).unwrap_or(0),
            });
        }
        out
    }

    /// SIGTERM (a leader resigns), then SIGKILL after 5 s. Returns what the
    /// logs say went wrong: failed route publications, failed campaigns.
    pub(super) async fn stop(&self) -> Vec<String> {
        for p in &self.procs {
            // SAFETY: kill(2) on our own child's pid, not yet reaped (the
            // Child is still held), so the pid cannot have been reused.
            unsafe {
                libc::kill(p.pid as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for p in &self.procs {
            while p.running() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            if p.running() {
                warn!(controller = %p.name, "still running 5 s after SIGTERM; killing");
                let _ = p.child.lock().expect("child lock").start_kill();
            }
        }
        for p in &self.procs {
            // Reap the killed ones (bounded: SIGKILL is not refused).
            for _ in 0..100 {
                if !p.running() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        // One line per kind of trouble, over all controllers.
        let mut notes = Vec::new();
        for (message, what) in [
            ("publishing routes failed", "route publications failed"),
            ("campaign failed", "campaigns failed"),
            ("leadership lost", "leaderships lost"),
        ] {
            let mut total = 0;
            let mut hit = 0;
            let mut first = String::new();
            for p in &self.procs {
                let (n, f) = log_warnings(&p.log, message);
                if n > 0 {
                    total += n;
                    hit += 1;
                    if first.is_empty() {
                        first = format!("{}: {f}", p.name);
                    }
                }
            }
            if total > 0 {
                notes.push(format!(
                    "controllers: {total} {what} (in {hit} of {} controllers), first: {first}",
                    self.procs.len()
                ));
            }
        }
        notes
    }
}

/// JSON log lines of a controller in the byte range `within`.
fn log_lines(path: &Path, within: std::ops::Range<u64>) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    let to = (within.end as usize).min(text.len());
    let from = (within.start as usize).min(to);
    String::from_utf8_lossy(&text[from..to])
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// How many log lines carry `message`, and the first one's error field.
fn log_warnings(path: &Path, message: &str) -> (usize, String) {
    let hits: Vec<_> = log_lines(path, 0..u64::MAX)
        .into_iter()
        .filter(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .collect();
    let first = hits
        .first()
        .map(|l| l["fields"]["error"].as_str().unwrap_or("-").to_string())
        .unwrap_or_default();
    (hits.len(), first)
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// Recompute times (ms) logged in the byte range `within`: the controller
/// logs each computation that changed routes ("routes published",
/// compute_ms).
pub(super) fn logged_compute_ms(path: &Path, within: std::ops::Range<u64>) -> Vec<f64> {
    log_lines(path, within)
        .iter()
        .filter(|l| l["fields"]["message"] == "routes published")
        .filter_map(|l| l["fields"]["compute_ms"].as_f64())
        .collect()
}

// ---------------------------------------------------------------------------
// /proc.

/// utime + stime of a process, seconds.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which may contain spaces: state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Some(ticks / hz)
}

/// (RSS, peak RSS) of a process, MiB.
pub(super) fn proc_rss_mib(pid: u32) -> Option<(f64, f64)> {
    let mib = |field| Some(proc_status_bytes(Some(pid), field)? as f64 / (1024.0 * 1024.0));
    Some((mib("VmRSS")?, mib("VmHWM")?))
}

pub(super) fn mem_available_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? / 1024)
}
