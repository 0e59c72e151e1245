//! The corpus of the server's fuzz targets (`fuzz/corpus/ws_frames`,
//! `ws_upgrade`, `h3_handshake`) replayed on stable through the targets' own
//! bodies (`server::fuzzing`): every past finding stays fixed without
//! cargo-fuzz or nightly.

use std::fs;
use std::path::Path;

/// A fuzz target's body.
type Body = fn(&[u8]);

const TARGETS: [(&str, Body); 3] = [
    ("ws_frames", server::fuzzing::websocket_frames),
    ("ws_upgrade", server::fuzzing::websocket_upgrade),
    ("h3_handshake", server::fuzzing::http3_handshake),
];

#[test]
fn every_input_of_the_corpus_goes_through_the_server_parsers() {
    for (target, body) in TARGETS {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
            .map(|entry| entry.expect("a corpus entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "corpus {} is empty", dir.display());
        for file in files {
            let data = fs::read(&file).expect("a corpus file");
            body(&data);
        }
    }
}

#[test]
fn the_frame_reader_gives_the_same_messages_however_a_stream_is_cut() {
    // Every cut of streams that hold every kind of frame.
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ws_frames");
    for name in ["seed-text", "seed-fragments-ping", "seed-oversized", "seed-close"] {
        let mut data = fs::read(seeds.join(name)).expect("a seed");
        for step in 0..64u8 {
            data[0] = step;
            server::fuzzing::websocket_frames(&data);
        }
    }
}
