//! The load generator (`proto`'s `loadgen` binary) against the real server:
//! a small mixed WebTransport and WSS run that must lose nothing.

use std::process::Command;

use e2e::Server;

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");

#[test]
fn twenty_sessions_in_rooms_of_four_over_both_transports_lose_nothing() {
    let server = Server::start(BIN, &[]);
    let mut cmd = Command::new(e2e::loadgen_binary(BIN));
    cmd.args(["--url-webtransport", &format!("https://{}/", server.webtransport)])
        .args(["--url-wss", &format!("wss://{}/ws", server.https)])
        .args(["--sessions", "20", "--room-size", "4", "--duration", "3", "--rate", "5"])
        // The whole test suite may be running on the same two cores.
        .args(["--connect-timeout", "30"])
        .args([
            "--transport",
            "mix",
            "--json",
            "--server-pid",
            &server.pid().to_string(),
        ])
        .env("SIGNAL_JWT_SECRET", server.secret());
    let (report, context) = e2e::run_loadgen(cmd, &server);

    assert_eq!(report["sessions"]["connected"], 20, "{context}");
    assert_eq!(report["errors_total"], 0, "{context}");
    let sent = report["totals"]["sent"].as_u64().expect("sent");
    let received = report["totals"]["received"].as_u64().expect("received");
    assert!(received > 0, "{context}");
    assert_eq!(received, sent, "messages were lost; {context}");
    assert!(
        report["steady"]["messages"].as_u64().expect("steady messages") > 0,
        "{context}"
    );

    let latency = &report["latency_ms"];
    for p in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(latency[p].is_number(), "latency {p} missing; {context}");
    }
    assert!(latency["p50"].as_f64().expect("p50") < 1000.0, "{context}");
    assert_eq!(report["connect_ms"]["count"], 20, "{context}");
    let rss = &report["server_rss_kib"];
    assert!(
        rss["peak"].as_u64().expect("peak RSS") >= rss["start"].as_u64().expect("start RSS"),
        "{context}"
    );
}
