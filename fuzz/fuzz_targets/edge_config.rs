//! edge-node's TOML config: parse, validate, and derive what the edge
//! derives at start (location, key layout, static routes, WAN rules, queues).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        config_fuzz::check_edge_config(text);
    }
});
