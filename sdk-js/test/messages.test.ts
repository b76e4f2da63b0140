// The message guarantees (docs/protocol.md §8): the sender's replay window
// and the receiver's reorder buffer, ported with sdk/src/replay.rs's and
// sdk/src/reorder.rs's tests.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReorderBuffer, type Outcome } from '../src/reorder';
import { ReplayWindow } from '../src/replay';

const seqs = (w: ReplayWindow): number[] => w.replay().map((s) => s.seq);
const push = (w: ReplayWindow, n: number): void => {
  for (let i = 0; i < n; i++) w.push(Uint8Array.of(i), i);
};
const range = (a: number, b: number): number[] => Array.from({ length: b - a + 1 }, (_, i) => a + i);

test('replay: seqs start at 1 and grow by 1', () => {
  const w = new ReplayWindow(4);
  assert.deepEqual([1, 2, 3, 4, 5].map(() => w.push(new Uint8Array(0), 0).seq), [1, 2, 3, 4, 5]);
  assert.equal(w.lastSeq(), 5);
});

test('replay: keeps the last N and every unacked message', () => {
  const w = new ReplayWindow(3);
  push(w, 10);
  assert.deepEqual(seqs(w), range(1, 10));
  assert.equal(w.unacked(), 10);
  assert.equal(w.ack(6), 6);
  assert.deepEqual(seqs(w), [7, 8, 9, 10]);
  assert.equal(w.ack(10), 4);
  assert.deepEqual(seqs(w), [8, 9, 10]);
  push(w, 2);
  assert.deepEqual(seqs(w), [10, 11, 12]);
  // Window 256, 1,024 unacked: nothing unacked is ever evicted.
  const big = new ReplayWindow(256);
  push(big, 1_024);
  assert.equal(big.size, 1_024);
  big.ack(1_000);
  assert.deepEqual([big.size, big.unacked(), seqs(big)[0]], [256, 24, 769]);
});

test('replay: an ack covers every earlier message, idempotent and bounded', () => {
  const w = new ReplayWindow(100);
  push(w, 5);
  assert.equal(w.ack(2), 2);
  assert.equal(w.ack(2), 0);
  assert.equal(w.ack(1), 0);
  assert.equal(w.ack(1_000), 3);
  assert.equal(w.unacked(), 0);
  assert.equal(w.push(new Uint8Array(0), 0).seq, 6);
});

test('replay: refused messages are forgotten, a later ack settles the rest', () => {
  const w = new ReplayWindow(100);
  push(w, 4);
  assert.ok(w.refuse(3));
  assert.ok(!w.refuse(3));
  assert.equal(w.unacked(), 3);
  assert.deepEqual(seqs(w), [1, 2, 4]);
  assert.equal(w.ack(4), 3);
  assert.ok(!w.refuse(1), 'already acknowledged');
});

test('replay: a refused last seq goes to the next message (renumbering)', () => {
  const w = new ReplayWindow(100);
  push(w, 4);
  w.ack(2);
  assert.ok(w.refuse(3));
  assert.equal(w.lastSeq(), 4, '4 may still be accepted');
  assert.ok(w.refuse(4));
  assert.equal(w.lastSeq(), 2);
  assert.equal(w.push(new Uint8Array(0), 9).seq, 3);
  assert.equal(w.push(new Uint8Array(0), 9).seq, 4);
  assert.deepEqual(seqs(w), [1, 2, 3, 4]);
  assert.equal(w.ack(4), 2);
});

test('replay: a refused seq before an accepted one stays used', () => {
  const w = new ReplayWindow(100);
  push(w, 3);
  assert.ok(w.refuse(2));
  assert.equal(w.ack(3), 2);
  assert.equal(w.push(new Uint8Array(0), 0).seq, 4);
});

test('replay: a message first sent on a lost link keeps its seq when refused', () => {
  const w = new ReplayWindow(100);
  push(w, 3);
  w.ack(1);
  w.linkLost();
  assert.ok(w.refuse(3));
  assert.ok(w.refuse(2));
  assert.equal(w.lastSeq(), 3);
  assert.equal(w.push(new Uint8Array(0), 0).seq, 4);
  assert.ok(w.refuse(4));
  assert.equal(w.push(new Uint8Array(0), 0).seq, 4);
});

test('replay: in sequence order', () => {
  const w = new ReplayWindow(2);
  push(w, 300);
  w.ack(150);
  assert.deepEqual(seqs(w), range(151, 300));
});

const m = (seq: number) => ({ seq, payload: new TextEncoder().encode(String(seq)), sentAtUs: 0 });
const out = (o: Outcome): number[] => o.deliver.map((x) => x.seq);

test('reorder: an opening message sets the start, duplicates drop', () => {
  const r = new ReorderBuffer(16, 2_000);
  assert.equal(r.nextExpected(), undefined);
  assert.deepEqual(out(r.offer(m(5), true, 0)), [5]);
  assert.deepEqual(out(r.offer(m(6), true, 0)), [6]);
  assert.ok(r.offer(m(5), true, 0).duplicate);
  assert.ok(r.offer(m(3), true, 0).duplicate);
  assert.equal(r.nextExpected(), 7);
});

test('reorder: gaps wait, then fill in order', () => {
  const r = new ReorderBuffer(16, 2_000);
  r.offer(m(1), true, 0);
  assert.deepEqual(out(r.offer(m(3), true, 0)), []);
  assert.deepEqual(out(r.offer(m(4), true, 0)), []);
  assert.ok(r.offer(m(3), true, 0).duplicate, 'already held');
  assert.deepEqual(out(r.offer(m(2), true, 0)), [2, 3, 4]);
  assert.ok(r.offer(m(3), true, 0).duplicate);
  assert.equal(r.heldCount(), 0);
  assert.equal(r.deadline(), undefined);
});

test('reorder: unfilled gaps are skipped after the timeout', () => {
  const r = new ReorderBuffer(16, 100);
  r.offer(m(1), true, 0);
  r.offer(m(4), true, 0);
  assert.equal(r.deadline(), 100);
  assert.deepEqual(out(r.poll(50)), []);
  const o = r.poll(150);
  assert.deepEqual([out(o), o.skipped], [[4], 2]);
  assert.ok(r.offer(m(2), true, 160).duplicate);
});

test('reorder: each gap times out from the first message after it', () => {
  const r = new ReorderBuffer(16, 100);
  r.offer(m(1), true, 0);
  r.offer(m(3), true, 0);
  r.offer(m(6), true, 80);
  let o = r.poll(100);
  assert.deepEqual([out(o), o.skipped], [[3], 1]);
  assert.deepEqual(out(r.poll(150)), []);
  assert.deepEqual(out(r.offer(m(4), true, 160)), [4]);
  o = r.poll(180);
  assert.deepEqual([out(o), o.skipped], [[6], 1]);
});

test('reorder: a late message proves older gaps', () => {
  const r = new ReorderBuffer(16, 100);
  r.offer(m(1), true, 0);
  r.offer(m(9), true, 0);
  r.offer(m(3), true, 90);
  const o = r.poll(100);
  assert.deepEqual([out(o), o.skipped], [[3, 9], 6]);
});

test('reorder: too many held skips the oldest gap at once (the cap)', () => {
  const r = new ReorderBuffer(3, 10_000);
  r.offer(m(1), true, 0);
  for (const s of [3, 4, 5]) assert.deepEqual(out(r.offer(m(s), true, 0)), []);
  const o = r.offer(m(7), true, 0);
  assert.deepEqual([out(o), o.skipped], [[3, 4, 5], 1]);
  assert.equal(r.heldCount(), 1);
  assert.equal(r.nextExpected(), 6);
});

test('reorder: offers past the deadline expire the gap too', () => {
  const r = new ReorderBuffer(16, 100);
  r.offer(m(1), true, 0);
  r.offer(m(3), true, 0);
  const o = r.offer(m(4), true, 200);
  assert.deepEqual([out(o), o.skipped], [[3, 4], 1]);
});

test('reorder: live messages above 1 wait for the replay that opens the sequence', () => {
  const r = new ReorderBuffer(16, 1_000);
  assert.deepEqual(out(r.offer(m(3), false, 0)), []);
  assert.deepEqual(out(r.offer(m(4), false, 0)), []);
  assert.equal(r.nextExpected(), undefined);
  assert.ok(r.offer(m(3), false, 0).duplicate, 'already held');
  assert.deepEqual(out(r.offer(m(1), true, 20)), [1]);
  assert.deepEqual(out(r.offer(m(2), true, 20)), [2, 3, 4]);
  assert.ok(r.offer(m(3), true, 20).duplicate);
  assert.deepEqual(out(r.offer(m(5), false, 30)), [5]);
});

test('reorder: seq 1 opens live traffic', () => {
  const r = new ReorderBuffer(16, 1_000);
  assert.deepEqual(out(r.offer(m(2), false, 0)), []);
  assert.deepEqual(out(r.offer(m(1), false, 0)), [1, 2]);
});

test('reorder: without a replay the sequence opens at the lowest held after the timeout', () => {
  const r = new ReorderBuffer(16, 100);
  r.offer(m(6), false, 10);
  r.offer(m(5), false, 20);
  assert.equal(r.deadline(), 110);
  assert.deepEqual(out(r.poll(100)), []);
  const o = r.poll(110);
  assert.deepEqual([out(o), o.skipped], [[5, 6], 0]);
  assert.ok(r.offer(m(4), true, 120).duplicate);
});

test('reorder: too many held before opening opens at the lowest', () => {
  const r = new ReorderBuffer(2, 10_000);
  r.offer(m(7), false, 0);
  r.offer(m(8), false, 0);
  const o = r.offer(m(10), false, 0);
  assert.deepEqual([out(o), o.skipped], [[7, 8], 0]);
  assert.equal(r.nextExpected(), 9);
});
