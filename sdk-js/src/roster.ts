// What the client knows of a channel's other members, as sdk/src/roster.rs:
// their sessions and tracks, and the events reporting changes.
//
// Events are per user and per (user, track name), not per session or track
// key: a member that reconnects shows up with a new session (and new track
// keys) before or after the old ones go, and the app should see neither a
// leave nor a track that vanishes and comes back. Media names tracks by
// key, so every key stays mapped (in `tracks`, shared by all channels) for
// the media reader. Our own user id is never a member to us.
//
// In a large channel (docs/protocol.md 4.3, "Large channels") only members
// that publish are listed; the others are counted (`Census`).

import type { RtnEvent } from './events';
import { LatenessGate } from './lateness';
import { trackKindName, type Joined, type Member, type TrackInfo } from './proto';
import { LossCounter } from './stats';
import { StreamArrivals } from './stream';

/** Edges a rejoin names at most (the edge uses no more: `MAX_MEMBER_EDGES`). */
const MAX_MEMBER_EDGES = 32;

export interface RemoteTrack {
  channelId: bigint;
  channel: string;
  user: string;
  name: string;
  lateness: LatenessGate;
  loss: LossCounter;
  /** The stream it carries, shared with the member's other keys for the
   * same track name (a republish after a move). */
  stream: StreamArrivals;
}

/** After a rejoin, how long (ms) a member or track the new edge did not
 * list is kept before it counts as gone: the new edge knows only what the
 * named edges and the channel's homes have told it yet (homes push every
 * member within a second; entries live 3.5 s). Dropping the rest at once
 * would stop their media still arriving over the old link, and tell the
 * app they left and came back. */
export const REJOIN_GRACE_MS = 3500;

/** Hidden sessions remembered at most: past that, one announced again
 * gets a replay it does not need (receivers drop the duplicates). */
const MAX_HIDDEN = 4096;

export type TrackMap = Map<bigint, RemoteTrack>;

/** A channel's member sessions (ours included) and whether it is large, as
 * last heard (`Joined`, `MemberCount`); shared with its handles. */
export interface Census {
  members: number;
  large: boolean;
}

export class Roster {
  /** Other members: user id -> sessions. */
  private members = new Map<string, Set<bigint>>();
  /** The edge hosting each other member's session (`Member.edgeId`, 0
   * read as `myEdge`): named on a rejoin (`Join.member_edges`). */
  private edges = new Map<bigint, number>();
  /** The edge this client is on (`Joined.edgeId`; 0 until known). Its other
   * members must be named too when the client moves: they stay there, and
   * the new edge may not have heard of them yet. */
  private myEdge = 0;
  /** Remote tracks of this channel: key -> [user, name]. */
  private remote = new Map<bigint, [string, string]>();
  /** How many keys name each (user, track name), and their stream. */
  private names = new Map<string, { keys: number; stream: StreamArrivals }>();
  /** Sessions (with their user) and keys known before a rejoin that the
   * new edge did not list, kept until `unconfirmedUntil`. */
  private unconfirmedSessions = new Map<bigint, string>();
  private unconfirmedKeys = new Set<bigint>();
  private unconfirmedUntil: number | undefined;
  readonly census: Census = { members: 0, large: false };
  /** Sessions hidden in a large channel (they publish nothing; at most
   * `MAX_HIDDEN`): one announced again never left, so it is not a new
   * session to replay messages to. */
  private hidden = new Set<bigint>();

  constructor(
    private readonly channelId: bigint,
    private readonly channel: string,
    public me: string,
    private readonly tracks: TrackMap,
    private readonly emit: (e: RtnEvent) => void,
  ) {}

  addTrack(user: string, t: TrackInfo): void {
    this.unconfirmedKeys.delete(t.trackKey);
    if (user === this.me || this.remote.has(t.trackKey)) return;
    this.remote.set(t.trackKey, [user, t.name]);
    const id = `${user}\0${t.name}`;
    let named = this.names.get(id);
    if (!named) this.names.set(id, (named = { keys: 0, stream: new StreamArrivals() }));
    named.keys++;
    this.tracks.set(t.trackKey, { channelId: this.channelId, channel: this.channel, user, name: t.name, lateness: new LatenessGate(), loss: new LossCounter(), stream: named.stream });
    if (named.keys === 1) this.emit({ type: 'track-available', channel: this.channel, user, track: t.name, kind: trackKindName(t.kind) });
  }

  removeTrack(key: bigint): void {
    this.unconfirmedKeys.delete(key);
    const found = this.remote.get(key);
    if (!found) return;
    this.remote.delete(key);
    this.tracks.delete(key);
    const [user, track] = found;
    const id = `${user}\0${track}`;
    const named = this.names.get(id);
    if (named && --named.keys > 0) return;
    this.names.delete(id);
    this.emit({ type: 'track-unavailable', channel: this.channel, user, track });
  }

  /** The edges hosting the other members as last heard (at most 32,
   * lowest first): a rejoin names them so the new edge tells them of us at
   * once (docs/protocol.md, 9.6 "Hints"). In a large channel the edge we
   * are on is named anyway: members that publish nothing are not listed,
   * and some are likely there. */
  /** The edge this client is on, as its `Joined` said (0 until known). */
  edge(): number {
    return this.myEdge;
  }

  memberEdges(): number[] {
    const edges = new Set(this.edges.values());
    const ours = this.host(0);
    if (this.census.large && ours !== undefined) edges.add(ours);
    return [...edges].sort((a, b) => a - b).slice(0, MAX_MEMBER_EDGES);
  }

  /** The edge an announcement's `edgeId` names (0: the one we are on). */
  private host(edgeId: number): number | undefined {
    const e = edgeId === 0 ? this.myEdge : edgeId;
    return e === 0 ? undefined : e;
  }

  /** A member session appeared (on edge `edgeId`, 0: ours); true if it is
   * new (neither known nor hidden before): it may have missed messages. */
  memberJoined(user: string, session: bigint, edgeId = 0): boolean {
    if (user === this.me) return false;
    this.unconfirmedSessions.delete(session);
    const host = this.host(edgeId);
    if (host !== undefined) this.edges.set(session, host);
    let sessions = this.members.get(user);
    if (!sessions) this.members.set(user, (sessions = new Set()));
    if (sessions.has(session)) return false;
    sessions.add(session);
    if (sessions.size === 1) this.emit({ type: 'member-joined', channel: this.channel, user });
    return !this.hidden.delete(session);
  }

  /** A member session left, or (`hidden`) is no longer listed in a large
   * channel: it publishes nothing any more. */
  memberLeft(user: string, session: bigint, hidden = false): void {
    this.unconfirmedSessions.delete(session);
    if (hidden) this.hide(session);
    const sessions = this.members.get(user);
    if (!sessions) return;
    sessions.delete(session);
    this.edges.delete(session);
    if (sessions.size > 0) return;
    this.members.delete(user);
    // Its tracks are gone with it (the edge says so too; be sure).
    for (const [k, [u]] of [...this.remote]) if (u === user) this.removeTrack(k);
    this.emit({ type: 'member-left', channel: this.channel, user, hidden });
  }

  private hide(session: bigint): void {
    if (this.hidden.size < MAX_HIDDEN) this.hidden.add(session);
  }

  /** The channel's member count and size (from Joined or MemberCount;
   * reported if changed). In a large channel the members that publish
   * nothing are not listed: they go, without `member-left`. */
  setCount(members: number, large: boolean): void {
    const c = this.census;
    if (c.members !== members || c.large !== large) {
      c.members = members;
      c.large = large;
      this.emit({ type: 'member-count', channel: this.channel, members, large });
    }
    if (!large) return;
    const publishing = new Set([...this.remote.values()].map(([u]) => u));
    for (const [user, sessions] of [...this.members]) {
      if (publishing.has(user)) continue;
      this.members.delete(user);
      for (const s of sessions) {
        this.edges.delete(s);
        this.unconfirmedSessions.delete(s);
        this.hide(s);
      }
    }
  }

  /** Adopt a Joined: its members (see `reconcile`; what it does not list is
   * kept for `REJOIN_GRACE_MS`) and its count. */
  adopt(j: Joined): void {
    this.reconcile(j.edgeId, j.members, performance.now() + REJOIN_GRACE_MS);
    this.setCount(j.memberCount, j.large);
  }

  /** Adopt the member list of a Joined from edge `edgeId`, reporting only
   * what changed. Sessions and tracks known before and not listed are kept,
   * unconfirmed, until `graceUntil` (ms, `REJOIN_GRACE_MS`; see
   * `expireUnconfirmed`). */
  reconcile(edgeId: number, members: Member[], graceUntil: number): void {
    this.myEdge = edgeId;
    const now = new Map<string, Set<bigint>>();
    const others = members.filter((m) => m.userId !== this.me);
    const oldEdges = this.edges;
    this.edges = new Map();
    for (const m of others) {
      let s = now.get(m.userId);
      if (!s) now.set(m.userId, (s = new Set()));
      s.add(m.session);
      const host = this.host(m.edgeId);
      if (host !== undefined) this.edges.set(m.session, host);
      this.unconfirmedSessions.delete(m.session);
    }
    const listed = new Set(others.map((m) => m.session));
    for (const [user, sessions] of this.members) {
      for (const s of sessions) {
        if (listed.has(s)) continue;
        let kept = now.get(user);
        if (!kept) now.set(user, (kept = new Set()));
        kept.add(s);
        this.unconfirmedSessions.set(s, user);
        const e = oldEdges.get(s);
        if (e !== undefined) this.edges.set(s, e);
      }
    }
    for (const user of now.keys()) {
      if (!this.members.has(user)) this.emit({ type: 'member-joined', channel: this.channel, user });
    }
    const keys = new Set<bigint>();
    for (const m of others) {
      for (const t of m.tracks) {
        keys.add(t.trackKey);
        this.addTrack(m.userId, t);
      }
    }
    for (const k of this.remote.keys()) if (!keys.has(k)) this.unconfirmedKeys.add(k);
    this.members = now;
    this.unconfirmedUntil = graceUntil;
  }

  /** Sessions and tracks a rejoin's new edge has not confirmed by `now`
   * (ms), past their grace, are gone (with the events that says). */
  expireUnconfirmed(now: number): void {
    if (this.unconfirmedUntil === undefined || now < this.unconfirmedUntil) return;
    this.unconfirmedUntil = undefined;
    const keys = [...this.unconfirmedKeys];
    const sessions = [...this.unconfirmedSessions];
    this.unconfirmedKeys.clear();
    this.unconfirmedSessions.clear();
    for (const k of keys) this.removeTrack(k);
    for (const [s, user] of sessions) this.memberLeft(user, s);
  }

  /** Forget every remote track (no events: the channel is going away). */
  clear(): void {
    for (const k of this.remote.keys()) this.tracks.delete(k);
    this.remote.clear();
    this.names.clear();
  }
}
