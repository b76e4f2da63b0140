// Media loss repair on the last mile (docs/protocol.md §5.1), free of I/O:
// the NACK datagram codec, the receiving end (a gap tracker per track: what
// is missing and when to ask for it) and the sending end (what was sent
// lately, and a budget for sending it again). Times are milliseconds
// (`performance.now()`) passed in by the caller; the client (client.ts)
// drives these with its links and a timer. The policy is the reference
// implementation's (crate `repair`).
//
// NACK (type 0x04 on a client link, both ways):
//
//   offset size field
//   0      1    type          0x04
//   1      8    channel_id    u64 BE
//   9      8    track_key     u64 BE
//   17     1    range_count   N, 1..=16
//   18     6N   ranges        first u32 BE, mask u16 BE: asks for `first`
//                             and `first + 1 + i` (mod 2^32) for every bit i
//                             set in mask (bit 0 least significant)

export const TYPE_NACK = 0x04;
export const NACK_FIXED_LEN = 18;
export const NACK_RANGE_LEN = 6;
export const MAX_NACK_RANGES = 16;

/** The first NACK for a gap waits this long: a packet a few ms late was
 * reordered, not lost. Also added to every retry's wait. */
export const REORDER_GRACE_MS = 5;
/** A packet is asked for at most this many times. */
export const MAX_NACKS = 4;
/** Sequences remembered behind the highest (duplicates told apart). */
export const WINDOW = 2_048;
/** Gaps tracked at once per track (the oldest given up first). */
export const MAX_MISSING = 512;
/** A jump forward past this is a restarted sequence, not a gap. */
export const MAX_JUMP = 1_000;
/** Tracks repaired at once; a track silent this long is forgotten. */
export const MAX_TRACKS = 4_096;
export const TRACK_IDLE_MS = 10_000;
/** What the sending end keeps: at most this long, this many packets. */
export const HISTORY_MS = 500;
export const HISTORY_PACKETS = 1_024;
/** Repair budget: bytes saved up, and repair bytes earned per media byte. */
export const BURST_BYTES = 65_536;
export const REPAIR_SHARE = 0.5;
/** Audio copies (§5.2): on at this loss of the link to the edge, off below
 * the next; a packet older than MAX_COPY_AGE_MS is not sent again (the
 * track paused). */
export const RED_ON_LOSS = 0.02;
export const RED_OFF_LOSS = 0.01;
export const MAX_COPY_AGE_MS = 100;
/** The link's loss is measured over windows of at least this long and this
 * many packets sent. */
export const LOSS_WINDOW_MS = 1_000;
export const LOSS_MIN_PACKETS = 50;

const U32 = 2 ** 32;

/** How long a packet of this track is worth repairing (ms): 400 for audio,
 * 500 for video and other tracks (the most a jitter buffer holds a packet
 * back, so a packet repaired within it may still be played), from the kind
 * in the key (bits 30-31 of its low 32 bits, §6). */
export function deadlineMs(trackKey: bigint): number {
  return isAudio(trackKey) ? 400 : 500;
}

function isAudio(trackKey: bigint): boolean {
  return Number(trackKey & 0xffff_ffffn) >>> 30 === 1;
}

export interface Nack {
  channelId: bigint;
  trackKey: bigint;
  /** The sequences asked for, in the order the ranges name them. */
  seqs: number[];
}

/** The NACK datagrams asking for `seqs` (in that order): a sequence 1..=16
 * after the current range's first goes into its mask, any other starts a
 * new range; 16 ranges per datagram. */
export function encodeNack({ channelId, trackKey, seqs }: Nack): Uint8Array[] {
  const ranges: [number, number][] = [];
  for (const s of seqs) {
    const last = ranges[ranges.length - 1];
    const d = last ? (s - last[0]) >>> 0 : 0;
    if (last && d >= 1 && d <= 16) last[1] |= 1 << (d - 1);
    else ranges.push([s >>> 0, 0]);
  }
  const out: Uint8Array[] = [];
  for (let i = 0; i < ranges.length; i += MAX_NACK_RANGES) {
    const chunk = ranges.slice(i, i + MAX_NACK_RANGES);
    const b = new Uint8Array(NACK_FIXED_LEN + chunk.length * NACK_RANGE_LEN);
    const v = new DataView(b.buffer);
    v.setUint8(0, TYPE_NACK);
    v.setBigUint64(1, BigInt.asUintN(64, channelId));
    v.setBigUint64(9, BigInt.asUintN(64, trackKey));
    v.setUint8(17, chunk.length);
    chunk.forEach(([first, mask], j) => {
      v.setUint32(NACK_FIXED_LEN + j * NACK_RANGE_LEN, first);
      v.setUint16(NACK_FIXED_LEN + j * NACK_RANGE_LEN + 4, mask);
    });
    out.push(b);
  }
  return out;
}

/** A received NACK, or undefined if malformed (not type 0x04, N outside
 * 1..=16, or a length other than 18 + 6N). */
export function decodeNack(d: Uint8Array): Nack | undefined {
  const n = d[17] ?? 0;
  if (d[0] !== TYPE_NACK || n < 1 || n > MAX_NACK_RANGES || d.length !== NACK_FIXED_LEN + n * NACK_RANGE_LEN) return undefined;
  const v = new DataView(d.buffer, d.byteOffset, d.length);
  const seqs: number[] = [];
  for (let o = NACK_FIXED_LEN; o < d.length; o += NACK_RANGE_LEN) {
    const first = v.getUint32(o);
    const mask = v.getUint16(o + 4);
    seqs.push(first);
    for (let i = 0; i < 16; i++) if (mask & (1 << i)) seqs.push((first + 1 + i) % U32);
  }
  // Ranges may overlap: a packet named twice is asked for once.
  return { channelId: v.getBigUint64(1), trackKey: v.getBigUint64(9), seqs: [...new Set(seqs)] };
}

// ----- the receiving end ---------------------------------------------------

/** What an arriving packet is to the receiving end: `new` (at or ahead of
 * the highest), `gap` (new, and packets before it are now missing),
 * `recovered` (filled a tracked gap), `late` (behind, not seen, not
 * tracked: still worth passing on), `duplicate` (seen: drop it), `old`
 * (further behind than the window: drop it), `restart` (a jump past 1,000:
 * tracking starts over). */
export type Arrival = 'new' | 'gap' | 'recovered' | 'late' | 'duplicate' | 'old' | 'restart';

interface Missing {
  since: number;
  nacks: number;
  next: number;
}

/** One track's sequence as it arrives: extended to 53 bits against the
 * highest seen (a wrap is the next packet), the gaps, when each is due. */
export class GapTracker {
  /** Extended sequence of the highest seen; -1 before the first. */
  private highest = -1;
  /** Where the sequence last (re)started: anything before is stale. */
  private floor = 0;
  /** Bit `s % WINDOW`: sequence `s` (within the window) arrived. */
  private readonly seen = new Uint32Array(WINDOW / 32);
  /** Missing extended sequences; insertion order is ascending. */
  readonly missing = new Map<number, Missing>();
  /** Gaps given up (deadline passed, or too many at once). */
  abandoned = 0;

  constructor(readonly deadlineMs: number) {}

  private extend(seq: number): number {
    return this.highest < 0 ? U32 + seq : this.highest + ((seq - (this.highest % U32)) | 0);
  }

  private mark(ext: number, on: boolean): void {
    const i = ext % WINDOW;
    if (on) this.seen[i >>> 5]! |= 1 << (i & 31);
    else this.seen[i >>> 5]! &= ~(1 << (i & 31));
  }

  private isSeen(ext: number): boolean {
    const i = ext % WINDOW;
    return (this.seen[i >>> 5]! & (1 << (i & 31))) !== 0;
  }

  /** Packet `seq` (u32) arrived at `now`. */
  onPacket(seq: number, now: number): Arrival {
    const ext = this.extend(seq);
    const h = this.highest;
    let a: Arrival = 'new';
    // A jump ahead past MAX_JUMP, or back past the window (no packet is
    // thousands late: a sender counting from 0 again), starts over.
    if (h >= 0 && ((ext > h && ext - h > MAX_JUMP) || h - ext >= WINDOW)) {
      this.seen.fill(0);
      this.abandoned += this.missing.size;
      this.missing.clear();
      this.floor = ext;
      a = 'restart';
    } else if (h >= 0 && ext > h + 1) {
      // Packets past the bound would be given up at once: not tracked.
      const from = Math.max(h + 1, ext - MAX_MISSING);
      this.abandoned += from - h - 1;
      for (let s = h + 1; s < ext; s++) {
        this.mark(s, false);
        if (s >= from) this.missing.set(s, { since: now, nacks: 0, next: now + REORDER_GRACE_MS });
      }
      for (const s of this.missing.keys()) {
        if (s > ext - WINDOW && this.missing.size <= MAX_MISSING) break;
        this.missing.delete(s);
        this.abandoned++;
      }
      a = 'gap';
    } else if (h >= 0 && ext <= h) {
      if (ext < this.floor) return 'old';
      if (this.isSeen(ext)) return 'duplicate';
      this.mark(ext, true);
      return this.missing.delete(ext) ? 'recovered' : 'late';
    }
    this.mark(ext, true);
    this.highest = ext;
    return a;
  }

  /** The sequences to ask for at `now` (each marked asked), for a hop with
   * round trip `rttMs` and jitter `jitterMs`: a gap is asked for after
   * the grace, again `rtt + jitter + grace` later, at most MAX_NACKS
   * times, never when the answer could not arrive before its deadline
   * (then it is not asked again), and forgotten at the deadline. */
  due(now: number, rttMs: number, jitterMs: number): number[] {
    const out: number[] = [];
    for (const [s, m] of this.missing) {
      const expires = m.since + this.deadlineMs;
      if (now >= expires) {
        this.missing.delete(s);
        this.abandoned++;
      } else if (m.nacks < MAX_NACKS && m.next <= now) {
        if (now + rttMs < expires) {
          m.nacks++;
          m.next = now + rttMs + jitterMs + REORDER_GRACE_MS;
          out.push(s % U32);
        } else m.nacks = MAX_NACKS; // too late now, and later too
      }
    }
    return out;
  }

  /** When `due` next has something to do, if anything is missing. */
  nextDue(): number | undefined {
    let at = Infinity;
    for (const m of this.missing.values()) {
      const expires = m.since + this.deadlineMs;
      at = Math.min(at, m.nacks < MAX_NACKS ? Math.min(m.next, expires) : expires);
    }
    return at === Infinity ? undefined : at;
  }
}

interface RxTrack {
  channelId: bigint;
  gaps: GapTracker;
  last: number;
}

/** The receiving end of one link: a gap tracker per track (at most
 * MAX_TRACKS, idle ones forgotten), and the NACKs due. */
export class RepairReceiver {
  private readonly tracks = new Map<bigint, RxTrack>();
  /** Tracks with gaps. */
  private readonly pending = new Set<bigint>();
  private lastPrune: number;

  constructor(now: number) {
    this.lastPrune = now;
  }

  get trackCount(): number {
    return this.tracks.size;
  }

  /** A media packet arrived at `now`. A track past MAX_TRACKS is passed
   * on unrepaired (`new`). */
  onMedia(channelId: bigint, trackKey: bigint, seq: number, now: number): Arrival {
    if (now - this.lastPrune >= TRACK_IDLE_MS) {
      this.lastPrune = now;
      for (const [k, t] of this.tracks) {
        if (now - t.last < TRACK_IDLE_MS) continue;
        this.tracks.delete(k);
        this.pending.delete(k);
      }
    }
    let t = this.tracks.get(trackKey);
    if (!t) {
      if (this.tracks.size >= MAX_TRACKS) return 'new';
      this.tracks.set(trackKey, (t = { channelId, gaps: new GapTracker(deadlineMs(trackKey)), last: now }));
    }
    t.last = now;
    const a = t.gaps.onPacket(seq, now);
    if (t.gaps.missing.size > 0) this.pending.add(trackKey);
    else this.pending.delete(trackKey);
    return a;
  }

  /** The NACK datagrams due at `now`, and how many packets they ask for. */
  nacks(now: number, rttMs: number, jitterMs: number): { datagrams: Uint8Array[]; asked: number } {
    const datagrams: Uint8Array[] = [];
    let asked = 0;
    for (const key of this.pending) {
      const t = this.tracks.get(key);
      const seqs = t ? t.gaps.due(now, rttMs, jitterMs) : [];
      if (seqs.length > 0) {
        asked += seqs.length;
        datagrams.push(...encodeNack({ channelId: t!.channelId, trackKey: key, seqs }));
      }
      if (!t || t.gaps.missing.size === 0) this.pending.delete(key);
    }
    return { datagrams, asked };
  }

  /** When `nacks` next has something to do (undefined: no gaps). */
  nextDue(): number | undefined {
    let at: number | undefined;
    for (const key of this.pending) {
      const n = this.tracks.get(key)?.gaps.nextDue();
      if (n !== undefined && (at === undefined || n < at)) at = n;
    }
    return at;
  }
}

// ----- the sending end -----------------------------------------------------

interface Sent {
  key: bigint;
  seq: number;
  pkt: Uint8Array;
  at: number;
  /** The edge has NACKed it (counted once towards the link's loss). */
  asked?: boolean;
}

/** The sending end: the media datagrams sent lately (exact bytes, at most
 * HISTORY_MS and `maxPackets`), a budget of repair bytes (earning
 * REPAIR_SHARE of each media byte sent, up to BURST_BYTES saved), and audio
 * copies while the link loses (§5.2: each audio packet sent again after the
 * next one of its track, never with itself, which QUIC would pack into the
 * same UDP packet). A browser has no portable view of QUIC's loss counters,
 * so the link's loss is the share of sent packets the edge NACKs. */
export class RepairSender {
  /** Oldest first. */
  private readonly order: Sent[] = [];
  /** Held packets by track, then sequence. */
  private readonly tracks = new Map<bigint, Map<number, Sent>>();
  private tokens = BURST_BYTES;
  private window = { start: -Infinity, sent: 0, asked: 0 };
  private lossNow = 0;
  private redOn = false;
  /** Per audio track, its latest packet, while copies are on. */
  private readonly recent = new Map<bigint, { at: number; pkt: Uint8Array }>();

  constructor(readonly maxPackets = HISTORY_PACKETS) {}

  /** Packets held now. */
  get held(): number {
    return this.order.length;
  }

  /** The link's loss as last measured, and whether audio is sent twice. */
  get loss(): number {
    return this.lossNow;
  }
  get copying(): boolean {
    return this.redOn;
  }

  /** Datagram `pkt` (sequence `seq` of track `key`) is being sent at `now`:
   * the audio copy to send after it, if any. */
  sent(key: bigint, seq: number, pkt: Uint8Array, now: number): Uint8Array | undefined {
    this.#measure(now);
    const copy = this.#copy(key, pkt, now);
    this.#keep(key, seq, pkt, now);
    return copy;
  }

  #measure(now: number): void {
    const w = this.window;
    w.sent++;
    if (now - w.start < LOSS_WINDOW_MS) return;
    if (w.sent >= LOSS_MIN_PACKETS && w.start > -Infinity) {
      this.lossNow = Math.min(1, w.asked / w.sent);
      this.redOn = this.lossNow >= (this.redOn ? RED_OFF_LOSS : RED_ON_LOSS);
      if (!this.redOn) this.recent.clear();
    }
    if (w.sent >= LOSS_MIN_PACKETS || w.start === -Infinity) this.window = { start: now, sent: 0, asked: 0 };
  }

  #copy(key: bigint, pkt: Uint8Array, now: number): Uint8Array | undefined {
    if (!this.redOn || !isAudio(key)) return undefined;
    const previous = this.recent.get(key);
    if (!previous) {
      // Tracks come and go with publishes; forget the silent ones.
      for (const [k, v] of this.recent) if (now - v.at > TRACK_IDLE_MS) this.recent.delete(k);
    }
    this.recent.set(key, { at: now, pkt });
    return previous && now - previous.at <= MAX_COPY_AGE_MS ? previous.pkt : undefined;
  }

  #keep(key: bigint, seq: number, pkt: Uint8Array, now: number): void {
    this.tokens = Math.min(BURST_BYTES, this.tokens + pkt.length * REPAIR_SHARE);
    for (let o = this.order[0]; o && (o.at < now - HISTORY_MS || this.order.length >= this.maxPackets); o = this.order[0]) {
      this.order.shift();
      const t = this.tracks.get(o.key)!;
      t.delete(o.seq);
      if (t.size === 0) this.tracks.delete(o.key);
    }
    let t = this.tracks.get(key);
    if (!t) this.tracks.set(key, (t = new Map()));
    // Sent twice: the first time counts (the deadline runs from it).
    if (t.has(seq)) return;
    const s = { key, seq, pkt, at: now };
    t.set(seq, s);
    this.order.push(s);
  }

  /** The datagram to send again for a NACK of `seq` of track `key` at
   * `now`: held, and younger than its kind's deadline. */
  lookup(key: bigint, seq: number, now: number): Uint8Array | undefined {
    const s = this.tracks.get(key)?.get(seq);
    return s && now - s.at < deadlineMs(key) ? s.pkt : undefined;
  }

  /** The datagrams to send again for `nack` at `now`: each named packet
   * still held and in time, once, while the budget lasts. */
  answer(nack: Nack, now: number): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const seq of new Set(nack.seqs)) {
      const s = this.tracks.get(nack.trackKey)?.get(seq);
      if (s && !s.asked) {
        s.asked = true;
        this.window.asked++;
      }
      const p = this.lookup(nack.trackKey, seq, now);
      if (!p || this.tokens < p.length) continue;
      this.tokens -= p.length;
      out.push(p);
    }
    return out;
  }
}

/** Packets of unknown tracks held at most (as `repair::early` in Rust). */
export const MAX_EARLY_PACKETS = 128;

/** A media datagram of a track not announced yet (docs/protocol.md §5: the
 * `trackAvailable` comes on the control stream and may be read after the
 * track's first datagrams), held until it is, at most its kind's deadline
 * and MAX_EARLY_PACKETS of them, the oldest dropped first. Generic over what
 * the caller keeps of each packet. */
export class EarlyMedia<P> {
  #held: { key: bigint; at: number; packet: P }[] = [];

  get size(): number {
    return this.#held.length;
  }

  /** Hold a packet of track `key`; how many held packets were dropped. */
  hold(key: bigint, packet: P, now: number): number {
    let dropped = this.#expire(now);
    if (this.#held.length >= MAX_EARLY_PACKETS) {
      this.#held.shift();
      dropped++;
    }
    this.#held.push({ key, at: now, packet });
    return dropped;
  }

  /** The held packets whose track is `known` now, in the order they came,
   * and how many were dropped as too old. */
  release(known: (key: bigint) => boolean, now: number): { released: P[]; dropped: number } {
    const dropped = this.#expire(now);
    const released: P[] = [];
    this.#held = this.#held.filter((e) => {
      if (!known(e.key)) return true;
      released.push(e.packet);
      return false;
    });
    return { released, dropped };
  }

  #expire(now: number): number {
    const before = this.#held.length;
    this.#held = this.#held.filter((e) => now - e.at <= deadlineMs(e.key));
    return before - this.#held.length;
  }
}
