//! WAN emulation link rules, as the admin `PUT /netem` body (JSON) and as
//! the config's `[netem]` section (TOML): parse, install in a Wan, look up.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        config_fuzz::check_netem_rules(text);
    }
});
