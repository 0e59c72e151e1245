//! The client over a secure WebSocket: every channel shares the socket, each
//! frame enveloped with its channel id.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{Channel, ClientError, Framing, INBOX};
use crate::codec::{self, Encoding};
use crate::error::ErrorCode;
use crate::ids::ChannelId;
use crate::message::ServerMessage;

type Routes = Arc<Mutex<HashMap<ChannelId, mpsc::Sender<ServerMessage>>>>;

/// The WebSocket read buffer (grows for a larger message, up to the frame limit).
const READ_BUFFER: usize = 1024;
/// Bytes written before tungstenite flushes on its own (the writer flushes each batch).
const WRITE_BUFFER: usize = 8192;
/// At most this many queued frames go out in one flush.
const MAX_BATCH: usize = 64;

/// A WebSocket message for an encoded, enveloped frame.
fn message(encoding: Encoding, bytes: Vec<u8>) -> Message {
    match encoding {
        Encoding::Json => match String::from_utf8(bytes) {
            Ok(text) => Message::text(text),
            Err(e) => Message::binary(e.into_bytes()),
        },
        Encoding::Bincode => Message::binary(bytes),
    }
}

pub(super) struct Link {
    encoding: Encoding,
    out: mpsc::Sender<Vec<u8>>,
    routes: Routes,
    next_channel: AtomicU32,
    closer: mpsc::Sender<()>,
}

impl Link {
    pub(super) async fn connect(
        url: &url::Url,
        tls: rustls::ClientConfig,
        encoding: Encoding,
        bind_ip: Option<IpAddr>,
    ) -> Result<(Self, Channel), ClientError> {
        let (_, addr) = super::resolve(url).await?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| ClientError::Connect(e.to_string()))?;
        if let Some(ip) = bind_ip {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| ClientError::Connect(format!("bind {ip}: {e}")))?;
        }
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| ClientError::Connect(format!("connect {addr}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let connector = Connector::Rustls(Arc::new(tls));
        // Small buffers, as on the server: tungstenite's defaults are 128 KiB
        // each, and it zeroes the whole read buffer's free space before every
        // read (a memset of up to 128 KiB per read, and per message).
        let config = tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(Some(codec::HARD_MAX_FRAME))
            .max_frame_size(Some(codec::HARD_MAX_FRAME));
        let (ws, _response) =
            tokio_tungstenite::client_async_tls_with_config(url.as_str(), tcp, Some(config), Some(connector))
                .await
                .map_err(refusal)?;
        let (mut sink, mut stream) = ws.split();

        let routes: Routes = Arc::default();
        let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(INBOX);
        let (closer, mut close_rx) = mpsc::channel::<()>(1);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    bytes = out_rx.recv() => {
                        let Some(bytes) = bytes else { break };
                        // What else is queued goes out with the same flush:
                        // one TLS record and one system call for the lot.
                        let mut next = Some(bytes);
                        let mut fed = 0;
                        while let Some(bytes) = next {
                            if sink.feed(message(encoding, bytes)).await.is_err() {
                                return;
                            }
                            fed += 1;
                            next = if fed < MAX_BATCH { out_rx.try_recv().ok() } else { None };
                        }
                        if sink.flush().await.is_err() {
                            return;
                        }
                    }
                    _ = close_rx.recv() => break,
                }
            }
            let _ = sink.send(Message::Close(None)).await;
            let _ = sink.close().await;
        });
        let reader_routes = routes.clone();
        tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                let frame = match frame {
                    Ok(frame) => frame,
                    Err(e) => {
                        tracing::debug!(error = %e, "WebSocket read failed");
                        break;
                    }
                };
                let decoded = match &frame {
                    Message::Text(text) => codec::decode_enveloped(Encoding::Json, text.as_bytes()),
                    Message::Binary(bin) => codec::decode_enveloped(Encoding::Bincode, bin),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let (ch, msg) = match decoded {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable frame from the server");
                        continue;
                    }
                };
                let route = reader_routes.lock().expect("routes lock").get(&ch).cloned();
                if let Some(route) = route
                    && route.send(msg).await.is_err()
                {
                    reader_routes.lock().expect("routes lock").remove(&ch);
                }
            }
            // Dropping the routes ends every channel's `recv`.
            reader_routes.lock().expect("routes lock").clear();
        });

        let link = Self {
            encoding,
            out: out_tx,
            routes,
            next_channel: AtomicU32::new(0),
            closer,
        };
        let control = link.open_channel();
        Ok((link, control))
    }

    pub(super) fn open_channel(&self) -> Channel {
        let id = self.next_channel.fetch_add(1, Ordering::Relaxed);
        let (in_tx, in_rx) = mpsc::channel(INBOX);
        self.routes.lock().expect("routes lock").insert(id, in_tx);
        Channel {
            id,
            encoding: self.encoding,
            framing: Framing::Envelope(id),
            out: self.out.clone(),
            inbox: in_rx,
            next_seq: AtomicU64::new(1),
        }
    }

    pub(super) fn close(&self) {
        let _ = self.closer.try_send(());
    }
}

/// Turns a failed WebSocket handshake into the server's refusal, with the error
/// code from its JSON body when there is one.
fn refusal(err: tungstenite::Error) -> ClientError {
    match err {
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            #[derive(serde::Deserialize)]
            struct Body {
                code: ErrorCode,
                message: String,
            }
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Body>(b).ok());
            match body {
                Some(Body { code, message }) => ClientError::Rejected {
                    status: Some(status),
                    code: Some(code),
                    message,
                },
                None => ClientError::Rejected {
                    status: Some(status),
                    code: None,
                    message: format!("HTTP {status}"),
                },
            }
        }
        other => ClientError::Connect(other.to_string()),
    }
}
