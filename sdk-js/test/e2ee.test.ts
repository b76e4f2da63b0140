// End-to-end encryption: the docs/e2ee.md format, byte for byte.
//
// The fixed vectors below were computed independently of this code, with
// Python's `cryptography` (HKDF-SHA256 + AESGCM) following docs/e2ee.md,
// for the inputs of sdk/src/e2ee.rs's own tests (channel demo/room, key id
// 1 filled with 7s, "alice", track "mic", header(42), salt 99; key id 3
// filled with 9s, message 5 at 1234 µs, base 77).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChannelKey, E2eeKeys, KeyRing, MAX_KEYS, OVERHEAD, streamSalt } from '../src/e2ee';
import { RtnError } from '../src/errors';
import { encodeMedia, MEDIA_HEADER_LEN } from '../src/media';

const CH = 0x963c416800b67c5bn;
const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const key = (id: number, fill: number): ChannelKey => new ChannelKey(id, new Uint8Array(32).fill(fill));
const ring = (me: string, k: ChannelKey): KeyRing => new KeyRing(CH, me, E2eeKeys.of(k));
const header = (seq: number): Uint8Array => encodeMedia({ channelId: CH, trackKey: (7n << 32n) | 1n, sequence: seq, timestampUs: 1_800_000_000_000_000n }, new Uint8Array(0));
const text = (s: string): Uint8Array => new TextEncoder().encode(s);

const MEDIA_VECTOR = '01963c416800b67c5b00000007000000010000002a000665172898800001000000000000006302659caafcfd038dedbf7802a8bf0eee7732025e1802fb1cca47';
const MESSAGE_VECTOR = '03000000000000004d47bd8e5a8ac8237b8a3fbeb7cd8c246caaa570f030';
const MESSAGE_WRAP_VECTOR = '030000000000000000398085222ff9f97c1d5f30d593c0419533c92951';

async function failure(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof RtnError && e.code === 'E2EE');
    return e.e2ee;
  }
  assert.fail('expected an e2ee failure');
}

test('sealing matches the fixed vectors', async () => {
  const d = await ring('alice', key(1, 7)).sealMedia(header(42), 'mic', 99n, 42, text('opus frame'));
  assert.equal(toHex(d), MEDIA_VECTOR);
  assert.equal(d.length, MEDIA_HEADER_LEN + OVERHEAD + 10);
  const m = await ring('alice', key(3, 9)).sealMessage(5, 1234, 77n, text('hello'));
  assert.equal(toHex(m), MESSAGE_VECTOR);
  // seq past 2^32 from a base at the top: the salt wraps to 0, the nonce
  // takes the low 32 bits of the seq.
  const w = await ring('bob', key(3, 9)).sealMessage(2 ** 32 + 5, 1234, 2n ** 64n - 1n, text('wrap'));
  assert.equal(toHex(w), MESSAGE_WRAP_VECTOR);
});

test('opening the fixed vectors', async () => {
  const bob = ring('bob', key(1, 7));
  assert.equal(new TextDecoder().decode(await bob.openMedia(hex(MEDIA_VECTOR), 'alice', 'mic')), 'opus frame');
  const carol = ring('carol', key(3, 9));
  assert.equal(new TextDecoder().decode(await carol.openMessage('alice', 5, 1234, hex(MESSAGE_VECTOR))), 'hello');
  assert.equal(new TextDecoder().decode(await carol.openMessage('bob', 2 ** 32 + 5, 1234, hex(MESSAGE_WRAP_VECTOR))), 'wrap');
});

test('every bound field is checked', async () => {
  const bob = ring('bob', key(1, 7));
  const d = hex(MEDIA_VECTOR);
  const rejected = { kind: 'rejected', keyId: 1 };
  for (let i = 0; i < d.length; i++) {
    if (i === MEDIA_HEADER_LEN) continue; // the key id byte: unknown key instead
    const t = d.slice();
    t[i]! ^= 1;
    assert.deepEqual(await failure(bob.openMedia(t, 'alice', 'mic')), rejected, `byte ${i}`);
  }
  assert.deepEqual(await failure(bob.openMedia(d, 'mallory', 'mic')), rejected);
  assert.deepEqual(await failure(bob.openMedia(d, 'alice', 'cam')), rejected);
  const other = new KeyRing(CH ^ 1n, 'bob', E2eeKeys.of(key(1, 7)));
  assert.deepEqual(await failure(other.openMedia(d, 'alice', 'mic')), rejected);
  const m = hex(MESSAGE_VECTOR);
  const carol = ring('carol', key(3, 9));
  const r3 = { kind: 'rejected', keyId: 3 };
  assert.deepEqual(await failure(carol.openMessage('mallory', 5, 1234, m)), r3);
  assert.deepEqual(await failure(carol.openMessage('alice', 6, 1234, m)), r3);
  assert.deepEqual(await failure(carol.openMessage('alice', 5 + 2 ** 32, 1234, m)), r3);
  assert.deepEqual(await failure(carol.openMessage('alice', 5, 1235, m)), r3);
});

test('unknown key ids, short payloads, no send key, too large', async () => {
  const alice = ring('alice', key(1, 7));
  const d = hex(MEDIA_VECTOR);
  assert.deepEqual(await failure(ring('dave', key(2, 7)).openMedia(d, 'alice', 'mic')), { kind: 'unknown-key-id', keyId: 1 });
  assert.deepEqual(await failure(alice.openMedia(encodeMedia({ channelId: CH, trackKey: 1n, sequence: 1, timestampUs: 1n }, text('hi')), 'bob', 'mic')), { kind: 'malformed' });
  assert.deepEqual(await failure(alice.openMessage('bob', 1, 1, new Uint8Array(OVERHEAD - 1))), { kind: 'malformed' });
  const keyless = new KeyRing(CH, 'erin', E2eeKeys.pending());
  await assert.rejects(keyless.sealMessage(1, 1, 5n, text('x')), (e: RtnError) => e.e2ee?.kind === 'no-send-key');
  await assert.rejects(alice.sealMedia(header(1), 'mic', 1n, 1, new Uint8Array(976)), (e: RtnError) => e.e2ee?.kind === 'too-large');
  assert.ok(await alice.sealMedia(header(1), 'mic', 1n, 1, new Uint8Array(975)));
});

test('rotation: add, switch, retire', async () => {
  const [k1, k2] = [key(1, 0x11), key(2, 0x22)];
  const alice = ring('alice', k1);
  const bob = ring('bob', k1);
  const old = await alice.sealMessage(1, 1, 5n, text('under k1'));
  bob.addKey(k2);
  alice.addKey(k2);
  assert.equal(alice.sendKeyId(), 1);
  alice.setKey(k2);
  const fresh = await alice.sealMessage(2, 2, 5n, text('under k2'));
  assert.equal(fresh[0], 2);
  assert.ok(await bob.openMessage('alice', 1, 1, old));
  assert.ok(await bob.openMessage('alice', 2, 2, fresh));
  assert.ok(bob.removeKey(1));
  assert.equal(bob.sendKeyId(), undefined);
  assert.deepEqual(await failure(bob.openMessage('alice', 1, 1, old)), { kind: 'unknown-key-id', keyId: 1 });
  // A key replaced under the same id no longer opens the old payloads.
  bob.addKey(key(2, 0x33));
  assert.deepEqual(await failure(bob.openMessage('alice', 2, 2, fresh)), { kind: 'rejected', keyId: 2 });
  // At most MAX_KEYS, the send key kept.
  const r = ring('x', key(1, 1));
  for (let id = 2; id <= 5; id++) r.addKey(key(id, id));
  assert.equal(r.keyIds().length, MAX_KEYS);
  assert.ok(r.keyIds().includes(1));
  assert.deepEqual(new KeyRing(CH, 'a', E2eeKeys.of(key(9, 9)).also(key(8, 8))).keyIds(), [8, 9]);
});

test('failures are reported once until the sender recovers', () => {
  const r = ring('bob', key(1, 1));
  const e = { kind: 'unknown-key-id', keyId: 2 } as const;
  assert.ok(r.noteFailure('alice', e));
  assert.ok(!r.noteFailure('alice', e));
  assert.ok(r.noteFailure('carol', e));
  assert.ok(r.noteFailure('alice', { kind: 'malformed' }));
  r.noteSuccess('alice');
  assert.ok(r.noteFailure('alice', e));
  assert.ok(!r.noteFailure('carol', e));
});

test('key text form and salts', () => {
  const k = ChannelKey.generate(4);
  const t = k.toText();
  assert.match(t, /^4:[0-9a-f]{64}$/);
  assert.equal(ChannelKey.parse(t).toText(), t);
  assert.ok(!JSON.stringify(k).includes(t.slice(2, 10)));
  for (const bad of ['', '4', '4:00', `256:${'0'.repeat(64)}`, 'x:00', `1:${'g'.repeat(64)}`]) assert.throws(() => ChannelKey.parse(bad), RtnError, bad);
  assert.equal(ChannelKey.parse(`1:${'Ab'.repeat(32)}`).id, 1);
  assert.equal(streamSalt(5n, 2n ** 32n - 1n), 5n);
  assert.equal(streamSalt(5n, 2n ** 32n), 6n);
  assert.equal(streamSalt(2n ** 64n - 1n, 2n ** 32n), 0n);
});
