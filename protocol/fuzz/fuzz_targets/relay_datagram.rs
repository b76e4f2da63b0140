//! Relay datagrams and route trees: whatever decodes, forwards to children
//! that decode again.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use protocol::datagram::{encode_relay, RelayDatagram};
use protocol::route_tree::RouteTree;

fuzz_target!(|data: &[u8]| {
    if data.len() > 1 {
        let _ = RouteTree::decode(&data[1..], data[0] as usize);
    }
    if let Ok(dg) = RelayDatagram::decode(Bytes::copy_from_slice(data)) {
        for child in dg.tree.children() {
            let fwd = encode_relay(dg.origin, dg.hop_limit.saturating_sub(1), &child, &dg.media);
            let back = RelayDatagram::decode(fwd).expect("forwarded frame decodes");
            assert_eq!(back.tree, child);
            assert_eq!(back.media, dg.media);
        }
    }
});
