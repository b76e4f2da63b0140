//! Join tokens (TokenVerifier::verify). First byte even: the rest, as text,
//! is the token. First byte odd: the rest is the claims, which the target
//! signs with the app's secret, so verification gets past the signature;
//! the result must then be exactly what the claims say (an oracle written
//! from the spec in docs/protocol.md).
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use protocol::limits::{MAX_NAME_LEN, MAX_TOKEN_LEN};
use protocol::pb::TokenClaims;
use protocol::token::{TokenError, TokenVerifier, EXPIRY_LEEWAY_SECS};
use ring::hmac;

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"fuzz-secret-0123456789";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut v = TokenVerifier::new();
    v.add_secret("demo", b"an older secret");
    v.add_secret("demo", SECRET);
    if mode & 1 == 0 {
        let text = String::from_utf8_lossy(rest);
        if let Ok(c) = v.verify(&text, "room", NOW) {
            // Only a correctly signed token can pass, and none is signed here
            // unless the input holds a valid MAC for its claims.
            assert_eq!(c.channel, "room");
            assert_eq!(c.app_id, "demo");
        }
        return;
    }
    let signed = format!("rtn1.{}", URL_SAFE_NO_PAD.encode(rest));
    let mac = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, SECRET),
        signed.as_bytes(),
    );
    let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.as_ref()));
    let result = v.verify(&token, "room", NOW);
    // Spec §7: names are 1..=MAX_NAME_LEN bytes and contain no NUL.
    let name_ok = |s: &str| !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.contains('\0');
    let expected_ok = token.len() <= MAX_TOKEN_LEN
        && TokenClaims::decode(rest).is_ok_and(|c| {
            c.app_id == "demo"
                && name_ok(&c.channel)
                && name_ok(&c.user_id)
                && NOW <= c.expires_at.saturating_add(EXPIRY_LEEWAY_SECS)
                && c.channel == "room"
        });
    assert_ne!(result.as_ref().err(), Some(&TokenError::BadSignature));
    assert_eq!(result.is_ok(), expected_ok, "{result:?}");
    if let Ok(c) = result {
        let claims = TokenClaims::decode(rest).expect("verified claims decode");
        assert_eq!(c.user_id, claims.user_id);
        assert_eq!(c.expires_at, claims.expires_at);
        assert_eq!(c.can_publish, claims.rights & 1 != 0);
        assert_eq!(c.can_subscribe, claims.rights & 2 != 0);
    }
});
