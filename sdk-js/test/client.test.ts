// The client's state machine against fake edges over a fake WebTransport:
// join, publish, media, messages, refusals, reconnect with rejoin /
// republish / replay, goaway redirects with certificate hashes, liveness,
// probing, the controller lookup, media loss repair.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import type { Channel } from '../src/channel';
import { Client, type ClientOptions } from '../src/client';
import { Link, type WebTransportCtor } from '../src/connection';
import type { RtnEvent } from '../src/events';
import { RtnError } from '../src/errors';
import { decodeMedia, encodeMedia } from '../src/media';
import { MemberLeftReason } from '../src/proto';
import { decodeNack, encodeNack, TYPE_NACK } from '../src/repair';
import { FakeNet, until, wait } from './fake-edge';

const FAST: Partial<ClientOptions> = { keepaliveIntervalMs: 20, livenessTimeoutMs: 120, connectTimeoutMs: 300, connectStaggerMs: 50, backoff: { initialMs: 5, maxMs: 40 }, requestTimeoutMs: 1_000, reprobeIntervalMs: null };
const clients: Client[] = [];

async function connect(net: FakeNet, o: Partial<ClientOptions>): Promise<{ c: Client; events: RtnEvent[] }> {
  const c = await Client.connect({ ...FAST, WebTransport: net.WebTransport, ...o });
  clients.push(c);
  const events: RtnEvent[] = [];
  c.on('*', (e) => events.push(e));
  return { c, events };
}

afterEach(async () => {
  for (const c of clients.splice(0)) await c.close();
});

const types = (ev: RtnEvent[]): string[] => ev.map((e) => e.type);

/** A client given two fake edges as its candidates, connected to the first
 * (`o` over the fast test options; `quicStats`: sessions count packets). */
async function twoEdges(o: Partial<ClientOptions> = {}, quicStats = false): Promise<{ net: FakeNet; e1: ReturnType<FakeNet['edge']>; e2: ReturnType<FakeNet['edge']>; c: Client; events: RtnEvent[] }> {
  const net = new FakeNet();
  net.quicStats = quicStats;
  const e1 = net.edge(1, '127.0.0.1:4433');
  const e2 = net.edge(2, '127.0.0.2:4433');
  const { c, events } = await connect(net, {
    edges: [
      { addr: '127.0.0.1:4433', server_name: 'e1.test' },
      { addr: '127.0.0.2:4433', server_name: 'e2.test' },
    ],
    ...o,
  });
  return { net, e1, e2, c, events };
}

test('join, publish media, send messages with acks', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const { c } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  assert.equal(net.dialled[0]!.url, 'https://e1.test:4433/rtn-client/1', 'WebPKI: server_name with the port of addr');
  assert.deepEqual(net.dialled[0]!.options, {});
  const room = await c.join('alice', 'room', { subscribeAll: true });
  assert.deepEqual([room.name, room.id, room.user], ['room', 0x963c416800b67c5bn, 'alice']);
  assert.deepEqual(e1.last.joins(), [{ requestId: 1, token: 'alice', subscribeAll: true, channel: 'room', memberEdges: [], unreachableEdge: 0 }]);
  const mic = await room.publishTrack('mic', 'audio');
  assert.equal(mic.trackKey, (1n << 32n) | 1n);
  await mic.send(Uint8Array.of(1, 2, 3));
  await mic.send(Uint8Array.of(4));
  await until(() => e1.last.datagrams.length === 2);
  const h = decodeMedia(e1.last.datagrams[1]!)!;
  assert.deepEqual([h.channelId, h.trackKey, h.sequence], [room.id, mic.trackKey, 1]);
  assert.equal(await room.sendMessage('hi'), 1);
  assert.equal(await room.sendMessage(Uint8Array.of(9)), 2);
  await until(() => c.getStats().messagesAcked === 2);
  assert.equal(room.unacked(), 0);
  assert.deepEqual(e1.last.messages().map((m) => [m.seq, m.toUser]), [[1, ''], [2, '']]);
  await assert.rejects(mic.send(new Uint8Array(1001)), (e: RtnError) => e.code === 'INVALID');
  assert.equal(c.edge()?.addr, '127.0.0.1:4433');
  // Keepalives flow and measure the RTT.
  await until(() => c.getStats().rttMs !== undefined);
});

test('receiving: members, tracks, media, messages in order without duplicates', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  e1.members = [{ userId: 'bob', session: 7n, tracks: [{ name: 'cam', trackKey: 99n, kind: 2 }], edgeId: 0 }];
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  const iter = c.events();
  const room = await c.join('alice', 'room', { subscribeAll: true });
  await until(() => events.length >= 2);
  assert.deepEqual(events.slice(0, 2), [
    { type: 'member-joined', channel: 'room', user: 'bob' },
    { type: 'track-available', channel: 'room', user: 'bob', track: 'cam', kind: 'video' },
  ]);
  const s = e1.last;
  s.sendDatagram(encodeMedia({ channelId: room.id, trackKey: 99n, sequence: 5, timestampUs: BigInt(Date.now() * 1000) }, Uint8Array.of(7)));
  s.sendDatagram(encodeMedia({ channelId: room.id, trackKey: 12345n, sequence: 5, timestampUs: 1n }, Uint8Array.of(7)));
  s.sendDatagram(Uint8Array.of(1, 2, 3));
  const msg = (seq: number) => ({ message: { channelId: room.id, fromUser: 'bob', seq, payload: Uint8Array.of(seq), sentAtUs: 1, toUser: '' } });
  for (const seq of [1, 3, 2, 3, 4]) s.send(msg(seq));
  await until(() => c.getStats().messagesDelivered === 4);
  const got = events.filter((e) => e.type === 'message').map((e) => (e.type === 'message' ? e.seq : 0));
  assert.deepEqual(got, [1, 2, 3, 4]);
  // The datagram of a track never announced is held for its kind's deadline
  // (500 ms), in case the announcement was only slower, then counted.
  assert.equal(c.getStats().mediaUnknownTrack, 0);
  await until(() => c.getStats().mediaUnknownTrack === 1, 2_000, 'the unknown track given up');
  const st = c.getStats();
  assert.deepEqual([st.mediaReceived, st.mediaUnknownTrack, st.mediaMalformed, st.messagesDuplicate], [1, 1, 1, 1]);
  const media = events.find((e) => e.type === 'media');
  assert.ok(media?.type === 'media' && media.user === 'bob' && media.track === 'cam' && media.sequence === 5);
  // The iterator saw the same events, in order.
  const first = await iter.next();
  assert.equal(first.value?.type, 'member-joined');
  // A session of ours (a previous one) is never a member; bob's second
  // session is not a new member; the last one leaving is.
  s.send({ memberJoined: { channelId: room.id, userId: 'alice', session: 1n, edgeId: 0 } });
  s.send({ memberJoined: { channelId: room.id, userId: 'bob', session: 8n, edgeId: 0 } });
  s.send({ memberLeft: { channelId: room.id, userId: 'bob', session: 7n, reason: 0 } });
  s.send({ memberLeft: { channelId: room.id, userId: 'bob', session: 8n, reason: 0 } });
  await until(() => events.some((e) => e.type === 'member-left'));
  assert.deepEqual(types(events.filter((e) => e.type.startsWith('member') || e.type.startsWith('track'))), ['member-joined', 'track-available', 'track-unavailable', 'member-left']);
});

test('a track\'s first datagrams read before its announcement are held, then delivered in order', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  e1.members = [{ userId: 'bob', session: 7n, tracks: [], edgeId: 0 }];
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  const room = await c.join('alice', 'room', { subscribeAll: true });
  await until(() => events.some((e) => e.type === 'member-joined'));
  const s = e1.last;
  const at = BigInt(Date.now() * 1000);
  for (const sequence of [0, 1]) s.sendDatagram(encodeMedia({ channelId: room.id, trackKey: 99n, sequence, timestampUs: at }, Uint8Array.of(sequence)));
  await wait(20);
  assert.equal(c.getStats().mediaReceived, 0, 'not yet announced');
  s.send({ trackAvailable: { channelId: room.id, userId: 'bob', track: { name: 'cam', trackKey: 99n, kind: 2 } } });
  await until(() => c.getStats().mediaReceived === 2, 2_000, 'the held packets');
  const seqs = events.filter((e) => e.type === 'media').map((e) => (e.type === 'media' ? e.sequence : -1));
  assert.deepEqual(seqs, [0, 1]);
  assert.equal(c.getStats().mediaUnknownTrack, 0);
});

test('a large channel: counted, only publishers listed, hidden members, small again', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  e1.members = [{ userId: 'bob', session: 7n, tracks: [{ name: 'cam', trackKey: 99n, kind: 2 }], edgeId: 0 }];
  e1.memberCount = 150;
  e1.large = true;
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  const room = await c.join('alice', 'room', { subscribeAll: true });
  await until(() => events.some((e) => e.type === 'member-count'));
  assert.deepEqual([room.memberCount, room.isLarge], [150, true]);
  assert.equal(await room.sendMessage('hi'), 1);
  const s = e1.last;
  // Bob stops publishing: hidden, not gone. Then the channel is small
  // again and every member is announced: bob's session never left (no
  // replay), carol's is new to us.
  s.send({ trackUnavailable: { channelId: room.id, userId: 'bob', trackKey: 99n } });
  s.send({ memberLeft: { channelId: room.id, userId: 'bob', session: 7n, reason: MemberLeftReason.hidden } });
  s.send({ memberCount: { channelId: room.id, members: 40, large: false } });
  s.send({ memberJoined: { channelId: room.id, userId: 'bob', session: 7n, edgeId: 0 } });
  s.send({ memberJoined: { channelId: room.id, userId: 'carol', session: 8n, edgeId: 0 } });
  await until(() => s.messages().length === 2);
  assert.deepEqual(s.messages().map((m) => [m.seq, m.toUser]), [[1, ''], [1, 'carol']]);
  const members = events.filter((e) => e.type.startsWith('member'));
  assert.deepEqual(members, [
    { type: 'member-joined', channel: 'room', user: 'bob' },
    { type: 'member-count', channel: 'room', members: 150, large: true },
    { type: 'member-left', channel: 'room', user: 'bob', hidden: true },
    { type: 'member-count', channel: 'room', members: 40, large: false },
    { type: 'member-joined', channel: 'room', user: 'bob' },
    { type: 'member-joined', channel: 'room', user: 'carol' },
  ]);
  assert.deepEqual([room.memberCount, room.isLarge], [40, false]);
});

test('a refused message gives its seq to the next one', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  e1.refuseSeqs.add(2);
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  const room = await c.join('alice', 'room');
  assert.equal(await room.sendMessage('one'), 1);
  assert.equal(await room.sendMessage('two'), 2);
  await until(() => events.some((e) => e.type === 'message-refused'));
  const r = events.find((e) => e.type === 'message-refused');
  assert.ok(r?.type === 'message-refused' && r.seq === 2 && r.error.code === 'MALFORMED_FRAME');
  e1.refuseSeqs.clear();
  assert.equal(await room.sendMessage('three'), 2, 'seq 2 was not used up');
  await until(() => c.getStats().messagesAcked === 2);
  assert.equal(c.getStats().messagesRefused, 1);
});

test('backpressure: trySendMessage refuses past maxUnacked', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const { c } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }], maxUnacked: 2 });
  const room = await c.join('alice', 'room');
  e1.silent = true; // no acks
  await room.trySendMessage('a');
  await room.trySendMessage('b');
  await assert.rejects(room.trySendMessage('c'), (e: RtnError) => e.code === 'BACKPRESSURE');
  assert.equal(room.unacked(), 2);
});

test('edge closes with GOING_AWAY: reconnect to the next candidate, rejoin, republish, replay', async () => {
  const { e1, e2, c, events } = await twoEdges();
  // Bob is on edge 5, carol on alice's own edge (0, which is edge 1): the
  // rejoin names both, since carol stays on edge 1.
  e1.members = [
    { userId: 'bob', session: 7n, tracks: [], edgeId: 5 },
    { userId: 'carol', session: 8n, tracks: [], edgeId: 0 },
  ];
  const room = await c.join('alice', 'room', { subscribeAll: true });
  await room.subscribe('bob');
  const mic = await room.publishTrack('mic', 'audio');
  const oldKey = mic.trackKey;
  e1.silent = true; // the next messages stay unacknowledged
  await room.sendMessage('m1');
  await room.sendMessage('m2');
  e1.silent = false;
  e1.down = true;
  e1.last.close({ closeCode: 30, reason: 'draining' });
  await until(() => events.some((e) => e.type === 'reconnected'), 3_000, 'reconnected');
  const reconnecting = events.find((e) => e.type === 'reconnecting');
  assert.ok(reconnecting?.type === 'reconnecting' && /GOING_AWAY/.test(reconnecting.reason), JSON.stringify(reconnecting));
  assert.equal(c.edge()?.addr, '127.0.0.2:4433');
  const s2 = e2.last;
  // Edge 1 asked the client to go: not named as unreachable.
  assert.deepEqual(s2.joins().map((j) => [j.token, j.subscribeAll, j.channel, j.memberEdges, j.unreachableEdge]), [['alice', true, 'room', [1, 5], 0]]);
  assert.ok(s2.frames.some((f) => 'publishTrack' in f && f.publishTrack.name === 'mic'));
  await until(() => mic.trackKey !== undefined && mic.trackKey !== oldKey);
  assert.equal(mic.trackKey, (2n << 32n) | 1n, 'the publisher follows the new key');
  assert.deepEqual(s2.messages().map((m) => m.seq), [1, 2], 'the window is replayed in order');
  await until(() => c.getStats().messagesAcked === 2);
  await mic.send(Uint8Array.of(1));
  await until(() => s2.datagrams.length === 1);
  assert.equal(c.getStats().reconnects, 1);
});

test('goaway: redirect with certificate hashes is dialled first, old link kept until restored', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const e3 = net.edge(3, '127.0.0.3:4433');
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  await c.join('alice', 'room');
  const hash = new Uint8Array(32).fill(0xab);
  e1.last.send({ goaway: { reason: 1, reconnectAfterMs: 10, redirect: [{ edgeId: 3, addr: '127.0.0.3:4433', serverName: 'e3.test', certSha256: [hash] }] } });
  await until(() => events.some((e) => e.type === 'reconnected'), 3_000, 'reconnected');
  const d = net.dialled[net.dialled.length - 1]!;
  assert.equal(d.url, 'https://127.0.0.3:4433/rtn-client/1', 'pinned edges are dialled at their address');
  assert.deepEqual(d.options?.serverCertificateHashes?.map((h) => [h.algorithm, Buffer.from(h.value as Uint8Array).toString('hex')]), [['sha-256', 'ab'.repeat(32)]]);
  assert.equal(e3.last.joins().length, 1);
  await until(() => e1.last.closed, 1_000, 'old link closed');
  assert.equal(e1.last.closeInfo?.closeCode, 0);
  assert.equal(c.getStats().goaways, 1);
});

test('goaway: make-before-break, media both ways over both links until every stream moved; unlisted members kept', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const e3 = net.edge(3, '127.0.0.3:4433');
  // Bob publishes cam from edge 5, carol sits on edge 6. The new edge has
  // heard of bob only, under the same key, when alice rejoins.
  const cam = { name: 'cam', trackKey: 0x55n, kind: 2 };
  e1.members = [
    { userId: 'bob', session: 7n, tracks: [cam], edgeId: 5 },
    { userId: 'carol', session: 8n, tracks: [], edgeId: 6 },
  ];
  e3.members = [{ userId: 'bob', session: 7n, tracks: [cam], edgeId: 5 }];
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  const room = await c.join('alice', 'room', { subscribeAll: true });
  const mic = await room.publishTrack('mic', 'audio');
  const oldKey = mic.trackKey!;
  const old = e1.last;
  const bobSays = (s: { sendDatagram(d: Uint8Array): void }, seq: number): void =>
    s.sendDatagram(encodeMedia({ channelId: room.id, trackKey: 0x55n, sequence: seq, timestampUs: 1_000_000n + BigInt(seq) }, Uint8Array.of(seq)));
  bobSays(old, 1);
  old.send({ goaway: { reason: 1, reconnectAfterMs: 5, redirect: [{ edgeId: 3, addr: '127.0.0.3:4433', serverName: 'e3.test', certSha256: [] }] } });
  await until(() => events.some((e) => e.type === 'reconnected'), 3_000, 'reconnected');
  await until(() => mic.trackKey !== oldKey, 1_000, 'republished');
  // Restored on edge 3, the old link still open: bob's media keeps coming
  // over it, and alice's goes to both edges, each under its own key.
  bobSays(old, 2);
  await mic.send(Uint8Array.of(9));
  await until(() => e3.last.datagrams.length === 1 && old.datagrams.length === 1, 1_000, 'media to both edges');
  const keyOf = (d: Uint8Array): bigint | undefined => decodeMedia(d)?.trackKey;
  assert.deepEqual([keyOf(old.datagrams[0]!), keyOf(e3.last.datagrams[0]!)], [oldKey, mic.trackKey]);
  assert.equal(decodeMedia(old.datagrams[0]!)?.sequence, decodeMedia(e3.last.datagrams[0]!)?.sequence, 'the same packet');
  assert.equal(old.closed, false, 'bob has not arrived over the new link yet');
  // Bob's packet 2 arrives again by the new edge: a copy, dropped; then 3.
  bobSays(e3.last, 2);
  bobSays(e3.last, 3);
  await until(() => old.closed, 1_500, 'the old link goes once bob arrives by the new one');
  assert.equal(old.closeInfo?.closeCode, 0);
  const seqs = events.flatMap((e) => (e.type === 'media' ? [e.sequence] : []));
  assert.deepEqual(seqs, [1, 2, 3], 'each packet once');
  assert.equal(c.getStats().mediaDuplicate, 1);
  // Carol, unheard of by the new edge so far, is not reported gone.
  assert.ok(!events.some((e) => e.type === 'member-left' || e.type === 'track-unavailable'), JSON.stringify(types(events)));
});

test('a token refused at rejoin loses the channel for good', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  const room = await c.join('alice', 'room');
  e1.refuseTokens.set('alice', 3); // TOKEN_EXPIRED
  e1.last.close({ closeCode: 31, reason: 'slow reader' });
  await until(() => events.some((e) => e.type === 'channel-lost'), 3_000, 'channel-lost');
  const lost = events.find((e) => e.type === 'channel-lost');
  assert.ok(lost?.type === 'channel-lost' && lost.error.code === 'TOKEN_EXPIRED' && lost.error.permanent);
  await assert.rejects(room.sendMessage('x'), (e: RtnError) => e.code === 'CLOSED');
  // A join refused outright rejects with the typed error.
  e1.refuseTokens.set('bad', 2);
  await assert.rejects(c.join('bad', 'room'), (e: RtnError) => e.code === 'TOKEN_BAD_SIGNATURE' && e.isTokenRefusal);
});

test('liveness: a silent edge is left within the liveness timeout', async () => {
  const { e1, e2, c, events } = await twoEdges();
  await c.join('alice', 'room');
  const t0 = Date.now();
  e1.silent = true;
  await until(() => events.some((e) => e.type === 'reconnected'), 3_000, 'reconnected');
  assert.ok(Date.now() - t0 < 1_000, `moved after ${Date.now() - t0} ms`);
  assert.equal(c.edge()?.addr, '127.0.0.2:4433');
  assert.match((events.find((e) => e.type === 'reconnecting') as { reason: string }).reason, /nothing heard/);
  assert.equal(e2.last.joins().length, 1);
  assert.equal(e2.last.joins()[0]!.unreachableEdge, 1, 'the rejoin names the edge that went silent');
});

/** A client with media flowing from the first of two edges (`net.quicStats`
 * as given, the default keepalive and liveness timeout); `stop()` ends the
 * media. */
async function mediaFromFirstEdge(quicStats: boolean): Promise<Awaited<ReturnType<typeof twoEdges>> & { stop: () => void }> {
  const two = await twoEdges({ keepaliveIntervalMs: 150, livenessTimeoutMs: 500 }, quicStats);
  const { e1, c } = two;
  e1.members = [{ userId: 'bob', session: 7n, tracks: [{ name: 'cam', trackKey: 0x55n, kind: 2 }], edgeId: 1 }];
  const room = await c.join('alice', 'room', { subscribeAll: true });
  let sequence = 0;
  const media = setInterval(() => {
    e1.last.sendDatagram(encodeMedia({ channelId: room.id, trackKey: 0x55n, sequence: sequence++, timestampUs: 1n }, Uint8Array.of(1)));
  }, 20);
  await until(() => c.getStats().mediaReceived > 5 && c.getStats().smoothedRttMs !== undefined, 2_000, 'media and a measured RTT');
  return { ...two, stop: () => clearInterval(media) };
}

const movedWhy = (events: RtnEvent[]): string => (events.find((e) => e.type === 'reconnecting') as { reason: string } | undefined)?.reason ?? '';

test('watchdog: an edge gone without a word while media flows is left well before the liveness timeout, with or without packet counts', async () => {
  for (const quicStats of [true, false]) {
    const { e1, events, stop } = await mediaFromFirstEdge(quicStats);
    try {
      const t0 = performance.now();
      e1.dead = true; // nothing more arrives, not even an ACK
      await until(() => events.some((e) => e.type === 'reconnecting'), 2_000, 'reconnecting');
      const took = performance.now() - t0;
      // Media stops (<= 20 ms), a check 60 ms on, then 100 ms for an answer.
      const why = quicStats ? /not a packet from the edge for 100 ms after a keepalive/ : /no answer from the edge for 100 ms after a keepalive, and its media stopped/;
      assert.match(movedWhy(events), why);
      assert.ok(took >= 150 && took < 400, `left after ${took.toFixed(0)} ms`);
    } finally {
      stop();
    }
  }
});

test('watchdog: a silent edge is left make-before-break, and what its link brings late is played', async () => {
  const { e1, e2, c, events, stop } = await mediaFromFirstEdge(true);
  stop();
  // The media goes on over the first link, whatever else is dialled.
  const old = e1.last;
  let sequence = 1_000;
  const media = setInterval(() => {
    old.sendDatagram(encodeMedia({ channelId: e1.channelId, trackKey: 0x55n, sequence: sequence++, timestampUs: 1n }, Uint8Array.of(1)));
  }, 20);
  try {
    e2.delayMs = 300; // the next edge takes a while to answer
    e1.down = true; // and the silent one takes no new session
    e1.dead = true; // silent: as dead, or a last mile whose round trip just grew
    await until(() => events.some((e) => e.type === 'reconnecting'), 2_000, 'reconnecting');
    assert.ok(!old.closed, 'the silent link stays open while the client moves');
    e1.dead = false; // it was only late
    const before = c.getStats().mediaReceived;
    await until(() => c.getStats().mediaReceived > before + 3, 1_000, 'media over the old link');
    await until(() => events.some((e) => e.type === 'reconnected'), 3_000, 'reconnected');
    assert.equal(c.edge()?.addr, '127.0.0.2:4433');
    assert.equal(e2.last.joins()[0]!.unreachableEdge, 1, 'the rejoin names the edge that went silent');
    await until(() => old.closed, 3_000, 'the old link closed once the overlap is over');
  } finally {
    clearInterval(media);
  }
});

test('watchdog: a hung edge whose transport still answers is left at the liveness timeout', async () => {
  const { e1, events, stop } = await mediaFromFirstEdge(true);
  try {
    const t0 = performance.now();
    // The app stops (media and answers), the QUIC stack acknowledges.
    e1.silent = true;
    stop();
    await until(() => events.some((e) => e.type === 'reconnecting'), 2_000, 'reconnecting');
    const took = performance.now() - t0;
    assert.match(movedWhy(events), /nothing heard from the edge for 500 ms/);
    assert.ok(took >= 480, `left after ${took.toFixed(0)} ms`);
  } finally {
    stop();
  }
});

test('the first connection races the candidates\' handshakes (the controller shortlist too): the fastest wins', async () => {
  const net = new FakeNet();
  net.edge(1, '127.0.0.1:4433').delayMs = 40;
  net.edge(2, '127.0.0.2:4433').delayMs = 2;
  net.edge(3, '127.0.0.3:4433').down = true;
  const answer = {
    client: { ip: '127.0.0.1', source: 'peer', location: null },
    edges: [
      { id: 1, addr: '127.0.0.1:4433', server_name: 'e1.test', cert_sha256: [], city: 'a', region: 'r', load: 0, score: 0, distance_km: null, est_rtt_ms: null },
      { id: 3, addr: '127.0.0.3:4433', server_name: 'e3.test', cert_sha256: ['cd'.repeat(32)], city: 'c', region: 'r', load: 0, score: 1, distance_km: null, est_rtt_ms: null },
      { id: 2, addr: '127.0.0.2:4433', server_name: 'e2.test', city: 'b', region: 'r', load: 0, score: 2, distance_km: null, est_rtt_ms: null },
    ],
  };
  const asked: string[] = [];
  const fetch = (async (url: string) => {
    asked.push(url);
    return new Response(JSON.stringify(answer), { status: 200 });
  }) as typeof globalThis.fetch;
  const { c } = await connect(net, { controller: 'https://ctl.test:8443/', fetch, shortlistLen: 3 });
  assert.deepEqual(asked, ['https://ctl.test:8443/v1/edges/nearest?limit=3']);
  assert.equal(c.edge()?.addr, '127.0.0.2:4433');
});

test('a shortlist gone stale (an edge restarted with a new certificate) is asked for again when no candidate answers', async () => {
  const net = new FakeNet();
  const [e1, e2] = [net.edge(1, '127.0.0.1:4433'), net.edge(2, '127.0.0.2:4433')];
  [e1.certHash, e2.certHash] = ['aa'.repeat(32), 'bb'.repeat(32)];
  e2.delayMs = 20; // e1 wins the first race
  const candidate = (e: typeof e1): object => ({ id: e.id, addr: e.addr, server_name: `e${e.id}.test`, cert_sha256: [e.certHash], city: 'a', region: 'r', load: 0, score: 0, distance_km: null, est_rtt_ms: null });
  let asked = 0;
  const fetch = (async () => {
    asked++;
    return new Response(JSON.stringify({ client: { ip: '127.0.0.1', source: 'peer', location: null }, edges: [candidate(e1), candidate(e2)] }), { status: 200 });
  }) as unknown as typeof globalThis.fetch;
  const { c } = await connect(net, { controller: 'https://ctl.test:8443/', fetch });
  await c.join('alice', 'room');
  // The client's own session (probes open sessions too).
  const joined = (e: typeof e1): (typeof e1.sessions)[number] => e.sessions.find((s) => s.joins().length > 0)!;
  assert.equal(c.edge()?.addr, e1.addr);
  // e1 dies: the client moves to e2. e1 comes back with a new certificate.
  e1.down = true;
  joined(e1).close({ closeCode: 0, reason: 'gone' });
  await until(() => c.edge()?.addr === e2.addr, 2_000, 'moved to e2');
  assert.equal(asked, 1, 'e2 answered: no reason to ask again');
  e1.certHash = 'cc'.repeat(32);
  e1.down = false;
  // e2 dies too: the list pins e1's old certificate, so every round fails
  // until the controllers are asked again.
  e2.down = true;
  joined(e2).close({ closeCode: 0, reason: 'gone' });
  await until(() => c.edge()?.addr === e1.addr, 2_000, 'back on e1, by its new certificate');
  assert.equal(asked, 2);
  const hashes = net.dialled.at(-1)!.options?.serverCertificateHashes?.map((h) => Buffer.from(h.value as Uint8Array).toString('hex'));
  assert.deepEqual(hashes, [e1.certHash]);
});

test('close leaves and closes with code 0; calls after close fail with CLOSED', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  const room = await c.join('alice', 'room');
  await c.close();
  assert.ok(e1.last.closed);
  assert.equal(e1.last.closeInfo?.closeCode, 0);
  assert.ok(e1.last.frames.some((f) => 'leave' in f));
  assert.equal(events[events.length - 1]!.type, 'closed');
  await assert.rejects(room.sendMessage('x'), (e: RtnError) => e.code === 'CLOSED');
  await assert.rejects(c.join('alice', 'room'), (e: RtnError) => e.code === 'CLOSED');
});

test('connect failures are typed', async () => {
  const net = new FakeNet();
  await assert.rejects(Client.connect({ ...FAST, connectRounds: 1, WebTransport: net.WebTransport, edges: [{ addr: '127.0.0.9:1', server_name: 'x' }] }), (e: RtnError) => e.code === 'CONNECT_FAILED');
  await assert.rejects(Client.connect({ ...FAST, edges: [{ addr: '127.0.0.9:1', server_name: 'x' }], WebTransport: undefined }), (e: RtnError) => e.code === 'UNSUPPORTED' || e.code === 'CONNECT_FAILED');
  await assert.rejects(Client.connect({ ...FAST, WebTransport: net.WebTransport }), (e: RtnError) => e.code === 'INVALID');
  await assert.rejects(Client.connect({ ...FAST, edges: [{ addr: 'nope', server_name: 'x' }] }), (e: RtnError) => e.code === 'INVALID');
  await assert.rejects(Client.connect({ ...FAST, livenessTimeoutMs: 10, edges: [{ addr: 'a:1', server_name: 'x' }] }), (e: RtnError) => e.code === 'INVALID' && /liveness/.test(e.message));
});

test('a bad frame from the edge closes the session with its code, then reconnects', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  await c.join('alice', 'room');
  const first = e1.last;
  first.sendRaw(Uint8Array.of(0xff, 0xff, 0xff));
  await until(() => events.some((e) => e.type === 'reconnected'), 3_000, 'reconnected');
  assert.equal(first.closeInfo?.closeCode, 12, 'FRAME_TOO_LARGE');
  assert.match((events.find((e) => e.type === 'reconnecting') as { reason: string }).reason, /bad frame/);
  assert.equal(e1.last.joins().length, 1, 'rejoined on a new session');
});

test('e2ee through the client: sealed media and messages from a native sender open', async () => {
  // The vectors of e2ee.test.ts: alice's media on track "mic" (key id 1,
  // all 7s) and message 5 (key id 3, all 9s), in channel demo/room.
  const { ChannelKey, E2eeKeys } = await import('../src/e2ee');
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  e1.members = [{ userId: 'alice', session: 1n, tracks: [{ name: 'mic', trackKey: (7n << 32n) | 1n, kind: 1 }], edgeId: 0 }];
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }], maxMediaLatenessMs: null });
  const k1 = new ChannelKey(1, new Uint8Array(32).fill(7));
  const k3 = new ChannelKey(3, new Uint8Array(32).fill(9));
  const room = await c.join('bob', 'room', { subscribeAll: true, e2ee: E2eeKeys.of(k3).also(k1) });
  assert.ok(room.isE2ee);
  assert.deepEqual(room.keys(), { ids: [1, 3], send: 3 });
  const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
  e1.last.sendDatagram(hex('01963c416800b67c5b00000007000000010000002a000665172898800001000000000000006302659caafcfd038dedbf7802a8bf0eee7732025e1802fb1cca47'));
  // Message 5 comes as alice's replay to bob (addressed to him), which
  // opens her sequence there: a live message above 1 would wait for it.
  e1.last.send({ message: { channelId: room.id, fromUser: 'alice', seq: 5, payload: hex('03000000000000004d47bd8e5a8ac8237b8a3fbeb7cd8c246caaa570f030'), sentAtUs: 1234, toUser: 'bob' } });
  // A message that does not open is dropped and reported once.
  e1.last.send({ message: { channelId: room.id, fromUser: 'alice', seq: 6, payload: Uint8Array.of(1, 2, 3), sentAtUs: 1, toUser: '' } });
  await until(() => events.some((e) => e.type === 'undecryptable'), 2_000, 'undecryptable');
  const media = events.find((e) => e.type === 'media');
  const msg = events.find((e) => e.type === 'message');
  assert.ok(media?.type === 'media' && new TextDecoder().decode(media.payload) === 'opus frame');
  assert.ok(msg?.type === 'message' && new TextDecoder().decode(msg.payload) === 'hello' && msg.seq === 5);
  assert.equal(c.getStats().messagesUndecryptable, 1);
  // Our own messages go out sealed (key id 3 first byte, 25 bytes more).
  await room.sendMessage('x');
  await until(() => e1.last.messages().length === 1);
  const sent = e1.last.messages()[0]!;
  assert.deepEqual([sent.payload[0], sent.payload.length], [3, 26]);
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const nacksOf = (s: { datagrams: Uint8Array[] }): Uint8Array[] => s.datagrams.filter((d) => d[0] === TYPE_NACK);

/** A client joined to a channel where bob publishes an audio track. */
async function withBob(repair: boolean): Promise<{ e1: ReturnType<FakeNet['edge']>; c: Client; events: RtnEvent[]; room: Channel; mic: bigint; media: (seq: number, timestampUs?: bigint) => void }> {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const mic = (7n << 32n) | (1n << 30n) | 5n; // kind audio (§6)
  e1.members = [{ userId: 'bob', session: 7n, tracks: [{ name: 'mic', trackKey: mic, kind: 1 }], edgeId: 0 }];
  const { c, events } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }], repair });
  const room = await c.join('alice', 'room', { subscribeAll: true });
  const media = (seq: number, timestampUs = BigInt(Date.now() * 1000)): void =>
    e1.last.sendDatagram(encodeMedia({ channelId: room.id, trackKey: mic, sequence: seq, timestampUs }, Uint8Array.of(seq)));
  return { e1, c, events, room, mic, media };
}

const sequences = (ev: RtnEvent[]): number[] => ev.flatMap((e) => (e.type === 'media' ? [e.sequence] : []));

test('loss repair, receiving: a gap is NACKed back on its link, the retransmission fills it, a duplicate is dropped', async () => {
  const { e1, c, events, room, mic, media } = await withBob(true);
  const started = performance.now();
  for (const seq of [0, 1, 4]) media(seq);
  await until(() => nacksOf(e1.last).length > 0, 1_000, 'a NACK');
  assert.ok(performance.now() - started >= 3, 'not before the reorder grace (ms-granular timers)');
  const nack = decodeNack(nacksOf(e1.last)[0]!)!;
  assert.deepEqual(nack, { channelId: room.id, trackKey: mic, seqs: [2, 3] });
  media(3); // reordered or retransmitted: fills its gap
  media(2);
  media(3); // the original after its retransmission: dropped
  await until(() => c.getStats().mediaDuplicate === 1);
  const st = c.getStats();
  assert.deepEqual([st.mediaRecovered, st.mediaDuplicate, st.mediaReceived, st.mediaLost], [2, 1, 5, 0]);
  assert.ok(st.mediaNacked >= 2);
  assert.deepEqual(sequences(events), [0, 1, 4, 3, 2], 'each packet once');
  // Nothing missing: no more NACKs.
  const sent = nacksOf(e1.last).length;
  await sleep(60);
  assert.equal(nacksOf(e1.last).length, sent);
  // A gap never filled is asked for at most four times, then given up.
  media(6);
  await sleep(250);
  const asked = nacksOf(e1.last).slice(sent).map((d) => decodeNack(d)!.seqs);
  assert.ok(asked.length >= 1 && asked.length <= 4, `asked ${asked.length} times`);
  assert.ok(asked.every((s) => s.length === 1 && s[0] === 5));
});

test('loss repair, sending: the edge\'s NACK gets the very datagram again, once; malformed NACKs are counted', async () => {
  const net = new FakeNet();
  const e1 = net.edge(1, '127.0.0.1:4433');
  const { c } = await connect(net, { edges: [{ addr: '127.0.0.1:4433', server_name: 'e1.test' }] });
  const room = await c.join('alice', 'room');
  const mic = await room.publishTrack('mic', 'audio');
  for (const n of [1, 2, 3]) await mic.send(new Uint8Array(n * 10).fill(n));
  const s = e1.last;
  await until(() => s.datagrams.length === 3);
  const sent = [...s.datagrams];
  assert.equal(c.getStats().mediaSentBytes, sent.reduce((n, d) => n + d.length, 0));
  // Seq 1 twice and 9 (never sent): seq 1 once.
  for (const d of encodeNack({ channelId: room.id, trackKey: mic.trackKey!, seqs: [1, 1, 9] })) s.sendDatagram(d);
  // Another track: nothing.
  for (const d of encodeNack({ channelId: room.id, trackKey: 12345n, seqs: [0] })) s.sendDatagram(d);
  s.sendDatagram(Uint8Array.of(TYPE_NACK, 1, 2, 3));
  await until(() => c.getStats().mediaMalformed === 1);
  await until(() => s.datagrams.length === 4);
  assert.deepEqual(s.datagrams[3], sent[1]);
  const st = c.getStats();
  assert.deepEqual([st.mediaResent, st.mediaResentBytes, st.mediaSent], [1, sent[1]!.length, 3]);
  await sleep(20);
  assert.equal(s.datagrams.length, 4);
});

test('loss repair off: no NACKs sent, none answered; exact copies still dropped', async () => {
  const { e1, c, events, room, media } = await withBob(false);
  const sentUs = BigInt(Date.now() * 1000);
  for (const seq of [0, 2, 2]) media(seq, sentUs);
  await until(() => c.getStats().mediaReceived === 2 && c.getStats().mediaDuplicate === 1);
  await sleep(40);
  assert.equal(nacksOf(e1.last).length, 0);
  assert.deepEqual(sequences(events), [0, 2]);
  const st = c.getStats();
  assert.deepEqual([st.mediaNacked, st.mediaRecovered, st.mediaDuplicate], [0, 0, 1]);
  // The edge's NACKs are ignored (nothing was kept).
  const cam = await room.publishTrack('cam', 'video');
  await cam.send(Uint8Array.of(1));
  await until(() => e1.last.datagrams.length === 1);
  for (const d of encodeNack({ channelId: room.id, trackKey: cam.trackKey!, seqs: [0] })) e1.last.sendDatagram(d);
  await sleep(20);
  assert.equal(e1.last.datagrams.length, 1);
  assert.deepEqual([c.getStats().mediaResent, c.getStats().mediaSentBytes], [0, 30]);
});

test('QUIC\'s packet count and smoothed round trip come from WebTransport.getStats() where the browser has them', async () => {
  const net = new FakeNet();
  net.edge(1, '127.0.0.1:4433');
  const edge = { addr: '127.0.0.1:4433', server_name: 'e1.test' };
  const handlers = { frame: () => {}, datagram: () => {}, lost: () => {} };
  const Base = net.WebTransport as unknown as new (url: string, o?: WebTransportOptions) => object;
  const withStats = (getStats: () => Promise<unknown>): WebTransportCtor =>
    class extends Base {
      getStats = getStats;
    } as unknown as WebTransportCtor;
  let calls = 0;
  const chromium = await Link.open(edge, withStats(async () => (calls++, { smoothedRtt: 42.5, minRtt: 40, packetsReceived: 7 })), 1_000, handlers);
  assert.equal(await chromium.packetsReceived(), 7);
  assert.deepEqual([chromium.rttMs, calls], [42.5, 1]);
  chromium.close(0, 'done');
  // Firefox defines getStats but rejects: not asked again, no value.
  const firefox = await Link.open(edge, withStats(() => (calls++, Promise.reject(new Error('not implemented')))), 1_000, handlers);
  assert.equal(await firefox.packetsReceived(), undefined);
  calls = 0;
  assert.equal(await firefox.packetsReceived(), undefined);
  assert.deepEqual([firefox.rttMs, calls], [undefined, 0]);
  firefox.close(0, 'done');
  // A browser slower than the watchdog can wait: no count this time only.
  const slow = await Link.open(edge, withStats(() => (calls++, sleep(80).then(() => ({ packetsReceived: 3 })))), 1_000, handlers);
  assert.equal(await slow.packetsReceived(), undefined);
  assert.equal(await slow.packetsReceived(), undefined);
  assert.equal(calls, 2);
  slow.close(0, 'done');
  const none = await Link.open(edge, net.WebTransport, 1_000, handlers);
  assert.equal(await none.packetsReceived(), undefined);
  assert.equal(none.rttMs, undefined);
  none.close(0, 'done');
});
