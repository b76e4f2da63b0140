// Choosing the edge: the "clear gain" rule, ranking, re-ranking, and the
// controller lookup (sdk/src/nearest.rs's tests).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { edgeTarget, type EdgeCandidate } from '../src/connection';
import { RtnError } from '../src/errors';
import { LAST_SHORTLIST_MAX_AGE_MS, fetchShortlist, fetchShortlistFrom, rank, rerank, shortlistOrLast, shouldSwitch } from '../src/nearest';

const edge = (port: number): EdgeCandidate => ({ addr: `127.0.0.1:${port}`, server_name: `e${port}` });
/** The live link's RTT where a test does not care. */
const LIVE = 20;
const ports = (es: EdgeCandidate[]): number[] => es.map((e) => Number(e.addr.split(':')[1]));

test('switch only for a clear improvement', () => {
  assert.ok(shouldSwitch(undefined, 80), 'a dead current edge is always left');
  assert.ok(shouldSwitch(90, 40));
  assert.ok(!shouldSwitch(90, 70), '20 ms but not a third faster');
  assert.ok(!shouldSwitch(12, 4), 'a third faster but under 10 ms');
  assert.ok(shouldSwitch(30, 20));
  assert.ok(!shouldSwitch(30, 21));
  // Never flapping: the figures that justify A -> B never justify B -> A.
  for (let a = 1; a < 400; a += 3) for (let b = 1; b < 400; b += 7) if (shouldSwitch(a, b)) assert.ok(!shouldSwitch(b, a), `${a} ${b}`);
});

test('ranking: fastest first, silent last in their order', () => {
  assert.deepEqual(ports(rank([[edge(1), undefined], [edge(2), 30], [edge(3), 10], [edge(4), undefined]]).map(([e]) => e)), [3, 2, 1, 4]);
});

test('re-ranking reorders and moves only for a clear gain', () => {
  const on1 = edge(1).addr;
  let r = rerank(on1, [[edge(1), 90], [edge(2), undefined], [edge(3), 40]], LIVE);
  assert.deepEqual([r.moveTo?.addr, ports(r.order)], [edge(3).addr, [3, 1, 2]]);
  r = rerank(on1, [[edge(1), 30], [edge(2), 21]], LIVE);
  assert.deepEqual([r.moveTo, ports(r.order)], [undefined, [2, 1]]);
  r = rerank(on1, [[edge(2), 50], [edge(1), 5]], LIVE);
  assert.deepEqual([r.moveTo, ports(r.order)], [undefined, [1, 2]]);
  // A current edge whose probe went unanswered counts at its live link's
  // RTT: kept against a slower edge, left for a clearly faster one.
  assert.equal(rerank(on1, [[edge(1), undefined], [edge(2), 50]], 20).moveTo, undefined);
  assert.deepEqual(rerank(on1, [[edge(1), undefined], [edge(2), 50]], 20).order.map((e) => e.addr), [edge(1).addr, edge(2).addr]);
  assert.equal(rerank(on1, [[edge(1), undefined], [edge(2), 50]], 90).moveTo?.addr, edge(2).addr);
  assert.equal(rerank(on1, [[edge(1), undefined], [edge(2), undefined]], 20).moveTo, undefined);
  // On a goaway redirect (not a candidate): kept whatever the candidates say.
  assert.equal(rerank(edge(9).addr, [[edge(1), 1], [edge(2), 90]], LIVE).moveTo, undefined);
  // The first measurement after the handshake race settles it on a smaller
  // gain: 16 -> 8 ms moves then, not later; noise (2 ms, under a fifth) never.
  assert.equal(rerank(on1, [[edge(1), 16], [edge(2), 8]], LIVE).moveTo, undefined);
  assert.equal(rerank(on1, [[edge(1), 16], [edge(2), 8]], LIVE, true).moveTo?.addr, edge(2).addr);
  assert.equal(rerank(on1, [[edge(1), 10], [edge(2), 8]], LIVE, true).moveTo, undefined);
  assert.equal(rerank(on1, [[edge(1), 40], [edge(2), 34]], LIVE, true).moveTo, undefined);
});

test('session URLs: pinned hashes dial the address, WebPKI the name', () => {
  const pinned = edgeTarget({ addr: '[2001:db8::7]:4433', server_name: 'e7', cert_sha256: ['5c'.repeat(32)] });
  assert.equal(pinned.url, 'https://[2001:db8::7]:4433/rtn-client/1');
  assert.equal(pinned.options.serverCertificateHashes?.[0]?.algorithm, 'sha-256');
  assert.equal((pinned.options.serverCertificateHashes?.[0]?.value as Uint8Array).length, 32);
  assert.equal(edgeTarget({ addr: '203.0.113.7:4433', server_name: 'edge3.example.net', cert_sha256: [] }).url, 'https://edge3.example.net:4433/rtn-client/1');
});

const respond = (status: number, body: unknown) => (async () => new Response(typeof body === 'string' ? body : JSON.stringify(body), { status })) as typeof fetch;

test('controller lookup: answers, errors, CORS', async () => {
  const answer = { client: {}, edges: [{ addr: '203.0.113.7:4433', server_name: 'edge3.example.net', cert_sha256: [] }, { addr: 'bad' }, { addr: '203.0.113.8:4433', server_name: '', cert_sha256: ['ab'.repeat(32)] }] };
  const got = await fetchShortlist('http://ctl:8080', 4, 1_000, respond(200, answer));
  assert.deepEqual(got.map((e) => e.addr), ['203.0.113.7:4433', '203.0.113.8:4433'], 'undialable edges are skipped');
  const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: RtnError) => `${e.code}: ${e.message}`);
  assert.match(await code(fetchShortlist('https://ctl', 4, 1_000, respond(429, { error: { code: 'rate_limited', message: 'slow down' } }))), /^CONTROLLER: .*429: rate_limited: slow down/);
  assert.match(await code(fetchShortlist('https://ctl', 4, 1_000, respond(200, { client: {}, edges: [] }))), /^CONTROLLER: .*knows no edge/);
  assert.match(await code(fetchShortlist('https://ctl', 4, 1_000, respond(200, '<html>'))), /^CONTROLLER: .*not JSON/);
  const cors = (async () => {
    throw new TypeError('Failed to fetch');
  }) as typeof fetch;
  assert.match(await code(fetchShortlist('https://ctl', 4, 1_000, cors)), /^CONTROLLER_UNREACHABLE: .*CORS/);
  const never = ((_: string, init: RequestInit) => new Promise((_r, reject) => init.signal!.addEventListener('abort', () => reject(new Error('aborted'))))) as typeof fetch;
  assert.match(await code(fetchShortlist('https://ctl', 4, 50, never)), /^CONTROLLER_UNREACHABLE: .*no answer within 50 ms/);
  assert.match(await code(fetchShortlist('ftp://ctl', 4, 50, never)), /^INVALID/);
  assert.match(await code(fetchShortlist('not a url', 4, 50, never)), /^INVALID/);
});

test('several controllers: the next is asked when one fails', async () => {
  const answer = { client: {}, edges: [{ addr: '203.0.113.7:4433', server_name: 'edge3.example.net', cert_sha256: [] }] };
  const asked: string[] = [];
  // ctl-a is unreachable, ctl-b rate-limits, ctl-c answers.
  const net = (async (url: string) => {
    const host = new URL(url).hostname;
    asked.push(host);
    if (host === 'ctl-a') throw new TypeError('Failed to fetch');
    if (host === 'ctl-b') return new Response(JSON.stringify({ error: { code: 'rate_limited', message: 'slow down' } }), { status: 429 });
    return new Response(JSON.stringify(answer), { status: 200 });
  }) as typeof fetch;
  const got = await fetchShortlistFrom(['https://ctl-a', 'https://ctl-b', 'https://ctl-c', 'https://ctl-d'], 4, 1_000, net);
  assert.deepEqual(got.map((e) => e.addr), ['203.0.113.7:4433']);
  assert.deepEqual(asked, ['ctl-a', 'ctl-b', 'ctl-c'], 'in order, and no further than the first answer');
  const code = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: RtnError) => `${e.code}: ${e.message}`);
  const failed = await code(fetchShortlistFrom(['https://ctl-a', 'https://ctl-b'], 4, 1_000, net));
  assert.match(failed, /^CONTROLLER: no controller answered \(https:\/\/ctl-a: .*Failed to fetch.*; https:\/\/ctl-b: .*429/);
  assert.match(await code(fetchShortlistFrom(['ftp://ctl', 'https://ctl-c'], 4, 1_000, net)), /^INVALID/, 'a bad URL is the app\'s mistake');
});

test('every controller down: the last shortlist they gave stands in, for an hour', async () => {
  const answer = { client: {}, edges: [{ addr: '203.0.113.7:4433', server_name: 'edge7', cert_sha256: [] }] };
  const down = (async () => { throw new TypeError('fetch failed'); }) as typeof fetch;
  const ctls = ['https://ctl-x', 'https://ctl-y'];
  let t = 1_000;
  const now = (): number => t;
  await assert.rejects(shortlistOrLast(ctls, 4, 1_000, down, now), /no controller answered/, 'nothing to stand in yet');
  assert.deepEqual((await shortlistOrLast(ctls, 4, 1_000, respond(200, answer), now)).map((e) => e.addr), ['203.0.113.7:4433']);
  t += LAST_SHORTLIST_MAX_AGE_MS - 1;
  assert.deepEqual((await shortlistOrLast(ctls, 4, 1_000, down, now)).map((e) => e.addr), ['203.0.113.7:4433']);
  await assert.rejects(shortlistOrLast(['https://ctl-x'], 4, 1_000, down, now), /CONTROLLER|fetch failed|lookup/, 'another list of controllers has its own');
  t += 1;
  await assert.rejects(shortlistOrLast(ctls, 4, 1_000, down, now), /no controller answered/, 'an hour old: stale');
  await assert.rejects(shortlistOrLast(['ftp://ctl'], 4, 1_000, down, now), (e: RtnError) => e.code === 'INVALID');
});
