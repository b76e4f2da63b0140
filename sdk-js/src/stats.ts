// Counters of what the client did, and the round-trip time to its edge.

export interface Stats {
  /** New messages accepted from the app (replays not counted). */
  messagesSent: number;
  /** Own messages the edge acknowledged (each seq once). */
  messagesAcked: number;
  /** Own messages the edge refused. */
  messagesRefused: number;
  /** Own messages resent from the replay window. */
  messagesReplayed: number;
  /** Messages from others handed to the app, in order. */
  messagesDelivered: number;
  /** Messages from others dropped as already delivered or held. */
  messagesDuplicate: number;
  /** Messages from others given up on (gap not filled in time). */
  messagesSkipped: number;
  messagesUndecryptable: number;
  mediaSent: number;
  mediaReceived: number;
  /** Estimated media packets lost on the way, from the gaps in each
   * remote track's sequence numbers (as RTCP counts them). */
  mediaLost: number;
  /** Datagrams of a track key the client does not know. */
  mediaUnknownTrack: number;
  /** Datagrams that did not decode. */
  mediaMalformed: number;
  /** Media dropped because the app did not read the event iterator. */
  mediaDropped: number;
  /** Media dropped for arriving more than `maxMediaLatenessMs` late. */
  mediaLate: number;
  mediaUndecryptable: number;
  /** Loss repair (docs/protocol.md §5.1): received media packets asked
   * again of the edge (NACKed), gaps a retransmission (or a reordered
   * packet) filled, and packets received twice (dropped). */
  mediaNacked: number;
  mediaRecovered: number;
  mediaDuplicate: number;
  /** Sent media the edge asked for again and that was resent, and its
   * bytes; bytes of media sent (first copies, whole datagrams). */
  mediaResent: number;
  mediaResentBytes: number;
  mediaSentBytes: number;
  /** Audio packets sent again after the next one while the link to the
   * edge loses (§5.2), and their bytes. */
  mediaRedundant: number;
  mediaRedundantBytes: number;
  /** Frames of a kind this SDK does not know (newer edge), ignored. */
  framesUnknown: number;
  reconnects: number;
  goaways: number;
  /** Moves to a clearly faster edge found by re-probing. */
  edgeSwitches: number;
  /** Keepalive round trip to the current edge: latest, smoothed (RFC 6298
   * style, 1/8 gain) and minimum, in ms; undefined before the first. */
  rttMs: number | undefined;
  smoothedRttMs: number | undefined;
  minRttMs: number | undefined;
}

export function newStats(): Stats {
  return {
    messagesSent: 0, messagesAcked: 0, messagesRefused: 0, messagesReplayed: 0,
    messagesDelivered: 0, messagesDuplicate: 0, messagesSkipped: 0, messagesUndecryptable: 0,
    mediaSent: 0, mediaReceived: 0, mediaLost: 0, mediaUnknownTrack: 0, mediaMalformed: 0,
    mediaDropped: 0, mediaLate: 0, mediaUndecryptable: 0, mediaNacked: 0, mediaRecovered: 0,
    mediaDuplicate: 0, mediaResent: 0, mediaResentBytes: 0, mediaSentBytes: 0, mediaRedundant: 0,
    mediaRedundantBytes: 0, framesUnknown: 0,
    reconnects: 0, goaways: 0, edgeSwitches: 0,
    rttMs: undefined, smoothedRttMs: undefined, minRttMs: undefined,
  };
}

export function recordRtt(s: Stats, ms: number): void {
  s.rttMs = ms;
  s.smoothedRttMs = s.smoothedRttMs === undefined ? ms : s.smoothedRttMs + (ms - s.smoothedRttMs) / 8;
  s.minRttMs = s.minRttMs === undefined ? ms : Math.min(s.minRttMs, ms);
}

/** Loss of one remote track from its sequence numbers (u32, wrapping):
 * expected = highest extended sequence - first + 1; lost = expected -
 * received (reordered packets are not losses, duplicates can make it
 * briefly negative: clamped). */
export class LossCounter {
  private first: number | undefined;
  private highest = 0; // extended (wraps counted)
  private received = 0;

  /** Count packet `sequence`; returns the change of the lost estimate. */
  add(sequence: number): number {
    const before = this.lost();
    if (this.first === undefined) {
      this.first = this.highest = sequence;
    } else {
      // The extended sequence nearest the highest seen.
      const cycle = this.highest - (this.highest % 2 ** 32);
      let ext = cycle + sequence;
      if (ext - this.highest > 2 ** 31) ext -= 2 ** 32;
      else if (this.highest - ext > 2 ** 31) ext += 2 ** 32;
      if (ext > this.highest) this.highest = ext;
    }
    this.received++;
    return this.lost() - before;
  }

  lost(): number {
    return this.first === undefined ? 0 : Math.max(0, this.highest - this.first + 1 - this.received);
  }
}
