// Dead-edge detection: how soon the client gives up on a silent edge (the
// Rust SDK's sdk/src/watchdog.rs: the same constants, and the same rule
// where the browser counts packets).
//
// The liveness timeout alone waits for the worst case (500 ms of silence),
// and an edge that dies without a word (power cut, a host off the network)
// sends nothing, not even the ICMP a closed port draws. A live edge is
// rarely silent that long: while media flows it sends a packet every
// 30-40 ms, and it answers a keepalive within a round trip. So the client
// asks instead of waiting: when media from the edge stops for
// CHECK_AFTER_MS it sends a keepalive at once, and judges the edge dead if
// it stays silent for `ackWait` after a keepalive (four RTTs, at least
// MIN_ACK_WAIT_MS: room for one retransmission of a lost keepalive or
// answer, which QUIC sends after about 1.5 RTT + 25 ms). Silent means:
// - where the browser counts QUIC packets (WebTransport `getStats()`'s
//   `packetsReceived`), not a single packet, an ACK or a retransmission
//   too, while media flows either way: the Rust rule, which loss on the
//   path cannot trip;
// - elsewhere (Chromium 156 has no `getStats`), not an app byte while
//   media from the edge was flowing: media stopped and the keepalive went
//   unanswered. Loss trips that only when it takes every media packet for
//   160 ms and a keepalive or its answer twice; a client that only
//   publishes gets no quick verdict (its keepalives are all it hears).
// Otherwise the liveness timeout (from the last app byte) judges.
//
// Pure logic: the client feeds it times and counts and acts on its verdict.

/** Media silence that prompts a check: two missing packets of the slowest
 * track (30-40 ms apart), which loss alone causes rarely; a check costs one
 * tiny frame if it was nothing. */
export const CHECK_AFTER_MS = 60;
/** Media counts as flowing if a packet arrived or left this recently: a
 * paused track or a channel without media gets no quick verdicts. */
export const MEDIA_RECENT_MS = 1_000;
/** The least time an edge's transport gets to answer a keepalive, whatever
 * its RTT: a busy edge or page delays it by tens of milliseconds without
 * being dead, and a lost keepalive is retransmitted within a probe timeout
 * (about an RTT plus 25 ms of ACK delay). */
export const MIN_ACK_WAIT_MS = 100;
/** Round trips an answer may take before the edge is judged dead: room for
 * a jittery path. */
const ACK_WAIT_RTTS = 4;

/** How long a keepalive may go unanswered on a path of `rttMs`, within the
 * `ceilingMs` (the liveness timeout). */
export function ackWait(rttMs: number, ceilingMs: number): number {
  return Math.min(Math.max(rttMs * ACK_WAIT_RTTS, MIN_ACK_WAIT_MS), Math.max(ceilingMs, MIN_ACK_WAIT_MS));
}

/** What the client has heard and sent on one link, at one moment (times in
 * `performance.now()` ms). */
export interface Heard {
  /** The last byte of the edge's app (a frame chunk or a datagram). */
  lastByte: number;
  /** The last datagram from the edge. */
  lastMedia: number | undefined;
  /** QUIC packets received on the session so far; undefined where the
   * browser does not say. */
  packetsRx: number | undefined;
  /** Datagrams sent on the session so far. */
  datagramsTx: number;
  rttMs: number;
}

/** What the edge's silence means now: `check` = send a keepalive now;
 * `dead` = give up on the edge (`why`). */
export type Verdict = { is: 'alive' } | { is: 'check' } | { is: 'dead'; why: string };

/** A keepalive awaiting an answer: when it was sent, the packets received
 * by then (if counted), and whether its wait is over without a verdict of
 * death (the transport answered, or media was not flowing). */
interface Question {
  at: number;
  packetsRx: number | undefined;
  settled: boolean;
}

/** The question pending on one link, and what media did lately. */
export class Watchdog {
  /** The first keepalive sent after the last app byte heard, and the
   * packets received by then: an answer (or anything) is due. */
  #asked: Question | undefined;
  /** Datagrams sent when last looked at, and when that count last grew. */
  #datagramsTx = 0;
  #sentMediaAt: number | undefined;

  constructor(readonly livenessTimeoutMs: number) {}

  /** A keepalive went out at `now`; `heard` was taken just before it. */
  asked(now: number, heard: Heard): void {
    this.#saw(now, heard);
    if (this.#pending(heard.lastByte) === undefined) this.#asked = { at: now, packetsRx: heard.packetsRx, settled: false };
  }

  /** Whether a verdict at `now` needs a fresh packet count (a question's
   * wait is over): counting is a call into the browser, so only then. */
  needsCount(now: number, lastByte: number, rttMs: number): boolean {
    const q = this.#pending(lastByte);
    return q !== undefined && !q.settled && now >= q.at + ackWait(rttMs, this.livenessTimeoutMs);
  }

  /** The verdict at `now`. */
  judge(now: number, heard: Heard): Verdict {
    this.#saw(now, heard);
    const wait = ackWait(heard.rttMs, this.livenessTimeoutMs);
    const q = this.#pending(heard.lastByte);
    if (q && !q.settled && now >= q.at + wait) {
      const ms = Math.round(wait);
      if (q.packetsRx !== undefined && heard.packetsRx !== undefined) {
        if (heard.packetsRx === q.packetsRx && this.#mediaFlowing(now, heard)) {
          return { is: 'dead', why: `not a packet from the edge for ${ms} ms after a keepalive` };
        }
      } else if (recent(heard.lastMedia, now)) {
        return { is: 'dead', why: `no answer from the edge for ${ms} ms after a keepalive, and its media stopped` };
      }
      // The transport answered, or media is not flowing: the liveness
      // timeout judges the rest of this silence.
      q.settled = true;
    }
    if (now >= heard.lastByte + this.livenessTimeoutMs) {
      return { is: 'dead', why: `nothing heard from the edge for ${this.livenessTimeoutMs} ms` };
    }
    if (!q && mediaStopped(heard.lastByte, heard.lastMedia) && now >= heard.lastByte + CHECK_AFTER_MS) {
      return { is: 'check' };
    }
    return { is: 'alive' };
  }

  /** When the verdict may next change if nothing is heard. */
  nextLook(lastByte: number, lastMedia: number | undefined, rttMs: number): number {
    let at = lastByte + this.livenessTimeoutMs;
    const q = this.#pending(lastByte);
    if (q) {
      if (!q.settled) at = Math.min(at, q.at + ackWait(rttMs, this.livenessTimeoutMs));
    } else if (mediaStopped(lastByte, lastMedia)) at = Math.min(at, lastByte + CHECK_AFTER_MS);
    return at;
  }

  #saw(now: number, heard: Heard): void {
    if (heard.datagramsTx > this.#datagramsTx) {
      this.#datagramsTx = heard.datagramsTx;
      this.#sentMediaAt = now;
    }
  }

  /** The pending question, if no app byte came since it was asked. */
  #pending(lastByte: number): Question | undefined {
    return this.#asked && this.#asked.at >= lastByte ? this.#asked : undefined;
  }

  #mediaFlowing(now: number, heard: Heard): boolean {
    return recent(heard.lastMedia, now) || recent(this.#sentMediaAt, now);
  }
}

/** Whether a silence that began at `lastByte` ends media: only then is the
 * edge asked at once. */
const mediaStopped = (lastByte: number, lastMedia: number | undefined): boolean => recent(lastMedia, lastByte);

/** Whether media at `t` is recent at `now`. */
const recent = (t: number | undefined, now: number): boolean => t !== undefined && t + MEDIA_RECENT_MS >= now;
