//! Forward error correction on a hop whose loss retransmission cannot
//! repair in time: XOR parity over groups of packets.
//!
//! The sending end of a lossy hop follows every `k` packets it sends with a
//! parity packet: the XOR of those `k` (each zero-padded to the longest),
//! with their identities and lengths. The receiving end keeps the packets of
//! the hop it received lately; when a parity packet finds exactly one of its
//! group missing, XOR-ing the parity with the others gives that one back,
//! with no round trip. XOR is the simplest code that repairs the commonest
//! case (one loss in a group) and costs one packet per group; Reed-Solomon
//! would repair several losses per group at the cost of a dependency and
//! more CPU per packet, for loss rates where a relay path should be changed
//! anyway.
//!
//! When: [`FecPolicy`] switches parity on for a hop whose measured loss is
//! at least [`FEC_ON_LOSS`] *and* whose round trip is too long for a NACK to
//! beat the audio deadline, or whose loss is so high ([`FEC_ALWAYS_LOSS`])
//! that retransmissions would be lost too often; off again below
//! [`FEC_OFF_LOSS`] (hysteresis, so a link near the threshold does not
//! flap). The group size falls as loss rises ([`group_size`]).
//!
//! Audio is not grouped: each audio packet of a lossy hop is sent again with
//! the next one of its track ([`crate::red`]), on any hop, slow or not.
//!
//! The wire form is `protocol::parity`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use protocol::parity::{Member, Parity, MAX_GROUP};
use protocol::TrackKey;

/// Parity switches on at this loss (when retransmission is too slow).
pub const FEC_ON_LOSS: f64 = 0.02;
/// And off again below this.
pub const FEC_OFF_LOSS: f64 = 0.01;
/// At this loss parity is sent whatever the round trip: one in five
/// retransmissions would be lost too.
pub const FEC_ALWAYS_LOSS: f64 = 0.15;
/// A hop whose round trip exceeds this cannot repair audio with one NACK
/// and still leave the packet time to cross the rest of the path (the audio
/// deadline, 250 ms, is for the whole repair).
pub const SLOW_HOP_RTT: Duration = Duration::from_millis(60);

/// Packets per parity packet at `loss`: the overhead (1/k) grows with loss,
/// so that a group of k + 1 usually loses at most one.
pub fn group_size(loss: f64) -> usize {
    match loss {
        l if l <= 0.03 => 10,
        l if l <= 0.06 => 8,
        l if l <= 0.12 => 5,
        l if l <= 0.20 => 3,
        _ => 2,
    }
}

/// Whether a hop sends parity, with hysteresis.
#[derive(Debug, Default)]
pub struct FecPolicy {
    on: bool,
}

impl FecPolicy {
    /// Update with the hop's measured loss and round trip; the group size
    /// to use, if parity is on.
    pub fn update(&mut self, loss: f64, rtt: Duration) -> Option<usize> {
        let needed = loss >= FEC_ALWAYS_LOSS || rtt > SLOW_HOP_RTT;
        if self.on {
            self.on = loss >= FEC_OFF_LOSS && needed;
        } else {
            self.on = loss >= FEC_ON_LOSS && needed;
        }
        self.on.then(|| group_size(loss))
    }
}

fn xor_into(acc: &mut [u8], pkt: &[u8]) {
    for (a, b) in acc.iter_mut().zip(pkt) {
        *a ^= b;
    }
}

/// The sending end: groups packets and makes their parity.
#[derive(Debug, Default)]
pub struct FecEncoder {
    members: Vec<Member>,
    xor: Vec<u8>,
}

impl FecEncoder {
    /// `pkt` (sequence `seq` of `track`) was sent; the parity packet to
    /// send after it when it completes a group of `k`.
    pub fn sent(&mut self, track: TrackKey, seq: u32, pkt: &[u8], k: usize) -> Option<Bytes> {
        let k = k.clamp(2, MAX_GROUP);
        if pkt.len() > u16::MAX as usize {
            return None;
        }
        if self.xor.len() < pkt.len() {
            self.xor.resize(pkt.len(), 0);
        }
        xor_into(&mut self.xor, pkt);
        self.members.push(Member {
            track,
            seq,
            len: pkt.len() as u16,
        });
        if self.members.len() < k {
            return None;
        }
        let out = Parity::encode(&self.members, &self.xor);
        self.members.clear();
        self.xor.clear();
        Some(out)
    }

    /// Drop a group in progress (parity switched off, or the link changed).
    pub fn reset(&mut self) {
        self.members.clear();
        self.xor.clear();
    }
}

/// What a parity packet gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Recovery {
    /// The one missing member, rebuilt (to be checked like any packet).
    Rebuilt(Member, Bytes),
    /// Nothing missing: the parity was not needed.
    Complete,
    /// Two or more missing (or ones the receiver no longer holds): beyond
    /// what XOR repairs.
    TooMany,
}

/// The receiving end: the packets of the hop received lately, and what a
/// parity packet rebuilds from them.
#[derive(Debug)]
pub struct FecDecoder {
    max_packets: usize,
    recent: HashMap<(TrackKey, u32), Bytes>,
    order: VecDeque<(TrackKey, u32)>,
}

impl FecDecoder {
    /// Keeping the last `max_packets` received (a parity packet follows its
    /// group at once, so a few groups' worth is enough).
    pub fn new(max_packets: usize) -> Self {
        FecDecoder {
            max_packets: max_packets.max(MAX_GROUP),
            recent: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn received(&mut self, track: TrackKey, seq: u32, pkt: Bytes) {
        if self.recent.insert((track, seq), pkt).is_none() {
            self.order.push_back((track, seq));
        }
        while self.order.len() > self.max_packets {
            if let Some(k) = self.order.pop_front() {
                self.recent.remove(&k);
            }
        }
    }

    pub fn recover(&mut self, p: &Parity) -> Recovery {
        let mut missing = p
            .members
            .iter()
            .filter(|m| !self.recent.contains_key(&(m.track, m.seq)));
        let Some(&lost) = missing.next() else {
            return Recovery::Complete;
        };
        if missing.next().is_some() {
            return Recovery::TooMany;
        }
        let mut acc = p.xor.to_vec();
        for m in &p.members {
            if let Some(pkt) = self.recent.get(&(m.track, m.seq)) {
                if pkt.len() != m.len as usize {
                    // Not the packet the sender protected.
                    return Recovery::TooMany;
                }
                xor_into(&mut acc, pkt);
            }
        }
        acc.truncate(lost.len as usize);
        let pkt = Bytes::from(acc);
        self.received(lost.track, lost.seq, pkt.clone());
        Recovery::Rebuilt(lost, pkt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u64) -> TrackKey {
        TrackKey(n)
    }

    #[test]
    fn one_loss_in_a_group_is_rebuilt_exactly() {
        let pkts: Vec<Bytes> = (0..5u8)
            .map(|i| Bytes::from(vec![i; 100 + i as usize * 37]))
            .collect();
        let mut enc = FecEncoder::default();
        let mut parity = None;
        for (i, p) in pkts.iter().enumerate() {
            parity = enc.sent(key(1), i as u32, p, 5);
            assert_eq!(parity.is_some(), i == 4);
        }
        let parity = Parity::decode(parity.unwrap()).unwrap();
        let mut dec = FecDecoder::new(64);
        for (i, p) in pkts.iter().enumerate() {
            if i != 2 {
                dec.received(key(1), i as u32, p.clone());
            }
        }
        match dec.recover(&parity) {
            Recovery::Rebuilt(m, pkt) => {
                assert_eq!((m.track, m.seq), (key(1), 2));
                assert_eq!(pkt, pkts[2]);
            }
            r => panic!("{r:?}"),
        }
        assert_eq!(dec.recover(&parity), Recovery::Complete);
    }

    #[test]
    fn two_losses_are_beyond_xor() {
        let mut enc = FecEncoder::default();
        let mut parity = None;
        for i in 0..3 {
            parity = enc.sent(key(1), i, &[i as u8; 10], 3);
        }
        let parity = Parity::decode(parity.unwrap()).unwrap();
        let mut dec = FecDecoder::new(64);
        dec.received(key(1), 0, Bytes::from_static(&[0; 10]));
        assert_eq!(dec.recover(&parity), Recovery::TooMany);
    }

    #[test]
    fn the_policy_switches_with_hysteresis_and_only_where_nacks_are_too_slow() {
        let mut p = FecPolicy::default();
        let slow = Duration::from_millis(120);
        let fast = Duration::from_millis(10);
        assert_eq!(p.update(0.10, fast), None, "a short hop repairs by NACK");
        assert_eq!(p.update(0.015, slow), None);
        assert_eq!(p.update(0.02, slow), Some(10));
        assert_eq!(p.update(0.015, slow), Some(10), "hysteresis");
        assert_eq!(p.update(0.005, slow), None);
        assert_eq!(p.update(0.30, fast), Some(2), "very high loss: always");
        assert_eq!(group_size(0.10), 5);
    }

    proptest! {
        #[test]
        fn any_single_loss_is_rebuilt(
            pkts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 2..=MAX_GROUP),
            lost_at in any::<prop::sample::Index>(),
        ) {
            let k = pkts.len();
            let lost = lost_at.index(k);
            let mut enc = FecEncoder::default();
            let mut parity = None;
            for (i, p) in pkts.iter().enumerate() {
                parity = enc.sent(key(9), i as u32, p, k);
            }
            let parity = Parity::decode(parity.unwrap()).unwrap();
            let mut dec = FecDecoder::new(64);
            for (i, p) in pkts.iter().enumerate() {
                if i != lost {
                    dec.received(key(9), i as u32, Bytes::from(p.clone()));
                }
            }
            match dec.recover(&parity) {
                Recovery::Rebuilt(m, pkt) => {
                    prop_assert_eq!(m.seq as usize, lost);
                    prop_assert_eq!(&pkt[..], &pkts[lost][..]);
                }
                r => prop_assert!(false, "{:?}", r),
            }
        }

    }
}
