//! The lab's chaos plan: parse and validate, then schedule and apply it the
//! way the lab does (timers, rolling restarts, link changes on a World).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        config_fuzz::check_chaos_plan(text);
    }
});
