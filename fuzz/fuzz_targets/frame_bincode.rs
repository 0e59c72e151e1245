//! Client bytes in bincode through the server's WebTransport and WebSocket decoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::Encoding;

fuzz_target!(|data: &[u8]| proto::fuzzing::client_frames(Encoding::Bincode, data));
