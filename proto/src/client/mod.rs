//! A native async client for the signaling server, over WebTransport or WSS
//! with one API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), proto::client::ClientError> {
//! use proto::client::{Client, ConnectOptions, Trust};
//! use proto::Signal;
//!
//! let hash = [0u8; 32]; // from the server's GET /cert-hashes
//! let opts = ConnectOptions::new("https://127.0.0.1:4433/", Trust::CertificateHashes(vec![hash]))
//!     .token("eyJ...");
//! let client = Client::connect(opts).await?;
//! let mut room = client.join("lobby").await?;
//! for member in room.members().to_vec() {
//!     room.signal(member.peer_id, Signal::Offer { sdp: "v=0...".into() }).await?;
//! }
//! while let Some(event) = room.recv().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! The URL picks the transport: `https://` is WebTransport, `wss://` is the
//! WebSocket fallback. Either way the client opens the control channel, says
//! `hello`, and returns once the server's `welcome` arrived.

pub mod resume;
mod tls;
mod websocket;
mod webtransport;

pub use tls::HashVerifier;
pub use webtransport::SharedEndpoint;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::codec::{self, Encoding};
use crate::error::ErrorCode;
use crate::ids::{ChannelId, PeerId};
use crate::message::{
    ClientMessage, EventCount, IceServer, Member, RequestId, Seq, ServerMessage, SessionLimits, Signal, Token,
};
use crate::version::PROTOCOL_VERSION;

/// How the client decides to trust the server's certificate.
#[derive(Clone, Debug)]
pub enum Trust {
    /// Accept exactly the certificates with these SHA-256 hashes, like a browser's
    /// `serverCertificateHashes` (the certificate must be valid for at most 14 days).
    CertificateHashes(Vec<[u8; 32]>),
    /// Verify the certificate chain against these roots.
    Roots(Arc<rustls::RootCertStore>),
}

/// Which transport a client is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportKind {
    WebTransport,
    WebSocket,
}

/// Everything [`Client::connect`] needs.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// `https://host:port/` for WebTransport, `wss://host:port/ws` for WSS.
    pub url: String,
    pub trust: Trust,
    pub token: Option<String>,
    /// Send the token in the connect URL (`?token=`) rather than in `hello`.
    pub token_in_url: bool,
    pub encoding: Encoding,
    /// The version announced in `hello`.
    pub version: u16,
    /// Bounds the whole connect: transport handshake, `hello` and `welcome`.
    pub timeout: Duration,
    /// The local address to connect from (any port), e.g. one of 127.0.0.0/8.
    pub bind_ip: Option<IpAddr>,
    /// WebTransport only: connect through this shared endpoint (its socket,
    /// source address and trust) instead of a socket of the client's own.
    pub endpoint: Option<SharedEndpoint>,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>, trust: Trust) -> Self {
        Self {
            url: url.into(),
            trust,
            token: None,
            token_in_url: false,
            encoding: Encoding::Bincode,
            version: PROTOCOL_VERSION,
            timeout: Duration::from_secs(10),
            bind_ip: None,
            endpoint: None,
        }
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn token_in_url(mut self, yes: bool) -> Self {
        self.token_in_url = yes;
        self
    }

    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    pub fn version(mut self, version: u16) -> Self {
        self.version = version;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn bind_ip(mut self, ip: IpAddr) -> Self {
        self.bind_ip = Some(ip);
        self
    }

    /// Connects over WebTransport through `endpoint` (see [`SharedEndpoint`]);
    /// ignored for WSS.
    pub fn endpoint(mut self, endpoint: SharedEndpoint) -> Self {
        self.endpoint = Some(endpoint);
        self
    }

    /// The transport the URL's scheme selects.
    pub fn transport(&self) -> Result<TransportKind, ClientError> {
        match self.url.split_once("://").map(|(scheme, _)| scheme) {
            Some("https") => Ok(TransportKind::WebTransport),
            Some("wss") => Ok(TransportKind::WebSocket),
            _ => Err(ClientError::Connect(format!(
                "unsupported URL {:?}: use https:// for WebTransport or wss:// for WSS",
                self.url
            ))),
        }
    }

    /// The connect URL, with the token and encoding in its query where they belong.
    fn connect_url(&self, kind: TransportKind) -> Result<url::Url, ClientError> {
        let mut url = url::Url::parse(&self.url).map_err(|e| ClientError::Connect(format!("bad URL: {e}")))?;
        {
            let mut query = url.query_pairs_mut();
            if kind == TransportKind::WebTransport {
                query.append_pair("encoding", self.encoding.as_str());
            }
            if let (true, Some(token)) = (self.token_in_url, &self.token) {
                query.append_pair("token", token);
            }
        }
        Ok(url)
    }
}

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect: {0}")]
    Connect(String),
    /// The server refused the connection before it opened a session.
    /// Both transports give the status and, from this server, its error code.
    #[error("connection refused (status {status:?}, code {code:?}): {message}")]
    Rejected {
        status: Option<u16>,
        code: Option<ErrorCode>,
        message: String,
    },
    /// The server answered with an `error` or closed the session with a `goodbye`.
    #[error("server error {code}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("the connection closed")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error("unexpected message from the server: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The server's error code, if the server gave one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            ClientError::Rejected { code, .. } => *code,
            _ => None,
        }
    }
}

/// How a channel's messages are put on the wire.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// A WebTransport stream of its own: length-prefixed frames.
    Stream,
    /// A shared WebSocket: each frame enveloped with the channel id.
    Envelope(ChannelId),
}

/// One logical channel of a session: the control channel or a room's.
#[derive(Debug)]
pub struct Channel {
    id: ChannelId,
    encoding: Encoding,
    framing: Framing,
    out: mpsc::Sender<Vec<u8>>,
    inbox: mpsc::Receiver<ServerMessage>,
    /// The `seq` the next `signal` or `broadcast` sent without one gets.
    next_seq: AtomicU64,
}

/// How many messages may wait, per channel, for the application to read them.
const INBOX: usize = 1024;

impl Channel {
    /// The channel's id (WebTransport streams are numbered in the order they opened).
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Sends a message on this channel. A `signal` or `broadcast` without a
    /// `seq` gets the channel's next one; one with a `seq` is sent as it is.
    pub async fn send(&self, msg: &ClientMessage) -> Result<(), ClientError> {
        match msg {
            ClientMessage::Signal { seq: None, .. } | ClientMessage::Broadcast { seq: None, .. } => {
                let mut numbered = msg.clone();
                if let ClientMessage::Signal { seq, .. } | ClientMessage::Broadcast { seq, .. } = &mut numbered {
                    *seq = Some(self.next_seq());
                }
                self.send_as_is(&numbered).await
            }
            _ => self.send_as_is(msg).await,
        }
    }

    /// The next `seq` of this channel.
    pub fn next_seq(&self) -> Seq {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    async fn send_as_is(&self, msg: &ClientMessage) -> Result<(), ClientError> {
        send_on(self.framing, self.encoding, &self.out, msg).await
    }

    /// Sets the `seq` the next `signal` or `broadcast` gets (a resumed room
    /// goes on numbering where it was).
    pub fn set_next_seq(&self, seq: Seq) {
        self.next_seq.store(seq, Ordering::Relaxed);
    }

    /// Splits the channel into a sender (messages are sent as they are, `seq`
    /// included) and its inbox, so that one task can send while another reads.
    pub fn split(self) -> (ChannelSender, mpsc::Receiver<ServerMessage>) {
        let sender = ChannelSender {
            id: self.id,
            encoding: self.encoding,
            framing: self.framing,
            out: self.out,
        };
        (sender, self.inbox)
    }

    /// Sends one frame with exactly this payload, valid or not: for testing servers.
    /// On WebTransport the length prefix is added; on WSS `payload` is the whole
    /// WebSocket message (so it must carry its own channel envelope).
    pub async fn send_raw_frame(&self, payload: &[u8]) -> Result<(), ClientError> {
        let bytes = match self.framing {
            Framing::Stream => {
                let mut buf = Vec::with_capacity(payload.len() + 4);
                crate::frame::write_frame(&mut buf, payload);
                buf
            }
            Framing::Envelope(_) => payload.to_vec(),
        };
        self.out.send(bytes).await.map_err(|_| ClientError::Closed)
    }

    /// The next message from the server on this channel; `None` once the channel
    /// or the connection closed.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        self.inbox.recv().await
    }

    /// Like [`recv`](Self::recv) but gives up after `timeout`.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<ServerMessage, ClientError> {
        match tokio::time::timeout(timeout, self.inbox.recv()).await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        }
    }
}

async fn send_on(
    framing: Framing,
    encoding: Encoding,
    out: &mpsc::Sender<Vec<u8>>,
    msg: &ClientMessage,
) -> Result<(), ClientError> {
    let bytes = match framing {
        Framing::Stream => crate::frame::encode_frame(encoding, msg),
        Framing::Envelope(ch) => codec::encode_enveloped(encoding, ch, msg),
    };
    out.send(bytes).await.map_err(|_| ClientError::Closed)
}

/// The sending half of a [`Channel`] (see [`Channel::split`]).
#[derive(Debug)]
pub struct ChannelSender {
    id: ChannelId,
    encoding: Encoding,
    framing: Framing,
    out: mpsc::Sender<Vec<u8>>,
}

impl ChannelSender {
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Sends `msg` exactly as it is.
    pub async fn send(&self, msg: &ClientMessage) -> Result<(), ClientError> {
        send_on(self.framing, self.encoding, &self.out, msg).await
    }
}

/// What the server told the client in `welcome`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub session_id: String,
    pub peer_id: PeerId,
    pub user_id: String,
    pub limits: SessionLimits,
    /// Gives a later connection this session back ([`Pending::resume`]).
    pub resume_token: Option<Token>,
    /// This session was resumed (same session and peer id).
    pub resumed: bool,
    /// The STUN and TURN servers to use, TURN credentials minted for this session.
    pub ice_servers: Vec<IceServer>,
    /// When the TURN credentials expire (Unix seconds): see [`Client::ice_servers`].
    pub ice_servers_expire_at: Option<u64>,
}

/// The answer to [`Client::ice_servers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceServers {
    pub servers: Vec<IceServer>,
    /// When their TURN credentials expire (Unix seconds), if any do.
    pub expires_at: Option<u64>,
}

/// The answer to a resuming `hello`.
pub enum Resumption {
    /// The session is back: same session and peer id; join its rooms again with
    /// [`Client::rejoin`].
    Resumed(Client),
    /// The server refused (the code says why: `resume_expired`, ...); the
    /// connection waits for a plain [`Pending::hello`].
    Refused {
        pending: Pending,
        code: ErrorCode,
        message: String,
    },
}

/// The answer to a resuming `join`.
pub enum Rejoin {
    /// The room is back as it was: the missed events follow on its channel;
    /// `last_seq` is the last `seq` the server accepted from this client there.
    Resumed { room: Room, last_seq: Seq },
    /// Some missed events were lost: the room starts afresh with its members
    /// (the other members noticed nothing).
    Restarted(Room),
}

/// The transport underneath a client, able to open more channels.
enum Link {
    WebTransport(webtransport::Link),
    WebSocket(websocket::Link),
}

/// A connected, authenticated session.
pub struct Client {
    link: Link,
    control: Channel,
    welcome: Welcome,
    next_request: AtomicU32,
}

/// A connection whose session has not said `hello` yet: for clients that want
/// to drive the handshake themselves (and for testing servers).
pub struct Pending {
    link: Link,
    control: Channel,
    token: Option<String>,
    version: u16,
}

impl Pending {
    /// The control channel, to send anything before `hello`.
    pub fn control(&mut self) -> &mut Channel {
        &mut self.control
    }

    /// Says `hello` (with the token unless it went in the URL) and waits for `welcome`.
    pub async fn hello(self) -> Result<Client, ClientError> {
        match self.say_hello(None).await? {
            Ok(client) => Ok(client),
            Err((_, code, message)) => Err(ClientError::Server { code, message }),
        }
    }

    /// Says `hello` with the `resume_token` of a session whose connection was
    /// lost, and waits for the answer.
    pub async fn resume(self, resume_token: Token) -> Result<Resumption, ClientError> {
        Ok(match self.say_hello(Some(resume_token)).await? {
            Ok(client) => Resumption::Resumed(client),
            Err((pending, code, message)) => Resumption::Refused { pending, code, message },
        })
    }

    /// Sends `hello`; an `error` answering it comes back with the connection.
    async fn say_hello(
        mut self,
        resume: Option<Token>,
    ) -> Result<Result<Client, (Pending, ErrorCode, String)>, ClientError> {
        // The token is sent with every hello: after a refused resume the
        // server also takes a plain hello without one (it remembers it).
        let token = self.token.clone().map(Token);
        self.control
            .send(&ClientMessage::Hello {
                id: Some(0),
                version: self.version,
                token,
                resume,
            })
            .await?;
        loop {
            match self.control.recv().await {
                Some(ServerMessage::Welcome {
                    version,
                    session_id,
                    peer_id,
                    user_id,
                    limits,
                    resume_token,
                    resumed,
                    ice_servers,
                    ice_servers_expire_at,
                    ..
                }) => {
                    let welcome = Welcome {
                        version,
                        session_id,
                        peer_id,
                        user_id,
                        limits,
                        resume_token,
                        resumed,
                        ice_servers,
                        ice_servers_expire_at,
                    };
                    return Ok(Ok(Client {
                        link: self.link,
                        control: self.control,
                        welcome,
                        next_request: AtomicU32::new(1),
                    }));
                }
                Some(ServerMessage::Error {
                    id: Some(0),
                    code,
                    message,
                }) if is_resume_refusal(code) => return Ok(Err((self, code, message))),
                Some(ServerMessage::Error { code, message, .. } | ServerMessage::Goodbye { code, message }) => {
                    return Err(ClientError::Server { code, message });
                }
                // Answers to whatever the application sent before hello.
                Some(ServerMessage::Pong { .. } | ServerMessage::Ack { .. }) => continue,
                Some(other) => {
                    return Err(ClientError::Protocol(format!("expected welcome, got {}", other.kind())));
                }
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Closes the connection at once.
    pub fn close(&self) {
        self.link.close();
    }
}

/// The codes that refuse a resume but leave the connection open for a plain `hello`.
fn is_resume_refusal(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::ResumeExpired
            | ErrorCode::ResumeInvalid
            | ErrorCode::ResumeUsed
            | ErrorCode::ResumeElsewhere
            | ErrorCode::WrongUser
    )
}

impl Link {
    fn close(&self) {
        match self {
            Link::WebTransport(link) => link.close(),
            Link::WebSocket(link) => link.close(),
        }
    }
}

impl Client {
    /// Connects, says `hello` and waits for `welcome`, all within `opts.timeout`.
    pub async fn connect(opts: ConnectOptions) -> Result<Self, ClientError> {
        let timeout = opts.timeout;
        tokio::time::timeout(timeout, async { Self::open(opts).await?.hello().await })
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Opens the transport and the control channel, without saying `hello`.
    pub async fn open(opts: ConnectOptions) -> Result<Pending, ClientError> {
        let kind = opts.transport()?;
        let url = opts.connect_url(kind)?;
        let tls = tls::client_config(&opts.trust, kind)?;
        let open = async {
            match kind {
                TransportKind::WebTransport => {
                    let (link, control) =
                        webtransport::Link::connect(&url, tls, opts.encoding, opts.bind_ip, opts.endpoint.as_ref())
                            .await?;
                    Ok((Link::WebTransport(link), control))
                }
                TransportKind::WebSocket => {
                    let (link, control) = websocket::Link::connect(&url, tls, opts.encoding, opts.bind_ip).await?;
                    Ok((Link::WebSocket(link), control))
                }
            }
        };
        let (link, control) = tokio::time::timeout(opts.timeout, open)
            .await
            .map_err(|_| ClientError::Timeout)??;
        let token = if opts.token_in_url { None } else { opts.token };
        Ok(Pending {
            link,
            control,
            token,
            version: opts.version,
        })
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub fn peer_id(&self) -> PeerId {
        self.welcome.peer_id
    }

    pub fn transport(&self) -> TransportKind {
        match self.link {
            Link::WebTransport(_) => TransportKind::WebTransport,
            Link::WebSocket(_) => TransportKind::WebSocket,
        }
    }

    /// The control channel: pings, session-wide errors and the final `goodbye`.
    pub fn control(&mut self) -> &mut Channel {
        &mut self.control
    }

    /// Takes the control channel's inbox, for a task that reads it while
    /// another uses the client; [`Client::control`] receives nothing after this.
    pub fn take_control_inbox(&mut self) -> mpsc::Receiver<ServerMessage> {
        let (_, closed) = mpsc::channel(1);
        std::mem::replace(&mut self.control.inbox, closed)
    }

    /// Sends a message on the control channel.
    pub async fn send_control(&self, msg: &ClientMessage) -> Result<(), ClientError> {
        self.control.send(msg).await
    }

    /// A fresh request id.
    pub fn next_request_id(&self) -> RequestId {
        self.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a new channel without sending anything on it (see [`join`](Self::join)).
    pub async fn open_channel(&self) -> Result<Channel, ClientError> {
        match &self.link {
            Link::WebTransport(link) => link.open_channel().await,
            Link::WebSocket(link) => Ok(link.open_channel()),
        }
    }

    /// Joins a room on a channel of its own.
    pub async fn join(&self, room: &str) -> Result<Room, ClientError> {
        match self.join_with(room, None).await? {
            Rejoin::Restarted(room) => Ok(room),
            Rejoin::Resumed { .. } => Err(ClientError::Protocol("rejoined without resume_after".into())),
        }
    }

    /// After a resumed `welcome`: joins a room of the resumed session again on
    /// a new channel, having received its first `received` events.
    pub async fn rejoin(&self, room: &str, received: EventCount) -> Result<Rejoin, ClientError> {
        self.join_with(room, Some(received)).await
    }

    async fn join_with(&self, room: &str, resume_after: Option<EventCount>) -> Result<Rejoin, ClientError> {
        let mut channel = self.open_channel().await?;
        let id = self.next_request_id();
        channel
            .send(&ClientMessage::Join {
                id: Some(id),
                room: room.to_owned(),
                resume_after,
            })
            .await?;
        loop {
            match channel.recv().await {
                Some(ServerMessage::Joined { members, room, .. }) => {
                    return Ok(Rejoin::Restarted(Room {
                        channel,
                        name: room,
                        members,
                    }));
                }
                Some(ServerMessage::Rejoined { room, last_seq, .. }) => {
                    channel.set_next_seq(last_seq + 1);
                    let room = Room {
                        channel,
                        name: room,
                        members: Vec::new(),
                    };
                    return Ok(Rejoin::Resumed { room, last_seq });
                }
                Some(ServerMessage::Error { code, message, .. }) => {
                    return Err(ClientError::Server { code, message });
                }
                Some(ServerMessage::Pong { .. }) => continue,
                Some(other) => {
                    return Err(ClientError::Protocol(format!("expected joined, got {}", other.kind())));
                }
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Sends a `ping` on the control channel and waits for its `pong`; returns the round trip.
    pub async fn ping(&mut self) -> Result<Duration, ClientError> {
        let nonce = self.next_request_id();
        let start = tokio::time::Instant::now();
        self.control.send(&ClientMessage::Ping { id: None, nonce }).await?;
        loop {
            match self.control.recv().await {
                Some(ServerMessage::Pong { nonce: n, .. }) if n == nonce => {
                    return Ok(start.elapsed());
                }
                Some(ServerMessage::Goodbye { code, message }) => {
                    return Err(ClientError::Server { code, message });
                }
                Some(_) => continue,
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Replaces the session's token with a fresh one for the same user (send it
    /// when the server says `token_expiring`) and waits for the server's answer.
    /// Other control-channel messages that arrive meanwhile are skipped.
    pub async fn refresh(&mut self, token: impl Into<String>) -> Result<(), ClientError> {
        let id = self.next_request_id();
        let token = Token(token.into());
        self.control_request(&ClientMessage::Refresh { id: Some(id), token }, id)
            .await
            .map(drop)
    }

    /// Asks for the session's ICE servers with fresh TURN credentials (before
    /// [`Welcome::ice_servers_expire_at`]) and waits for them. Other
    /// control-channel messages that arrive meanwhile are skipped.
    pub async fn ice_servers(&mut self) -> Result<IceServers, ClientError> {
        let id = self.next_request_id();
        match self
            .control_request(&ClientMessage::IceServers { id: Some(id) }, id)
            .await?
        {
            ServerMessage::IceServers {
                ice_servers,
                expires_at,
                ..
            } => Ok(IceServers {
                servers: ice_servers,
                expires_at,
            }),
            other => Err(ClientError::Protocol(format!("{} answering ice_servers", other.kind()))),
        }
    }

    /// Sends a request with id `id` on the control channel and waits for its
    /// answer (an `ack` or a reply carrying the id); an `error` with the id or a
    /// `goodbye` fails it, anything else is skipped.
    async fn control_request(&mut self, msg: &ClientMessage, id: RequestId) -> Result<ServerMessage, ClientError> {
        self.control.send(msg).await?;
        loop {
            match self.control.recv().await {
                Some(
                    answer @ (ServerMessage::Ack { id: answered }
                    | ServerMessage::IceServers { id: Some(answered), .. }),
                ) if answered == id => return Ok(answer),
                Some(ServerMessage::Error {
                    id: Some(failed),
                    code,
                    message,
                }) if failed == id => return Err(ClientError::Server { code, message }),
                Some(ServerMessage::Goodbye { code, message }) => return Err(ClientError::Server { code, message }),
                Some(_) => continue,
                None => return Err(ClientError::Closed),
            }
        }
    }

    /// Closes the connection at once, without waiting for anything.
    pub fn close(&self) {
        self.link.close();
    }
}

/// A joined room: its channel, and the members that were there when it was joined.
#[derive(Debug)]
pub struct Room {
    channel: Channel,
    name: String,
    members: Vec<Member>,
}

impl Room {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The other members at the time of joining.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn channel(&mut self) -> &mut Channel {
        &mut self.channel
    }

    /// Sends a signal to a peer of the room (no acknowledgement asked).
    pub async fn signal(&self, to: PeerId, signal: Signal) -> Result<(), ClientError> {
        let seq = Some(self.channel.next_seq());
        self.channel
            .send(&ClientMessage::Signal {
                id: None,
                seq,
                to,
                signal,
            })
            .await
    }

    /// Sends a payload to every other member.
    pub async fn broadcast(&self, data: impl Into<String>) -> Result<(), ClientError> {
        self.channel
            .send(&ClientMessage::Broadcast {
                id: None,
                seq: Some(self.channel.next_seq()),
                data: data.into(),
            })
            .await
    }

    /// Sends any message on the room's channel.
    pub async fn send(&self, msg: &ClientMessage) -> Result<(), ClientError> {
        self.channel.send(msg).await
    }

    /// The next event of the room.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        self.channel.recv().await
    }

    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<ServerMessage, ClientError> {
        self.channel.recv_timeout(timeout).await
    }

    /// Leaves the room and waits for the server's `left`.
    pub async fn leave(mut self) -> Result<(), ClientError> {
        self.channel.send(&ClientMessage::Leave { id: Some(u32::MAX) }).await?;
        loop {
            match self.channel.recv().await {
                Some(ServerMessage::Left { .. }) => return Ok(()),
                Some(ServerMessage::Error { code, message, .. }) => {
                    return Err(ClientError::Server { code, message });
                }
                Some(_) => continue,
                None => return Err(ClientError::Closed),
            }
        }
    }
}

/// Decodes a server message received on a channel, logging what cannot be decoded.
/// The URL's host (without an IPv6 address's brackets) and the first address
/// it resolves to, at its port or the scheme's.
async fn resolve(url: &url::Url) -> Result<(String, std::net::SocketAddr), ClientError> {
    let host = url
        .host_str()
        .ok_or_else(|| ClientError::Connect("the URL has no host".into()))?
        .trim_matches(['[', ']'])
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| ClientError::Connect(format!("resolving {host}: {e}")))?
        .next()
        .ok_or_else(|| ClientError::Connect(format!("{host} has no address")))?;
    Ok((host, addr))
}

fn decode_server(encoding: Encoding, bytes: &[u8]) -> Option<ServerMessage> {
    match codec::decode(encoding, bytes) {
        Ok(msg) => Some(msg),
        Err(e) => {
            tracing::warn!(error = %e, "undecodable frame from the server");
            None
        }
    }
}
