// The Node token helper mints standard JWTs (docs/protocol.md §7): HS256
// header, RTN's claims with their JSON types, a MAC over the first two parts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mintToken } from '../src/token-server';

const part = (s: string): unknown => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
const split = (t: string): [string, string, string] => {
  const p = t.split('.');
  assert.equal(p.length, 3);
  return [p[0] ?? '', p[1] ?? '', p[2] ?? ''];
};
const claims = (t: string) => part(split(t)[1]) as Record<string, unknown>;

test('a token is an HS256 JWT whose MAC covers its first two parts', () => {
  const t = mintToken({ secret: 'demo-secret', appId: 'demo', channel: 'room', userId: 'alice', publish: true, issuedAt: 100, expiresAt: 160 });
  const [header, body, sig] = split(t);
  for (const p of [header, body, sig]) assert.match(p, /^[A-Za-z0-9_-]+$/);
  assert.deepEqual(part(header), { alg: 'HS256', typ: 'JWT' });
  assert.deepEqual(part(body), { iss: 'demo', sub: 'alice', channel: 'room', publish: true, subscribe: false, iat: 100, exp: 160 });
  const mac = createHmac('sha256', 'demo-secret').update(`${header}.${body}`).digest();
  assert.equal(mac.length, 32);
  assert.equal(sig, mac.toString('base64url'));
  // Bytes work as the secret too.
  assert.equal(mintToken({ secret: Buffer.from('demo-secret'), appId: 'demo', channel: 'room', userId: 'alice', publish: true, issuedAt: 100, expiresAt: 160 }), t);
});

test('rights default to none, lifetime to an hour from now; names are JSON-escaped', () => {
  const before = Math.floor(Date.now() / 1000);
  const c = claims(mintToken({ secret: 's', appId: 'a"pp', channel: 'salle ✓', userId: 'u\\1' }));
  const after = Math.floor(Date.now() / 1000);
  assert.equal(c.publish, false);
  assert.equal(c.subscribe, false);
  assert.equal(c.iss, 'a"pp');
  assert.equal(c.channel, 'salle ✓');
  assert.equal(c.sub, 'u\\1');
  const iat = c.iat as number;
  assert.ok(before <= iat && iat <= after);
  assert.equal(c.exp, iat + 3_600);
  const ttl = claims(mintToken({ secret: 's', appId: 'a', channel: 'c', userId: 'u', issuedAt: 10, ttlSeconds: 5 }));
  assert.equal(ttl.exp, 15);
});

test('times must be whole seconds', () => {
  const base = { secret: 's', appId: 'a', channel: 'c', userId: 'u' };
  assert.throws(() => mintToken({ ...base, expiresAt: 1.5 }), RangeError);
  assert.throws(() => mintToken({ ...base, issuedAt: -1 }), RangeError);
  assert.throws(() => mintToken({ ...base, ttlSeconds: Number.NaN }), RangeError);
});
