// The receiver's per-sender reorder buffer (docs/protocol.md §8), as
// sdk/src/reorder.rs: one sender's messages in seq order, each once.
//
// - The first message seen from a sender sets the next expected seq.
// - One below it, or already held, is a duplicate (dropped, counted).
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

  offer(m: Incoming, now: number): Outcome {
    const out: Outcome = { deliver: [], duplicate: false, skipped: 0 };
    this.next ??= m.seq;
    if (m.seq < this.next || this.held.has(m.seq)) {
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

  /** Jump over the first gap and deliver what follows it. */
  private skipGap(out: Outcome): void {
    if (this.next === undefined || this.held.size === 0) return;
    const first = Math.min(...this.held.keys());
    out.skipped += Math.max(0, first - this.next);
    this.next = first;
    this.drain(out);
  }
}
