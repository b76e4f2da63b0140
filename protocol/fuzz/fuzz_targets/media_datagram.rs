//! Media datagram header (MediaHeader::decode). Whatever decodes re-encodes
//! to the very same bytes (an edge forwards the publisher's bytes unchanged).
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = MediaHeader::decode(data) {
        let again = h
            .encode(&data[MEDIA_HEADER_LEN..])
            .expect("a decoded payload is within the limit");
        assert_eq!(&again[..], data);
    }
});
