//! A real `redis-server` for the cluster tests: started on a free loopback
//! port, killed with SIGKILL when a test wants Redis gone, restarted on the same
//! port, and killed when dropped. Nothing is persisted (no RDB, no AOF).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Debian package's binary; `scripts/test` installs it when missing.
const BINARY: &str = "redis-server";

pub struct Redis {
    pub addr: SocketAddr,
    extra: Vec<String>,
    child: Mutex<Option<Child>>,
}

impl Redis {
    /// Starts a fresh `redis-server` and waits until it answers.
    pub fn start() -> Redis {
        Self::start_with(&[])
    }

    /// Starts one with these extra `redis-server` arguments (`--requirepass x`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let redis = Redis {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            child: Mutex::new(None),
        };
        redis.spawn();
        redis
    }

    /// The URL a server node gets in `--redis`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Kills Redis at once (SIGKILL): nothing is flushed, clients see the connection drop.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("redis lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port (empty: it keeps nothing).
    pub fn restart(&self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&self) {
        let port = self.addr.port().to_string();
        let child = Command::new(BINARY)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{BINARY} could not start ({e}): scripts/test installs the Debian package redis-server")
            });
        *self.child.lock().expect("redis lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer PING",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether Redis answers PING (with PONG, or asking for a password).
    pub fn answers(&self) -> bool {
        let Ok(mut tcp) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = tcp.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
