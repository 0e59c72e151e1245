//! The WSS fallback: one WebSocket per session, every channel in it.
//!
//! Text frames are JSON, binary frames bincode; each carries its channel id in
//! an envelope (see `proto::codec`). Admission and a token in the URL are
//! checked before the upgrade, so a refused client gets an HTTP status and a
//! JSON body with the error code, and costs no session.
//!
//! The WebSocket protocol itself is ours ([`handshake`], [`frame`]): a
//! general-purpose library keeps read and write buffers grown by the largest
//! message (an offer) for the life of the connection, which is most of what
//! an idle session costs; here they are let go between messages.

pub mod frame;
pub mod handshake;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use proto::codec::{self, HARD_MAX_FRAME};
use proto::{Encoding, ErrorCode};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use self::frame::{FrameReader, Incoming, Violation};
use super::FLUSH_TIMEOUT;
use crate::http::{AppState, refusal_response};
use crate::session::{Admitted, Connecting, Goodbye, Hub, Outbox, Outgoing, Refusal, Session, Transport};

#[derive(Deserialize)]
pub struct ConnectQuery {
    token: Option<String>,
}

/// `GET /ws`: checks the switches, the blocklist, the origin, admission and
/// the URL token, then upgrades.
pub async fn upgrade(
    State(app): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    Query(query): Query<ConnectQuery>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    let connecting = Connecting {
        remote,
        transport: Transport::WebSocket,
        origin: headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        authority: headers.get(header::HOST).and_then(|v| v.to_str().ok()),
        token: query.token.as_deref(),
    };
    // First what the address alone decides (a blocked or switched-off client
    // learns that whatever it sent), then whether this is an upgrade at all:
    // a plain request spends no admission token and no Redis round trip.
    if let Err(refusal) = app.hub.early_check(remote.ip(), Transport::WebSocket) {
        return refusal_response(&refusal);
    }
    let accept = match handshake::accept(request.headers()) {
        Ok(accept) => accept,
        Err(e) => {
            let refusal = Refusal::new(ErrorCode::InvalidMessage, format!("not a WebSocket upgrade: {e}"));
            let mut response = refusal_response(&refusal);
            *response.status_mut() = e.status();
            if e.status() == StatusCode::UPGRADE_REQUIRED {
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            }
            return response;
        }
    };
    let admitted = match app.hub.preflight(&connecting).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refusal_response(&refusal),
    };
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        let refusal = Refusal::new(
            ErrorCode::InvalidMessage,
            "this connection cannot be upgraded to a WebSocket",
        );
        return refusal_response(&refusal);
    };
    let hub = app.hub.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => run(TokioIo::new(upgraded), hub, admitted).await,
            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
        }
    });
    (
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response()
}

type Io = TokioIo<Upgraded>;

async fn run(io: Io, hub: Arc<Hub>, admitted: Admitted) {
    let (session, mut queue) = hub.open_shared(admitted);
    let outbox = session.outbox().clone();
    let span = session.span().clone();
    let (mut rd, mut wr) = tokio::io::split(io);
    // Messages over max_frame_bytes are dropped as they arrive (frame_too_large);
    // over 1 MiB the connection is closed with 1009.
    let mut reader = FrameReader::new(session.max_frame(), HARD_MAX_FRAME);
    let pong = Pong::default();
    // The batch being written: kept here, outside the writing future, so that
    // a write cut short by the session's end is finished from where it was
    // (a batch can exceed what TLS takes at once) before anything follows it.
    let mut batch = Batch::default();
    let end = async {
        // The session's end is watched here, not between writes: a writer stuck
        // on a client that stopped reading must not keep the session alive.
        // The goodbye comes first: a client that closes as soon as it has read
        // the error before it must not make the session end unsaid (and its
        // error uncounted).
        let end = tokio::select! {
            biased;
            goodbye = session.closed() => End::Goodbye(goodbye),
            end = read(&mut rd, &mut reader, &session, &pong) => end,
            () = write(&mut wr, &mut queue, &outbox, &pong, &mut batch) => End::Lost,
        };
        // What follows goes after the rest of a batch that was cut.
        let mut last = batch.unsent().to_vec();
        let cut = !last.is_empty();
        match &end {
            End::Goodbye(goodbye) => {
                while let Ok(out) = queue.try_recv() {
                    append_message(&mut last, &outbox, &out);
                }
                append_enveloped(
                    &mut last,
                    outbox.encoding(),
                    proto::CONTROL_CHANNEL,
                    &goodbye.to_message(),
                );
                frame::append_close(&mut last, close_code(goodbye.code), goodbye.code.as_str());
            }
            // The client's close is answered with its status code.
            End::Closed(Some(code)) => frame::append_close(&mut last, *code, ""),
            End::Closed(None) => frame::append_close(&mut last, 1000, ""),
            End::Violation(violation) => {
                tracing::debug!(%violation, "WebSocket protocol violation");
                frame::append_close(&mut last, violation.close_code(), &violation.to_string());
            }
            End::Lost => {}
        }
        if !last.is_empty() && (cut || !matches!(end, End::Lost)) {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, send(&mut wr, &last)).await;
        }
        end
    }
    .instrument(span)
    .await;
    match end {
        // The session layer may hold the session for a resume.
        End::Lost => session.connection_lost(),
        // The session is over: its connection slot is free before the client is waited for.
        End::Closed(_) => drop(session),
        End::Goodbye(_) => {
            drop(session);
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, linger(&mut rd, &mut reader)).await;
        }
        End::Violation(_) => {
            drop(session);
            // The reader cannot parse past a violation: what the client still
            // sends (the rest of a message over the limit, say) is read and
            // dropped unparsed until it closes, so that its TCP stack is not
            // reset before it has read the close frame.
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, drain(&mut rd)).await;
        }
    }
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, wr.shutdown()).await;
}

/// How a WebSocket session ended.
enum End {
    /// The session ended (said goodbye).
    Goodbye(Goodbye),
    /// The client closed the WebSocket (with this status code).
    Closed(Option<u16>),
    /// The client broke the WebSocket protocol (invalid UTF-8, a message over
    /// the limit, ...): the session ends as if closed, and the client is told why.
    Violation(Violation),
    /// The connection broke without a close.
    Lost,
}

/// The close status code that goes with a goodbye.
fn close_code(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::ShuttingDown => 1001,
        ErrorCode::Internal => 1011,
        _ => 1008,
    }
}

/// The pong the writer owes the client: only the latest ping is answered
/// (RFC 6455 §5.5.3), so a ping flood cannot make it queue up.
#[derive(Default)]
struct Pong {
    payload: Mutex<Option<Vec<u8>>>,
    due: Notify,
}

/// Reads messages into the session until the client closes the WebSocket,
/// breaks its protocol, or the connection breaks ([`End::Lost`]).
async fn read(rd: &mut ReadHalf<Io>, reader: &mut FrameReader, session: &Session, pong: &Pong) -> End {
    loop {
        loop {
            match reader.next() {
                Ok(Some(Incoming::Text(text))) => session.on_envelope_frame(Encoding::Json, text),
                Ok(Some(Incoming::Binary(bin))) => session.on_envelope_frame(Encoding::Bincode, bin),
                Ok(Some(Incoming::Skipped { size })) => {
                    session.on_oversized_frame(usize::try_from(size).unwrap_or(usize::MAX));
                }
                Ok(Some(Incoming::Ping(payload))) => {
                    *pong.payload.lock().expect("pong lock") = Some(payload.to_vec());
                    pong.due.notify_one();
                    session.on_keepalive();
                }
                // An answer to a ping, or unsolicited: either shows the client is there.
                Ok(Some(Incoming::Pong)) => session.on_keepalive(),
                Ok(Some(Incoming::Close(code))) => return End::Closed(code),
                Ok(None) => break,
                Err(violation) => return End::Violation(violation),
            }
        }
        match rd.read_buf(reader.spare()).await {
            Ok(0) => return End::Lost,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket read failed");
                return End::Lost;
            }
        }
    }
}

/// Reads and drops what the client still sends until it answers the close
/// frame. A socket closed with unread bytes is reset, and a reset makes the
/// client's TCP stack discard what it had not read yet: the goodbye, the close
/// frame, and whatever came before them (a flooding client always has bytes
/// in flight).
async fn linger(rd: &mut ReadHalf<Io>, reader: &mut FrameReader) {
    loop {
        loop {
            match reader.next() {
                Ok(Some(Incoming::Close(_))) | Err(_) => return,
                Ok(Some(_)) => {}
                Ok(None) => break,
            }
        }
        if !matches!(rd.read_buf(reader.spare()).await, Ok(n) if n > 0) {
            return;
        }
    }
}

/// Reads and drops whatever arrives until the client closes the connection
/// (or it breaks), in a small buffer: a client that broke the protocol is not
/// parsed any further.
async fn drain(rd: &mut ReadHalf<Io>) {
    let mut scratch = [0u8; 1024];
    while matches!(rd.read(&mut scratch).await, Ok(n) if n > 0) {}
}

/// At most this many queued messages, or about this many bytes, go out in
/// one write, so that a queue that never empties still reaches the socket and
/// a batch never holds more than a few frames beyond its cap.
const MAX_BATCH: usize = 64;
const BATCH_BYTES: usize = 16 * 1024;
/// The output buffer a writer keeps between writes, at most: enough for
/// candidates and small signals; an offer's buffer is not kept (idle sessions
/// must be cheap).
const KEPT_BUFFER: usize = frame::KEPT_BUFFER;

/// Whole frames to write, and how many of their bytes the socket has taken.
#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    sent: usize,
}

impl Batch {
    /// What the socket has not taken yet.
    fn unsent(&self) -> &[u8] {
        self.buf.get(self.sent..).unwrap_or_default()
    }

    /// Writes the rest of the batch and flushes it. Cancel safe: each write
    /// either took its bytes (and `sent` counts them) or took none.
    async fn write_out(&mut self, wr: &mut WriteHalf<Io>) -> std::io::Result<()> {
        while self.sent < self.buf.len() {
            match wr.write(&self.buf[self.sent..]).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                n => self.sent += n,
            }
        }
        wr.flush().await?;
        self.buf.clear();
        self.sent = 0;
        // An idle session should not keep the buffer of its largest message.
        if self.buf.capacity() > KEPT_BUFFER {
            self.buf = Vec::new();
        }
        Ok(())
    }
}

/// Writes queued messages (and pongs) until the socket fails. Whatever waits
/// in the queue when the writer wakes up goes out with one write (one TLS
/// record, one system call) instead of one each.
async fn write(
    wr: &mut WriteHalf<Io>,
    queue: &mut mpsc::Receiver<Outgoing>,
    outbox: &Outbox,
    pong: &Pong,
    batch: &mut Batch,
) {
    loop {
        // A batch cut short last time (this future was dropped mid-write) is
        // finished first; it never is, today, since the session ends with the
        // writer, but nothing here depends on that.
        if batch.unsent().is_empty() {
            tokio::select! {
                biased;
                () = pong.due.notified() => {
                    if let Some(payload) = pong.payload.lock().expect("pong lock").take() {
                        frame::append_pong(&mut batch.buf, &payload);
                    }
                }
                out = queue.recv() => {
                    let Some(out) = out else { return };
                    append_message(&mut batch.buf, outbox, &out);
                    for _ in 1..MAX_BATCH {
                        if batch.buf.len() >= BATCH_BYTES {
                            break;
                        }
                        let Ok(out) = queue.try_recv() else { break };
                        append_message(&mut batch.buf, outbox, &out);
                    }
                }
            }
        }
        if let Err(e) = batch.write_out(wr).await {
            return tracing::debug!(error = %e, "WebSocket write failed");
        }
    }
}

/// Writes `bytes` (whole frames) and flushes them to the socket: one TLS
/// record, one system call.
async fn send(wr: &mut WriteHalf<Io>, bytes: &[u8]) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

/// Appends `out` enveloped with its channel as one WebSocket message (text for
/// JSON, binary for bincode); it leaves the outbound queue's byte count.
fn append_message(buf: &mut Vec<u8>, outbox: &Outbox, out: &Outgoing) {
    append_enveloped(buf, outbox.encoding(), out.channel, &out.msg);
    outbox.written(out);
}

fn append_enveloped(buf: &mut Vec<u8>, encoding: Encoding, channel: proto::ChannelId, msg: &proto::ServerMessage) {
    let start = frame::begin_frame(buf);
    codec::encode_enveloped_into(encoding, channel, msg, buf);
    frame::end_frame(buf, start, encoding == Encoding::Json);
}
