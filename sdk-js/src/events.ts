// What the client reports to the app: typed events, through listeners
// (`client.on('message', fn)`) or an async iterator (`for await (const e of
// client.events())`). Listeners get everything; an iterator holds at most
// `mediaQueue` media events while the app does not read it (newer media is
// dropped and counted), every other event is kept.

import type { RtnError } from './errors';
import type { TrackKindName } from './proto';

export interface MediaEvent {
  type: 'media';
  channel: string;
  user: string;
  track: string;
  /** The publisher's per-track sequence number (wraps at 2^32). */
  sequence: number;
  /** The publisher's wall clock when sent, µs since the epoch. */
  timestampUs: number;
  payload: Uint8Array;
  /** `performance.now()` at arrival. */
  receivedAt: number;
}

export interface MessageEvent {
  type: 'message';
  channel: string;
  from: string;
  seq: number;
  payload: Uint8Array;
  sentAtUs: number;
}

export type RtnEvent =
  /** A user is now present (its first session; a reconnect of it is not
   * reported again). In a large channel: now listed (`member-count`). */
  | { type: 'member-joined'; channel: string; user: string }
  /** A user's last session left. `hidden`: it is still there, but
   * publishes nothing any more in a large channel, so it is counted
   * (`member-count`), not listed. */
  | { type: 'member-left'; channel: string; user: string; hidden: boolean }
  /** How many member sessions the channel has (ours included), and whether
   * it is large: then only members that publish are listed. On join, on a
   * change after a rejoin, and from the edge (at most once a second while
   * large). Becoming large, members that publish nothing are no longer
   * listed, without `member-left`; small again, a `member-joined` follows
   * for each user not listed. */
  | { type: 'member-count'; channel: string; members: number; large: boolean }
  | { type: 'track-available'; channel: string; user: string; track: string; kind: TrackKindName }
  | { type: 'track-unavailable'; channel: string; user: string; track: string }
  | MediaEvent
  | MessageEvent
  /** The connection was lost (or the edge said goaway); reconnecting. */
  | { type: 'reconnecting'; reason: string }
  /** Connected again, every channel restored. `edge` is its address. */
  | { type: 'reconnected'; edge: string }
  /** A channel could not be restored (e.g. its token was refused): join
   * again with a fresh token. */
  | { type: 'channel-lost'; channel: string; error: RtnError }
  /** The edge refused one of this client's messages. */
  | { type: 'message-refused'; channel: string; seq: number; error: RtnError }
  /** An error not tied to a call (e.g. a track not republished). */
  | { type: 'error'; error: RtnError }
  /** E2EE: something from `user` did not open (once per sender and kind of
   * failure until something from it opens again). */
  | { type: 'undecryptable'; channel: string; user: string; error: RtnError }
  /** The client is closed; no event follows. */
  | { type: 'closed' };

export type RtnEventType = RtnEvent['type'];
export type EventOf<K extends RtnEventType> = Extract<RtnEvent, { type: K }>;
type Listener = (e: RtnEvent) => void;

function report(e: unknown): void {
  const g = globalThis as { reportError?: (e: unknown) => void };
  if (g.reportError) g.reportError(e);
  else console.error(e);
}

export class Emitter {
  private listeners = new Map<string, Set<Listener>>();
  private iterators = new Set<EventQueue>();

  constructor(private readonly mediaQueue: number, private readonly onMediaDropped: () => void) {}

  /** Call `fn` for every event of `type` ('*': every event). Returns a
   * function that removes the listener. */
  on<K extends RtnEventType>(type: K, fn: (e: EventOf<K>) => void): () => void;
  on(type: '*', fn: (e: RtnEvent) => void): () => void;
  on(type: string, fn: (e: never) => void): () => void {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, (set = new Set()));
    set.add(fn as Listener);
    return () => set.delete(fn as Listener);
  }

  /** Every event from now on, in order, until the client is closed. */
  events(): AsyncIterableIterator<RtnEvent> {
    const q = new EventQueue(this.mediaQueue, this.onMediaDropped, () => this.iterators.delete(q));
    this.iterators.add(q);
    return q;
  }

  emit(e: RtnEvent): void {
    for (const key of [e.type, '*']) {
      for (const fn of this.listeners.get(key) ?? []) {
        try {
          fn(e);
        } catch (err) {
          report(err);
        }
      }
    }
    for (const q of this.iterators) q.push(e);
    if (e.type === 'closed') {
      for (const q of this.iterators) q.end();
      this.iterators.clear();
    }
  }
}

class EventQueue implements AsyncIterableIterator<RtnEvent> {
  private queue: RtnEvent[] = [];
  private media = 0;
  private waiting: ((r: IteratorResult<RtnEvent>) => void) | undefined;
  private ended = false;

  constructor(private readonly mediaLimit: number, private readonly dropped: () => void, private readonly detach: () => void) {}

  push(e: RtnEvent): void {
    if (this.ended) return;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = undefined;
      w({ value: e, done: false });
      return;
    }
    if (e.type === 'media') {
      if (this.media >= this.mediaLimit) return this.dropped();
      this.media++;
    }
    this.queue.push(e);
  }

  end(): void {
    this.ended = true;
    this.waiting?.({ value: undefined, done: true });
    this.waiting = undefined;
  }

  next(): Promise<IteratorResult<RtnEvent>> {
    const e = this.queue.shift();
    if (e) {
      if (e.type === 'media') this.media--;
      return Promise.resolve({ value: e, done: false });
    }
    if (this.ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => (this.waiting = resolve));
  }

  return(): Promise<IteratorResult<RtnEvent>> {
    this.detach();
    this.queue = [];
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<RtnEvent> {
    return this;
  }
}
