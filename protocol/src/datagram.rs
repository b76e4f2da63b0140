//! QUIC datagram codecs: media between a client and its edge, and relayed
//! media between edges. All integers are big-endian.
//!
//! Media datagram (client -> edge, edge -> client, and embedded in relay
//! datagrams), [`MEDIA_HEADER_LEN`] = 29 bytes of header:
//!
//! ```text
//! offset size field
//! 0      1    type          0x01 (MEDIA)
//! 1      8    channel_id    ChannelId (see ids.rs)
//! 9      8    track_key     TrackKey from TrackPublished / TrackAvailable
//! 17     4    sequence      per track, wraps at 2^32
//! 21     8    timestamp_us  sender's wall clock, microseconds since the epoch
//! 29     n    payload       0..=MAX_MEDIA_PAYLOAD bytes (opaque, may be
//!                           end-to-end encrypted by the SDK)
//! ```
//!
//! An edge forwards a subscriber the very bytes the publisher sent (after
//! checking the header): there is no per-subscriber rewrite.
//!
//! Relay datagram (edge -> edge), header of 7 + 6N bytes:
//!
//! ```text
//! offset  size field
//! 0       1    type         0x81 (RELAY_MEDIA)
//! 1       4    origin_edge  ingress edge of the packet
//! 5       1    hop_limit    decremented by each relay; 0 on arrival = drop
//! 6       1    node_count   N, 1..=MAX_TREE_NODES
//! 7       6N   route tree   subtree rooted at the receiving edge (route_tree.rs)
//! 7+6N    ...  media        a whole media datagram, starting with 0x01
//! ```
//!
//! Relay media copy (edge -> edge, type `0x86`, RELAY_MEDIA_COPY): the same
//! layout as RELAY_MEDIA, for a second copy of a packet that is also on
//! its way along the best path. An edge sends one when the next hop of
//! that path looks dead but is not known to be (its relay connection has
//! stopped answering for a little over a round trip): the copy goes around
//! the hop by the sender's own routes, and whichever copy arrives first is
//! delivered. A copy is forwarded as a copy, never copied again, and never
//! NACKed or counted in a link's loss (it is not part of the link's
//! sequence of originals); receivers deliver the first of the two and drop
//! the other.
//!
//! Probe and probe reply (edge -> edge, on relay links), 17 bytes:
//!
//! ```text
//! offset size field
//! 0      1    type        0x82 (PROBE) or 0x83 (PROBE_REPLY)
//! 1      8    seq         prober's sequence number
//! 9      8    sent_at_us  prober's monotonic clock, microseconds
//! ```
//!
//! The receiver of a PROBE answers at once with a PROBE_REPLY carrying the
//! same two fields, on the connection the probe came in on. Probes ride
//! datagrams, not the relay stream, so that a lost probe is lost (as media
//! would be) instead of being retransmitted into an inflated RTT sample.
//!
//! NACK (client -> edge, edge -> client: 0x04; edge -> edge: 0x84), header
//! of 18 bytes plus 6 per range ([`Nack`]):
//!
//! ```text
//! offset size field
//! 0      1    type          0x04 (NACK) or 0x84 (RELAY_NACK)
//! 1      8    channel_id    the channel of the track
//! 9      8    track_key     the track whose packets are missing
//! 17     1    range_count   N, 1..=MAX_NACK_RANGES
//! 18     6N   ranges        each: first u32, mask u16 -- asks for `first`
//!                           and `first + 1 + i` for every bit i set in
//!                           `mask` (bit 0 least significant), as RTCP's
//!                           generic NACK does (RFC 4585 §6.2.1)
//! ```
//!
//! A NACK asks the previous hop of the link it arrives on to send the named
//! packets of the track again: the receiver of media sends it back the way
//! the media came (a relay link's receiving edge to the sending edge, a
//! subscriber to its edge, an edge to its publishing client). The answer is
//! the very media (or relay) datagram sent before, once, if it is still
//! held and can still arrive in time; otherwise nothing. NACKs are
//! datagrams: a lost NACK is asked again after a round trip.
//!
//! Unknown type bytes are refused: a future version changes the ALPN.

use bytes::{BufMut, Bytes, BytesMut};

use crate::ids::{ChannelId, EdgeId, TrackKey};
use crate::limits::{MAX_MEDIA_PAYLOAD, MAX_TREE_NODES};
use crate::route_tree::{RouteTree, TreeError, NODE_LEN};

pub const TYPE_MEDIA: u8 = 0x01;
pub const TYPE_RELAY_MEDIA: u8 = 0x81;
pub const TYPE_PROBE: u8 = 0x82;
pub const TYPE_PROBE_REPLY: u8 = 0x83;
pub const TYPE_NACK: u8 = 0x04;
pub const TYPE_RELAY_NACK: u8 = 0x84;
pub const TYPE_RELAY_MEDIA_COPY: u8 = 0x86;
pub const NACK_FIXED_LEN: usize = 18;
pub const NACK_RANGE_LEN: usize = 6;
/// Most ranges in one NACK: up to 272 packets, in 114 bytes.
pub const MAX_NACK_RANGES: usize = 16;
pub const PROBE_LEN: usize = 17;
pub const MEDIA_HEADER_LEN: usize = 29;
pub const RELAY_FIXED_LEN: usize = 7;
/// Largest media datagram.
pub const MAX_MEDIA_DATAGRAM: usize = MEDIA_HEADER_LEN + MAX_MEDIA_PAYLOAD;
/// Largest relay datagram.
pub const MAX_RELAY_DATAGRAM: usize =
    RELAY_FIXED_LEN + MAX_TREE_NODES * NODE_LEN + MAX_MEDIA_DATAGRAM;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DatagramError {
    #[error("datagram of {0} bytes is shorter than its header")]
    Short(usize),
    #[error("unknown datagram type 0x{0:02x}")]
    UnknownType(u8),
    #[error("media payload of {0} bytes exceeds the limit of {MAX_MEDIA_PAYLOAD}")]
    PayloadTooLarge(usize),
    #[error("bad route tree: {0}")]
    Tree(#[from] TreeError),
    #[error("NACK with {0} ranges: 1..={MAX_NACK_RANGES} expected")]
    NackRanges(usize),
    #[error("NACK of {len} bytes does not match its {ranges} ranges")]
    NackLength { len: usize, ranges: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaHeader {
    pub channel: ChannelId,
    pub track: TrackKey,
    pub sequence: u32,
    pub timestamp_us: u64,
}

impl MediaHeader {
    /// Parse and check a media datagram; the payload is `&d[MEDIA_HEADER_LEN..]`.
    pub fn decode(d: &[u8]) -> Result<Self, DatagramError> {
        if d.len() < MEDIA_HEADER_LEN {
            return Err(DatagramError::Short(d.len()));
        }
        if d[0] != TYPE_MEDIA {
            return Err(DatagramError::UnknownType(d[0]));
        }
        let payload = d.len() - MEDIA_HEADER_LEN;
        if payload > MAX_MEDIA_PAYLOAD {
            return Err(DatagramError::PayloadTooLarge(payload));
        }
        let u64_at = |i: usize| u64::from_be_bytes(d[i..i + 8].try_into().unwrap_or([0; 8]));
        Ok(MediaHeader {
            channel: ChannelId(u64_at(1)),
            track: TrackKey(u64_at(9)),
            sequence: u32::from_be_bytes(d[17..21].try_into().unwrap_or([0; 4])),
            timestamp_us: u64_at(21),
        })
    }

    pub fn encode(&self, payload: &[u8]) -> Result<Bytes, DatagramError> {
        if payload.len() > MAX_MEDIA_PAYLOAD {
            return Err(DatagramError::PayloadTooLarge(payload.len()));
        }
        let mut out = BytesMut::with_capacity(MEDIA_HEADER_LEN + payload.len());
        self.write(&mut out);
        out.put_slice(payload);
        Ok(out.freeze())
    }

    fn write(&self, out: &mut BytesMut) {
        out.put_u8(TYPE_MEDIA);
        out.put_u64(self.channel.0);
        out.put_u64(self.track.0);
        out.put_u32(self.sequence);
        out.put_u64(self.timestamp_us);
    }
}

/// A decoded relay datagram. `media` is a zero-copy slice of the received
/// datagram holding the embedded media datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayDatagram {
    /// A second copy around a suspect hop (type 0x86), not the original.
    pub copy: bool,
    pub origin: EdgeId,
    pub hop_limit: u8,
    pub tree: RouteTree,
    pub header: MediaHeader,
    pub media: Bytes,
}

impl RelayDatagram {
    pub fn decode(d: Bytes) -> Result<Self, DatagramError> {
        if d.len() < RELAY_FIXED_LEN {
            return Err(DatagramError::Short(d.len()));
        }
        let copy = match d[0] {
            TYPE_RELAY_MEDIA => false,
            TYPE_RELAY_MEDIA_COPY => true,
            other => return Err(DatagramError::UnknownType(other)),
        };
        let origin = u32::from_be_bytes([d[1], d[2], d[3], d[4]]);
        let hop_limit = d[5];
        let count = d[6] as usize;
        let tree = RouteTree::decode(&d[RELAY_FIXED_LEN..], count)?;
        let media_at = RELAY_FIXED_LEN + count * NODE_LEN;
        let header = MediaHeader::decode(&d[media_at..])?;
        Ok(RelayDatagram {
            copy,
            origin,
            hop_limit,
            tree,
            header,
            media: d.slice(media_at..),
        })
    }
}

/// Build the relay datagram that carries `media` along `tree` (the subtree
/// rooted at the next hop).
pub fn encode_relay(origin: EdgeId, hop_limit: u8, tree: &RouteTree, media: &[u8]) -> Bytes {
    encode_relay_typed(TYPE_RELAY_MEDIA, origin, hop_limit, tree, media)
}

/// The same as [`encode_relay`], marked as the second copy around a
/// suspect hop (type 0x86).
pub fn encode_relay_copy(origin: EdgeId, hop_limit: u8, tree: &RouteTree, media: &[u8]) -> Bytes {
    encode_relay_typed(TYPE_RELAY_MEDIA_COPY, origin, hop_limit, tree, media)
}

fn encode_relay_typed(
    ty: u8,
    origin: EdgeId,
    hop_limit: u8,
    tree: &RouteTree,
    media: &[u8],
) -> Bytes {
    let mut head = Vec::with_capacity(RELAY_FIXED_LEN + tree.len() * NODE_LEN + media.len());
    head.push(ty);
    head.extend_from_slice(&origin.to_be_bytes());
    head.push(hop_limit);
    head.push(tree.len() as u8);
    tree.encode_into(&mut head);
    head.extend_from_slice(media);
    Bytes::from(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header() -> MediaHeader {
        MediaHeader {
            channel: ChannelId(0x0102030405060708),
            track: TrackKey::new(3, 9),
            sequence: 77,
            timestamp_us: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn media_layout_matches_the_spec() {
        let d = header().encode(b"hi").unwrap();
        assert_eq!(d.len(), MEDIA_HEADER_LEN + 2);
        assert_eq!(d[0], 0x01);
        assert_eq!(&d[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&d[9..17], &[0, 0, 0, 3, 0, 0, 0, 9]);
        assert_eq!(&d[17..21], &[0, 0, 0, 77]);
        assert_eq!(&d[29..], b"hi");
        assert_eq!(MediaHeader::decode(&d).unwrap(), header());
    }

    #[test]
    fn bad_media_is_refused() {
        assert_eq!(MediaHeader::decode(&[1; 10]), Err(DatagramError::Short(10)));
        let mut d = header().encode(b"").unwrap().to_vec();
        d[0] = 0x7f;
        assert_eq!(
            MediaHeader::decode(&d),
            Err(DatagramError::UnknownType(0x7f))
        );
        let big = vec![0; MAX_MEDIA_PAYLOAD + 1];
        assert!(matches!(
            header().encode(&big),
            Err(DatagramError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn relay_round_trip_is_zero_copy() {
        let media = header().encode(b"payload").unwrap();
        let tree = RouteTree::build(5, &[&[5, 6], &[5, 7]]).remove(0);
        let wire = encode_relay(2, 4, &tree, &media);
        let r = RelayDatagram::decode(wire.clone()).unwrap();
        assert_eq!((r.origin, r.hop_limit, r.copy), (2, 4, false));
        assert_eq!(r.tree, tree);
        assert_eq!(r.media, media);
        assert_eq!(r.header, header());
        // The media slice points into the received buffer.
        assert_eq!(r.media.as_ptr(), wire[wire.len() - media.len()..].as_ptr());
        // A copy differs in its type byte only.
        let copy = encode_relay_copy(2, 4, &tree, &media);
        assert_eq!(copy[0], TYPE_RELAY_MEDIA_COPY);
        assert_eq!(copy[1..], wire[1..]);
        let c = RelayDatagram::decode(copy).unwrap();
        assert!(c.copy);
        assert_eq!(RelayDatagram { copy: false, ..c }, r);
    }

    proptest! {
        #[test]
        fn media_round_trip(ch: u64, tk: u64, seq: u32, ts: u64,
                            payload in proptest::collection::vec(any::<u8>(), 0..=MAX_MEDIA_PAYLOAD)) {
            let h = MediaHeader { channel: ChannelId(ch), track: TrackKey(tk), sequence: seq, timestamp_us: ts };
            let d = h.encode(&payload).unwrap();
            prop_assert_eq!(MediaHeader::decode(&d).unwrap(), h);
            prop_assert_eq!(&d[MEDIA_HEADER_LEN..], payload.as_slice());
        }

        #[test]
        fn decoders_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let _ = MediaHeader::decode(&data);
            let _ = RelayDatagram::decode(Bytes::from(data));
        }
    }
}

/// A NACK (see the module docs for the layout): the packets of one track
/// a receiver asks its previous hop to send again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nack {
    /// On a relay link (type 0x84) rather than a client link (0x04).
    pub relay: bool,
    pub channel: ChannelId,
    pub track: TrackKey,
    /// The sequence numbers asked for, each once, in the order the ranges
    /// first name them (ranges may overlap: asking twice is asking once).
    pub seqs: Vec<u32>,
}

impl Nack {
    pub fn decode(d: &[u8]) -> Result<Self, DatagramError> {
        if d.len() < NACK_FIXED_LEN {
            return Err(DatagramError::Short(d.len()));
        }
        let relay = match d[0] {
            TYPE_NACK => false,
            TYPE_RELAY_NACK => true,
            t => return Err(DatagramError::UnknownType(t)),
        };
        let ranges = d[17] as usize;
        if !(1..=MAX_NACK_RANGES).contains(&ranges) {
            return Err(DatagramError::NackRanges(ranges));
        }
        if d.len() != NACK_FIXED_LEN + ranges * NACK_RANGE_LEN {
            return Err(DatagramError::NackLength {
                len: d.len(),
                ranges,
            });
        }
        let u64_at = |i: usize| u64::from_be_bytes(d[i..i + 8].try_into().unwrap_or([0; 8]));
        let mut seqs = Vec::with_capacity(ranges * 17);
        for r in d[NACK_FIXED_LEN..].chunks_exact(NACK_RANGE_LEN) {
            let first = u32::from_be_bytes([r[0], r[1], r[2], r[3]]);
            let mask = u16::from_be_bytes([r[4], r[5]]);
            seqs.push(first);
            seqs.extend(
                (0..16)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| first.wrapping_add(1 + i)),
            );
        }
        // Overlapping ranges would otherwise ask for (and be answered with)
        // one packet several times.
        let mut seen = std::collections::HashSet::with_capacity(seqs.len());
        seqs.retain(|s| seen.insert(*s));
        Ok(Nack {
            relay,
            channel: ChannelId(u64_at(1)),
            track: TrackKey(u64_at(9)),
            seqs,
        })
    }

    /// The NACK datagrams that ask for `seqs` (in that order, each sequence
    /// at most [`MAX_NACK_RANGES`] ranges per datagram): a range starts at
    /// a sequence and covers the 16 that follow it.
    pub fn encode(&self) -> Vec<Bytes> {
        let mut ranges: Vec<(u32, u16)> = vec![];
        for &seq in &self.seqs {
            match ranges.last_mut() {
                Some((first, mask)) if (1..=16).contains(&seq.wrapping_sub(*first)) => {
                    *mask |= 1 << (seq.wrapping_sub(*first) - 1);
                }
                _ => ranges.push((seq, 0)),
            }
        }
        ranges
            .chunks(MAX_NACK_RANGES)
            .map(|chunk| {
                let mut b = BytesMut::with_capacity(NACK_FIXED_LEN + chunk.len() * NACK_RANGE_LEN);
                b.put_u8(if self.relay {
                    TYPE_RELAY_NACK
                } else {
                    TYPE_NACK
                });
                b.put_u64(self.channel.0);
                b.put_u64(self.track.0);
                b.put_u8(chunk.len() as u8);
                for &(first, mask) in chunk {
                    b.put_u32(first);
                    b.put_u16(mask);
                }
                b.freeze()
            })
            .collect()
    }
}

#[cfg(test)]
mod nack_tests {
    use super::*;
    use proptest::prelude::*;

    fn nack(seqs: Vec<u32>) -> Nack {
        Nack {
            relay: false,
            channel: ChannelId(0x0102030405060708),
            track: TrackKey(9),
            seqs,
        }
    }

    #[test]
    fn nack_layout_matches_the_spec() {
        let d = nack(vec![100, 101, 103, 117, 118]).encode();
        assert_eq!(d.len(), 1);
        let d = &d[0];
        assert_eq!(d.len(), NACK_FIXED_LEN + 2 * NACK_RANGE_LEN);
        assert_eq!(d[0], 0x04);
        assert_eq!(&d[1..9], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&d[9..17], &[0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(d[17], 2);
        // 100 with 101 (bit 0), 103 (bit 2), 117 (bit 16 is past the mask:
        // a new range).
        assert_eq!(&d[18..24], &[0, 0, 0, 100, 0b0000_0000, 0b0000_0101]);
        assert_eq!(&d[24..30], &[0, 0, 0, 117, 0, 1]);
    }

    #[test]
    fn bad_nacks_are_refused() {
        let d = nack(vec![1]).encode().remove(0);
        assert_eq!(Nack::decode(&d[..17]), Err(DatagramError::Short(17)));
        let mut zero = d.to_vec();
        zero[17] = 0;
        zero.truncate(NACK_FIXED_LEN);
        assert_eq!(Nack::decode(&zero), Err(DatagramError::NackRanges(0)));
        let mut long = d.to_vec();
        long.push(0);
        assert!(matches!(
            Nack::decode(&long),
            Err(DatagramError::NackLength { .. })
        ));
        let mut other = d.to_vec();
        other[0] = 0x05;
        assert_eq!(Nack::decode(&other), Err(DatagramError::UnknownType(0x05)));
    }

    #[test]
    fn overlapping_ranges_ask_for_each_packet_once() {
        // Found by the nack_datagram fuzz target: u32::MAX's range covers
        // 0..=7, which a second range names again.
        let mut d = nack(vec![u32::MAX, 0, 1]).encode().remove(0).to_vec();
        d[17] = 2;
        d.extend_from_slice(&[0, 0, 0, 0, 0, 0b11]);
        let n = Nack::decode(&d).unwrap();
        assert_eq!(n.seqs, vec![u32::MAX, 0, 1, 2]);
        let crash = [
            4, 0, 0, 0, 59, 69, 34, 34, 34, 47, 0, 0, 0, 0, 0, 4, 93, 4, 93, 0, 0, 254, 255, 208,
            255, 255, 255, 255, 255, 0, 0, 0, 0, 4, 93, 255, 64, 0, 0, 0, 1, 32,
        ];
        let n = Nack::decode(&crash).unwrap();
        let mut again: Vec<u32> = n
            .encode()
            .iter()
            .flat_map(|d| Nack::decode(d).unwrap().seqs)
            .collect();
        let mut seqs = n.seqs.clone();
        seqs.sort_unstable();
        again.sort_unstable();
        assert_eq!(again, seqs);
    }

    #[test]
    fn ranges_wrap_around_the_sequence_space() {
        let n = nack(vec![u32::MAX, 0, 1]);
        let d = n.encode();
        assert_eq!(d[0].len(), NACK_FIXED_LEN + NACK_RANGE_LEN);
        assert_eq!(Nack::decode(&d[0]).unwrap(), n);
    }

    proptest! {
        #[test]
        fn any_sequences_round_trip(relay: bool, start: u32,
                                    steps in proptest::collection::vec(1u32..40, 0..400)) {
            // Increasing sequences (as a gap tracker asks), across wraps.
            let mut seqs = vec![start];
            for s in steps {
                let next = seqs[seqs.len() - 1].wrapping_add(s);
                seqs.push(next);
            }
            let n = Nack { relay, ..nack(seqs.clone()) };
            let mut back = vec![];
            for d in n.encode() {
                prop_assert!(d.len() <= NACK_FIXED_LEN + MAX_NACK_RANGES * NACK_RANGE_LEN);
                let got = Nack::decode(&d).unwrap();
                prop_assert_eq!(got.relay, relay);
                back.extend(got.seqs);
            }
            prop_assert_eq!(back, seqs);
        }

        #[test]
        fn nack_decode_never_panics(d in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Nack::decode(&d);
        }
    }
}

/// A link probe or its reply (see the module docs for the layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub reply: bool,
    pub seq: u64,
    pub sent_at_us: u64,
}

impl Probe {
    pub fn decode(d: &[u8]) -> Result<Self, DatagramError> {
        let reply = match d.first() {
            Some(&TYPE_PROBE) => false,
            Some(&TYPE_PROBE_REPLY) => true,
            Some(&t) => return Err(DatagramError::UnknownType(t)),
            None => return Err(DatagramError::Short(0)),
        };
        if d.len() != PROBE_LEN {
            return Err(DatagramError::Short(d.len()));
        }
        let u64_at = |i: usize| u64::from_be_bytes(d[i..i + 8].try_into().expect("8 bytes"));
        Ok(Probe {
            reply,
            seq: u64_at(1),
            sent_at_us: u64_at(9),
        })
    }

    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(PROBE_LEN);
        b.put_u8(if self.reply {
            TYPE_PROBE_REPLY
        } else {
            TYPE_PROBE
        });
        b.put_u64(self.seq);
        b.put_u64(self.sent_at_us);
        b.freeze()
    }

    /// The answer to this probe.
    pub fn to_reply(self) -> Probe {
        Probe {
            reply: true,
            ..self
        }
    }
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn probes_round_trip(reply: bool, seq: u64, sent_at_us: u64) {
            let p = Probe { reply, seq, sent_at_us };
            prop_assert_eq!(Probe::decode(&p.encode()), Ok(p));
        }

        #[test]
        fn probe_decode_never_panics(d in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = Probe::decode(&d);
        }
    }

    #[test]
    fn wrong_length_and_type_are_refused() {
        let p = Probe {
            reply: false,
            seq: 1,
            sent_at_us: 2,
        }
        .encode();
        assert_eq!(Probe::decode(&p[..16]), Err(DatagramError::Short(16)));
        assert_eq!(
            Probe::decode(&[0x01; 17]),
            Err(DatagramError::UnknownType(0x01))
        );
        assert_eq!(Probe::decode(&[]), Err(DatagramError::Short(0)));
    }
}
