// An in-process stand-in for WebTransport and for edges speaking the
// client protocol over it, so the client's state machine can be tested
// under node. `FakeNet.WebTransport` is passed as `ClientOptions.WebTransport`.
import { FrameDecoder, encodeFrame } from '../src/framing';
import { Reader, type ChatMessage, type ClientFrame, type Member, type ServerFrame, decodeChat } from '../src/proto';
import { encodeServerFrame } from './server-frames';

const DEFAULTS: Record<string, unknown> = { requestId: 0, token: '', subscribeAll: false, channel: '', channelId: 0n, name: '', kind: 0, trackKey: 0n, userId: '', nonce: 0n, unreachableEdge: 0 };

/** Decode a ClientFrame (what an edge does). */
export function decodeClientFrame(body: Uint8Array): ClientFrame {
  const r = new Reader(body);
  let out: ClientFrame | undefined;
  r.fields((f) => {
    const s = r.sub();
    const o: Record<string, unknown> = {};
    const names: Record<number, string[]> = {
      1: ['requestId', 'token', 'subscribeAll', 'channel', 'memberEdges', 'unreachableEdge'],
      2: ['requestId', 'channelId'],
      3: ['requestId', 'channelId', 'name', 'kind'],
      4: ['requestId', 'channelId', 'trackKey'],
      5: ['requestId', 'channelId', 'userId'],
      6: ['requestId', 'channelId', 'userId'],
      8: ['nonce'],
    };
    if (f === 7) {
      out = { message: decodeChat(s) };
      return true;
    }
    for (const n of names[f]!) o[n] = n === 'memberEdges' ? [] : DEFAULTS[n];
    s.fields((g, wt) => {
      const n = names[f]![g - 1];
      if (!n) return false;
      if (wt === 1) o[n] = s.fixed64();
      else if (wt === 2) o[n] = s.string();
      else if (n === 'nonce') o[n] = s.varint64();
      else if (n === 'subscribeAll') o[n] = s.varint() === 1;
      else if (n === 'memberEdges') (o[n] as number[]).push(s.varint());
      else o[n] = s.varint();
      return true;
    });
    const kind = ['', 'join', 'leave', 'publishTrack', 'unpublishTrack', 'subscribe', 'unsubscribe', '', 'keepalive'][f]!;
    out = { [kind]: o } as unknown as ClientFrame;
    return true;
  });
  return out!;
}

export const wait = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class Session {
  frames: ClientFrame[] = [];
  datagrams: Uint8Array[] = [];
  closed = false;
  private ctrl: ReadableStreamDefaultController<Uint8Array> | undefined;
  private dgCtrl!: ReadableStreamDefaultController<Uint8Array>;
  private resolveClosed!: (i: WebTransportCloseInfo) => void;
  readonly closedP = new Promise<WebTransportCloseInfo>((r) => (this.resolveClosed = r));
  readonly dgReadable = new ReadableStream<Uint8Array>({ start: (c) => void (this.dgCtrl = c) });
  closeInfo: WebTransportCloseInfo | undefined;
  /** QUIC packets the client has received (`getStats().packetsReceived`):
   * one per frame chunk or datagram sent, one per ACK of what it sent. */
  packetsRx = 0;

  constructor(readonly edge: FakeEdge, readonly url: string, readonly options: WebTransportOptions | undefined) {}

  stream(): WebTransportBidirectionalStream {
    const frames = new FrameDecoder();
    const readable = new ReadableStream<Uint8Array>({ start: (c) => void (this.ctrl = c) });
    const writable = new WritableStream<Uint8Array>({
      write: (chunk) => {
        if (this.closed) throw new Error('session closed');
        if (this.edge.dead) return;
        this.packetsRx++; // the ACK
        for (const body of frames.push(chunk)) {
          const f = decodeClientFrame(body);
          this.frames.push(f);
          void this.edge.handle(this, f);
        }
      },
    });
    return { readable, writable } as unknown as WebTransportBidirectionalStream;
  }

  send(f: ServerFrame): void {
    this.sendRaw(encodeFrame(encodeServerFrame(f)));
  }

  sendRaw(b: Uint8Array): void {
    if (this.closed || this.edge.dead) return;
    this.packetsRx++;
    this.ctrl?.enqueue(b);
  }

  sendDatagram(d: Uint8Array): void {
    if (this.closed || this.edge.dead) return;
    this.packetsRx++;
    this.dgCtrl.enqueue(d);
  }

  /** What the client received from the edge; `datagram`: one it sent. */
  received(datagram: Uint8Array): void {
    if (this.closed || this.edge.dead) return;
    this.packetsRx++; // the ACK
    this.datagrams.push(datagram);
  }

  /** Close from either side. */
  close(info: WebTransportCloseInfo): void {
    if (this.closed) return;
    this.closed = true;
    this.closeInfo = info;
    this.resolveClosed(info);
    try {
      this.ctrl?.error(new Error('session closed'));
      this.dgCtrl.close();
    } catch {
      // already
    }
  }

  joins(): Extract<ClientFrame, { join: unknown }>['join'][] {
    return this.frames.flatMap((f) => ('join' in f ? [f.join] : []));
  }

  messages(): ChatMessage[] {
    return this.frames.flatMap((f) => ('message' in f ? [f.message] : []));
  }
}

export class FakeEdge {
  sessions: Session[] = [];
  /** Artificial delay of the handshake and of each answer. */
  delayMs = 0;
  /** Answer nothing at all (a hung edge that keeps its sessions; its QUIC
   * stack still acknowledges what it gets). */
  silent = false;
  /** Gone without a word (a power cut): nothing more arrives from it, not
   * even an ACK, and what is sent to it vanishes. */
  dead = false;
  /** Refuse every session (`ready` rejects). */
  down = false;
  /** The SHA-256 (hex) of the self-signed certificate it shows: a dial
   * pinning other hashes fails its handshake, as in a browser. */
  certHash: string | undefined;
  /** Tokens refused at join with this code. */
  refuseTokens = new Map<string, number>();
  /** Message seqs refused with MALFORMED_FRAME. */
  refuseSeqs = new Set<number>();
  members: Member[] = [];
  /** Joined.member_count and Joined.large. */
  memberCount = 0;
  large = false;
  private counter = 0;
  channelId = 0x963c416800b67c5bn;

  constructor(readonly id: number, readonly addr: string) {}

  get last(): Session {
    return this.sessions[this.sessions.length - 1]!;
  }

  async handle(s: Session, f: ClientFrame): Promise<void> {
    if (this.silent) return;
    if (this.delayMs) await wait(this.delayMs);
    if ('keepalive' in f) s.send({ keepaliveAck: { nonce: f.keepalive.nonce } });
    else if ('join' in f) {
      const j = f.join;
      const code = this.refuseTokens.get(j.token);
      if (code !== undefined) return s.send({ error: { requestId: j.requestId, code, message: 'refused' } });
      s.send({ joined: { requestId: j.requestId, channel: j.channel, channelId: this.channelId, userId: j.token, members: this.members, edgeId: this.id, memberCount: this.memberCount, large: this.large } });
    } else if ('publishTrack' in f) {
      const p = f.publishTrack;
      s.send({ trackPublished: { requestId: p.requestId, channelId: p.channelId, name: p.name, trackKey: (BigInt(this.id) << 32n) | BigInt(++this.counter) } });
    } else if ('subscribe' in f) s.send({ subscribed: { requestId: f.subscribe.requestId, channelId: f.subscribe.channelId, userId: f.subscribe.userId } });
    else if ('leave' in f) s.send({ left: { requestId: f.leave.requestId, channelId: f.leave.channelId } });
    else if ('message' in f) {
      const m = f.message;
      if (this.refuseSeqs.has(m.seq)) s.send({ error: { requestId: 0, code: 10, message: 'refused' } });
      else s.send({ messageAck: { channelId: m.channelId, seq: m.seq } });
    }
  }
}

/** A network of fake edges, by `host:port`. */
export class FakeNet {
  edges = new Map<string, FakeEdge>();
  /** Every session URL dialled, with its options. */
  dialled: { url: string; options: WebTransportOptions | undefined }[] = [];
  /** Sessions have `getStats()` with `packetsReceived` (as Chromium's). */
  quicStats = false;

  /** An edge at `addr`, also reachable as `<serverName>:<port>`. */
  edge(id: number, addr: string, serverName = `e${id}.test`): FakeEdge {
    const e = new FakeEdge(id, addr);
    this.edges.set(addr, e);
    this.edges.set(`${serverName}:${addr.split(':').pop()}`, e);
    return e;
  }

  readonly WebTransport = ((net: FakeNet) =>
    class FakeWebTransport {
      readonly ready: Promise<void>;
      readonly closed: Promise<WebTransportCloseInfo>;
      readonly datagrams: { readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array>; maxDatagramSize: number };
      private readonly session: Session | undefined;

      constructor(url: string, options?: WebTransportOptions) {
        net.dialled.push({ url, options });
        const u = new URL(url);
        const edge = net.edges.get(u.host);
        if (u.pathname !== '/rtn-client/1') throw new TypeError('bad path');
        if (!edge) {
          this.ready = Promise.reject(new Error('Opening handshake failed'));
          this.closed = this.ready.then(() => ({}));
          this.datagrams = { readable: new ReadableStream(), writable: new WritableStream(), maxDatagramSize: 1200 };
          return;
        }
        const s = new Session(edge, url, options);
        this.session = s;
        edge.sessions.push(s);
        this.ready = (async () => {
          if (edge.delayMs) await wait(edge.delayMs);
          const pins = options?.serverCertificateHashes?.map((h) => Buffer.from(h.value as Uint8Array).toString('hex'));
          if (edge.down || edge.silent || (pins && edge.certHash !== undefined && !pins.includes(edge.certHash))) {
            s.close({ closeCode: 0, reason: 'refused' });
            throw new Error('Opening handshake failed');
          }
        })();
        this.closed = s.closedP;
        this.datagrams = {
          readable: s.dgReadable,
          writable: new WritableStream<Uint8Array>({ write: (d) => s.received(d) }),
          maxDatagramSize: 1200,
        };
      }

      /** Chromium's QUIC statistics, where the net has them. */
      readonly getStats = net.quicStats ? async () => ({ packetsReceived: this.session?.packetsRx ?? 0 }) : undefined;

      async createBidirectionalStream(): Promise<WebTransportBidirectionalStream> {
        return this.session!.stream();
      }

      close(info: WebTransportCloseInfo = {}): void {
        this.session?.close(info);
      }
    })(this) as unknown as new (url: string, options?: WebTransportOptions) => WebTransport;
}

/** Wait until `cond()` holds (polling), or fail after `ms`. */
export async function until(cond: () => unknown, ms = 2_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await wait(5);
  }
}
