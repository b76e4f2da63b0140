// Encoders of ServerFrames: what a fake edge sends in the tests (the SDK
// itself only decodes them).
import { Writer, writeChatMessage, type ServerFrame, type TrackInfo } from '../src/proto';

export function encodeServerFrame(f: ServerFrame): Uint8Array {
  const w = new Writer();
  const track = (m: Writer, t: TrackInfo): void => { m.string(1, t.name); m.fixed64(2, t.trackKey); m.uint(3, t.kind); };
  if ('joined' in f) {
    const j = f.joined;
    w.message(1, (m) => {
      m.uint(1, j.requestId); m.string(2, j.channel); m.fixed64(3, j.channelId); m.string(4, j.userId);
      for (const mem of j.members) m.message(5, (x) => { x.string(1, mem.userId); for (const t of mem.tracks) x.message(2, (y) => track(y, t)); x.fixed64(3, mem.session); x.uint(4, mem.edgeId); });
      m.uint(6, j.edgeId); m.uint(7, j.memberCount); m.uint(8, j.large);
    });
  } else if ('left' in f) w.message(2, (m) => { m.uint(1, f.left.requestId); m.fixed64(2, f.left.channelId); });
  else if ('trackPublished' in f) { const t = f.trackPublished; w.message(3, (m) => { m.uint(1, t.requestId); m.fixed64(2, t.channelId); m.string(3, t.name); m.fixed64(4, t.trackKey); }); }
  else if ('error' in f) { const e = f.error; w.message(4, (m) => { m.uint(1, e.requestId); m.uint(2, e.code); m.string(3, e.message); }); }
  else if ('memberJoined' in f) { const e = f.memberJoined; w.message(5, (m) => { m.fixed64(1, e.channelId); m.string(2, e.userId); m.fixed64(3, e.session); m.uint(4, e.edgeId); }); }
  else if ('memberLeft' in f) { const e = f.memberLeft; w.message(6, (m) => { m.fixed64(1, e.channelId); m.string(2, e.userId); m.fixed64(3, e.session); m.uint(4, e.reason); }); }
  else if ('memberCount' in f) { const e = f.memberCount; w.message(14, (m) => { m.fixed64(1, e.channelId); m.uint(2, e.members); m.uint(3, e.large); }); }
  else if ('trackAvailable' in f) { const e = f.trackAvailable; w.message(7, (m) => { m.fixed64(1, e.channelId); m.string(2, e.userId); if (e.track) { const t = e.track; m.message(3, (x) => track(x, t)); } }); }
  else if ('trackUnavailable' in f) { const e = f.trackUnavailable; w.message(8, (m) => { m.fixed64(1, e.channelId); m.string(2, e.userId); m.fixed64(3, e.trackKey); }); }
  else if ('message' in f) { const c = f.message; w.message(9, (m) => writeChatMessage(m, c)); }
  else if ('messageAck' in f) { const a = f.messageAck; w.message(10, (m) => { m.fixed64(1, a.channelId); m.uint(2, a.seq); }); }
  else if ('goaway' in f) {
    const g = f.goaway;
    w.message(11, (m) => {
      m.uint(1, g.reason);
      for (const e of g.redirect) m.message(2, (x) => { x.uint(1, e.edgeId); x.string(2, e.addr); x.string(3, e.serverName); for (const h of e.certSha256) x.bytes(4, h, true); });
      m.uint(3, g.reconnectAfterMs);
    });
  } else if ('keepaliveAck' in f) { const k = f.keepaliveAck; w.message(12, (m) => m.uint(1, k.nonce)); }
  else { const s = f.subscribed; w.message(13, (m) => { m.uint(1, s.requestId); m.fixed64(2, s.channelId); m.string(3, s.userId); }); }
  return w.finish();
}
