//! Join token verification on arbitrary text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::token::TokenVerifier;

fuzz_target!(|data: &[u8]| {
    let mut v = TokenVerifier::new();
    v.add_secret("demo", b"fuzz-secret-0123456789");
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = v.verify(s, "room", 1_800_000_000);
    }
});
