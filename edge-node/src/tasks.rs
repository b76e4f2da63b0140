//! The edge's per-connection tasks, owned by the edge.
//!
//! Client sessions, relay links, their media writers and datagram readers,
//! handshakes and admin HTTP connections come and go with connections, by
//! the thousand: they are tracked (a [`TaskTracker`]) rather than joined,
//! and every one ends when its work is done, when its connection closes,
//! or when the edge stops (a [`CancellationToken`]). Stopping the edge
//! cancels them and waits for them, so none outlives it (nor keeps its
//! `EdgeCore`, and with it its UDP port, alive). The edge's few long-lived
//! loops are joined by the edge itself (`edge.rs`).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The per-connection tasks of one edge. Clones share them.
#[derive(Clone, Default)]
pub struct ConnectionTasks {
    /// Cancelled when the edge stops.
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl ConnectionTasks {
    /// Run `task` until it ends or the edge stops.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.spawn_until(self.stop.clone(), task);
    }

    /// Run `task` until it ends or `stop` is cancelled; `stop` is one of
    /// [`Self::child_token`]'s, so the edge stopping cancels it too.
    pub fn spawn_until(
        &self,
        stop: CancellationToken,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        // Boxed: every wrapper around a future keeps its own copy of it
        // (the captured value beside the awaited one), so a 7 KiB session
        // future spawned unboxed through these layers took 28 KiB per task,
        // several tasks per session (idle sessions went from 40 to 118 KiB,
        // `bench memory`). A box makes each layer hold a pointer.
        let task = Box::pin(task);
        self.tracker.spawn(async move {
            stop.run_until_cancelled_owned(task).await;
        });
    }

    /// Run `task`, which serves `conn`, until it ends, `conn` closes, or
    /// the edge stops. A task that ends by itself when its connection
    /// closes (reading what was still buffered first) keeps doing so.
    pub fn spawn_for(
        &self,
        conn: &quinn::Connection,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let conn = conn.clone();
        let task = Box::pin(task);
        self.spawn(async move {
            tokio::select! {
                biased;
                _ = task => {}
                _ = conn.closed() => {}
            }
        });
    }

    /// A token cancelled when the edge stops, or before by its holder (to
    /// end one relay link's task).
    pub fn child_token(&self) -> CancellationToken {
        self.stop.child_token()
    }

    /// Cancel every task, without waiting for them.
    pub fn cancel(&self) {
        self.stop.cancel();
        self.tracker.close();
    }

    /// Cancel every task and wait for them, at most `bound`: false if some
    /// were still running then (a task that blocks its thread).
    pub async fn stop(&self, bound: Duration) -> bool {
        self.cancel();
        tokio::time::timeout(bound, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Whether the edge stopped them.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Tasks still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// A task that runs until cancelled and says so when it is dropped.
    fn pending_task() -> (impl Future<Output = ()>, oneshot::Receiver<()>) {
        struct Dropped(Option<oneshot::Sender<()>>);
        impl Drop for Dropped {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        let guard = Dropped(Some(tx));
        let task = async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        };
        (task, rx)
    }

    #[tokio::test]
    async fn a_link_token_ends_its_task_and_stopping_ends_all() {
        let tasks = ConnectionTasks::default();
        let link = tasks.child_token();
        let (edge_task, mut edge_task_dropped) = pending_task();
        let (link_task, link_task_dropped) = pending_task();
        tasks.spawn(edge_task);
        tasks.spawn_until(link.clone(), link_task);
        link.cancel();
        link_task_dropped.await.unwrap();
        assert!(
            edge_task_dropped.try_recv().is_err(),
            "the link's token ended the edge's other task"
        );
        assert!(tasks.stop(Duration::from_secs(1)).await);
        assert!(tasks.is_empty() && tasks.is_stopped());
        edge_task_dropped.await.unwrap();
        // Spawned after the stop: cancelled at once.
        let (late, late_dropped) = pending_task();
        tasks.spawn(late);
        assert!(tasks.stop(Duration::from_secs(1)).await);
        late_dropped.await.unwrap();
    }
}
