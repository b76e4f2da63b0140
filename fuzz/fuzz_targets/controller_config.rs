//! region-controller's TOML config: parse, validate, and derive what the
//! controller derives at start (key layout, proxies, client address header).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        config_fuzz::check_controller_config(text);
    }
});
