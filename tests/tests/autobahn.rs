//! The Autobahn TestSuite's cases against the server's own WebSocket layer
//! (`src/bin/autobahn-echo.rs`), driven by `kosoku` (Autobahn's cases in
//! Python 3; `scripts/test` installs it). This is the fast part: framing,
//! pings and pongs, reserved bits and opcodes, fragmentation, UTF-8 and the
//! close handshake (sections 1 to 7); `bench/autobahn` runs the whole suite,
//! the large messages of 9 included, and docs/websocket.md has its results.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// Cases whose result is not OK, each with the reason it is accepted.
const ACCEPTED: &[(&str, &str, &str)] = &[
    // Invalid UTF-8 in a fragmented text message is refused (1007) when the
    // message is complete, not at the fragment that broke it: "fail fast" is
    // optional in RFC 6455 (§8.1 "MAY"), and the messages are at most 1 MiB.
    ("6.4.1", "NON-STRICT", "UTF-8 checked when the message is whole"),
    ("6.4.2", "NON-STRICT", "UTF-8 checked when the message is whole"),
    ("6.4.3", "NON-STRICT", "UTF-8 checked when the message is whole"),
    ("6.4.4", "NON-STRICT", "UTF-8 checked when the message is whole"),
    // Informational only: what the server does after the close, and the close
    // codes it answers with.
    ("7.1.6", "INFORMATIONAL", "informational"),
    ("7.13.1", "INFORMATIONAL", "informational"),
    ("7.13.2", "INFORMATIONAL", "informational"),
];

#[test]
fn the_websocket_layer_passes_autobahn_sections_1_to_7() {
    let mut echo = Command::new(env!("CARGO_BIN_EXE_autobahn-echo"))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the echo server starts");
    let mut line = String::new();
    BufReader::new(echo.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its address");
    let addr = line.trim().trim_start_matches("listening on ws://").to_owned();
    let out = std::env::temp_dir().join(format!("signal-autobahn-{}", std::process::id()));
    // Through python3, so that a fresh `pip install` is found without a new
    // shell (pyenv's shims, a user's ~/.local/bin).
    let mut kosoku = Command::new("python3");
    kosoku.args([
        "-c",
        "import sys; from kosoku._cli import main; sys.argv[0] = 'kosoku'; sys.exit(main())",
    ]);
    for case in ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*"] {
        kosoku.args(["-i", case]);
    }
    let status = kosoku
        .args(["-p", "2", "-o"])
        .arg(&out)
        .arg(&addr)
        .stdout(Stdio::null())
        .status()
        .expect("kosoku runs (scripts/test installs it: pip install kosoku)");
    let _ = echo.kill();
    let _ = echo.wait();
    assert!(status.success(), "kosoku failed: {status}");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("kosoku's index.json")).expect("JSON");
    let _ = std::fs::remove_dir_all(&out);
    let cases = index
        .as_object()
        .and_then(|agents| agents.values().next())
        .and_then(|cases| cases.as_object())
        .expect("the cases of one agent");
    assert!(cases.len() > 200, "only {} cases ran", cases.len());
    let mut wrong = Vec::new();
    for (case, result) in cases {
        let behavior = result["behavior"].as_str().unwrap_or("?");
        let close = result["behaviorClose"].as_str().unwrap_or("?");
        let accepted = ACCEPTED.iter().any(|(c, b, _)| c == case && *b == behavior);
        if !(behavior == "OK" || accepted) || !matches!(close, "OK" | "INFORMATIONAL") {
            wrong.push(format!("{case}: {behavior} (close {close})"));
        }
    }
    assert!(wrong.is_empty(), "Autobahn cases not passed: {wrong:?}");
}
