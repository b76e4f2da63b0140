// The receiver's per-sender reorder buffer (docs/protocol.md §8), as
// sdk/src/reorder.rs: one sender's messages in seq order, each once.
//
// - The sequence opens at the first message that may open it (`opens`):
//   seq 1, a replay addressed to this receiver (the sender's window, sent
//   when it heard of this member), or any message from a sender that will
//   not replay to it. Live messages above seq 1 that come first wait for
//   that replay: a sender's edge may start forwarding to this receiver's
//   edge a moment before the sender hears of the new member and replays
//   what it sent before. If no replay comes within `timeoutMs`, the
//   sequence opens at the lowest message held.
// - One below the next expected seq, or already held, is a duplicate
//   (dropped, counted).
// - One above it waits (at most `maxHeld`) for the gap to fill. A gap is
//   given up (its seqs counted as skipped) once a message after it has
//   waited `timeoutMs`: each held message proves that everything missing
//   below it was missing since it arrived. Giving up on one gap delivers
//   what follows it, up to the next gap.

export interface Incoming {
  seq: number;
  payload: Uint8Array;
  sentAtUs: number;
}

export interface Outcome {
  deliver: Incoming[];
  duplicate: boolean;
  skipped: number;
}

export class ReorderBuffer {
  private next: number | undefined;
  private held = new Map<number, { m: Incoming; at: number }>();

  constructor(private readonly maxHeld: number, private readonly timeoutMs: number) {
    this.maxHeld = Math.max(1, maxHeld);
  }

  nextExpected(): number | undefined {
    return this.next;
  }

  heldCount(): number {
    return this.held.size;
  }

  /** `opens`: a replay to this receiver, or a sender that will not replay
   * to it (seq 1 opens anyway). */
  offer(m: Incoming, opens: boolean, now: number): Outcome {
    const out: Outcome = { deliver: [], duplicate: false, skipped: 0 };
    if (this.next === undefined && (opens || m.seq === 1)) {
      this.next = this.held.size > 0 ? Math.min(m.seq, ...this.held.keys()) : m.seq;
    }
    if ((this.next !== undefined && m.seq < this.next) || this.held.has(m.seq)) {
      out.duplicate = true;
      return out;
    }
    this.held.set(m.seq, { m, at: now });
    this.drain(out);
    while (this.held.size > this.maxHeld) this.skipGap(out);
    this.expire(now, out);
    return out;
  }

  /** Give up on gaps that waited too long (call periodically). */
  poll(now: number): Outcome {
    const out: Outcome = { deliver: [], duplicate: false, skipped: 0 };
    this.expire(now, out);
    return out;
  }

  /** When the oldest open gap times out. */
  deadline(): number | undefined {
    let min: number | undefined;
    for (const { at } of this.held.values()) if (min === undefined || at < min) min = at;
    return min === undefined ? undefined : min + this.timeoutMs;
  }

  private expire(now: number, out: Outcome): void {
    for (let d = this.deadline(); d !== undefined && now >= d; d = this.deadline()) this.skipGap(out);
  }

  private drain(out: Outcome): void {
    if (this.next === undefined) return;
    for (let h = this.held.get(this.next); h; h = this.held.get(this.next)) {
      this.held.delete(this.next);
      out.deliver.push(h.m);
      this.next++;
    }
  }

  /** Jump over the first gap and deliver what follows it. Before the
   * sequence opened, open it at the lowest held (nothing counted skipped). */
  private skipGap(out: Outcome): void {
    if (this.held.size === 0) return;
    const first = Math.min(...this.held.keys());
    if (this.next !== undefined) out.skipped += Math.max(0, first - this.next);
    this.next = first;
    this.drain(out);
  }
}
