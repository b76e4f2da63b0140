#!/usr/bin/env node
// Mint an RTN join token with the `jsonwebtoken` package from npm. A token is
// a standard HS256 JWT (docs/protocol.md §7); any JWT library does the same.
//
//   cd examples/tokens/node && npm ci
//   RTN_APP_SECRET=... node mint-token.mjs APP CHANNEL USER RIGHTS TTL_SECONDS
//
// RIGHTS: "publish,subscribe", "publish", "subscribe" or "none". TTL_SECONDS
// is the lifetime from now; a negative one gives a token that expired that
// long ago (for tests). Prints the token on stdout.
import jwt from 'jsonwebtoken';

const USAGE = 'usage: RTN_APP_SECRET=... node mint-token.mjs APP CHANNEL USER RIGHTS TTL_SECONDS\n' +
  '  RIGHTS: publish,subscribe | publish | subscribe | none';

function fail(message) {
  console.error(`mint-token: ${message}\n${USAGE}`);
  process.exit(2);
}

const args = process.argv.slice(2);
if (args.length !== 5) fail('expected 5 arguments');
const [app, channel, user, rightsArg, ttlArg] = args;
const rights = rightsArg === 'none' ? [] : rightsArg.split(',');
if (rights.some((r) => r !== 'publish' && r !== 'subscribe')) fail(`unknown rights ${JSON.stringify(rightsArg)}`);
if (!/^-?\d+$/.test(ttlArg)) fail(`TTL_SECONDS must be a whole number, not ${JSON.stringify(ttlArg)}`);
const secret = process.env.RTN_APP_SECRET;
if (!secret) fail('set RTN_APP_SECRET to the app secret shared with the edges');

// iss = the app id, sub = the user id; jsonwebtoken adds iat and exp.
const token = jwt.sign(
  { channel, publish: rights.includes('publish'), subscribe: rights.includes('subscribe') },
  secret,
  { algorithm: 'HS256', issuer: app, subject: user, expiresIn: Number(ttlArg) },
);
console.log(token);
