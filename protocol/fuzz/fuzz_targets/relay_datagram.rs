//! Relay datagrams, originals and copies (RelayDatagram::decode). Whatever
//! decodes re-encodes to the same bytes, and forwarding it, i.e. encoding each
//! child subtree with the hop limit decremented, yields datagrams that decode
//! to that child, the same origin, the same media and the same kind.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protocol::datagram::{encode_relay, encode_relay_copy, MediaHeader, RelayDatagram};
use protocol_fuzz::check_tree;

fuzz_target!(|data: &[u8]| {
    let Ok(dg) = RelayDatagram::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    let encode = if dg.copy { encode_relay_copy } else { encode_relay };
    assert_eq!(&encode(dg.origin, dg.hop_limit, &dg.tree, &dg.media)[..], data);
    assert_eq!(MediaHeader::decode(&dg.media), Ok(dg.header));
    check_tree(&dg.tree);
    let hop_limit = dg.hop_limit.saturating_sub(1);
    for child in dg.tree.children() {
        let fwd = encode(dg.origin, hop_limit, &child, &dg.media);
        let back = RelayDatagram::decode(fwd).expect("a forwarded datagram decodes");
        assert_eq!((back.origin, back.copy), (dg.origin, dg.copy));
        assert_eq!(back.hop_limit, hop_limit);
        assert_eq!(back.tree, child);
        assert_eq!(back.header, dg.header);
        assert_eq!(back.media, dg.media);
    }
});
