//! Make-before-break: after a move (a goaway, or a clearly faster edge),
//! the old link stays open for a moment after the channels are restored on
//! the new one. Meanwhile the client receives over both (the first copy of
//! each packet is kept, [`crate::stream`]) and sends its media to both
//! ([`crate::channel::Binding::Bound`]'s `previous`), so nobody's media
//! stops while the new edge learns where the channel's members are
//! (one round trip between it and their edges, protocol §9.6 "Hints").

use std::time::Duration;

/// A stream that delivered a packet this recently is flowing: the old
/// link is kept until it arrives over the new one. Longer than the gaps
/// of a live track (a video frame interval, an audio packet lost), shorter
/// than a paused one.
pub(super) const STREAM_ACTIVE: Duration = Duration::from_millis(300);

/// A publisher cannot see its media arrive at the receivers' edges over
/// the new path, so it sends to both edges at least this long: the new
/// edge forwards to the edges the client named at once, one one-way trip
/// across the overlay (up to about 150 ms between antipodes), with room
/// for queueing.
pub(super) const PUBLISH_OVERLAP: Duration = Duration::from_millis(300);

/// The old link goes after this whatever is still missing (a stream whose
/// new path needs the channel's directory homes; a publisher that left).
/// Two seconds: an edge that has just (re)started may need a second for
/// its relay links and routes before media reaches it from every edge (a
/// rolling restart under load, drained onto the edge restarted 2 s
/// before, showed 1.1 s), while the draining edge waits up to 5 s
/// (`drain_timeout_ms`) for its clients anyway.
pub(super) const MAX_OVERLAP: Duration = Duration::from_secs(2);

/// How often the overlap's end is checked.
pub(super) const CHECK_EVERY: Duration = Duration::from_millis(20);

/// Whether the overlap is over, `elapsed` after the channels were
/// restored on the new link.
pub(super) fn over(elapsed: Duration, publishing: bool, streams_waiting: bool) -> bool {
    elapsed >= MAX_OVERLAP || (!streams_waiting && (!publishing || elapsed >= PUBLISH_OVERLAP))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_link_goes_once_every_stream_moved_and_published_media_had_time() {
        let ms = Duration::from_millis;
        assert!(over(ms(0), false, false), "nothing to wait for");
        assert!(!over(ms(0), false, true), "a stream not moved yet");
        assert!(
            !over(ms(100), true, false),
            "a publisher sends to both a while"
        );
        assert!(over(PUBLISH_OVERLAP, true, false));
        assert!(!over(ms(1_999), true, true));
        assert!(over(MAX_OVERLAP, true, true), "bounded");
    }
}
