//! The fuzz corpus replayed on stable: every file under `fuzz/corpus/frame_json`
//! and `fuzz/corpus/frame_bincode` goes through `proto::fuzzing::client_frames`,
//! the fuzz targets' own body, so `cargo test` keeps every past finding fixed
//! without cargo-fuzz or nightly.
//!
//! The seeds of the corpus (`seed-*`) are written by the ignored test
//! `write_seeds` below, from the messages in `seed_messages`:
//!
//! ```text
//! cargo test -p proto --test fuzz_corpus -- --ignored write_seeds
//! ```
//!
//! A `seed-*.frame` file is a WebTransport stream of frames, a `seed-*.ws` file
//! one WebSocket frame; both must decode, so a seed that stops being a valid
//! message fails here. Every other file only has to go through without a
//! panic: an `edge-*` case written with the seeds, a `finding-*` written by hand
//! to keep a decoder behaviour the fuzzer found (it accepts them, and they
//! round-trip), or an input the fuzzer kept (named by its SHA-1) for the code it
//! reaches.

use std::fs;
use std::path::{Path, PathBuf};

use proto::codec::{self, Encoding};
use proto::frame::{FrameError, encode_frame, write_frame};
use proto::fuzzing::{DEFAULT_MAX_FRAME, client_frames, read_frame_now};
use proto::{ChannelId, ClientMessage, PeerId, Signal, Token};

const TARGETS: [(&str, Encoding); 2] = [("frame_json", Encoding::Json), ("frame_bincode", Encoding::Bincode)];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// The files of a target's corpus, sorted; fails if there are none.
fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = corpus_dir(target);
    let entries = fs::read_dir(&dir).unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
}

#[test]
fn every_corpus_file_goes_through_the_fuzz_body() {
    for (target, encoding) in TARGETS {
        for path in corpus_files(target) {
            let data = fs::read(&path).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| client_frames(encoding, &data));
            assert!(outcome.is_ok(), "{} panicked", path.display());
        }
    }
}

#[test]
fn every_seed_is_a_valid_message() {
    for (target, encoding) in TARGETS {
        let seeds: Vec<PathBuf> = corpus_files(target)
            .into_iter()
            .filter(|path| file_name(path).starts_with("seed-"))
            .collect();
        // Both forms of every seed message, and the streams of several frames.
        assert!(
            seeds.len() >= 2 * seed_messages().len(),
            "{target}: too few seeds ({}): run write_seeds",
            seeds.len()
        );
        for path in seeds {
            let data = fs::read(&path).expect("seed file");
            let name = file_name(&path);
            if name.ends_with(".ws") {
                let decoded = codec::decode_enveloped::<ClientMessage>(encoding, &data);
                assert!(decoded.is_ok(), "{name}: {decoded:?}");
            } else {
                assert!(name.ends_with(".frame"), "{name}: a seed is a .frame or a .ws");
                assert!(decoded_frames(encoding, &data) > 0, "{name}: no message decoded");
            }
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().expect("file name").to_string_lossy().into_owned()
}

/// Decodes every frame of a stream that fits the default limit; panics on one
/// that does not decode. Oversized frames are skipped as the server does.
fn decoded_frames(encoding: Encoding, mut stream: &[u8]) -> usize {
    let mut buf = Vec::new();
    let mut count = 0;
    loop {
        match read_frame_now(&mut stream, &mut buf, DEFAULT_MAX_FRAME) {
            Ok(true) => {
                codec::decode::<ClientMessage>(encoding, &buf).expect("a seed frame decodes");
                count += 1;
            }
            Ok(false) => return count,
            Err(FrameError::TooLarge { .. }) => {}
            Err(e) => panic!("a seed stream is whole: {e}"),
        }
    }
}

/// One example of every client message and signal kind, with and without the
/// optional fields, and the channel a WebSocket client would send it on.
fn seed_messages() -> Vec<(&'static str, ChannelId, ClientMessage)> {
    let peer = PeerId(0x0123_4567_89ab_cdef);
    let signal = |id: Option<u32>, signal| ClientMessage::Signal {
        id,
        seq: id.map(u64::from),
        to: peer,
        signal,
    };
    vec![
        (
            "hello",
            0,
            ClientMessage::Hello {
                id: None,
                version: 1,
                token: None,
                resume: None,
            },
        ),
        (
            "hello-token",
            0,
            ClientMessage::Hello {
                id: Some(1),
                version: 1,
                token: Some(Token("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln".to_owned())),
                resume: None,
            },
        ),
        (
            "join",
            1,
            ClientMessage::Join {
                id: Some(2),
                room: "lobby".to_owned(),
                resume_after: None,
            },
        ),
        (
            "join-no-id",
            7,
            ClientMessage::Join {
                id: None,
                room: "team:42@eu-1".to_owned(),
                resume_after: None,
            },
        ),
        ("leave", 1, ClientMessage::Leave { id: Some(3) }),
        ("leave-no-id", 300, ClientMessage::Leave { id: None }),
        (
            "signal-offer",
            1,
            signal(
                Some(4),
                Signal::Offer {
                    sdp: "v=0\r\no=- 46117317 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n".to_owned(),
                },
            ),
        ),
        (
            "signal-answer",
            1,
            signal(
                None,
                Signal::Answer {
                    sdp: "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n".to_owned(),
                },
            ),
        ),
        (
            "signal-candidate",
            1,
            signal(
                Some(5),
                Signal::Candidate {
                    candidate: "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host".to_owned(),
                    sdp_mid: Some("0".to_owned()),
                    sdp_m_line_index: Some(0),
                    username_fragment: Some("abcd".to_owned()),
                },
            ),
        ),
        (
            "signal-end-of-candidates",
            1,
            signal(
                None,
                Signal::Candidate {
                    candidate: String::new(),
                    sdp_mid: None,
                    sdp_m_line_index: None,
                    username_fragment: None,
                },
            ),
        ),
        (
            "signal-custom",
            2,
            signal(
                Some(u32::MAX),
                Signal::Custom {
                    data: "{\"muted\":true} \u{e9}\u{1f600}".to_owned(),
                },
            ),
        ),
        (
            "broadcast",
            1,
            ClientMessage::Broadcast {
                id: Some(6),
                seq: Some(6),
                data: "hello, room".to_owned(),
            },
        ),
        (
            "refresh",
            0,
            ClientMessage::Refresh {
                id: Some(8),
                token: Token("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln".to_owned()),
            },
        ),
        ("ping", 0, ClientMessage::Ping { id: Some(7), nonce: 42 }),
        ("ice-servers", 0, ClientMessage::IceServers { id: Some(9) }),
        (
            "ping-no-id",
            3,
            ClientMessage::Ping {
                id: None,
                nonce: u32::MAX,
            },
        ),
    ]
}

/// Writes the seeds of both corpora (replacing those of the same name).
#[test]
#[ignore = "writes fuzz/corpus; run by hand after changing seed_messages"]
fn write_seeds() {
    for (target, encoding) in TARGETS {
        let dir = corpus_dir(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        let write = |name: String, bytes: &[u8]| fs::write(dir.join(name), bytes).expect("seed file");
        let mut session = Vec::new();
        for (name, channel, msg) in seed_messages() {
            let frame = encode_frame(encoding, &msg);
            session.extend_from_slice(&frame);
            write(format!("seed-{name}.frame"), &frame);
            write(
                format!("seed-{name}.ws"),
                &codec::encode_enveloped(encoding, channel, &msg),
            );
        }
        // A whole session on one stream.
        write("seed-session.frame".to_owned(), &session);
        // A frame longer than the limit, cut short: skipped, then the stream
        // ends inside it. (A whole one is 64 KiB, too big for a corpus file;
        // the reader's own tests cover reading on after a skipped frame.)
        let mut oversized = Vec::new();
        write_frame(&mut oversized, &[b'x'; 16]);
        let claimed = u32::try_from(DEFAULT_MAX_FRAME + 1).expect("a small number");
        oversized[..4].copy_from_slice(&claimed.to_be_bytes());
        write("edge-oversized-truncated.frame".to_owned(), &oversized);
    }
}
