//! Media quality the way users feel it, over every received track of every
//! client: stalls at the playout point, and what loss repair cost.
//!
//! - **Stall rate** per kind: the time receivers spent in stalls over the
//!   time they played media, summed over every (receiver, track) the SDK
//!   played out (`sdk::playout::PlayoutStats`: a stall is a gap between
//!   played frames, not explained by the sender pausing, over 100 ms for
//!   audio and 200 ms for video).
//! - **Repair overhead**: the bytes every hop sent again (NACK answers) or
//!   as parity, over the bytes of media every hop sent the first time:
//!   publishers' SDKs to their edges, edges to edges and edges to
//!   subscribers, counted where they were sent (edge metrics, SDK stats)
//!   over the run only.

use serde::Serialize;
use testkit::scrape::metric_in;

use super::record::{MediaStreams, PerKind};

/// Bytes and packets of media and of repair, summed over the lab's edges
/// (their metrics) and clients (their SDK stats) at one moment.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct RepairCounters {
    /// First transmissions of media, every hop.
    pub media_bytes: f64,
    /// Retransmissions answering NACKs, every hop.
    pub resent_bytes: f64,
    /// Forward error correction: parity (relay links) and audio copies
    /// (any lossy hop, SDKs' included).
    pub parity_bytes: f64,
    /// Packets asked for again, by edges and by SDKs.
    pub nacked: f64,
    pub resent: f64,
    /// Packets rebuilt from parity.
    pub rebuilt: f64,
    /// Copies sent around suspect relays and lossy links (docs/protocol.md
    /// §9.4 step 5), every hop they crossed.
    pub copy_bytes: f64,
    /// Copies the edges made.
    pub copies: f64,
}

impl RepairCounters {
    /// The edges' part, from their Prometheus text.
    pub fn of_edges(text: &str) -> RepairCounters {
        let m = |name: &str, labels: &[(&str, &str)]| metric_in(text, name, labels);
        let resent_bytes = m("rtn_edge_repair_resent_bytes_total", &[]);
        RepairCounters {
            // First sends only: retransmissions and parity are counted
            // apart, not in the media counters.
            media_bytes: m("rtn_edge_media_bytes_total", &[("dir", "out")]),
            resent_bytes,
            parity_bytes: m("rtn_edge_repair_parity_bytes_total", &[]),
            nacked: m("rtn_edge_repair_nacked_total", &[("dir", "out")]),
            resent: m("rtn_edge_repair_resent_packets_total", &[]),
            rebuilt: m("rtn_edge_repair_parity_rebuilt_total", &[]),
            copy_bytes: m("rtn_edge_media_copy_bytes_total", &[]),
            copies: m("rtn_edge_media_copies_total", &[("event", "made")]),
        }
    }

    /// Add a client's part.
    pub fn add_client(&mut self, s: &sdk::StatsSnapshot) {
        self.media_bytes += s.media_sent_bytes as f64;
        self.resent_bytes += s.media_resent_bytes as f64;
        self.parity_bytes += s.media_redundant_bytes as f64;
        self.nacked += s.media_nacked as f64;
        self.resent += s.media_resent as f64;
    }

    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &RepairCounters) -> RepairCounters {
        RepairCounters {
            media_bytes: self.media_bytes - earlier.media_bytes,
            resent_bytes: self.resent_bytes - earlier.resent_bytes,
            parity_bytes: self.parity_bytes - earlier.parity_bytes,
            nacked: self.nacked - earlier.nacked,
            resent: self.resent - earlier.resent,
            rebuilt: self.rebuilt - earlier.rebuilt,
            copy_bytes: self.copy_bytes - earlier.copy_bytes,
            copies: self.copies - earlier.copies,
        }
    }

    /// Repair bytes (resent, parity, copies around suspect relays and lossy
    /// links) over media bytes.
    pub fn overhead(&self) -> f64 {
        if self.media_bytes <= 0.0 {
            0.0
        } else {
            (self.resent_bytes + self.parity_bytes + self.copy_bytes) / self.media_bytes
        }
    }

    /// The part of [`Self::overhead`] that is copies.
    pub fn copy_overhead(&self) -> f64 {
        if self.media_bytes <= 0.0 {
            0.0
        } else {
            self.copy_bytes / self.media_bytes
        }
    }
}

/// Playout figures summed over every played track of one kind.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Playout {
    /// (receiver, track) pairs that played something.
    pub tracks: u64,
    pub stalls: u64,
    pub stalled_s: f64,
    pub playing_s: f64,
    pub frames_played: u64,
    /// Distinct packets that reached the SDK (played, late, or dropped by
    /// the buffer for any other reason).
    pub arrived: u64,
    pub concealed: u64,
    pub late: u64,
    /// Mean time a played frame waited in its jitter buffer, ms.
    pub mean_buffer_ms: f64,
}

impl Playout {
    fn add(&mut self, s: &sdk::playout::PlayoutStats) {
        self.tracks += 1;
        self.stalls += s.stalls;
        self.stalled_s += s.stalled_time.as_secs_f64();
        self.playing_s += s.playing_time.as_secs_f64();
        // Weighted by frames: the mean over every played frame.
        let frames = self.frames_played + s.frames_played;
        if frames > 0 {
            self.mean_buffer_ms = (self.mean_buffer_ms * self.frames_played as f64
                + s.delay_total.as_secs_f64() * 1e3)
                / frames as f64;
        }
        self.frames_played = frames;
        self.arrived += s.frames_played
            + s.expired
            + s.late
            + s.too_old
            + s.overflow
            + s.reset_dropped
            + s.held as u64;
        self.concealed += s.concealed;
        self.late += s.late;
    }

    pub fn stall_rate(&self) -> f64 {
        if self.playing_s <= 0.0 {
            0.0
        } else {
            self.stalled_s / self.playing_s
        }
    }
}

/// The quality part of the lab report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Quality {
    /// Time in stalls over time played, per kind.
    pub stall_rate: PerKind,
    /// Packets that never reached the receivers' SDKs (after every hop's
    /// repair) over the packets sent to them, per kind: the network's
    /// loss, before any playout (`playout_loss` adds what came too late).
    pub residual_loss: PerKind,
    /// Repair bytes over media bytes, every hop.
    pub repair_overhead: f64,
    #[serde(rename = "playout_audio")]
    pub audio: Playout,
    #[serde(rename = "playout_video")]
    pub video: Playout,
    pub repair: RepairCounters,
}

impl Quality {
    /// From every client's played tracks, the run's repair counters, and
    /// what publishers sent to every expected receiver.
    pub fn of(
        tracks: &[sdk::TrackPlayout],
        repair: RepairCounters,
        streams: &MediaStreams,
    ) -> Quality {
        let (mut audio, mut video) = (Playout::default(), Playout::default());
        for t in tracks {
            match t.kind {
                sdk::TrackKind::Audio => audio.add(&t.stats),
                _ => video.add(&t.stats),
            }
        }
        let lost = |sent: u64, arrived: u64| {
            if sent == 0 {
                0.0
            } else {
                (1.0 - arrived as f64 / sent as f64).max(0.0)
            }
        };
        Quality {
            stall_rate: PerKind {
                audio: audio.stall_rate(),
                video: video.stall_rate(),
            },
            residual_loss: PerKind {
                audio: lost(streams.by_kind[0].0, audio.arrived),
                video: lost(streams.by_kind[1].0, video.arrived),
            },
            repair_overhead: repair.overhead(),
            audio,
            video,
            repair,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn played(kind: sdk::TrackKind, stalled_ms: u64, playing_ms: u64) -> sdk::TrackPlayout {
        sdk::TrackPlayout {
            channel: "c".into(),
            user: "u".into(),
            track: "t".into(),
            kind,
            stats: sdk::playout::PlayoutStats {
                stalls: (stalled_ms > 0) as u64,
                stalled_time: Duration::from_millis(stalled_ms),
                playing_time: Duration::from_millis(playing_ms),
                frames_played: 10,
                delay_total: Duration::from_millis(300),
                ..Default::default()
            },
        }
    }

    #[test]
    fn stall_rates_are_time_weighted_over_every_track_of_a_kind() {
        let q = Quality::of(
            &[
                played(sdk::TrackKind::Audio, 100, 10_000),
                played(sdk::TrackKind::Audio, 0, 30_000),
                played(sdk::TrackKind::Video, 400, 20_000),
            ],
            RepairCounters::default(),
            &MediaStreams {
                by_kind: [(40, 20), (10, 10)],
                ..Default::default()
            },
        );
        // 20 frames played of 40 audio packets sent; all 10 video.
        assert!((q.residual_loss.audio - 0.5).abs() < 1e-12);
        assert_eq!(q.residual_loss.video, 0.0);
        assert!((q.stall_rate.audio - 100.0 / 40_000.0).abs() < 1e-12);
        assert!((q.stall_rate.video - 0.02).abs() < 1e-12);
        assert_eq!(q.audio.tracks, 2);
        assert!((q.audio.mean_buffer_ms - 30.0).abs() < 1e-9);
    }

    #[test]
    fn overhead_is_repair_over_first_sends_across_edges_and_clients() {
        let text = "rtn_edge_media_bytes_total{edge=\"1\",dir=\"out\",link=\"relay\"} 600\n\
                    rtn_edge_media_bytes_total{edge=\"1\",dir=\"in\",link=\"client\"} 999\n\
                    rtn_edge_repair_resent_bytes_total{edge=\"1\",link=\"relay\"} 50\n\
                    rtn_edge_repair_parity_bytes_total{edge=\"1\",link=\"relay\"} 30\n\
                    rtn_edge_media_copy_bytes_total{edge=\"1\"} 20\n\
                    rtn_edge_media_copies_total{edge=\"1\",event=\"made\"} 2\n\
                    rtn_edge_media_copies_total{edge=\"1\",event=\"dropped\"} 5\n";
        let mut c = RepairCounters::of_edges(text);
        c.add_client(&sdk::StatsSnapshot {
            media_sent_bytes: 400,
            media_resent_bytes: 20,
            media_redundant_bytes: 10,
            ..Default::default()
        });
        let run = c.since(&RepairCounters::default());
        assert!((run.overhead() - 0.13).abs() < 1e-12, "{}", run.overhead());
        assert_eq!(run.copies, 2.0);
    }
}
