//! The two encodings of a message, and the channel envelope of WebSocket frames.
//!
//! Native clients use bincode (compact, fast); browsers use JSON. On a
//! WebTransport stream a frame is just the encoded message, because the stream
//! is the channel. On a WebSocket every channel shares one socket, so a frame is
//! enveloped with its channel id: in JSON as an extra `ch` field (omitted for the
//! control channel), in bincode as a varint before the message.

use bincode::config::{Configuration, Limit, LittleEndian, Varint};
use bincode::{Decode, Encode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::ChannelId;

/// How messages of a session are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// JSON text: what browsers speak. WebSocket text frames.
    Json,
    /// bincode 2 (standard configuration: little endian, varints). WebSocket binary frames.
    Bincode,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Bincode => "bincode",
        }
    }

    /// Parses the `encoding` query parameter of a WebTransport connect URL.
    pub fn from_query(value: &str) -> Option<Self> {
        match value {
            "json" => Some(Encoding::Json),
            "bincode" => Some(Encoding::Bincode),
            _ => None,
        }
    }
}

/// The largest frame any decoder will look at, whatever a session's limit.
/// bincode refuses to allocate past it even when a length field claims more.
pub const HARD_MAX_FRAME: usize = 1 << 20;

type BincodeConfig = Configuration<LittleEndian, Varint, Limit<HARD_MAX_FRAME>>;
const BINCODE: BincodeConfig = bincode::config::standard().with_limit::<HARD_MAX_FRAME>();

/// A frame that is not a valid message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid bincode message: {0}")]
    Bincode(#[from] bincode::error::DecodeError),
    #[error("{0} bytes left over after the message")]
    TrailingBytes(usize),
}

impl DecodeError {
    /// The error code a server reports for the frame: `bad_frame` when it is not
    /// a message at all (not JSON, not UTF-8, truncated, nested too deeply),
    /// `unknown_type` when its type is not one the receiver knows, and
    /// `invalid_message` when the type is known but its fields are wrong
    /// (missing, of the wrong type, or not part of the message).
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Json(e) => match e.classify() {
                serde_json::error::Category::Data if e.to_string().starts_with("unknown variant") => {
                    ErrorCode::UnknownType
                }
                serde_json::error::Category::Data => ErrorCode::InvalidMessage,
                _ => ErrorCode::BadFrame,
            },
            DecodeError::Bincode(bincode::error::DecodeError::UnexpectedVariant { .. }) => ErrorCode::UnknownType,
            DecodeError::Bincode(_) | DecodeError::TrailingBytes(_) => ErrorCode::BadFrame,
        }
    }
}

/// Appends the encoding of `msg` to `buf`.
pub fn encode_into<M: Serialize + Encode>(encoding: Encoding, msg: &M, buf: &mut Vec<u8>) {
    match encoding {
        // Neither can fail: every message type serializes to both, and writing
        // into a Vec does not fail.
        Encoding::Json => serde_json::to_writer(&mut *buf, msg).expect("messages serialize to JSON"),
        Encoding::Bincode => {
            bincode::encode_into_std_write(msg, buf, BINCODE).expect("messages encode to bincode");
        }
    }
}

/// Encodes `msg`.
pub fn encode<M: Serialize + Encode>(encoding: Encoding, msg: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    encode_into(encoding, msg, &mut buf);
    buf
}

/// Decodes one whole message; trailing bytes are an error.
pub fn decode<M: DeserializeOwned + Decode<()>>(encoding: Encoding, bytes: &[u8]) -> Result<M, DecodeError> {
    match encoding {
        Encoding::Json => Ok(serde_json::from_slice(bytes)?),
        Encoding::Bincode => {
            let (msg, used) = bincode::decode_from_slice(bytes, BINCODE)?;
            match bytes.len() - used {
                0 => Ok(msg),
                left => Err(DecodeError::TrailingBytes(left)),
            }
        }
    }
}

#[derive(Serialize)]
struct EnvelopeOut<'a, M> {
    #[serde(skip_serializing_if = "is_control")]
    ch: ChannelId,
    #[serde(flatten)]
    msg: &'a M,
}

#[derive(Deserialize)]
struct EnvelopeIn<M> {
    #[serde(default)]
    ch: ChannelId,
    #[serde(flatten)]
    msg: M,
}

fn is_control(ch: &ChannelId) -> bool {
    *ch == crate::ids::CONTROL_CHANNEL
}

/// Appends a WebSocket frame: `msg` enveloped with its channel.
pub fn encode_enveloped_into<M: Serialize + Encode>(
    encoding: Encoding,
    channel: ChannelId,
    msg: &M,
    buf: &mut Vec<u8>,
) {
    match encoding {
        Encoding::Json => {
            serde_json::to_writer(&mut *buf, &EnvelopeOut { ch: channel, msg }).expect("messages serialize to JSON")
        }
        Encoding::Bincode => {
            bincode::encode_into_std_write((channel, msg), buf, BINCODE).expect("messages encode to bincode");
        }
    }
}

/// Encodes a WebSocket frame: `msg` enveloped with its channel.
pub fn encode_enveloped<M: Serialize + Encode>(encoding: Encoding, channel: ChannelId, msg: &M) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    encode_enveloped_into(encoding, channel, msg, &mut buf);
    buf
}

/// Decodes a WebSocket frame into its channel and message.
pub fn decode_enveloped<M: DeserializeOwned + Decode<()>>(
    encoding: Encoding,
    bytes: &[u8],
) -> Result<(ChannelId, M), DecodeError> {
    match encoding {
        Encoding::Json => {
            let env: EnvelopeIn<M> = serde_json::from_slice(bytes)?;
            Ok((env.ch, env.msg))
        }
        Encoding::Bincode => {
            let ((ch, msg), used): ((ChannelId, M), usize) = bincode::decode_from_slice(bytes, BINCODE)?;
            match bytes.len() - used {
                0 => Ok((ch, msg)),
                left => Err(DecodeError::TrailingBytes(left)),
            }
        }
    }
}
