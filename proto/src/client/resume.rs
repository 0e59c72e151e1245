//! A client that survives its connection: when the connection is lost it
//! reconnects with backoff (over the next of its endpoints, so WebTransport
//! can give way to WSS and back), resumes its session, joins its rooms again
//! and gets what it missed, exactly once; its rooms' receivers never notice.
//!
//! ```no_run
//! # async fn demo(wt: proto::client::ConnectOptions, wss: proto::client::ConnectOptions) -> Result<(), proto::client::ClientError> {
//! use proto::client::resume::{ResumeOptions, ResumingClient, SessionEvent};
//!
//! let (client, mut events) = ResumingClient::connect(ResumeOptions::new(vec![wt, wss])).await?;
//! let mut room = client.join("lobby").await?;
//! tokio::spawn(async move {
//!     while let Some(event) = events.recv().await {
//!         if let SessionEvent::Restarted { .. } = event {
//!             // A new session (new peer id): renegotiate the calls.
//!         }
//!     }
//! });
//! while let Some(event) = room.recv().await {
//!     println!("{event:?}");
//! }
//! # Ok(()) }
//! ```
//!
//! What it does for the application: every `signal` and `broadcast` is kept
//! until the server acknowledges it and sent again after a resume if the
//! server did not have it (`rejoined`'s `last_seq`); the room's events are
//! counted and acknowledged with `received`, and a resuming `join` names the
//! count so that the server sends only what was missed. A lost connection is
//! noticed by a missing `pong` as much as by the transport. If the session
//! cannot be resumed, a new one is opened, the rooms are joined afresh, each
//! room's receiver gets a `joined` with the members, and
//! [`SessionEvent::Restarted`] says so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{ChannelSender, Client, ClientError, ConnectOptions, Rejoin, Resumption, Room, TransportKind};
use crate::error::ErrorCode;
use crate::ids::PeerId;
use crate::message::{ClientMessage, EventCount, Member, RequestId, Seq, ServerMessage, Signal, Token};

/// How a [`ResumingClient`] connects, notices a lost connection and comes back.
#[derive(Clone, Debug)]
pub struct ResumeOptions {
    /// Where to connect, in order of preference; after a loss the next one is
    /// tried first, then the others in turn.
    pub endpoints: Vec<ConnectOptions>,
    /// How often to ping the server.
    pub ping_interval: Duration,
    /// A `pong` that takes longer than this means the connection is lost.
    pub pong_timeout: Duration,
    /// The first delay between attempts to reconnect; it doubles up to `max_backoff`.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Reconnecting stops after this long without success.
    pub give_up_after: Duration,
    /// Room events acknowledged at once after this many (and once a ping interval in any case).
    pub ack_every: EventCount,
}

impl ResumeOptions {
    pub fn new(endpoints: Vec<ConnectOptions>) -> Self {
        Self {
            endpoints,
            ping_interval: Duration::from_secs(5),
            pong_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
            ack_every: 16,
        }
    }
}

/// What happened to the session underneath.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionEvent {
    /// The connection was lost; reconnecting.
    Reconnecting { error: String },
    /// Back on a new connection as the same session (same peer id): nothing was lost.
    Resumed { transport: TransportKind },
    /// The session could not be resumed (`code` says why) and a new one was
    /// opened: a new peer id, and every room joined afresh.
    Restarted {
        transport: TransportKind,
        peer_id: PeerId,
        code: Option<ErrorCode>,
    },
    /// Reconnecting gave up, or the server ended the session for good.
    Closed { error: String },
}

/// A session that resumes by itself; see the module documentation.
pub struct ResumingClient {
    commands: mpsc::Sender<Command>,
    shared: Arc<Mutex<Shared>>,
}

/// A room of a [`ResumingClient`].
pub struct ResumingRoom {
    name: String,
    members: Vec<Member>,
    events: mpsc::Receiver<ServerMessage>,
    commands: mpsc::Sender<Command>,
}

#[derive(Clone, Copy)]
struct Shared {
    peer_id: PeerId,
    transport: TransportKind,
}

type Joined = Result<(Vec<Member>, mpsc::Receiver<ServerMessage>), ClientError>;

enum Command {
    Join {
        room: String,
        reply: oneshot::Sender<Joined>,
    },
    Send {
        room: String,
        msg: Outbound,
    },
    Close,
}

enum Outbound {
    Signal { to: PeerId, signal: Signal },
    Broadcast { data: String },
}

impl ResumingClient {
    /// Connects to the first endpoint that answers and opens a session.
    pub async fn connect(opts: ResumeOptions) -> Result<(Self, mpsc::Receiver<SessionEvent>), ClientError> {
        let mut last = ClientError::Connect("no endpoints".into());
        for (index, endpoint) in opts.endpoints.iter().enumerate() {
            match Client::connect(endpoint.clone()).await {
                Ok(client) => {
                    let shared = Arc::new(Mutex::new(Shared {
                        peer_id: client.peer_id(),
                        transport: client.transport(),
                    }));
                    let (commands, commands_rx) = mpsc::channel(256);
                    let (events_tx, events) = mpsc::channel(64);
                    let driver = Driver::new(opts, index, client, shared.clone(), events_tx);
                    tokio::spawn(driver.run(commands_rx));
                    return Ok((Self { commands, shared }, events));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The session's peer id now (a restarted session has a new one).
    pub fn peer_id(&self) -> PeerId {
        self.shared.lock().expect("shared lock").peer_id
    }

    /// The transport in use now.
    pub fn transport(&self) -> TransportKind {
        self.shared.lock().expect("shared lock").transport
    }

    /// Joins a room (while connected).
    pub async fn join(&self, room: &str) -> Result<ResumingRoom, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Join {
                room: room.to_owned(),
                reply,
            })
            .await
            .map_err(|_| ClientError::Closed)?;
        let (members, events) = answer.await.map_err(|_| ClientError::Closed)??;
        Ok(ResumingRoom {
            name: room.to_owned(),
            members,
            events,
            commands: self.commands.clone(),
        })
    }

    /// Closes the session (its peers see it leave).
    pub async fn close(&self) {
        let _ = self.commands.send(Command::Close).await;
    }
}

impl ResumingRoom {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The other members at the time of joining.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Sends a signal to a peer of the room; it reaches it exactly once, across
    /// lost connections, unless the session is restarted meanwhile.
    pub async fn signal(&self, to: PeerId, signal: Signal) -> Result<(), ClientError> {
        self.send(Outbound::Signal { to, signal }).await
    }

    /// Sends a payload to every other member, exactly once like [`signal`](Self::signal).
    pub async fn broadcast(&self, data: impl Into<String>) -> Result<(), ClientError> {
        self.send(Outbound::Broadcast { data: data.into() }).await
    }

    async fn send(&self, msg: Outbound) -> Result<(), ClientError> {
        self.commands
            .send(Command::Send {
                room: self.name.clone(),
                msg,
            })
            .await
            .map_err(|_| ClientError::Closed)
    }

    /// The room's next event (`signal`, `broadcast`, `peer_joined`,
    /// `peer_left`, an `error` about something this client sent, or a `joined`
    /// when the session was restarted); `None` once the session is closed.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        self.events.recv().await
    }

    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<ServerMessage, ClientError> {
        match tokio::time::timeout(timeout, self.events.recv()).await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout),
        }
    }
}

/// A room as the driver keeps it.
struct RoomState {
    name: String,
    sender: Option<ChannelSender>,
    to_app: mpsc::Sender<ServerMessage>,
    /// Events received since the room was joined (the numbering of `EventCount`).
    received: EventCount,
    /// The count last acknowledged with `received`.
    acked: EventCount,
    next_seq: Seq,
    /// Signals and broadcasts the server has not acknowledged, by request id.
    unacked: BTreeMap<RequestId, (Seq, ClientMessage)>,
}

/// Which channel a forwarded message came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    Control,
    Room(usize),
}

/// A message from a channel of connection `link` (`None`: the channel closed).
type Forwarded = (u64, From, Option<ServerMessage>);

/// The task behind a [`ResumingClient`]: owns the connection and the rooms.
struct Driver {
    opts: ResumeOptions,
    endpoint: usize,
    client: Client,
    token: Option<Token>,
    rooms: Vec<RoomState>,
    /// Connections are numbered: what an old one's channels forward is ignored.
    link: u64,
    inbox_tx: mpsc::Sender<Forwarded>,
    inbox: mpsc::Receiver<Forwarded>,
    next_id: RequestId,
    /// The ping waiting for its pong, and when it was sent.
    ping: Option<(u32, Instant)>,
    last_ping: Instant,
    shared: Arc<Mutex<Shared>>,
    events: mpsc::Sender<SessionEvent>,
}

/// Why the connection must be replaced.
struct Lost(String);

impl Driver {
    fn new(
        opts: ResumeOptions,
        endpoint: usize,
        client: Client,
        shared: Arc<Mutex<Shared>>,
        events: mpsc::Sender<SessionEvent>,
    ) -> Self {
        let (inbox_tx, inbox) = mpsc::channel(1024);
        let mut driver = Self {
            opts,
            endpoint,
            token: client.welcome().resume_token.clone(),
            client,
            rooms: Vec::new(),
            link: 0,
            inbox_tx,
            inbox,
            next_id: 1,
            ping: None,
            last_ping: Instant::now(),
            shared,
            events,
        };
        driver.forward_control();
        driver
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(self.opts.ping_interval.min(self.opts.pong_timeout) / 2);
        loop {
            let result = tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Close) | None => {
                        self.client.close();
                        return;
                    }
                    Some(Command::Join { room, reply }) => self.join(room, reply).await,
                    Some(Command::Send { room, msg }) => self.send(&room, msg).await,
                },
                Some((link, from, msg)) = self.inbox.recv() => {
                    if link != self.link {
                        continue;
                    }
                    self.on_message(from, msg).await
                }
                _ = tick.tick() => self.on_tick().await,
            };
            if let Err(Lost(error)) = result
                && !self.reconnect(error).await
            {
                return;
            }
        }
    }

    async fn join(&mut self, name: String, reply: oneshot::Sender<Joined>) -> Result<(), Lost> {
        if self.rooms.iter().any(|r| r.name == name) {
            let _ = reply.send(Err(ClientError::Server {
                code: ErrorCode::AlreadyJoined,
                message: format!("already in room {name}"),
            }));
            return Ok(());
        }
        match self.client.join(&name).await {
            Ok(room) => {
                let (to_app, from_driver) = mpsc::channel(super::INBOX);
                let members = room.members().to_vec();
                self.rooms.push(RoomState {
                    name,
                    sender: None,
                    to_app,
                    received: 0,
                    acked: 0,
                    next_seq: 1,
                    unacked: BTreeMap::new(),
                });
                self.attach(self.rooms.len() - 1, room);
                let _ = reply.send(Ok((members, from_driver)));
                Ok(())
            }
            Err(e @ ClientError::Server { .. }) => {
                let _ = reply.send(Err(e));
                Ok(())
            }
            Err(e) => {
                let _ = reply.send(Err(ClientError::Closed));
                Err(Lost(e.to_string()))
            }
        }
    }

    /// Gives room `index` the channel of `room` and forwards what arrives on it.
    fn attach(&mut self, index: usize, room: Room) {
        let (sender, mut inbox) = room.channel.split();
        self.rooms[index].sender = Some(sender);
        let (tx, link) = (self.inbox_tx.clone(), self.link);
        tokio::spawn(async move {
            while let Some(msg) = inbox.recv().await {
                if tx.send((link, From::Room(index), Some(msg))).await.is_err() {
                    return;
                }
            }
            let _ = tx.send((link, From::Room(index), None)).await;
        });
    }

    fn forward_control(&mut self) {
        let mut inbox = self.client.take_control_inbox();
        let (tx, link) = (self.inbox_tx.clone(), self.link);
        tokio::spawn(async move {
            while let Some(msg) = inbox.recv().await {
                if tx.send((link, From::Control, Some(msg))).await.is_err() {
                    return;
                }
            }
            let _ = tx.send((link, From::Control, None)).await;
        });
    }

    async fn send(&mut self, name: &str, msg: Outbound) -> Result<(), Lost> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let Some(room) = self.rooms.iter_mut().find(|r| r.name == name) else {
            return Ok(());
        };
        let seq = room.next_seq;
        room.next_seq += 1;
        let msg = match msg {
            Outbound::Signal { to, signal } => ClientMessage::Signal {
                id: Some(id),
                seq: Some(seq),
                to,
                signal,
            },
            Outbound::Broadcast { data } => ClientMessage::Broadcast {
                id: Some(id),
                seq: Some(seq),
                data,
            },
        };
        room.unacked.insert(id, (seq, msg.clone()));
        match &room.sender {
            Some(sender) => sender.send(&msg).await.map_err(|e| Lost(e.to_string())),
            // Sent once the room is back.
            None => Ok(()),
        }
    }

    async fn on_message(&mut self, from: From, msg: Option<ServerMessage>) -> Result<(), Lost> {
        let Some(msg) = msg else {
            return Err(Lost("a channel closed".into()));
        };
        match from {
            From::Control => match msg {
                ServerMessage::Pong { nonce, .. } if self.ping.is_some_and(|(n, _)| n == nonce) => {
                    self.ping = None;
                    Ok(())
                }
                ServerMessage::Goodbye { code, message } => match code {
                    // The server restarts or let the session go: a new one will do.
                    ErrorCode::ShuttingDown | ErrorCode::IdleTimeout | ErrorCode::SlowConsumer => {
                        Err(Lost(format!("goodbye {code}: {message}")))
                    }
                    _ => {
                        let _ = self
                            .events
                            .send(SessionEvent::Closed {
                                error: format!("goodbye {code}: {message}"),
                            })
                            .await;
                        self.client.close();
                        self.rooms.clear();
                        Ok(())
                    }
                },
                _ => Ok(()),
            },
            From::Room(index) => self.on_room_message(index, msg).await,
        }
    }

    async fn on_room_message(&mut self, index: usize, msg: ServerMessage) -> Result<(), Lost> {
        let ack_every = self.opts.ack_every;
        let Some(room) = self.rooms.get_mut(index) else {
            return Ok(());
        };
        match &msg {
            ServerMessage::Ack { id } => {
                room.unacked.remove(id);
                return Ok(());
            }
            ServerMessage::Error { id: Some(id), .. } => {
                room.unacked.remove(id);
            }
            _ => {}
        }
        if msg.is_room_event() {
            room.received += 1;
        }
        let _ = room.to_app.send(msg).await;
        if room.received - room.acked >= ack_every {
            return self.acknowledge(index).await;
        }
        Ok(())
    }

    /// Tells the server what room `index` has received.
    async fn acknowledge(&mut self, index: usize) -> Result<(), Lost> {
        let room = &mut self.rooms[index];
        let Some(sender) = &room.sender else { return Ok(()) };
        if room.received == room.acked {
            return Ok(());
        }
        room.acked = room.received;
        sender
            .send(&ClientMessage::Received { upto: room.received })
            .await
            .map_err(|e| Lost(e.to_string()))
    }

    async fn on_tick(&mut self) -> Result<(), Lost> {
        match self.ping {
            // A ping is out: its pong is late, or not yet.
            Some((_, sent)) if sent.elapsed() > self.opts.pong_timeout => {
                return Err(Lost("no pong in time".into()));
            }
            Some(_) => {}
            None if self.last_ping.elapsed() < self.opts.ping_interval => {}
            None => {
                let nonce = self.next_id;
                self.next_id = self.next_id.wrapping_add(1).max(1);
                self.last_ping = Instant::now();
                self.ping = Some((nonce, self.last_ping));
                self.client
                    .send_control(&ClientMessage::Ping { id: None, nonce })
                    .await
                    .map_err(|e| Lost(e.to_string()))?;
            }
        }
        for index in 0..self.rooms.len() {
            self.acknowledge(index).await?;
        }
        Ok(())
    }

    /// Replaces the lost connection: resumes the session, or opens a new one.
    /// False when it gave up.
    async fn reconnect(&mut self, error: String) -> bool {
        // The old connection is not closed: a close that reached the server
        // would end the session. It is dropped once a new one is established;
        // the server closes it when the session is resumed.
        self.link += 1;
        self.ping = None;
        for room in &mut self.rooms {
            room.sender = None;
        }
        let _ = self.events.send(SessionEvent::Reconnecting { error }).await;
        let start = Instant::now();
        let mut delay = Duration::ZERO;
        loop {
            if start.elapsed() > self.opts.give_up_after {
                let error = format!("could not reconnect within {:?}", self.opts.give_up_after);
                let _ = self.events.send(SessionEvent::Closed { error }).await;
                self.rooms.clear();
                return false;
            }
            tokio::time::sleep(delay.mul_f64(jitter())).await;
            delay = (delay * 2).clamp(self.opts.initial_backoff, self.opts.max_backoff);
            self.endpoint = (self.endpoint + 1) % self.opts.endpoints.len().max(1);
            let Some(endpoint) = self.opts.endpoints.get(self.endpoint).cloned() else {
                return false;
            };
            match self.come_back(endpoint).await {
                Ok(event) => {
                    let _ = self.events.send(event).await;
                    return true;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnecting failed; trying again");
                    self.link += 1;
                }
            }
        }
    }

    /// One attempt: connect, resume (or start afresh), and bring the rooms back.
    async fn come_back(&mut self, endpoint: ConnectOptions) -> Result<SessionEvent, ClientError> {
        let timeout = endpoint.timeout;
        let pending = Client::open(endpoint).await?;
        let hello = async {
            match self.token.clone() {
                Some(token) => match pending.resume(token).await? {
                    Resumption::Resumed(client) => Ok((client, None)),
                    Resumption::Refused { pending, code, .. } => Ok((pending.hello().await?, Some(code))),
                },
                None => Ok((pending.hello().await?, Some(ErrorCode::ResumeExpired))),
            }
        };
        let (client, refused) = tokio::time::timeout(timeout, hello)
            .await
            .map_err(|_| ClientError::Timeout)??;
        self.client = client;
        self.link += 1;
        self.token = self.client.welcome().resume_token.clone();
        self.forward_control();
        *self.shared.lock().expect("shared lock") = Shared {
            peer_id: self.client.peer_id(),
            transport: self.client.transport(),
        };
        let transport = self.client.transport();
        if refused.is_none() {
            self.rejoin_resumed().await?;
            return Ok(SessionEvent::Resumed { transport });
        }
        self.rejoin_afresh().await?;
        Ok(SessionEvent::Restarted {
            transport,
            peer_id: self.client.peer_id(),
            code: refused,
        })
    }

    /// After a resume: each room joined again with what it has received; what
    /// the server did not get from us is sent again.
    async fn rejoin_resumed(&mut self) -> Result<(), ClientError> {
        for index in 0..self.rooms.len() {
            let (name, received) = (self.rooms[index].name.clone(), self.rooms[index].received);
            let last_seq = match self.client.rejoin(&name, received).await? {
                Rejoin::Resumed { room, last_seq } => {
                    self.attach(index, room);
                    Some(last_seq)
                }
                Rejoin::Restarted(room) => {
                    self.restart_room(index, room).await;
                    None
                }
            };
            self.resend(index, last_seq).await?;
        }
        Ok(())
    }

    /// After a new session: each room joined afresh; what was not sent is
    /// dropped (it was addressed to peer ids of the old session's view).
    async fn rejoin_afresh(&mut self) -> Result<(), ClientError> {
        for index in 0..self.rooms.len() {
            let name = self.rooms[index].name.clone();
            let room = self.client.join(&name).await?;
            self.rooms[index].unacked.clear();
            self.restart_room(index, room).await;
        }
        Ok(())
    }

    /// Room `index` starts afresh on `room`: the numbering of its events
    /// restarts and its receiver gets a `joined` with the members.
    async fn restart_room(&mut self, index: usize, room: Room) {
        let state = &mut self.rooms[index];
        let joined = ServerMessage::Joined {
            id: None,
            room: state.name.clone(),
            members: room.members().to_vec(),
        };
        state.received = 0;
        state.acked = 0;
        let _ = state.to_app.send(joined).await;
        self.attach(index, room);
    }

    /// Sends room `index`'s unacknowledged messages again, those above
    /// `last_seq` only when the server said what it has.
    async fn resend(&mut self, index: usize, last_seq: Option<Seq>) -> Result<(), ClientError> {
        let room = &mut self.rooms[index];
        if let Some(last_seq) = last_seq {
            room.unacked.retain(|_, (seq, _)| *seq > last_seq);
        }
        let Some(sender) = &room.sender else { return Ok(()) };
        for (_, msg) in room.unacked.values() {
            sender.send(msg).await?;
        }
        Ok(())
    }
}

/// A factor between 0.5 and 1.5, so that clients dropped together do not all
/// come back at the same instant.
fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    0.5 + f64::from(nanos % 1000) / 1000.0
}
