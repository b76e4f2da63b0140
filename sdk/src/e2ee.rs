//! End-to-end encryption of a channel's media payloads and message bodies,
//! with a key the app's own server hands its users (never RTN). Edges only
//! ever see the protocol headers they need to forward (channel, track key,
//! sequence, timestamps, sender ids); the payloads they carry are sealed
//! with AES-256-GCM (`ring`), and those headers are bound to them as
//! associated data, so an edge that moves a payload to another channel,
//! track, sender or sequence, or changes its timestamp, makes it fail to
//! open. See `docs/e2ee.md` for the threat model and the key handling.
//!
//! # Sealed payload
//!
//! What goes into `payload` of a media datagram, or of a `ChatMessage`:
//!
//! ```text
//! key_id (1) | stream_salt (8, big-endian) | ciphertext (as long as the plaintext) | tag (16)
//! ```
//!
//! 25 bytes over the plaintext ([`OVERHEAD`]). `key_id` names the
//! [`ChannelKey`] it was sealed with (so receivers can hold the current and
//! the previous key during a rotation); `stream_salt` is the first half of
//! the nonce (below).
//!
//! # Keys
//!
//! Nothing is ever sealed with the channel key itself. Each sender seals with
//! its own subkeys, derived with HKDF-SHA256:
//!
//! ```text
//! prk    = HKDF-Extract(salt = "rtn-e2ee/v1", ikm = channel key secret (32 bytes))
//! subkey = HKDF-Expand(prk, info = "rtn-e2ee/v1" | kind | channel_id (8, BE)
//!                                  | key_id (1) | len(user) (2, BE) | user, 32 bytes)
//! kind   = "media" or "message"
//! ```
//!
//! `user` is the sender's user id as its edge reports it to receivers (the
//! join token's user id: `from_user` of messages, the publisher of a track),
//! so a receiver opens a payload with the subkey of the member the edge
//! says sent it: a payload passed off as another member's does not open.
//!
//! # Nonces (96 bits), and why one never repeats for a subkey
//!
//! ```text
//! nonce = stream_salt (8) | sequence (4, BE)
//! ```
//!
//! `sequence` is the media datagram's header sequence, or the low 32 bits of
//! the message's `seq`. Every sending *stream* (one [`crate::TrackPublisher`],
//! or the messages of one join of a channel) draws a random 64-bit base
//! from the operating system's CSPRNG when it is created and counts its
//! packets with a 64-bit counter `c`; packet `c` goes out with sequence
//! `c mod 2^32` and `stream_salt = base + (c >> 32)` ([`stream_salt`]).
//!
//! - Within a stream, `c` never repeats, and `c ↦ (base + (c >> 32), c mod
//!   2^32)` is injective, so the nonces differ (a sequence that wraps moves
//!   to the next salt).
//! - Two senders never share a subkey (the user id is in the HKDF info), nor
//!   do media and messages (the kind), two channels (the channel id) or two
//!   keys (the key id and the secret): equal nonces under different subkeys
//!   do not matter. Two senders with the same sequence numbers are therefore
//!   safe by construction.
//! - Two streams of one sender under one key (two tracks; a track published
//!   again; the app restarted and joined again with the same key; the same
//!   user id on two devices) have independent random bases: their nonce
//!   ranges overlap only if two 64-bit random values fall within each
//!   other's few wraps, about `n² / 2^64` for `n` streams: about 2^-44 for a
//!   thousand streams per user and key. No state has to survive a restart,
//!   and an edge cannot make a sender reuse a nonce: every input is the
//!   sender's own (the edge-assigned track key is only *bound*, not used).
//!
//! A message resent from the replay window goes out as the same sealed bytes
//! (same nonce, same plaintext, same associated data): nothing new is
//! revealed. `to_user`, which a replay to one member sets, is deliberately
//! not bound for that reason.
//!
//! # Associated data
//!
//! ```text
//! media:   the 29-byte media header (type, channel_id, track_key, sequence, timestamp_us)
//!          | key_id | stream_salt | len(track name) (1) | track name
//! message: channel_id (8) | seq (8) | sent_at_us (8) | key_id | stream_salt   (all BE)
//! ```
//!
//! The sender (its user id) is bound through the subkey.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN, TYPE_MEDIA};
use protocol::limits::{MAX_MEDIA_PAYLOAD, MAX_MESSAGE_PAYLOAD};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::SdkError;

/// Length of a channel key's secret.
pub const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
/// `key_id` and `stream_salt`, before the ciphertext.
pub const SEALED_HEADER_LEN: usize = 1 + 8;
/// Bytes a sealed payload adds to its plaintext.
pub const OVERHEAD: usize = SEALED_HEADER_LEN + TAG_LEN;
/// Largest media payload an end-to-end encrypted track can send.
pub const MAX_MEDIA_PLAINTEXT: usize = MAX_MEDIA_PAYLOAD - OVERHEAD;
/// Largest message an end-to-end encrypted channel can send.
pub const MAX_MESSAGE_PLAINTEXT: usize = MAX_MESSAGE_PAYLOAD - OVERHEAD;
/// Keys a channel holds at once (e.g. previous, current and next during a
/// rotation); installing another drops the oldest one not sent with.
pub const MAX_KEYS: usize = 3;
/// Distinct (sender, failure) pairs reported as events per channel; past
/// that, failures are only counted.
const MAX_REPORTED: usize = 256;
/// Senders whose subkeys are cached per channel before the cache is reset.
const MAX_CACHED_SENDERS: usize = 4_096;

const LABEL: &[u8] = b"rtn-e2ee/v1";
const MEDIA_AAD_FIXED: usize = MEDIA_HEADER_LEN + SEALED_HEADER_LEN;

/// Why a payload could not be opened, or sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum E2eeError {
    /// Sealed with a key id this client does not hold (a rotation it has not
    /// been given the key for, or no key at all yet).
    #[error("sealed with key id {0}, which this client does not hold")]
    UnknownKeyId(u8),
    /// Did not authenticate: a different key under the same id, or the
    /// payload or a bound header field (channel, track, sender, sequence,
    /// timestamp) was changed on the way.
    #[error("did not authenticate under key id {key_id} (wrong key, or tampered with)")]
    Rejected { key_id: u8 },
    /// Too short to be a sealed payload (the sender does not use end-to-end
    /// encryption?).
    #[error("not a sealed payload (sent without end-to-end encryption?)")]
    Malformed,
    /// Sending needs a key: give one with `Channel::set_key`.
    #[error("no key to seal with")]
    NoSendKey,
    /// The plaintext does not fit once sealed.
    #[error("a {len}-byte payload exceeds the {max} bytes that fit once sealed")]
    TooLarge { len: usize, max: usize },
}

impl From<E2eeError> for SdkError {
    fn from(e: E2eeError) -> Self {
        SdkError::E2ee(e)
    }
}

/// One channel key: a 32-byte secret and the small id that names it in
/// every payload sealed with it. The app's server generates it
/// ([`ChannelKey::generate`]) and hands it to the channel's members
/// alongside their join tokens, never to RTN. `Debug` does not show the
/// secret.
#[derive(Clone)]
pub struct ChannelKey {
    id: u8,
    secret: [u8; KEY_LEN],
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Drop for ChannelKey {
    fn drop(&mut self) {
        // Best effort: copies may live elsewhere (moves, the derived keys).
        self.secret = [0; KEY_LEN];
        std::hint::black_box(&self.secret);
    }
}

impl ChannelKey {
    pub fn new(id: u8, secret: [u8; KEY_LEN]) -> Self {
        ChannelKey { id, secret }
    }

    /// A fresh random key (the operating system's CSPRNG).
    pub fn generate(id: u8) -> Result<Self, SdkError> {
        let mut secret = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| SdkError::Invalid("the system random generator failed".into()))?;
        Ok(ChannelKey { id, secret })
    }

    pub fn id(&self) -> u8 {
        self.id
    }

    /// Parse the text form `<id>:<64 hex digits>` (e.g. from a flag or the
    /// app server's answer).
    pub fn parse(text: &str) -> Result<Self, SdkError> {
        let bad =
            || SdkError::Invalid("a channel key is `<id 0..=255>:<64 hex digits>`".to_string());
        let (id, hex) = text.trim().split_once(':').ok_or_else(bad)?;
        let id: u8 = id.parse().map_err(|_| bad())?;
        let hex = hex.as_bytes();
        if hex.len() != 2 * KEY_LEN {
            return Err(bad());
        }
        let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut secret = [0u8; KEY_LEN];
        for (i, pair) in hex.chunks(2).enumerate() {
            let (Some(hi), Some(lo)) = (nibble(pair[0]), nibble(pair[1])) else {
                return Err(bad());
            };
            secret[i] = hi << 4 | lo;
        }
        Ok(ChannelKey { id, secret })
    }

    /// The text form [`ChannelKey::parse`] reads. It contains the secret:
    /// send it only to the channel's members, over the app's own secure
    /// channel.
    pub fn to_text(&self) -> String {
        let mut s = format!("{}:", self.id);
        for b in self.secret {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// The keys a channel is joined with ([`crate::JoinOptions::e2ee`]).
#[derive(Clone, Debug, Default)]
pub struct E2eeKeys {
    keys: Vec<ChannelKey>,
    send: Option<u8>,
}

impl E2eeKeys {
    /// Seal with `key` and open what was sealed with it.
    pub fn new(key: ChannelKey) -> Self {
        E2eeKeys {
            send: Some(key.id),
            keys: vec![key],
        }
    }

    /// End-to-end encryption on, but no key yet (it comes later through
    /// `Channel::set_key`): nothing received opens, nothing can be sent.
    pub fn pending() -> Self {
        E2eeKeys::default()
    }

    /// Also open what was sealed with `key` (e.g. the previous key while a
    /// rotation is under way, or the next one ahead of it).
    pub fn also(mut self, key: ChannelKey) -> Self {
        self.keys.retain(|k| k.id != key.id);
        self.keys.insert(0, key);
        self
    }
}

impl From<ChannelKey> for E2eeKeys {
    fn from(key: ChannelKey) -> Self {
        E2eeKeys::new(key)
    }
}

/// The salt of packet `counter` of a stream whose random base is `base`
/// (see the module documentation: the salt moves on each time the 32-bit
/// sequence wraps).
pub fn stream_salt(base: u64, counter: u64) -> u64 {
    base.wrapping_add(counter >> 32)
}

/// A random 64-bit stream base from the operating system's CSPRNG.
pub fn random_base() -> u64 {
    let mut b = [0u8; 8];
    if SystemRandom::new().fill(&mut b).is_err() {
        // Never seen in practice; rand's thread generator is a CSPRNG too.
        return rand::random();
    }
    u64::from_be_bytes(b)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Media,
    Message,
}

impl Kind {
    fn label(self) -> &'static [u8] {
        match self {
            Kind::Media => b"media",
            Kind::Message => b"message",
        }
    }
}

struct Own {
    id: u8,
    media: LessSafeKey,
    message: LessSafeKey,
}

struct RingState {
    /// Installed keys, oldest first.
    keys: Vec<(u8, hkdf::Prk)>,
    send: Option<u8>,
    me: String,
    /// This client's subkeys for the send key.
    own: Option<Own>,
}

struct Cached {
    id: u8,
    kind: Kind,
    key: Arc<LessSafeKey>,
}

/// The end-to-end encryption state of one joined channel: its keys, which
/// one seals, the derived per-sender subkeys, and which failures were
/// already reported. Shared by the channel handle, its publishers, the
/// client's state machine and the media reader.
pub struct KeyRing {
    channel_id: u64,
    state: RwLock<RingState>,
    /// Receivers' subkeys by sender. Lock order: `state`, then `subkeys`.
    subkeys: RwLock<HashMap<String, Vec<Cached>>>,
    reported: Mutex<HashSet<(String, E2eeError)>>,
    any_reported: AtomicBool,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("channel_id", &format_args!("{:016x}", self.channel_id))
            .field("keys", &self.key_ids())
            .field("send", &self.send_key_id())
            .finish()
    }
}

fn extract(key: &ChannelKey) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, LABEL).extract(&key.secret)
}

fn derive(prk: &hkdf::Prk, kind: Kind, channel_id: u64, id: u8, user: &str) -> LessSafeKey {
    let channel = channel_id.to_be_bytes();
    let user_len = (user.len().min(u16::MAX as usize) as u16).to_be_bytes();
    let info: [&[u8]; 6] = [
        LABEL,
        kind.label(),
        &channel,
        &[id],
        &user_len,
        user.as_bytes(),
    ];
    // Expansion fails only for outputs over 255 hash lengths; 32 bytes is one.
    let okm = prk
        .expand(&info, &AES_256_GCM)
        .expect("HKDF-SHA256 expands 32 bytes");
    LessSafeKey::new(UnboundKey::from(okm))
}

fn nonce(salt: u64, sequence: u32) -> Nonce {
    let mut n = [0u8; aead::NONCE_LEN];
    n[..8].copy_from_slice(&salt.to_be_bytes());
    n[8..].copy_from_slice(&sequence.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn message_aad(channel_id: u64, seq: u64, sent_at_us: u64, sealed_header: &[u8]) -> [u8; 33] {
    let mut aad = [0u8; 24 + SEALED_HEADER_LEN];
    aad[..8].copy_from_slice(&channel_id.to_be_bytes());
    aad[8..16].copy_from_slice(&seq.to_be_bytes());
    aad[16..24].copy_from_slice(&sent_at_us.to_be_bytes());
    aad[24..].copy_from_slice(sealed_header);
    aad
}

/// `fixed` (header and sealed header) then the track name; returns the
/// buffer and the used length.
fn media_aad(fixed: &[u8], track: &str) -> ([u8; MEDIA_AAD_FIXED + 1 + 255], usize) {
    let name = &track.as_bytes()[..track.len().min(255)];
    let mut aad = [0u8; MEDIA_AAD_FIXED + 1 + 255];
    aad[..MEDIA_AAD_FIXED].copy_from_slice(&fixed[..MEDIA_AAD_FIXED]);
    aad[MEDIA_AAD_FIXED] = name.len() as u8;
    aad[MEDIA_AAD_FIXED + 1..][..name.len()].copy_from_slice(name);
    (aad, MEDIA_AAD_FIXED + 1 + name.len())
}

/// A sealed payload taken apart.
struct Parts<'a> {
    key_id: u8,
    salt: u64,
    ciphertext: &'a [u8],
    tag: aead::Tag,
}

fn split(sealed: &[u8]) -> Result<Parts<'_>, E2eeError> {
    if sealed.len() < OVERHEAD {
        return Err(E2eeError::Malformed);
    }
    let (head, rest) = sealed.split_at(SEALED_HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let salt = u64::from_be_bytes(head[1..9].try_into().map_err(|_| E2eeError::Malformed)?);
    Ok(Parts {
        key_id: head[0],
        salt,
        ciphertext,
        tag: aead::Tag::try_from(tag).map_err(|_| E2eeError::Malformed)?,
    })
}

impl KeyRing {
    /// The ring of channel `channel_id` for this client, user `me`.
    pub fn new(channel_id: u64, me: &str, keys: E2eeKeys) -> KeyRing {
        let ring = KeyRing {
            channel_id,
            state: RwLock::new(RingState {
                keys: vec![],
                send: None,
                me: me.to_string(),
                own: None,
            }),
            subkeys: RwLock::default(),
            reported: Mutex::default(),
            any_reported: AtomicBool::new(false),
        };
        for k in &keys.keys {
            ring.add_key(k);
        }
        if let Some(send) = keys.keys.iter().find(|k| Some(k.id) == keys.send) {
            ring.set_key(send);
        }
        ring
    }

    pub fn channel_id(&self) -> u64 {
        self.channel_id
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, RingState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, RingState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn clear_subkeys(&self) {
        self.subkeys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn refresh_own(&self, st: &mut RingState) {
        st.own = st.send.and_then(|id| {
            let (_, prk) = st.keys.iter().find(|(k, _)| *k == id)?;
            Some(Own {
                id,
                media: derive(prk, Kind::Media, self.channel_id, id, &st.me),
                message: derive(prk, Kind::Message, self.channel_id, id, &st.me),
            })
        });
    }

    /// Install `key` for opening (replacing a key of the same id). Past
    /// [`MAX_KEYS`], the oldest key not sent with is dropped.
    pub fn add_key(&self, key: &ChannelKey) {
        let mut st = self.write();
        st.keys.retain(|(id, _)| *id != key.id);
        st.keys.push((key.id, extract(key)));
        while st.keys.len() > MAX_KEYS {
            let send = st.send;
            let Some(i) = st.keys.iter().position(|(id, _)| Some(*id) != send) else {
                break;
            };
            st.keys.remove(i);
        }
        let send = st.send;
        if !st.keys.iter().any(|(id, _)| Some(*id) == send) {
            st.send = None;
        }
        self.refresh_own(&mut st);
        self.clear_subkeys();
    }

    /// Install `key` and seal everything sent from now on with it. The key
    /// sent with so far stays installed, so late packets sealed with it by
    /// others still open (the "previous" key of a rotation).
    pub fn set_key(&self, key: &ChannelKey) {
        self.add_key(key);
        let mut st = self.write();
        st.send = Some(key.id);
        self.refresh_own(&mut st);
    }

    /// Uninstall key `id`; true if it was installed. Removing the send key
    /// stops sending until the next `set_key`.
    pub fn remove_key(&self, id: u8) -> bool {
        let mut st = self.write();
        let before = st.keys.len();
        st.keys.retain(|(k, _)| *k != id);
        let removed = st.keys.len() != before;
        if st.send == Some(id) {
            st.send = None;
            st.own = None;
        }
        self.clear_subkeys();
        removed
    }

    /// Installed key ids, oldest first.
    pub fn key_ids(&self) -> Vec<u8> {
        self.read().keys.iter().map(|(id, _)| *id).collect()
    }

    /// The key id sealed with now.
    pub fn send_key_id(&self) -> Option<u8> {
        self.read().send
    }

    /// This client's user id changed (a rejoin with another user's token).
    pub(crate) fn set_me(&self, me: &str) {
        let mut st = self.write();
        if st.me != me {
            st.me = me.to_string();
            self.refresh_own(&mut st);
        }
    }

    /// Seal one media payload and return the whole datagram: `header`, then
    /// the sealed payload. `track` is the track's name; `salt` the stream
    /// salt of this packet ([`stream_salt`]), whose low 32 bits of counter
    /// are `header.sequence`.
    pub fn seal_media(
        &self,
        header: &MediaHeader,
        track: &str,
        salt: u64,
        payload: &[u8],
    ) -> Result<Bytes, E2eeError> {
        if payload.len() > MAX_MEDIA_PLAINTEXT {
            return Err(E2eeError::TooLarge {
                len: payload.len(),
                max: MAX_MEDIA_PLAINTEXT,
            });
        }
        let st = self.read();
        let own = st.own.as_ref().ok_or(E2eeError::NoSendKey)?;
        let mut out = Vec::with_capacity(MEDIA_AAD_FIXED + payload.len() + TAG_LEN);
        out.push(TYPE_MEDIA);
        out.extend_from_slice(&header.channel.0.to_be_bytes());
        out.extend_from_slice(&header.track.0.to_be_bytes());
        out.extend_from_slice(&header.sequence.to_be_bytes());
        out.extend_from_slice(&header.timestamp_us.to_be_bytes());
        out.push(own.id);
        out.extend_from_slice(&salt.to_be_bytes());
        out.extend_from_slice(payload);
        let (aad, aad_len) = media_aad(&out, track);
        let tag = own
            .media
            .seal_in_place_separate_tag(
                nonce(salt, header.sequence),
                Aad::from(&aad[..aad_len]),
                &mut out[MEDIA_AAD_FIXED..],
            )
            .map_err(|_| E2eeError::TooLarge {
                len: payload.len(),
                max: MAX_MEDIA_PLAINTEXT,
            })?;
        out.extend_from_slice(tag.as_ref());
        Ok(Bytes::from(out))
    }

    /// Open the payload of a media datagram (`datagram`: header and sealed
    /// payload, already checked by `MediaHeader::decode`) that the edge says
    /// `sender` sent on its track named `track`.
    pub fn open_media(
        &self,
        datagram: &[u8],
        sender: &str,
        track: &str,
    ) -> Result<Bytes, E2eeError> {
        if datagram.len() < MEDIA_HEADER_LEN {
            return Err(E2eeError::Malformed);
        }
        let p = split(&datagram[MEDIA_HEADER_LEN..])?;
        let key = self.subkey(sender, p.key_id, Kind::Media)?;
        let sequence = u32::from_be_bytes(
            datagram[17..21]
                .try_into()
                .map_err(|_| E2eeError::Malformed)?,
        );
        let (aad, aad_len) = media_aad(datagram, track);
        let mut buf = p.ciphertext.to_vec();
        key.open_in_place_separate_tag(
            nonce(p.salt, sequence),
            Aad::from(&aad[..aad_len]),
            p.tag,
            &mut buf,
            0..,
        )
        .map_err(|_| E2eeError::Rejected { key_id: p.key_id })?;
        Ok(Bytes::from(buf))
    }

    /// Seal the body of this client's message `seq` sent at `sent_at_us`;
    /// `base` is the random base of this channel's message stream.
    pub fn seal_message(
        &self,
        seq: u64,
        sent_at_us: u64,
        base: u64,
        body: &[u8],
    ) -> Result<Bytes, E2eeError> {
        if body.len() > MAX_MESSAGE_PLAINTEXT {
            return Err(E2eeError::TooLarge {
                len: body.len(),
                max: MAX_MESSAGE_PLAINTEXT,
            });
        }
        let st = self.read();
        let own = st.own.as_ref().ok_or(E2eeError::NoSendKey)?;
        let salt = stream_salt(base, seq);
        let mut out = Vec::with_capacity(OVERHEAD + body.len());
        out.push(own.id);
        out.extend_from_slice(&salt.to_be_bytes());
        out.extend_from_slice(body);
        let aad = message_aad(self.channel_id, seq, sent_at_us, &out[..SEALED_HEADER_LEN]);
        let tag = own
            .message
            .seal_in_place_separate_tag(
                nonce(salt, seq as u32),
                Aad::from(&aad[..]),
                &mut out[SEALED_HEADER_LEN..],
            )
            .map_err(|_| E2eeError::TooLarge {
                len: body.len(),
                max: MAX_MESSAGE_PLAINTEXT,
            })?;
        out.extend_from_slice(tag.as_ref());
        Ok(Bytes::from(out))
    }

    /// Open the body of message `seq` that the edge says `sender` sent.
    pub fn open_message(
        &self,
        sender: &str,
        seq: u64,
        sent_at_us: u64,
        sealed: &[u8],
    ) -> Result<Bytes, E2eeError> {
        let p = split(sealed)?;
        let key = self.subkey(sender, p.key_id, Kind::Message)?;
        let aad = message_aad(
            self.channel_id,
            seq,
            sent_at_us,
            &sealed[..SEALED_HEADER_LEN],
        );
        let mut buf = p.ciphertext.to_vec();
        key.open_in_place_separate_tag(
            nonce(p.salt, seq as u32),
            Aad::from(&aad[..]),
            p.tag,
            &mut buf,
            0..,
        )
        .map_err(|_| E2eeError::Rejected { key_id: p.key_id })?;
        Ok(Bytes::from(buf))
    }

    /// `sender`'s subkey of `kind` under key `id`, derived once and cached.
    fn subkey(&self, sender: &str, id: u8, kind: Kind) -> Result<Arc<LessSafeKey>, E2eeError> {
        {
            let cache = self.subkeys.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache
                .get(sender)
                .and_then(|v| v.iter().find(|c| c.id == id && c.kind == kind))
            {
                return Ok(c.key.clone());
            }
        }
        // Derive under the state lock so that a key change cannot slip in
        // between (it clears the cache while holding that lock).
        let st = self.read();
        let (_, prk) = st
            .keys
            .iter()
            .find(|(k, _)| *k == id)
            .ok_or(E2eeError::UnknownKeyId(id))?;
        let key = Arc::new(derive(prk, kind, self.channel_id, id, sender));
        let mut cache = self.subkeys.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_SENDERS && !cache.contains_key(sender) {
            cache.clear();
        }
        cache.entry(sender.to_string()).or_default().push(Cached {
            id,
            kind,
            key: key.clone(),
        });
        Ok(key)
    }

    /// Record a failure to open something `sender` sent; true the first
    /// time this (sender, failure) is seen since the sender's last payload
    /// that opened, i.e. when it is worth an event.
    pub(crate) fn note_failure(&self, sender: &str, e: E2eeError) -> bool {
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() >= MAX_REPORTED {
            return false;
        }
        let new = r.insert((sender.to_string(), e));
        self.any_reported.store(true, Ordering::Relaxed);
        new
    }

    /// A payload of `sender` opened: its failures may be reported again.
    pub(crate) fn note_success(&self, sender: &str) {
        if !self.any_reported.load(Ordering::Relaxed) {
            return;
        }
        let mut r = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        r.retain(|(s, _)| s != sender);
        self.any_reported.store(!r.is_empty(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ChannelId, TrackKey};

    const CH: u64 = 0x963c_4168_00b6_7c5b;

    fn key(id: u8, fill: u8) -> ChannelKey {
        ChannelKey::new(id, [fill; KEY_LEN])
    }

    fn ring(me: &str, k: ChannelKey) -> KeyRing {
        KeyRing::new(CH, me, E2eeKeys::new(k))
    }

    fn header(seq: u32) -> MediaHeader {
        MediaHeader {
            channel: ChannelId(CH),
            track: TrackKey(7 << 32 | 1),
            sequence: seq,
            timestamp_us: 1_800_000_000_000_000,
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The fixed vectors of the browser SDK's tests (sdk-js/test/e2ee.test.ts,
    /// computed there with WebCrypto and independently with Python's
    /// `cryptography` from docs/e2ee.md): sealing here gives the same bytes
    /// and opening here reads theirs, so the two SDKs interoperate.
    #[test]
    fn the_browser_sdk_vectors_seal_and_open_alike() {
        const MEDIA: &str = "01963c416800b67c5b00000007000000010000002a000665172898800001000000000000006302659caafcfd038dedbf7802a8bf0eee7732025e1802fb1cca47";
        const MESSAGE: &str = "03000000000000004d47bd8e5a8ac8237b8a3fbeb7cd8c246caaa570f030";
        const MESSAGE_WRAP: &str = "030000000000000000398085222ff9f97c1d5f30d593c0419533c92951";
        let media = ring("alice", key(1, 7))
            .seal_media(&header(42), "mic", 99, b"opus frame")
            .unwrap();
        assert_eq!(media[..], hex(MEDIA)[..]);
        let message = ring("alice", key(3, 9))
            .seal_message(5, 1234, 77, b"hello")
            .unwrap();
        assert_eq!(message[..], hex(MESSAGE)[..]);
        let wrap = ring("bob", key(3, 9))
            .seal_message((1 << 32) + 5, 1234, u64::MAX, b"wrap")
            .unwrap();
        assert_eq!(wrap[..], hex(MESSAGE_WRAP)[..]);
        let bob = ring("bob", key(1, 7));
        assert_eq!(
            &bob.open_media(&hex(MEDIA), "alice", "mic").unwrap()[..],
            b"opus frame"
        );
        let carol = ring("carol", key(3, 9));
        assert_eq!(
            &carol.open_message("alice", 5, 1234, &hex(MESSAGE)).unwrap()[..],
            b"hello"
        );
        assert_eq!(
            &carol
                .open_message("bob", (1 << 32) + 5, 1234, &hex(MESSAGE_WRAP))
                .unwrap()[..],
            b"wrap"
        );
    }

    #[test]
    fn media_round_trip_keeps_the_header_in_clear() {
        let (alice, bob) = (ring("alice", key(1, 7)), ring("bob", key(1, 7)));
        let d = alice
            .seal_media(&header(42), "mic", 99, b"opus frame")
            .unwrap();
        assert_eq!(d.len(), MEDIA_HEADER_LEN + OVERHEAD + 10);
        // The edge's view: the same header as a plain datagram, a valid one.
        assert_eq!(&d[..MEDIA_HEADER_LEN], &header(42).encode(b"").unwrap()[..]);
        assert_eq!(MediaHeader::decode(&d).unwrap(), header(42));
        assert_eq!(d[MEDIA_HEADER_LEN], 1, "key id in clear");
        assert!(!d.windows(10).any(|w| w == b"opus frame"));
        let p = bob.open_media(&d, "alice", "mic").unwrap();
        assert_eq!(&p[..], b"opus frame");
        // Empty payloads too.
        let d = alice.seal_media(&header(43), "mic", 99, b"").unwrap();
        assert_eq!(&bob.open_media(&d, "alice", "mic").unwrap()[..], b"");
    }

    #[test]
    fn message_round_trip() {
        let (alice, bob) = (ring("alice", key(3, 9)), ring("bob", key(3, 9)));
        let s = alice.seal_message(5, 1234, 77, b"hello").unwrap();
        assert_eq!(s.len(), 5 + OVERHEAD);
        assert_eq!(
            &bob.open_message("alice", 5, 1234, &s).unwrap()[..],
            b"hello"
        );
    }

    #[test]
    fn tampered_payload_or_tag_is_rejected() {
        let (alice, bob) = (ring("alice", key(1, 7)), ring("bob", key(1, 7)));
        let d = alice.seal_media(&header(1), "mic", 5, b"payload").unwrap();
        for i in MEDIA_HEADER_LEN + 1..d.len() {
            let mut t = d.to_vec();
            t[i] ^= 0x01;
            let want = E2eeError::Rejected { key_id: 1 };
            assert_eq!(bob.open_media(&t, "alice", "mic"), Err(want), "byte {i}");
        }
        let s = alice.seal_message(1, 10, 5, b"body").unwrap();
        for i in 1..s.len() {
            let mut t = s.to_vec();
            t[i] ^= 0x80;
            assert!(bob.open_message("alice", 1, 10, &t).is_err(), "byte {i}");
        }
    }

    #[test]
    fn every_bound_media_field_is_checked() {
        let (alice, bob) = (ring("alice", key(1, 7)), ring("bob", key(1, 7)));
        let d = alice.seal_media(&header(9), "mic", 5, b"payload").unwrap();
        let rejected = Err(E2eeError::Rejected { key_id: 1 });
        // Every header byte: type, channel, track key, sequence, timestamp.
        for i in 0..MEDIA_HEADER_LEN {
            let mut t = d.to_vec();
            t[i] ^= 0x01;
            assert_eq!(bob.open_media(&t, "alice", "mic"), rejected, "byte {i}");
        }
        // Another sender (the edge announces the track as someone else's).
        assert_eq!(bob.open_media(&d, "mallory", "mic"), rejected);
        // Another track name of the same sender.
        assert_eq!(bob.open_media(&d, "alice", "cam"), rejected);
        // Another channel with the same key.
        let other = KeyRing::new(CH ^ 1, "bob", E2eeKeys::new(key(1, 7)));
        assert_eq!(other.open_media(&d, "alice", "mic"), rejected);
        assert!(bob.open_media(&d, "alice", "mic").is_ok());
    }

    #[test]
    fn every_bound_message_field_is_checked() {
        let (alice, bob) = (ring("alice", key(1, 7)), ring("bob", key(1, 7)));
        let s = alice.seal_message(8, 1000, 5, b"body").unwrap();
        let rejected = Err(E2eeError::Rejected { key_id: 1 });
        assert_eq!(bob.open_message("mallory", 8, 1000, &s), rejected);
        assert_eq!(bob.open_message("alice", 9, 1000, &s), rejected);
        assert_eq!(bob.open_message("alice", 8 + (1 << 32), 1000, &s), rejected);
        assert_eq!(bob.open_message("alice", 8, 1001, &s), rejected);
        let other = KeyRing::new(CH ^ 1, "bob", E2eeKeys::new(key(1, 7)));
        assert_eq!(other.open_message("alice", 8, 1000, &s), rejected);
        // A media subkey never opens a message and vice versa.
        let mut as_media = header(8).encode(b"").unwrap().to_vec();
        as_media.extend_from_slice(&s);
        assert!(bob.open_media(&as_media, "alice", "mic").is_err());
        assert!(bob.open_message("alice", 8, 1000, &s).is_ok());
    }

    #[test]
    fn wrong_key_unknown_key_id_and_short_payloads() {
        let alice = ring("alice", key(1, 7));
        let d = alice.seal_media(&header(1), "mic", 5, b"payload").unwrap();
        let s = alice.seal_message(1, 1, 5, b"payload").unwrap();
        let wrong = ring("carol", key(1, 8));
        assert_eq!(
            wrong.open_media(&d, "alice", "mic"),
            Err(E2eeError::Rejected { key_id: 1 })
        );
        assert_eq!(
            wrong.open_message("alice", 1, 1, &s),
            Err(E2eeError::Rejected { key_id: 1 })
        );
        let other_id = ring("dave", key(2, 7));
        assert_eq!(
            other_id.open_media(&d, "alice", "mic"),
            Err(E2eeError::UnknownKeyId(1))
        );
        let keyless = KeyRing::new(CH, "erin", E2eeKeys::pending());
        assert_eq!(
            keyless.open_message("alice", 1, 1, &s),
            Err(E2eeError::UnknownKeyId(1))
        );
        assert_eq!(
            keyless.seal_message(1, 1, 5, b"x"),
            Err(E2eeError::NoSendKey)
        );
        assert_eq!(
            keyless.open_message("alice", 1, 1, &s[..OVERHEAD - 1]),
            Err(E2eeError::Malformed)
        );
        // A plain datagram (a sender without e2ee) is too short or garbage.
        let plain = header(1).encode(b"hi").unwrap();
        assert_eq!(
            alice.open_media(&plain, "bob", "mic"),
            Err(E2eeError::Malformed)
        );
    }

    #[test]
    fn rotation_with_two_keys() {
        let (k1, k2) = (key(1, 0x11), key(2, 0x22));
        let alice = ring("alice", k1.clone());
        let bob = ring("bob", k1.clone());
        let old = alice.seal_message(1, 1, 5, b"under k1").unwrap();
        // Phase 1: everyone installs k2 for opening; still sealing with k1.
        bob.add_key(&k2);
        alice.add_key(&k2);
        assert_eq!(alice.send_key_id(), Some(1));
        // Phase 2: alice switches; bob still seals with k1.
        alice.set_key(&k2);
        assert_eq!(alice.send_key_id(), Some(2));
        let new = alice.seal_message(2, 2, 5, b"under k2").unwrap();
        assert_eq!(new[0], 2);
        assert_eq!(
            &bob.open_message("alice", 1, 1, &old).unwrap()[..],
            b"under k1"
        );
        assert_eq!(
            &bob.open_message("alice", 2, 2, &new).unwrap()[..],
            b"under k2"
        );
        let from_bob = bob.seal_message(1, 1, 6, b"bob, k1").unwrap();
        assert_eq!(
            &alice.open_message("bob", 1, 1, &from_bob).unwrap()[..],
            b"bob, k1"
        );
        // Phase 3: the old key goes.
        assert!(bob.remove_key(1));
        assert_eq!(bob.send_key_id(), None);
        assert_eq!(
            bob.open_message("alice", 1, 1, &old),
            Err(E2eeError::UnknownKeyId(1))
        );
        assert!(bob.open_message("alice", 2, 2, &new).is_ok());
        // A key replaced under the same id no longer opens the old payloads.
        bob.add_key(&key(2, 0x33));
        assert_eq!(
            bob.open_message("alice", 2, 2, &new),
            Err(E2eeError::Rejected { key_id: 2 })
        );
    }

    #[test]
    fn the_ring_holds_at_most_max_keys_and_keeps_the_send_key() {
        let r = ring("alice", key(1, 1));
        for id in 2..=5 {
            r.add_key(&key(id, id));
        }
        assert_eq!(r.key_ids().len(), MAX_KEYS);
        assert!(r.key_ids().contains(&1), "{:?}", r.key_ids());
        assert_eq!(r.send_key_id(), Some(1));
        assert!(r.seal_message(1, 1, 1, b"x").is_ok());
        let keys = E2eeKeys::new(key(9, 9)).also(key(8, 8));
        let r = KeyRing::new(CH, "a", keys);
        assert_eq!(r.key_ids(), vec![8, 9]);
        assert_eq!(r.send_key_id(), Some(9));
    }

    #[test]
    fn nonces_are_unique_across_senders_streams_and_wraps() {
        // Two senders, same key, same header, same salt, same plaintext:
        // different subkeys, so different ciphertexts (no shared keystream).
        let k = key(1, 7);
        let (alice, bob) = (ring("alice", k.clone()), ring("bob", k.clone()));
        let zeros = [0u8; 64];
        let a = alice.seal_media(&header(1), "mic", 5, &zeros).unwrap();
        let b = bob.seal_media(&header(1), "mic", 5, &zeros).unwrap();
        assert_ne!(a[MEDIA_AAD_FIXED..], b[MEDIA_AAD_FIXED..]);
        // Media and messages of one sender use different subkeys too.
        let m = alice.seal_message(1, 0, 5, &zeros).unwrap();
        assert_ne!(
            a[MEDIA_AAD_FIXED..MEDIA_AAD_FIXED + 64],
            m[SEALED_HEADER_LEN..SEALED_HEADER_LEN + 64]
        );
        // Within a stream: the salt moves on when the sequence wraps, so
        // (salt, sequence) never repeats over 2^32 and beyond.
        let base = u64::MAX - 1;
        let mut seen = HashSet::new();
        for c in [0, 1, u32::MAX as u64, 1 << 32, (1 << 32) + 1, 3 << 32] {
            assert!(seen.insert((stream_salt(base, c), c as u32)), "counter {c}");
        }
        // Fresh streams draw fresh bases.
        let bases: HashSet<u64> = (0..1000).map(|_| random_base()).collect();
        assert_eq!(bases.len(), 1000);
    }

    #[test]
    fn failures_are_reported_once_until_the_sender_recovers() {
        let r = ring("bob", key(1, 1));
        let e = E2eeError::UnknownKeyId(2);
        assert!(r.note_failure("alice", e));
        assert!(!r.note_failure("alice", e));
        assert!(r.note_failure("carol", e));
        assert!(r.note_failure("alice", E2eeError::Malformed));
        r.note_success("alice");
        assert!(r.note_failure("alice", e));
        assert!(!r.note_failure("carol", e));
    }

    #[test]
    fn key_text_form() {
        let k = ChannelKey::generate(4).unwrap();
        let text = k.to_text();
        assert!(text.starts_with("4:") && text.len() == 2 + 64);
        let back = ChannelKey::parse(&text).unwrap();
        assert_eq!((back.id, back.secret), (k.id, k.secret));
        assert!(!format!("{k:?}").contains(&text[2..10]));
        for bad in [
            "",
            "4",
            "4:00",
            "256:",
            "x:00",
            &format!("1:{}", "g".repeat(64)),
        ] {
            assert!(ChannelKey::parse(bad).is_err(), "{bad}");
        }
        assert!(ChannelKey::parse(&format!("1:{}", "Ab".repeat(32))).is_ok());
    }
}
