//! The first of two copies wins: what a destination edge delivers when a
//! packet may reach it twice, once along its best path and once as a copy
//! around a suspect hop (`RELAY_MEDIA_COPY`, docs/protocol.md §5.3).
//!
//! Only tracks that received a copy lately are watched: [`FirstCopy`]
//! remembers the sequences delivered of those, and everything else is
//! delivered without a look (a healthy mesh sends no copies and pays one
//! relaxed atomic load per packet). So when the original of a packet
//! arrives first and its copy is the first of its track, both are
//! delivered: one duplicate per track at the start of an episode, which
//! the subscriber's SDK drops as it drops any duplicate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::{ChannelId, TrackKey};
use repair::gaps::{extend, SeenWindow, WINDOW};

/// A track is watched this long after its last copy: the original and the
/// copy of the same packet arrive well within it.
pub const WATCH_FOR: Duration = Duration::from_secs(2);
/// Tracks watched at once, at most (256 bytes of window each): copies flow
/// only while a hop is suspect, and a flood of forged copies must not grow
/// the table.
pub const MAX_WATCHED: usize = 4_096;

/// One watched track: which sequences within [`WINDOW`] of its highest
/// were delivered (the window and 64-bit extension the repair crate's gap
/// tracker uses: a packet that far behind is too old to tell, and counts
/// as delivered).
#[derive(Debug)]
struct Seen {
    highest: u64,
    delivered: SeenWindow,
    copy_at: Instant,
}

impl Seen {
    fn new(seq: u32, now: Instant) -> Self {
        let highest = extend(None, seq);
        let mut delivered = SeenWindow::default();
        delivered.set(highest, true);
        Seen {
            highest,
            delivered,
            copy_at: now,
        }
    }

    /// Mark `seq` delivered; false if it already was (or is too old to
    /// tell: the copy is late anyway).
    fn first(&mut self, seq: u32) -> bool {
        let ext = extend(Some(self.highest), seq);
        if ext > self.highest {
            if ext - self.highest >= WINDOW {
                self.delivered.clear();
            } else {
                for s in self.highest + 1..ext {
                    self.delivered.set(s, false);
                }
            }
            self.highest = ext;
            self.delivered.set(ext, true);
            return true;
        }
        if self.highest - ext >= WINDOW {
            return false;
        }
        let was = self.delivered.contains(ext);
        self.delivered.set(ext, true);
        !was
    }
}

/// The tracks that received copies lately, and what was delivered of them.
#[derive(Debug, Default)]
pub struct FirstCopy {
    tracks: HashMap<(ChannelId, TrackKey), Seen>,
    swept: Option<Instant>,
}

impl FirstCopy {
    /// Whether to deliver packet `seq` of `track` that arrived at `now`
    /// (`copy`: as a copy): true for the first of its copies, and for every
    /// packet of a track that had no copy within [`WATCH_FOR`].
    pub fn deliver(
        &mut self,
        track: (ChannelId, TrackKey),
        seq: u32,
        copy: bool,
        now: Instant,
    ) -> bool {
        if self
            .swept
            .is_none_or(|t| now.saturating_duration_since(t) >= WATCH_FOR / 4)
        {
            self.swept = Some(now);
            self.forget_quiet(now);
        }
        if let Some(seen) = self.tracks.get_mut(&track) {
            if copy {
                seen.copy_at = now;
            }
            return seen.first(seq);
        }
        if copy {
            if self.tracks.len() >= MAX_WATCHED {
                self.forget_quiet(now);
            }
            if self.tracks.len() < MAX_WATCHED {
                self.tracks.insert(track, Seen::new(seq, now));
            }
        }
        true
    }

    /// Stop watching tracks without a copy for [`WATCH_FOR`]; true while
    /// some are still watched.
    pub fn forget_quiet(&mut self, now: Instant) -> bool {
        self.tracks
            .retain(|_, s| now.saturating_duration_since(s.copy_at) < WATCH_FOR);
        !self.tracks.is_empty()
    }

    pub fn watched(&self) -> usize {
        self.tracks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: (ChannelId, TrackKey) = (ChannelId(1), TrackKey(2));

    #[test]
    fn whichever_copy_comes_first_is_delivered_once() {
        let now = Instant::now();
        let mut f = FirstCopy::default();
        // Originals of a track with no copies: all delivered, none kept.
        for seq in 0..10 {
            assert!(f.deliver(T, seq, false, now));
        }
        assert_eq!(f.watched(), 0);
        // A copy of 10 arrives first, then its original; the original of
        // 11 first, then its copy.
        assert!(f.deliver(T, 10, true, now));
        assert!(!f.deliver(T, 10, false, now));
        assert!(f.deliver(T, 11, false, now));
        assert!(!f.deliver(T, 11, true, now));
        // Reordered but new: delivered; far too old to tell: not.
        assert!(f.deliver(T, 14, true, now));
        assert!(f.deliver(T, 12, false, now));
        assert!(!f.deliver(T, 12, true, now));
        assert!(!f.deliver(T, 14u32.wrapping_sub(WINDOW as u32), false, now));
        // Another track is not affected.
        assert!(f.deliver((ChannelId(1), TrackKey(3)), 10, false, now));
        // Copies stopped: the track is forgotten after WATCH_FOR.
        assert!(f.forget_quiet(now + WATCH_FOR / 2));
        assert!(!f.forget_quiet(now + WATCH_FOR));
        assert!(f.deliver(T, 11, false, now + WATCH_FOR));
    }

    #[test]
    fn sequences_wrap() {
        let now = Instant::now();
        let mut f = FirstCopy::default();
        assert!(f.deliver(T, u32::MAX - 1, true, now));
        assert!(f.deliver(T, 1, false, now));
        assert!(!f.deliver(T, 1, true, now));
        assert!(!f.deliver(T, u32::MAX - 1, false, now));
        assert!(f.deliver(T, u32::MAX, true, now));
        assert!(f.deliver(T, 0, true, now));
        assert!(!f.deliver(T, 0, false, now));
    }

    #[test]
    fn the_table_is_bounded() {
        let now = Instant::now();
        let mut f = FirstCopy::default();
        for t in 0..MAX_WATCHED as u64 + 10 {
            assert!(f.deliver((ChannelId(t), TrackKey(1)), 0, true, now));
        }
        assert_eq!(f.watched(), MAX_WATCHED);
        // Later ones are still delivered, only not deduplicated.
        assert!(f.deliver((ChannelId(u64::MAX), TrackKey(1)), 0, true, now));
    }

    proptest! {
        /// Any arrival order of two copies of a run of packets (within the
        /// window): each sequence is delivered exactly once.
        #[test]
        fn each_packet_is_delivered_once(
            start: u32,
            order in Just((0..200u32).flat_map(|s| [(s, false), (s, true)]).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let now = Instant::now();
            let mut f = FirstCopy::default();
            // Watching starts with a copy: send one first.
            f.deliver(T, start.wrapping_sub(1), true, now);
            let mut delivered = vec![0u32; 200];
            for (s, copy) in order {
                if f.deliver(T, start.wrapping_add(s), copy, now) {
                    delivered[s as usize] += 1;
                }
            }
            prop_assert!(delivered.iter().all(|&n| n == 1), "{:?}", delivered);
        }
    }
}
