// Which edge the client uses, as sdk/src/nearest.rs: ask a region
// controller for a shortlist (`GET /v1/edges/nearest?limit=N`, JSON of
// protocol/src/api.rs), race a session to each candidate and keep the first
// up, probe each right after and keep them in measured order for failover;
// re-probe periodically and move only for a clear gain (at least 10 ms
// faster AND at most 2/3 of the current RTT), so the client never flaps
// between two close edges. The first probes after the race settle it on a
// smaller gain (3 ms and 4/5).

import { RtnError, invalid } from './errors';
import { checkCandidate, Link, type EdgeCandidate, type WebTransportCtor } from './connection';

/** Keepalive round trips per probe; the smallest counts. */
export const PROBES_PER_CANDIDATE = 3;
export const SWITCH_MIN_GAIN_MS = 10;
export const SWITCH_MAX_RATIO = 2 / 3;
/** The first measurement after the handshake race settles it (the race
 * chose by one handshake each): a gain of 3 ms and to 4/5 is enough. */
export const SETTLE_MIN_GAIN_MS = 3;
const MAX_ANSWER_BYTES = 64 * 1024;

/** Candidates with their measured RTT in ms (undefined: no answer). */
export type Measured = [EdgeCandidate, number | undefined][];

/** Whether to leave the current edge (RTT `current`, undefined if it did
 * not answer) for one measured at `best`. */
export function shouldSwitch(current: number | undefined, best: number): boolean {
  if (current === undefined) return true;
  // Integers of the ratio, as the Rust side compares: best*3 <= cur*2.
  return best + SWITCH_MIN_GAIN_MS <= current && best * 3 <= current * 2;
}

/** `shouldSwitch` for the first measurement after the handshake race. */
export function shouldSettle(current: number | undefined, best: number): boolean {
  if (current === undefined) return true;
  return best + SETTLE_MIN_GAIN_MS <= current && best * 5 <= current * 4;
}

/** Fastest first; silent candidates last in their original order. */
export function rank(measured: Measured): Measured {
  return measured
    .map((m, i) => [m, i] as const)
    .sort(([a, i], [b, j]) => (a[1] ?? Infinity) - (b[1] ?? Infinity) || i - j)
    .map(([m]) => m);
}

/** Re-rank on fresh measurements while connected to `currentAddr`: returns
 * the new candidate order and the edge to move to, if one is clearly
 * faster. An edge not among the candidates (a goaway redirect) is kept. A
 * probe of the current edge that went unanswered (a handshake lost on a
 * lossy last mile) says nothing of the link in use: the current edge then
 * counts at `liveRttMs`, the link's own estimate (as the Rust SDK). */
export function rerank(currentAddr: string, measured: Measured, liveRttMs: number | undefined, settling = false): { order: EdgeCandidate[]; moveTo: EdgeCandidate | undefined } {
  measured = measured.map(([e, rtt]): [EdgeCandidate, number | undefined] => [e, rtt === undefined && e.addr === currentAddr ? liveRttMs : rtt]);
  const cur = measured.find(([e]) => e.addr === currentAddr);
  const ranked = rank(measured);
  const order = ranked.map(([e]) => e);
  const [best, bestRtt] = ranked[0] ?? [];
  const move = settling ? shouldSettle : shouldSwitch;
  if (!best || bestRtt === undefined || !cur || best.addr === currentAddr || !move(cur[1], bestRtt)) {
    return { order, moveTo: undefined };
  }
  return { order, moveTo: best };
}

/** How long a shortlist stands in for controllers that do not answer (as
 * sdk/src/nearest.rs's LAST_SHORTLIST_MAX_AGE): an hour. */
export const LAST_SHORTLIST_MAX_AGE_MS = 3_600_000;

/** The last shortlist each list of controllers gave on this page, and when. */
const lastShortlists = new Map<string, { at: number; edges: EdgeCandidate[] }>();

/** `fetchShortlistFrom`, remembering each answer; if no controller answers,
 * the last shortlist the same controllers gave on this page (at most
 * `LAST_SHORTLIST_MAX_AGE_MS` old) stands in: a control-plane outage must
 * not keep new clients off edges that are up. The candidates are measured
 * on connect as ever. */
export async function shortlistOrLast(controllers: string[], limit: number, timeoutMs: number, fetchImpl: typeof fetch = globalThis.fetch, now: () => number = Date.now): Promise<EdgeCandidate[]> {
  try {
    const edges = await fetchShortlistFrom(controllers, limit, timeoutMs, fetchImpl);
    rememberShortlist(controllers, edges, now);
    return edges;
  } catch (e) {
    const last = lastShortlists.get(JSON.stringify(controllers));
    const unanswered = e instanceof RtnError && e.code !== 'INVALID';
    if (unanswered && last && now() - last.at < LAST_SHORTLIST_MAX_AGE_MS) return last.edges;
    throw e;
  }
}

/** After a reconnect round in which every candidate failed, the
 * controllers are asked again (as sdk/src/nearest.rs's `fresh_shortlist`):
 * the list may be stale (edges replaced, or, with development
 * certificates, an edge restarted with a new certificate whose hash the old
 * list does not carry, which no retry of it can get past). Remembered like
 * any answer; undefined when no controller answers (the old list stays). */
export async function freshShortlist(controllers: string[], limit: number, timeoutMs: number, fetchImpl: typeof fetch = globalThis.fetch, now: () => number = Date.now): Promise<EdgeCandidate[] | undefined> {
  try {
    const edges = await fetchShortlistFrom(controllers, limit, timeoutMs, fetchImpl);
    rememberShortlist(controllers, edges, now);
    return edges;
  } catch {
    return undefined;
  }
}

function rememberShortlist(controllers: string[], edges: EdgeCandidate[], now: () => number): void {
  lastShortlists.set(JSON.stringify(controllers), { at: now(), edges });
}

/** Ask `controllers` in turn (`fetchShortlist`) until one answers with
 * edges: one that is down, slow (each has `timeoutMs`), refuses or knows no
 * edge is passed over for the next. A URL that does not parse is the app's
 * mistake and fails at once; if none answers, the error names each
 * failure (the code of the last). */
export async function fetchShortlistFrom(controllers: string[], limit: number, timeoutMs: number, fetchImpl: typeof fetch = globalThis.fetch): Promise<EdgeCandidate[]> {
  const failures: RtnError[] = [];
  for (const c of controllers) {
    try {
      return await fetchShortlist(c, limit, timeoutMs, fetchImpl);
    } catch (e) {
      if (!(e instanceof RtnError) || e.code === 'INVALID') throw e;
      failures.push(e);
    }
  }
  const last = failures.at(-1);
  if (!last) throw invalid('no controller to ask');
  if (failures.length === 1) throw last;
  throw new RtnError(last.code, `no controller answered (${failures.map((f, i) => `${controllers[i]}: ${f.message}`).join('; ')})`);
}

/** Ask a controller (`http://` or `https://host:port`) for up to `limit`
 * edges near this client, best first by its estimate. */
export async function fetchShortlist(controller: string, limit: number, timeoutMs: number, fetchImpl: typeof fetch = globalThis.fetch): Promise<EdgeCandidate[]> {
  let url: URL;
  try {
    url = new URL(controller);
  } catch {
    throw invalid(`controller URL ${JSON.stringify(controller)} does not parse`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw invalid(`controller URL ${controller}: only http:// and https:// are supported`);
  url.pathname = `${url.pathname.replace(/\/+$/, '')}/v1/edges/nearest`;
  url.search = `?limit=${limit}`;
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  let status: number;
  let body: string;
  try {
    let resp: Response;
    try {
      resp = await fetchImpl(url.toString(), { signal: abort.signal, headers: { accept: 'application/json' } });
    } catch (e) {
      const why = abort.signal.aborted ? `no answer within ${timeoutMs} ms` : `${e instanceof Error ? e.message : String(e)} (network, or this page's origin is not allowed by the controller's CORS policy)`;
      throw new RtnError('CONTROLLER_UNREACHABLE', `nearest-edge lookup at ${url.origin}: ${why}`, { cause: e });
    }
    status = resp.status;
    body = await resp.text();
  } finally {
    clearTimeout(timer);
  }
  const fail = (m: string): RtnError => new RtnError('CONTROLLER', `nearest-edge lookup: ${m}`);
  if (body.length > MAX_ANSWER_BYTES) throw fail(`answer over ${MAX_ANSWER_BYTES} bytes`);
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch {
    throw fail(`${status}: not JSON: ${body.slice(0, 200)}`);
  }
  if (status < 200 || status > 299) {
    const err = (json as { error?: { code?: string; message?: string } }).error;
    throw fail(`${status}: ${err ? `${err.code}: ${err.message}` : body.slice(0, 200)}`);
  }
  const edges = (json as { edges?: unknown }).edges;
  if (!Array.isArray(edges)) throw fail('malformed answer (no edges list)');
  const out: EdgeCandidate[] = [];
  for (const e of edges as EdgeCandidate[]) {
    const c: EdgeCandidate = { addr: e?.addr, server_name: e?.server_name ?? '', cert_sha256: e?.cert_sha256 ?? [], id: e?.id };
    try {
      checkCandidate(c);
      out.push(c);
    } catch {
      // An edge this client cannot dial: skip it.
    }
  }
  if (out.length === 0) throw fail('the controller knows no edge that serves clients');
  return out;
}

const random64 = (): bigint => new DataView(crypto.getRandomValues(new Uint8Array(8)).buffer).getBigUint64(0);

/** Measure one edge: a WebTransport session on the client path, then
 * `probes` keepalive round trips on a control stream, one at a time; the
 * smallest wins. Undefined if it does not answer within `limitMs`. The
 * handshake (about two round trips, with HTTP/3's) is limited by the same
 * deadline. */
export async function probe(edge: EdgeCandidate, ctor: WebTransportCtor | undefined, probes: number, limitMs: number): Promise<number | undefined> {
  const deadline = performance.now() + limitMs;
  let waiting: { nonce: bigint; resolve: () => void } | undefined;
  let link: Link;
  try {
    link = await Link.open(edge, ctor, limitMs, {
      frame: (_, f) => {
        if (f && 'keepaliveAck' in f && waiting && f.keepaliveAck.nonce === waiting.nonce) waiting.resolve();
      },
      datagram: () => {},
      lost: () => {},
    });
  } catch {
    return undefined;
  }
  let best: number | undefined;
  try {
    for (let i = 0; i < Math.max(1, probes); i++) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      const nonce = random64();
      const sent = performance.now();
      const acked = new Promise<boolean>((resolve) => {
        waiting = { nonce, resolve: () => resolve(true) };
        setTimeout(() => resolve(false), left);
      });
      link.send({ keepalive: { nonce } });
      if (!(await acked)) break;
      const rtt = performance.now() - sent;
      best = best === undefined ? rtt : Math.min(best, rtt);
    }
  } finally {
    link.close(0, 'probe done');
  }
  return best;
}

/** Measure every candidate at once; results in the candidates' order. */
export async function probeAll(edges: EdgeCandidate[], ctor: WebTransportCtor | undefined, limitMs: number): Promise<Measured> {
  const rtts = await Promise.all(edges.map((e) => probe(e, ctor, PROBES_PER_CANDIDATE, limitMs)));
  return edges.map((e, i) => [e, rtts[i]]);
}
