// The watchdog's rules, as pure logic (the same cases as the Rust SDK's
// sdk/src/watchdog.rs tests).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ackWait, CHECK_AFTER_MS, MIN_ACK_WAIT_MS, Watchdog, type Heard } from '../src/watchdog';

const TIMEOUT = 500;

/** Media received until `t`, nothing sent, `packetsRx` packets so far. */
const heard = (t: number, packetsRx: number | undefined): Heard => ({ lastByte: t, lastMedia: t, packetsRx, datagramsTx: 0, rttMs: 10 });

test('a stopped stream is checked once, and its silent edge is dead one wait later', () => {
  const w = new Watchdog(TIMEOUT);
  const h = heard(1_000, 50);
  assert.deepEqual(w.judge(1_059, h), { is: 'alive' });
  assert.equal(w.nextLook(h.lastByte, h.lastMedia, h.rttMs), 1_000 + CHECK_AFTER_MS);
  assert.deepEqual(w.judge(1_060, h), { is: 'check' });
  w.asked(1_060, h);
  // Asked: no second check; dead 100 ms on (the floor: 4 RTTs is 40) if
  // not one packet arrives.
  assert.deepEqual(w.judge(1_159, h), { is: 'alive' });
  assert.equal(w.needsCount(1_159, h.lastByte, h.rttMs), false);
  assert.equal(w.nextLook(h.lastByte, h.lastMedia, h.rttMs), 1_160);
  assert.equal(w.needsCount(1_160, h.lastByte, h.rttMs), true);
  assert.equal(w.judge(1_160, h).is, 'dead');
});

test('a transport that answers keeps the edge alive until the liveness timeout', () => {
  const w = new Watchdog(TIMEOUT);
  w.asked(1_060, heard(1_000, 50));
  // An ACK or a retransmission came: the answer may be stuck behind a lost
  // packet, or the edge's app is hung.
  const acked = heard(1_000, 51);
  assert.deepEqual(w.judge(1_300, acked), { is: 'alive' });
  assert.equal(w.nextLook(acked.lastByte, acked.lastMedia, acked.rttMs), 1_000 + TIMEOUT, 'settled: the ceiling judges');
  assert.equal(w.judge(1_000 + TIMEOUT, acked).is, 'dead');
});

test('an answer clears the question; a later keepalive does not push it back', () => {
  const w = new Watchdog(TIMEOUT);
  w.asked(1_060, heard(1_000, 50));
  const answered = { ...heard(1_000, 51), lastByte: 1_070 };
  assert.deepEqual(w.judge(1_200, answered), { is: 'check' });
  w.asked(1_200, answered);
  assert.deepEqual(w.judge(1_250, answered), { is: 'alive' });
  w.asked(1_280, answered);
  assert.equal(w.judge(1_300, answered).is, 'dead');
});

test('without media either way, only the liveness timeout judges', () => {
  const idle = { ...heard(1_000, 50), lastMedia: undefined };
  let w = new Watchdog(TIMEOUT);
  assert.deepEqual(w.judge(1_300, idle), { is: 'alive' }, 'no check');
  w.asked(1_150, idle);
  assert.deepEqual(w.judge(1_400, idle), { is: 'alive' });
  assert.equal(w.judge(1_000 + TIMEOUT, idle).is, 'dead');
  // A publisher (media out, none in) gets the quick verdict.
  w = new Watchdog(TIMEOUT);
  const publishing = { ...idle, datagramsTx: 40 };
  w.asked(1_150, publishing);
  assert.equal(w.judge(1_250, publishing).is, 'dead');
});

test('without packet counts: quick only when the edge\'s media stopped and the keepalive went unanswered', () => {
  const uncounted = heard(1_000, undefined);
  let w = new Watchdog(TIMEOUT);
  assert.deepEqual(w.judge(1_060, uncounted), { is: 'check' });
  w.asked(1_060, uncounted);
  assert.deepEqual(w.judge(1_159, uncounted), { is: 'alive' });
  assert.equal(w.needsCount(1_160, uncounted.lastByte, uncounted.rttMs), true, 'asks for a count all the same');
  assert.match((w.judge(1_160, uncounted) as { why: string }).why, /no answer from the edge for 100 ms after a keepalive, and its media stopped/);
  // The answer came: alive.
  w = new Watchdog(TIMEOUT);
  w.asked(1_060, uncounted);
  assert.deepEqual(w.judge(1_130, { ...uncounted, lastByte: 1_075 }), { is: 'alive' });
  // A client that only publishes hears only answers: no quick verdict.
  w = new Watchdog(TIMEOUT);
  const publishing = { ...uncounted, lastMedia: undefined, datagramsTx: 40 };
  w.asked(1_150, publishing);
  assert.deepEqual(w.judge(1_250, publishing), { is: 'alive' });
  assert.equal(w.nextLook(publishing.lastByte, publishing.lastMedia, publishing.rttMs), 1_000 + TIMEOUT, 'settled: the ceiling judges');
});

test('far edges get four round trips, within the liveness timeout', () => {
  assert.equal(ackWait(60, TIMEOUT), 240);
  assert.equal(ackWait(200, TIMEOUT), TIMEOUT);
  assert.equal(ackWait(1, TIMEOUT), MIN_ACK_WAIT_MS);
});

test('an alive verdict never asks to look again at once, whatever the link hears (seeded random sequences)', () => {
  // A small xorshift, seeded: the same 2,000 sequences every run.
  let seed = 0x9e3779b9;
  const rand = (n: number): number => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  for (let run = 0; run < 2_000; run++) {
    const w = new Watchdog(TIMEOUT);
    const h: Heard = { lastByte: 0, lastMedia: undefined, packetsRx: rand(2) ? 0 : undefined, datagramsTx: 0, rttMs: 1 + rand(150) };
    let now = 0;
    for (let step = 0; step < 80; step++) {
      now += rand(200);
      const what = rand(32);
      if (what & 1) h.lastByte = now;
      if (what & 2) h.lastByte = h.lastMedia = now;
      if (what & 4 && h.packetsRx !== undefined) h.packetsRx++;
      if (what & 8) h.datagramsTx++;
      if (what & 16) w.asked(now, h); // the keepalive tick
      const v = w.judge(now, h);
      if (v.is === 'dead') break;
      if (v.is === 'check') w.asked(now, h);
      else {
        const look = w.nextLook(h.lastByte, h.lastMedia, h.rttMs);
        assert.ok(look > now, `run ${run} step ${step}: looks again ${now - look} ms before now`);
      }
    }
  }
});
