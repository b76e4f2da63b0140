//! Media loss repair where the loss happens, free of I/O.
//!
//! Every hop a media packet crosses (publisher -> edge, edge -> edge,
//! edge -> subscriber) repairs its own loss: the receiving end of the hop
//! notices gaps in each track's sequence and asks the sending end for the
//! missing packets (a NACK, `protocol::datagram::Nack`), and the sending end
//! keeps what it sent for a short while and sends it once more if it can
//! still arrive in time. Recovery then costs one hop's round trip, not the
//! whole path's, and a loss on one hop is repaired before the next hop even
//! sees it missing.
//!
//! - [`gaps`]: the receiving end: per track, which sequences arrived, which
//!   are missing, when each is due a NACK (after a short reorder grace, again
//!   after a round trip, given up at the kind's deadline); duplicates (from a
//!   retransmission racing a late original, or a second path) are told
//!   apart so they are not forwarded twice.
//! - [`history`]: the sending end: what was sent lately on one hop, bounded
//!   by count and age, and what a NACK may get: the packet, or nothing
//!   because it is too late or was never sent (a NACK for sequences never
//!   sent is refused and counted as abuse by the caller).
//! - [`fec`]: XOR parity for hops whose loss a NACK cannot repair in time
//!   (long round trips, very high loss), switched by measured loss with
//!   hysteresis.
//! - [`red`]: audio sent again with the next packet of its track on a
//!   lossy hop (RED), switched by the hop's measured loss.
//! - [`redundant`]: media also sent around a relay link that loses more
//!   than the above win back, within a share of the link's media.
//! - [`budget`]: repair traffic capped as a share of the media sent on the
//!   hop, so loss can never double a link's load.
//! - [`deadline`]: how long a packet of each kind is worth repairing.
//! - [`hop`]: both ends of one hop over all its tracks (what a link holds).
//! - [`early`]: media whose track is not known yet at the receiving end
//!   (its announcement came a slower way), held until it is, so the first
//!   packets of a track are not lost either.
//!
//! The edge (relay links, client links) and the SDK (both directions of its
//! last mile) drive these with their sockets and clocks.

pub mod budget;
pub mod early;
pub mod fec;
pub mod gaps;
pub mod history;
pub mod hop;
pub mod red;
pub mod redundant;

use std::time::Duration;

use protocol::MediaKind;

pub use budget::RepairBudget;
pub use gaps::{Arrival, GapTracker};
pub use history::{Lookup, SendHistory};
pub use hop::{Answer, HopReceiver, HopSender};
pub use redundant::RedundantPath;

/// Audio later than this after a hop first sent it is not repaired on that
/// hop: the receiver's jitter buffer plays audio at most 400 ms behind the
/// fastest packets (ITU-T G.114's limit for conversation;
/// `sdk::playout::PlayoutConfig::audio` takes this as its `max_delay`), so a packet repaired within that may still be
/// played, and one later never is. Each hop measures from the moment the
/// packet was due at that hop, and a packet repaired on one hop reaches
/// the next that much late: a hop's deadline is the whole path's budget,
/// not a share of it. Measured in the lab at 10% loss and 50 ms jitter on
/// every link (`bench weak-network`): with 250 ms per hop, a packet lost
/// twice on a path (repaired on the first hop, lost again on the next)
/// found the next hop's deadline nearly spent, and 3.6-4.2% of audio never
/// arrived (4.3-5.1% not played); with 400 ms, 1.3-1.6% (2.8-3.2%).
/// 150 ms left 17% lost.
pub const AUDIO_DEADLINE: Duration = Duration::from_millis(400);
/// Video: the video jitter buffer's 500 ms bound (the `max_delay` of
/// `sdk::playout::PlayoutConfig::video`), for the same reason.
pub const VIDEO_DEADLINE: Duration = Duration::from_millis(500);
/// Data tracks: as video.
pub const OTHER_DEADLINE: Duration = VIDEO_DEADLINE;

/// How long a packet of `kind` is worth repairing after it was first seen
/// by the hop that repairs it. Measured on the hop's own clock, not from
/// the publisher's timestamp: the publisher's clock is not the edge's, and
/// an edge far down a path cannot tell skew from delay.
pub fn deadline(kind: MediaKind) -> Duration {
    match kind {
        MediaKind::Audio => AUDIO_DEADLINE,
        MediaKind::Video => VIDEO_DEADLINE,
        MediaKind::Other => OTHER_DEADLINE,
    }
}
