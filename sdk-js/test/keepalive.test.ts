// When the periodic keepalive may be skipped (src/keepalive.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { keepaliveDue } from '../src/keepalive';

const due = (now: number, lastMedia: number, lastSent: number, rtt: number | undefined): boolean => keepaliveDue(now, lastMedia, lastSent, rtt, 150, 500);

test('without media every tick sends a keepalive', () => {
  assert.equal(due(1_000, -Infinity, 850, 20), true);
  // Media longer than an interval ago: silence, every tick.
  assert.equal(due(1_000, 800, 850, 20), true);
});

test('while media arrives on a fast path, one a second', () => {
  assert.equal(due(1_000, 990, 850, 20), false);
  assert.equal(due(1_000, 990, 1, 20), false);
  assert.equal(due(1_000, 990, 0, 20), true);
  assert.equal(due(1_000, 990, -Infinity, 20), true);
});

test('a slow or unmeasured path keeps every keepalive', () => {
  // 2 x 150 + 2 x 101 > 500: an answer to a fresh ask could miss the
  // liveness timeout after media stops.
  assert.equal(due(1_000, 990, 850, 101), true);
  assert.equal(due(1_000, 990, 850, 100), false);
  assert.equal(due(1_000, 990, 850, undefined), true);
});
