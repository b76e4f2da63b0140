//! Stream framing + ClientFrame/ServerFrame decoding, fed in arbitrary chunks.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::framing::FrameBuffer;
use protocol::pb::{ClientFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    let split = data.first().copied().unwrap_or(1).max(1) as usize;
    let mut a = FrameBuffer::new();
    let mut b = FrameBuffer::new();
    for chunk in data.chunks(split) {
        a.extend(chunk);
        b.extend(chunk);
        while let Ok(Some(_)) = a.next_frame::<ClientFrame>() {}
        while let Ok(Some(_)) = b.next_frame::<ServerFrame>() {}
    }
});
