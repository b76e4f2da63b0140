//! Relay stream frames.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::framing::FrameBuffer;
use protocol::pb::RelayFrame;

fuzz_target!(|data: &[u8]| {
    let mut fb = FrameBuffer::new();
    fb.extend(data);
    while let Ok(Some(_)) = fb.next_frame::<RelayFrame>() {}
});
