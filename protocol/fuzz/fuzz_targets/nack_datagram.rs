//! NACK datagrams (Nack::decode): nothing panics, whatever decodes asks for
//! at most 17 packets per range, and asking again for what was decoded
//! decodes to the same packets (in ascending order within each range, so
//! compared as sorted lists).
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::datagram::{Nack, MAX_NACK_RANGES};

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = Nack::decode(data) {
        assert!(n.seqs.len() <= MAX_NACK_RANGES * 17);
        let mut again: Vec<u32> = n
            .encode()
            .iter()
            .flat_map(|d| Nack::decode(d).expect("re-encoded NACK decodes").seqs)
            .collect();
        let mut seqs = n.seqs.clone();
        seqs.sort_unstable();
        again.sort_unstable();
        assert_eq!(again, seqs);
    }
});
