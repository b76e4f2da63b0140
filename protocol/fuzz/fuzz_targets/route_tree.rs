//! Route trees in binary form (RouteTree::decode). First byte: node count;
//! rest: the nodes. Whatever decodes re-encodes to the bytes it came from and
//! satisfies the tree invariants (protocol_fuzz::check_tree).
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::route_tree::{RouteTree, NODE_LEN};
use protocol_fuzz::check_tree;

fuzz_target!(|data: &[u8]| {
    let Some((&count, nodes)) = data.split_first() else {
        return;
    };
    let count = count as usize;
    if let Ok(t) = RouteTree::decode(nodes, count) {
        assert_eq!(t.len(), count);
        let mut wire = vec![];
        t.encode_into(&mut wire);
        assert_eq!(&wire[..], &nodes[..count * NODE_LEN]);
        check_tree(&t);
    }
});
