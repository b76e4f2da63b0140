// Stream framing (docs/protocol.md §3): the control stream carries, in each
// direction, a sequence of
//
//   frame   := length message
//   length  := protobuf varint (7 bits a byte, least significant group
//              first, high bit = more bytes follow), 1..=262,144
//   message := exactly `length` bytes: one ClientFrame / ServerFrame
//
// Receiver rules, as the reference `FrameBuffer`: the length is judged
// before the body is waited for (a prefix whose first three bytes all have
// the high bit set, or a length over MAX_FRAME_LEN, is FRAME_TOO_LARGE at
// once); a zero length is MALFORMED_FRAME; non-minimal varints (`81 00`) are
// fine; a stream that ends mid-frame is MALFORMED_FRAME. After any framing
// error the stream is unusable.

import { ErrorCode } from './errors';

export const MAX_FRAME_LEN = 262_144;

export class FrameError extends Error {
  override readonly name = 'FrameError';
  /** FRAME_TOO_LARGE or MALFORMED_FRAME: the close code to use. */
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** Prefix `body` with its varint length. */
export function encodeFrame(body: Uint8Array): Uint8Array {
  if (body.length === 0 || body.length > MAX_FRAME_LEN) {
    throw new FrameError(ErrorCode.MALFORMED_FRAME, `frame body of ${body.length} bytes (must be 1..=${MAX_FRAME_LEN})`);
  }
  const prefix: number[] = [];
  let n = body.length;
  while (n >= 0x80) {
    prefix.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  prefix.push(n);
  const out = new Uint8Array(prefix.length + body.length);
  out.set(prefix);
  out.set(body, prefix.length);
  return out;
}

/** Reassembles frames from arbitrary chunks of the stream. */
export class FrameDecoder {
  private buf: Uint8Array = new Uint8Array(0);
  private failed: FrameError | undefined;

  /** Add a chunk; returns the frame bodies it completed. Throws
   * `FrameError` on a framing error (then and on every later call). */
  push(chunk: Uint8Array): Uint8Array[] {
    if (this.failed) throw this.failed;
    this.buf = this.buf.length === 0 ? chunk : concat(this.buf, chunk);
    const out: Uint8Array[] = [];
    let pos = 0;
    for (;;) {
      const head = this.length(pos);
      if (head === undefined) break;
      const [len, used] = head;
      if (this.buf.length - pos - used < len) break;
      out.push(this.buf.slice(pos + used, pos + used + len));
      pos += used + len;
    }
    this.buf = this.buf.subarray(pos);
    return out;
  }

  /** The stream ended: an error if it ended inside a frame. */
  end(): void {
    if (this.failed) throw this.failed;
    if (this.buf.length > 0) this.fail(ErrorCode.MALFORMED_FRAME, 'the stream ended in the middle of a frame');
  }

  /** [length, prefix bytes] of the frame at `pos`, or undefined if the
   * prefix is not complete yet. */
  private length(pos: number): [number, number] | undefined {
    let v = 0;
    for (let i = 0; i < 3; i++) {
      if (pos + i >= this.buf.length) return undefined;
      const b = this.buf[pos + i]!;
      v += (b & 0x7f) * 2 ** (7 * i);
      if (b < 0x80) {
        if (v === 0) this.fail(ErrorCode.MALFORMED_FRAME, 'zero-length frame');
        if (v > MAX_FRAME_LEN) this.fail(ErrorCode.FRAME_TOO_LARGE, `frame length ${v} over ${MAX_FRAME_LEN}`);
        return [v, i + 1];
      }
    }
    // Three bytes, all with "more follows": at least 2^21 > MAX_FRAME_LEN.
    return this.fail(ErrorCode.FRAME_TOO_LARGE, 'frame length prefix longer than 3 bytes');
  }

  private fail(code: number, message: string): never {
    this.failed = new FrameError(code, message);
    this.buf = new Uint8Array(0);
    throw this.failed;
  }
}

export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
