// One remote stream (a member's track, by name) across the track keys and
// links it arrives by, as sdk/src/stream.rs.
//
// While the client moves between edges make-before-break (docs/protocol.md
// 4.5), the same packet may arrive twice: over the old link and the new
// one, or under the publisher's old and new track keys. A copy is the same
// packet exactly (same sequence number and send timestamp), so a small
// ring of what arrived, indexed by sequence number, tells copies from new
// packets; a publisher that starts a track again from sequence 0 sends new
// timestamps and is not taken for a copy. The stream also remembers the
// newest link it arrived over, so the client can tell when every flowing
// stream has moved to the new link and let the old one go.

/** Packets remembered: over a second of video, 2.5 s of audio. */
const RING = 128;

export class StreamArrivals {
  private readonly seqs = new Uint32Array(RING);
  /** Send timestamps (µs since 1970: exact in a double); -1: none yet. */
  private readonly sent = new Float64Array(RING).fill(-1);
  private last: number | undefined;
  /** The newest link (by `Link.id`) it arrived over. */
  private link = 0;

  /** Packet `seq`, sent at `sentUs`, arrived over `link` at `now` (ms):
   * false if it is a copy of one that arrived already. */
  arrived(seq: number, sentUs: number, link: number, now: number): boolean {
    this.last = now;
    this.link = Math.max(this.link, link);
    const i = seq % RING;
    if (this.seqs[i] === seq && this.sent[i] === sentUs) return false;
    this.seqs[i] = seq;
    this.sent[i] = sentUs;
    return true;
  }

  /** Whether it was flowing at `now` (a packet within `activeMs`) but has
   * not arrived over `link` (or a newer one) yet. */
  waitsFor(link: number, now: number, activeMs: number): boolean {
    return this.link < link && this.last !== undefined && now - this.last < activeMs;
  }
}

/** A stream that delivered a packet this recently (ms) is flowing. */
export const STREAM_ACTIVE_MS = 300;
/** A publisher sends to both edges at least this long (ms): the new edge
 * forwards to the members' edges at once, a one-way trip across the
 * overlay with room. */
export const PUBLISH_OVERLAP_MS = 300;
/** The old link goes after this (ms) whatever is still missing: an edge
 * that has just (re)started may need a second for its relay links and
 * routes (see sdk/src/supervisor/overlap.rs). */
export const MAX_OVERLAP_MS = 2000;
/** How often the overlap's end is checked (ms). */
export const OVERLAP_CHECK_MS = 20;

/** Whether the overlap after a move is over, `elapsedMs` after the
 * channels were restored on the new link. */
export function overlapOver(elapsedMs: number, publishing: boolean, streamsWaiting: boolean): boolean {
  return elapsedMs >= MAX_OVERLAP_MS || (!streamsWaiting && (!publishing || elapsedMs >= PUBLISH_OVERLAP_MS));
}
