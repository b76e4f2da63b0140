//! What end-to-end encryption costs per packet, against a plain baseline
//! measured in the same run (one thread, no network):
//!
//! - plain: the sender encodes the media datagram (header + payload copy),
//!   the receiver decodes the header and copies the payload out;
//! - e2ee: the sender seals (AES-256-GCM, `KeyRing::seal_media`), the
//!   receiver decodes the header and opens (`KeyRing::open_media`, subkey
//!   from the cache).
//!
//! Messages likewise (`seal_message` / `open_message` against a copy).
//! Prints packets/s for both, the time added per packet and the bytes
//! added. `cargo bench -p sdk --bench e2ee` (`-- --quick` for a short run).

use std::hint::black_box;
use std::time::{Duration, Instant};

use protocol::datagram::{MediaHeader, MEDIA_HEADER_LEN};
use protocol::{ChannelId, TrackKey};
use sdk::e2ee::{stream_salt, ChannelKey, E2eeKeys, KeyRing, OVERHEAD};

const CH: u64 = 0x963c_4168_00b6_7c5b;

fn header(seq: u32) -> MediaHeader {
    MediaHeader {
        channel: ChannelId(CH),
        track: TrackKey(7 << 32 | 1),
        sequence: seq,
        timestamp_us: 1_800_000_000_000_000,
    }
}

/// Packets per second of `f` (called with a counter), over `time`, best of
/// `rounds` (the least disturbed).
fn rate(time: Duration, rounds: u32, mut f: impl FnMut(u64)) -> f64 {
    let mut best = 0f64;
    let mut c = 0u64;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < time {
            for _ in 0..256 {
                f(c);
                c += 1;
            }
            n += 256;
        }
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn report(what: &str, size: usize, plain: f64, sealed: f64) {
    let ns = |r: f64| 1e9 / r;
    println!(
        "{what:<22} {size:>6} B  plain {:>10.0} pkt/s ({:>6.0} ns)  e2ee {:>10.0} pkt/s ({:>6.0} ns)  \
         ratio {:>5.2}  +{:>5.0} ns/pkt  +{OVERHEAD} B ({:.1}%)",
        plain,
        ns(plain),
        sealed,
        ns(sealed),
        sealed / plain,
        ns(sealed) - ns(plain),
        100.0 * OVERHEAD as f64 / size as f64,
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (time, rounds) = if quick {
        (Duration::from_millis(100), 2)
    } else {
        (Duration::from_millis(500), 5)
    };
    let key = ChannelKey::generate(1).expect("random key");
    let alice = KeyRing::new(CH, "alice", E2eeKeys::new(key.clone()));
    let bob = KeyRing::new(CH, "bob", E2eeKeys::new(key));
    let base = 0x0123_4567_89ab_cdef;
    println!(
        "end-to-end encryption, one core (seal at the sender + open at a receiver per packet)"
    );
    for size in [160usize, 500, 975] {
        let payload = vec![0x5au8; size];
        let plain = rate(time, rounds, |c| {
            let d = header(c as u32).encode(&payload).unwrap();
            let h = MediaHeader::decode(&d).unwrap();
            black_box((h, d[MEDIA_HEADER_LEN..].to_vec()));
        });
        let sealed = rate(time, rounds, |c| {
            let d = alice
                .seal_media(&header(c as u32), "mic", stream_salt(base, c), &payload)
                .unwrap();
            let h = MediaHeader::decode(&d).unwrap();
            black_box((h, bob.open_media(&d, "alice", "mic").unwrap()));
        });
        report("media datagram", size, plain, sealed);
    }
    for size in [100usize, 1_024, 16_384] {
        let body = vec![0x5au8; size];
        let plain = rate(time, rounds, |c| {
            let sent = bytes::Bytes::copy_from_slice(&body);
            black_box((c, sent.to_vec()));
        });
        let sealed = rate(time, rounds, |c| {
            let s = alice.seal_message(c + 1, c, base, &body).unwrap();
            black_box(bob.open_message("alice", c + 1, c, &s).unwrap());
        });
        report("message", size, plain, sealed);
    }
}
