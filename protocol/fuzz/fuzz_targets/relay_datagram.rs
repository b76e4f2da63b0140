//! Relay datagrams (RelayDatagram::decode). Whatever decodes re-encodes to the
//! same bytes, and forwarding it, i.e. encode_relay of each child subtree with
//! the hop limit decremented, yields datagrams that decode to that child, the
//! same origin and the same media.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protocol::datagram::{encode_relay, MediaHeader, RelayDatagram};
use protocol_fuzz::check_tree;

fuzz_target!(|data: &[u8]| {
    let Ok(dg) = RelayDatagram::decode(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert_eq!(
        &encode_relay(dg.origin, dg.hop_limit, &dg.tree, &dg.media)[..],
        data
    );
    assert_eq!(MediaHeader::decode(&dg.media), Ok(dg.header));
    check_tree(&dg.tree);
    let hop_limit = dg.hop_limit.saturating_sub(1);
    for child in dg.tree.children() {
        let fwd = encode_relay(dg.origin, hop_limit, &child, &dg.media);
        let back = RelayDatagram::decode(fwd).expect("a forwarded datagram decodes");
        assert_eq!(back.origin, dg.origin);
        assert_eq!(back.hop_limit, hop_limit);
        assert_eq!(back.tree, child);
        assert_eq!(back.header, dg.header);
        assert_eq!(back.media, dg.media);
    }
});
