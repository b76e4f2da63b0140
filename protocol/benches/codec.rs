//! Codec cost on the forwarding hot path: media header parse, relay datagram
//! decode and re-encode for the next hop.
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::datagram::{encode_relay, MediaHeader, RelayDatagram};
use protocol::route_tree::RouteTree;
use protocol::{ChannelId, TrackKey};

fn bench(c: &mut Criterion) {
    let h = MediaHeader {
        channel: ChannelId(1),
        track: TrackKey::new(1, 1),
        sequence: 1,
        timestamp_us: 1,
    };
    let media = h.encode(&[0u8; 1000]).unwrap();
    let tree = RouteTree::build(1, &[&[1, 2, 3], &[1, 2, 4], &[1, 5]]).remove(0);
    let relay = encode_relay(1, 8, &tree.children()[0], &media);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("media_header_decode", |b| {
        b.iter(|| MediaHeader::decode(std::hint::black_box(&media)))
    });
    g.bench_function("relay_decode_and_forward", |b| {
        b.iter(|| {
            let r = RelayDatagram::decode(Bytes::clone(std::hint::black_box(&relay))).unwrap();
            r.tree
                .children()
                .iter()
                .map(|t| encode_relay(r.origin, r.hop_limit - 1, t, &r.media).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
