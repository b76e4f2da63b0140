//! Media datagram header; a decoded header must re-encode to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = MediaHeader::decode(data) {
        let again = h.encode(&data[MEDIA_HEADER_LEN..]).expect("payload within limit");
        assert_eq!(&again[..], data);
    }
});
