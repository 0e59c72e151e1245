//! An echo server on the server's own WebSocket layer (its handshake and
//! framing, `server::transport::websocket::{handshake, frame}`), plain `ws://`
//! on loopback, for the Autobahn TestSuite's cases: `bench/autobahn` runs the
//! whole suite (`kosoku`) against it, `tests/tests/autobahn.rs` a fast part.
//! Not part of the server: the suite needs messages echoed as they came, up
//! to 16 MiB, and nothing of the session layer.
//!
//!     cargo run --release -p e2e --bin autobahn-echo -- 127.0.0.1:9001

use std::net::SocketAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use server::transport::websocket::frame::{self, FrameReader, Incoming};
use server::transport::websocket::handshake;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Autobahn's largest messages are 16 MiB.
const MAX_MESSAGE: usize = 32 * 1024 * 1024;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    let listener = TcpListener::bind(addr).await?;
    println!("listening on ws://{}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = echo(socket).await;
        });
    }
}

async fn echo(mut socket: TcpStream) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    // The upgrade request's head, and anything the client sent after it.
    let mut head = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if head.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(&head[..end]).lines().skip(1) {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            )
        {
            headers.append(name, value);
        }
    }
    let accept = match handshake::accept(&headers) {
        Ok(accept) => accept,
        Err(e) => {
            let answer = format!(
                "HTTP/1.1 {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                e.status()
            );
            return socket.write_all(answer.as_bytes()).await;
        }
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept.to_str().unwrap_or_default()
    );
    socket.write_all(answer.as_bytes()).await?;

    let mut reader = FrameReader::new(MAX_MESSAGE, MAX_MESSAGE);
    reader.spare().extend_from_slice(&head[end..]);
    let mut out = Vec::new();
    loop {
        loop {
            match reader.next() {
                Ok(Some(Incoming::Text(text))) => append_message(&mut out, text, true),
                Ok(Some(Incoming::Binary(bin))) => append_message(&mut out, bin, false),
                Ok(Some(Incoming::Ping(payload))) => frame::append_pong(&mut out, payload),
                Ok(Some(Incoming::Pong | Incoming::Skipped { .. })) => {}
                Ok(Some(Incoming::Close(code))) => {
                    frame::append_close(&mut out, code.unwrap_or(1000), "");
                    socket.write_all(&out).await?;
                    return socket.shutdown().await;
                }
                Ok(None) => break,
                Err(violation) => {
                    frame::append_close(&mut out, violation.close_code(), &violation.to_string());
                    socket.write_all(&out).await?;
                    // As the server does: drain until the client closes.
                    let mut scratch = [0u8; 4096];
                    while matches!(socket.read(&mut scratch).await, Ok(n) if n > 0) {}
                    return Ok(());
                }
            }
        }
        if !out.is_empty() {
            socket.write_all(&out).await?;
            out.clear();
        }
        if socket.read_buf(reader.spare()).await? == 0 {
            return Ok(());
        }
    }
}

fn append_message(out: &mut Vec<u8>, payload: &[u8], text: bool) {
    let start = frame::begin_frame(out);
    out.extend_from_slice(payload);
    frame::end_frame(out, start, text);
}
