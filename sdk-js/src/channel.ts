// Handles the app holds: a joined `Channel` and a `TrackPublisher`. They
// are thin: requests go to the client's state machine (client.ts), media
// goes straight onto the current link.

import { ChannelKey, KeyRing, MAX_MEDIA_PLAINTEXT, MAX_MESSAGE_PAYLOAD, MAX_MESSAGE_PLAINTEXT, randomBase, streamSalt } from './e2ee';
import { RtnError, closedError, e2eeError, invalid } from './errors';
import type { Link } from './connection';
import { MAX_MEDIA_PAYLOAD, MEDIA_HEADER_LEN, writeHeader } from './media';
import type { TrackKindName } from './proto';
import type { Census } from './roster';
import type { Stats } from './stats';

export const MAX_NAME_LEN = 128;
const utf8 = new TextEncoder();
export const byteLen = (s: string): number => utf8.encode(s).length;
export const nowUs = (): number => Math.round((performance.timeOrigin + performance.now()) * 1000);

/** What the handles need of the client (implemented in client.ts). */
export interface ClientCore {
  readonly stats: Stats;
  publish(channelId: bigint, slot: TrackSlot): Promise<void>;
  unpublish(slot: TrackSlot): void;
  subscribe(channelId: bigint, user: string): Promise<void>;
  unsubscribe(channelId: bigint, user: string): Promise<void>;
  sendMessage(channelId: bigint, payload: Uint8Array, wait: boolean): Promise<number>;
  leave(channelId: bigint): Promise<void>;
  setToken(channelId: bigint, token: string): void;
  unacked(channelId: bigint): number;
  /** A media datagram just sent (kept for the edge's NACKs): the audio
   * copy to send after it while the link loses (§5.2). */
  sentMedia(trackKey: bigint, sequence: number, datagram: Uint8Array): Uint8Array | undefined;
}

/** Where a track's media goes right now. */
export type Binding =
  | { state: 'unbound' } // between connections, or not yet published
  // `previous`: the edge the client is moving off (make-before-break,
  // docs/protocol.md 4.5): every packet goes there too, under the key it
  // had there, until the old link closes.
  | { state: 'bound'; link: Link; key: bigint; previous?: { link: Link; key: bigint } }
  | { state: 'failed'; error: RtnError } // not republished after a reconnect
  | { state: 'closed' };

/** A published track, shared by its publisher and the state machine. */
export class TrackSlot {
  binding: Binding = { state: 'unbound' };
  /** Packets sent: the header sequence is its low 32 bits. */
  counter = 0;
  /** Random base of this track's nonces (e2ee). */
  readonly saltBase = randomBase();
  /** Another for the copies sent to the previous edge while moving: their
   * header (authenticated) has another key, so the same nonce must not
   * seal them. */
  readonly copySaltBase = randomBase();
  constructor(readonly channelId: bigint, readonly name: string, readonly kind: TrackKindName, readonly ring: KeyRing | undefined) {}

  unbind(): void {
    if (this.binding.state === 'bound') this.binding = { state: 'unbound' };
  }

  /** Published as `key` on `link`; the route it had on another, still
   * open, link (the edge being left) is kept as the previous one. */
  rebind(link: Link, key: bigint): void {
    const b = this.binding;
    const previous = b.state === 'bound' && b.link !== link && !b.link.isDead ? { link: b.link, key: b.key } : undefined;
    this.binding = { state: 'bound', link, key, previous };
  }

  /** The previous edge is gone: stop sending it copies. */
  forgetPrevious(): void {
    if (this.binding.state === 'bound') this.binding = { ...this.binding, previous: undefined };
  }

  get key(): bigint | undefined {
    return this.binding.state === 'bound' ? this.binding.key : undefined;
  }

  get isClosed(): boolean {
    return this.binding.state === 'closed' || this.binding.state === 'failed';
  }
}

/** Sends media on one track. Survives reconnects: the track is published
 * again on the new edge and the publisher follows its new track key. */
export class TrackPublisher {
  /** @internal */
  constructor(private readonly slot: TrackSlot, private readonly core: ClientCore) {}

  get name(): string {
    return this.slot.name;
  }

  get kind(): TrackKindName {
    return this.slot.kind;
  }

  /** The track key the current edge assigned (undefined while
   * reconnecting). */
  get trackKey(): bigint | undefined {
    return this.slot.key;
  }

  /** Send one media packet as a datagram (at most `maxPayload` bytes); the
   * sequence number and timestamp are set here. Fails with NOT_CONNECTED
   * while the client is reconnecting: media is real-time, drop it. */
  async send(payload: Uint8Array): Promise<void> {
    const s = this.slot;
    const max = s.ring ? MAX_MEDIA_PLAINTEXT : MAX_MEDIA_PAYLOAD;
    if (payload.length > max) throw invalid(`media payload of ${payload.length} bytes exceeds ${max}`);
    const b = s.binding;
    if (b.state === 'unbound') throw new RtnError('NOT_CONNECTED', 'not connected to an edge right now');
    if (b.state === 'failed') throw b.error;
    if (b.state === 'closed') throw closedError();
    const counter = s.counter++;
    const sequence = counter % 2 ** 32;
    const timestampUs = BigInt(nowUs());
    const datagram = await this.seal(b.key, s.saltBase, counter, timestampUs, payload);
    if (b.previous) {
      // Best effort, never waited for: the old edge is going.
      const { link, key } = b.previous;
      link.sendNow(await this.seal(key, s.copySaltBase, counter, timestampUs, payload));
    }
    await b.link.sendDatagram(datagram);
    this.core.stats.mediaSent++;
    const copy = this.core.sentMedia(b.key, sequence, datagram);
    if (copy) b.link.sendNow(copy);
  }

  /** One packet's datagram under `trackKey`: header and payload, sealed
   * with the channel's end-to-end key if it has one. */
  private async seal(trackKey: bigint, saltBase: bigint, counter: number, timestampUs: bigint, payload: Uint8Array): Promise<Uint8Array> {
    const s = this.slot;
    const sequence = counter % 2 ** 32;
    const header = new Uint8Array(MEDIA_HEADER_LEN + (s.ring ? 0 : payload.length));
    writeHeader(header, { channelId: s.channelId, trackKey, sequence, timestampUs });
    if (s.ring) return s.ring.sealMedia(header, s.name, streamSalt(saltBase, BigInt(counter)), sequence, payload);
    header.set(payload, MEDIA_HEADER_LEN);
    return header;
  }

  /** The largest payload `send` takes. */
  get maxPayload(): number {
    return this.slot.ring ? MAX_MEDIA_PLAINTEXT : MAX_MEDIA_PAYLOAD;
  }

  /** Stop publishing. */
  unpublish(): void {
    this.core.unpublish(this.slot);
  }
}

/** A joined channel. It stays joined across reconnects until `leave()`,
 * the client is closed, or a `channel-lost` event names it. */
export class Channel {
  /** @internal */
  constructor(
    /** The channel's name, as given to `join`. */
    readonly name: string,
    /** The 64-bit channel id the edge derived (used in media headers). */
    readonly id: bigint,
    /** This client's user id in the channel, from the token. */
    readonly user: string,
    private readonly core: ClientCore,
    private readonly ring: KeyRing | undefined,
    private readonly census: Census,
  ) {}

  /** Publish a media track; `kind` is informational. */
  async publishTrack(name: string, kind: TrackKindName = 'data'): Promise<TrackPublisher> {
    const len = byteLen(name);
    if (len === 0 || len > MAX_NAME_LEN) throw invalid(`track name must be 1..=${MAX_NAME_LEN} bytes`);
    const slot = new TrackSlot(this.id, name, kind, this.ring);
    await this.core.publish(this.id, slot);
    return new TrackPublisher(slot, this.core);
  }

  /** Receive the media of `user`, or of every member without one. Kept
   * across reconnects. */
  subscribe(user?: string): Promise<void> {
    return this.core.subscribe(this.id, user ?? '');
  }

  /** Stop receiving `user`'s media, or everyone's without one.
   * (Unsubscribing one user after subscribing to everyone keeps everyone:
   * the edge cannot express "all but one".) */
  unsubscribe(user?: string): Promise<void> {
    return this.core.unsubscribe(this.id, user ?? '');
  }

  /** Send a reliable message to the channel; resolves with its seq once
   * queued. Messages from one sender reach every member in order, once,
   * across reconnects. Waits while `maxUnacked` are unacknowledged; while
   * reconnecting, the message is kept and sent after the rejoin. */
  async sendMessage(payload: Uint8Array | string): Promise<number> {
    return this.core.sendMessage(this.id, this.check(payload), true);
  }

  /** Like `sendMessage`, but fails with BACKPRESSURE instead of waiting. */
  async trySendMessage(payload: Uint8Array | string): Promise<number> {
    return this.core.sendMessage(this.id, this.check(payload), false);
  }

  private check(payload: Uint8Array | string): Uint8Array {
    const p = typeof payload === 'string' ? utf8.encode(payload) : payload;
    if (p.length > this.maxMessagePayload) throw invalid(`message payload of ${p.length} bytes exceeds ${this.maxMessagePayload}`);
    if (this.ring && this.ring.sendKeyId() === undefined) throw e2eeError({ kind: 'no-send-key' });
    return p;
  }

  /** Messages sent and not yet acknowledged by the edge. */
  unacked(): number {
    return this.core.unacked(this.id);
  }

  /** The channel's member sessions, ours included, as last heard
   * (`member-count`; 0 from an edge that does not count). */
  get memberCount(): number {
    return this.census.members;
  }

  /** Whether the channel is large: only members that publish are listed
   * (`member-joined`, `member-left`), the others are only counted. */
  get isLarge(): boolean {
    return this.census.large;
  }

  /** Replace the token used to rejoin after a reconnect (hand the SDK a
   * fresh one before the old one expires). */
  setToken(token: string): void {
    this.core.setToken(this.id, token);
  }

  get isE2ee(): boolean {
    return this.ring !== undefined;
  }

  private needRing(): KeyRing {
    if (!this.ring) throw invalid('the channel was joined without end-to-end encryption');
    return this.ring;
  }

  /** E2EE: install `key` and seal with it from now on (the previous send
   * key stays installed for opening). */
  setKey(key: ChannelKey): void {
    this.needRing().setKey(key);
  }

  /** E2EE: install `key` for opening only (the next key of a rotation). */
  addKey(key: ChannelKey): void {
    this.needRing().addKey(key);
  }

  /** E2EE: forget key `id`; true if it was installed. */
  removeKey(id: number): boolean {
    return this.needRing().removeKey(id);
  }

  /** E2EE: installed key ids (oldest first) and the send key id. */
  keys(): { ids: number[]; send: number | undefined } | undefined {
    return this.ring ? { ids: this.ring.keyIds(), send: this.ring.sendKeyId() } : undefined;
  }

  get maxMediaPayload(): number {
    return this.ring ? MAX_MEDIA_PLAINTEXT : MAX_MEDIA_PAYLOAD;
  }

  get maxMessagePayload(): number {
    return this.ring ? MAX_MESSAGE_PLAINTEXT : MAX_MESSAGE_PAYLOAD;
  }

  /** Leave the channel: its publishers stop, pending messages are dropped. */
  leave(): Promise<void> {
    return this.core.leave(this.id);
  }
}

/** A counting semaphore: the permits of a channel's unacked messages. */
export class Permits {
  private waiters: { resolve: () => void; reject: (e: unknown) => void }[] = [];
  private closed = false;
  constructor(private available: number) {}

  get free(): number {
    return this.available;
  }

  tryAcquire(): boolean {
    if (this.closed) throw closedError();
    if (this.available > 0 && this.waiters.length === 0) {
      this.available--;
      return true;
    }
    return false;
  }

  acquire(): Promise<void> {
    if (this.tryAcquire()) return Promise.resolve();
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  release(n: number): void {
    this.available += n;
    while (this.available > 0 && this.waiters.length > 0) {
      this.available--;
      this.waiters.shift()!.resolve();
    }
  }

  close(): void {
    this.closed = true;
    for (const w of this.waiters) w.reject(closedError());
    this.waiters = [];
  }
}
