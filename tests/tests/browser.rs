//! Real-browser tests: headless Chromium (Debian's `/usr/bin/chromium`, driven
//! by playwright-core from `tests/browser/`) loads the real web client
//! (`web-client/signaling.js`) and the demo page, against the real server.
//!
//! Each test starts the server, then runs `node tests/browser/run.mjs
//! <scenario> <config>`, which serves `web-client/` and the test pages of
//! `tests/browser/fixtures/` on `http://localhost:<port>` (a secure context),
//! drives the browser and prints the outcome as one JSON line. Two test pages
//! meet in a room and open a WebRTC data channel through the signaling: over
//! WebTransport, over WSS, across the two, and after falling back from a
//! WebTransport port that does not answer. A bad token must be refused with
//! `auth_failed`, quickly, and the demo page must show it; and the demo page
//! in two tabs must see the other tab, and is screenshotted.
//!
//! The server allows pages of `http://localhost:<fixture port>` (its
//! `allowed_origins`) and no other page origin but its own: the test picks the
//! port the runner serves on before starting the server. The same pages opened
//! as `http://127.0.0.1:<fixture port>` are refused on both transports. A page
//! whose short-lived token the server announces as expiring refreshes it
//! in-band through `options.refreshToken` and signals on after its first
//! token's expiry, on the same session. A page in a call whose WebTransport
//! connection (through a UDP proxy of the runner) is cut resumes its session
//! over WSS: same peer, nothing missed or doubled, and the call goes on; after
//! a server restart the resume is refused and a new session opens. Two pages
//! whose peer connections may use TURN relays only (`iceTransportPolicy:
//! "relay"`) open their data channel through a real coturn, with the
//! credentials the server minted for their sessions.
//!
//! `scripts/test` installs what these tests need (the `chromium` package and
//! `npm ci` in `tests/browser`); without them the tests fail, saying so.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use e2e::Server;
use serde_json::{Value, json};
use server::session::auth::{TokenClaims, now_secs};

const BIN: &str = env!("CARGO_BIN_EXE_signal-server");
const CHROMIUM: &str = "/usr/bin/chromium";
/// The runner gives a scenario 20 s (refresh 30 s); this also covers starting node and Chromium.
const RUNNER_TIMEOUT: Duration = Duration::from_secs(45);

/// One browser at a time: the machine has two cores, and WebRTC timing with
/// several Chromiums competing for them is not what these tests are about.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds tests/")
        .to_path_buf()
}

fn browser_dir() -> PathBuf {
    workspace().join("tests").join("browser")
}

/// Fails, saying what to install, when the browser, node or playwright-core is missing.
fn check_prerequisites() {
    let install = "scripts/test installs what the browser tests need (the Debian package chromium, and \
                   `npm ci` in tests/browser; node 20 or later must be on the PATH)";
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: {install}");
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node is missing ({node:?}): {install}"
    );
    let playwright = browser_dir().join("node_modules/playwright-core/package.json");
    assert!(playwright.exists(), "{} is missing: {install}", playwright.display());
}

/// The server under test, and the port the runner serves the test pages on:
/// the server allows their origin, `http://localhost:<fixture_port>`.
struct Setup {
    server: Server,
    fixture_port: u16,
}

impl Setup {
    /// Picks a free port for the test pages, then starts the server with
    /// these flags, allowing the pages' origin.
    fn start(flags: &[(&str, &str)]) -> Setup {
        // Bound, read and freed: the runner listens on it a moment later.
        let fixture_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free TCP port")
            .port();
        let origin = fixture_origin(fixture_port);
        let mut all = vec![("allowed-origins", origin.as_str())];
        all.extend_from_slice(flags);
        Setup {
            server: Server::start(BIN, &all),
            fixture_port,
        }
    }

    /// Runs one scenario of `tests/browser/run.mjs` and returns its JSON outcome;
    /// panics (with the browser's diagnostics) when it failed or took too long.
    fn run(&self, scenario: &str, extra: Value) -> Value {
        self.run_with(scenario, || extra)
    }

    /// Like [`Setup::run`], with extra config made once this test's turn at the
    /// browser has come (tokens whose lifetime must not run out while waiting).
    fn run_with(&self, scenario: &str, extra: impl FnOnce() -> Value) -> Value {
        run(scenario, &self.server, self.fixture_port, extra)
    }
}

/// The origin of the test pages the server allows.
fn fixture_origin(port: u16) -> String {
    format!("http://localhost:{port}")
}

/// Runs `scenario` against `server`, the runner serving on `fixture_port`; see [`Setup::run`].
fn run(scenario: &str, server: &Server, fixture_port: u16, extra: impl FnOnce() -> Value) -> Value {
    check_prerequisites();
    let _one = ONE_BROWSER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let hashes: Vec<String> = server
        .hashes
        .iter()
        .map(|h| h.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let mut config = json!({
        "server": format!("https://localhost:{}", server.https.port()),
        "webTransportPort": server.webtransport.port(),
        "hashes": hashes,
        "tokens": {"alice": server.token("alice"), "bob": server.token("bob")},
        "fixturePort": fixture_port,
    });
    for (key, value) in extra().as_object().expect("extra config is an object") {
        config[key] = value.clone();
    }
    let started = Instant::now();
    let mut child = Command::new("node")
        .arg(browser_dir().join("run.mjs"))
        .arg(scenario)
        .arg(config.to_string())
        .current_dir(workspace())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > RUNNER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("{scenario}: the runner did not finish within {RUNNER_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    };
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    let outcome: Value = serde_json::from_str(line).unwrap_or_else(|e| {
        panic!("{scenario}: the runner ({status}) printed no JSON line ({e})\nstdout:\n{stdout}\nstderr:\n{stderr}")
    });
    if !status.success() || outcome["ok"] != true {
        panic!(
            "{scenario} failed ({status}):\n{}\n--- browser ---\n{stderr}",
            serde_json::to_string_pretty(&outcome).unwrap_or_default()
        );
    }
    eprintln!("{scenario}: {outcome}\n--- browser ---\n{stderr}");
    outcome
}

/// Both pages of a call got the other's message, over the transports expected.
fn assert_call(outcome: &Value, alice_transport: &str, bob_transport: &str) {
    let alice = &outcome["pages"]["alice"];
    let bob = &outcome["pages"]["bob"];
    assert_eq!(alice["received"], "hello from bob", "alice's data channel: {outcome}");
    assert_eq!(bob["received"], "hello from alice", "bob's data channel: {outcome}");
    assert_eq!(alice["transport"], alice_transport, "alice's transport: {outcome}");
    assert_eq!(bob["transport"], bob_transport, "bob's transport: {outcome}");
    assert_ne!(alice["peerId"], bob["peerId"], "two sessions: {outcome}");
}

#[test]
fn two_pages_call_each_other_over_webtransport() {
    let setup = Setup::start(&[]);
    let outcome = setup.run("webtransport", json!({}));
    assert_call(&outcome, "webtransport", "webtransport");
}

#[test]
fn two_pages_call_each_other_over_wss() {
    let setup = Setup::start(&[]);
    let outcome = setup.run("websocket", json!({}));
    assert_call(&outcome, "websocket", "websocket");
}

#[test]
fn a_webtransport_page_calls_a_wss_page() {
    let setup = Setup::start(&[]);
    let outcome = setup.run("mixed", json!({}));
    assert_call(&outcome, "webtransport", "websocket");
}

#[test]
fn two_pages_call_each_other_through_coturn_with_the_credentials_the_server_minted() {
    let coturn = e2e::coturn::Coturn::start("browser-turn-secret");
    let urls = coturn.urls().join(",");
    let setup = Setup::start(&[("turn-urls", &urls), ("turn-secret", &coturn.secret)]);
    let outcome = setup.run("relay", json!({}));
    assert_call(&outcome, "webtransport", "websocket");
    for page in ["alice", "bob"] {
        let page = &outcome["pages"][page];
        assert_eq!(page["iceServers"], 1, "{outcome}");
        // iceTransportPolicy "relay": the data channel ran through coturn.
        assert_eq!(page["pair"]["local"], "relay", "{outcome}");
        assert_eq!(page["pair"]["remote"], "relay", "{outcome}");
        // refreshIceServers(): fresh credentials, announced with "iceservers".
        let refreshed = &page["refreshedIce"];
        assert!(refreshed["after"].as_u64() > refreshed["before"].as_u64(), "{outcome}");
        assert_eq!(refreshed["announced"], refreshed["after"], "{outcome}");
        assert_eq!(refreshed["count"], 1, "{outcome}");
    }
}

#[test]
fn auto_falls_back_to_wss_when_webtransport_does_not_answer_and_the_call_works() {
    let setup = Setup::start(&[]);
    // A UDP port that nobody listens on (bound, then freed).
    let dead_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port();
    let outcome = setup.run("fallback", json!({ "deadUdpPort": dead_port }));
    // alice's WebTransport URL is dead: she falls back; bob's "auto" takes WebTransport.
    assert_call(&outcome, "websocket", "webtransport");
}

#[test]
fn a_bad_token_is_refused_with_auth_failed_quickly_and_the_demo_page_shows_it() {
    let setup = Setup::start(&[]);
    let outcome = setup.run("bad-token", json!({}));
    for transport in ["webtransport", "websocket", "auto"] {
        let page = &outcome["connect"][transport];
        assert_eq!(page["ok"], false, "{transport}: connect must reject: {outcome}");
        assert_eq!(page["code"], "auth_failed", "{transport}: {outcome}");
        let ms = page["connectMs"].as_u64().unwrap_or(u64::MAX);
        assert!(ms < 5000, "{transport}: connect took {ms} ms to reject: {outcome}");
    }
    let demo = &outcome["demo"];
    assert_eq!(demo["state"], "error", "the demo page's state: {outcome}");
    assert_eq!(demo["errorCode"], "auth_failed", "the demo page's error: {outcome}");
    assert_eq!(demo["errorVisible"], true, "the demo page shows its error: {outcome}");
}

#[test]
fn the_demo_page_in_two_tabs_shows_the_other_peer_and_is_screenshotted() {
    let setup = Setup::start(&[]);
    let screenshot = workspace().join("target").join("browser").join("demo.png");
    let _ = std::fs::remove_file(&screenshot);
    let outcome = setup.run("demo-screenshot", json!({ "screenshot": screenshot.to_string_lossy() }));
    for (page, other) in [("alice", "bob"), ("bob", "alice")] {
        assert_eq!(outcome[page]["state"], "connected", "{page}: {outcome}");
        assert_eq!(outcome[page]["transport"], "websocket", "{page}: {outcome}");
        let peers = outcome[page]["peers"].as_array().expect("peers");
        assert!(
            peers
                .iter()
                .any(|p| p["text"].as_str().unwrap_or_default().contains(other)),
            "{page}'s peer list shows {other}: {outcome}"
        );
    }
    let png = std::fs::read(&screenshot).unwrap_or_else(|e| panic!("{}: {e}", screenshot.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is a PNG",
        screenshot.display()
    );
    eprintln!("screenshot: {} ({} bytes)", screenshot.display(), png.len());
}

/// Waits until the server holds `n` sessions (its `/ready` says how many).
fn wait_for_sessions(server: &Server, n: u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ready = runtime.block_on(server.get("/ready"));
        if ready.status == 200 && ready.json()["sessions"].as_u64().unwrap_or(0) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the page never opened a session");
}

/// A page joins a room; the server is killed (no goodbye) and started again on
/// the same ports: the client reconnects with backoff and rejoins its room.
fn a_page_reconnects_and_rejoins(transport: &str) {
    // A short idle timeout makes the client ping every second, so it notices
    // the dead server at once even on QUIC, which would wait for its idle timeout.
    let setup = Setup::start(&[("idle-timeout-ms", "3000")]);
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| setup.run("reconnect", json!({ "transport": transport })));
        wait_for_sessions(&setup.server, 1);
        // The page joins right after its welcome.
        std::thread::sleep(Duration::from_secs(1));
        setup.server.restart();
        let outcome = runner.join().expect("the runner thread");
        let page = &outcome["page"];
        assert_eq!(page["rooms"], json!(["reconnect-room"]), "{outcome}");
        assert_eq!(
            page["stillMember"], true,
            "the same Room object was rejoined: {outcome}"
        );
        assert_eq!(page["transport"], transport, "{outcome}");
        assert!(
            page["attempts"].as_u64().unwrap_or(0) >= 1,
            "it said it was reconnecting: {outcome}"
        );
        // The client asked for its session back; the restarted server no
        // longer had it, and a plain hello on the same connection opened a new one.
        assert_eq!(page["resumed"], false, "{outcome}");
        assert!(
            matches!(page["resumeError"].as_str(), Some("resume_expired" | "resume_invalid")),
            "{outcome}"
        );
        assert_eq!(page["restartedRooms"], json!(["reconnect-room"]), "{outcome}");
    });
}

#[test]
fn a_wss_page_reconnects_and_rejoins_after_the_server_restarts() {
    a_page_reconnects_and_rejoins("websocket");
}

#[test]
fn a_webtransport_page_reconnects_and_rejoins_after_the_server_restarts() {
    a_page_reconnects_and_rejoins("webtransport");
}

/// The server's JSON log lines whose message is `message`.
fn log_lines(server: &Server, message: &str) -> Vec<Value> {
    server
        .log()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

#[test]
fn pages_of_an_origin_the_server_does_not_allow_are_refused_on_both_transports() {
    let setup = Setup::start(&[]);
    let outcome = setup.run("foreign-origin", json!({}));
    let foreign = format!("http://127.0.0.1:{}", setup.fixture_port);
    for transport in ["webtransport", "websocket", "auto"] {
        let page = &outcome["refused"][transport];
        assert_eq!(page["origin"], foreign.as_str(), "{transport}: {outcome}");
        assert_eq!(page["ok"], false, "{transport}: connect must reject: {outcome}");
        // A browser cannot see the 403: the client's transport failure, with a hint.
        assert_eq!(page["code"], "connection_failed", "{transport}: {outcome}");
        let message = page["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("check the server's allowed_origins"),
            "{transport}: the message names the likely cause: {outcome}"
        );
        let ms = page["connectMs"].as_u64().unwrap_or(u64::MAX);
        assert!(ms < 5000, "{transport}: connect took {ms} ms to reject: {outcome}");
    }
    let allowed = &outcome["allowed"];
    assert_eq!(allowed["ok"], true, "the allowed origin connects: {outcome}");
    assert_eq!(
        allowed["origin"],
        fixture_origin(setup.fixture_port).as_str(),
        "{outcome}"
    );

    // The server refused each of them for their origin: webtransport, websocket,
    // and auto's two attempts (WebTransport, then WSS).
    let refusals: Vec<Value> = log_lines(&setup.server, "connection refused")
        .into_iter()
        .filter(|line| line["code"] == "origin_not_allowed")
        .collect();
    assert!(
        refusals.len() >= 4,
        "four origin_not_allowed refusals in the server's log, not {}: {refusals:?}\n{outcome}",
        refusals.len()
    );
    assert!(
        log_lines(&setup.server, "authenticated").len() == 1,
        "only the allowed page got a session: {}",
        setup.server.log()
    );
}

/// A token for `user` that expires `secs` from now.
fn token_for(server: &Server, user: &str, secs: u64) -> (String, u64) {
    let exp = now_secs() + secs;
    (server.token_with(TokenClaims::new(user, exp)), exp)
}

#[test]
fn a_page_refreshes_its_token_in_band_and_signals_on_after_the_first_one_expired() {
    // Every session is told token_expiring right after welcome (its token has
    // less than an hour left), and no leeway extends the first token's life.
    let setup = Setup::start(&[("token-refresh-notice-secs", "3600"), ("jwt-leeway-secs", "0")]);
    let mut first_exp = 0;
    let mut fresh_exp = 0;
    let outcome = setup.run_with("refresh", || {
        // Minted now that the browser is ours: the first token lives 15 s, time
        // enough for node, Chromium and two pages to start on a busy machine.
        let (short, exp) = token_for(&setup.server, "alice", 15);
        // The fresh one outlives the notice, so it is not announced as expiring at once.
        let (fresh, fresh_at) = token_for(&setup.server, "alice", 7200);
        first_exp = exp;
        fresh_exp = fresh_at;
        json!({
            "transport": "webtransport",
            "tokens": {"alice": short, "bob": setup.server.token("bob")},
            "refreshToken": fresh,
            // bob, without a hook, tries client.refresh() with a token of alice's.
            "wrongUserToken": setup.server.token("alice"),
            // A second past the first token's expiry (whole seconds).
            "signalAfter": (exp + 1) * 1000,
        })
    });
    let alice = &outcome["alice"];
    let bob = &outcome["bob"];
    assert_eq!(alice["transport"], "webtransport", "{outcome}");
    assert_eq!(alice["hookCalls"], 1, "the hook was asked once: {outcome}");
    let expiring = alice["tokenexpiring"].as_array().expect("tokenexpiring");
    assert_eq!(expiring.len(), 1, "{outcome}");
    assert_eq!(expiring[0]["refreshing"], true, "{outcome}");
    assert!(
        expiring[0]["expiresInMs"].as_u64().is_some_and(|ms| ms <= 15_000),
        "{outcome}"
    );
    let refreshed = alice["tokenrefreshed"].as_array().expect("tokenrefreshed");
    assert_eq!(refreshed.len(), 1, "{outcome}");
    assert_eq!(refreshed[0]["expiresAt"], fresh_exp * 1000, "{outcome}");
    // The same session, never interrupted, signalled after the first token's expiry.
    assert_eq!(alice["sameSession"], true, "{outcome}");
    assert_eq!(alice["stillMember"], true, "{outcome}");
    assert_eq!(alice["reconnecting"], 0, "{outcome}");
    assert_eq!(alice["goodbye"], json!([]), "{outcome}");
    assert_eq!(alice["error"], json!([]), "{outcome}");
    assert_eq!(alice["closed"], Value::Null, "{outcome}");
    let signals = bob["signals"].as_array().expect("signals");
    let data: Vec<&str> = signals.iter().filter_map(|s| s["data"].as_str()).collect();
    assert_eq!(
        data,
        ["after expiry 1", "after expiry 2"],
        "bob got both, once: {outcome}"
    );
    for signal in signals {
        assert_eq!(signal["from"], alice["peerId"], "{outcome}");
        let at = signal["at"].as_u64().unwrap_or(0);
        assert!(
            at > first_exp * 1000,
            "received after the first token expired: {outcome}"
        );
    }
    // bob has no hook: he is told, with the hour his token has left.
    let bob_expiring = bob["tokenexpiring"].as_array().expect("bob's tokenexpiring");
    assert_eq!(bob_expiring.len(), 1, "{outcome}");
    assert_eq!(bob_expiring[0]["refreshing"], false, "{outcome}");
    assert!(
        bob_expiring[0]["expiresInMs"]
            .as_u64()
            .is_some_and(|ms| ms > 3_500_000 && ms <= 3_600_000),
        "{outcome}"
    );
    // His own refresh with alice's token was refused; his session went on.
    assert_eq!(bob["manualRefresh"]["ok"], false, "{outcome}");
    assert_eq!(bob["manualRefresh"]["code"], "wrong_user", "{outcome}");
    assert_eq!(bob["goodbye"], json!([]), "{outcome}");
    assert_eq!(bob["reconnecting"], 0, "{outcome}");
    assert_eq!(
        log_lines(&setup.server, "token refreshed").len(),
        1,
        "{}",
        setup.server.log()
    );
}

/// A call over WebTransport: alice's connection (through the runner's UDP proxy)
/// is lost without a close, and UDP with it; her client notices the missing
/// pong and resumes the session over WSS. She is the same peer, bob never sees
/// her leave, what either sent across the gap arrives once, and the data
/// channel carries on.
#[test]
fn a_page_that_loses_webtransport_resumes_its_session_over_wss_and_the_call_goes_on() {
    // A 6 s idle timeout: the client pings every 2 s and notices the loss
    // within 4 s, 2 s before the server would end the session as idle.
    let setup = Setup::start(&[("idle-timeout-ms", "6000")]);
    let started = Instant::now();
    let outcome = setup.run("resume", json!({ "wtTimeoutMs": 800 }));
    eprintln!("resume scenario: {:?}", started.elapsed());
    let before = &outcome["before"];
    let alice = &outcome["after"]["alice"];
    let bob = &outcome["after"]["bob"];
    assert_eq!(before["alice"]["transport"], "webtransport", "{outcome}");
    assert_eq!(before["bob"]["transport"], "webtransport", "{outcome}");

    // alice came back over WSS as the same session and peer.
    let reconnected = alice["reconnected"].as_array().expect("reconnected");
    assert_eq!(reconnected.len(), 1, "{outcome}");
    let back = &reconnected[0];
    assert_eq!(back["resumed"], true, "{outcome}");
    assert_eq!(back["transport"], "websocket", "{outcome}");
    assert_eq!(back["peerId"], before["alice"]["peerId"], "{outcome}");
    assert_eq!(back["previousPeerId"], before["alice"]["peerId"], "{outcome}");
    assert_eq!(back["restartedRooms"], json!([]), "{outcome}");
    assert_eq!(back["resumeError"], Value::Null, "{outcome}");
    assert_eq!(alice["peerId"], before["alice"]["peerId"], "{outcome}");
    assert_eq!(alice["sessionId"], before["alice"]["sessionId"], "{outcome}");
    assert_eq!(alice["transport"], "websocket", "{outcome}");
    let reconnecting = alice["reconnecting"].as_array().expect("reconnecting");
    assert!(
        !reconnecting.is_empty() && reconnecting.iter().all(|r| r["resuming"] == true),
        "it said it was resuming: {outcome}"
    );
    assert_eq!(bob["reconnecting"], json!([]), "{outcome}");

    // Nobody left or joined, on either side; no goodbye, no error.
    for (name, page) in [("alice", alice), ("bob", bob)] {
        assert_eq!(page["peerLeft"], json!([]), "{name}: {outcome}");
        assert_eq!(page["peerJoined"], json!([]), "{name}: {outcome}");
        assert_eq!(page["goodbye"], json!([]), "{name}: {outcome}");
        assert_eq!(page["roomErrors"], json!([]), "{name}: {outcome}");
        assert_eq!(page["closed"], Value::Null, "{name}: {outcome}");
    }

    // What each sent across the gap arrived once, in order, from the same peer.
    let data = |page: &Value, key: &str, from: &Value| -> Vec<String> {
        page[key]
            .as_array()
            .expect(key)
            .iter()
            .inspect(|m| assert_eq!(&m["from"], from, "{key}: {outcome}"))
            .map(|m| m["data"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let (alice_id, bob_id) = (&before["alice"]["peerId"], &before["bob"]["peerId"]);
    assert_eq!(
        data(alice, "custom", bob_id),
        ["bob during the gap", "bob after the resume"],
        "{outcome}"
    );
    assert_eq!(
        data(alice, "broadcasts", bob_id),
        ["bob broadcast during the gap"],
        "{outcome}"
    );
    assert_eq!(
        data(bob, "custom", alice_id),
        ["alice during the cut", "alice after the resume"],
        "{outcome}"
    );
    assert_eq!(
        data(bob, "broadcasts", alice_id),
        ["alice broadcast during the cut"],
        "{outcome}"
    );

    // The data channel never noticed.
    for (name, page, from) in [("alice", alice, "bob"), ("bob", bob, "alice")] {
        assert_eq!(
            page["dcMessages"],
            json!([
                format!("hello from {from}"),
                format!("data from {from} after the switch")
            ]),
            "{name}: {outcome}"
        );
        assert_eq!(page["dcState"], "open", "{name}: {outcome}");
        assert_eq!(page["pcState"], "connected", "{name}: {outcome}");
    }

    // The server resumed one session and ended none.
    assert_eq!(
        log_lines(&setup.server, "session resumed").len(),
        1,
        "{}",
        setup.server.log()
    );
    assert!(
        log_lines(&setup.server, "held session ended").is_empty(),
        "{}",
        setup.server.log()
    );
}
