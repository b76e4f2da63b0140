// End-to-end encryption of media payloads and message bodies (docs/e2ee.md),
// with WebCrypto, byte for byte what sdk/src/e2ee.rs produces, so browser
// and native members of one channel understand each other.
//
//   sealed  = key_id (1) | stream_salt (8, BE) | AES-256-GCM ciphertext | tag (16)
//   subkey  = HKDF-SHA256(salt = "rtn-e2ee/v1", ikm = channel key,
//                         info = "rtn-e2ee/v1" | "media"|"message" | channel_id (8, BE)
//                                | key_id (1) | len(user) (2, BE) | user), 32 bytes
//   nonce   = stream_salt (8) | sequence (4, BE)   (media sequence, or low 32 bits of seq)
//   salt    = base + (counter >> 32)               (base: 64 random bits per sending stream)
//   AAD media   = the 29-byte media header | key_id | stream_salt | len(track name) (1) | track name
//   AAD message = channel_id (8) | seq (8) | sent_at_us (8) | key_id | stream_salt   (all BE)
//
// WebCrypto's HKDF does extract and expand in one call, which is the same
// function as the Rust side's separate `extract` then `expand`.

import { e2eeError, invalid, type E2eeFailure } from './errors';
import { MAX_MEDIA_PAYLOAD, MEDIA_HEADER_LEN } from './media';

export const KEY_LEN = 32;
const TAG_LEN = 16;
export const SEALED_HEADER_LEN = 9;
export const OVERHEAD = SEALED_HEADER_LEN + TAG_LEN;
export const MAX_MESSAGE_PAYLOAD = 65_536;
export const MAX_MEDIA_PLAINTEXT = MAX_MEDIA_PAYLOAD - OVERHEAD;
export const MAX_MESSAGE_PLAINTEXT = MAX_MESSAGE_PAYLOAD - OVERHEAD;
/** Keys a channel holds at once (previous, current, next). */
export const MAX_KEYS = 3;
const MAX_REPORTED = 256;
const MAX_CACHED_SENDERS = 4_096;

const utf8 = new TextEncoder();
const LABEL = utf8.encode('rtn-e2ee/v1');
const KIND_LABEL = { media: utf8.encode('media'), message: utf8.encode('message') };
type Kind = keyof typeof KIND_LABEL;

function subtle(): SubtleCrypto {
  const s = globalThis.crypto?.subtle;
  if (!s) throw invalid('end-to-end encryption needs WebCrypto (a secure context: https or localhost)');
  return s;
}

/** A channel key: a 32-byte secret and the id (0..=255) naming it in every
 * payload sealed with it. From the app's own server, never from RTN. */
export class ChannelKey {
  readonly #secret: Uint8Array;
  constructor(readonly id: number, secret: Uint8Array) {
    if (!Number.isInteger(id) || id < 0 || id > 255) throw invalid('a key id is 0..=255');
    if (secret.length !== KEY_LEN) throw invalid(`a channel key is ${KEY_LEN} bytes`);
    this.#secret = secret.slice();
  }

  /** A fresh random key. */
  static generate(id: number): ChannelKey {
    return new ChannelKey(id, crypto.getRandomValues(new Uint8Array(KEY_LEN)));
  }

  /** Parse the text form `<id>:<64 hex digits>`. */
  static parse(text: string): ChannelKey {
    const m = /^(\d{1,3}):([0-9a-fA-F]{64})$/.exec(text.trim());
    const id = m ? Number(m[1]) : NaN;
    if (!m || id > 255) throw invalid('a channel key is `<id 0..=255>:<64 hex digits>`');
    return new ChannelKey(id, hexToBytes(m[2]!));
  }

  /** The text form `parse` reads. It holds the secret. */
  toText(): string {
    return `${this.id}:${bytesToHex(this.#secret)}`;
  }

  /** @internal the secret, for the key ring. */
  secretBytes(): Uint8Array {
    return this.#secret;
  }

  toJSON(): { id: number } {
    return { id: this.id }; // never the secret
  }
}

/** The keys a channel is joined with. */
export class E2eeKeys {
  private constructor(readonly keys: ChannelKey[], readonly send: number | undefined) {}

  /** Seal with `key` and open what was sealed with it. */
  static of(key: ChannelKey): E2eeKeys {
    return new E2eeKeys([key], key.id);
  }

  /** End-to-end encryption on, no key yet (`Channel.setKey` later). */
  static pending(): E2eeKeys {
    return new E2eeKeys([], undefined);
  }

  /** Also open what was sealed with `key` (previous or next key). */
  also(key: ChannelKey): E2eeKeys {
    return new E2eeKeys([key, ...this.keys.filter((k) => k.id !== key.id)], this.send);
  }
}

export function hexToBytes(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw invalid(`not hex: ${hex.slice(0, 80)}`);
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export function bytesToHex(b: Uint8Array): string {
  let s = '';
  for (const x of b) s += x.toString(16).padStart(2, '0');
  return s;
}

/** A random 64-bit stream base. */
export function randomBase(): bigint {
  const b = crypto.getRandomValues(new Uint8Array(8));
  return new DataView(b.buffer).getBigUint64(0);
}

/** The salt of packet `counter` of a stream with random `base`. */
export function streamSalt(base: bigint, counter: bigint): bigint {
  return BigInt.asUintN(64, base + (counter >> 32n));
}

function be64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt.asUintN(64, v));
  return b;
}

function join(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function nonce(salt: bigint, sequence: number): Uint8Array {
  const n = new Uint8Array(12);
  const v = new DataView(n.buffer);
  v.setBigUint64(0, salt);
  v.setUint32(8, sequence >>> 0);
  return n;
}

function sealedHeader(keyId: number, salt: bigint): Uint8Array {
  return join([Uint8Array.of(keyId), be64(salt)]);
}

function mediaAad(header: Uint8Array, sealedHead: Uint8Array, track: string): Uint8Array {
  const name = utf8.encode(track).subarray(0, 255);
  return join([header.subarray(0, MEDIA_HEADER_LEN), sealedHead, Uint8Array.of(name.length), name]);
}

function messageAad(channelId: bigint, seq: number, sentAtUs: number, sealedHead: Uint8Array): Uint8Array {
  return join([be64(channelId), be64(BigInt(seq)), be64(BigInt(sentAtUs)), sealedHead]);
}

// WebCrypto's types want ArrayBuffer-backed views.
const buf = (b: Uint8Array): Uint8Array<ArrayBuffer> => b as Uint8Array<ArrayBuffer>;

/** The end-to-end encryption state of one joined channel. */
export class KeyRing {
  /** Installed keys, oldest first: id and the HKDF input key. */
  private keys: { id: number; ikm: Promise<CryptoKey> }[] = [];
  private send: number | undefined;
  /** Subkeys by sender, then `${kind}/${key id}`. */
  private subkeys = new Map<string, Map<string, Promise<CryptoKey>>>();
  private reported = new Set<string>();

  constructor(readonly channelId: bigint, private me: string, keys: E2eeKeys) {
    for (const k of keys.keys) this.addKey(k);
    const send = keys.keys.find((k) => k.id === keys.send);
    if (send) this.setKey(send);
  }

  /** Install `key` for opening (replacing one of the same id); past
   * MAX_KEYS the oldest key not sent with is dropped. */
  addKey(key: ChannelKey): void {
    this.keys = this.keys.filter((k) => k.id !== key.id);
    this.keys.push({ id: key.id, ikm: subtle().importKey('raw', buf(key.secretBytes()), 'HKDF', false, ['deriveBits']) });
    while (this.keys.length > MAX_KEYS) {
      const i = this.keys.findIndex((k) => k.id !== this.send);
      if (i < 0) break;
      this.keys.splice(i, 1);
    }
    if (!this.keys.some((k) => k.id === this.send)) this.send = undefined;
    this.subkeys.clear();
  }

  /** Install `key` and seal from now on with it. */
  setKey(key: ChannelKey): void {
    this.addKey(key);
    this.send = key.id;
  }

  removeKey(id: number): boolean {
    const before = this.keys.length;
    this.keys = this.keys.filter((k) => k.id !== id);
    if (this.send === id) this.send = undefined;
    this.subkeys.clear();
    return this.keys.length !== before;
  }

  keyIds(): number[] {
    return this.keys.map((k) => k.id);
  }

  sendKeyId(): number | undefined {
    return this.send;
  }

  /** This client's user id (from Joined; a rejoin may change it). */
  setMe(me: string): void {
    this.me = me;
  }

  private subkey(sender: string, id: number, kind: Kind): Promise<CryptoKey> {
    let bySender = this.subkeys.get(sender);
    const tag = `${kind}/${id}`;
    const cached = bySender?.get(tag);
    if (cached) return cached;
    const k = this.keys.find((x) => x.id === id);
    if (!k) return Promise.reject(e2eeError({ kind: 'unknown-key-id', keyId: id }));
    const user = utf8.encode(sender);
    const lenBytes = new Uint8Array(2);
    new DataView(lenBytes.buffer).setUint16(0, Math.min(user.length, 0xffff));
    const info = join([LABEL, KIND_LABEL[kind], be64(this.channelId), Uint8Array.of(id), lenBytes, user]);
    const derived = k.ikm
      .then((ikm) => subtle().deriveBits({ name: 'HKDF', hash: 'SHA-256', salt: buf(LABEL), info: buf(info) }, ikm, 256))
      .then((bits) => subtle().importKey('raw', bits, 'AES-GCM', false, ['encrypt', 'decrypt']));
    if (!bySender) {
      if (this.subkeys.size >= MAX_CACHED_SENDERS) this.subkeys.clear();
      bySender = new Map();
      this.subkeys.set(sender, bySender);
    }
    bySender.set(tag, derived);
    return derived;
  }

  private own(kind: Kind): { id: number; key: Promise<CryptoKey> } {
    if (this.send === undefined) throw e2eeError({ kind: 'no-send-key' });
    return { id: this.send, key: this.subkey(this.me, this.send, kind) };
  }

  /** Seal a media payload: returns the whole datagram (`header`, the 29
   * bytes already encoded, then the sealed payload). */
  async sealMedia(header: Uint8Array, track: string, salt: bigint, sequence: number, payload: Uint8Array): Promise<Uint8Array> {
    if (payload.length > MAX_MEDIA_PLAINTEXT) throw e2eeError({ kind: 'too-large', len: payload.length, max: MAX_MEDIA_PLAINTEXT });
    const own = this.own('media');
    const head = sealedHeader(own.id, salt);
    const aad = mediaAad(header, head, track);
    const ct = await subtle().encrypt({ name: 'AES-GCM', iv: buf(nonce(salt, sequence)), additionalData: buf(aad) }, await own.key, buf(payload));
    return join([header.subarray(0, MEDIA_HEADER_LEN), head, new Uint8Array(ct)]);
  }

  /** Open the payload of a media datagram the edge says `sender` sent on
   * its track `track`. */
  async openMedia(datagram: Uint8Array, sender: string, track: string): Promise<Uint8Array> {
    const sealed = datagram.subarray(MEDIA_HEADER_LEN);
    if (datagram.length < MEDIA_HEADER_LEN || sealed.length < OVERHEAD) throw e2eeError({ kind: 'malformed' });
    const keyId = sealed[0]!;
    const v = new DataView(datagram.buffer, datagram.byteOffset, datagram.length);
    const salt = v.getBigUint64(MEDIA_HEADER_LEN + 1);
    const sequence = v.getUint32(17);
    const key = await this.subkey(sender, keyId, 'media');
    const aad = mediaAad(datagram, sealed.subarray(0, SEALED_HEADER_LEN), track);
    return this.open(key, keyId, nonce(salt, sequence), aad, sealed.subarray(SEALED_HEADER_LEN));
  }

  /** Seal this client's message `seq` sent at `sentAtUs`; `base` is the
   * random base of this join's message stream. */
  async sealMessage(seq: number, sentAtUs: number, base: bigint, body: Uint8Array): Promise<Uint8Array> {
    if (body.length > MAX_MESSAGE_PLAINTEXT) throw e2eeError({ kind: 'too-large', len: body.length, max: MAX_MESSAGE_PLAINTEXT });
    const own = this.own('message');
    const salt = streamSalt(base, BigInt(seq));
    const head = sealedHeader(own.id, salt);
    const aad = messageAad(this.channelId, seq, sentAtUs, head);
    const ct = await subtle().encrypt({ name: 'AES-GCM', iv: buf(nonce(salt, seq % 2 ** 32)), additionalData: buf(aad) }, await own.key, buf(body));
    return join([head, new Uint8Array(ct)]);
  }

  /** Open the body of message `seq` the edge says `sender` sent. */
  async openMessage(sender: string, seq: number, sentAtUs: number, sealed: Uint8Array): Promise<Uint8Array> {
    if (sealed.length < OVERHEAD) throw e2eeError({ kind: 'malformed' });
    const keyId = sealed[0]!;
    const salt = new DataView(sealed.buffer, sealed.byteOffset + 1, 8).getBigUint64(0);
    const key = await this.subkey(sender, keyId, 'message');
    const aad = messageAad(this.channelId, seq, sentAtUs, sealed.subarray(0, SEALED_HEADER_LEN));
    return this.open(key, keyId, nonce(salt, seq % 2 ** 32), aad, sealed.subarray(SEALED_HEADER_LEN));
  }

  private async open(key: CryptoKey, keyId: number, iv: Uint8Array, aad: Uint8Array, ctAndTag: Uint8Array): Promise<Uint8Array> {
    try {
      return new Uint8Array(await subtle().decrypt({ name: 'AES-GCM', iv: buf(iv), additionalData: buf(aad), tagLength: TAG_LEN * 8 }, key, buf(ctAndTag.slice())));
    } catch {
      throw e2eeError({ kind: 'rejected', keyId });
    }
  }

  /** A failure to open something from `sender`: true when worth an event
   * (first time for this sender and failure since its last success). */
  noteFailure(sender: string, f: E2eeFailure): boolean {
    if (this.reported.size >= MAX_REPORTED) return false;
    const k = `${sender}\0${JSON.stringify(f)}`;
    if (this.reported.has(k)) return false;
    this.reported.add(k);
    return true;
  }

  noteSuccess(sender: string): void {
    if (this.reported.size === 0) return;
    for (const k of this.reported) if (k.startsWith(`${sender}\0`)) this.reported.delete(k);
  }
}
