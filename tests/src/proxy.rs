//! Loopback proxies that a test can cut, to lose a connection the way a phone
//! changing networks does: packets (UDP) or bytes (TCP) simply stop.
//!
//! A UDP proxy forwards every datagram between one client and the server, so a
//! QUIC (WebTransport) connection through it works until [`Proxy::cut`], after
//! which both ends hear nothing: the server notices only at its idle timeout,
//! unless the session is resumed first. A TCP proxy forwards bytes both ways;
//! cutting it closes its sockets without a WebSocket close frame.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinSet;

/// A running proxy; dropping it cuts it too.
pub struct Proxy {
    pub addr: SocketAddr,
    tasks: std::sync::Mutex<JoinSet<()>>,
}

impl Proxy {
    /// Forwards UDP datagrams from one client to `server` and back.
    pub async fn udp(server: SocketAddr) -> Proxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP proxy"));
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP proxy"));
        back.connect(server).await.expect("connect UDP proxy");
        let addr = front.local_addr().expect("proxy address");
        let client = Arc::new(tokio::sync::Mutex::new(None::<SocketAddr>));
        let mut tasks = JoinSet::new();
        {
            let (front, back, client) = (front.clone(), back.clone(), client.clone());
            tasks.spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *client.lock().await = Some(from);
                    let _ = back.send(&buf[..n]).await;
                }
            });
        }
        tasks.spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = back.recv(&mut buf).await {
                if let Some(to) = *client.lock().await {
                    let _ = front.send_to(&buf[..n], to).await;
                }
            }
        });
        Proxy {
            addr,
            tasks: std::sync::Mutex::new(tasks),
        }
    }

    /// Forwards TCP connections to `server`.
    pub async fn tcp(server: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind TCP proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut pipes = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                pipes.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(server).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy {
            addr,
            tasks: std::sync::Mutex::new(tasks),
        }
    }

    /// Stops forwarding at once: sockets close, nothing more gets through.
    pub fn cut(&self) {
        self.tasks.lock().expect("proxy lock").abort_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
