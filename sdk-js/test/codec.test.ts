// Wire codecs against the vectors of docs/protocol.md (§3, §5, §6, §7, §12).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FrameDecoder, FrameError, MAX_FRAME_LEN, encodeFrame } from '../src/framing';
import { decodeMedia, encodeMedia } from '../src/media';
import { DecodeError, decodeServerFrame, encodeClientFrame, MemberLeftReason, Writer } from '../src/proto';
import { channelId, mintToken } from '../src/token-server';
import { ErrorCode, fromWire, RtnError, wireName } from '../src/errors';
import { encodeServerFrame } from './server-frames';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/[\s|]/g, ''), 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('§12 frame vectors: keepalive and join', () => {
  assert.equal(toHex(encodeFrame(encodeClientFrame({ keepalive: { nonce: 1n } }))), '0442020801');
  const join = encodeFrame(encodeClientFrame({ join: { requestId: 1, token: 'e30.e30.', subscribeAll: true, channel: 'room' } }));
  assert.equal(toHex(join), toHex(hex('16 0a 14 08 01 12 08 65 33 30 2e 65 33 30 2e 18 01 22 04 72 6f 6f 6d')));
});

test('every client frame kind encodes with its field number and round-trips its fields', () => {
  const kinds: [Parameters<typeof encodeClientFrame>[0], number][] = [
    [{ join: { requestId: 0, token: '', subscribeAll: false, channel: '' } }, 1],
    [{ leave: { requestId: 2, channelId: 0x963c416800b67c5bn } }, 2],
    [{ publishTrack: { requestId: 3, channelId: 1n, name: 'mic', kind: 1 } }, 3],
    [{ unpublishTrack: { requestId: 4, channelId: 1n, trackKey: (7n << 32n) | 1n } }, 4],
    [{ subscribe: { requestId: 5, channelId: 1n, userId: 'bob' } }, 5],
    [{ unsubscribe: { requestId: 6, channelId: 1n, userId: '' } }, 6],
    [{ message: { channelId: 1n, fromUser: '', seq: 9, payload: Uint8Array.of(1, 2), sentAtUs: 1_800_000_000_000_000, toUser: 'bob' } }, 7],
    [{ keepalive: { nonce: 0xffff_ffff_ffff_ffffn } }, 8],
  ];
  for (const [f, field] of kinds) {
    const b = encodeClientFrame(f);
    assert.equal(b[0], (field << 3) | 2, `field ${field}`);
    assert.equal(b[1], b.length - 2, 'one-byte length for these small frames');
  }
  // An empty Join still sets the kind (a present, empty sub-message).
  assert.equal(toHex(encodeClientFrame(kinds[0]![0])), '0a00');
  // A u64 nonce uses all ten varint bytes.
  assert.equal(toHex(encodeClientFrame({ keepalive: { nonce: 0xffff_ffff_ffff_ffffn } })), '420b08ffffffffffffffffff01');
});

test('server frames decode, unknown fields are skipped, unknown kinds are undefined', () => {
  const frames: Parameters<typeof encodeServerFrame>[0][] = [
    { joined: { requestId: 1, channel: 'room', channelId: 0x963c416800b67c5bn, userId: 'alice', edgeId: 7, members: [{ userId: 'bob', session: 42n, tracks: [{ name: 'cam', trackKey: (7n << 32n) | 9n, kind: 2 }], edgeId: 3 }], memberCount: 0, large: false } },
    { joined: { requestId: 1, channel: 'room', channelId: 5n, userId: 'alice', edgeId: 7, members: [], memberCount: 10_000, large: true } },
    { left: { requestId: 2, channelId: 5n } },
    { trackPublished: { requestId: 3, channelId: 5n, name: 'mic', trackKey: 123n } },
    { error: { requestId: 0, code: 18, message: 'next seq is 4' } },
    { memberJoined: { channelId: 5n, userId: 'bob', session: 1n, edgeId: 4 } },
    { memberLeft: { channelId: 5n, userId: 'bob', session: 1n, reason: 0 } },
    { memberLeft: { channelId: 5n, userId: 'bob', session: 2n, reason: MemberLeftReason.hidden } },
    { memberCount: { channelId: 5n, members: 101, large: true } },
    { memberCount: { channelId: 5n, members: 50, large: false } },
    { trackAvailable: { channelId: 5n, userId: 'bob', track: { name: 'cam', trackKey: 3n, kind: 2 } } },
    { trackUnavailable: { channelId: 5n, userId: 'bob', trackKey: 3n } },
    { message: { channelId: 5n, fromUser: 'bob', seq: 3, payload: Uint8Array.of(104, 105), sentAtUs: 1_800_000_000_000_001, toUser: '' } },
    { messageAck: { channelId: 5n, seq: 3 } },
    { goaway: { reason: 1, reconnectAfterMs: 50, redirect: [{ edgeId: 2, addr: '127.0.0.1:4433', serverName: 'e2', certSha256: [new Uint8Array(32).fill(0x5c)] }] } },
    { keepaliveAck: { nonce: 0xdead_beef_0000_0001n } },
    { subscribed: { requestId: 9, channelId: 5n, userId: '' } },
  ];
  for (const f of frames) assert.deepEqual(decodeServerFrame(encodeServerFrame(f)), f);
  // Unknown fields, at the frame and inside a message, of every wire type.
  const w = new Writer();
  w.message(10, (m) => {
    m.fixed64(1, 5n);
    m.uint(2, 3);
    m.uint(99, 7);
    m.bytes(98, Uint8Array.of(1, 2, 3));
    m.fixed64(97, 1n);
  });
  w.uint(50, 1);
  assert.deepEqual(decodeServerFrame(w.finish()), { messageAck: { channelId: 5n, seq: 3 } });
  // A kind from a later version: a valid frame with no kind we know.
  const later = new Writer();
  later.message(15, (m) => m.uint(1, 1));
  assert.equal(decodeServerFrame(later.finish()), undefined);
  // Garbage and truncation are refused.
  for (const bad of ['0a05', 'ff', '0a0208', '1a0108', '0b']) {
    assert.throws(() => decodeServerFrame(hex(bad)), DecodeError, bad);
  }
});

test('§3 framing: split frames, several per chunk, non-minimal varints', () => {
  const a = encodeFrame(encodeClientFrame({ keepalive: { nonce: 1n } }));
  const big = encodeFrame(new Uint8Array(300).fill(7)); // two-byte prefix
  const all = Uint8Array.from([...a, ...big, ...a]);
  // Byte by byte.
  const d = new FrameDecoder();
  const got: Uint8Array[] = [];
  for (const b of all) got.push(...d.push(Uint8Array.of(b)));
  assert.deepEqual(got.map((f) => f.length), [4, 300, 4]);
  d.end();
  // All at once.
  assert.deepEqual(new FrameDecoder().push(all).map((f) => f.length), [4, 300, 4]);
  // `81 00` is a (non-minimal) 1.
  assert.deepEqual(new FrameDecoder().push(hex('8100 2a')), [Uint8Array.of(0x2a)]);
  // The largest frame is fine.
  const max = new FrameDecoder();
  assert.equal(max.push(encodeFrame(new Uint8Array(MAX_FRAME_LEN)))[0]!.length, MAX_FRAME_LEN);
});

test('§3 framing errors: oversize prefix, zero length, mid-frame end; sticky', () => {
  const code = (f: () => unknown): number => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof FrameError);
      return e.code;
    }
    return -1;
  };
  // Three bytes with the high bit: refused before any body arrives.
  const d = new FrameDecoder();
  assert.equal(code(() => d.push(hex('ffffff'))), ErrorCode.FRAME_TOO_LARGE);
  assert.equal(code(() => d.push(hex('04'))), ErrorCode.FRAME_TOO_LARGE, 'the stream stays unusable');
  // Just over the limit (262,145 = 81 80 10).
  assert.equal(code(() => new FrameDecoder().push(hex('818010'))), ErrorCode.FRAME_TOO_LARGE);
  assert.equal(code(() => new FrameDecoder().push(hex('00'))), ErrorCode.MALFORMED_FRAME);
  assert.equal(code(() => new FrameDecoder().push(hex('8000'))), ErrorCode.MALFORMED_FRAME, 'a non-minimal zero');
  const cut = new FrameDecoder();
  assert.deepEqual(cut.push(hex('0442')), []);
  assert.equal(code(() => cut.end()), ErrorCode.MALFORMED_FRAME);
  // Prefix only partly there: wait, no error.
  assert.deepEqual(new FrameDecoder().push(hex('ffff')), []);
  assert.throws(() => encodeFrame(new Uint8Array(0)), FrameError);
  assert.throws(() => encodeFrame(new Uint8Array(MAX_FRAME_LEN + 1)), FrameError);
});

test('§5/§12 media datagram vector', () => {
  const h = { channelId: 0x963c416800b67c5bn, trackKey: (7n << 32n) | 1n, sequence: 42, timestampUs: 1_800_000_000_000_000n };
  const d = encodeMedia(h, new TextEncoder().encode('hi'));
  assert.equal(toHex(d), toHex(hex('01 | 96 3c 41 68 00 b6 7c 5b | 00 00 00 07 00 00 00 01 | 00 00 00 2a | 00 06 65 17 28 98 80 00 | 68 69')));
  assert.deepEqual(decodeMedia(d), h);
  // Drop rules: short, wrong type, payload over 1,000.
  assert.equal(decodeMedia(d.subarray(0, 28)), undefined);
  assert.equal(decodeMedia(Uint8Array.from([2, ...d.subarray(1)])), undefined);
  assert.equal(decodeMedia(new Uint8Array(29 + 1001).fill(1)), undefined);
  assert.ok(decodeMedia(Uint8Array.from([1, ...new Uint8Array(28 + 1000)])));
  assert.throws(() => encodeMedia(h, new Uint8Array(1001)), RangeError);
});

test('§7 token vectors and §6 channel ids', () => {
  const base = { secret: 'demo-secret', appId: 'demo', channel: 'room', expiresAt: 1_800_003_600, issuedAt: 1_800_000_000 };
  assert.equal(
    mintToken({ ...base, userId: 'alice', publish: true, subscribe: true }),
    'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJkZW1vIiwic3ViIjoiYWxpY2UiLCJjaGFubmVsIjoicm9vbSIsInB1Ymxpc2giOnRydWUsInN1YnNjcmliZSI6dHJ1ZSwiaWF0IjoxODAwMDAwMDAwLCJleHAiOjE4MDAwMDM2MDB9.aAoyESqnJ357gu6OxBoMMN2Aq1DpZJBosHdCJAvYa0I',
  );
  assert.equal(
    mintToken({ ...base, userId: 'bob', subscribe: true }),
    'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJkZW1vIiwic3ViIjoiYm9iIiwiY2hhbm5lbCI6InJvb20iLCJwdWJsaXNoIjpmYWxzZSwic3Vic2NyaWJlIjp0cnVlLCJpYXQiOjE4MDAwMDAwMDAsImV4cCI6MTgwMDAwMzYwMH0.7p7bOFHtiQ4mMZ4mCFdbjNx12ragy8UycoadWoK7nq0',
  );
  assert.equal(channelId('demo', 'room'), 0x963c416800b67c5bn);
  assert.equal(channelId('', ''), 0x507038a77a4d173bn);
});

test('§10 every error code has a name, unknown codes are UNSPECIFIED', () => {
  for (const [name, n] of Object.entries(ErrorCode)) {
    assert.equal(wireName(n), name);
    const e = fromWire(n, 'why');
    assert.ok(e instanceof RtnError);
    assert.equal(e.code, name);
    assert.equal(e.wireCode, n);
    assert.equal(e.permanent, n >= 1 && n <= 7, name);
    assert.equal(e.isTokenRefusal, n >= 1 && n <= 5, name);
  }
  assert.equal(fromWire(9999, '').code, 'UNSPECIFIED');
  assert.equal(fromWire(-1, '').code, 'UNSPECIFIED');
});
