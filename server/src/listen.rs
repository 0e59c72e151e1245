//! Binds the two listeners, the HTTPS/WSS port (TCP) and the WebTransport port
//! (UDP), with `SO_REUSEPORT` when asked: several server processes on one
//! machine then share both ports, and the kernel spreads new connections over
//! them (by the client's address and port, so a QUIC connection's packets
//! always reach the same process). Run such processes in cluster mode, so
//! that they share rooms and limits.

use std::io;
use std::net::{SocketAddr, UdpSocket};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Connections waiting to be accepted (as tokio's own `TcpListener::bind`).
const BACKLOG: i32 = 1024;

/// The TCP listener on `addr` ("::" takes IPv4 too).
pub fn tcp(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = socket(addr, Type::STREAM, Protocol::TCP, reuse_port)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// What the QUIC endpoint's UDP socket asks the kernel to buffer for it. One
/// socket takes every client's packets: a connect storm's handshakes come in
/// bursts, and with the kernel's default (208 KiB here) thousands of packets
/// were dropped in a 15,000-session storm, each costing a client a
/// retransmission a second later. The kernel caps it at `net.core.rmem_max`.
const UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// The UDP socket on `addr` ("::" takes IPv4 too), for the QUIC endpoint.
pub fn udp(addr: SocketAddr, reuse_port: bool) -> io::Result<UdpSocket> {
    let socket = socket(addr, Type::DGRAM, Protocol::UDP, reuse_port)?;
    // Best effort: a smaller buffer works, only less well under bursts.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn socket(addr: SocketAddr, kind: Type, protocol: Protocol, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(false)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_listeners_share_a_port_only_when_both_ask() {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let first = tcp(any, true).unwrap();
        let port = first.local_addr().unwrap();
        assert!(tcp(port, true).is_ok(), "a second process may bind it");
        let udp_first = udp(any, true).unwrap();
        let udp_port = udp_first.local_addr().unwrap();
        assert!(udp(udp_port, true).is_ok());
        // Without the option the port stays one process's.
        let lone = tcp(any, false).unwrap();
        assert!(tcp(lone.local_addr().unwrap(), false).is_err());
        let lone_udp = udp(any, false).unwrap();
        assert!(udp(lone_udp.local_addr().unwrap(), true).is_err());
    }
}
