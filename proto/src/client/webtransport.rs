//! The client over WebTransport: one bidirectional stream per channel.
//!
//! Each client normally has a QUIC endpoint (a UDP socket) of its own; a
//! [`SharedEndpoint`] lets many clients share one, so that a process can hold
//! thousands of sessions without a socket (a file descriptor) each.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tokio::sync::mpsc;
use wtransport::endpoint::endpoint_side;
use wtransport::error::{ConnectingError, ConnectionError};
use wtransport::{ClientConfig, Connection, Endpoint, RecvStream, SendStream};

use super::{Channel, ClientError, Framing, INBOX, TransportKind, Trust, decode_server};
use crate::codec::{Encoding, HARD_MAX_FRAME};
use crate::frame::read_frame;

/// One client QUIC endpoint (one UDP socket) that many WebTransport clients
/// share: QUIC tells their connections apart by connection id, so 10,000
/// sessions need one file descriptor instead of 10,000.
///
/// The certificate trust is the endpoint's, not the connection's: a client
/// connecting through it ([`ConnectOptions::endpoint`](super::ConnectOptions::endpoint))
/// uses the endpoint's trust and source address, and ignores its own.
///
/// ```no_run
/// # async fn demo() -> Result<(), proto::client::ClientError> {
/// use proto::client::{Client, ConnectOptions, SharedEndpoint, Trust};
///
/// let trust = Trust::CertificateHashes(vec![[0u8; 32]]);
/// let endpoint = SharedEndpoint::new(&trust, None)?;
/// let mut clients = Vec::new();
/// for token in ["eyJ...", "eyJ..."] {
///     let opts = ConnectOptions::new("https://127.0.0.1:4433/", trust.clone())
///         .token(token)
///         .endpoint(endpoint.clone());
///     clients.push(Client::connect(opts).await?);
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SharedEndpoint {
    endpoint: Arc<Endpoint<endpoint_side::Client>>,
}

impl SharedEndpoint {
    /// Binds a UDP socket on `bind_ip` (any port; the unspecified address when
    /// `None`) for clients that trust what `trust` says.
    pub fn new(trust: &Trust, bind_ip: Option<IpAddr>) -> Result<Self, ClientError> {
        let tls = super::tls::client_config(trust, TransportKind::WebTransport)?;
        Ok(Self {
            endpoint: Arc::new(endpoint(tls, bind_ip)?),
        })
    }

    /// The address of the endpoint's socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Connections currently open through this endpoint.
    pub fn open_connections(&self) -> usize {
        self.endpoint.open_connections()
    }
}

impl std::fmt::Debug for SharedEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedEndpoint")
            .field("local_addr", &self.local_addr())
            .field("open_connections", &self.open_connections())
            .finish()
    }
}

/// A client endpoint with the keep-alive the server's idle timeout needs.
fn endpoint(
    tls: rustls::ClientConfig,
    bind_ip: Option<IpAddr>,
) -> Result<Endpoint<endpoint_side::Client>, ClientError> {
    let builder = ClientConfig::builder();
    let builder = match bind_ip {
        Some(ip) => builder.with_bind_address(SocketAddr::new(ip, 0)),
        None => builder.with_bind_default(),
    };
    let config = builder
        .with_custom_tls(tls)
        .keep_alive_interval(Some(std::time::Duration::from_secs(5)))
        .build();
    Endpoint::client(config).map_err(|e| ClientError::Connect(format!("UDP socket: {e}")))
}

pub(super) struct Link {
    // Kept so the endpoint's UDP socket lives as long as the connection (it may
    // be shared with other clients).
    _endpoint: Arc<Endpoint<endpoint_side::Client>>,
    conn: Connection,
    encoding: Encoding,
    next_channel: AtomicU32,
}

impl Link {
    pub(super) async fn connect(
        url: &url::Url,
        tls: rustls::ClientConfig,
        encoding: Encoding,
        bind_ip: Option<IpAddr>,
        shared: Option<&SharedEndpoint>,
    ) -> Result<(Self, Channel), ClientError> {
        let endpoint = match shared {
            Some(shared) => shared.endpoint.clone(),
            None => Arc::new(endpoint(tls, bind_ip)?),
        };
        let conn = connect_session(&endpoint, url.as_str()).await.map_err(|e| match e {
            ConnectingError::SessionRejected => ClientError::Rejected {
                status: None,
                code: None,
                message: "the server refused the WebTransport session".into(),
            },
            other => ClientError::Connect(other.to_string()),
        })?;
        let link = Self {
            _endpoint: endpoint,
            conn,
            encoding,
            next_channel: AtomicU32::new(0),
        };
        let control = link.open_channel().await?;
        Ok((link, control))
    }

    pub(super) async fn open_channel(&self) -> Result<Channel, ClientError> {
        let opening = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (send, recv) = opening.await.map_err(|e| ClientError::Connect(e.to_string()))?;
        let (out_tx, out_rx) = mpsc::channel(INBOX);
        let (in_tx, in_rx) = mpsc::channel(INBOX);
        tokio::spawn(write_stream(send, out_rx));
        tokio::spawn(read_stream(recv, in_tx, self.encoding));
        Ok(Channel {
            id: self.next_channel.fetch_add(1, Ordering::Relaxed),
            encoding: self.encoding,
            framing: Framing::Stream,
            out: out_tx,
            inbox: in_rx,
            next_seq: AtomicU64::new(1),
        })
    }

    pub(super) fn close(&self) {
        self.conn.close(0u32.into(), b"client closed");
    }
}

/// How many times a connect is tried again after the connection was closed
/// with an HTTP/3 error before the CONNECT request was answered.
const H3_SETUP_RETRIES: u32 = 2;

/// Opens the QUIC connection and the WebTransport session, trying again (a
/// fresh connection, through the same endpoint) when HTTP/3 failed before the
/// session existed; see [`is_h3_setup_failure`].
async fn connect_session(endpoint: &Endpoint<endpoint_side::Client>, url: &str) -> Result<Connection, ConnectingError> {
    let mut retries = H3_SETUP_RETRIES;
    loop {
        match endpoint.connect(url).await {
            Err(e) if retries > 0 && is_h3_setup_failure(&e) => retries -= 1,
            result => return result,
        }
    }
}

/// Whether a connect failed because one side's HTTP/3 layer closed the
/// connection with an HTTP/3 error code (0x100..=0x110) before the CONNECT
/// request was answered.
///
/// wtransport 0.7.2's HTTP/3 driver reads the peer's control stream inside a
/// `select!` that drops the read whenever another stream arrives first. When the
/// peer's SETTINGS frame came in two packets and the CONNECT stream arrived in
/// between, the bytes already read are lost and the rest of the frame parses as
/// HEADERS or DATA (H3_FRAME_UNEXPECTED, 0x105), as an absurd length
/// (H3_EXCESSIVE_LOAD, 0x107), or as something else the driver refuses. That
/// happens before the server's code sees a request, so no session exists on
/// either side and the connect can simply be tried again. A refusal of the
/// CONNECT request itself is [`ConnectingError::SessionRejected`], never this.
fn is_h3_setup_failure(e: &ConnectingError) -> bool {
    match e {
        ConnectingError::ConnectionError(ConnectionError::ApplicationClosed(close)) => {
            is_h3_error_code(close.code().into_inner())
        }
        ConnectingError::ConnectionError(ConnectionError::LocalH3Error(_)) => true,
        _ => false,
    }
}

/// The HTTP/3 error codes of RFC 9114 (H3_NO_ERROR, 0x100, excluded: it is a
/// clean close).
fn is_h3_error_code(code: u64) -> bool {
    (0x101..=0x110).contains(&code)
}

async fn write_stream(mut send: SendStream, mut out: mpsc::Receiver<Vec<u8>>) {
    while let Some(bytes) = out.recv().await {
        if send.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = send.finish().await;
}

async fn read_stream(mut recv: RecvStream, inbox: mpsc::Sender<ServerMessageAlias>, encoding: Encoding) {
    let mut buf = Vec::new();
    while let Ok(true) = read_frame(&mut recv, &mut buf, HARD_MAX_FRAME).await {
        let Some(msg) = decode_server(encoding, &buf) else {
            continue;
        };
        if inbox.send(msg).await.is_err() {
            return;
        }
    }
}

type ServerMessageAlias = crate::message::ServerMessage;

#[cfg(test)]
mod tests {
    use super::is_h3_error_code;

    #[test]
    fn only_http3_error_codes_are_retried() {
        // H3_FRAME_UNEXPECTED and H3_EXCESSIVE_LOAD, as the driver's lost bytes give.
        assert!(is_h3_error_code(0x105));
        assert!(is_h3_error_code(0x107));
        assert!(is_h3_error_code(0x101) && is_h3_error_code(0x110));
        // A clean close, an application's codes, WebTransport's own.
        assert!(!is_h3_error_code(0x100));
        assert!(!is_h3_error_code(0));
        assert!(!is_h3_error_code(4000));
        assert!(!is_h3_error_code(0x52e4_a40f_a8db));
    }
}
