// The `Client`: the app's handle on one WebTransport session (at a time) to
// the RTN edge network, and the state machine behind it (the Rust SDK's
// supervisor, sdk/src/supervisor/). Everything runs on the event loop, so
// the handles call into it directly.
//
// Life of a link: connect (staggered attempts over the candidates), open
// the control stream, rejoin every channel, then serve: app requests,
// frames from the edge, a keepalive every `keepaliveIntervalMs`, and a
// liveness check (nothing heard for `livenessTimeoutMs` = the edge is
// gone). Whatever ends the link (session closed, stream error, bad frame,
// silence, goaway) leads back to connecting, with the channels kept:
// goaway redirects first, then the candidates after the failed one, the
// first round at once, then jittered backoff (50 ms doubling to 2 s).
//
// Restoring a channel: Join with the stored token; on Joined, reconcile
// members and tracks (events for what changed), publish every track again
// (new track keys; each publisher follows its own), restore subscriptions,
// then resend the replay window in seq order. A goaway or a clearly faster
// edge is make-before-break: the old link keeps carrying media until the
// channels are restored on the new one.
//
// Messages: the edge answers every ChatMessage with a MessageAck or an
// Error with request id 0, in order, so a FIFO of the messages sent on the
// current link tells which message an error refuses.

import { backoffDelay, DEFAULT_BACKOFF, type Backoff } from './backoff';
import { Channel, MAX_NAME_LEN, Permits, TrackSlot, byteLen, nowUs, type ClientCore } from './channel';
import { checkCandidate, Link, type EdgeCandidate, type WebTransportCtor } from './connection';
import { bytesToHex, ChannelKey, E2eeKeys, KeyRing, randomBase } from './e2ee';
import { Emitter, type EventOf, type RtnEvent, type RtnEventType } from './events';
import { ErrorCode, RtnError, closedError, fromWire, invalid } from './errors';
import { decodeMedia, MEDIA_HEADER_LEN, type MediaHeader } from './media';
import { freshShortlist, probeAll, rerank, shortlistOrLast } from './nearest';
import { MemberLeftReason, TrackKind, type ChatMessage, type ClientFrame, type EdgeAddressPb, type Joined, type ServerFrame } from './proto';
import { ReorderBuffer, type Outcome } from './reorder';
import { decodeNack, EarlyMedia, RepairReceiver, RepairSender, REORDER_GRACE_MS, TYPE_NACK } from './repair';
import { ReplayWindow, type Sent } from './replay';
import { Roster, type RemoteTrack, type TrackMap } from './roster';
import { OVERLAP_CHECK_MS, STREAM_ACTIVE_MS, overlapOver } from './stream';
import { newStats, recordRtt, type Stats } from './stats';
import { Watchdog, type Heard } from './watchdog';

export interface ClientOptions {
  /** A region controller (`https://host:port` or `http://`) to ask for
   * nearby edges when `edges` is not given, or several, asked in order:
   * when one does not answer (or answers an error) the next is asked. At
   * most 8. */
  controller?: string | string[];
  /** Candidate edges (the nearest-answer shape), best first. */
  edges?: EdgeCandidate[];
  /** Edges asked of the controller (1..=32). Default 4. */
  shortlistLen?: number;
  /** Measure the candidates before connecting and connect to the fastest.
   * Always done for a controller's shortlist; default false for `edges`. */
  probeCandidates?: boolean;
  /** Default 1000. */
  probeTimeoutMs?: number;
  /** Re-measure this often while connected and move to a clearly faster
   * edge; null: never. Default 30000. */
  reprobeIntervalMs?: number | null;
  /** Default 150. */
  keepaliveIntervalMs?: number;
  /** Nothing heard for this long = the edge is gone. Default 500. */
  livenessTimeoutMs?: number;
  /** One connection attempt (WebTransport handshake and control stream).
   * Default 2000 (a browser session takes about two round trips). */
  connectTimeoutMs?: number;
  /** Attempts within a round start this far apart. Default 200. */
  connectStaggerMs?: number;
  /** Rounds `Client.connect` makes before it gives up. Default 3. */
  connectRounds?: number;
  /** Limit of a request (join, publish, subscribe, leave, a message being
   * queued), reconnects included. Default 5000. */
  requestTimeoutMs?: number;
  backoff?: Partial<Backoff>;
  /** Messages kept per channel for replay after they were acked. 256. */
  replayWindow?: number;
  /** Unacknowledged messages per channel before sending waits. 1024. */
  maxUnacked?: number;
  /** How long a gap in a sender's messages is waited for. 5000. */
  reorderTimeoutMs?: number;
  /** Out-of-order messages held per sender. 1024. */
  maxHeldPerSender?: number;
  /** Media events an unread `events()` iterator holds. 4096. */
  mediaQueue?: number;
  /** Media later than this behind its track's fastest is dropped; null
   * delivers everything. Default 1000. */
  maxMediaLatenessMs?: number | null;
  /** Loss repair on the last mile (docs/protocol.md §5.1): ask the edge
   * for missing received media (NACKs) and drop duplicates; keep the media
   * sent for 300 ms (1,024 packets) to answer the edge's NACKs. Default
   * true; false: no NACKs sent, none answered, nothing kept. */
  repair?: boolean;
  /** The WebTransport constructor; default `globalThis.WebTransport`. */
  WebTransport?: WebTransportCtor;
  /** The fetch function for the controller; default `globalThis.fetch`. */
  fetch?: typeof fetch;
}

type Config = Required<Omit<ClientOptions, 'controller' | 'edges' | 'WebTransport' | 'fetch' | 'backoff'>> & {
  controllers: string[];
  edges: EdgeCandidate[];
  backoff: Backoff;
  WebTransport: WebTransportCtor | undefined;
  fetch: typeof fetch | undefined;
};

export interface JoinOptions {
  /** Receive every member's media at once (needs the subscribe right). */
  subscribeAll?: boolean;
  /** End-to-end encrypt this channel with these keys (docs/e2ee.md). */
  e2ee?: ChannelKey | E2eeKeys;
}

/** The `reconnecting` event's reason when the client moves, of its own
 * accord, to an edge it measured clearly faster (not a failure). */
export const MOVED_TO_FASTER_EDGE = 'a clearly faster edge was measured';

const MAX_TOKEN_LEN = 1_024;
/** Controllers an app may name (asked in turn, each within the request
 * timeout). */
const MAX_CONTROLLERS = 8;
/** A goaway may not park the client longer than this. */
const MAX_GOAWAY_WAIT_MS = 10_000;
/** How often a client that cannot reconnect asks the controllers again at
 * most (as the Rust SDK's SHORTLIST_REFRESH_EVERY): the first failed round
 * asks at once, later ones no more than this, so a region of clients whose
 * edges are all down does not turn its backoff into a flood of lookups. */
const SHORTLIST_REFRESH_EVERY_MS = 5_000;
const CLOSE_FLUSH_MS = 200;
/** While packets of tracks not announced yet are held, how often to look
 * whether they are now (the announcement lags its first packets by a moment). */
const EARLY_LOOK_MS = 5;

function config(o: ClientOptions): Config {
  const c: Config = {
    controllers: o.controller === undefined ? [] : typeof o.controller === 'string' ? [o.controller] : [...o.controller],
    edges: [...(o.edges ?? [])],
    shortlistLen: o.shortlistLen ?? 4,
    probeCandidates: o.probeCandidates ?? false,
    probeTimeoutMs: o.probeTimeoutMs ?? 1_000,
    reprobeIntervalMs: o.reprobeIntervalMs === undefined ? 30_000 : o.reprobeIntervalMs,
    keepaliveIntervalMs: o.keepaliveIntervalMs ?? 150,
    livenessTimeoutMs: o.livenessTimeoutMs ?? 500,
    connectTimeoutMs: o.connectTimeoutMs ?? 2_000,
    connectStaggerMs: o.connectStaggerMs ?? 200,
    connectRounds: o.connectRounds ?? 3,
    requestTimeoutMs: o.requestTimeoutMs ?? 5_000,
    backoff: { ...DEFAULT_BACKOFF, ...o.backoff },
    replayWindow: o.replayWindow ?? 256,
    maxUnacked: o.maxUnacked ?? 1_024,
    reorderTimeoutMs: o.reorderTimeoutMs ?? 5_000,
    maxHeldPerSender: o.maxHeldPerSender ?? 1_024,
    mediaQueue: o.mediaQueue ?? 4_096,
    maxMediaLatenessMs: o.maxMediaLatenessMs === undefined ? 1_000 : o.maxMediaLatenessMs,
    repair: o.repair ?? true,
    WebTransport: o.WebTransport ?? (globalThis as { WebTransport?: WebTransportCtor }).WebTransport,
    fetch: o.fetch ?? globalThis.fetch?.bind(globalThis),
  };
  const bad = (m: string): never => {
    throw invalid(m);
  };
  if (c.edges.length === 0 && c.controllers.length === 0) bad('edges: at least one candidate edge (or a controller to ask) is needed');
  c.edges.forEach(checkCandidate);
  if (c.controllers.length > MAX_CONTROLLERS) bad(`controller: at most ${MAX_CONTROLLERS} URLs`);
  if (c.controllers.some((u) => typeof u !== 'string' || u === '')) bad('controller: URLs must be non-empty strings');
  if (c.controllers.length > 0 && !(c.shortlistLen >= 1 && c.shortlistLen <= 32)) bad('shortlistLen must be within 1..=32');
  if (!(c.probeTimeoutMs > 0)) bad('probeTimeoutMs must be above zero');
  if (c.reprobeIntervalMs !== null && !(c.reprobeIntervalMs >= 1_000)) bad('reprobeIntervalMs must be at least 1000');
  if (!(c.keepaliveIntervalMs > 0)) bad('keepaliveIntervalMs must be above zero');
  if (!(c.livenessTimeoutMs > c.keepaliveIntervalMs)) bad('livenessTimeoutMs must exceed keepaliveIntervalMs');
  if (!(c.connectTimeoutMs > 0 && c.requestTimeoutMs > 0)) bad('connectTimeoutMs and requestTimeoutMs must be above zero');
  if (!(c.connectRounds >= 1)) bad('connectRounds must be at least 1');
  if (!(c.backoff.initialMs > 0 && c.backoff.maxMs >= c.backoff.initialMs)) bad('backoff: need 0 < initialMs <= maxMs');
  if (!(c.backoff.jitter >= 0 && c.backoff.jitter <= 10)) bad('backoff.jitter must be within 0..=10');
  if (!(c.maxUnacked >= 1 && c.maxUnacked <= 1 << 20)) bad('maxUnacked must be within 1..=1048576');
  if (!(c.maxHeldPerSender >= 1 && c.mediaQueue >= 1)) bad('maxHeldPerSender and mediaQueue must be at least 1');
  if (!(c.reorderTimeoutMs > 0)) bad('reorderTimeoutMs must be above zero');
  return c;
}

interface Reply<T> {
  resolve(v: T): void;
  reject(e: unknown): void;
  /** Answered, or the caller gave up (timeout). */
  done: boolean;
}

/** A joined channel, as the client keeps it across links. */
interface ChannelState {
  name: string;
  token: string;
  subAll: boolean;
  subUsers: Set<string>;
  /** Own published tracks, republished on every new link. */
  tracks: Set<TrackSlot>;
  window: ReplayWindow;
  permits: Permits;
  /** Joined on the current link. */
  live: boolean;
  /** The edge refused a message for lack of the publish right. */
  publishRefused: boolean;
  roster: Roster;
  ring: KeyRing | undefined;
  /** Random base of this join's message stream (e2ee nonces). */
  msgBase: bigint;
  /** Messages are numbered and sealed one at a time, in call order. */
  sending: Promise<unknown>;
  receivers: Map<string, ReorderBuffer>;
}

/** A request awaiting the edge's answer on the current link. */
type Pending =
  | { kind: 'join'; token: string; channel: string; subscribeAll: boolean; e2ee: E2eeKeys | undefined; reply: Reply<Channel> }
  | { kind: 'rejoin'; channelId: bigint }
  | { kind: 'publish'; channelId: bigint; slot: TrackSlot; reply: Reply<void> }
  | { kind: 'republish'; channelId: bigint; slot: TrackSlot }
  | { kind: 'subscribe'; channelId: bigint; user: string; reply: Reply<void> }
  | { kind: 'resubscribe'; channelId: bigint; user: string }
  | { kind: 'leave'; reply: Reply<void> }
  /** Requests whose answers do not matter (unpublish, unsubscribe, stray
   * leaves). */
  | { kind: 'ignore' };

interface Target {
  edge: EdgeCandidate;
  /** Index in the candidates; undefined for a goaway redirect. */
  index: number | undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const message = (e: unknown): string => (e instanceof Error ? e.message : String(e));

function redirectCandidate(r: EdgeAddressPb): EdgeCandidate {
  return { addr: r.addr, server_name: r.serverName, cert_sha256: r.certSha256.filter((h) => h.length === 32).map(bytesToHex), id: r.edgeId };
}

export class Client implements ClientCore {
  readonly stats: Stats = newStats();
  readonly #cfg: Config;
  readonly #emitter: Emitter;
  /** Remote tracks of every joined channel, by key (for the media reader). */
  readonly #tracks: TrackMap = new Map();
  /** Media of tracks not announced yet (repair.ts `EarlyMedia`). */
  readonly #early = new EarlyMedia<{ link: Link; d: Uint8Array; h: MediaHeader }>();
  #earlyTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #channels = new Map<bigint, ChannelState>();
  readonly #pending = new Map<number, Pending>();
  /** Request ids of recent requests without a success reply. */
  #fired: number[] = [];
  /** Commands waiting for a link. */
  #deferred: (() => void)[] = [];
  /** Messages sent on the current link and not yet answered, in order. */
  #outstanding: [bigint, number][] = [];
  #nextRid = 0;
  #redirects: EdgeCandidate[] = [];
  /** Index of the candidate connected to last. */
  #current: number | undefined;
  #failures = 0;
  #link: Link | undefined;
  /** The old link after a goaway or a move, until channels are restored
   * and then while the overlap lasts (make-before-break). */
  #draining: Link | undefined;
  /** When the channels were restored on the new link, while the old one
   * is still kept; and the timer checking the overlap's end. */
  #overlapSince: number | undefined;
  #overlapTimer: ReturnType<typeof setInterval> | undefined;
  /** Set from a lost link until every channel is restored on a new one. */
  #outage: string | undefined;
  /** The edge the last link was lost to by its silence (the watchdog's
   * verdict), until the rejoins on a new link name it
   * (`Join.unreachable_edge`): the new edge then sends around it at once. */
  #unreachableEdge = 0;
  #restoring = 0;
  #restoreDeadline: number | undefined;
  #goawayTimer: ReturnType<typeof setTimeout> | undefined;
  #tick: ReturnType<typeof setInterval> | undefined;
  /** Dead-edge detection on the current link, and its next look. */
  #watchdog: Watchdog | undefined;
  #watchTimer: ReturnType<typeof setTimeout> | undefined;
  #reprobe: ReturnType<typeof setInterval> | undefined;
  #probing = false;
  /** The first connection was a handshake race not yet settled by a
   * measurement (`shouldSettle`). */
  #raceUnsettled = false;
  /** The candidates are a controller's shortlist (none were given), so a
   * reconnect that fails on all of them asks again. */
  #shortlisted = false;
  #lastRefresh: number | undefined;
  #refreshing: Promise<void> | undefined;
  #connecting = false;
  #leftLast = false;
  #closed = false;
  #keepalives = new Map<bigint, number>();
  /** Media sent lately, for the edge's NACKs (undefined: repair off). */
  readonly #repairOut: RepairSender | undefined;

  private constructor(cfg: Config) {
    this.#cfg = cfg;
    this.#repairOut = cfg.repair ? new RepairSender() : undefined;
    this.#emitter = new Emitter(cfg.mediaQueue, () => this.stats.mediaDropped++);
  }

  /** Validate `options`, find the candidates (the controller's shortlist,
   * measured, or `edges`), and connect to the first that answers. */
  static async connect(options: ClientOptions): Promise<Client> {
    const c = new Client(config(options));
    await c.#chooseEdges();
    let last: unknown;
    // A race when the candidates are to be measured: every handshake at
    // once, the first to answer wins (its handshake is the measurement, one
    // round trip plus the edge's TLS work, alike for all), so nobody waits
    // for probes of the far ones; the probes right after correct a close
    // call (as the Rust SDK, sdk/src/supervisor/mod.rs connect_first).
    const race = c.#cfg.probeCandidates && c.#cfg.edges.length > 1;
    c.#raceUnsettled = race;
    for (let round = 0; round < c.#cfg.connectRounds; round++) {
      if (round > 0) await sleep(c.#nextDelay());
      try {
        const [link, target] = await c.#round(c.#attempts(), race ? 0 : c.#cfg.connectStaggerMs);
        c.#failures = 0;
        c.#current = target.index;
        c.#serve(link);
        c.#startReprobing();
        return c;
      } catch (e) {
        last = e;
      }
    }
    const all = last instanceof RtnError ? last : new RtnError('CONNECT_FAILED', message(last));
    throw new RtnError(all.code, `could not connect to any edge: ${all.message}`, { cause: last });
  }

  /** Join `channel` with a token from the app's server. */
  async join(token: string, channel: string, options: JoinOptions = {}): Promise<Channel> {
    if (token.length === 0 || byteLen(token) > MAX_TOKEN_LEN) throw invalid(`token must be 1..=${MAX_TOKEN_LEN} bytes`);
    const n = byteLen(channel);
    if (n === 0 || n > MAX_NAME_LEN) throw invalid(`channel name must be 1..=${MAX_NAME_LEN} bytes`);
    const e2ee = options.e2ee instanceof ChannelKey ? E2eeKeys.of(options.e2ee) : options.e2ee;
    return this.#call<Channel>((reply) => this.#cmdJoin({ kind: 'join', token, channel, subscribeAll: options.subscribeAll ?? false, e2ee, reply }));
  }

  /** Listen to events of one type ('*': all). Returns the unsubscriber. */
  on<K extends RtnEventType>(type: K, fn: (e: EventOf<K>) => void): () => void;
  on(type: '*', fn: (e: RtnEvent) => void): () => void;
  on(type: string, fn: (e: never) => void): () => void {
    return this.#emitter.on(type as RtnEventType, fn as (e: RtnEvent) => void);
  }

  /** Every event from now on, in order: `for await (const e of
   * client.events())`. Ends after the client is closed. */
  events(): AsyncIterableIterator<RtnEvent> {
    return this.#emitter.events();
  }

  /** A copy of the counters. */
  getStats(): Stats {
    return { ...this.stats };
  }

  /** The edge in use now (undefined while reconnecting). */
  edge(): EdgeCandidate | undefined {
    return this.#link?.edge;
  }

  /** Leave every channel and close the session (code 0). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const link = this.#link;
    if (link) {
      for (const channelId of this.#channels.keys()) this.#request((requestId) => ({ leave: { requestId, channelId } }), { kind: 'ignore' });
      await link.shutdown(0, 'client closed', CLOSE_FLUSH_MS);
    }
    this.#letOldLinkGo('client closed');
    this.#stopLinkTimers();
    clearInterval(this.#reprobe);
    this.#link = undefined;
    for (const id of [...this.#channels.keys()]) this.#removeChannel(id, () => ({ state: 'closed' }));
    for (const p of this.#pending.values()) if ('reply' in p) p.reply.reject(closedError());
    this.#pending.clear();
    this.#deferred = [];
    this.#emitter.emit({ type: 'closed' });
  }

  // ----- plumbing -----------------------------------------------------

  #emit(e: RtnEvent): void {
    this.#emitter.emit(e);
  }

  /** Issue a command; its answer within `requestTimeoutMs`. */
  #call<T>(issue: (reply: Reply<T>) => void): Promise<T> {
    if (this.#closed) return Promise.reject(closedError());
    return new Promise<T>((resolve, reject) => {
      const reply: Reply<T> = {
        done: false,
        resolve: (v) => {
          if (reply.done) return;
          reply.done = true;
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          if (reply.done) return;
          reply.done = true;
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => reply.reject(new RtnError('TIMEOUT', 'timed out')), this.#cfg.requestTimeoutMs);
      issue(reply);
    });
  }

  /** Run `cmd` now if connected, else when the next link is up. */
  #whenLinked(cmd: () => void): void {
    if (this.#link) return cmd();
    this.#deferred.push(cmd);
    this.#reconnect();
  }

  #rid(): number {
    this.#nextRid = this.#nextRid >= 0xffff_ffff ? 1 : this.#nextRid + 1;
    return this.#nextRid;
  }

  #send(f: ClientFrame): void {
    this.#link?.send(f);
  }

  #request(frame: (rid: number) => ClientFrame, p: Pending): void {
    const rid = this.#rid();
    this.#send(frame(rid));
    this.#pending.set(rid, p);
  }

  /** A request without a success reply. */
  #fire(frame: (rid: number) => ClientFrame): void {
    const rid = this.#rid();
    this.#send(frame(rid));
    if (this.#fired.length >= 256) this.#fired.shift();
    this.#fired.push(rid);
  }

  #nextDelay(): number {
    return backoffDelay(this.#cfg.backoff, this.#failures++, Math.random());
  }

  // ----- choosing the edge and connecting ------------------------------

  async #chooseEdges(): Promise<void> {
    const cfg = this.#cfg;
    if (cfg.edges.length === 0) {
      this.#shortlisted = true;
      cfg.edges = await shortlistOrLast(cfg.controllers, cfg.shortlistLen, cfg.requestTimeoutMs, cfg.fetch);
      // GeoIP ranks roughly: race the handshakes, then measure.
      cfg.probeCandidates = true;
    }
  }

  #startReprobing(): void {
    const every = this.#cfg.reprobeIntervalMs;
    if (!this.#cfg.probeCandidates || this.#cfg.edges.length < 2) return;
    // Measure at once (the race chose by one handshake), then every
    // `reprobeIntervalMs`.
    void this.#reprobeOnce();
    if (every !== null) this.#reprobe = setInterval(() => void this.#reprobeOnce(), every);
  }

  async #reprobeOnce(): Promise<void> {
    if (this.#probing || this.#closed) return;
    this.#probing = true;
    try {
      const measured = await probeAll(this.#cfg.edges, this.#cfg.WebTransport, this.#cfg.probeTimeoutMs);
      const link = this.#link;
      if (!link || this.#closed) return;
      const { order, moveTo } = rerank(link.edge.addr, measured, link.rttMs ?? this.stats.smoothedRttMs, this.#raceUnsettled);
      this.#raceUnsettled = false;
      this.#cfg.edges = order;
      const i = order.findIndex((e) => e.addr === link.edge.addr);
      this.#current = i < 0 ? undefined : i;
      if (moveTo && this.#outage === undefined) {
        this.stats.edgeSwitches++;
        this.#redirects = [moveTo];
        this.#move(link, MOVED_TO_FASTER_EDGE);
      }
    } finally {
      this.#probing = false;
    }
  }

  /** This round's targets: goaway redirects first, then the candidates
   * after the current one, then the rest. */
  #attempts(): Target[] {
    const targets: Target[] = [];
    const edges = this.#cfg.edges;
    for (const r of this.#redirects.splice(0)) {
      try {
        checkCandidate(r);
      } catch {
        continue; // no name and no hashes: a browser cannot dial it
      }
      const i = edges.findIndex((e) => e.addr === r.addr);
      targets.push({ edge: r, index: i < 0 ? undefined : i });
    }
    const n = edges.length;
    const start = this.#current === undefined || this.#current >= n ? 0 : this.#current + 1;
    for (let k = 0; k < n; k++) {
      const i = (start + k) % n;
      if (!targets.some((t) => t.edge.addr === edges[i]!.addr)) targets.push({ edge: edges[i]!, index: i });
    }
    return targets;
  }

  /** Try `targets` in order, each starting when the previous failed or
   * `staggerMs` after it started (0: all at once); the first session up
   * wins. */
  #round(targets: Target[], staggerMs = this.#cfg.connectStaggerMs): Promise<[Link, Target]> {
    const { connectTimeoutMs, WebTransport } = this.#cfg;
    return new Promise((resolve, reject) => {
      if (targets.length === 0) return reject(new RtnError('CONNECT_FAILED', 'no candidate edges'));
      let next = 0;
      let running = 0;
      let won = false;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const errors: RtnError[] = [];
      const start = (): void => {
        clearTimeout(timer);
        if (won || next >= targets.length) return;
        const t = targets[next++]!;
        running++;
        Link.open(t.edge, WebTransport, connectTimeoutMs, this.#handlers).then(
          (link) => {
            if (won || this.#closed) return link.close(0, 'another edge answered first');
            won = true;
            clearTimeout(timer);
            resolve([link, t]);
          },
          (e: unknown) => {
            running--;
            errors.push(e instanceof RtnError ? e : new RtnError('CONNECT_FAILED', message(e)));
            if (won) return;
            if (next < targets.length) start();
            else if (running === 0) {
              const code = errors.every((x) => x.code === errors[0]!.code) ? errors[0]!.code : 'CONNECT_FAILED';
              reject(new RtnError(code, errors.map((x) => x.message).join('; ')));
            }
          },
        );
        if (next < targets.length) timer = setTimeout(start, staggerMs);
      };
      start();
    });
  }

  /** Connect again after a loss, until linked, closed, or idle. */
  #reconnect(): void {
    if (this.#connecting || this.#closed || this.#link) return;
    this.#connecting = true;
    void (async () => {
      try {
        for (;;) {
          try {
            const [link, target] = await this.#round(this.#attempts());
            if (this.#closed) return link.close(0, 'client closed');
            this.#failures = 0;
            this.#current = target.index;
            this.#connecting = false;
            return this.#serve(link);
          } catch {
            // next round after the backoff; the list may be stale
            this.#refreshShortlist();
          }
          await sleep(this.#nextDelay());
          if (this.#closed) return;
          if (!this.#hasWork()) {
            this.#outage = undefined;
            return;
          }
        }
      } finally {
        this.#connecting = false;
      }
    })();
  }

  /** Ask the controllers for a fresh shortlist in the background (see
   * `freshShortlist`); the next round dials it if one answers. */
  #refreshShortlist(): void {
    const cfg = this.#cfg;
    const now = Date.now();
    if (!this.#shortlisted || this.#refreshing) return;
    if (this.#lastRefresh !== undefined && now - this.#lastRefresh < SHORTLIST_REFRESH_EVERY_MS) return;
    this.#lastRefresh = now;
    this.#refreshing = freshShortlist(cfg.controllers, cfg.shortlistLen, cfg.requestTimeoutMs, cfg.fetch)
      .then((edges) => {
        if (!edges || this.#closed || JSON.stringify(edges) === JSON.stringify(cfg.edges)) return;
        cfg.edges = edges;
        this.#current = undefined;
      })
      .finally(() => {
        this.#refreshing = undefined;
      });
  }

  #hasWork(): boolean {
    return this.#channels.size > 0 || this.#deferred.length > 0;
  }

  // ----- one link ------------------------------------------------------

  readonly #handlers = {
    frame: (link: Link, f: ServerFrame | undefined): void | Promise<void> => {
      // Frames of a draining link are not read (as in the Rust SDK).
      if (link !== this.#link) return;
      if (!f) {
        this.stats.framesUnknown++;
        return;
      }
      return this.#frame(f);
    },
    datagram: (link: Link, d: Uint8Array): void | Promise<void> => (d[0] === TYPE_NACK ? this.#nack(link, d) : this.#media(link, d)),
    lost: (link: Link, reason: string, code: number | undefined): void => {
      if (link === this.#draining) this.#letOldLinkGo('lost');
      if (link !== this.#link || this.#closed) return;
      if (code === ErrorCode.JOIN_TIMEOUT && this.#channels.size === 0) return this.#linkEnded('idle', reason);
      this.#linkEnded('lost', reason);
    },
  };

  #serve(link: Link): void {
    this.#link = link;
    if (this.#cfg.repair) link.gaps ??= new RepairReceiver(performance.now());
    if (this.#outage !== undefined) this.stats.reconnects++;
    this.#leftLast = false;
    this.#keepalives.clear();
    // Restore every channel first, then run what waited for a link.
    for (const [channelId, ch] of this.#channels) {
      ch.live = false;
      const unreachableEdge = this.#unreachableEdge;
      this.#request((requestId) => ({ join: { requestId, token: ch.token, subscribeAll: ch.subAll, channel: ch.name, memberEdges: ch.roster.memberEdges(), unreachableEdge } }), { kind: 'rejoin', channelId });
      this.#restoring++;
    }
    this.#unreachableEdge = 0;
    if (this.#restoring > 0) this.#restoreDeadline = performance.now() + this.#cfg.requestTimeoutMs;
    else this.#restored();
    for (const cmd of this.#deferred.splice(0)) cmd();
    this.#tick = setInterval(() => this.#onTick(link), this.#cfg.keepaliveIntervalMs);
    this.#watchdog = new Watchdog(this.#cfg.livenessTimeoutMs);
    this.#watch(link);
  }

  #onTick(link: Link): void {
    if (link !== this.#link) return;
    void this.#keepalive(link);
    this.#pollReorder();
    const now = performance.now();
    for (const ch of this.#channels.values()) ch.roster.expireUnconfirmed(now);
    if (this.#restoring > 0 && this.#restoreDeadline !== undefined && now >= this.#restoreDeadline) {
      return this.#linkEnded('lost', 'the edge did not answer the rejoin in time');
    }
  }

  /** Send a keepalive, the question the watchdog waits on: the packet
   * count it is judged against is taken first. */
  async #keepalive(link: Link): Promise<void> {
    const packetsRx = await link.packetsReceived();
    if (link !== this.#link) return;
    const nonce = new DataView(crypto.getRandomValues(new Uint8Array(8)).buffer).getBigUint64(0);
    if (this.#keepalives.size > 32) this.#keepalives.clear();
    const now = performance.now();
    this.#keepalives.set(nonce, now);
    this.#send({ keepalive: { nonce } });
    this.#watchdog?.asked(now, this.#heard(link, packetsRx));
    this.#watch(link);
  }

  /** What `link` heard and sent so far, for the watchdog. */
  #heard(link: Link, packetsRx: number | undefined): Heard {
    return { lastByte: link.lastHeard, lastMedia: link.lastMedia, packetsRx, datagramsTx: link.datagramsTx, rttMs: this.#rttOf(link) };
  }

  /** QUIC's round trip if the browser tells it, else the keepalives'. */
  #rttOf(link: Link): number {
    return link.rttMs ?? this.stats.smoothedRttMs ?? 100;
  }

  /** Arm the watchdog's next look at `link`. */
  #watch(link: Link): void {
    clearTimeout(this.#watchTimer);
    const wd = this.#watchdog;
    if (!wd || link !== this.#link) return;
    const at = wd.nextLook(link.lastHeard, link.lastMedia, this.#rttOf(link));
    this.#watchTimer = setTimeout(() => void this.#look(link), Math.max(0, at - performance.now()));
  }

  /** The watchdog's look: ask at once when media stopped, leave an edge
   * judged dead. */
  async #look(link: Link): Promise<void> {
    const wd = this.#watchdog;
    if (!wd || link !== this.#link) return;
    let packetsRx: number | undefined;
    if (wd.needsCount(performance.now(), link.lastHeard, this.#rttOf(link))) {
      packetsRx = await link.packetsReceived();
      if (link !== this.#link) return;
    }
    const verdict = wd.judge(performance.now(), this.#heard(link, packetsRx));
    if (verdict.is === 'dead') {
      this.#unreachableEdge = [...this.#channels.values()].map((ch) => ch.roster.edge()).find((e) => e !== 0) ?? 0;
      // Make-before-break all the same: a last mile whose round trip grew
      // at once (a handover, a route change) is as silent as a dead edge
      // for a moment, and what the old link brings late is kept.
      return this.#move(link, verdict.why);
    }
    if (verdict.is === 'check') return void this.#keepalive(link);
    this.#watch(link);
  }

  #stopLinkTimers(): void {
    clearInterval(this.#tick);
    clearTimeout(this.#goawayTimer);
    clearTimeout(this.#watchTimer);
    this.#tick = this.#goawayTimer = this.#watchTimer = undefined;
    this.#watchdog = undefined;
  }

  /** The current link ended: `lost` reconnects, `idle` waits for work. */
  #linkEnded(how: 'lost' | 'idle', reason: string): void {
    const link = this.#link;
    if (!link) return;
    link.close(0, 'reconnecting');
    this.#letOldLinkGo('moved again');
    this.#linkDown(false);
    if (how === 'lost') {
      this.#beginOutage(reason);
      this.#reconnect();
    }
  }

  /** Move (goaway, a clearly faster edge, or a silent one): keep the old
   * link (media may still flow on it) until the channels are restored
   * elsewhere. */
  #move(link: Link, why: string): void {
    if (link !== this.#link) return;
    this.#letOldLinkGo('moved again');
    this.#linkDown(true);
    this.#draining = link;
    this.#beginOutage(why);
    this.#reconnect();
  }

  #beginOutage(reason: string): void {
    if (!this.#hasWork()) {
      this.#letOldLinkGo('no channel left');
      return;
    }
    if (this.#outage === undefined) {
      this.#outage = reason;
      this.#emit({ type: 'reconnecting', reason });
    }
  }

  /** The link is gone: keep the channels, send again what was in flight. */
  #linkDown(keepBindings: boolean): void {
    this.#stopLinkTimers();
    this.#link = undefined;
    for (const ch of this.#channels.values()) {
      ch.live = false;
      ch.window.linkLost();
      if (!keepBindings) for (const s of ch.tracks) s.unbind();
    }
    this.#outstanding = [];
    this.#fired = [];
    this.#restoring = 0;
    this.#restoreDeadline = undefined;
    // Requests in flight are made again on the next link, oldest first.
    const base = this.#nextRid + 1;
    const pending = [...this.#pending].sort(([a], [b]) => ((a - base) >>> 0) - ((b - base) >>> 0));
    this.#pending.clear();
    const again: (() => void)[] = [];
    for (const [, p] of pending) {
      if (p.kind === 'join') again.push(() => this.#cmdJoin(p));
      else if (p.kind === 'publish') again.push(() => this.#cmdPublish(p.channelId, p.slot, p.reply));
      else if (p.kind === 'subscribe') again.push(() => this.#cmdSubscribe(p.channelId, p.user, p.reply));
      else if (p.kind === 'leave') p.reply.resolve(); // the membership went with the connection
    }
    this.#deferred = [...again, ...this.#deferred];
  }

  /** Every channel is restored on the current link. */
  #restored(): void {
    this.#restoreDeadline = undefined;
    if (this.#draining && this.#overlapSince === undefined) {
      // Make-before-break: the old link goes when the overlap ends.
      this.#overlapSince = performance.now();
      this.#overlapTimer = setInterval(() => {
        if (this.#overlapOver()) this.#letOldLinkGo('moved to another edge');
      }, OVERLAP_CHECK_MS);
    }
    if (this.#outage !== undefined && this.#link) {
      this.#outage = undefined;
      this.#emit({ type: 'reconnected', edge: this.#link.edge.addr });
    }
  }

  /** Close the link being moved off, if any, and stop sending it media. */
  #letOldLinkGo(why: string): void {
    clearInterval(this.#overlapTimer);
    this.#overlapTimer = this.#overlapSince = undefined;
    const old = this.#draining;
    if (!old) return;
    this.#draining = undefined;
    old.close(0, why);
    for (const ch of this.#channels.values()) for (const slot of ch.tracks) slot.forgetPrevious();
  }

  /** Every stream that was flowing arrives over the new link, and our own
   * media had time to reach the receivers' edges by the new one. */
  #overlapOver(): boolean {
    const link = this.#link;
    if (!link || this.#overlapSince === undefined) return true;
    const now = performance.now();
    const publishing = [...this.#channels.values()].some((c) => c.tracks.size > 0);
    const waiting = [...this.#tracks.values()].some((t) => t.stream.waitsFor(link.id, now, STREAM_ACTIVE_MS));
    return overlapOver(now - this.#overlapSince, publishing, waiting);
  }

  #restoredOne(): void {
    this.#restoring = Math.max(0, this.#restoring - 1);
    if (this.#restoring === 0) this.#restored();
  }

  /** After the app left its last channel: close the link once nothing is
   * in flight (an edge closes a connection without channels anyway). */
  #maybeIdle(): void {
    const link = this.#link;
    if (!link || !this.#leftLast || this.#channels.size > 0 || this.#pending.size > 0 || this.#deferred.length > 0) return;
    this.#linkDown(false);
    void link.shutdown(0, 'no channel left', CLOSE_FLUSH_MS);
  }

  // ----- commands (ClientCore) ------------------------------------------

  #cmdJoin(p: Extract<Pending, { kind: 'join' }>): void {
    if (p.reply.done) return;
    this.#whenLinked(() => this.#request((requestId) => ({ join: { requestId, token: p.token, subscribeAll: p.subscribeAll, channel: p.channel } }), p));
  }

  publish(channelId: bigint, slot: TrackSlot): Promise<void> {
    return this.#call<void>((reply) => this.#cmdPublish(channelId, slot, reply));
  }

  #cmdPublish(channelId: bigint, slot: TrackSlot, reply: Reply<void>): void {
    if (reply.done) return;
    if (!this.#channels.has(channelId)) return reply.reject(closedError());
    this.#whenLinked(() => this.#requestPublish(channelId, slot, { kind: 'publish', channelId, slot, reply }));
  }

  #requestPublish(channelId: bigint, slot: TrackSlot, p: Pending): void {
    this.#request((requestId) => ({ publishTrack: { requestId, channelId, name: slot.name, kind: TrackKind[slot.kind] } }), p);
  }

  unpublish(slot: TrackSlot): void {
    const key = slot.key;
    slot.binding = { state: 'closed' };
    const ch = this.#channels.get(slot.channelId);
    ch?.tracks.delete(slot);
    if (this.#link && ch?.live && key !== undefined) {
      const channelId = slot.channelId;
      this.#fire((requestId) => ({ unpublishTrack: { requestId, channelId, trackKey: key } }));
    }
  }

  subscribe(channelId: bigint, user: string): Promise<void> {
    return this.#call<void>((reply) => this.#cmdSubscribe(channelId, user, reply));
  }

  #cmdSubscribe(channelId: bigint, user: string, reply: Reply<void>): void {
    if (reply.done) return;
    if (!this.#channels.has(channelId)) return reply.reject(closedError());
    this.#whenLinked(() => this.#request((requestId) => ({ subscribe: { requestId, channelId, userId: user } }), { kind: 'subscribe', channelId, user, reply }));
  }

  async unsubscribe(channelId: bigint, user: string): Promise<void> {
    const ch = this.#channels.get(channelId);
    if (!ch) throw closedError();
    if (user === '') {
      ch.subAll = false;
      ch.subUsers.clear();
    } else ch.subUsers.delete(user);
    if (this.#link) this.#fire((requestId) => ({ unsubscribe: { requestId, channelId, userId: user } }));
  }

  leave(channelId: bigint): Promise<void> {
    return this.#call<void>((reply) => {
      const wasLive = this.#removeChannel(channelId, () => ({ state: 'closed' }))?.live ?? false;
      if (this.#channels.size === 0) this.#leftLast = true;
      if (this.#link && wasLive) this.#request((requestId) => ({ leave: { requestId, channelId } }), { kind: 'leave', reply });
      else reply.resolve();
      this.#maybeIdle();
    });
  }

  setToken(channelId: bigint, token: string): void {
    const ch = this.#channels.get(channelId);
    if (ch) ch.token = token;
  }

  unacked(channelId: bigint): number {
    const ch = this.#channels.get(channelId);
    return ch ? this.#cfg.maxUnacked - ch.permits.free : 0;
  }

  async sendMessage(channelId: bigint, payload: Uint8Array, wait: boolean): Promise<number> {
    const ch = this.#channels.get(channelId);
    if (!ch || this.#closed) throw closedError();
    if (wait) await ch.permits.acquire();
    else if (!ch.permits.tryAcquire()) throw new RtnError('BACKPRESSURE', 'too many unacknowledged messages; retry later');
    // One at a time, in call order: numbering and sealing must not
    // interleave.
    const queued = ch.sending.then(() => this.#queueMessage(channelId, ch, payload));
    ch.sending = queued.catch(() => {});
    return queued;
  }

  async #queueMessage(channelId: bigint, ch: ChannelState, payload: Uint8Array): Promise<number> {
    if (this.#channels.get(channelId) !== ch) throw closedError();
    if (ch.publishRefused) {
      ch.permits.release(1);
      throw fromWire(ErrorCode.NO_PUBLISH_RIGHT, 'the token does not grant publishing');
    }
    const at = nowUs();
    let body = payload;
    if (ch.ring) {
      // Sealed once: replays resend these bytes. A refusal arriving while
      // sealing may hand the seq back; then seal again with the new one.
      for (;;) {
        const seq = ch.window.lastSeq() + 1;
        const base = ch.msgBase;
        try {
          body = await ch.ring.sealMessage(seq, at, base, payload);
        } catch (e) {
          ch.permits.release(1);
          throw e;
        }
        if (this.#channels.get(channelId) !== ch) throw closedError();
        if (ch.window.lastSeq() + 1 === seq && ch.msgBase === base) break;
      }
    }
    const sent = ch.window.push(body, at);
    this.stats.messagesSent++;
    if (this.#link && ch.live) {
      // Otherwise it goes out with the replay after the rejoin.
      this.#send({ message: chat(channelId, sent, '') });
      this.#outstanding.push([channelId, sent.seq]);
    }
    return sent.seq;
  }

  /** Forget a channel; its publishers get `binding()`. */
  #removeChannel(id: bigint, binding: () => TrackSlot['binding']): ChannelState | undefined {
    const ch = this.#channels.get(id);
    if (!ch) return undefined;
    this.#channels.delete(id);
    ch.roster.clear();
    ch.permits.close();
    for (const s of ch.tracks) s.binding = binding();
    return ch;
  }

  #loseChannel(id: bigint, error: RtnError): void {
    const ch = this.#removeChannel(id, () => ({ state: 'failed', error }));
    if (ch) this.#emit({ type: 'channel-lost', channel: ch.name, error });
    if (this.#channels.size === 0) this.#leftLast = true;
  }

  // ----- frames from the edge ---------------------------------------------

  #frame(f: ServerFrame): void | Promise<void> {
    if ('joined' in f) this.#joined(f.joined);
    else if ('error' in f) this.#error(f.error);
    else if ('trackPublished' in f) this.#trackPublished(f.trackPublished);
    else if ('subscribed' in f) {
      const s = f.subscribed;
      const p = this.#pending.get(s.requestId);
      if (p?.kind === 'subscribe') {
        this.#pending.delete(s.requestId);
        const ch = this.#channels.get(p.channelId);
        if (ch && p.user === '') ch.subAll = true;
        else ch?.subUsers.add(p.user);
        p.reply.resolve();
      } else if (p?.kind === 'resubscribe') this.#pending.delete(s.requestId);
    } else if ('left' in f) {
      const p = this.#pending.get(f.left.requestId);
      if (p?.kind === 'leave' || p?.kind === 'ignore') {
        this.#pending.delete(f.left.requestId);
        if (p.kind === 'leave') p.reply.resolve();
      }
    } else if ('memberJoined' in f) this.#memberJoined(f.memberJoined);
    else if ('memberLeft' in f) {
      const m = f.memberLeft;
      this.#channels.get(m.channelId)?.roster.memberLeft(m.userId, m.session, m.reason === MemberLeftReason.hidden);
    } else if ('memberCount' in f) this.#channels.get(f.memberCount.channelId)?.roster.setCount(f.memberCount.members, f.memberCount.large);
    else if ('trackAvailable' in f) {
      const t = f.trackAvailable;
      if (t.track) this.#channels.get(t.channelId)?.roster.addTrack(t.userId, t.track);
    } else if ('trackUnavailable' in f) this.#channels.get(f.trackUnavailable.channelId)?.roster.removeTrack(f.trackUnavailable.trackKey);
    else if ('message' in f) return this.#incomingMessage(f.message);
    else if ('messageAck' in f) this.#messageAck(f.messageAck.channelId, f.messageAck.seq);
    else if ('goaway' in f) this.#goaway(f.goaway);
    else if ('keepaliveAck' in f) {
      const sent = this.#keepalives.get(f.keepaliveAck.nonce);
      if (sent !== undefined) {
        this.#keepalives.delete(f.keepaliveAck.nonce);
        recordRtt(this.stats, performance.now() - sent);
      }
    }
    this.#maybeIdle();
  }

  #goaway(g: Extract<ServerFrame, { goaway: unknown }>['goaway']): void {
    this.stats.goaways++;
    const after = Math.min(g.reconnectAfterMs, MAX_GOAWAY_WAIT_MS);
    // Spread the reconnects: wait after + U[0, after].
    const wait = after + after * Math.random();
    this.#redirects = g.redirect.map(redirectCandidate);
    const link = this.#link;
    if (link && this.#goawayTimer === undefined) this.#goawayTimer = setTimeout(() => this.#move(link, 'the edge is going away'), wait);
  }

  #joined(j: Joined): void {
    const p = this.#pending.get(j.requestId);
    if (!p) return;
    if (p.kind === 'rejoin') {
      this.#pending.delete(j.requestId);
      return this.#rejoined(p.channelId, j);
    }
    if (p.kind !== 'join') return; // a confused edge: the request's own answer still finds it
    this.#pending.delete(j.requestId);
    const channelId = j.channelId;
    if (p.reply.done || this.#channels.has(channelId)) {
      // The caller gave up (or joined twice): do not stay joined for it.
      if (!this.#channels.has(channelId)) this.#request((requestId) => ({ leave: { requestId, channelId } }), { kind: 'ignore' });
      p.reply.reject(fromWire(ErrorCode.ALREADY_JOINED, 'channel already joined by this client'));
      return;
    }
    const ring = p.e2ee ? new KeyRing(channelId, j.userId, p.e2ee) : undefined;
    const ch: ChannelState = {
      name: p.channel,
      token: p.token,
      subAll: p.subscribeAll,
      subUsers: new Set(),
      tracks: new Set(),
      window: new ReplayWindow(this.#cfg.replayWindow),
      permits: new Permits(this.#cfg.maxUnacked),
      live: true,
      publishRefused: false,
      roster: new Roster(channelId, p.channel, j.userId, this.#tracks, (e) => this.#emit(e)),
      ring,
      msgBase: randomBase(),
      sending: Promise.resolve(),
      receivers: new Map(),
    };
    this.#channels.set(channelId, ch);
    this.#leftLast = false;
    p.reply.resolve(new Channel(p.channel, channelId, j.userId, this, ring, ch.roster.census));
    ch.roster.adopt(j);
  }

  #rejoined(channelId: bigint, j: Joined): void {
    if (j.channelId !== channelId) {
      this.#loseChannel(channelId, new RtnError('PROTOCOL', `rejoin answered for channel ${j.channelId.toString(16)}, not ${channelId.toString(16)}`));
      return this.#restoredOne();
    }
    const ch = this.#channels.get(channelId);
    if (!ch) {
      // Left while the rejoin was in flight.
      this.#request((requestId) => ({ leave: { requestId, channelId } }), { kind: 'ignore' });
      return this.#restoredOne();
    }
    ch.ring?.setMe(j.userId);
    ch.roster.me = j.userId;
    ch.roster.adopt(j);
    ch.live = true;
    for (const slot of ch.tracks) this.#requestPublish(channelId, slot, { kind: 'republish', channelId, slot });
    if (!ch.subAll) {
      for (const user of ch.subUsers) this.#request((requestId) => ({ subscribe: { requestId, channelId, userId: user } }), { kind: 'resubscribe', channelId, user });
    }
    const replay = ch.window.replay();
    this.stats.messagesReplayed += replay.length;
    for (const s of replay) {
      this.#outstanding.push([channelId, s.seq]);
      this.#send({ message: chat(channelId, s, '') });
    }
    this.#restoredOne();
  }

  #trackPublished(t: Extract<ServerFrame, { trackPublished: unknown }>['trackPublished']): void {
    const p = this.#pending.get(t.requestId);
    if (p?.kind !== 'publish' && p?.kind !== 'republish') return;
    this.#pending.delete(t.requestId);
    const { channelId, slot } = p;
    const reply = p.kind === 'publish' ? p.reply : undefined;
    const ch = this.#channels.get(channelId);
    // A republished track must still be one of the channel's.
    const wanted = !slot.isClosed && !reply?.done && ch !== undefined && (reply !== undefined || ch.tracks.has(slot));
    const link = this.#link;
    if (!wanted || !link) {
      const trackKey = t.trackKey;
      this.#fire((requestId) => ({ unpublishTrack: { requestId, channelId, trackKey } }));
      reply?.reject(closedError());
      return;
    }
    slot.rebind(link, t.trackKey);
    if (reply) {
      ch.tracks.add(slot);
      reply.resolve();
    }
  }

  #error(e: Extract<ServerFrame, { error: unknown }>['error']): void {
    const err = fromWire(e.code, e.message);
    if (e.requestId === 0) {
      // Refusals of messages carry request id 0 and come in order.
      const m = this.#outstanding.shift();
      if (m) this.#messageRefused(m[0], m[1], err);
      else this.#emit({ type: 'error', error: err });
      return;
    }
    const p = this.#pending.get(e.requestId);
    if (!p) {
      if (!this.#fired.includes(e.requestId)) this.#emit({ type: 'error', error: err });
      return;
    }
    this.#pending.delete(e.requestId);
    switch (p.kind) {
      case 'join':
      case 'publish':
      case 'subscribe':
        return p.reply.reject(err);
      case 'rejoin': {
        const transient: number[] = [ErrorCode.GOING_AWAY, ErrorCode.OVERLOADED, ErrorCode.INTERNAL, ErrorCode.JOIN_TIMEOUT];
        // This edge cannot take us now; another may.
        if (transient.includes(e.code)) return this.#linkEnded('lost', `the edge refused the rejoin: ${err.message}`);
        this.#loseChannel(p.channelId, err);
        return this.#restoredOne();
      }
      case 'republish':
        this.#channels.get(p.channelId)?.tracks.delete(p.slot);
        p.slot.binding = { state: 'failed', error: err };
        return this.#emit({ type: 'error', error: err });
      case 'resubscribe':
        if (err.permanent) this.#channels.get(p.channelId)?.subUsers.delete(p.user);
        return this.#emit({ type: 'error', error: err });
      case 'leave':
        return p.reply.resolve(); // not joined any more: left is left
      case 'ignore':
        return;
    }
  }

  // ----- messages -------------------------------------------------------

  #messageAck(channelId: bigint, seq: number): void {
    const pos = this.#outstanding.findIndex(([c, s]) => c === channelId && s === seq);
    if (pos >= 0) this.#outstanding.splice(0, pos + 1);
    const ch = this.#channels.get(channelId);
    if (!ch) return;
    const newly = ch.window.ack(seq);
    if (newly > 0) {
      ch.permits.release(newly);
      this.stats.messagesAcked += newly;
    }
  }

  #messageRefused(channelId: bigint, seq: number, error: RtnError): void {
    const ch = this.#channels.get(channelId);
    if (!ch) return;
    if (error.code === 'NO_PUBLISH_RIGHT') ch.publishRefused = true;
    const before = ch.window.lastSeq();
    if (!ch.window.refuse(seq)) return; // a refused replay changes nothing
    // The next message reuses a seq the edge saw sealed: new stream base.
    if (ch.window.lastSeq() < before) ch.msgBase = randomBase();
    ch.permits.release(1);
    this.stats.messagesRefused++;
    this.#emit({ type: 'message-refused', channel: ch.name, seq, error });
  }

  #memberJoined(m: { channelId: bigint; userId: string; session: bigint; edgeId: number }): void {
    const ch = this.#channels.get(m.channelId);
    if (!ch || !ch.roster.memberJoined(m.userId, m.session, m.edgeId)) return;
    // A new session of another user (first seen, or reconnected): it may
    // have missed messages in flight, so resend the window to it alone.
    if (m.userId === ch.roster.me || !ch.live || ch.window.size === 0) return;
    const replay = ch.window.replay();
    this.stats.messagesReplayed += replay.length;
    for (const s of replay) {
      this.#outstanding.push([m.channelId, s.seq]);
      this.#send({ message: chat(m.channelId, s, m.userId) });
    }
  }

  async #incomingMessage(m: ChatMessage): Promise<void> {
    const ch = this.#channels.get(m.channelId);
    if (!ch) return;
    let payload = m.payload;
    if (ch.ring) {
      try {
        payload = await ch.ring.openMessage(m.fromUser, m.seq, m.sentAtUs, m.payload);
        ch.ring.noteSuccess(m.fromUser);
      } catch (e) {
        // Dropped before the reorder buffer: garbage never takes a seq.
        this.stats.messagesUndecryptable++;
        const err = e instanceof RtnError ? e : new RtnError('E2EE', message(e));
        if (err.e2ee && ch.ring.noteFailure(m.fromUser, err.e2ee)) this.#emit({ type: 'undecryptable', channel: ch.name, user: m.fromUser, error: err });
        return;
      }
      if (this.#channels.get(m.channelId) !== ch) return;
    }
    // A sender replays its window to a member it hears of (`toUser` set):
    // that replay opens the sequence. A hidden member of a large channel is
    // not heard of, so nothing will come to wait for.
    const hidden = ch.roster.census.large && ch.tracks.size === 0;
    const opens = m.toUser !== '' || hidden;
    let buf = ch.receivers.get(m.fromUser);
    if (!buf) ch.receivers.set(m.fromUser, (buf = new ReorderBuffer(this.#cfg.maxHeldPerSender, this.#cfg.reorderTimeoutMs)));
    this.#deliver(ch.name, m.fromUser, buf.offer({ seq: m.seq, payload, sentAtUs: m.sentAtUs }, opens, performance.now()));
  }

  #pollReorder(): void {
    const now = performance.now();
    for (const ch of this.#channels.values()) {
      for (const [from, buf] of ch.receivers) {
        const o = buf.poll(now);
        if (o.deliver.length > 0 || o.skipped > 0) this.#deliver(ch.name, from, o);
      }
    }
  }

  #deliver(channel: string, from: string, o: Outcome): void {
    if (o.duplicate) this.stats.messagesDuplicate++;
    this.stats.messagesSkipped += o.skipped;
    for (const m of o.deliver) {
      this.stats.messagesDelivered++;
      this.#emit({ type: 'message', channel, from, seq: m.seq, payload: m.payload, sentAtUs: m.sentAtUs });
    }
  }

  // ----- media ------------------------------------------------------------

  /** @internal A media datagram was sent: count it, keep it for the edge's
   * NACKs; the audio copy to send after it. */
  sentMedia(trackKey: bigint, sequence: number, datagram: Uint8Array): Uint8Array | undefined {
    this.stats.mediaSentBytes += datagram.length;
    const copy = this.#repairOut?.sent(trackKey, sequence, datagram, performance.now());
    if (copy) {
      this.stats.mediaRedundant++;
      this.stats.mediaRedundantBytes += copy.length;
    }
    return copy;
  }

  /** The edge asks for media this client sent: resend what is held, in
   * time and within the budget, on the link the NACK came on. */
  #nack(link: Link, d: Uint8Array): void {
    const n = decodeNack(d);
    if (!n) {
      this.stats.mediaMalformed++;
      return;
    }
    for (const p of this.#repairOut?.answer(n, performance.now()) ?? []) {
      this.stats.mediaResent++;
      this.stats.mediaResentBytes += p.length;
      link.sendNow(p);
    }
  }

  /** Send the NACKs due on `link`, then wait for the next. */
  #sendNacks(link: Link): void {
    const gaps = link.gaps;
    if (!gaps || !link.alive) return;
    const rtt = this.#rttOf(link);
    const { datagrams, asked } = gaps.nacks(performance.now(), rtt, rtt / 4);
    this.stats.mediaNacked += asked;
    for (const d of datagrams) link.sendNow(d);
    const next = gaps.nextDue();
    if (next !== undefined) link.armNacks(next, () => this.#sendNacks(link));
  }

  async #media(link: Link, d: Uint8Array): Promise<void> {
    const h = decodeMedia(d);
    if (!h) {
      this.stats.mediaMalformed++;
      return;
    }
    const gaps = link.gaps;
    if (gaps) {
      const now = performance.now();
      const a = gaps.onMedia(h.channelId, h.trackKey, h.sequence, now);
      if (a === 'duplicate' || a === 'old') {
        this.stats.mediaDuplicate++;
        return;
      }
      if (a === 'recovered') this.stats.mediaRecovered++;
      else if (a === 'gap') link.armNacks(now + REORDER_GRACE_MS, () => this.#sendNacks(link));
    }
    const track = this.#knownTrack(h);
    if (!track) {
      // Announced on the control stream, which may be read after the
      // track's first datagrams: held until it is (docs/protocol.md §5).
      this.stats.mediaUnknownTrack += this.#early.hold(h.trackKey, { link, d, h }, performance.now());
      this.#earlyTimer ??= setTimeout(() => this.#releaseEarly(), EARLY_LOOK_MS);
      return;
    }
    if (this.#early.size > 0) this.#releaseEarly();
    await this.#deliverMedia(link, d, h, track);
  }

  #knownTrack(h: MediaHeader): RemoteTrack | undefined {
    const track = this.#tracks.get(h.trackKey);
    return track && track.channelId === h.channelId ? track : undefined;
  }

  /** Deliver the held packets whose tracks are known now, in the order they
   * came; look again shortly while some are still held. */
  #releaseEarly(): void {
    if (this.#earlyTimer !== undefined) clearTimeout(this.#earlyTimer);
    this.#earlyTimer = undefined;
    const { released, dropped } = this.#early.release((key) => this.#tracks.has(key), performance.now());
    this.stats.mediaUnknownTrack += dropped;
    for (const { link, d, h } of released) {
      const track = this.#knownTrack(h);
      if (track) void this.#deliverMedia(link, d, h, track);
    }
    if (this.#early.size > 0) this.#earlyTimer = setTimeout(() => this.#releaseEarly(), EARLY_LOOK_MS);
  }

  async #deliverMedia(link: Link, d: Uint8Array, h: MediaHeader, track: RemoteTrack): Promise<void> {
    const timestampUs = Number(h.timestampUs);
    if (!track.stream.arrived(h.sequence, timestampUs, link.id, performance.now())) {
      // Its copy came by the other link (or key) of a move.
      this.stats.mediaDuplicate++;
      return;
    }
    const bound = this.#cfg.maxMediaLatenessMs;
    if (bound !== null && !track.lateness.onTime(timestampUs, nowUs(), bound * 1000)) {
      this.stats.mediaLate++;
      return;
    }
    this.stats.mediaLost += track.loss.add(h.sequence);
    let payload = d.subarray(MEDIA_HEADER_LEN);
    const ring = this.#channels.get(h.channelId)?.ring;
    if (ring) {
      try {
        payload = await ring.openMedia(d, track.user, track.name);
        ring.noteSuccess(track.user);
      } catch (e) {
        this.stats.mediaUndecryptable++;
        const err = e instanceof RtnError ? e : new RtnError('E2EE', message(e));
        if (err.e2ee && ring.noteFailure(track.user, err.e2ee)) this.#emit({ type: 'undecryptable', channel: track.channel, user: track.user, error: err });
        return;
      }
    }
    this.stats.mediaReceived++;
    this.#emit({ type: 'media', channel: track.channel, user: track.user, track: track.name, sequence: h.sequence, timestampUs, payload, receivedAt: performance.now() });
  }
}

function chat(channelId: bigint, s: Sent, toUser: string): ChatMessage {
  return { channelId, fromUser: '', seq: s.seq, payload: s.payload, sentAtUs: s.sentAtUs, toUser };
}
