// One WebTransport session to an edge (a "link").
//
// The WebTransport binding of the client protocol: the session URL is
// `https://<host>:<port>/rtn-client/1` (the path names the protocol
// version; any other path gets HTTP 404). After the session is ready the
// client opens ONE bidirectional stream, the control stream, and writes its
// frames on it exactly as a native client does on its QUIC stream
// (docs/protocol.md §3-4); media rides WebTransport datagrams, one §5 media
// datagram each. The edge closes the session with `closeCode` = an
// ErrorCode number (§10) and a human reason; 0 is a normal close.
//
// Which URL: an edge with `cert_sha256` (short-lived self-signed ECDSA
// certificates in development and the lab) is dialled at its literal
// `addr` with those digests as `serverCertificateHashes`; otherwise at
// `server_name` with the port of `addr`, verified by the browser's WebPKI.

import { ErrorCode, fromWire, invalid, RtnError } from './errors';
import { FrameDecoder, FrameError, encodeFrame } from './framing';
import { DecodeError, decodeServerFrame, encodeClientFrame, type ClientFrame, type ServerFrame } from './proto';
import { hexToBytes } from './e2ee';
import type { RepairReceiver } from './repair';

export const URL_PATH = '/rtn-client/1';

/** An edge the client may connect to: the shape of an edge of the
 * controller's nearest-edge answer (extra fields are ignored). */
export interface EdgeCandidate {
  /** `host:port` of the edge's client endpoint (`[v6]:port` for IPv6). */
  addr: string;
  /** The TLS name of its certificate (WebPKI). */
  server_name: string;
  /** Lowercase hex SHA-256 digests of its self-signed certificates; empty
   * or absent for an edge with a WebPKI certificate. */
  cert_sha256?: string[];
  id?: number;
}

/** The WebTransport constructor (the browser's, or a stand-in for tests
 * and polyfills). */
export type WebTransportCtor = new (url: string, options?: WebTransportOptions) => WebTransport;

/** The port of `host:port` / `[v6]:port`, or undefined. */
function splitAddr(addr: string): { host: string; port: number } | undefined {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):(\d{1,5})$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  return m && port > 0 && port < 65536 ? { host: m[1]!, port } : undefined;
}

/** Check a candidate; the error says what is wrong. */
export function checkCandidate(e: EdgeCandidate): void {
  if (!e || typeof e.addr !== 'string' || !splitAddr(e.addr)) throw invalid(`edge addr ${JSON.stringify(e?.addr)} is not host:port`);
  const hashes = e.cert_sha256 ?? [];
  if (!Array.isArray(hashes) || hashes.some((h) => typeof h !== 'string' || !/^[0-9a-fA-F]{64}$/.test(h))) {
    throw invalid(`edge ${e.addr}: cert_sha256 must be 64-hex-digit SHA-256 digests`);
  }
  if (hashes.length === 0 && !e.server_name) throw invalid(`edge ${e.addr}: no server_name and no cert_sha256`);
}

/** The session URL and options for an edge. */
export function edgeTarget(e: EdgeCandidate): { url: string; options: WebTransportOptions } {
  const a = splitAddr(e.addr);
  if (!a) throw invalid(`edge addr ${JSON.stringify(e.addr)} is not host:port`);
  const hashes = e.cert_sha256 ?? [];
  if (hashes.length > 0) {
    return {
      url: `https://${e.addr}${URL_PATH}`,
      options: { serverCertificateHashes: hashes.map((h) => ({ algorithm: 'sha-256', value: hexToBytes(h) as Uint8Array<ArrayBuffer> })) },
    };
  }
  return { url: `https://${e.server_name}:${a.port}${URL_PATH}`, options: {} };
}

export interface LinkHandlers {
  /** A frame from the edge (`undefined`: a kind this SDK does not know).
   * A returned promise is waited for before the next frame is read. */
  frame(link: Link, f: ServerFrame | undefined): void | Promise<void>;
  /** A datagram (waited for like frames). */
  datagram(link: Link, d: Uint8Array): void | Promise<void>;
  /** The link is unusable: `code` is the edge's close code if it closed the
   * session with one. Called once. */
  lost(link: Link, reason: string, code: number | undefined): void;
}

const now = (): number => performance.now();

function timeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RtnError('TIMEOUT', `${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** How long a packet count from the browser may take: past it the
 * watchdog judges without one (by the liveness timeout). */
const STATS_WAIT_MS = 50;

const text = (e: unknown): string => (e instanceof Error ? e.message : String(e));

/** Links opened so far (each link's `id`). */
let linksOpened = 0;

export class Link {
  /** This link's number: links opened later have higher ones. */
  readonly id = ++linksOpened;
  /** When anything (frame bytes or a datagram) last arrived. */
  lastHeard = now();
  private writes: Promise<unknown> = Promise.resolve();
  private dead = false;
  private readonly dgWriter: WritableStreamDefaultWriter<Uint8Array>;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  /** Loss repair of the media received on this link (undefined: off);
   * set by the client. */
  gaps: RepairReceiver | undefined;
  private nackTimer: ReturnType<typeof setTimeout> | undefined;
  private nackAt = Infinity;
  /** QUIC's smoothed round trip (ms), from `WebTransport.getStats()` where
   * the browser has it, refreshed with every packet count (each
   * keepalive); undefined otherwise. */
  rttMs: number | undefined;
  /** When the last datagram from the edge arrived (undefined: none yet). */
  lastMedia: number | undefined;
  /** Datagrams sent on this session so far. */
  datagramsTx = 0;
  /** The browser has no usable `getStats` (Firefox rejects it). */
  private noStats = false;

  private constructor(
    readonly edge: EdgeCandidate,
    private readonly wt: WebTransport,
    stream: WebTransportBidirectionalStream,
    private readonly handlers: LinkHandlers,
  ) {
    this.writer = stream.writable.getWriter();
    this.dgWriter = wt.datagrams.writable.getWriter();
    void this.readFrames(stream.readable.getReader());
    void this.readDatagrams(wt.datagrams.readable.getReader());
    wt.closed.then(
      (info) => this.lose(info.closeCode ? `edge closed the session: ${fromWire(info.closeCode, info.reason ?? '').message}` : `edge closed the session (${info.reason || 'normal close'})`, info.closeCode || undefined),
      (e: unknown) => this.lose(`session failed: ${text(e)}`, undefined),
    );
  }

  /** Open a session to `edge` and its control stream, within `timeoutMs`. */
  static async open(edge: EdgeCandidate, ctor: WebTransportCtor | undefined, timeoutMs: number, handlers: LinkHandlers): Promise<Link> {
    if (!ctor) throw new RtnError('UNSUPPORTED', 'this browser has no WebTransport');
    const { url, options } = edgeTarget(edge);
    let wt: WebTransport;
    try {
      wt = new ctor(url, options);
    } catch (e) {
      // Thrown at once: a bad URL, or hashes the browser will not take.
      const hashes = (options.serverCertificateHashes ?? []).length > 0;
      throw new RtnError(hashes ? 'CERTIFICATE' : 'CONNECT_FAILED', `${url}: ${text(e)}`, { cause: e });
    }
    wt.closed.catch(() => {}); // observed by the link; never unhandled
    try {
      const stream = await timeout(
        wt.ready.then(() => wt.createBidirectionalStream()),
        timeoutMs,
        url,
      );
      return new Link(edge, wt, stream, handlers);
    } catch (e) {
      try {
        wt.close({ closeCode: 0, reason: 'connect attempt abandoned' });
      } catch {
        // already closed
      }
      if (e instanceof RtnError) throw e;
      // Browsers report an untrusted certificate like an unreachable edge.
      throw new RtnError('CONNECT_FAILED', `${url}: ${text(e)}`, { cause: e });
    }
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** Largest datagram the session takes now (the path may shrink it). */
  get maxDatagramSize(): number {
    return this.wt.datagrams.maxDatagramSize ?? 1_200;
  }

  /** Queue one frame on the control stream. */
  send(f: ClientFrame): void {
    if (this.dead) return;
    const bytes = encodeFrame(encodeClientFrame(f));
    this.writes = this.writes
      .then(() => this.writer.write(bytes))
      .catch((e: unknown) => this.lose(`writing the control stream: ${text(e)}`, undefined));
  }

  /** Send one datagram, waiting while the browser's queue is full. */
  async sendDatagram(d: Uint8Array): Promise<void> {
    if (this.dead) throw new RtnError('NOT_CONNECTED', 'not connected to an edge right now');
    if (d.length > this.maxDatagramSize) throw invalid(`a ${d.length}-byte media datagram does not fit this path (max ${this.maxDatagramSize})`);
    await this.dgWriter.ready;
    // Resolves when sent or dropped; media is loss-tolerant, so do not wait.
    this.dgWriter.write(d).catch(() => {});
    this.datagramsTx++;
  }

  /** Whether the link has ended (closed or lost). */
  get isDead(): boolean {
    return this.dead;
  }

  /** Send one datagram now if it fits (NACKs and retransmissions: no
   * waiting, dropped when the link is gone). */
  sendNow(d: Uint8Array): void {
    if (this.dead || d.length > this.maxDatagramSize) return;
    this.dgWriter.write(d).catch(() => {});
    this.datagramsTx++;
  }

  /** Call `fn` at `at` (`performance.now()` ms), or earlier if already
   * armed earlier; never after the link ends. */
  armNacks(at: number, fn: () => void): void {
    if (this.dead || at >= this.nackAt) return;
    clearTimeout(this.nackTimer);
    this.nackAt = at;
    this.nackTimer = setTimeout(() => {
      this.nackAt = Infinity;
      fn();
    }, Math.max(0, at - now()));
  }

  /** QUIC packets received on the session so far, from the browser's
   * statistics (WebTransport's `getStats()`: `packetsReceived`, and
   * `smoothedRtt` in ms, which refreshes `rttMs`); undefined where the
   * browser does not say (Chromium 156 has no `getStats`, Firefox's
   * rejects), or takes over STATS_WAIT_MS to. */
  async packetsReceived(): Promise<number | undefined> {
    if (this.noStats) return undefined;
    const wt = this.wt as { getStats?: () => Promise<{ smoothedRtt?: unknown; packetsReceived?: unknown }> };
    try {
      const s = await timeout(wt.getStats?.() ?? Promise.reject(new Error('no getStats')), STATS_WAIT_MS, 'getStats');
      if (typeof s?.smoothedRtt === 'number' && s.smoothedRtt > 0) this.rttMs = s.smoothedRtt;
      if (typeof s?.packetsReceived === 'number') return s.packetsReceived;
      if (typeof s?.smoothedRtt !== 'number') this.noStats = true;
    } catch (e) {
      // Not implemented, or rejected: for good. Slow: this time only.
      if (!(e instanceof RtnError)) this.noStats = true;
    }
    return undefined;
  }

  /** Close the session (code 0 = normal). */
  close(code: number, reason: string): void {
    this.dead = true;
    clearTimeout(this.nackTimer);
    try {
      this.wt.close({ closeCode: code, reason });
    } catch {
      // already closed
    }
  }

  /** Let queued frames go out (at most `waitMs`), then close. */
  async shutdown(code: number, reason: string, waitMs: number): Promise<void> {
    await timeout(this.writes, waitMs, 'flush').catch(() => {});
    this.close(code, reason);
  }

  private lose(reason: string, code: number | undefined): void {
    if (this.dead) return;
    this.dead = true;
    clearTimeout(this.nackTimer);
    this.handlers.lost(this, reason, code);
  }

  /** A read ended: report it with the edge's close code if the session was
   * closed with one (the stream usually fails just before `closed`). */
  private async loseAfterClose(reason: string): Promise<void> {
    const info = await timeout(this.wt.closed, 100, 'close').catch(() => undefined);
    if (info?.closeCode) this.lose(`edge closed the session: ${fromWire(info.closeCode, info.reason ?? '').message}`, info.closeCode);
    else this.lose(reason, undefined);
  }

  private async readFrames(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    const frames = new FrameDecoder();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) {
          frames.end();
          return this.loseAfterClose('the edge ended the control stream');
        }
        if (this.dead) return;
        this.lastHeard = now();
        for (const body of frames.push(value)) {
          let f: ServerFrame | undefined;
          try {
            f = decodeServerFrame(body);
          } catch (e) {
            if (e instanceof DecodeError) throw new FrameError(ErrorCode.MALFORMED_FRAME, e.message);
            throw e;
          }
          await this.handlers.frame(this, f);
        }
      }
    } catch (e) {
      if (e instanceof FrameError) {
        // Frame boundaries are lost: close with the error's code (§3).
        this.close(e.code, e.message); // marks the link dead: report directly
        return this.handlers.lost(this, `bad frame from the edge: ${e.message}`, undefined);
      }
      return this.loseAfterClose(`reading the control stream: ${text(e)}`);
    }
  }

  private async readDatagrams(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.dead) return;
        this.lastHeard = this.lastMedia = now();
        await this.handlers.datagram(this, value);
      }
    } catch {
      // The session is gone; the control stream reports it.
    }
  }
}
