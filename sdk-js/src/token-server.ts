// Minting join tokens on the app's server (Node), NOT in the browser: the
// secret must never reach a page. Import it as `@rtn/sdk/token-server`.
//
//   token  = "rtn1." b64(claims) "." b64(mac)
//   claims = protobuf TokenClaims {1 app_id, 2 channel, 3 user_id,
//            4 rights (bit 0 publish, bit 1 subscribe), 5 expires_at,
//            6 issued_at (seconds since the epoch)}
//   mac    = HMAC-SHA256(app secret, the ASCII text "rtn1." b64(claims))
//   b64    = base64url without padding
// (docs/protocol.md §7.)

import { createHash, createHmac } from 'node:crypto';
import { encodeTokenClaims } from './proto';

export interface MintOptions {
  /** The app's secret shared with the edges. */
  secret: string | Uint8Array;
  appId: string;
  channel: string;
  userId: string;
  publish?: boolean;
  subscribe?: boolean;
  /** Lifetime in seconds (default 3600); or give `expiresAt`. */
  ttlSeconds?: number;
  expiresAt?: number;
  /** Seconds since the epoch; default now. */
  issuedAt?: number;
}

export function mintToken(o: MintOptions): string {
  const issuedAt = o.issuedAt ?? Math.floor(Date.now() / 1000);
  const claims = encodeTokenClaims({
    appId: o.appId,
    channel: o.channel,
    userId: o.userId,
    rights: (o.publish ? 1 : 0) | (o.subscribe ? 2 : 0),
    expiresAt: o.expiresAt ?? issuedAt + (o.ttlSeconds ?? 3_600),
    issuedAt,
  });
  const signed = `rtn1.${Buffer.from(claims).toString('base64url')}`;
  const mac = createHmac('sha256', o.secret).update(signed, 'ascii').digest('base64url');
  return `${signed}.${mac}`;
}

/** The 64-bit channel id of (app, channel) (docs/protocol.md §6). */
export function channelId(appId: string, channel: string): bigint {
  const d = createHash('sha256').update('rtn/v1/channel\0').update(appId).update('\0').update(channel).digest();
  return d.readBigUInt64BE(0);
}
