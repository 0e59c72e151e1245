//! The load generator's PeerJS adapter against the real PeerJS server (npm
//! package `peer`, pinned in `bench/peerjs`, installed by `scripts/test`),
//! started with node over TLS on our server's certificate, as `bench/run` does:
//! a few sessions in rooms of two must deliver every message.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use e2e::Server;

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");

/// The PeerJS server process; killed when dropped.
struct PeerJs {
    child: Child,
    port: u16,
}

impl PeerJs {
    fn start(cert_dir: &Path) -> PeerJs {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/peerjs");
        assert!(
            dir.join("node_modules/peer").exists(),
            "bench/peerjs/node_modules is missing: run `npm ci` in bench/peerjs (scripts/test does)"
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .arg("0")
            .arg(cert_dir.join("key.pem"))
            .arg(cert_dir.join("cert.pem"))
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node bench/peerjs/server.mjs");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the port line");
        let port = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else {
            let _ = child.kill();
            panic!("PeerJS did not say its port: {line:?}");
        };
        PeerJs { child, port }
    }
}

impl Drop for PeerJs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn loadgen_relays_every_message_through_the_peerjs_server() {
    // Our server only lends its certificate: PeerJS serves the same one.
    let server = Server::start(BIN, &[]);
    let peerjs = PeerJs::start(&server.cert_dir());
    let mut cmd = Command::new(e2e::loadgen_binary(BIN));
    cmd.args(["--transport", "peerjs"])
        .args(["--url-peerjs", &format!("wss://127.0.0.1:{}/peerjs", peerjs.port)])
        .args(["--sessions", "8", "--room-size", "2", "--duration", "2", "--rate", "10"])
        .args(["--connect-timeout", "30", "--json"])
        .args(["--server-pid", &peerjs.child.id().to_string()])
        .env_remove("SIGNAL_JWT_SECRET");
    let (report, context) = e2e::run_loadgen(cmd, &server);

    assert_eq!(report["transport"], "peerjs", "{context}");
    assert_eq!(report["sessions"]["connected"], 8, "{context}");
    assert_eq!(report["errors_total"], 0, "{context}");
    // 4 rooms of 2: each pair exchanges an offer, an answer and 2 x 8 candidates
    // (18 messages), then sends steadily.
    let sent = report["totals"]["sent"].as_u64().expect("sent");
    let received = report["totals"]["received"].as_u64().expect("received");
    assert!(sent >= 4 * 18, "{context}");
    assert_eq!(received, sent, "messages were lost; {context}");
    assert!(
        report["steady"]["messages"].as_u64().expect("steady messages") > 0,
        "{context}"
    );
    assert!(report["latency_ms"]["p99"].is_number(), "{context}");
    assert!(
        report["server_rss_kib"]["peak"].as_u64().expect("PeerJS RSS") > 0,
        "{context}"
    );
}
