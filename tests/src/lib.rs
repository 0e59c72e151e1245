//! The harness of the end-to-end tests: starts the real server binary on
//! ephemeral loopback ports with its own certificate directory and JWT secret,
//! and gives tests clients, tokens and a small HTTPS client.
//!
//! Tests pass the binary with `env!("CARGO_BIN_EXE_signal-server")`.

pub mod coturn;
pub mod proxy;
pub mod raw;
pub mod redis;

use std::io::{BufRead, BufReader, Read as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::Encoding;
use proto::client::{Client, ClientError, ConnectOptions, Trust};
use server::session::auth::{TokenClaims, mint_hs256, now_secs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Flags that lift the per-session message and byte budgets, for tests that
/// flood a room on purpose.
pub const NO_BUDGETS: [(&str, &str); 4] = [
    ("messages-per-sec", "1000000"),
    ("message-burst", "1000000"),
    ("bytes-per-sec", "1000000000"),
    ("byte-burst", "1000000000"),
];

/// The load generator binary, which sits next to the server binary `server_bin`:
/// `cargo test --workspace` builds every binary of the workspace, `cargo test
/// -p e2e` alone does not.
pub fn loadgen_binary(server_bin: &str) -> PathBuf {
    let path = std::path::Path::new(server_bin).with_file_name(format!("loadgen{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p proto --bin loadgen` first",
        path.display()
    );
    path
}

/// Runs a load generator command with `server`'s certificate hashes and checks
/// that it succeeded; returns its JSON report and, for assertion messages, the
/// report with the progress it printed.
pub fn run_loadgen(mut cmd: std::process::Command, server: &Server) -> (serde_json::Value, String) {
    for hash in &server.hashes {
        cmd.args(["--cert-hash", &server::tls::hex(hash)]);
    }
    let out = cmd.output().expect("run loadgen");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadgen failed: {stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    let context = format!("report: {report:#}\nprogress:\n{stderr}");
    (report, context)
}

/// Which transport a test client uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    WebTransport,
    WebSocket,
}

/// A running server process.
pub struct Server {
    child: Mutex<Child>,
    /// How it was started, to start it again on the same ports.
    bin: String,
    args: Vec<String>,
    dir: PathBuf,
    secret: String,
    pub webtransport: std::net::SocketAddr,
    pub https: std::net::SocketAddr,
    pub hashes: Vec<[u8; 32]>,
}

impl Server {
    /// Starts the server with test defaults and these extra flags.
    pub fn start(bin: &str, flags: &[(&str, &str)]) -> Server {
        Self::start_with_secret(bin, &format!("test-secret-{:016x}", rand_u64()), flags)
    }

    /// Starts another node of `peer`'s cluster: same JWT secret, so a token is
    /// good on either (pass `--redis` in `flags`).
    pub fn start_node_like(bin: &str, peer: &Server, flags: &[(&str, &str)]) -> Server {
        Self::start_with_secret(bin, &peer.secret, flags)
    }

    fn start_with_secret(bin: &str, secret: &str, flags: &[(&str, &str)]) -> Server {
        let dir = std::env::temp_dir().join(format!("signal-e2e-{}-{:016x}", std::process::id(), rand_u64()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let secret = secret.to_owned();
        let mut args: Vec<String> = ["--bind", "127.0.0.1", "--jwt-secret", &secret, "--log-format", "json"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        // Defaults a test may override. Loopback tests open many connections from one address.
        let cert_dir = dir.join("certs").to_string_lossy().into_owned();
        let users_file = dir.join("data").join("users.json").to_string_lossy().into_owned();
        let defaults = [
            ("webtransport-port", "0"),
            ("https-port", "0"),
            ("cert-dir", cert_dir.as_str()),
            ("users-file", users_file.as_str()),
            ("connections-per-ip-per-sec", "1000"),
            ("connection-burst-per-ip", "1000"),
        ];
        let unset = defaults
            .iter()
            .filter(|(flag, _)| !flags.iter().any(|(f, _)| f == flag));
        for (flag, value) in unset.chain(flags) {
            args.push(format!("--{flag}"));
            args.push(value.to_string());
        }
        let (child, listening) = spawn(bin, &args, &dir);
        let addr = |key: &str| {
            listening[key]
                .as_str()
                .expect("address")
                .parse()
                .expect("socket address")
        };
        let hashes = listening["cert_hashes"]
            .as_array()
            .expect("hashes")
            .iter()
            .map(|h| parse_hex(h.as_str().expect("hex")))
            .collect();
        Server {
            webtransport: addr("webtransport"),
            https: addr("https"),
            hashes,
            child: Mutex::new(child),
            bin: bin.to_owned(),
            args,
            dir,
            secret,
        }
    }

    /// Kills the server (SIGKILL: no goodbye to anyone) and starts it again on
    /// the same ports, with the same certificate and secret.
    pub fn restart(&self) {
        let mut child = self.child.lock().expect("child lock");
        let _ = child.kill();
        let _ = child.wait();
        let mut args = self.args.clone();
        for (flag, port) in [
            ("--webtransport-port", self.webtransport.port()),
            ("--https-port", self.https.port()),
        ] {
            let at = args.iter().position(|a| a == flag).expect("the port flag") + 1;
            args[at] = port.to_string();
        }
        *child = spawn(&self.bin, &args, &self.dir).0;
    }

    /// Where the server keeps its self-signed certificate (`cert.pem`, `key.pem`):
    /// another server given the same files is trusted by the same hash.
    pub fn cert_dir(&self) -> PathBuf {
        self.dir.join("certs")
    }

    /// The server's HS256 JWT secret, for tools that mint their own tokens (the load generator).
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// A token for `user`, valid for an hour.
    pub fn token(&self, user: &str) -> String {
        self.token_with(TokenClaims::new(user, now_secs() + 3600))
    }

    /// A token with these claims, signed with the server's secret.
    pub fn token_with(&self, claims: TokenClaims) -> String {
        mint_hs256(self.secret.as_bytes(), &claims)
    }

    pub fn url(&self, via: Via) -> String {
        match via {
            Via::WebTransport => format!("https://{}/", self.webtransport),
            Via::WebSocket => format!("wss://{}/ws", self.https),
        }
    }

    /// Connect options for `via`, trusting the server's certificate by hash.
    pub fn options(&self, via: Via, token: &str) -> ConnectOptions {
        ConnectOptions::new(self.url(via), Trust::CertificateHashes(self.hashes.clone()))
            .token(token)
            .encoding(Encoding::Bincode)
            .timeout(Duration::from_secs(10))
    }

    /// Connects `user` over `via`.
    pub async fn connect(&self, via: Via, user: &str) -> Client {
        Client::connect(self.options(via, &self.token(user)))
            .await
            .unwrap_or_else(|e| panic!("{user} could not connect over {via:?}: {e}"))
    }

    /// Connects with these options, expecting a failure.
    pub async fn connect_err(&self, opts: ConnectOptions) -> ClientError {
        match Client::connect(opts).await {
            Ok(_) => panic!("the connection was expected to fail"),
            Err(e) => e,
        }
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.lock().expect("child lock").id()
    }

    /// The server's resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }

    /// Kills the server with SIGKILL: no goodbye to anyone, nothing cleaned up.
    pub fn kill(&self) {
        let mut child = self.child.lock().expect("child lock");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        for _ in 0..200 {
            if let Ok(Some(status)) = self.child.lock().expect("child lock").try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// The server's log so far (JSON lines).
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("server.log")) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    /// A GET over HTTPS; returns status, headers (lowercased names) and body.
    pub async fn get(&self, path: &str) -> Response {
        self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
        .await
    }

    /// A POST of `body` as JSON over HTTPS.
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Response {
        let body = body.to_string();
        self.request(&format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ))
        .await
    }

    /// A GET with `Authorization: Bearer <token>`.
    pub async fn get_authorized(&self, path: &str, token: &str) -> Response {
        self.request(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
        ))
        .await
    }

    /// Runs the binary's `users` subcommand (`args` after `users`) with the
    /// flags this server was started with, so on the same user file; `stdin`
    /// is piped in.
    pub fn users(&self, args: &[&str], stdin: &str) -> std::process::Output {
        use std::io::Write as _;
        let mut child = Command::new(&self.bin)
            .arg("users")
            .args(args)
            .args(&self.args)
            .env_remove("SIGNAL_CONFIG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run `users`");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write the password");
        child.wait_with_output().expect("`users` finishes")
    }

    /// Adds an account with the real `users add --password-stdin`, as an
    /// operator would; panics if that fails.
    pub fn add_user(&self, name: &str, password: &str, roles: &[&str]) {
        let mut args = vec!["add", name, "--password-stdin"];
        for role in roles {
            args.extend(["--role", role]);
        }
        let out = self.users(&args, &format!("{password}\n"));
        assert!(
            out.status.success(),
            "users add {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends a raw HTTP/1.1 request over TLS and reads the whole response.
    pub async fn request(&self, raw: &str) -> Response {
        let config = raw::client_tls(self, b"http/1.1");
        let tcp = tokio::net::TcpStream::connect(self.https).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS");
        tls.write_all(raw.as_bytes()).await.expect("write");
        // Read until the body is complete (by Content-Length) or the server closes.
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
            let response = Response::parse(&bytes);
            let complete = response
                .header("content-length")
                .and_then(|l| l.parse::<usize>().ok())
                .is_some_and(|len| response.body.len() >= len);
            if complete {
                return response;
            }
        }
        Response::parse(&bytes)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!("--- server log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the binary and reads its listening line.
fn spawn(bin: &str, args: &[String], dir: &std::path::Path) -> (Child, serde_json::Value) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .expect("log file");
    let mut child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info,server=debug")
        .env_remove("SIGNAL_CONFIG")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start the server");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let listening = serde_json::from_str(&line).unwrap_or_else(|e| {
        panic!(
            "server did not start ({e}); log: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        )
    });
    (child, listening)
}

/// An HTTP response, parsed just enough for tests.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    fn parse(bytes: &[u8]) -> Response {
        let text = String::from_utf8_lossy(bytes);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Response {
            status,
            headers,
            body: body.to_owned(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

fn parse_hex(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digit");
    }
    out
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}
