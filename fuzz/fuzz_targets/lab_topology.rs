//! The lab's topology file: parse, build the World, and use it as the lab
//! does (WAN rules, true RTTs, optimal paths, GeoIP entries).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        config_fuzz::check_lab_topology(text);
    }
});
