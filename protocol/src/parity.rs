//! Parity datagrams: XOR forward error correction on relay links (the
//! policy and the XOR are crate `repair`'s `fec`; this is the wire form).
//!
//! A parity packet follows a group of `k` packets sent on a relay link and
//! carries the XOR of those `k` relay datagrams, each zero-padded to the
//! longest, with their identities and lengths: a receiver missing exactly
//! one of them rebuilds it from the others and the parity.
//!
//! ```text
//! offset   size  field
//! 0        1     type      0x85 (RELAY_PARITY)
//! 1        1     count     k, 2..=MAX_GROUP
//! 2        14k   members   each: track_key u64, sequence u32, length u16
//!                          (of the whole relay datagram)
//! 2+14k    n     parity    XOR of the k relay datagrams, each zero-padded
//!                          to n = the longest member's length
//! ```
//!
//! A rebuilt datagram is checked like any received one (it must decode as a
//! relay datagram of the member's track and sequence), so a wrong parity
//! costs a dropped packet, never a wrong one.

use bytes::{BufMut, Bytes, BytesMut};

use crate::TrackKey;

pub const TYPE_RELAY_PARITY: u8 = 0x85;
/// Most packets one parity packet protects.
pub const MAX_GROUP: usize = 16;
pub const MEMBER_LEN: usize = 14;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParityError {
    #[error("parity packet of {0} bytes is too short")]
    Short(usize),
    #[error("not a parity packet (type 0x{0:02x})")]
    Type(u8),
    #[error("parity group of {0}: 2..={MAX_GROUP} expected")]
    Count(usize),
    #[error("parity member of {len} bytes is longer than the parity's {parity}")]
    MemberLength { len: usize, parity: usize },
}

/// One protected packet, as a parity packet names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    pub track: TrackKey,
    pub seq: u32,
    pub len: u16,
}

/// A decoded parity packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parity {
    pub members: Vec<Member>,
    pub xor: Bytes,
}

impl Parity {
    pub fn decode(d: Bytes) -> Result<Parity, ParityError> {
        if d.len() < 2 {
            return Err(ParityError::Short(d.len()));
        }
        if d[0] != TYPE_RELAY_PARITY {
            return Err(ParityError::Type(d[0]));
        }
        let k = d[1] as usize;
        if !(2..=MAX_GROUP).contains(&k) {
            return Err(ParityError::Count(k));
        }
        let xor_at = 2 + k * MEMBER_LEN;
        if d.len() < xor_at {
            return Err(ParityError::Short(d.len()));
        }
        let parity = d.len() - xor_at;
        let members = d[2..xor_at]
            .chunks_exact(MEMBER_LEN)
            .map(|m| {
                let u64_at = u64::from_be_bytes(m[0..8].try_into().unwrap_or([0; 8]));
                Member {
                    track: TrackKey(u64_at),
                    seq: u32::from_be_bytes([m[8], m[9], m[10], m[11]]),
                    len: u16::from_be_bytes([m[12], m[13]]),
                }
            })
            .collect::<Vec<_>>();
        if let Some(m) = members.iter().find(|m| m.len as usize > parity) {
            return Err(ParityError::MemberLength {
                len: m.len as usize,
                parity,
            });
        }
        Ok(Parity {
            members,
            xor: d.slice(xor_at..),
        })
    }

    /// The parity packet of `members` whose XOR is `xor`.
    pub fn encode(members: &[Member], xor: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(2 + members.len() * MEMBER_LEN + xor.len());
        out.put_u8(TYPE_RELAY_PARITY);
        out.put_u8(members.len() as u8);
        for m in members {
            out.put_u64(m.track.0);
            out.put_u32(m.seq);
            out.put_u16(m.len);
        }
        out.put_slice(xor);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bad_parity_is_refused() {
        assert_eq!(
            Parity::decode(Bytes::from_static(&[0x85])),
            Err(ParityError::Short(1))
        );
        assert_eq!(
            Parity::decode(Bytes::from_static(&[0x01, 2])),
            Err(ParityError::Type(1))
        );
        assert_eq!(
            Parity::decode(Bytes::from_static(&[0x85, 1])),
            Err(ParityError::Count(1))
        );
        let mut d = vec![0x85, 2];
        d.extend_from_slice(&[0; 28]);
        d[2 + 12] = 1; // first member of 256 bytes, parity of 0
        assert!(matches!(
            Parity::decode(Bytes::from(d)),
            Err(ParityError::MemberLength { .. })
        ));
    }

    proptest! {
        #[test]
        fn parity_round_trips(members in proptest::collection::vec((any::<u64>(), any::<u32>(), 0u16..50), 2..=MAX_GROUP),
                              xor in proptest::collection::vec(any::<u8>(), 50..60)) {
            let members: Vec<Member> = members.into_iter()
                .map(|(t, seq, len)| Member { track: TrackKey(t), seq, len })
                .collect();
            let d = Parity::encode(&members, &xor);
            let p = Parity::decode(d).unwrap();
            prop_assert_eq!(p.members, members);
            prop_assert_eq!(&p.xor[..], &xor[..]);
        }

        #[test]
        fn parity_decode_never_panics(d in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Parity::decode(Bytes::from(d));
        }
    }
}
