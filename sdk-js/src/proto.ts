// A small hand-written protobuf (proto3) codec for the rtn.v1 messages a
// client needs (protocol/proto/rtn/v1/client.proto, common.proto). No
// runtime dependency, no reflection: each message has an encoder or a
// decoder written out below.
//
// Wire format reminder: a field is `key = (field_number << 3) | wire_type`
// as a varint, then the value: wire type 0 varint, 1 fixed64 (8 bytes,
// little-endian), 2 length-delimited (varint length, then bytes; strings,
// bytes, sub-messages, packed repeated), 5 fixed32. Encoders leave out
// fields holding their default (0, "", false, empty) as prost does, so the
// bytes match the reference encoder's (docs/protocol.md §12). Decoders skip
// unknown fields (§1) and refuse truncated or impossible encodings.
//
// 64-bit ids (channel_id, track_key, session, nonces) are bigints; seq and
// microsecond timestamps are numbers (exact below 2^53, i.e. for 285 years
// of microseconds and any realistic message count).

const utf8 = new TextEncoder();
const utf8d = new TextDecoder('utf-8', { fatal: true });

export class DecodeError extends Error {
  override readonly name = 'DecodeError';
}

// ----- writing ------------------------------------------------------

export class Writer {
  private buf = new Uint8Array(64);
  private len = 0;

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }

  varint(v: number | bigint): void {
    let x = BigInt.asUintN(64, BigInt(v));
    this.room(10);
    while (x >= 0x80n) {
      this.buf[this.len++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
    }
    this.buf[this.len++] = Number(x);
  }

  raw(b: Uint8Array): void {
    this.room(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  key(field: number, wireType: number): void {
    this.varint((field << 3) | wireType);
  }

  /** uint32/uint64/bool/enum field, left out when zero. */
  uint(field: number, v: number | bigint | boolean): void {
    const n = typeof v === 'boolean' ? (v ? 1 : 0) : v;
    if (n === 0 || n === 0n) return;
    this.key(field, 0);
    this.varint(n);
  }

  fixed64(field: number, v: bigint): void {
    if (v === 0n) return;
    this.key(field, 1);
    const b = new Uint8Array(8);
    new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v), true);
    this.raw(b);
  }

  bytes(field: number, b: Uint8Array, keepEmpty = false): void {
    if (b.length === 0 && !keepEmpty) return;
    this.key(field, 2);
    this.varint(b.length);
    this.raw(b);
  }

  string(field: number, s: string): void {
    this.bytes(field, utf8.encode(s));
  }

  /** A sub-message field; written even when empty (a set oneof member). */
  message(field: number, encode: (w: Writer) => void): void {
    const inner = new Writer();
    encode(inner);
    this.bytes(field, inner.finish(), true);
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.len);
  }
}

// ----- reading ------------------------------------------------------

export class Reader {
  pos = 0;
  constructor(private readonly buf: Uint8Array, private readonly end = buf.length) {}

  get done(): boolean {
    return this.pos >= this.end;
  }

  varint64(): bigint {
    let v = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.pos >= this.end) throw new DecodeError('truncated varint');
      const b = this.buf[this.pos++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return BigInt.asUintN(64, v);
    }
    throw new DecodeError('varint longer than 10 bytes');
  }

  /** A varint that must fit a JS number exactly (lengths, tags, uint32). */
  varint(): number {
    // Fast path for the usual one to four byte values.
    let v = 0;
    for (let i = 0; i < 4; i++) {
      if (this.pos >= this.end) throw new DecodeError('truncated varint');
      const b = this.buf[this.pos++]!;
      v += (b & 0x7f) * 2 ** (7 * i);
      if (b < 0x80) return v;
    }
    this.pos -= 4;
    const big = this.varint64();
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) throw new DecodeError('varint too large');
    return Number(big);
  }

  uint32(): number {
    return Number(BigInt.asUintN(32, this.varint64()));
  }

  int32(): number {
    return Number(BigInt.asIntN(32, this.varint64()));
  }

  fixed64(): bigint {
    if (this.pos + 8 > this.end) throw new DecodeError('truncated fixed64');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 8).getBigUint64(0, true);
    this.pos += 8;
    return v;
  }

  bytes(): Uint8Array {
    const n = this.varint();
    if (n > this.end - this.pos) throw new DecodeError('truncated length-delimited field');
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  string(): string {
    try {
      return utf8d.decode(this.bytes());
    } catch (e) {
      if (e instanceof DecodeError) throw e;
      throw new DecodeError('invalid UTF-8 in a string field');
    }
  }

  sub(): Reader {
    const n = this.varint();
    if (n > this.end - this.pos) throw new DecodeError('truncated sub-message');
    const r = new Reader(this.buf, this.pos + n);
    r.pos = this.pos;
    this.pos += n;
    return r;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case 0: this.varint64(); return;
      case 1: this.need(8); return;
      case 2: this.bytes(); return;
      case 5: this.need(4); return;
      default: throw new DecodeError(`unsupported wire type ${wireType}`);
    }
  }

  private need(n: number): void {
    if (this.pos + n > this.end) throw new DecodeError('truncated field');
    this.pos += n;
  }

  /** Visit each field: `f(field, wireType)` reads it and returns true, or
   * returns false to have it skipped. */
  fields(f: (field: number, wireType: number) => boolean): void {
    while (!this.done) {
      const key = this.varint();
      const field = Math.floor(key / 8);
      const wt = key & 7;
      if (field === 0) throw new DecodeError('field number 0');
      if (!f(field, wt)) this.skip(wt);
    }
  }
}

/** Read field `wt`-typed value only if the wire type is the expected one. */
function expect(wt: number, want: number): void {
  if (wt !== want) throw new DecodeError(`wire type ${wt} where ${want} was expected`);
}

// ----- messages -----------------------------------------------------

export const TrackKind = { unspecified: 0, audio: 1, video: 2, data: 3 } as const;
export type TrackKindName = keyof typeof TrackKind;
export const trackKindName = (n: number): TrackKindName =>
  (['unspecified', 'audio', 'video', 'data'] as const)[n] ?? 'unspecified';

export interface TrackInfo { name: string; trackKey: bigint; kind: number }
/** `edgeId`: the edge hosting the session, 0 for the client's own edge. */
export interface Member { userId: string; tracks: TrackInfo[]; session: bigint; edgeId: number }
/** A Joined reply: `memberCount` counts the member sessions (the joining
 * one included); in a `large` channel `members` lists only publishers. */
export interface Joined { requestId: number; channel: string; channelId: bigint; userId: string; members: Member[]; edgeId: number; memberCount: number; large: boolean }
/** MemberLeft.reason: `hidden`, the member stopped publishing in a large
 * channel (still there, counted, not listed). */
export const MemberLeftReason = { left: 0, hidden: 1 } as const;
/** An edge address of a goaway's redirect; `certSha256` are raw digests. */
export interface EdgeAddressPb { edgeId: number; addr: string; serverName: string; certSha256: Uint8Array[] }

export interface ChatMessage {
  channelId: bigint;
  fromUser: string;
  seq: number;
  payload: Uint8Array;
  sentAtUs: number;
  toUser: string;
}

/** ClientFrame.kind (client -> edge). */
export type ClientFrame =
  | { join: { requestId: number; token: string; subscribeAll: boolean; channel: string; memberEdges?: number[]; unreachableEdge?: number } }
  | { leave: { requestId: number; channelId: bigint } }
  | { publishTrack: { requestId: number; channelId: bigint; name: string; kind: number } }
  | { unpublishTrack: { requestId: number; channelId: bigint; trackKey: bigint } }
  | { subscribe: { requestId: number; channelId: bigint; userId: string } }
  | { unsubscribe: { requestId: number; channelId: bigint; userId: string } }
  | { message: ChatMessage }
  | { keepalive: { nonce: bigint } };

/** ServerFrame.kind (edge -> client); `undefined` for a frame whose kind
 * this SDK does not know (a newer edge: counted and ignored). */
export type ServerFrame =
  | { joined: Joined }
  | { left: { requestId: number; channelId: bigint } }
  | { trackPublished: { requestId: number; channelId: bigint; name: string; trackKey: bigint } }
  | { error: { requestId: number; code: number; message: string } }
  | { memberJoined: { channelId: bigint; userId: string; session: bigint; edgeId: number } }
  | { memberLeft: { channelId: bigint; userId: string; session: bigint; reason: number } }
  | { memberCount: { channelId: bigint; members: number; large: boolean } }
  | { trackAvailable: { channelId: bigint; userId: string; track: TrackInfo | undefined } }
  | { trackUnavailable: { channelId: bigint; userId: string; trackKey: bigint } }
  | { message: ChatMessage }
  | { messageAck: { channelId: bigint; seq: number } }
  | { goaway: { reason: number; redirect: EdgeAddressPb[]; reconnectAfterMs: number } }
  | { keepaliveAck: { nonce: bigint } }
  | { subscribed: { requestId: number; channelId: bigint; userId: string } };

/** The fields of a ChatMessage (client.proto), in either direction. */
export function writeChatMessage(w: Writer, m: ChatMessage): void {
  w.fixed64(1, m.channelId);
  w.string(2, m.fromUser);
  w.uint(3, m.seq);
  w.bytes(4, m.payload);
  w.uint(5, m.sentAtUs);
  w.string(6, m.toUser);
}

/** Encode one ClientFrame (the message, without its length prefix). */
export function encodeClientFrame(f: ClientFrame): Uint8Array {
  const w = new Writer();
  if ('join' in f) {
    const j = f.join;
    w.message(1, (m) => {
      m.uint(1, j.requestId); m.string(2, j.token); m.uint(3, j.subscribeAll); m.string(4, j.channel);
      // Repeated uint32, one field per value (parsers accept it unpacked).
      for (const e of j.memberEdges ?? []) m.uint(5, e);
      if (j.unreachableEdge) m.uint(6, j.unreachableEdge);
    });
  } else if ('leave' in f) {
    const l = f.leave;
    w.message(2, (m) => { m.uint(1, l.requestId); m.fixed64(2, l.channelId); });
  } else if ('publishTrack' in f) {
    const p = f.publishTrack;
    w.message(3, (m) => { m.uint(1, p.requestId); m.fixed64(2, p.channelId); m.string(3, p.name); m.uint(4, p.kind); });
  } else if ('unpublishTrack' in f) {
    const u = f.unpublishTrack;
    w.message(4, (m) => { m.uint(1, u.requestId); m.fixed64(2, u.channelId); m.fixed64(3, u.trackKey); });
  } else if ('subscribe' in f) {
    const s = f.subscribe;
    w.message(5, (m) => { m.uint(1, s.requestId); m.fixed64(2, s.channelId); m.string(3, s.userId); });
  } else if ('unsubscribe' in f) {
    const s = f.unsubscribe;
    w.message(6, (m) => { m.uint(1, s.requestId); m.fixed64(2, s.channelId); m.string(3, s.userId); });
  } else if ('message' in f) {
    const c = f.message;
    w.message(7, (m) => writeChatMessage(m, c));
  } else {
    const k = f.keepalive;
    w.message(8, (m) => m.uint(1, k.nonce));
  }
  return w.finish();
}

function trackInfo(r: Reader): TrackInfo {
  const t: TrackInfo = { name: '', trackKey: 0n, kind: 0 };
  r.fields((f, wt) => {
    if (f === 1) { expect(wt, 2); t.name = r.string(); } else if (f === 2) { expect(wt, 1); t.trackKey = r.fixed64(); } else if (f === 3) { expect(wt, 0); t.kind = r.int32(); } else return false;
    return true;
  });
  return t;
}

function member(r: Reader): Member {
  const m: Member = { userId: '', tracks: [], session: 0n, edgeId: 0 };
  r.fields((f, wt) => {
    if (f === 1) { expect(wt, 2); m.userId = r.string(); } else if (f === 2) { expect(wt, 2); m.tracks.push(trackInfo(r.sub())); } else if (f === 3) { expect(wt, 1); m.session = r.fixed64(); } else if (f === 4) { expect(wt, 0); m.edgeId = r.uint32(); } else return false;
    return true;
  });
  return m;
}

function edgeAddress(r: Reader): EdgeAddressPb {
  const e: EdgeAddressPb = { edgeId: 0, addr: '', serverName: '', certSha256: [] };
  r.fields((f, wt) => {
    if (f === 1) { expect(wt, 0); e.edgeId = r.uint32(); } else if (f === 2) { expect(wt, 2); e.addr = r.string(); } else if (f === 3) { expect(wt, 2); e.serverName = r.string(); } else if (f === 4) { expect(wt, 2); e.certSha256.push(r.bytes().slice()); } else return false;
    return true;
  });
  return e;
}

export function decodeChat(r: Reader): ChatMessage {
  const m: ChatMessage = { channelId: 0n, fromUser: '', seq: 0, payload: new Uint8Array(0), sentAtUs: 0, toUser: '' };
  r.fields((f, wt) => {
    switch (f) {
      case 1: expect(wt, 1); m.channelId = r.fixed64(); break;
      case 2: expect(wt, 2); m.fromUser = r.string(); break;
      case 3: expect(wt, 0); m.seq = Number(r.varint64()); break;
      case 4: expect(wt, 2); m.payload = r.bytes().slice(); break;
      case 5: expect(wt, 0); m.sentAtUs = Number(r.varint64()); break;
      case 6: expect(wt, 2); m.toUser = r.string(); break;
      default: return false;
    }
    return true;
  });
  return m;
}

/** Field readers of a message whose fields are all scalars: `spec[field]`
 * = [wire type, property, reader]. */
type Spec = Record<number, [number, string, (r: Reader) => unknown]>;
const u32 = (r: Reader): number => r.uint32();
const f64 = (r: Reader): bigint => r.fixed64();
const str = (r: Reader): string => r.string();
const u64n = (r: Reader): number => Number(r.varint64());
const i32 = (r: Reader): number => r.int32();
const bool = (r: Reader): boolean => r.varint64() !== 0n;

function scalars<T>(r: Reader, init: T, spec: Spec): T {
  const o = init as Record<string, unknown>;
  r.fields((f, wt) => {
    const s = spec[f];
    if (!s) return false;
    expect(wt, s[0]);
    o[s[1]] = s[2](r);
    return true;
  });
  return init;
}

const REQ: Spec = { 1: [0, 'requestId', u32], 2: [1, 'channelId', f64] };
const MEMBER_EVENT: Spec = { 1: [1, 'channelId', f64], 2: [2, 'userId', str], 3: [1, 'session', f64] };
const MEMBER_JOINED: Spec = { ...MEMBER_EVENT, 4: [0, 'edgeId', u32] };

/** Decode one ServerFrame body. Throws `DecodeError` on a bad encoding. */
export function decodeServerFrame(body: Uint8Array): ServerFrame | undefined {
  const r = new Reader(body);
  let out: ServerFrame | undefined;
  r.fields((f, wt) => {
    if (f < 1 || f > 14) return false;
    expect(wt, 2);
    const s = r.sub();
    switch (f) {
      case 1: {
        const j: Joined = { requestId: 0, channel: '', channelId: 0n, userId: '', members: [], edgeId: 0, memberCount: 0, large: false };
        s.fields((g, t) => {
          switch (g) {
            case 1: expect(t, 0); j.requestId = s.uint32(); break;
            case 2: expect(t, 2); j.channel = s.string(); break;
            case 3: expect(t, 1); j.channelId = s.fixed64(); break;
            case 4: expect(t, 2); j.userId = s.string(); break;
            case 5: expect(t, 2); j.members.push(member(s.sub())); break;
            case 6: expect(t, 0); j.edgeId = s.uint32(); break;
            case 7: expect(t, 0); j.memberCount = u64n(s); break;
            case 8: expect(t, 0); j.large = bool(s); break;
            default: return false;
          }
          return true;
        });
        out = { joined: j };
        break;
      }
      case 2: out = { left: scalars(s, { requestId: 0, channelId: 0n }, REQ) }; break;
      case 3: out = { trackPublished: scalars(s, { requestId: 0, channelId: 0n, name: '', trackKey: 0n }, { ...REQ, 3: [2, 'name', str], 4: [1, 'trackKey', f64] }) }; break;
      case 4: out = { error: scalars(s, { requestId: 0, code: 0, message: '' }, { 1: [0, 'requestId', u32], 2: [0, 'code', i32], 3: [2, 'message', str] }) }; break;
      case 5: out = { memberJoined: scalars(s, { channelId: 0n, userId: '', session: 0n, edgeId: 0 }, MEMBER_JOINED) }; break;
      case 6: out = { memberLeft: scalars(s, { channelId: 0n, userId: '', session: 0n, reason: 0 }, { ...MEMBER_EVENT, 4: [0, 'reason', i32] }) }; break;
      case 7: {
        const t = { channelId: 0n, userId: '', track: undefined as TrackInfo | undefined };
        s.fields((g, w) => {
          if (g === 1) { expect(w, 1); t.channelId = s.fixed64(); } else if (g === 2) { expect(w, 2); t.userId = s.string(); } else if (g === 3) { expect(w, 2); t.track = trackInfo(s.sub()); } else return false;
          return true;
        });
        out = { trackAvailable: t };
        break;
      }
      case 8: out = { trackUnavailable: scalars(s, { channelId: 0n, userId: '', trackKey: 0n }, { 1: [1, 'channelId', f64], 2: [2, 'userId', str], 3: [1, 'trackKey', f64] }) }; break;
      case 9: out = { message: decodeChat(s) }; break;
      case 10: out = { messageAck: scalars(s, { channelId: 0n, seq: 0 }, { 1: [1, 'channelId', f64], 2: [0, 'seq', u64n] }) }; break;
      case 11: {
        const g = { reason: 0, redirect: [] as EdgeAddressPb[], reconnectAfterMs: 0 };
        s.fields((h, w) => {
          if (h === 1) { expect(w, 0); g.reason = s.int32(); } else if (h === 2) { expect(w, 2); g.redirect.push(edgeAddress(s.sub())); } else if (h === 3) { expect(w, 0); g.reconnectAfterMs = s.uint32(); } else return false;
          return true;
        });
        out = { goaway: g };
        break;
      }
      case 12: out = { keepaliveAck: scalars(s, { nonce: 0n }, { 1: [0, 'nonce', (x) => x.varint64()] }) }; break;
      case 13: out = { subscribed: scalars(s, { requestId: 0, channelId: 0n, userId: '' }, { ...REQ, 3: [2, 'userId', str] }) }; break;
      case 14: out = { memberCount: scalars(s, { channelId: 0n, members: 0, large: false }, { 1: [1, 'channelId', f64], 2: [0, 'members', u64n], 3: [0, 'large', bool] }) }; break;
    }
    return true;
  });
  return out;
}
