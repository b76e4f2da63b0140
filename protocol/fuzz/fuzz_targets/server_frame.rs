//! Client control stream (edge -> client): ServerFrame frames fed to a
//! FrameBuffer in arbitrary chunks. First byte: chunking seed; rest: stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::pb::ServerFrame;

fuzz_target!(|data: &[u8]| {
    protocol_fuzz::check_stream::<ServerFrame>(data);
});
