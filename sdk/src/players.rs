//! The client's jitter buffers ([`crate::playout`]) and the task that plays
//! them out: media goes into its track's buffer as it arrives, and comes out
//! to the app as [`Event::Media`], in sequence order, at its playout time.
//!
//! Buffers are kept per (channel, publisher, track name), not per track key
//! or connection, so that a reconnect (of either end: the key changes when
//! the publisher republishes) keeps the track's playout going and counts
//! the outage as the stall it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::connection::{RemoteTrack, Shared};
use crate::events::{Media, TrackKind};
use crate::playout::{JitterBuffer, Playout, PlayoutConfig, PlayoutStats, Pushed};
use crate::stats::bump;

/// A buffer not fed for this long is forgotten (its track ended).
const IDLE: Duration = Duration::from_secs(30);
/// The playout task looks at least this often whether the client is gone.
const RECHECK: Duration = Duration::from_millis(250);

/// How each kind of track is played out.
#[derive(Clone, Debug, PartialEq)]
pub struct PlayoutSettings {
    pub audio: PlayoutConfig,
    pub video: PlayoutConfig,
}

impl Default for PlayoutSettings {
    fn default() -> Self {
        PlayoutSettings {
            audio: PlayoutConfig::audio(),
            video: PlayoutConfig::video(),
        }
    }
}

/// One received track's playout, as the app sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct TrackPlayout {
    pub channel: String,
    pub user: String,
    pub track: String,
    pub kind: TrackKind,
    pub stats: PlayoutStats,
}

struct Player {
    channel: String,
    user: String,
    track: String,
    kind: TrackKind,
    buffer: JitterBuffer,
    last_push: Instant,
}

type Key = (String, String, String);

/// Every received track's buffer.
pub(crate) struct Players {
    settings: PlayoutSettings,
    map: Mutex<HashMap<Key, Player>>,
    wake: Notify,
}

impl Players {
    pub fn new(settings: PlayoutSettings) -> Self {
        Players {
            settings,
            map: Mutex::default(),
            wake: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Player>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A packet of `track` arrived.
    pub fn push(
        &self,
        track: &RemoteTrack,
        kind: TrackKind,
        seq: u32,
        sent_us: u64,
        payload: Bytes,
    ) -> Pushed {
        let now = Instant::now();
        let key = (
            track.channel.clone(),
            track.user.clone(),
            track.name.clone(),
        );
        let mut map = self.lock();
        let player = map.entry(key).or_insert_with(|| Player {
            channel: track.channel.clone(),
            user: track.user.clone(),
            track: track.name.clone(),
            kind,
            buffer: JitterBuffer::new(match kind {
                TrackKind::Audio => self.settings.audio.clone(),
                _ => self.settings.video.clone(),
            }),
            last_push: now,
        });
        player.last_push = now;
        let pushed = player.buffer.push(seq, sent_us, now, payload);
        drop(map);
        if pushed == Pushed::Buffered {
            self.wake.notify_one();
        }
        pushed
    }

    pub fn stats(&self) -> Vec<TrackPlayout> {
        self.lock()
            .values()
            .map(|p| TrackPlayout {
                channel: p.channel.clone(),
                user: p.user.clone(),
                track: p.track.clone(),
                kind: p.kind,
                stats: p.buffer.stats(),
            })
            .collect()
    }

    /// Play out what is due; when to look again.
    fn play_due(&self, shared: &Shared) -> Option<Instant> {
        let now = Instant::now();
        let played_at = SystemTime::now();
        let mut map = self.lock();
        map.retain(|_, p| now.duration_since(p.last_push) < IDLE || p.buffer.held() > 0);
        for p in map.values_mut() {
            for out in p.buffer.poll(now) {
                if let Playout::Frame {
                    seq,
                    sent_us,
                    payload,
                    delay,
                } = out
                {
                    let queued = shared.events.push_media(Media {
                        channel: p.channel.clone(),
                        user: p.user.clone(),
                        track: p.track.clone(),
                        sequence: seq,
                        timestamp_us: sent_us,
                        payload,
                        received_at: played_at - delay,
                        played_at,
                    });
                    if !queued {
                        bump(&shared.stats.media_dropped, 1);
                    }
                }
            }
        }
        map.values().filter_map(|p| p.buffer.next_wakeup()).min()
    }
}

/// Play out the client's buffers until the client is gone.
pub(crate) async fn run(players: Arc<Players>, shared: Weak<Shared>) {
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            players.play_due(&shared)
        };
        let until = next.map_or(Instant::now() + RECHECK, |n| {
            n.min(Instant::now() + RECHECK)
        });
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = players.wake.notified() => {}
        }
    }
}
