// Minting join tokens on the app's server (Node), NOT in the browser: the
// secret must never reach a page. Import it as `@rtn/sdk/token-server`.
//
// A token is a standard JWT (docs/protocol.md §7), so any JWT library works
// too; this helper needs nothing but node:crypto:
//
//   token  = b64(header) "." b64(claims) "." b64(mac)
//   header = {"alg":"HS256","typ":"JWT"}
//   claims = {"iss": app id, "sub": user id, "channel": channel,
//             "publish": bool, "subscribe": bool,
//             "iat": issued at, "exp": expires at (seconds since the epoch)}
//   mac    = HMAC-SHA256(app secret, the ASCII text b64(header) "." b64(claims))
//   b64    = base64url without padding

import { createHash, createHmac } from 'node:crypto';

const HEADER = Buffer.from(JSON.stringify({ alg: 'HS256', typ: 'JWT' })).toString('base64url');

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
  const iat = o.issuedAt ?? Math.floor(Date.now() / 1000);
  const exp = o.expiresAt ?? iat + (o.ttlSeconds ?? 3_600);
  for (const [name, t] of [['issuedAt', iat], ['expiresAt', exp]] as const) {
    // JWT NumericDate as RTN reads it: a whole number of seconds.
    if (!Number.isSafeInteger(t) || t < 0) throw new RangeError(`${name} must be a whole number of seconds >= 0`);
  }
  // Member order as in the spec's test vector.
  const claims = {
    iss: o.appId,
    sub: o.userId,
    channel: o.channel,
    publish: o.publish ?? false,
    subscribe: o.subscribe ?? false,
    iat,
    exp,
  };
  const signed = `${HEADER}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  const mac = createHmac('sha256', o.secret).update(signed, 'ascii').digest('base64url');
  return `${signed}.${mac}`;
}

/** The 64-bit channel id of (app, channel) (docs/protocol.md §6). */
export function channelId(appId: string, channel: string): bigint {
  const d = createHash('sha256').update('rtn/v1/channel\0').update(appId).update('\0').update(channel).digest();
  return d.readBigUInt64BE(0);
}
