//! Client control stream (client -> edge): ClientFrame frames fed to a
//! FrameBuffer in arbitrary chunks. First byte: chunking seed; rest: stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::pb::ClientFrame;

fuzz_target!(|data: &[u8]| {
    protocol_fuzz::check_stream::<ClientFrame>(data);
});
