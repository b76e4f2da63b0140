//! Parity datagrams (Parity::decode): nothing panics, whatever decodes
//! re-encodes to the very same bytes, and no member claims more bytes than
//! the parity carries.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protocol::parity::Parity;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Parity::decode(Bytes::copy_from_slice(data)) {
        assert!(p.members.iter().all(|m| m.len as usize <= p.xor.len()));
        assert_eq!(&Parity::encode(&p.members, &p.xor)[..], data);
    }
});
