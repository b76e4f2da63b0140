// The roster of a channel (src/roster.ts) on its own: what a large channel
// lists and counts, and the events the app gets (as sdk/src/roster.rs).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RtnEvent } from '../src/events';
import type { Member } from '../src/proto';
import { Roster, type TrackMap } from '../src/roster';

const member = (userId: string, session: bigint, edgeId: number, tracks: [string, bigint][] = []): Member => ({
  userId,
  session,
  edgeId,
  tracks: tracks.map(([name, trackKey]) => ({ name, trackKey, kind: 2 })),
});
const joined = (user: string): RtnEvent => ({ type: 'member-joined', channel: 'room', user });
const left = (user: string, hidden = false): RtnEvent => ({ type: 'member-left', channel: 'room', user, hidden });
const count = (members: number, large: boolean): RtnEvent => ({ type: 'member-count', channel: 'room', members, large });
const available = (user: string): RtnEvent => ({ type: 'track-available', channel: 'room', user, track: 'cam', kind: 'video' });
const unavailable = (user: string): RtnEvent => ({ type: 'track-unavailable', channel: 'room', user, track: 'cam' });

/** A roster and a function taking the events it reported since the last call. */
function roster(): { r: Roster; taken: () => RtnEvent[] } {
  const events: RtnEvent[] = [];
  const r = new Roster(1n, 'room', 'me', new Map() as TrackMap, (e) => events.push(e));
  return { r, taken: () => events.splice(0) };
}

/** On edge 2, having heard of bob (publishing, on edge 3) and carol
 * (publishing nothing, on edge 4). */
function bobAndCarol(): { r: Roster; taken: () => RtnEvent[] } {
  const x = roster();
  x.r.reconcile(2, [member('bob', 1n, 3, [['cam', 10n]]), member('carol', 2n, 4)], Infinity);
  x.taken();
  return x;
}

test('a large Joined lists the publishers and counts everyone', () => {
  const { r, taken } = roster();
  r.adopt({ requestId: 1, channel: 'room', channelId: 1n, userId: 'me', edgeId: 2, members: [member('bob', 1n, 3, [['cam', 10n]])], memberCount: 150, large: true });
  assert.deepEqual(taken(), [joined('bob'), available('bob'), count(150, true)]);
  assert.deepEqual(r.census, { members: 150, large: true });
  // The unlisted members may be on our edge: it is named too.
  assert.deepEqual(r.memberEdges(), [2, 3]);
  r.setCount(150, true);
  assert.deepEqual(taken(), [], 'the same count is no news');
});

test('becoming large drops the quiet members without member-left', () => {
  const { r, taken } = bobAndCarol();
  r.setCount(101, true);
  assert.deepEqual(taken(), [count(101, true)]);
  assert.deepEqual(r.memberEdges(), [2, 3], "carol's edge is not named");
  r.memberLeft('carol', 2n);
  r.removeTrack(10n);
  r.memberLeft('bob', 1n);
  assert.deepEqual(taken(), [unavailable('bob'), left('bob')]);
});

test('a member hidden in a large channel is reported hidden, not gone', () => {
  const { r, taken } = bobAndCarol();
  r.setCount(120, true);
  taken();
  r.removeTrack(10n);
  r.memberLeft('bob', 1n, true);
  assert.deepEqual(taken(), [unavailable('bob'), left('bob', true)]);
  assert.deepEqual(r.memberEdges(), [2]);
  // Publishing again, the same session is listed again but is no new
  // session (it missed no message: no replay).
  assert.equal(r.memberJoined('bob', 1n, 3), false);
  r.addTrack('bob', { name: 'cam', trackKey: 11n, kind: 2 });
  assert.deepEqual(taken(), [joined('bob'), available('bob')]);
  assert.equal(r.memberJoined('dave', 5n, 3), true, 'a new session');
});

test('small again, the members not listed are announced', () => {
  const { r, taken } = bobAndCarol();
  r.setCount(101, true);
  r.setCount(50, false);
  assert.deepEqual(taken(), [count(101, true), count(50, false)]);
  assert.deepEqual(r.memberEdges(), [3], 'our edge is named for members only');
  // Carol was there all along (no replay), erin joined meanwhile.
  assert.equal(r.memberJoined('carol', 2n, 4), false);
  assert.equal(r.memberJoined('erin', 6n, 0), true);
  assert.deepEqual(taken(), [joined('carol'), joined('erin')]);
  assert.deepEqual(r.memberEdges(), [2, 3, 4]);
});
