// What the client knows of a channel's other members, as sdk/src/roster.rs:
// their sessions and tracks, and the events reporting changes.
//
// Events are per user and per (user, track name), not per session or track
// key: a member that reconnects shows up with a new session (and new track
// keys) before or after the old ones go, and the app should see neither a
// leave nor a track that vanishes and comes back. Media names tracks by
// key, so every key stays mapped (in `tracks`, shared by all channels) for
// the media reader. Our own user id is never a member to us.

import type { RtnEvent } from './events';
import { LatenessGate } from './lateness';
import { trackKindName, type Member, type TrackInfo } from './proto';
import { LossCounter } from './stats';

/** Edges a rejoin names at most (the edge uses no more: `MAX_MEMBER_EDGES`). */
const MAX_MEMBER_EDGES = 32;

export interface RemoteTrack {
  channelId: bigint;
  channel: string;
  user: string;
  name: string;
  lateness: LatenessGate;
  loss: LossCounter;
}

export type TrackMap = Map<bigint, RemoteTrack>;

export class Roster {
  /** Other members: user id -> sessions. */
  private members = new Map<string, Set<bigint>>();
  /** The edge hosting each other member's session where it is not ours
   * (`Member.edgeId`): named on a rejoin (`Join.member_edges`). */
  private edges = new Map<bigint, number>();
  /** Remote tracks of this channel: key -> [user, name]. */
  private remote = new Map<bigint, [string, string]>();
  /** How many keys name each (user, track name). */
  private names = new Map<string, number>();

  constructor(
    private readonly channelId: bigint,
    private readonly channel: string,
    public me: string,
    private readonly tracks: TrackMap,
    private readonly emit: (e: RtnEvent) => void,
  ) {}

  addTrack(user: string, t: TrackInfo): void {
    if (user === this.me || this.remote.has(t.trackKey)) return;
    this.remote.set(t.trackKey, [user, t.name]);
    this.tracks.set(t.trackKey, { channelId: this.channelId, channel: this.channel, user, name: t.name, lateness: new LatenessGate(), loss: new LossCounter() });
    const id = `${user}\0${t.name}`;
    const n = (this.names.get(id) ?? 0) + 1;
    this.names.set(id, n);
    if (n === 1) this.emit({ type: 'track-available', channel: this.channel, user, track: t.name, kind: trackKindName(t.kind) });
  }

  removeTrack(key: bigint): void {
    const found = this.remote.get(key);
    if (!found) return;
    this.remote.delete(key);
    this.tracks.delete(key);
    const [user, track] = found;
    const id = `${user}\0${track}`;
    const left = Math.max(0, (this.names.get(id) ?? 0) - 1);
    if (left > 0) {
      this.names.set(id, left);
      return;
    }
    this.names.delete(id);
    this.emit({ type: 'track-unavailable', channel: this.channel, user, track });
  }

  /** The edges hosting the other members as last heard (at most 32,
   * lowest first): a rejoin names them so the new edge tells them of us at
   * once (docs/protocol.md, 9.6 "Hints"). */
  memberEdges(): number[] {
    return [...new Set(this.edges.values())].sort((a, b) => a - b).slice(0, MAX_MEMBER_EDGES);
  }

  /** A member session appeared (on edge `edgeId`, 0: ours); true if it was
   * not known. */
  memberJoined(user: string, session: bigint, edgeId = 0): boolean {
    if (user === this.me) return false;
    let sessions = this.members.get(user);
    if (!sessions) this.members.set(user, (sessions = new Set()));
    if (sessions.has(session)) return false;
    sessions.add(session);
    if (edgeId !== 0) this.edges.set(session, edgeId);
    if (sessions.size === 1) this.emit({ type: 'member-joined', channel: this.channel, user });
    return true;
  }

  memberLeft(user: string, session: bigint): void {
    const sessions = this.members.get(user);
    if (!sessions) return;
    sessions.delete(session);
    this.edges.delete(session);
    if (sessions.size > 0) return;
    this.members.delete(user);
    // Its tracks are gone with it (the edge says so too; be sure).
    for (const [k, [u]] of [...this.remote]) if (u === user) this.removeTrack(k);
    this.emit({ type: 'member-left', channel: this.channel, user });
  }

  /** Adopt the member list of a Joined, reporting only what changed. */
  reconcile(members: Member[]): void {
    const now = new Map<string, Set<bigint>>();
    const others = members.filter((m) => m.userId !== this.me);
    this.edges.clear();
    for (const m of others) {
      let s = now.get(m.userId);
      if (!s) now.set(m.userId, (s = new Set()));
      s.add(m.session);
      if (m.edgeId !== 0) this.edges.set(m.session, m.edgeId);
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
    for (const k of [...this.remote.keys()]) if (!keys.has(k)) this.removeTrack(k);
    for (const user of this.members.keys()) {
      if (!now.has(user)) this.emit({ type: 'member-left', channel: this.channel, user });
    }
    this.members = now;
  }

  /** Forget every remote track (no events: the channel is going away). */
  clear(): void {
    for (const k of this.remote.keys()) this.tracks.delete(k);
    this.remote.clear();
    this.names.clear();
  }
}
