//! A real coturn TURN server for the ICE tests: `turnserver` from Debian's
//! `coturn` package (`scripts/test` installs it when missing), started on a free
//! loopback port with `use-auth-secret` (the TURN REST API scheme), relaying on
//! loopback, and killed when dropped. `allocate` runs coturn's own client,
//! `turnutils_uclient`, to allocate relays with a username and password.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = "turnserver";
const CLIENT: &str = "turnutils_uclient";

pub struct Coturn {
    /// Where it listens for TURN over UDP and TCP.
    pub addr: SocketAddr,
    /// The shared secret (its `static-auth-secret`).
    pub secret: String,
    dir: PathBuf,
    child: Child,
}

/// What `turnutils_uclient` reported.
pub struct Allocation {
    /// It allocated relays and exchanged messages through them.
    pub relayed: bool,
    pub output: String,
}

impl Coturn {
    /// Starts coturn with `secret` and waits until it answers on its port.
    pub fn start(secret: &str) -> Coturn {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("coturn-e2e-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("coturn temp dir");
        // Relay ports below the ephemeral range, a block per listening port.
        let min_relay = 20_000 + (port % 90) * 100;
        let child = Command::new(SERVER)
            .args(["-n", "--listening-ip", "127.0.0.1", "--relay-ip", "127.0.0.1"])
            .args(["--listening-port", &port.to_string()])
            .args([
                "--min-port",
                &min_relay.to_string(),
                "--max-port",
                &(min_relay + 99).to_string(),
            ])
            .args([
                "--use-auth-secret",
                "--static-auth-secret",
                secret,
                "--realm",
                "signal.test",
            ])
            .args([
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
                "--simple-log",
            ])
            .args(["--log-file", "stdout"])
            .arg("--pidfile")
            .arg(dir.join("turnserver.pid"))
            .arg("--db")
            .arg(dir.join("turndb"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{SERVER} could not start ({e}): scripts/test installs the Debian package coturn")
            });
        let coturn = Coturn {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            secret: secret.to_owned(),
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&coturn.addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "coturn did not listen on {}", coturn.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
        coturn
    }

    /// `turn:` URLs of this server, over UDP and over TCP.
    pub fn urls(&self) -> [String; 2] {
        [
            format!("turn:{}?transport=udp", self.addr),
            format!("turn:{}?transport=tcp", self.addr),
        ]
    }

    /// Allocates relays with `username` and `password` and sends a few
    /// messages between two of them (`turnutils_uclient -y`), over UDP or TCP.
    pub fn allocate(&self, username: &str, password: &str, tcp: bool) -> Allocation {
        let mut command = Command::new(CLIENT);
        command
            .args(["-y", "-n", "3", "-m", "1", "-l", "120"])
            .args(["-u", username, "-w", password])
            .args(["-p", &self.addr.port().to_string()]);
        if tcp {
            command.arg("-t");
        }
        let Output { status, stdout, stderr } = command
            .arg("127.0.0.1")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{CLIENT} could not run ({e}): it comes with the Debian package coturn"));
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
        // Its last report says how many messages went out and came back through the relays.
        let totals = output
            .lines()
            .rev()
            .find_map(|line| {
                line.split_once("start_mclient: tot_send_msgs=")
                    .map(|(_, rest)| rest.to_owned())
            })
            .and_then(|rest| {
                let (sent, received) = rest.split_once(", tot_recv_msgs=")?;
                Some((sent.trim().parse::<u64>().ok()?, received.trim().parse::<u64>().ok()?))
            });
        let relayed = status.success() && matches!(totals, Some((sent, received)) if sent > 0 && received == sent);
        Allocation { relayed, output }
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port free on loopback for both TCP and UDP.
fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
