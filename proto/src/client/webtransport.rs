//! The client over WebTransport: one bidirectional stream per channel, on
//! quinn with the HTTP/3 handshake of [`crate::h3`] (the server's own).
//!
//! Each client normally has a QUIC endpoint (a UDP socket) of its own; a
//! [`SharedEndpoint`] lets many clients share one, so that a process can hold
//! thousands of sessions without a socket (a file descriptor) each.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::mpsc;

use super::{Channel, ClientError, ErrorCode, Framing, INBOX, TransportKind, Trust, decode_server};
use crate::codec::{Encoding, HARD_MAX_FRAME};
use crate::frame::read_frame;
use crate::h3::{self, H3Error};

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
/// // Before the program ends: let the servers know (CONNECTION_CLOSE).
/// drop(clients);
/// endpoint.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SharedEndpoint {
    endpoint: Endpoint,
}

impl SharedEndpoint {
    /// Binds a UDP socket on `bind_ip` (any port; the unspecified address when
    /// `None`) for clients that trust what `trust` says.
    pub fn new(trust: &Trust, bind_ip: Option<IpAddr>) -> Result<Self, ClientError> {
        let tls = super::tls::client_config(trust, TransportKind::WebTransport)?;
        Ok(Self {
            endpoint: endpoint(tls, bind_ip)?,
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

    /// Moves every connection of the endpoint to a new UDP socket (a new local
    /// address or port), as a phone does when it changes networks: QUIC
    /// migrates the connections (RFC 9000, 9), and their sessions go on.
    pub fn rebind(&self, socket: std::net::UdpSocket) -> Result<(), ClientError> {
        self.endpoint
            .rebind(socket)
            .map_err(|e| ClientError::Connect(format!("rebinding the UDP socket: {e}")))
    }

    /// Closes every connection still open through the endpoint and waits (at
    /// most a second) until the servers have been told. A program that ends
    /// without this leaves its sessions open on the servers until their idle
    /// timeout.
    pub async fn close(&self) {
        self.endpoint.close(quinn::VarInt::from_u32(0), b"client closed");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
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
fn endpoint(tls: rustls::ClientConfig, bind_ip: Option<IpAddr>) -> Result<Endpoint, ClientError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| ClientError::Connect(format!("TLS setup for QUIC: {e}")))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    transport.enable_segmentation_offload(false);
    config.transport_config(Arc::new(transport));
    let bind = SocketAddr::new(bind_ip.unwrap_or(IpAddr::from([0, 0, 0, 0])), 0);
    let socket = udp_socket(bind).map_err(|e| ClientError::Connect(format!("UDP socket: {e}")))?;
    let runtime = quinn::default_runtime().ok_or_else(|| ClientError::Connect("no async runtime".into()))?;
    let mut endpoint = Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
        .map_err(|e| ClientError::Connect(format!("UDP socket: {e}")))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// A client UDP socket with room for bursts: a shared endpoint receives for
/// thousands of connections, and the kernel's default buffer (about 208 KiB)
/// overflowed in connect storms, each dropped packet costing a connection a
/// retransmission. The kernel caps the size at `net.core.rmem_max`.
fn udp_socket(bind: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    socket.bind(&bind.into())?;
    Ok(socket.into())
}

pub(super) struct Link {
    // Kept so the endpoint's UDP socket lives as long as the connection (it may
    // be shared with other clients).
    _endpoint: Endpoint,
    conn: Connection,
    /// Our control stream and the CONNECT stream: the session lasts as long as they do.
    _control: SendStream,
    connect: std::sync::Mutex<Option<SendStream>>,
    _peer: h3::PeerStreams,
    session_id: u64,
    encoding: Encoding,
    next_channel: AtomicU32,
}

/// How long a refused CONNECT's body (its error code) is waited for.
const REFUSAL_BODY_WAIT: Duration = Duration::from_secs(1);

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
            None => endpoint(tls, bind_ip)?,
        };
        let (host, addr) = super::resolve(url).await?;
        let conn = endpoint
            .connect(addr, &host)
            .map_err(|e| ClientError::Connect(format!("QUIC connect: {e}")))?
            .await
            .map_err(|e| ClientError::Connect(format!("QUIC handshake: {e}")))?;
        let request = web_transport_proto::ConnectRequest::new(url.clone());
        let established = async {
            let control = h3::open_control(&conn).await?;
            let (peer, (connect, _recv)) = tokio::try_join!(
                h3::accept_control(&conn),
                h3::connect(&conn, &request, REFUSAL_BODY_WAIT)
            )?;
            Ok::<_, H3Error>((control, peer, connect))
        };
        let (control, peer, connect) = match established.await {
            Ok(parts) => parts,
            Err(e) => {
                conn.close(quinn::VarInt::from_u32(e.code()), b"");
                return Err(refusal(e));
            }
        };
        let link = Self {
            _endpoint: endpoint,
            session_id: h3::session_id(&connect),
            conn,
            _control: control,
            connect: std::sync::Mutex::new(Some(connect)),
            _peer: peer,
            encoding,
            next_channel: AtomicU32::new(0),
        };
        let control = link.open_channel().await?;
        Ok((link, control))
    }

    pub(super) async fn open_channel(&self) -> Result<Channel, ClientError> {
        let (send, recv) = self
            .conn
            .open_bi()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (out_tx, out_rx) = mpsc::channel(INBOX);
        let (in_tx, in_rx) = mpsc::channel(INBOX);
        tokio::spawn(write_stream(send, h3::stream_header(self.session_id), out_rx));
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

    /// Closes the session (its close capsule, when the CONNECT stream can still
    /// take it) and the connection.
    pub(super) fn close(&self) {
        match self.connect.lock().ok().and_then(|mut c| c.take()) {
            Some(mut connect) => h3::close_session(&self.conn, &mut connect, 0, "client closed"),
            None => self.conn.close(quinn::VarInt::from_u32(0), b"client closed"),
        }
    }
}

impl Drop for Link {
    /// A dropped client closes its connection at once (quinn would only after
    /// every handle to it is gone, and never if the program ends first).
    fn drop(&mut self) {
        self.close();
    }
}

/// A failed WebTransport connect as the client reports it: a refusal with the
/// status and the server's `{"code","message"}` body when it sent one.
fn refusal(e: H3Error) -> ClientError {
    match e {
        H3Error::Refused { status, body } => {
            #[derive(serde::Deserialize)]
            struct Body {
                code: Option<ErrorCode>,
                message: Option<String>,
            }
            let parsed: Option<Body> = serde_json::from_slice(&body).ok();
            let code = parsed.as_ref().and_then(|b| b.code);
            let message = parsed
                .and_then(|b| b.message)
                .unwrap_or_else(|| format!("the server refused the WebTransport session ({status})"));
            ClientError::Rejected {
                status: Some(status),
                code,
                message,
            }
        }
        other => ClientError::Connect(format!("WebTransport session setup: {other}")),
    }
}

async fn write_stream(mut send: SendStream, header: Vec<u8>, mut out: mpsc::Receiver<Vec<u8>>) {
    // The stream's WebTransport header goes out at once: the stream exists
    // for the server from then on, before anything is sent on it.
    if send.write_all(&header).await.is_err() {
        return;
    }
    while let Some(bytes) = out.recv().await {
        if send.write_all(&bytes).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
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
