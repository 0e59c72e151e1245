//! Any bytes as a WebSocket upgrade request's headers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| server::fuzzing::websocket_upgrade(data));
