// Loss repair, free of I/O (docs/protocol.md §5.1): the NACK codec, the
// receiving end's gap tracking and NACK timing (clocks injected), the
// sending end's history and budget.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  BURST_BYTES, EarlyMedia, GapTracker, MAX_EARLY_PACKETS, HISTORY_MS, MAX_JUMP, MAX_MISSING, MAX_NACKS, MAX_NACK_RANGES, MAX_TRACKS, NACK_FIXED_LEN, NACK_RANGE_LEN,
  MAX_COPY_AGE_MS, REORDER_GRACE_MS, RepairReceiver, RepairSender, TRACK_IDLE_MS, WINDOW, decodeNack, deadlineMs, encodeNack, type Arrival,
} from '../src/repair';

const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** A small deterministic PRNG (mulberry32): the same cases every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

/** Track keys with the kind of §6 in bits 30-31 of the low half. */
const key = (kind: number, counter = 1, edge = 7): bigint => (BigInt(edge) << 32n) | (BigInt(kind) << 30n) | BigInt(counter);
const AUDIO = key(1);
const VIDEO = key(2);
const DATA = key(0);

test('deadlines come from the kind in the track key', () => {
  assert.equal(deadlineMs(AUDIO), 400);
  assert.equal(deadlineMs(VIDEO), 500);
  assert.equal(deadlineMs(DATA), 500);
  assert.equal(deadlineMs(key(3)), 500);
  assert.equal(deadlineMs((0xffff_ffffn << 32n) | (1n << 30n) | 0x3fff_ffffn), 400);
});

test('NACK layout matches the spec (as the Rust codec)', () => {
  const d = encodeNack({ channelId: 0x0102030405060708n, trackKey: 9n, seqs: [100, 101, 103, 117, 118] });
  assert.equal(d.length, 1);
  // 100 with 101 (bit 0) and 103 (bit 2); 117 is 17 after 100: a new
  // range, with 118 (bit 0).
  assert.equal(toHex(d[0]!), '04' + '0102030405060708' + '0000000000000009' + '02' + '00000064' + '0005' + '00000075' + '0001');
  assert.equal(d[0]!.length, NACK_FIXED_LEN + 2 * NACK_RANGE_LEN);
  // 16 after the first is the mask's last bit.
  assert.equal(toHex(encodeNack({ channelId: 0n, trackKey: 0n, seqs: [5, 21] })[0]!.subarray(17)), '01' + '00000005' + '8000');
  // Across the wrap: 0xffffffff then 0 and 1 in one range.
  const w = decodeNack(encodeNack({ channelId: 1n, trackKey: 2n, seqs: [0xffff_ffff, 0, 1] })[0]!)!;
  assert.deepEqual(w, { channelId: 1n, trackKey: 2n, seqs: [0xffff_ffff, 0, 1] });
  // Overlapping ranges (0xffffffff's covers 0..=15): each packet once.
  const o = encodeNack({ channelId: 1n, trackKey: 2n, seqs: [0xffff_ffff, 0, 1] })[0]!;
  const overlapping = new Uint8Array(o.length + NACK_RANGE_LEN);
  overlapping.set(o);
  overlapping[17] = 2;
  overlapping.set([0, 0, 0, 0, 0, 0b11], o.length);
  assert.deepEqual(decodeNack(overlapping)!.seqs, [0xffff_ffff, 0, 1, 2]);
});

test('malformed NACKs are refused', () => {
  const d = encodeNack({ channelId: 1n, trackKey: 2n, seqs: [1] })[0]!;
  assert.ok(decodeNack(d));
  assert.equal(decodeNack(d.subarray(0, 17)), undefined, 'short');
  assert.equal(decodeNack(new Uint8Array(0)), undefined, 'empty');
  const zero = d.slice(0, NACK_FIXED_LEN);
  zero[17] = 0;
  assert.equal(decodeNack(zero), undefined, 'no range');
  const many = new Uint8Array(NACK_FIXED_LEN + 17 * NACK_RANGE_LEN);
  many.set(d.subarray(0, 17));
  many[17] = 17;
  assert.equal(decodeNack(many), undefined, '17 ranges');
  assert.equal(decodeNack(Uint8Array.of(...d, 0)), undefined, 'a byte too many');
  assert.equal(decodeNack(d.subarray(0, d.length - 1)), undefined, 'a byte short');
  const other = d.slice();
  other[0] = 0x84;
  assert.equal(decodeNack(other), undefined, 'a relay NACK on a client link');
  // A NACK in a non-zero offset view decodes the same.
  const framed = new Uint8Array(d.length + 3);
  framed.set(d, 3);
  assert.deepEqual(decodeNack(framed.subarray(3)), decodeNack(d));
});

test('property: the NACK codec round-trips increasing sequence lists across the 2^32 wrap', () => {
  const r = rng(42);
  for (let iter = 0; iter < 2_000; iter++) {
    // Start near the wrap half of the time.
    const start = r() < 0.5 ? (2 ** 32 - 1 - Math.floor(r() * 300)) : Math.floor(r() * 2 ** 32);
    const n = 1 + Math.floor(r() * 400);
    const maxStep = [1, 2, 17, 40][iter % 4]!;
    const seqs: number[] = [];
    let ext = start;
    for (let i = 0; i < n; i++) {
      seqs.push(ext % 2 ** 32);
      ext += 1 + Math.floor(r() * maxStep);
    }
    const channelId = BigInt(Math.floor(r() * 2 ** 32)) << 32n | 0xdead_beefn;
    const trackKey = 0xffff_ffff_ffff_ffffn - BigInt(iter);
    const datagrams = encodeNack({ channelId, trackKey, seqs });
    const back: number[] = [];
    let ranges = 0;
    let prev: number | undefined;
    for (const d of datagrams) {
      const count = d[17]!;
      assert.ok(count >= 1 && count <= MAX_NACK_RANGES);
      assert.equal(d.length, NACK_FIXED_LEN + count * NACK_RANGE_LEN);
      ranges += count;
      // Greedy: a range starts only past the reach of the one before.
      const v = new DataView(d.buffer, d.byteOffset);
      for (let j = 0; j < count; j++) {
        const first = v.getUint32(NACK_FIXED_LEN + j * NACK_RANGE_LEN);
        if (prev !== undefined) assert.ok(((first - prev) >>> 0) > 16);
        prev = first;
      }
      const nack = decodeNack(d)!;
      assert.equal(nack.channelId, channelId);
      assert.equal(nack.trackKey, trackKey);
      back.push(...nack.seqs);
    }
    assert.deepEqual(back, seqs, `case ${iter}`);
    // Only the last datagram is short of ranges.
    assert.equal(datagrams.length, Math.ceil(ranges / MAX_NACK_RANGES));
    assert.ok(datagrams.slice(0, -1).every((d) => d[17] === MAX_NACK_RANGES));
  }
});

test('a gap is asked for after the grace and filled by the retransmission', () => {
  const RTT = 40;
  const J = 2;
  const g = new GapTracker(deadlineMs(VIDEO));
  const t0 = 1_000;
  assert.equal(g.onPacket(10, t0), 'new');
  assert.equal(g.onPacket(13, t0), 'gap');
  assert.equal(g.missing.size, 2);
  assert.equal(g.nextDue(), t0 + REORDER_GRACE_MS);
  // Within the grace a reordered packet fills a gap with no NACK.
  assert.deepEqual(g.due(t0 + 1, RTT, J), []);
  assert.equal(g.onPacket(11, t0 + 2), 'recovered');
  assert.deepEqual(g.due(t0 + REORDER_GRACE_MS, RTT, J), [12]);
  // Asked again a round trip + the jitter + the grace later, not before.
  const retry = t0 + REORDER_GRACE_MS + RTT + J + REORDER_GRACE_MS;
  assert.equal(g.nextDue(), retry);
  assert.deepEqual(g.due(retry - 1, RTT, J), []);
  assert.deepEqual(g.due(retry, RTT, J), [12]);
  assert.equal(g.onPacket(12, retry + 20), 'recovered');
  assert.equal(g.onPacket(12, retry + 21), 'duplicate');
  assert.equal(g.missing.size, 0);
  assert.equal(g.nextDue(), undefined);
  assert.equal(g.abandoned, 0);
});

test('a lost packet is asked for at most MAX_NACKS times and given up at its deadline', () => {
  for (const [k, deadline] of [[VIDEO, 500], [AUDIO, 400], [DATA, 500]] as const) {
    const g = new GapTracker(deadlineMs(k));
    g.onPacket(1, 0);
    g.onPacket(3, 0);
    const asked: number[] = [];
    for (let t = 0; t < 600; t++) if (g.due(t, 10, 0).length > 0) asked.push(t);
    // 5, then every 10 + 5 ms.
    assert.deepEqual(asked, [5, 20, 35, 50].slice(0, MAX_NACKS));
    assert.equal(g.missing.size, 0, `given up by ${deadline} ms`);
    assert.equal(g.abandoned, 1);
  }
});

test('the deadline: no NACK whose answer could not arrive in time, given up when it passes', () => {
  // Audio: 400 ms. A 400 ms round trip cannot repair it.
  const g = new GapTracker(deadlineMs(AUDIO));
  g.onPacket(1, 0);
  g.onPacket(3, 0);
  assert.deepEqual(g.due(5, 400, 50), []);
  // Not asked again later (it would only be later still), and the timer is
  // not left spinning: the next thing due is the deadline.
  assert.equal(g.nextDue(), 400);
  assert.deepEqual(g.due(399, 10, 0), []);
  assert.equal(g.missing.size, 1);
  assert.equal(g.onPacket(2, 399), 'recovered', 'still welcome before its deadline');

  // Retries stop when the answer would come after the deadline: with a
  // 100 ms round trip, audio is asked at 5, 110 and 215, not at 320.
  const a = new GapTracker(deadlineMs(AUDIO));
  a.onPacket(1, 0);
  a.onPacket(3, 0);
  const asked: number[] = [];
  for (let t = 0; t <= 500; t++) if (a.due(t, 100, 0).length > 0) asked.push(t);
  assert.deepEqual(asked, [5, 110, 215]);
  // Video has 500 ms, and a 60 ms round trip gets all four asks.
  const v = new GapTracker(deadlineMs(VIDEO));
  v.onPacket(1, 0);
  v.onPacket(3, 0);
  const vAsked: number[] = [];
  for (let t = 0; t <= 600; t++) if (v.due(t, 60, 0).length > 0) vAsked.push(t);
  assert.deepEqual(vAsked, [5, 70, 135, 200]);
  assert.equal(v.missing.size, 0);
  assert.equal(v.abandoned, 1);
  assert.equal(v.onPacket(2, 600), 'late', 'after the deadline: passed on, not a recovery');
});

test('sequences wrap without a gap; a gap across the wrap is asked for', () => {
  const g = new GapTracker(150);
  assert.equal(g.onPacket(0xffff_fffe, 0), 'new');
  assert.equal(g.onPacket(0xffff_ffff, 0), 'new');
  assert.equal(g.onPacket(0, 0), 'new');
  assert.equal(g.onPacket(3, 0), 'gap');
  assert.deepEqual(g.due(5, 10, 0), [1, 2]);
  const h = new GapTracker(150);
  h.onPacket(0xffff_fffe, 0);
  h.onPacket(1, 0);
  assert.deepEqual(h.due(5, 10, 0), [0xffff_ffff, 0]);
  assert.equal(h.onPacket(0, 6), 'recovered');
  assert.equal(h.onPacket(0xffff_ffff, 7), 'recovered');
  assert.equal(h.onPacket(0xffff_fffe, 7), 'duplicate');
});

test('a restarted sequence is not a thousand gaps; old packets are told from duplicates', () => {
  const g = new GapTracker(300);
  g.onPacket(5, 0);
  assert.equal(g.onPacket(5 + MAX_JUMP, 0), 'gap', 'a jump of exactly MAX_JUMP is still a gap');
  const r = new GapTracker(300);
  r.onPacket(5, 0);
  r.onPacket(4, 0);
  assert.equal(r.onPacket(5 + MAX_JUMP + 1, 0), 'restart');
  assert.equal(r.missing.size, 0);
  assert.equal(r.nextDue(), undefined);
  assert.equal(r.onPacket(5, 0), 'old', 'before the restart');
  assert.equal(r.onPacket(5 + MAX_JUMP + 2, 0), 'new');

  const o = new GapTracker(300);
  o.onPacket(100, 0);
  assert.equal(o.onPacket(99, 0), 'late');
  assert.equal(o.onPacket(99, 0), 'duplicate');
  for (let s = 101; s <= 100 + WINDOW; s++) o.onPacket(s, 0);
  assert.equal(o.onPacket(100, 0), 'restart', 'a window behind: the sequence started over');
  assert.equal(o.onPacket(101, 0), 'new');
});

test('gaps tracked at once are bounded, the oldest given up first', () => {
  const g = new GapTracker(300);
  // Every other packet lost, far more than the bound.
  for (let s = 0; s < 3 * MAX_MISSING; s++) g.onPacket(2 * s, 0);
  assert.equal(g.missing.size, MAX_MISSING);
  assert.equal(g.abandoned, 3 * MAX_MISSING - 1 - MAX_MISSING);
  const asked = g.due(5, 10, 0);
  assert.equal(asked.length, MAX_MISSING);
  assert.equal(asked[0], 4 * MAX_MISSING - 1, 'the newest are kept');
  // One jump of 1,000: only the last MAX_MISSING are tracked.
  const j = new GapTracker(300);
  j.onPacket(0, 0);
  assert.equal(j.onPacket(MAX_JUMP, 0), 'gap');
  assert.equal(j.missing.size, MAX_MISSING);
  assert.equal(j.abandoned, MAX_JUMP - 1 - MAX_MISSING);
  assert.equal(j.onPacket(1, 1), 'late', 'given up, passed on');
  assert.equal(j.onPacket(MAX_JUMP - 1, 1), 'recovered');
});

test('property: each packet passes once, and received packets are never asked for', () => {
  const r = rng(7);
  for (let iter = 0; iter < 300; iter++) {
    const start = r() < 0.5 ? 2 ** 32 - 150 : Math.floor(r() * 2 ** 32);
    const g = new GapTracker(iter % 2 ? 150 : 300);
    const passed = new Set<number>();
    let t = 0;
    const n = 1 + Math.floor(r() * 600);
    for (let i = 0; i < n; i++) {
      const seq = (start + Math.floor(r() * 300)) % 2 ** 32;
      t += 0.7;
      const a: Arrival = g.onPacket(seq, t);
      if (a === 'duplicate') assert.ok(passed.has(seq), `${seq} a duplicate of nothing`);
      else if (a !== 'old') {
        assert.ok(!passed.has(seq), `${seq} passed twice`);
        passed.add(seq);
      }
      if (r() < 0.5) {
        for (const asked of g.due(t, 3, 0)) assert.ok(!passed.has(asked), `asked for received ${asked}`);
        // Nothing left due now: a timer set for the next is never in the past.
        const next = g.nextDue();
        assert.ok(next === undefined || next > t);
      }
      assert.ok(g.missing.size <= MAX_MISSING);
    }
  }
});

test('receiver: NACK datagrams per track, the next due time, many ranges in several datagrams', () => {
  const rx = new RepairReceiver(0);
  assert.equal(rx.nextDue(), undefined);
  rx.onMedia(5n, VIDEO, 0, 0);
  rx.onMedia(5n, AUDIO, 0, 0);
  assert.equal(rx.onMedia(5n, VIDEO, 3, 0), 'gap');
  assert.equal(rx.onMedia(5n, AUDIO, 2, 1), 'gap');
  assert.equal(rx.nextDue(), REORDER_GRACE_MS);
  let out = rx.nacks(5, 20, 5);
  assert.equal(out.asked, 2);
  assert.deepEqual(out.datagrams.map((d) => decodeNack(d)), [{ channelId: 5n, trackKey: VIDEO, seqs: [1, 2] }]);
  assert.equal(rx.nextDue(), 6);
  out = rx.nacks(6, 20, 5);
  assert.deepEqual(out.datagrams.map((d) => decodeNack(d)), [{ channelId: 5n, trackKey: AUDIO, seqs: [1] }]);
  assert.equal(rx.nextDue(), 5 + 20 + 5 + 5);
  assert.equal(rx.onMedia(5n, AUDIO, 1, 20), 'recovered');
  assert.equal(rx.onMedia(5n, VIDEO, 1, 20), 'recovered');
  assert.equal(rx.onMedia(5n, VIDEO, 2, 20), 'recovered');
  assert.equal(rx.nextDue(), undefined, 'no gaps: no timer');
  assert.deepEqual(rx.nacks(100, 20, 5), { datagrams: [], asked: 0 });

  // One packet in 20 lost: 50 ranges of one, in 4 datagrams.
  const many = new RepairReceiver(0);
  for (let s = 0; s < 1_000; s++) if (s % 20 !== 10) many.onMedia(1n, DATA, s, 0);
  const big = many.nacks(5, 10, 0);
  assert.equal(big.asked, 50);
  assert.deepEqual(big.datagrams.map((d) => d[17]), [16, 16, 16, 2]);
  assert.deepEqual(big.datagrams.flatMap((d) => decodeNack(d)!.seqs), Array.from({ length: 50 }, (_, i) => 20 * i + 10));
});

test('receiver: tracks are bounded and idle ones forgotten', () => {
  const rx = new RepairReceiver(0);
  for (let k = 0; k < MAX_TRACKS + 10; k++) rx.onMedia(1n, BigInt(k), 0, 0);
  assert.equal(rx.trackCount, MAX_TRACKS);
  // A track past the bound is passed on unrepaired.
  assert.equal(rx.onMedia(1n, BigInt(MAX_TRACKS + 5), 9, 1), 'new');
  assert.equal(rx.onMedia(1n, BigInt(MAX_TRACKS + 5), 9, 1), 'new');
  rx.onMedia(1n, 1n, 1, TRACK_IDLE_MS / 2);
  rx.onMedia(1n, 2n, 5, TRACK_IDLE_MS - 1); // a gap, and busy
  rx.onMedia(1n, 3n, 1, TRACK_IDLE_MS);
  assert.equal(rx.trackCount, 3, 'the idle ones are gone');
  assert.equal(rx.nextDue(), TRACK_IDLE_MS - 1 + REORDER_GRACE_MS);
  rx.onMedia(1n, 3n, 2, 3 * TRACK_IDLE_MS);
  assert.equal(rx.trackCount, 1);
  assert.equal(rx.nextDue(), undefined, 'gaps of forgotten tracks are not asked for');
});

const pkt = (seq: number, len = 100): Uint8Array => new Uint8Array(len).fill(seq & 0xff);

test('sender: held packets are resent until their kind\'s deadline', () => {
  const tx = new RepairSender();
  tx.sent(AUDIO, 7, pkt(1), 0);
  tx.sent(VIDEO, 7, pkt(2), 0);
  assert.deepEqual(tx.lookup(AUDIO, 7, 399), pkt(1));
  assert.equal(tx.lookup(AUDIO, 7, 400), undefined);
  assert.deepEqual(tx.lookup(VIDEO, 7, 499), pkt(2));
  assert.equal(tx.lookup(VIDEO, 7, 500), undefined);
  // The very bytes sent.
  const d = pkt(3);
  tx.sent(DATA, 1, d, 0);
  assert.equal(tx.answer({ channelId: 1n, trackKey: DATA, seqs: [1] }, 10)[0], d);
});

test('sender: what was not sent, or not on this track, gets nothing', () => {
  const tx = new RepairSender();
  tx.sent(VIDEO, 10, pkt(10), 0);
  tx.sent(VIDEO, 12, pkt(12), 0);
  assert.equal(tx.lookup(VIDEO, 11, 0), undefined);
  assert.equal(tx.lookup(VIDEO, 13, 0), undefined);
  assert.equal(tx.lookup(AUDIO, 10, 0), undefined);
  const v2 = key(2, 3);
  tx.sent(v2, 0xffff_ffff, pkt(1), 0);
  tx.sent(v2, 0, pkt(2), 0);
  assert.deepEqual([tx.lookup(v2, 0xffff_ffff, 0), tx.lookup(v2, 0, 0)], [pkt(1), pkt(2)]);
});

test('sender: bounded by count and age; a packet sent again keeps its first time', () => {
  const tx = new RepairSender(10);
  for (let s = 0; s < 50; s++) tx.sent(VIDEO, s, pkt(s), 0);
  assert.equal(tx.held, 10);
  assert.equal(tx.lookup(VIDEO, 39, 0), undefined);
  assert.ok(tx.lookup(VIDEO, 40, 0) instanceof Uint8Array);
  tx.sent(AUDIO, 50, pkt(50), HISTORY_MS + 1);
  assert.equal(tx.held, 1, 'older than 500 ms: forgotten');
  assert.equal(tx.lookup(VIDEO, 49, HISTORY_MS + 1), undefined);
  const def = new RepairSender();
  for (let s = 0; s < 2_000; s++) def.sent(VIDEO, s, pkt(s), s / 100);
  assert.equal(def.held, 1_024);
  const again = new RepairSender();
  again.sent(AUDIO, 1, pkt(1), 0);
  again.sent(AUDIO, 1, pkt(9), 300);
  assert.equal(again.held, 1);
  assert.deepEqual(again.lookup(AUDIO, 1, 399), pkt(1));
  assert.equal(again.lookup(AUDIO, 1, 410), undefined, 'its deadline runs from the first time');
});

test('sender: each packet once per NACK, a NACK for the rest gets nothing', () => {
  const tx = new RepairSender();
  for (let s = 0; s < 5; s++) tx.sent(VIDEO, s, pkt(s), 0);
  const got = tx.answer({ channelId: 1n, trackKey: VIDEO, seqs: [1, 1, 3, 9, 1] }, 50);
  assert.deepEqual(got, [pkt(1), pkt(3)]);
  assert.deepEqual(tx.answer({ channelId: 1n, trackKey: VIDEO, seqs: [1] }, 60), [pkt(1)], 'the next NACK again');
  assert.deepEqual(tx.answer({ channelId: 1n, trackKey: AUDIO, seqs: [1] }, 60), []);
  assert.deepEqual(tx.answer({ channelId: 1n, trackKey: VIDEO, seqs: [1] }, 500), [], 'too late');
});

test('sender: repair is at most half the media sent, after a 64 KiB burst', () => {
  const tx = new RepairSender(1_000_000);
  tx.sent(VIDEO, 0, pkt(0, 1_000), 0);
  const nack = { channelId: 1n, trackKey: VIDEO, seqs: [0] };
  let repaired = 0;
  while (tx.answer(nack, 1).length > 0) repaired += 1_000;
  // The burst, plus what the first packet earned.
  assert.equal(repaired, Math.floor((BURST_BYTES) / 1_000) * 1_000);
  // A flood of NACKs now gets half of what media earns.
  let sent = 0;
  repaired = 0;
  for (let s = 1; s <= 1_000; s++) {
    tx.sent(VIDEO, s, pkt(s, 1_000), 1 + s / 1_000);
    sent += 1_000;
    while (tx.answer({ channelId: 1n, trackKey: VIDEO, seqs: [s] }, 1 + s / 1_000).length > 0) repaired += 1_000;
  }
  const share = repaired / sent;
  assert.ok(Math.abs(share - 0.5) < 0.01, `share ${share}`);
});

test('sending end and receiving end together: a loss is asked for and repaired', () => {
  const tx = new RepairSender();
  const rx = new RepairReceiver(0);
  const delivered: number[] = [];
  for (let s = 0; s < 6; s++) {
    const d = pkt(s);
    tx.sent(AUDIO, s, d, s);
    if (s !== 2 && s !== 3) {
      const a = rx.onMedia(9n, AUDIO, s, s + 10);
      if (a !== 'duplicate' && a !== 'old') delivered.push(s);
    }
  }
  const due = rx.nextDue()!;
  assert.equal(due, 14 + REORDER_GRACE_MS);
  const { datagrams, asked } = rx.nacks(due, 20, 5);
  assert.equal(asked, 2);
  const nack = decodeNack(datagrams[0]!)!;
  assert.deepEqual(nack.seqs, [2, 3]);
  const resent = tx.answer(nack, due + 10);
  assert.equal(resent.length, 2);
  for (const [i, d] of resent.entries()) {
    assert.equal(rx.onMedia(9n, AUDIO, nack.seqs[i]!, due + 20), 'recovered');
    assert.equal(d[0], nack.seqs[i]);
  }
  // The late original after its retransmission: a duplicate.
  assert.equal(rx.onMedia(9n, AUDIO, 3, due + 25), 'duplicate');
  assert.equal(rx.nextDue(), undefined);
});

test('sender: audio copies while the edge NACKs 2% or more, each after the next packet, off again below 1%', () => {
  const tx = new RepairSender(100_000);
  let now = 0;
  let seq = 0;
  // A second of audio at 50 packets/s, the edge asking for every `every`-th
  // packet; the copy each send returned.
  const second = (every: number): (Uint8Array | undefined)[] => {
    const out: (Uint8Array | undefined)[] = [];
    for (let i = 0; i < 50; i++, seq++, now += 20) {
      out.push(tx.sent(AUDIO, seq, pkt(seq), now));
      if (every > 0 && seq % every === 0) tx.answer({ channelId: 9n, trackKey: AUDIO, seqs: [seq, seq] }, now);
    }
    return out;
  };
  second(0);
  second(0);
  assert.equal(tx.copying, false, 'a clean link sends no copies');
  second(10); // 10% asked...
  const on = second(10); // ...measured at the start of this second
  assert.ok(Math.abs(tx.loss - 0.1) < 0.03, `loss ${tx.loss}`);
  assert.equal(tx.copying, true);
  // Each send carries the previous packet of the track, never itself.
  assert.equal(on[on.length - 1]![0], (seq - 2) & 0xff);
  // Video is left to NACKs.
  assert.equal(tx.sent(VIDEO, 0, pkt(0), now), undefined);
  // 1.5% keeps copies on (hysteresis); nothing asked turns them off.
  for (let i = 0; i < 3; i++) second(66);
  assert.equal(tx.copying, true, `loss ${tx.loss}`);
  second(0);
  second(0);
  assert.equal(tx.copying, false);
  // A track that paused does not resend its old last packet.
  second(5);
  second(5);
  assert.equal(tx.copying, true);
  now += MAX_COPY_AGE_MS + 1;
  assert.equal(tx.sent(AUDIO, seq, pkt(seq), now), undefined);
});

test('early media: held until its track is known, in order, bounded by count and by its kind\'s deadline', () => {
  const early = new EarlyMedia<number>();
  for (let i = 0; i < 3; i++) {
    assert.equal(early.hold(AUDIO, i, 0), 0);
    assert.equal(early.hold(VIDEO, 10 + i, 0), 0);
  }
  assert.deepEqual(early.release((k) => k === AUDIO, 1), { released: [0, 1, 2], dropped: 0 });
  assert.equal(early.size, 3, 'the video track is still unknown');
  // Audio's deadline (400 ms) passes before video's (500 ms).
  early.hold(AUDIO, 3, 100);
  assert.deepEqual(early.release(() => false, 501), { released: [], dropped: 4 }, 'all too old by then');
  let dropped = 0;
  for (let i = 0; i < MAX_EARLY_PACKETS + 5; i++) dropped += early.hold(AUDIO, i, 600);
  assert.equal(dropped, 5);
  const { released } = early.release(() => true, 600);
  assert.equal(released.length, MAX_EARLY_PACKETS);
  assert.equal(released[0], 5, 'the oldest were dropped first');
});
