//! Join tokens: issued by the app's own server with a secret it shares with
//! the network, verified by any edge locally (no call to anyone).
//!
//! ```text
//! token   := "rtn1." base64url(claims) "." base64url(mac)
//! claims  := protobuf TokenClaims (common.proto)
//! mac     := HMAC-SHA256(app secret, "rtn1." base64url(claims))   32 bytes
//! ```
//!
//! base64url is RFC 4648 §5 without padding. `rights` bit 0 grants publish,
//! bit 1 subscribe. Several secrets may be valid for one app at a time, which
//! is how a secret is rotated without downtime (add new, reissue, drop old).

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use prost::Message;
use ring::hmac;

use crate::limits::{MAX_NAME_LEN, MAX_TOKEN_LEN};
use crate::pb::{ErrorCode, TokenClaims};

const PREFIX: &str = "rtn1.";
pub const RIGHT_PUBLISH: u32 = 1;
pub const RIGHT_SUBSCRIBE: u32 = 2;
/// Clock skew tolerated between the app's token server and the edge.
pub const EXPIRY_LEEWAY_SECS: u64 = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token signature does not verify (tampered or wrong secret)")]
    BadSignature,
    #[error("token expired at {expired_at} (now {now})")]
    Expired { expired_at: u64, now: u64 },
    #[error("token names unknown app {0:?}")]
    UnknownApp(String),
    #[error("token is for channel {token:?}, not {requested:?}")]
    WrongChannel { token: String, requested: String },
}

impl TokenError {
    /// The wire error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Malformed(_) => ErrorCode::TokenMalformed,
            TokenError::BadSignature => ErrorCode::TokenBadSignature,
            TokenError::Expired { .. } => ErrorCode::TokenExpired,
            TokenError::UnknownApp(_) => ErrorCode::TokenUnknownApp,
            TokenError::WrongChannel { .. } => ErrorCode::TokenWrongChannel,
        }
    }
}

/// Verified claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub app_id: String,
    pub channel: String,
    pub user_id: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub expires_at: u64,
}

/// What a token grants, for minting.
#[derive(Clone, Debug)]
pub struct Grant<'a> {
    pub app_id: &'a str,
    pub channel: &'a str,
    pub user_id: &'a str,
    pub publish: bool,
    pub subscribe: bool,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// Sign a token. Used by app servers (and the `edge-node token` dev command).
pub fn mint(grant: &Grant<'_>, secret: &[u8]) -> String {
    let claims = TokenClaims {
        app_id: grant.app_id.to_string(),
        channel: grant.channel.to_string(),
        user_id: grant.user_id.to_string(),
        rights: (grant.publish as u32 * RIGHT_PUBLISH) | (grant.subscribe as u32 * RIGHT_SUBSCRIBE),
        expires_at: grant.expires_at,
        issued_at: grant.issued_at,
    };
    let signed = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(claims.encode_to_vec()));
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        signed.as_bytes(),
    );
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
}

/// The secrets of every app an edge serves. Several per app during rotation.
#[derive(Clone, Default)]
pub struct TokenVerifier {
    apps: HashMap<String, Vec<hmac::Key>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("TokenVerifier")
            .field("apps", &self.apps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl TokenVerifier {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_secret(&mut self, app_id: &str, secret: &[u8]) {
        self.apps
            .entry(app_id.to_string())
            .or_default()
            .push(hmac::Key::new(hmac::HMAC_SHA256, secret));
    }

    /// Verify `token` for joining `channel` at `now` (seconds since the epoch).
    /// Rights are checked by the caller when the client uses them.
    pub fn verify(&self, token: &str, channel: &str, now: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("longer than the limit"));
        }
        let rest = token
            .strip_prefix(PREFIX)
            .ok_or(TokenError::Malformed("missing rtn1. prefix"))?;
        let (claims_b64, mac_b64) = rest
            .split_once('.')
            .ok_or(TokenError::Malformed("missing signature"))?;
        let claims_bin = URL_SAFE_NO_PAD
            .decode(claims_b64)
            .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let claims = TokenClaims::decode(claims_bin.as_slice())
            .map_err(|_| TokenError::Malformed("claims are not a TokenClaims message"))?;
        let keys = self
            .apps
            .get(&claims.app_id)
            .ok_or_else(|| TokenError::UnknownApp(claims.app_id.clone()))?;
        let signed = &token[..PREFIX.len() + claims_b64.len()];
        if !keys
            .iter()
            .any(|k| hmac::verify(k, signed.as_bytes(), &mac).is_ok())
        {
            return Err(TokenError::BadSignature);
        }
        for name in [&claims.channel, &claims.user_id] {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(TokenError::Malformed(
                    "empty or overlong channel or user id",
                ));
            }
        }
        // NUL separates the parts of the channel id hash: a name holding one
        // could alias another app's or channel's id.
        if [&claims.app_id, &claims.channel, &claims.user_id]
            .iter()
            .any(|n| n.contains('\0'))
        {
            return Err(TokenError::Malformed("names must not contain NUL"));
        }
        if now > claims.expires_at.saturating_add(EXPIRY_LEEWAY_SECS) {
            return Err(TokenError::Expired {
                expired_at: claims.expires_at,
                now,
            });
        }
        if claims.channel != channel {
            return Err(TokenError::WrongChannel {
                token: claims.channel,
                requested: channel.to_string(),
            });
        }
        Ok(Claims {
            can_publish: claims.rights & RIGHT_PUBLISH != 0,
            can_subscribe: claims.rights & RIGHT_SUBSCRIBE != 0,
            app_id: claims.app_id,
            channel: claims.channel,
            user_id: claims.user_id,
            expires_at: claims.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn grant() -> Grant<'static> {
        Grant {
            app_id: "demo",
            channel: "room",
            user_id: "alice",
            publish: true,
            subscribe: false,
            issued_at: NOW,
            expires_at: NOW + 60,
        }
    }

    fn verifier() -> TokenVerifier {
        let mut v = TokenVerifier::new();
        v.add_secret("demo", b"old secret");
        v.add_secret("demo", b"secret");
        v
    }

    #[test]
    fn valid_token_verifies_with_any_current_secret() {
        let c = verifier()
            .verify(&mint(&grant(), b"secret"), "room", NOW)
            .unwrap();
        assert_eq!(
            (c.user_id.as_str(), c.can_publish, c.can_subscribe),
            ("alice", true, false)
        );
        assert!(verifier()
            .verify(&mint(&grant(), b"old secret"), "room", NOW)
            .is_ok());
    }

    #[test]
    fn each_refusal_has_its_own_code() {
        let v = verifier();
        let t = mint(&grant(), b"secret");
        let expired = v
            .verify(&t, "room", NOW + 61 + EXPIRY_LEEWAY_SECS)
            .unwrap_err();
        assert_eq!(expired.code(), ErrorCode::TokenExpired);
        assert_eq!(
            v.verify(&t, "other", NOW).unwrap_err().code(),
            ErrorCode::TokenWrongChannel
        );
        assert_eq!(
            v.verify(&mint(&grant(), b"wrong"), "room", NOW)
                .unwrap_err(),
            TokenError::BadSignature
        );
        let g = Grant {
            app_id: "nope",
            ..grant()
        };
        assert_eq!(
            v.verify(&mint(&g, b"secret"), "room", NOW)
                .unwrap_err()
                .code(),
            ErrorCode::TokenUnknownApp
        );
        assert_eq!(
            v.verify("garbage", "room", NOW).unwrap_err().code(),
            ErrorCode::TokenMalformed
        );
    }

    #[test]
    fn names_with_nul_are_refused() {
        let t = mint(
            &Grant {
                channel: "a\0b",
                ..grant()
            },
            b"secret",
        );
        assert_eq!(
            verifier().verify(&t, "a\0b", NOW).unwrap_err().code(),
            ErrorCode::TokenMalformed
        );
    }

    #[test]
    fn tampered_claims_fail_the_signature() {
        // Re-sign nothing: swap in claims granting subscribe, keep the old mac.
        let t = mint(&grant(), b"secret");
        let other = mint(
            &Grant {
                subscribe: true,
                ..grant()
            },
            b"attacker",
        );
        let (_, mac) = t.rsplit_once('.').unwrap();
        let (forged_claims, _) = other.rsplit_once('.').unwrap();
        let forged = format!("{forged_claims}.{mac}");
        assert_eq!(
            verifier().verify(&forged, "room", NOW),
            Err(TokenError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in ".{0,300}") {
            let _ = verifier().verify(&s, "room", NOW);
            let _ = verifier().verify(&format!("rtn1.{s}"), "room", NOW);
        }
    }
}
