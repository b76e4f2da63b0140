//! Probe datagrams (Probe::decode): whatever decodes re-encodes to the very
//! same bytes, and nothing else of any length decodes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::datagram::{Probe, PROBE_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Probe::decode(data) {
        assert_eq!(data.len(), PROBE_LEN);
        assert_eq!(&p.encode()[..], data);
    }
});
