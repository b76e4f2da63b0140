//! Join tokens: JSON Web Tokens (RFC 7519) that the app's own server signs
//! with a secret it shares with the network, verified by any edge locally
//! (no call to anyone). Any JWT library mints them (docs/protocol.md §7).
//!
//! ```text
//! token   := b64(header) "." b64(claims) "." b64(mac)        JWS compact form
//! header  := {"alg":"HS256","typ":"JWT"}                     (HS256 only)
//! claims  := {"iss": app id, "sub": user id, "channel": name,
//!             "publish": bool, "subscribe": bool,             (absent: false)
//!             "iat": secs, "nbf": secs (optional), "exp": secs}
//! mac     := HMAC-SHA256(app secret, b64(header) "." b64(claims))   32 bytes
//! b64     := base64url, RFC 4648 §5, without padding
//! ```
//!
//! Several secrets may be valid for one app at a time, which is how a secret
//! is rotated without downtime (add new, reissue, drop old): `iss` picks the
//! app's secrets before any signature is checked, and the MAC may match any
//! of them.
//!
//! Written here with `ring`'s HMAC (constant-time verification), `base64`
//! and `serde_json` rather than with the `jsonwebtoken` crate: its current
//! releases need a crypto backend of their own (aws-lc-rs, a second C crypto
//! library beside the `ring` everything else here uses, or RustCrypto's
//! RSA/ECDSA/EdDSA crates, RSA with an unfixed timing advisory) or a
//! process-wide provider installed by hand; its claim checks read the system
//! clock, while `verify` takes `now` (tests and fuzzing run at fixed times)
//! and must report each failure with its own wire code in a fixed order. All
//! that would be left for it is splitting three base64url parts and one HMAC
//! comparison, which is all this file does: one algorithm, chosen by the
//! verifier and never by the token's header.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::limits::{MAX_NAME_LEN, MAX_TOKEN_LEN};
use crate::pb::ErrorCode;

/// The JOSE header of every minted token, byte for byte. Verification accepts
/// any JSON object with `"alg": "HS256"` (see [`TokenVerifier::verify`]).
pub const HEADER_JSON: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
/// The only signature algorithm accepted.
pub const ALG: &str = "HS256";
/// Clock skew tolerated between the app's token server and the edge, on
/// `exp` and on `nbf`.
pub const EXPIRY_LEEWAY_SECS: u64 = 5;

#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum TokenError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token signature does not verify (tampered or wrong secret)")]
    BadSignature,
    #[error("token expired at {expired_at} (now {now})")]
    Expired { expired_at: u64, now: u64 },
    /// `nbf` is further in the future than the leeway; refused with the
    /// same code as an expired token.
    #[error("token is not valid before {not_before} (now {now})")]
    NotYetValid { not_before: u64, now: u64 },
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
            TokenError::Expired { .. } | TokenError::NotYetValid { .. } => ErrorCode::TokenExpired,
            TokenError::UnknownApp(_) => ErrorCode::TokenUnknownApp,
            TokenError::WrongChannel { .. } => ErrorCode::TokenWrongChannel,
        }
    }
}

/// Verified claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// `iss`.
    pub app_id: String,
    pub channel: String,
    /// `sub`.
    pub user_id: String,
    pub can_publish: bool,
    pub can_subscribe: bool,
    /// `exp`.
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

/// The claims as minted, in this order (the test vector of docs/protocol.md
/// §7 depends on it).
#[derive(Serialize)]
struct ClaimsOut<'a> {
    iss: &'a str,
    sub: &'a str,
    channel: &'a str,
    publish: bool,
    subscribe: bool,
    iat: u64,
    exp: u64,
}

/// The claims as read: names and types are checked here, other claims
/// (`aud`, `jti`, an app's own) are ignored, a known claim given twice is an
/// error.
#[derive(Deserialize)]
struct ClaimsIn {
    iss: String,
    sub: String,
    channel: String,
    #[serde(default)]
    publish: bool,
    #[serde(default)]
    subscribe: bool,
    exp: u64,
    #[serde(default)]
    nbf: Option<u64>,
    /// Informational: read for its type only.
    #[serde(default, rename = "iat")]
    _iat: Option<u64>,
}

#[derive(Deserialize)]
struct HeaderIn {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    /// Critical extensions: none is understood, so any is refused
    /// (RFC 7515 §4.1.11).
    #[serde(default)]
    crit: Option<IgnoredAny>,
}

/// Sign a token. Used by app servers (and the `edge-node token` dev command).
pub fn mint(grant: &Grant<'_>, secret: &[u8]) -> String {
    let claims = ClaimsOut {
        iss: grant.app_id,
        sub: grant.user_id,
        channel: grant.channel,
        publish: grant.publish,
        subscribe: grant.subscribe,
        iat: grant.issued_at,
        exp: grant.expires_at,
    };
    let claims = serde_json::to_vec(&claims).expect("claims serialize");
    sign(HEADER_JSON.as_bytes(), &claims, secret)
}

/// The JWS compact form of `header` and `claims` (JSON texts, used as they
/// are) signed with HMAC-SHA256 under `secret`. [`mint`] is the way to make
/// a token; this is for tests and fuzzing, which need tokens `mint` would
/// never write.
pub fn sign(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret),
        signed.as_bytes(),
    );
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()))
}

/// A base64url part holding a JSON object, as `T`. UTF-8 throughout (serde
/// skips ignored members without checking them), and an object only (serde
/// would also take a struct from a JSON array).
fn json_object<T: DeserializeOwned>(part: &str) -> Option<T> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    let text = std::str::from_utf8(&bytes).ok()?;
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
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

    /// Verify `token` for joining `channel` at `now` (seconds since the epoch),
    /// in the order of docs/protocol.md §7. Rights are checked by the caller
    /// when the client uses them.
    pub fn verify(&self, token: &str, channel: &str, now: u64) -> Result<Claims, TokenError> {
        // 1. Form: length, three parts, an HS256 header, typed claims.
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("longer than the limit"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(mac_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed(
                "not a JWT (three base64url parts separated by '.')",
            ));
        };
        let header: HeaderIn = json_object(header_b64).ok_or(TokenError::Malformed(
            "header is not a base64url JSON object",
        ))?;
        // The verifier picks the algorithm, never the token: `none`, other
        // HMACs and every public-key algorithm are refused.
        if header.alg != ALG {
            return Err(TokenError::Malformed("alg must be HS256"));
        }
        if header.typ.is_some_and(|t| !t.eq_ignore_ascii_case("JWT")) {
            return Err(TokenError::Malformed("typ must be JWT"));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed("critical header extensions (crit)"));
        }
        let claims: ClaimsIn = json_object(claims_b64).ok_or(TokenError::Malformed(
            "claims are not a base64url JSON object with string iss, sub and channel, \
             integer exp (and nbf, iat), boolean publish and subscribe",
        ))?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac_b64)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        // 2. The app.
        let keys = self
            .apps
            .get(&claims.iss)
            .ok_or_else(|| TokenError::UnknownApp(claims.iss.clone()))?;
        // 3. The MAC, over the exact text of the first two parts, under any
        // of the app's secrets (ring compares in constant time).
        let signed = &token[..header_b64.len() + 1 + claims_b64.len()];
        if !keys
            .iter()
            .any(|k| hmac::verify(k, signed.as_bytes(), &mac).is_ok())
        {
            return Err(TokenError::BadSignature);
        }
        // 4. Names.
        for name in [&claims.channel, &claims.sub] {
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(TokenError::Malformed(
                    "empty or overlong channel or user id",
                ));
            }
        }
        // NUL separates the parts of the channel id hash: a name holding one
        // could alias another app's or channel's id.
        if [&claims.iss, &claims.channel, &claims.sub]
            .iter()
            .any(|n| n.contains('\0'))
        {
            return Err(TokenError::Malformed("names must not contain NUL"));
        }
        // 5. Time.
        if now > claims.exp.saturating_add(EXPIRY_LEEWAY_SECS) {
            return Err(TokenError::Expired {
                expired_at: claims.exp,
                now,
            });
        }
        if let Some(nbf) = claims.nbf {
            if nbf > now.saturating_add(EXPIRY_LEEWAY_SECS) {
                return Err(TokenError::NotYetValid {
                    not_before: nbf,
                    now,
                });
            }
        }
        // 6. The channel.
        if claims.channel != channel {
            return Err(TokenError::WrongChannel {
                token: claims.channel,
                requested: channel.to_string(),
            });
        }
        Ok(Claims {
            app_id: claims.iss,
            channel: claims.channel,
            user_id: claims.sub,
            can_publish: claims.publish,
            can_subscribe: claims.subscribe,
            expires_at: claims.exp,
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

    /// A token with these header and claims JSON texts, signed with `secret`.
    fn jwt(header: &str, claims: &str) -> String {
        sign(header.as_bytes(), claims.as_bytes(), b"secret")
    }

    fn code(t: &str) -> ErrorCode {
        verifier().verify(t, "room", NOW).unwrap_err().code()
    }

    const CLAIMS: &str = r#"{"iss":"demo","sub":"alice","channel":"room","exp":1800000060}"#;

    #[test]
    fn test_vector_of_the_spec() {
        // docs/protocol.md §7, recomputed there with Python's standard library.
        let g = Grant {
            app_id: "demo",
            channel: "room",
            user_id: "alice",
            publish: true,
            subscribe: true,
            issued_at: 1_800_000_000,
            expires_at: 1_800_003_600,
        };
        let alice = mint(&g, b"demo-secret");
        assert_eq!(
            alice,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
             eyJpc3MiOiJkZW1vIiwic3ViIjoiYWxpY2UiLCJjaGFubmVsIjoicm9vbSIsInB1Ymxpc2giOnRydWUsInN1YnNjcmliZSI6dHJ1ZSwiaWF0IjoxODAwMDAwMDAwLCJleHAiOjE4MDAwMDM2MDB9.\
             aAoyESqnJ357gu6OxBoMMN2Aq1DpZJBosHdCJAvYa0I"
        );
        let bob = mint(
            &Grant {
                user_id: "bob",
                publish: false,
                ..g
            },
            b"demo-secret",
        );
        assert_eq!(
            bob,
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
             eyJpc3MiOiJkZW1vIiwic3ViIjoiYm9iIiwiY2hhbm5lbCI6InJvb20iLCJwdWJsaXNoIjpmYWxzZSwic3Vic2NyaWJlIjp0cnVlLCJpYXQiOjE4MDAwMDAwMDAsImV4cCI6MTgwMDAwMzYwMH0.\
             7p7bOFHtiQ4mMZ4mCFdbjNx12ragy8UycoadWoK7nq0"
        );
        let mut v = TokenVerifier::new();
        v.add_secret("demo", b"old-secret");
        v.add_secret("demo", b"demo-secret");
        let c = v.verify(&alice, "room", 1_800_003_605).unwrap();
        assert_eq!((c.can_publish, c.can_subscribe), (true, true));
        assert_eq!(
            v.verify(&alice, "room", 1_800_003_606).unwrap_err().code(),
            ErrorCode::TokenExpired
        );
        let c = v.verify(&bob, "room", NOW).unwrap();
        assert_eq!(
            (c.user_id.as_str(), c.can_publish, c.can_subscribe),
            ("bob", false, true)
        );
    }

    #[test]
    fn valid_token_verifies_with_any_current_secret() {
        let c = verifier()
            .verify(&mint(&grant(), b"secret"), "room", NOW)
            .unwrap();
        assert_eq!(
            c,
            Claims {
                app_id: "demo".into(),
                channel: "room".into(),
                user_id: "alice".into(),
                can_publish: true,
                can_subscribe: false,
                expires_at: NOW + 60,
            }
        );
        assert!(verifier()
            .verify(&mint(&grant(), b"old secret"), "room", NOW)
            .is_ok());
    }

    #[test]
    fn each_refusal_has_its_own_code() {
        let v = verifier();
        let t = mint(&grant(), b"secret");
        assert!(v.verify(&t, "room", NOW + 60 + EXPIRY_LEEWAY_SECS).is_ok());
        let expired = v
            .verify(&t, "room", NOW + 61 + EXPIRY_LEEWAY_SECS)
            .unwrap_err();
        assert_eq!(
            expired,
            TokenError::Expired {
                expired_at: NOW + 60,
                now: NOW + 66
            }
        );
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
        assert_eq!(code("garbage"), ErrorCode::TokenMalformed);
    }

    #[test]
    fn the_checks_run_in_the_spec_order() {
        // Unknown app before the signature, the signature before names and
        // times, names before times, times before the channel.
        let unknown = sign(
            HEADER_JSON.as_bytes(),
            br#"{"iss":"nope","sub":"","channel":"x","exp":0}"#,
            b"wrong",
        );
        assert_eq!(code(&unknown), ErrorCode::TokenUnknownApp);
        let forged = sign(
            HEADER_JSON.as_bytes(),
            br#"{"iss":"demo","sub":"","channel":"x","exp":0}"#,
            b"wrong",
        );
        assert_eq!(code(&forged), ErrorCode::TokenBadSignature);
        let empty_user = jwt(
            HEADER_JSON,
            r#"{"iss":"demo","sub":"","channel":"x","exp":0}"#,
        );
        assert_eq!(code(&empty_user), ErrorCode::TokenMalformed);
        let expired_elsewhere = jwt(
            HEADER_JSON,
            r#"{"iss":"demo","sub":"u","channel":"x","exp":0}"#,
        );
        assert_eq!(code(&expired_elsewhere), ErrorCode::TokenExpired);
    }

    #[test]
    fn only_hs256_is_accepted_whatever_the_header_says() {
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"none"}"#,
            r#"{"alg":"HS384","typ":"JWT"}"#,
            r#"{"alg":"HS512","typ":"JWT"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"ES256","typ":"JWT"}"#,
            r#"{"alg":"EdDSA"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":["HS256"]}"#,
            r#"{"typ":"JWT"}"#,
            r#"{"alg":"HS256","typ":"JOSE+JSON"}"#,
            r#"{"alg":"HS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"HS256","alg":"none"}"#,
            r#"["HS256","JWT"]"#,
            "null",
            "",
        ] {
            assert_eq!(
                code(&jwt(header, CLAIMS)),
                ErrorCode::TokenMalformed,
                "{header}"
            );
        }
        // Not UTF-8, even in a member that is otherwise ignored.
        let t = sign(
            b"{\"alg\":\"HS256\",\"kid\":\"\xd7\"}",
            CLAIMS.as_bytes(),
            b"secret",
        );
        assert_eq!(code(&t), ErrorCode::TokenMalformed);
        let t = sign(
            HEADER_JSON.as_bytes(),
            b"{\"iss\":\"demo\",\"sub\":\"alice\",\"channel\":\"room\",\"exp\":1800000060,\"x\":\"\xff\"}",
            b"secret",
        );
        assert_eq!(code(&t), ErrorCode::TokenMalformed);
        // `none` with an empty signature, as an attacker would send it.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(CLAIMS)
        );
        assert_eq!(code(&none), ErrorCode::TokenMalformed);
        // What other libraries write: other key orders, no typ, a kid, a
        // lowercase typ, whitespace.
        for header in [
            r#"{"typ":"JWT","alg":"HS256"}"#,
            r#"{"alg":"HS256"}"#,
            r#"{"alg":"HS256","typ":"jwt","kid":"2026-01"}"#,
            " {\n  \"alg\": \"HS256\"\n}",
        ] {
            assert!(
                verifier().verify(&jwt(header, CLAIMS), "room", NOW).is_ok(),
                "{header}"
            );
        }
    }

    #[test]
    fn claims_must_have_their_types() {
        for claims in [
            r#"{"sub":"alice","channel":"room","exp":1800000060}"#,
            r#"{"iss":"demo","channel":"room","exp":1800000060}"#,
            r#"{"iss":"demo","sub":"alice","exp":1800000060}"#,
            r#"{"iss":"demo","sub":"alice","channel":"room"}"#,
            r#"{"iss":"demo","sub":"alice","channel":"room","exp":"1800000060"}"#,
            r#"{"iss":"demo","sub":"alice","channel":"room","exp":1800000060.5}"#,
            r#"{"iss":"demo","sub":"alice","channel":"room","exp":-1}"#,
            r#"{"iss":"demo","sub":"alice","channel":"room","exp":1800000060,"nbf":"0"}"#,
            r#"{"iss":"demo","sub":"alice","channel":"room","exp":1800000060,"publish":1}"#,
            r#"{"iss":"demo","sub":"alice","channel":"room","exp":1800000060,"subscribe":"true"}"#,
            r#"{"iss":"demo","sub":7,"channel":"room","exp":1800000060}"#,
            r#"{"iss":"demo","sub":"alice","channel":["room"],"exp":1800000060}"#,
            r#"{"iss":"demo","sub":"alice","channel":"room","channel":"hall","exp":1800000060}"#,
            r#"["demo","alice","room",true,true,null,null,1800000060]"#,
            r#"{"iss":"demo","sub":"alice","channel":"room","exp":1800000060} x"#,
        ] {
            assert_eq!(
                code(&jwt(HEADER_JSON, claims)),
                ErrorCode::TokenMalformed,
                "{claims}"
            );
        }
        // Rights default to none; other claims are ignored.
        let c = verifier()
            .verify(
                &jwt(
                    HEADER_JSON,
                    r#"{"iss":"demo","sub":"alice","channel":"room","exp":1800000060,"aud":"x","jti":"1","rtn_extra":{"a":[1]}}"#,
                ),
                "room",
                NOW,
            )
            .unwrap();
        assert_eq!((c.can_publish, c.can_subscribe), (false, false));
        // JSON escapes are decoded before names are compared.
        let c = verifier()
            .verify(
                &jwt(
                    HEADER_JSON,
                    r#"{"iss":"d\u0065mo","sub":"\u00e9l\u00e8ve","channel":"room","exp":1800000060}"#,
                ),
                "room",
                NOW,
            )
            .unwrap();
        assert_eq!(c.user_id, "élève");
    }

    #[test]
    fn encoding_is_strict() {
        let t = mint(&grant(), b"secret");
        let (h, rest) = t.split_once('.').unwrap();
        let (c, m) = rest.split_once('.').unwrap();
        for bad in [
            format!("{h}.{c}"),
            format!("{h}.{c}.{m}.{m}"),
            format!("{h}=.{c}.{m}"),
            format!("{h}.{c}.{m}="),
            format!("{h}.{c}+.{m}"),
            format!(" {t}"),
            format!("{h}.{c}.{m} "),
            format!("{h}.{c}.{}", m.replace('_', "/").replace('-', "+")),
        ] {
            assert_eq!(code(&bad), ErrorCode::TokenMalformed, "{bad}");
        }
        // A signature part of another length, or with unused bits set, does
        // not verify.
        assert_eq!(
            code(&format!("{h}.{c}.{}", &m[..40])),
            ErrorCode::TokenBadSignature
        );
        assert_eq!(code(&format!("{h}.{c}.")), ErrorCode::TokenBadSignature);
        let long = jwt(
            HEADER_JSON,
            &format!(
                r#"{{"iss":"demo","sub":"alice","channel":"room","exp":1800000060,"pad":"{}"}}"#,
                "x".repeat(MAX_TOKEN_LEN)
            ),
        );
        assert_eq!(
            verifier().verify(&long, "room", NOW),
            Err(TokenError::Malformed("longer than the limit"))
        );
    }

    #[test]
    fn not_before_in_the_future_is_refused_beyond_the_leeway() {
        let t = jwt(
            HEADER_JSON,
            r#"{"iss":"demo","sub":"alice","channel":"room","nbf":1800000100,"exp":1800000600}"#,
        );
        let v = verifier();
        assert!(v.verify(&t, "room", 1_800_000_095).is_ok());
        let e = v.verify(&t, "room", 1_800_000_094).unwrap_err();
        assert_eq!(
            e,
            TokenError::NotYetValid {
                not_before: 1_800_000_100,
                now: 1_800_000_094
            }
        );
        assert_eq!(e.code(), ErrorCode::TokenExpired);
    }

    #[test]
    fn names_with_nul_or_out_of_bounds_are_refused() {
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
        let long = "u".repeat(MAX_NAME_LEN);
        let ok = mint(
            &Grant {
                channel: &long,
                user_id: &long,
                ..grant()
            },
            b"secret",
        );
        assert!(ok.len() <= MAX_TOKEN_LEN);
        assert!(verifier().verify(&ok, &long, NOW).is_ok());
        let longer = "u".repeat(MAX_NAME_LEN + 1);
        for g in [
            Grant {
                user_id: &longer,
                ..grant()
            },
            Grant {
                user_id: "",
                ..grant()
            },
        ] {
            assert_eq!(code(&mint(&g, b"secret")), ErrorCode::TokenMalformed);
        }
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
            let h = URL_SAFE_NO_PAD.encode(HEADER_JSON);
            let _ = verifier().verify(&s, "room", NOW);
            let _ = verifier().verify(&format!("{h}.{s}"), "room", NOW);
        }

        #[test]
        fn arbitrary_claims_signed_never_panic(claims in ".{0,300}", header in ".{0,40}") {
            let _ = verifier().verify(&jwt(&header, &claims), "room", NOW);
            let _ = verifier().verify(&jwt(HEADER_JSON, &claims), "room", NOW);
        }

        #[test]
        fn minted_tokens_round_trip(
            channel in "[^\0]{1,40}",
            user in "[^\0]{1,40}",
            publish: bool,
            subscribe: bool,
            issued_at in 0u64..4_000_000_000,
            ttl in 0u64..100_000,
        ) {
            let g = Grant {
                app_id: "demo",
                channel: &channel,
                user_id: &user,
                publish,
                subscribe,
                issued_at,
                expires_at: issued_at + ttl,
            };
            let c = verifier().verify(&mint(&g, b"secret"), &channel, issued_at).unwrap();
            prop_assert_eq!(c, Claims {
                app_id: "demo".into(),
                channel: channel.clone(),
                user_id: user.clone(),
                can_publish: publish,
                can_subscribe: subscribe,
                expires_at: issued_at + ttl,
            });
        }

        #[test]
        fn any_changed_character_is_refused(i in 0usize..1_000, c in "[A-Za-z0-9_.=+/-]") {
            let t = mint(&grant(), b"secret");
            let i = i % t.len();
            let c = c.chars().next().unwrap();
            prop_assume!(t.as_bytes()[i] != c as u8);
            let mut changed = t.clone();
            changed.replace_range(i..=i, &c.to_string());
            prop_assert!(verifier().verify(&changed, "room", NOW).is_err());
        }
    }
}
