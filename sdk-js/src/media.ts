// Media datagrams (docs/protocol.md §5): one media packet per WebTransport
// datagram, never fragmented, forwarded by the edges byte for byte.
//
//   offset size field
//   0      1    type          0x01 (MEDIA)
//   1      8    channel_id    u64 BE, from Joined.channel_id
//   9      8    track_key     u64 BE, from TrackPublished / TrackAvailable
//   17     4    sequence      u32 BE, per track, +1 per packet, wraps
//   21     8    timestamp_us  u64 BE, publisher's wall clock (µs since epoch)
//   29     0..=1000 payload
//
// The other datagram type on a client link, NACK (0x04, §5.1), is in
// repair.ts; the client's reader tells them apart by the type byte.

export const TYPE_MEDIA = 0x01;
export const MEDIA_HEADER_LEN = 29;
export const MAX_MEDIA_PAYLOAD = 1_000;
export const MAX_MEDIA_DATAGRAM = MEDIA_HEADER_LEN + MAX_MEDIA_PAYLOAD;

export interface MediaHeader {
  channelId: bigint;
  trackKey: bigint;
  sequence: number;
  timestampUs: bigint;
}

/** The 29-byte header followed by `payload` (at most 1,000 bytes). */
export function encodeMedia(h: MediaHeader, payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_MEDIA_PAYLOAD) throw new RangeError(`media payload of ${payload.length} bytes exceeds ${MAX_MEDIA_PAYLOAD}`);
  const out = new Uint8Array(MEDIA_HEADER_LEN + payload.length);
  writeHeader(out, h);
  out.set(payload, MEDIA_HEADER_LEN);
  return out;
}

export function writeHeader(out: Uint8Array, h: MediaHeader): void {
  const v = new DataView(out.buffer, out.byteOffset, MEDIA_HEADER_LEN);
  v.setUint8(0, TYPE_MEDIA);
  v.setBigUint64(1, BigInt.asUintN(64, h.channelId));
  v.setBigUint64(9, BigInt.asUintN(64, h.trackKey));
  v.setUint32(17, h.sequence >>> 0);
  v.setBigUint64(21, BigInt.asUintN(64, h.timestampUs));
}

/** The header of a received datagram, or undefined when the receiver must
 * drop it (shorter than 29 bytes, type not 0x01, payload over 1,000). */
export function decodeMedia(d: Uint8Array): MediaHeader | undefined {
  if (d.length < MEDIA_HEADER_LEN || d.length > MAX_MEDIA_DATAGRAM || d[0] !== TYPE_MEDIA) return undefined;
  const v = new DataView(d.buffer, d.byteOffset, MEDIA_HEADER_LEN);
  return {
    channelId: v.getBigUint64(1),
    trackKey: v.getBigUint64(9),
    sequence: v.getUint32(17),
    timestampUs: v.getBigUint64(21),
  };
}
