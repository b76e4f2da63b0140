//! What the client reports to the app, and the queue that carries it.
//!
//! One queue holds every event in the order it happened. Media is
//! loss-tolerant and plentiful, so at most `media_queue` media events wait in
//! it: past that, new media is dropped (and counted) until the app catches
//! up. Every other event is kept.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::e2ee::E2eeError;
use crate::error::SdkError;
pub use protocol::pb::TrackKind;

/// Something that happened in a channel or to the connection.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A user is now present in the channel (its first session appeared;
    /// further sessions of the same user, e.g. after it reconnected, are not
    /// reported again). In a large channel: now listed ([`Event::MemberCount`]).
    MemberJoined {
        channel: String,
        user: String,
    },
    /// A user's last session left the channel. `hidden`: it is still
    /// there, but publishes nothing any more in a large channel, so it is
    /// counted ([`Event::MemberCount`]), not listed.
    MemberLeft {
        channel: String,
        user: String,
        hidden: bool,
    },
    /// How many member sessions the channel has (this client's included),
    /// and whether it is large: then only members that publish are listed
    /// (reported by `MemberJoined` and `MemberLeft`). Reported on join, on a
    /// change after a rejoin, and from the edge (at most once a second while
    /// large). When it becomes large, members that publish nothing are no
    /// longer listed, without a `MemberLeft`; when it becomes small again,
    /// a `MemberJoined` follows for each user not listed.
    MemberCount {
        channel: String,
        members: u64,
        large: bool,
    },
    /// A user's track can be received (after a subscribe covering the user).
    TrackAvailable {
        channel: String,
        user: String,
        track: String,
        kind: TrackKind,
    },
    TrackUnavailable {
        channel: String,
        user: String,
        track: String,
    },
    Media(Media),
    Message(Message),
    /// The connection was lost (or the edge said goaway); the client is
    /// reconnecting by itself. Media pauses; messages sent meanwhile are kept
    /// and delivered after the reconnect.
    Reconnecting {
        reason: String,
    },
    /// Connected again and every channel restored (rejoined, tracks
    /// republished, subscriptions restored, messages replayed).
    Reconnected {
        edge: SocketAddr,
    },
    /// A channel could not be restored after a reconnect (e.g. its token
    /// expired) and is gone: join again with a fresh token.
    ChannelLost {
        channel: String,
        error: SdkError,
    },
    /// The edge refused one of this client's messages; it will not be
    /// delivered or replayed, and its seq goes to the next message once
    /// nothing sent after it is outstanding (those are refused too, with
    /// `BAD_SEQUENCE`, when the refusal was about this message's content).
    MessageRefused {
        channel: String,
        seq: u64,
        error: SdkError,
    },
    /// An error not tied to a call (e.g. a track could not be republished).
    Error(SdkError),
    /// In an end-to-end encrypted channel, media or a message from `user`
    /// could not be opened (wrong key, a key id this client was not given,
    /// tampered with, or sent without encryption). Such payloads are dropped
    /// and counted (`Stats::media_undecryptable`,
    /// `Stats::messages_undecryptable`); this event comes once per sender
    /// and kind of failure, and again only after something from that sender
    /// opened in between.
    Undecryptable {
        channel: String,
        user: String,
        error: E2eeError,
    },
}

/// One media packet from another member's track.
#[derive(Clone, Debug, PartialEq)]
pub struct Media {
    pub channel: String,
    pub user: String,
    pub track: String,
    /// The publisher's per-track sequence number (wraps at 2^32).
    pub sequence: u32,
    /// The publisher's wall clock when it sent the packet (µs since the epoch).
    pub timestamp_us: u64,
    pub payload: Bytes,
    /// When the SDK received the packet.
    pub received_at: SystemTime,
    /// When the SDK handed it to the app: its playout time when the
    /// client runs jitter buffers (`ClientConfig::playout`), else as it
    /// arrived (`received_at`).
    pub played_at: SystemTime,
}

/// One message from another member, delivered in that sender's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub channel: String,
    pub from: String,
    pub seq: u64,
    pub payload: Bytes,
    /// The sender's wall clock when it sent the message (µs since the epoch).
    pub sent_at_us: u64,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<Event>,
    media: usize,
    closed: bool,
}

pub(crate) struct EventQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    media_limit: usize,
}

impl EventQueue {
    pub fn new(media_limit: usize) -> Self {
        EventQueue {
            inner: Mutex::default(),
            notify: Notify::new(),
            media_limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, e: Event) {
        {
            let mut q = self.lock();
            if q.closed {
                return;
            }
            if matches!(e, Event::Media(_)) {
                q.media += 1;
            }
            q.queue.push_back(e);
        }
        self.notify.notify_one();
    }

    /// Queue a media event unless too many wait already; false = dropped.
    pub fn push_media(&self, m: Media) -> bool {
        {
            let mut q = self.lock();
            if q.closed || q.media >= self.media_limit {
                return false;
            }
            q.media += 1;
            q.queue.push_back(Event::Media(m));
        }
        self.notify.notify_one();
        true
    }

    /// No more events will come; `next` returns None once the queue is empty.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub fn try_next(&self) -> Option<Event> {
        let mut q = self.lock();
        let e = q.queue.pop_front()?;
        if matches!(e, Event::Media(_)) {
            q.media -= 1;
        }
        Some(e)
    }

    pub async fn next(&self) -> Option<Event> {
        loop {
            if let Some(e) = self.try_next() {
                return Some(e);
            }
            if self.lock().closed {
                // Wake any other waiter too.
                self.notify.notify_one();
                return None;
            }
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(n: u32) -> Media {
        Media {
            channel: "c".into(),
            user: "u".into(),
            track: "t".into(),
            sequence: n,
            timestamp_us: 0,
            payload: Bytes::new(),
            received_at: SystemTime::UNIX_EPOCH,
            played_at: SystemTime::UNIX_EPOCH,
        }
    }

    #[tokio::test]
    async fn media_is_bounded_other_events_are_not() {
        let q = EventQueue::new(2);
        assert!(q.push_media(media(1)));
        assert!(q.push_media(media(2)));
        assert!(!q.push_media(media(3)));
        for _ in 0..10 {
            q.push(Event::Reconnecting { reason: "x".into() });
        }
        assert!(matches!(q.next().await, Some(Event::Media(m)) if m.sequence == 1));
        // Room for one more media packet now.
        assert!(q.push_media(media(4)));
        assert!(!q.push_media(media(5)));
        let mut seen = vec![];
        while let Some(e) = q.try_next() {
            seen.push(e);
        }
        assert_eq!(seen.len(), 12);
        assert!(matches!(&seen[11], Event::Media(m) if m.sequence == 4));
    }

    #[tokio::test]
    async fn waiters_wake_on_push_and_on_close() {
        let q = std::sync::Arc::new(EventQueue::new(8));
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { (q.next().await, q.next().await) }
        });
        tokio::task::yield_now().await;
        q.push(Event::Error(SdkError::Timeout));
        q.close();
        q.push(Event::Error(SdkError::Closed));
        let (a, b) = waiter.await.unwrap();
        assert_eq!(a, Some(Event::Error(SdkError::Timeout)));
        assert_eq!(b, None);
    }
}
