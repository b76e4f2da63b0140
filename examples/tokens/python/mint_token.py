#!/usr/bin/env python3
"""Mint an RTN join token with PyJWT.

A token is a standard HS256 JWT (docs/protocol.md §7); any JWT library does
the same.

    pip install pyjwt
    RTN_APP_SECRET=... python3 mint_token.py APP CHANNEL USER RIGHTS TTL_SECONDS

RIGHTS: "publish,subscribe", "publish", "subscribe" or "none". TTL_SECONDS is
the lifetime from now; a negative one gives a token that expired that long
ago (for tests). Prints the token on stdout.
"""

import argparse
import os
import sys
import time

import jwt

SECRET_ENV = "RTN_APP_SECRET"
KNOWN_RIGHTS = {"publish", "subscribe"}


def rights(text: str) -> set:
    if text == "none":
        return set()
    given = set(text.split(","))
    if not given <= KNOWN_RIGHTS:
        raise argparse.ArgumentTypeError(f"unknown rights {text!r}")
    return given


def mint(secret: str, app: str, channel: str, user: str, granted: set, ttl: int) -> str:
    now = int(time.time())
    claims = {
        "iss": app,  # the app id: selects the secrets on the edge
        "sub": user,  # the user id
        "channel": channel,
        "publish": "publish" in granted,
        "subscribe": "subscribe" in granted,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=f"Mint an RTN join token; the app secret is read from ${SECRET_ENV}."
    )
    parser.add_argument("app", help="app id (the iss claim)")
    parser.add_argument("channel")
    parser.add_argument("user", help="user id (the sub claim)")
    parser.add_argument("rights", type=rights, help="publish,subscribe | publish | subscribe | none")
    parser.add_argument("ttl", type=int, help="lifetime in seconds from now (negative: already expired)")
    args = parser.parse_args()
    secret = os.environ.get(SECRET_ENV)
    if not secret:
        parser.error(f"set {SECRET_ENV} to the app secret shared with the edges")
    print(mint(secret, args.app, args.channel, args.user, args.rights, args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main())
