//! Client bytes through the server's WebSocket frame reader, cut two ways.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| server::fuzzing::websocket_frames(data));
