//! Clients driven by hand, for tests that must write what the native client
//! never would (a 4 GiB length prefix, a stream cut inside a frame, a text
//! frame that is not UTF-8), send headers it does not send (`Origin`), or see
//! what it hides (a refusal's headers, a connection's close code).
//!
//! [`RawWebTransport`] is wtransport's client (an HTTP/3 stack that is not the
//! server's, so its tests also prove the two interoperate); [`RawWss`] is
//! tokio-tungstenite.
//! Both connect from a chosen loopback address, so a test can play an attacker
//! from 127.0.0.2 while well-behaved clients stay on 127.0.0.1.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::codec;
use proto::frame::{FrameError, read_frame};
use proto::{ChannelId, ClientMessage, Encoding, PROTOCOL_VERSION, PeerId, ServerMessage, Token};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use wtransport::endpoint::endpoint_side;
use wtransport::error::{ConnectingError, ConnectionError};
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

use crate::{Response, Server};

/// How long a raw client waits for anything before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// A TLS client configuration that trusts the server's certificate by hash,
/// offering `alpn` (`h3` for WebTransport, `http/1.1` for HTTPS and WSS).
pub fn client_tls(server: &Server, alpn: &[u8]) -> rustls::ClientConfig {
    let verifier = wtransport::tls::client::ServerHashVerification::new(
        server.hashes.iter().map(|h| wtransport::tls::Sha256Digest::new(*h)),
    );
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// A `hello` carrying `token`.
pub fn hello(token: &str) -> ClientMessage {
    ClientMessage::Hello {
        id: Some(0),
        version: PROTOCOL_VERSION,
        token: Some(Token(token.to_owned())),
        resume: None,
    }
}

/// A WebTransport connection made with wtransport directly.
pub struct RawWebTransport {
    // Kept so the endpoint's UDP socket lives as long as the connection.
    _endpoint: Endpoint<endpoint_side::Client>,
    pub conn: Connection,
    encoding: Encoding,
}

impl RawWebTransport {
    /// Connects from `from` (any port) with `encoding` in the URL and these
    /// extra CONNECT headers (such as `origin`).
    pub async fn connect(
        server: &Server,
        from: IpAddr,
        encoding: Encoding,
        headers: &[(&str, &str)],
    ) -> Result<Self, ConnectingError> {
        let config = ClientConfig::builder()
            .with_bind_address(SocketAddr::new(from, 0))
            .with_custom_tls(client_tls(server, b"h3"))
            .build();
        let endpoint = Endpoint::client(config).expect("a client UDP socket");
        let url = format!("https://{}/?encoding={}", server.webtransport, encoding.as_str());
        let mut options = wtransport::endpoint::ConnectOptions::builder(url);
        for (name, value) in headers {
            options = options.add_header(name, value);
        }
        let conn = tokio::time::timeout(WAIT, endpoint.connect(options.build()))
            .await
            .expect("the WebTransport connect was answered in time")?;
        Ok(Self {
            _endpoint: endpoint,
            conn,
            encoding,
        })
    }

    /// Opens the next bidirectional stream: the first is the control channel,
    /// each later one a room's.
    pub async fn open(&self) -> RawStream {
        let opening = self.conn.open_bi().await.expect("a stream can be opened");
        let (send, recv) = opening.await.expect("the stream opened");
        RawStream {
            send,
            recv,
            encoding: self.encoding,
        }
    }

    /// Opens the control stream and says `hello` with `token`; returns the
    /// control stream and the session's peer id once `welcome` arrived.
    pub async fn hello(&self, token: &str) -> (RawStream, PeerId) {
        let mut control = self.open().await;
        control.send(&hello(token)).await;
        match control.next().await {
            Some(ServerMessage::Welcome { peer_id, .. }) => (control, peer_id),
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Opens a stream and joins `room` on it.
    pub async fn join(&self, room: &str) -> RawStream {
        let mut stream = self.open().await;
        stream
            .send(&ClientMessage::Join {
                id: Some(1),
                room: room.to_owned(),
                resume_after: None,
            })
            .await;
        match stream.next().await {
            Some(ServerMessage::Joined { .. }) => stream,
            other => panic!("expected joined, got {other:?}"),
        }
    }

    /// Waits for the connection to close; returns the application close code
    /// and reason, or the error if it was closed some other way.
    pub async fn closed(&self) -> Result<(u64, String), ConnectionError> {
        let closed = tokio::time::timeout(WAIT, self.conn.closed())
            .await
            .expect("the connection closed in time");
        match closed {
            ConnectionError::ApplicationClosed(close) => Ok((
                close.code().into_inner(),
                String::from_utf8_lossy(close.reason()).into_owned(),
            )),
            other => Err(other),
        }
    }
}

/// One bidirectional WebTransport stream.
pub struct RawStream {
    pub send: SendStream,
    recv: RecvStream,
    encoding: Encoding,
}

impl RawStream {
    /// Writes exactly these bytes, whatever they are.
    pub async fn write(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("the stream takes bytes");
    }

    /// Writes `msg` as one well-formed frame.
    pub async fn send(&mut self, msg: &ClientMessage) {
        self.write(&proto::frame::encode_frame(self.encoding, msg)).await;
    }

    /// Ends the stream (FIN) after what was written.
    pub async fn finish(&mut self) {
        let _ = self.send.finish().await;
    }

    /// The next message from the server; `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<ServerMessage> {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(WAIT, read_frame(&mut self.recv, &mut buf, codec::HARD_MAX_FRAME))
            .await
            .expect("the server sent something or ended the stream in time");
        match read {
            Ok(true) => Some(codec::decode(self.encoding, &buf).expect("the server's frames decode")),
            Ok(false) | Err(FrameError::Io(_) | FrameError::Truncated) => None,
            Err(e) => panic!("the server sent a bad frame: {e}"),
        }
    }

    /// Every message until the stream ends.
    pub async fn drain(&mut self) -> Vec<ServerMessage> {
        let mut got = Vec::new();
        while let Some(msg) = self.next().await {
            got.push(msg);
        }
        got
    }
}

/// What a raw WebSocket saw next.
#[derive(Debug)]
pub enum WsEvent {
    /// A message, with the channel of its envelope.
    Message(ChannelId, ServerMessage),
    /// A close frame (code and reason), if the server sent one.
    Closed(Option<(u16, String)>),
    /// The connection ended without a close frame.
    Dropped(String),
}

/// A WSS connection made with tokio-tungstenite directly.
pub struct RawWss {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl RawWss {
    /// Asks for the upgrade from `from` with these extra headers (such as
    /// `Origin`); `Err` is the server's refusal (status, headers, body).
    pub async fn connect(
        server: &Server,
        from: IpAddr,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, Response> {
        let mut request = format!("wss://{}/ws{query}", server.https)
            .into_client_request()
            .expect("a valid request");
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            request
                .headers_mut()
                .insert(name, HeaderValue::from_str(value).expect("a header value"));
        }
        let socket = TcpSocket::new_v4().expect("a TCP socket");
        socket.bind(SocketAddr::new(from, 0)).expect("bind the local address");
        let tcp = socket.connect(server.https).await.expect("TCP connect");
        let connector = Connector::Rustls(Arc::new(client_tls(server, b"http/1.1")));
        // The same caps as the native client: the server's must be the ones that act.
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(4 * codec::HARD_MAX_FRAME))
            .max_frame_size(Some(4 * codec::HARD_MAX_FRAME));
        let upgrade = tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), Some(connector));
        match tokio::time::timeout(WAIT, upgrade)
            .await
            .expect("the upgrade was answered in time")
        {
            Ok((ws, _)) => Ok(Self { ws }),
            Err(tungstenite::Error::Http(response)) => Err(Response {
                status: response.status().as_u16(),
                headers: response
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
                    .collect(),
                body: String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
            }),
            Err(e) => panic!("the upgrade failed without an HTTP answer: {e}"),
        }
    }

    /// Sends a WebSocket message; `false` if the connection is gone.
    pub async fn send_message(&mut self, msg: Message) -> bool {
        self.ws.send(msg).await.is_ok()
    }

    /// Sends `msg` on `channel` as a JSON text message.
    pub async fn send(&mut self, channel: ChannelId, msg: &ClientMessage) {
        let text = String::from_utf8(codec::encode_enveloped(Encoding::Json, channel, msg)).expect("JSON is UTF-8");
        assert!(self.send_message(Message::text(text)).await, "the socket is open");
    }

    /// Says `hello` with `token`; returns the session's peer id once `welcome` arrived.
    pub async fn hello(&mut self, token: &str) -> PeerId {
        self.send(proto::CONTROL_CHANNEL, &hello(token)).await;
        match self.next().await {
            WsEvent::Message(0, ServerMessage::Welcome { peer_id, .. }) => peer_id,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Joins `room` on `channel` and waits for `joined`.
    pub async fn join(&mut self, channel: ChannelId, room: &str) {
        let join = ClientMessage::Join {
            id: Some(1),
            room: room.to_owned(),
            resume_after: None,
        };
        self.send(channel, &join).await;
        loop {
            match self.next().await {
                WsEvent::Message(ch, ServerMessage::Joined { .. }) if ch == channel => return,
                WsEvent::Message(..) => continue,
                other => panic!("expected joined, got {other:?}"),
            }
        }
    }

    /// The next WebSocket message as it came (pongs included), `None` when the
    /// connection ended.
    pub async fn next_raw(&mut self) -> Option<Message> {
        tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("the server sent something or closed in time")
            .and_then(Result::ok)
    }

    /// What comes next: a message, the close frame, or the connection dropping.
    pub async fn next(&mut self) -> WsEvent {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server sent something or closed in time");
            let decoded = match next {
                Some(Ok(Message::Text(text))) => codec::decode_enveloped(Encoding::Json, text.as_bytes()),
                Some(Ok(Message::Binary(bin))) => codec::decode_enveloped(Encoding::Bincode, &bin),
                Some(Ok(Message::Close(frame))) => {
                    return WsEvent::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return WsEvent::Dropped(e.to_string()),
                None => return WsEvent::Dropped("end of stream".into()),
            };
            let (ch, msg) = decoded.expect("the server's frames decode");
            return WsEvent::Message(ch, msg);
        }
    }

    /// Every event until the connection ends (the close frame or the drop last).
    pub async fn drain(&mut self) -> Vec<WsEvent> {
        let mut got = Vec::new();
        loop {
            let event = self.next().await;
            let end = !matches!(event, WsEvent::Message(..));
            got.push(event);
            if end {
                return got;
            }
        }
    }
}
