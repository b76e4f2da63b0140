//! The lab's region controllers run on a runtime of their own, whose
//! threads yield the CPU to the edges and clients.
//!
//! In production each controller has a machine to itself; in the lab the
//! 22 of a world share two cores with the edges and clients. Each of them
//! mirrors every probe summary (JSON, one per edge every few seconds) and
//! computes routes over the whole mesh, and the edges publish their
//! summaries at about the same moment. On the lab's runtime those bursts
//! held up media at every hop at once: measured on the 60-edge world with
//! one client per city, 84% of the audio stalls fell within 300 ms of a
//! runtime stall of 25 ms or more, stalls hit 20-60 tracks together every
//! few seconds, and the CPU in those moments was the controllers' watch
//! mirrors and route passes.
//!
//! A separate runtime alone would still compete with the edges' workers
//! for the cores, so its threads (workers and blocking pool) run at a
//! lower priority ([`NICENESS`]): they get what the edges leave, and
//! preempt no edge in the middle of forwarding. Same world: the lab
//! runtime's lag p99 14 ms (a 90 s run) became 3 ms and its audio stalls
//! 2.0% became 0.11-0.25% (two 60 s runs).

use std::future::Future;

use anyhow::Context;

/// The controllers' threads' nice value. 5, not 19: a loaded lab (two cores
/// busy with edges) still leaves a nice-5 thread about a fifth of a core
/// (weight 335 against three busy threads of 1024), enough for the
/// controllers' election keepalives and passes; at 19 (weight 15) it would
/// be a hundredth, and leases could lapse.
pub const NICENESS: i32 = 5;
/// Worker threads. Two, though the controllers mostly wait: with one, a
/// burst of mirrored summaries held up the APIs' nearest-edge answers
/// (p95 20 ms against 1.3 ms with two, on the 60-edge world).
const WORKERS: usize = 2;

/// The runtime the lab's controllers (and their APIs) run on.
pub struct ControlRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl ControlRuntime {
    pub fn new() -> anyhow::Result<ControlRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .thread_name("rtn-lab-control")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
            .context("starting the controllers' runtime")?;
        Ok(ControlRuntime { rt: Some(rt) })
    }

    /// Run `fut` on this runtime (so that what it spawns, binds and sleeps
    /// on belongs here) and wait for it.
    pub async fn run<F>(&self, fut: F) -> anyhow::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.rt.as_ref().expect("runtime lives until dropped");
        rt.spawn(fut)
            .await
            .context("a task on the controllers' runtime failed")
    }
}

impl Drop for ControlRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which is not allowed inside the lab's
        // own runtime; the controllers were shut down before.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Lower the calling thread's priority to [`NICENESS`]. On Linux the nice
/// value is per thread (setpriority on a thread id); elsewhere the lab's
/// controllers run at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICENESS);
    }
}
