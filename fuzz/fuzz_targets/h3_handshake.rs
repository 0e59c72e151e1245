//! Any bytes as the HTTP/3 frames of a WebTransport handshake.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| server::fuzzing::http3_handshake(data));
