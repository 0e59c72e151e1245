//! Stable, machine-readable error codes.
//!
//! Every error the server reports carries one of these codes. In JSON a code is
//! its snake_case name; in bincode it is its number. Both are stable: codes are
//! only ever added, never renumbered or renamed.

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[$attr:meta])* $variant:ident = $num:literal, $name:literal, $status:literal; )*) => {
        /// A stable error code. See `PROTOCOL.md` for when each is sent.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$attr])* $variant = $num, )*
        }

        impl ErrorCode {
            /// Every code (`Unknown` last).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code's stable name, as it appears in JSON.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The code's stable number, as it appears in bincode.
            pub const fn number(self) -> u16 {
                self as u16
            }

            /// The code with this number.
            pub const fn from_number(n: u16) -> Option<Self> {
                match n { $($num => Some(ErrorCode::$variant),)* _ => None }
            }

            /// The HTTP status that goes with the code when it refuses an HTTP
            /// request (a WebSocket upgrade or an API call).
            pub const fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }
        }
    };
}

error_codes! {
    /// A frame could not be decoded as a message.
    BadFrame = 1, "bad_frame", 400;
    /// A frame is larger than the session's `max_frame_bytes`.
    FrameTooLarge = 2, "frame_too_large", 413;
    /// The client's protocol version is older than the server still speaks.
    UnsupportedVersion = 3, "unsupported_version", 400;
    /// A message is well-formed but its content is not acceptable.
    InvalidMessage = 4, "invalid_message", 400;
    /// A message was sent on a channel where it is not allowed.
    WrongChannel = 5, "wrong_channel", 400;
    /// The message's `type` is not one a client may send.
    UnknownType = 6, "unknown_type", 400;
    /// A `signal` or `broadcast` whose `seq` is not above the channel's last
    /// one (a replay or a duplicate); it was not relayed.
    Replayed = 7, "replayed", 409;
    /// No token was given, or a message other than `hello` came before it.
    AuthRequired = 10, "auth_required", 401;
    /// The token is not valid (signature, issuer, audience, format, not yet valid).
    AuthFailed = 11, "auth_failed", 401;
    /// The token has expired.
    TokenExpired = 12, "token_expired", 401;
    /// No `hello` arrived within the authentication timeout.
    AuthTimeout = 13, "auth_timeout", 401;
    /// A second `hello` on an authenticated session.
    AlreadyAuthenticated = 14, "already_authenticated", 400;
    /// A login with an unknown user name or a wrong password.
    InvalidCredentials = 15, "invalid_credentials", 401;
    /// The caller is authenticated but lacks the role the request needs (`admin`).
    Forbidden = 16, "forbidden", 403;
    /// A refresh token that was already used: its whole family is revoked.
    RefreshTokenReused = 17, "refresh_token_reused", 401;
    /// A refresh token that is unknown, expired or revoked.
    InvalidRefreshToken = 18, "invalid_refresh_token", 401;
    /// An in-band `refresh` carried a token for another user.
    WrongUser = 19, "wrong_user", 403;
    /// The token does not allow this room.
    RoomForbidden = 20, "room_forbidden", 403;
    /// The room has reached its member cap.
    RoomFull = 21, "room_full", 409;
    /// The session has joined as many rooms as it may.
    TooManyRooms = 22, "too_many_rooms", 409;
    /// The room name is not valid.
    InvalidRoom = 23, "invalid_room", 400;
    /// The session is already in this room.
    AlreadyJoined = 24, "already_joined", 409;
    /// The channel is not a room this session has joined.
    NotInRoom = 25, "not_in_room", 404;
    /// The addressed peer is not in the room.
    UnknownPeer = 26, "unknown_peer", 404;
    /// The session's message budget (messages per second) is spent.
    RateLimited = 30, "rate_limited", 429;
    /// The session's byte budget (bytes per second) is spent.
    ByteRateLimited = 31, "byte_rate_limited", 429;
    /// The client's IP address has as many connections open as it may.
    TooManyConnections = 40, "too_many_connections", 429;
    /// The client's IP address opens new connections too fast.
    ConnectionRateLimited = 41, "connection_rate_limited", 429;
    /// The server holds as many connections as it may.
    ServerFull = 42, "server_full", 503;
    /// The client's IP address is blocked for a while (failed logins or abuse).
    IpBlocked = 43, "ip_blocked", 429;
    /// The page's origin is not on the server's allow-list.
    OriginNotAllowed = 44, "origin_not_allowed", 403;
    /// The operator has switched this transport, or the whole service, off.
    ServiceDisabled = 45, "service_disabled", 503;
    /// Cluster mode: the operation needs Redis, which is unavailable; nothing was done.
    ClusterUnavailable = 46, "cluster_unavailable", 503;
    /// Nothing arrived from the client within the idle timeout.
    IdleTimeout = 50, "idle_timeout", 408;
    /// The client did not read what the server sent fast enough.
    SlowConsumer = 51, "slow_consumer", 503;
    /// The server is shutting down.
    ShuttingDown = 52, "shutting_down", 503;
    /// The session broke the rules too often (malformed frames, budgets) and is closed.
    PolicyViolation = 53, "policy_violation", 400;
    /// A resume token for a session the server no longer holds (its grace
    /// period ended, its held messages overflowed, or it ended): start a new
    /// session with a plain `hello`.
    ResumeExpired = 70, "resume_expired", 410;
    /// A resume token this server did not issue, or one that was altered.
    ResumeInvalid = 71, "resume_invalid", 401;
    /// A resume token that was already used: the session was resumed with it.
    ResumeUsed = 72, "resume_used", 409;
    /// Cluster mode: the session is held by another node, which releases it
    /// now (its peers see it leave); start a new session and join again.
    ResumeElsewhere = 73, "resume_elsewhere", 421;
    /// The session was resumed on another connection; this one is closed.
    SessionResumed = 74, "session_resumed", 409;
    /// Something went wrong inside the server.
    Internal = 60, "internal", 500;
    /// No such API route or resource.
    NotFound = 61, "not_found", 404;
    /// The account service is not configured (no user file).
    AccountsDisabled = 62, "accounts_disabled", 503;
    /// A code this version of the protocol crate does not know (sent by a newer
    /// server). Never sent by this server; decoding maps unknown codes to it so
    /// that an older client still understands that an error happened.
    // Last, as serde requires of `other`.
    #[serde(other)]
    Unknown = 0, "unknown", 500;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Encode for ErrorCode {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.number().encode(encoder)
    }
}

impl<Context> Decode<Context> for ErrorCode {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        Ok(ErrorCode::from_number(u16::decode(decoder)?).unwrap_or(ErrorCode::Unknown))
    }
}
bincode::impl_borrow_decode!(ErrorCode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_number(code.number()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn codes_from_a_newer_server_decode_as_unknown() {
        let json: ErrorCode = serde_json::from_str("\"quantum_flux\"").unwrap();
        assert_eq!(json, ErrorCode::Unknown);
        let bytes = crate::codec::encode(crate::Encoding::Bincode, &ServerMessageProbe(999));
        let decoded: ErrorCode = bincode::decode_from_slice(&bytes, bincode::config::standard())
            .unwrap()
            .0;
        assert_eq!(decoded, ErrorCode::Unknown);
    }

    #[derive(serde::Serialize, bincode::Encode)]
    struct ServerMessageProbe(u16);

    #[test]
    fn names_and_numbers_are_unique() {
        let mut names: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
    }
}
