//! Relay control stream: RelayFrame frames fed to a FrameBuffer in arbitrary
//! chunks (first byte: chunking seed). The route trees they carry go through
//! `RouteTree::from_pb`, the conversion edges use, and when valid convert
//! back to the same nodes and are checked like binary trees.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::pb::{relay_frame::Kind, RelayFrame};
use protocol::route_tree::RouteTree;
use protocol_fuzz::{check_stream, check_tree};

fuzz_target!(|data: &[u8]| {
    for f in check_stream::<RelayFrame>(data) {
        let nodes = match &f.kind {
            Some(Kind::Message(m)) => &m.tree,
            Some(Kind::DirectoryReport(r)) => &r.tree,
            Some(Kind::DirectoryUpdate(u)) => &u.tree,
            _ => continue,
        };
        if let Ok(t) = RouteTree::from_pb(nodes) {
            assert_eq!(
                &t.to_pb(),
                nodes,
                "an accepted tree converts back to its nodes"
            );
            check_tree(&t);
        }
    }
});
