//! Counters of what the client did, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters (relaxed atomics). [`Stats::snapshot`] copies them.
#[derive(Debug, Default)]
pub struct Stats {
    /// New messages accepted from the app (replays not counted).
    pub messages_sent: AtomicU64,
    /// Own messages the edge acknowledged (each seq once).
    pub messages_acked: AtomicU64,
    /// Own messages the edge refused (e.g. no publish right).
    pub messages_refused: AtomicU64,
    /// Own messages resent from the replay window (reconnects, rejoiners).
    pub messages_replayed: AtomicU64,
    /// Messages from others handed to the app, in order.
    pub messages_delivered: AtomicU64,
    /// Messages from others dropped as already delivered or already held.
    pub messages_duplicate: AtomicU64,
    /// Messages from others given up on (gap not filled in time).
    pub messages_skipped: AtomicU64,
    pub media_sent: AtomicU64,
    pub media_received: AtomicU64,
    /// Media datagrams of a track key the client does not know.
    pub media_unknown_track: AtomicU64,
    /// Media datagrams that did not decode.
    pub media_malformed: AtomicU64,
    /// Media dropped because the app did not read events fast enough.
    pub media_dropped: AtomicU64,
    /// Media dropped for arriving more than `max_media_lateness` behind
    /// its track's fastest (queued on the way through an outage).
    pub media_late: AtomicU64,
    /// End-to-end encrypted channels: media datagrams that did not open
    /// (wrong or unknown key, tampered with, not sealed), dropped.
    pub media_undecryptable: AtomicU64,
    /// End-to-end encrypted channels: messages that did not open, dropped.
    pub messages_undecryptable: AtomicU64,
    /// Frames of a kind this SDK does not know (from a newer edge), ignored.
    pub frames_unknown: AtomicU64,
    /// Successful reconnections (after a loss or a goaway).
    pub reconnects: AtomicU64,
    /// Goaways received.
    pub goaways: AtomicU64,
    /// Moves to a clearly faster edge found by re-probing.
    pub edge_switches: AtomicU64,
    /// Received media packets asked again of the edge (NACKed), and how
    /// many gaps a retransmission (or a reordered packet) filled.
    pub media_nacked: AtomicU64,
    pub media_recovered: AtomicU64,
    /// Media received twice (a retransmission racing a late original),
    /// dropped.
    pub media_duplicate: AtomicU64,
    /// Sent media the edge asked for again, and the bytes resent.
    pub media_resent: AtomicU64,
    pub media_resent_bytes: AtomicU64,
    /// Bytes of media sent (first copies), for the repair overhead.
    pub media_sent_bytes: AtomicU64,
    /// Audio packets sent again with a later one while the link to the
    /// edge is lossy (`repair::red`), and their bytes.
    pub media_redundant: AtomicU64,
    pub media_redundant_bytes: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub messages_sent: u64,
    pub messages_acked: u64,
    pub messages_refused: u64,
    pub messages_replayed: u64,
    pub messages_delivered: u64,
    pub messages_duplicate: u64,
    pub messages_skipped: u64,
    pub media_sent: u64,
    pub media_received: u64,
    pub media_unknown_track: u64,
    pub media_malformed: u64,
    pub media_dropped: u64,
    pub media_late: u64,
    pub media_undecryptable: u64,
    pub messages_undecryptable: u64,
    pub frames_unknown: u64,
    pub reconnects: u64,
    pub goaways: u64,
    pub edge_switches: u64,
    pub media_nacked: u64,
    pub media_recovered: u64,
    pub media_duplicate: u64,
    pub media_resent: u64,
    pub media_resent_bytes: u64,
    pub media_sent_bytes: u64,
    pub media_redundant: u64,
    pub media_redundant_bytes: u64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            messages_sent: r(&self.messages_sent),
            messages_acked: r(&self.messages_acked),
            messages_refused: r(&self.messages_refused),
            messages_replayed: r(&self.messages_replayed),
            messages_delivered: r(&self.messages_delivered),
            messages_duplicate: r(&self.messages_duplicate),
            messages_skipped: r(&self.messages_skipped),
            media_sent: r(&self.media_sent),
            media_received: r(&self.media_received),
            media_unknown_track: r(&self.media_unknown_track),
            media_malformed: r(&self.media_malformed),
            media_dropped: r(&self.media_dropped),
            media_late: r(&self.media_late),
            media_undecryptable: r(&self.media_undecryptable),
            messages_undecryptable: r(&self.messages_undecryptable),
            frames_unknown: r(&self.frames_unknown),
            reconnects: r(&self.reconnects),
            goaways: r(&self.goaways),
            edge_switches: r(&self.edge_switches),
            media_nacked: r(&self.media_nacked),
            media_recovered: r(&self.media_recovered),
            media_duplicate: r(&self.media_duplicate),
            media_resent: r(&self.media_resent),
            media_resent_bytes: r(&self.media_resent_bytes),
            media_sent_bytes: r(&self.media_sent_bytes),
            media_redundant: r(&self.media_redundant),
            media_redundant_bytes: r(&self.media_redundant_bytes),
        }
    }
}

pub(crate) fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Where the time of [`crate::Client::connect`] went, from the call to a
/// connected edge: what an app waits for before it can join.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectTiming {
    /// Asking the controller for its shortlist (zero with an explicit list).
    pub lookup: std::time::Duration,
    /// QUIC handshakes until an edge answered (raced over the candidates
    /// when they are measured: probing them properly comes after, off the
    /// path), and its control stream.
    pub handshake: std::time::Duration,
    /// The connected edge's round-trip time as QUIC estimated it then.
    pub edge_rtt: std::time::Duration,
}
