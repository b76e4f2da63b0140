//! Join tokens (TokenVerifier::verify), JWTs. The first byte picks the mode:
//! even: the rest, as text, is the token. 1 mod 4: the rest is the claims
//! JSON, which the target signs under the standard header with the app's
//! secret, so verification gets past the signature. 3 mod 4: the rest is
//! the header JSON, signed over valid claims. In the signed modes the result
//! must be exactly what the JSON says, by an oracle written from the spec in
//! docs/protocol.md §7 on serde_json's untyped values.
#![no_main]
use std::fmt;

use libfuzzer_sys::fuzz_target;
use protocol::limits::{MAX_NAME_LEN, MAX_TOKEN_LEN};
use protocol::token::{sign, TokenError, TokenVerifier, EXPIRY_LEEWAY_SECS, HEADER_JSON};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

const NOW: u64 = 1_800_000_000;
const SECRET: &[u8] = b"fuzz-secret-0123456789";
const CLAIMS: &str =
    r#"{"iss":"demo","sub":"alice","channel":"room","publish":true,"exp":1800000060}"#;

/// A JSON object's members in order, duplicates kept.
struct Members(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Members, A::Error> {
                let mut out = vec![];
                // Raw first: JSON allows numbers no f64 holds (1e400), which
                // the verifier skips in a claim it ignores but `Value`
                // refuses. Such a value stands as one no claim accepts.
                while let Some((k, raw)) = m.next_entry::<String, Box<RawValue>>()? {
                    let v = serde_json::from_str(raw.get()).unwrap_or(Value::Array(vec![]));
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// The object's members, or None if `json` is not one object; None too if
/// one of `known` appears twice.
fn object(json: &[u8], known: &[&str]) -> Option<Vec<(String, Value)>> {
    let Members(m) = serde_json::from_slice(json).ok()?;
    for k in known {
        if m.iter().filter(|(n, _)| n == k).count() > 1 {
            return None;
        }
    }
    Some(m)
}

fn get<'a>(m: &'a [(String, Value)], k: &str) -> Option<&'a Value> {
    m.iter().find(|(n, _)| n == k).map(|(_, v)| v)
}

/// Spec §7, step 1 for the header: `alg` "HS256"; `typ` absent or "JWT" in
/// any case; no `crit`.
fn header_ok(json: &[u8]) -> bool {
    let Some(m) = object(json, &["alg", "typ", "crit"]) else {
        return false;
    };
    get(&m, "alg").and_then(Value::as_str) == Some("HS256")
        && match get(&m, "typ") {
            None | Some(Value::Null) => true,
            Some(Value::String(t)) => t.eq_ignore_ascii_case("JWT"),
            Some(_) => false,
        }
        && matches!(get(&m, "crit"), None | Some(Value::Null))
}

/// What verifying these claims for channel "room" at NOW must give, if
/// they are well-formed: Ok((user, publish, subscribe, exp)) or not.
fn claims_ok(json: &[u8]) -> Option<(String, bool, bool, u64)> {
    let known = [
        "iss",
        "sub",
        "channel",
        "publish",
        "subscribe",
        "exp",
        "nbf",
        "iat",
    ];
    let m = object(json, &known)?;
    let string = |k| get(&m, k).and_then(Value::as_str);
    let flag = |k| match get(&m, k) {
        None => Some(false),
        Some(v) => v.as_bool(),
    };
    let optional_time = |k| match get(&m, k) {
        None | Some(Value::Null) => Some(None),
        Some(v) => v.as_u64().map(Some),
    };
    let name_ok = |s: &str| !s.is_empty() && s.len() <= MAX_NAME_LEN && !s.contains('\0');
    let (iss, sub, channel) = (string("iss")?, string("sub")?, string("channel")?);
    let (publish, subscribe) = (flag("publish")?, flag("subscribe")?);
    let exp = get(&m, "exp")?.as_u64()?;
    let nbf = optional_time("nbf")?;
    optional_time("iat")?;
    let ok = iss == "demo"
        && name_ok(sub)
        && name_ok(channel)
        && NOW <= exp.saturating_add(EXPIRY_LEEWAY_SECS)
        && nbf.is_none_or(|nbf| nbf <= NOW + EXPIRY_LEEWAY_SECS)
        && channel == "room";
    ok.then(|| (sub.to_string(), publish, subscribe, exp))
}

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
    let (header, claims) = if mode & 2 == 0 {
        (HEADER_JSON.as_bytes(), rest)
    } else {
        (rest, CLAIMS.as_bytes())
    };
    let token = sign(header, claims, SECRET);
    let result = v.verify(&token, "room", NOW);
    assert_ne!(result.as_ref().err(), Some(&TokenError::BadSignature));
    let expected = if token.len() <= MAX_TOKEN_LEN && header_ok(header) {
        claims_ok(claims)
    } else {
        None
    };
    assert_eq!(result.is_ok(), expected.is_some(), "{result:?}");
    if let (Ok(c), Some((user, publish, subscribe, exp))) = (result, expected) {
        assert_eq!(c.user_id, user);
        assert_eq!(c.expires_at, exp);
        assert_eq!(c.can_publish, publish);
        assert_eq!(c.can_subscribe, subscribe);
    }
});
