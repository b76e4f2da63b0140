// The sender's replay window (docs/protocol.md §8), as sdk/src/replay.rs:
// what a sender resends after a reconnect, or to a member that (re)joined,
// so that no message its edge accepted is lost.
//
// Per channel, seqs start at 1 and grow by 1. The window keeps the last
// `window` messages, acknowledged or not, plus every unacknowledged one
// (never evicted; the caller bounds how many may be outstanding).
//
// The edge answers a connection's messages in order (an ack, or an Error in
// its place), so an ack of `seq` settles every earlier message sent on that
// connection. A refused seq is not used up: no receiver got it and the edge
// refuses later seqs until it is filled, so the next new message takes it,
// except a message first sent on an earlier connection, which that edge may
// have accepted and forwarded: its seq stays used.

export interface Sent {
  seq: number;
  payload: Uint8Array;
  sentAtUs: number;
}

export class ReplayWindow {
  private entries = new Map<number, Sent>(); // insertion order = seq order
  private ackedUpto = 0;
  private unackedCount = 0;
  private last = 0;
  /** Refused seqs above `ackedUpto` that no edge accepted. */
  private free = new Set<number>();
  /** Seqs up to this one were sent on a connection that is gone. */
  private sentOnLostLink = 0;

  constructor(private readonly window: number) {}

  unacked(): number {
    return this.unackedCount;
  }

  /** The last seq pushed and not given back by a refusal (0 before any). */
  lastSeq(): number {
    return this.last;
  }

  /** Record a new message with the next seq. */
  push(payload: Uint8Array, sentAtUs: number): Sent {
    const s: Sent = { seq: ++this.last, payload, sentAtUs };
    // Keep the map in seq order: a reused seq is always above every entry.
    this.entries.set(s.seq, s);
    this.unackedCount++;
    this.evict();
    return s;
  }

  /** The edge accepted `seq` (and so answered every message before it).
   * Returns how many were newly acknowledged. */
  ack(seq: number): number {
    seq = Math.min(seq, this.last);
    if (seq <= this.ackedUpto) return 0;
    let newly = 0;
    for (const k of this.entries.keys()) if (k > this.ackedUpto && k <= seq) newly++;
    this.unackedCount -= newly;
    this.ackedUpto = seq;
    // A refused seq below an accepted one is a gap for good.
    for (const f of this.free) if (f <= seq) this.free.delete(f);
    this.evict();
    return newly;
  }

  /** The edge refused `seq`: forget it (never replayed). True if it was an
   * unacknowledged message of the window. */
  refuse(seq: number): boolean {
    if (seq <= this.ackedUpto || !this.entries.delete(seq)) return false;
    this.unackedCount--;
    if (seq > this.sentOnLostLink) {
      this.free.add(seq);
      while (this.free.delete(this.last)) this.last--;
    }
    return true;
  }

  /** The connection the unacked messages went out on is gone. */
  linkLost(): void {
    this.sentOnLostLink = this.last;
    this.free.clear();
  }

  /** Everything to resend, in seq order. */
  replay(): Sent[] {
    return [...this.entries.values()];
  }

  get size(): number {
    return this.entries.size;
  }

  /** Drop acknowledged messages older than the last `window`. */
  private evict(): void {
    const keepFrom = Math.max(this.last - this.window, 0) + 1;
    const limit = Math.min(keepFrom, this.ackedUpto + 1);
    for (const k of this.entries.keys()) {
      if (k >= limit) break;
      this.entries.delete(k);
    }
  }
}
