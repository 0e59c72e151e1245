//! The WSS fallback: one WebSocket per session, every channel in it.
//!
//! Text frames are JSON, binary frames bincode; each carries its channel id in
//! an envelope (see `proto::codec`). Admission and a token in the URL are
//! checked before the upgrade, so a refused client gets an HTTP status and a
//! JSON body with the error code, and costs no session.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use proto::codec::{self, HARD_MAX_FRAME};
use proto::{Encoding, ErrorCode};
use serde::Deserialize;
use tracing::Instrument;

use super::FLUSH_TIMEOUT;
use crate::http::{AppState, refusal_response};
use crate::session::{Admitted, Connecting, Goodbye, Hub, Outbox, Outgoing, Refusal, Session, Transport};
#[derive(Deserialize)]
pub struct ConnectQuery {
    token: Option<String>,
}

/// The WebSocket read buffer (grows for larger messages, up to the frame limit).
/// Most signaling frames fit; an offer's SDP may take a second read.
const READ_BUFFER: usize = 1024;
/// Bytes written before the WebSocket layer flushes on its own.
const WRITE_BUFFER: usize = 8192;

/// `GET /ws`: checks the switches, the blocklist, the origin, admission and
/// the URL token, then upgrades.
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let connecting = Connecting {
        remote,
        transport: Transport::WebSocket,
        origin: headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        authority: headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        token: query.token.as_deref(),
    };
    let admitted = match app.hub.preflight(&connecting).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal_response(&refusal),
    };
    // Checked after the preflight, so that a blocked or switched-off client
    // learns that whatever it sent.
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let refusal = Refusal::new(
                ErrorCode::InvalidMessage,
                format!("not a WebSocket upgrade: {rejection}"),
            );
            return refusal_response(&refusal);
        }
    };
    let hub = app.hub.clone();
    // tungstenite's default buffers are 128 KiB each way, per connection:
    // signaling frames are small, and idle sessions must be cheap.
    ws.max_message_size(HARD_MAX_FRAME)
        .max_frame_size(HARD_MAX_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| run(socket, hub, admitted))
}

async fn run(socket: WebSocket, hub: Arc<Hub>, admitted: Admitted) {
    let (session, mut queue) = hub.open_shared(admitted);
    let outbox = session.outbox().clone();
    let span = session.span().clone();
    let (mut sink, mut stream) = socket.split();
    let end = async {
        // The session's end is watched here, not between writes: a writer stuck
        // on a client that stopped reading must not keep the session alive.
        // (Cancelling a WebSocket send is safe: a message is either wholly in
        // the socket's buffer or not at all.)
        // The goodbye comes first: a client that closes as soon as it has read
        // the error before it must not make the session end unsaid (and its
        // error uncounted).
        let end = tokio::select! {
            biased;
            goodbye = session.closed() => End::Goodbye(goodbye),
            end = read(&mut stream, &session) => end,
            () = write(&mut sink, &mut queue, &outbox) => End::Lost,
        };
        if let End::Goodbye(goodbye) = &end {
            let _ =
                tokio::time::timeout(FLUSH_TIMEOUT, farewell(&mut sink, &mut queue, &outbox, goodbye.clone())).await;
        }
        end
    }
    .instrument(span)
    .await;
    match end {
        // The session layer may hold the session for a resume.
        End::Lost => session.connection_lost(),
        // The session is over: its connection slot is free before the client is waited for.
        End::Closed => drop(session),
        End::Goodbye(_) => {
            drop(session);
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, linger(&mut stream)).await;
        }
    }
}

/// How a WebSocket session ended.
enum End {
    /// The session ended (said goodbye).
    Goodbye(Goodbye),
    /// The client closed the WebSocket.
    Closed,
    /// The connection broke without a close.
    Lost,
}

type Stream = futures_util::stream::SplitStream<WebSocket>;

/// Reads frames into the session until the client closes the WebSocket
/// ([`End::Closed`]) or the connection breaks ([`End::Lost`]).
async fn read(stream: &mut Stream, session: &Session) -> End {
    while let Some(msg) = stream.next().await {
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket read failed");
                return broken(e);
            }
        };
        match msg {
            Message::Text(text) => session.on_envelope_frame(Encoding::Json, text.as_bytes()),
            Message::Binary(bin) => session.on_envelope_frame(Encoding::Bincode, &bin),
            Message::Close(_) => return End::Closed,
            // Pings are answered by the WebSocket layer; they still show the client is there.
            Message::Ping(_) | Message::Pong(_) => session.on_keepalive(),
        }
    }
    End::Lost
}

/// Why reading failed: the connection broke (lost, the session may be
/// resumed), or the client broke the WebSocket protocol (invalid UTF-8, a
/// message over the limit), which ends the session like a close.
fn broken(error: axum::Error) -> End {
    use tungstenite::error::{Error, ProtocolError};
    match error.into_inner().downcast_ref::<Error>() {
        Some(Error::Io(_) | Error::ConnectionClosed | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
            End::Lost
        }
        Some(_) => End::Closed,
        None => End::Lost,
    }
}

/// Reads and drops what the client still sends until it answers the close
/// frame. A socket closed with unread bytes is reset, and a reset makes the
/// client's TCP stack discard what it had not read yet: the goodbye, the close
/// frame, and whatever came before them (a flooding client always has bytes
/// in flight).
async fn linger(stream: &mut Stream) {
    while let Some(Ok(msg)) = stream.next().await {
        if let Message::Close(_) = msg {
            break;
        }
    }
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// At most this many queued messages go out in one flush, so that a queue that
/// never empties still reaches the socket.
const MAX_BATCH: usize = 64;
/// The encoding buffer a writer keeps between messages, at most: enough for
/// candidates and small signals; an offer's buffer is not kept (idle sessions
/// must be cheap).
const KEPT_BUFFER: usize = 1024;

/// Writes queued messages until the socket fails. Whatever waits in the queue
/// when the writer wakes up goes out with one flush (one TLS record, one
/// system call) instead of one each.
async fn write(sink: &mut Sink, queue: &mut tokio::sync::mpsc::Receiver<Outgoing>, outbox: &Outbox) {
    let mut buf = Vec::new();
    while let Some(out) = queue.recv().await {
        if let Err(e) = write_batch(sink, queue, outbox, out, &mut buf).await {
            return tracing::debug!(error = %e, "WebSocket write failed");
        }
        // An idle session should not keep the buffer of its largest message.
        if buf.capacity() > KEPT_BUFFER {
            buf = Vec::new();
        }
    }
}

/// Feeds `first` and up to [`MAX_BATCH`] - 1 more already queued messages to
/// the sink, then flushes once.
async fn write_batch(
    sink: &mut Sink,
    queue: &mut tokio::sync::mpsc::Receiver<Outgoing>,
    outbox: &Outbox,
    first: Outgoing,
    buf: &mut Vec<u8>,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut fed = 0;
    while let Some(out) = next {
        sink.feed(encode(outbox, &out, buf)).await?;
        fed += 1;
        next = if fed < MAX_BATCH { queue.try_recv().ok() } else { None };
    }
    sink.flush().await
}

/// Sends what is still queued, the goodbye, and a close frame.
async fn farewell(
    sink: &mut Sink,
    queue: &mut tokio::sync::mpsc::Receiver<Outgoing>,
    outbox: &Outbox,
    goodbye: Goodbye,
) {
    let mut buf = Vec::new();
    while let Ok(out) = queue.try_recv() {
        if sink.feed(encode(outbox, &out, &mut buf)).await.is_err() {
            return;
        }
    }
    let msg = goodbye.to_message();
    if sink
        .send(frame(outbox.encoding(), proto::CONTROL_CHANNEL, &msg, &mut buf))
        .await
        .is_err()
    {
        return;
    }
    let code = match goodbye.code {
        ErrorCode::ShuttingDown => 1001,
        ErrorCode::Internal => 1011,
        _ => 1008,
    };
    let close = CloseFrame {
        code,
        reason: goodbye.code.as_str().into(),
    };
    let _ = sink.send(Message::Close(Some(close))).await;
    let _ = sink.close().await;
}

/// The WebSocket message for `out`; it leaves the outbound queue's byte count.
fn encode(outbox: &Outbox, out: &Outgoing, buf: &mut Vec<u8>) -> Message {
    let msg = frame(outbox.encoding(), out.channel, &out.msg, buf);
    outbox.written(out);
    msg
}

/// Encodes `msg` enveloped with `channel` in `buf` (reused, so that it has
/// grown to the session's usual frame size) and copies it into a message of
/// its exact size: one allocation a frame.
fn frame(encoding: Encoding, channel: proto::ChannelId, msg: &proto::ServerMessage, buf: &mut Vec<u8>) -> Message {
    buf.clear();
    codec::encode_enveloped_into(encoding, channel, msg, buf);
    match encoding {
        Encoding::Json => match std::str::from_utf8(buf) {
            Ok(text) => Message::Text(Utf8Bytes::from(text)),
            Err(_) => Message::Binary(Bytes::copy_from_slice(buf)),
        },
        Encoding::Bincode => Message::Binary(Bytes::copy_from_slice(buf)),
    }
}
