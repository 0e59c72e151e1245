//! The messages: what a client may send and what the server sends back.
//!
//! Both transports carry exactly these types. In JSON each message is an object
//! with a `type` field (`{"type":"join","id":1,"room":"lobby"}`); in bincode it
//! is the enum as bincode encodes it. `PROTOCOL.md` shows every message in both.

use std::fmt;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::PeerId;

/// A client-chosen number that the server's answer to a request carries back.
/// Requests sent without one get no acknowledgement, only errors.
pub type RequestId = u32;

/// A bearer credential: a JWT, or a resume token. Its `Debug` form hides it so
/// that it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(transparent)]
pub struct Token(pub String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A number a client puts on every `signal` and `broadcast`, strictly
/// increasing per channel: the server relays a message only if its `seq` is above
/// the channel's last one, so a replayed or duplicated message is refused with
/// `replayed` instead of reaching the peer twice. The native client numbers
/// messages itself when `seq` is left `None`.
pub type Seq = u64;

/// How many of a room's events a client has received since it joined. The
/// events are the `signal`, `broadcast`, `peer_joined` and `peer_left` messages
/// the server sends on the room's channel, numbered 1, 2, 3, ... from the
/// `joined`; the numbering goes on across a resume (after `rejoined`). Clients
/// acknowledge them with `received`, and name the count in a resuming `join`.
pub type EventCount = u64;

/// What a client sends. Fields a message type does not have are refused
/// (`invalid_message`), as are types not listed here (`unknown_type`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Opens the session on the control channel: the newest protocol version the
    /// client speaks, and its token unless the connect URL carried one.
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        version: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<Token>,
        /// The `resume_token` of a session that lost its connection: the server
        /// gives this connection that session (same peer id, same rooms) if it
        /// still holds it, else answers with an error and waits for a plain `hello`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Token>,
    },
    /// Joins a room; the first message on a new channel.
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
        /// After a resumed `welcome`: the room was the resumed session's, and
        /// the client has its first `resume_after` events. The server answers
        /// `rejoined` and sends the events that followed (see [`EventCount`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_after: Option<EventCount>,
    },
    /// Leaves the room of the channel it is sent on.
    Leave {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
    /// Sends an offer, answer, ICE candidate or custom payload to one peer of the
    /// channel's room.
    Signal {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Required on the wire (see [`Seq`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<Seq>,
        to: PeerId,
        signal: Signal,
    },
    /// Sends an application payload to every other peer of the channel's room.
    Broadcast {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// Required on the wire (see [`Seq`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<Seq>,
        data: String,
    },
    /// Asks for a `pong` on the same channel; also keeps an idle session alive.
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        nonce: u32,
    },
    /// Replaces the session's token with a fresh one for the same user, on the
    /// control channel, before the old one expires (see `token_expiring`).
    Refresh {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        token: Token,
    },
    /// On a room's channel: the client has the room's first `upto` events, so
    /// the server need not keep them for a resume any more.
    Received { upto: EventCount },
    /// Asks for the session's ICE servers again, with fresh TURN credentials,
    /// on the control channel (before `ice_servers_expire_at` of `welcome`).
    IceServers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
    },
}

impl ClientMessage {
    /// The request id, if the client gave one.
    pub fn request_id(&self) -> Option<RequestId> {
        match self {
            ClientMessage::Hello { id, .. }
            | ClientMessage::Join { id, .. }
            | ClientMessage::Leave { id }
            | ClientMessage::Signal { id, .. }
            | ClientMessage::Broadcast { id, .. }
            | ClientMessage::Ping { id, .. }
            | ClientMessage::Refresh { id, .. }
            | ClientMessage::IceServers { id } => *id,
            ClientMessage::Received { .. } => None,
        }
    }

    /// The message's `type` name, as in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Hello { .. } => "hello",
            ClientMessage::Join { .. } => "join",
            ClientMessage::Leave { .. } => "leave",
            ClientMessage::Signal { .. } => "signal",
            ClientMessage::Broadcast { .. } => "broadcast",
            ClientMessage::Ping { .. } => "ping",
            ClientMessage::Refresh { .. } => "refresh",
            ClientMessage::Received { .. } => "received",
            ClientMessage::IceServers { .. } => "ice_servers",
        }
    }
}

/// The WebRTC signaling payloads a peer relays to another.
///
/// The JSON field names of `candidate` are those of the browser's
/// `RTCIceCandidateInit`, so the object can be passed to `addIceCandidate` as is.
/// Any other field (the Rust names `sdp_mid`, `sdp_m_line_index` included) is
/// refused, as in every message, rather than relayed without it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Signal {
    Offer {
        sdp: String,
    },
    Answer {
        sdp: String,
    },
    /// An ICE candidate; an empty `candidate` means end of candidates.
    Candidate {
        candidate: String,
        #[serde(rename = "sdpMid", default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        #[serde(rename = "sdpMLineIndex", default, skip_serializing_if = "Option::is_none")]
        sdp_m_line_index: Option<u16>,
        #[serde(rename = "usernameFragment", default, skip_serializing_if = "Option::is_none")]
        username_fragment: Option<String>,
    },
    /// Anything else two peers agree on (renegotiation hints, mute state, ...).
    Custom {
        data: String,
    },
}

/// A member of a room as the other members see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct Member {
    pub peer_id: PeerId,
    /// The `sub` claim of the member's token.
    pub user_id: String,
}

/// A STUN or TURN server for a peer connection. The JSON form is the browser's
/// `RTCIceServer`, so a list of them can be passed to
/// `new RTCPeerConnection({iceServers})` as it is. TURN credentials minted by
/// the server are valid until the `expires_at` sent with them; `Debug` hides
/// the credential so that it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs of one server.
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

impl fmt::Debug for IceServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username)
            .field("credential", &self.credential.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl IceServer {
    fn approx_size(&self) -> usize {
        self.urls.iter().map(|u| u.len() + 8).sum::<usize>()
            + self.username.as_ref().map_or(0, String::len)
            + self.credential.as_ref().map_or(0, String::len)
            + 16
    }
}

/// The limits that apply to a session, announced in `welcome` so that a
/// well-behaved client can stay within them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
pub struct SessionLimits {
    pub max_frame_bytes: u32,
    pub messages_per_sec: u32,
    pub message_burst: u32,
    pub bytes_per_sec: u32,
    pub byte_burst: u32,
    pub max_rooms: u32,
    pub max_room_members: u32,
    /// The session is closed when nothing arrives for this long; send `ping`s.
    pub idle_timeout_ms: u32,
}

/// What the server sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The session is authenticated and open.
    Welcome {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        /// The protocol version both sides use from now on.
        version: u16,
        session_id: String,
        peer_id: PeerId,
        user_id: String,
        limits: SessionLimits,
        /// Presented in a later `hello` (`resume`) after a lost connection, it
        /// gives that connection this session back. Single use: every `welcome`
        /// carries a new one. Absent when the server does not hold sessions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<Token>,
        /// The session was resumed: same `session_id` and `peer_id`; join the
        /// rooms again with `resume_after`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
        /// The STUN and TURN servers this session's peer connections should
        /// use (`new RTCPeerConnection({iceServers})`); may be empty.
        #[serde(default)]
        ice_servers: Vec<IceServer>,
        /// When the TURN credentials in `ice_servers` expire (Unix seconds): ask
        /// for fresh ones with `ice_servers` before then. Absent when none expire.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ice_servers_expire_at: Option<u64>,
    },
    /// The room was joined; `members` are the other peers already in it.
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
        members: Vec<Member>,
    },
    /// The room was left; nothing more comes on its channel.
    Left {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
    },
    /// Another peer joined the channel's room.
    PeerJoined { peer: Member },
    /// Another peer left the channel's room (or its session ended).
    PeerLeft { peer_id: PeerId },
    /// A signal from another peer of the channel's room.
    Signal { from: PeerId, signal: Signal },
    /// A broadcast from another peer of the channel's room.
    Broadcast { from: PeerId, data: String },
    /// The request with this id was accepted and relayed.
    Ack { id: RequestId },
    /// The answer to a `ping`.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        nonce: u32,
    },
    /// A request failed or a limit was hit; the session stays open.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    },
    /// The session's token expires in `expires_in_ms`: send `refresh` with a
    /// fresh token before then, or the session ends with `token_expired`.
    TokenExpiring { expires_in_ms: u64 },
    /// The server is closing the session, and why. Always the last message.
    Goodbye { code: ErrorCode, message: String },
    /// A resuming `join` was accepted: the room is this channel's again, with
    /// no change the other members could see. The events after the client's
    /// `resume_after` follow. `last_seq` is the last `seq` the server accepted
    /// from the client in this room: send again what was sent above it.
    Rejoined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        room: String,
        last_seq: Seq,
    },
    /// The answer to `ice_servers`: the session's ICE servers with freshly
    /// minted TURN credentials, valid until `expires_at` (Unix seconds).
    IceServers {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<RequestId>,
        ice_servers: Vec<IceServer>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
}

impl ServerMessage {
    /// Whether the message is one of a room's numbered events (see [`EventCount`]).
    pub fn is_room_event(&self) -> bool {
        matches!(
            self,
            ServerMessage::Signal { .. }
                | ServerMessage::Broadcast { .. }
                | ServerMessage::PeerJoined { .. }
                | ServerMessage::PeerLeft { .. }
        )
    }

    /// The message's `type` name, as in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerMessage::Welcome { .. } => "welcome",
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::Rejoined { .. } => "rejoined",
            ServerMessage::Left { .. } => "left",
            ServerMessage::PeerJoined { .. } => "peer_joined",
            ServerMessage::PeerLeft { .. } => "peer_left",
            ServerMessage::Signal { .. } => "signal",
            ServerMessage::Broadcast { .. } => "broadcast",
            ServerMessage::Ack { .. } => "ack",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::Error { .. } => "error",
            ServerMessage::TokenExpiring { .. } => "token_expiring",
            ServerMessage::Goodbye { .. } => "goodbye",
            ServerMessage::IceServers { .. } => "ice_servers",
        }
    }

    /// A rough size in bytes, used to bound what waits in a session's outbound
    /// queue without encoding it first.
    pub fn approx_size(&self) -> usize {
        const OVERHEAD: usize = 48;
        OVERHEAD
            + match self {
                ServerMessage::Signal { signal, .. } => signal.approx_size(),
                ServerMessage::Broadcast { data, .. } => data.len(),
                ServerMessage::Joined { members, .. } => members.iter().map(|m| m.user_id.len() + 24).sum(),
                ServerMessage::PeerJoined { peer } => peer.user_id.len(),
                ServerMessage::Error { message, .. } | ServerMessage::Goodbye { message, .. } => message.len(),
                ServerMessage::Welcome {
                    user_id,
                    session_id,
                    ice_servers,
                    ..
                } => {
                    user_id.len()
                        + session_id.len()
                        + 160
                        + ice_servers.iter().map(IceServer::approx_size).sum::<usize>()
                }
                ServerMessage::IceServers { ice_servers, .. } => ice_servers.iter().map(IceServer::approx_size).sum(),
                _ => 0,
            }
    }
}

impl Signal {
    fn approx_size(&self) -> usize {
        match self {
            Signal::Offer { sdp } | Signal::Answer { sdp } => sdp.len(),
            Signal::Candidate {
                candidate,
                sdp_mid,
                username_fragment,
                ..
            } => {
                candidate.len()
                    + sdp_mid.as_ref().map_or(0, String::len)
                    + username_fragment.as_ref().map_or(0, String::len)
            }
            Signal::Custom { data } => data.len(),
        }
    }
}
