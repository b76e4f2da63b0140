//! Relay control stream: RelayFrame frames fed to a FrameBuffer in arbitrary
//! chunks (first byte: chunking seed). The route trees they carry are
//! validated as an edge does and, when valid, checked like binary trees.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::pb::{relay_frame::Kind, RelayFrame};
use protocol_fuzz::{check_stream, check_tree, tree_from_pb};

fuzz_target!(|data: &[u8]| {
    for f in check_stream::<RelayFrame>(data) {
        let nodes = match &f.kind {
            Some(Kind::Message(m)) => &m.tree,
            Some(Kind::DirectoryReport(r)) => &r.tree,
            Some(Kind::DirectoryUpdate(u)) => &u.tree,
            _ => continue,
        };
        if let Some(t) = tree_from_pb(nodes) {
            check_tree(&t);
        }
    }
});
