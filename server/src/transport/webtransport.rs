//! WebTransport (HTTP/3 over QUIC): one session per WebTransport session, one
//! bidirectional stream per channel.
//!
//! The first stream the client opens is the control channel; every later one
//! is a room's, opened by the client with `join` as its first frame. Each
//! stream has its own reader and writer task, so a stalled room never holds up
//! another. The connect URL states the encoding (`?encoding=json|bincode`,
//! JSON by default) and may carry the token (`?token=`). A blocked address, or
//! a switched-off transport, is refused at the QUIC level before any handshake
//! work. wtransport can refuse a CONNECT only with 403, 404 or 429: a bad URL
//! token or a foreign origin gets 403, any other refusal 429, an unknown path or
//! encoding 404.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use proto::frame::{FrameError, read_frame};
use proto::{CONTROL_CHANNEL, ChannelId, Encoding};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;
use wtransport::endpoint::{IncomingSession, endpoint_side};
use wtransport::error::ConnectionError;
use wtransport::{Connection, Endpoint, RecvStream, SendStream, StreamId, VarInt};

use super::FLUSH_TIMEOUT;
use crate::session::{Admitted, Connecting, Goodbye, Hub, Outbox, Outgoing, Session, Transport};

/// Accepts WebTransport sessions for as long as the process runs (during a
/// shutdown, admission refuses new ones).
pub async fn serve(endpoint: Endpoint<endpoint_side::Server>, hub: Arc<Hub>, handshake_timeout: Duration) {
    loop {
        let incoming = endpoint.accept().await;
        tokio::spawn(handle(incoming, hub.clone(), handshake_timeout));
    }
}

async fn handle(incoming: IncomingSession, hub: Arc<Hub>, handshake_timeout: Duration) {
    // Everything before the session exists is bounded in time: the QUIC
    // handshake, the CONNECT request, and the answer to it.
    let Ok(Some((conn, admitted, encoding))) = tokio::time::timeout(handshake_timeout, establish(incoming, &hub)).await
    else {
        return;
    };
    let session = hub.open_per_channel(admitted, encoding);
    let span = session.span().clone();
    drive(conn, session, encoding).instrument(span).await;
}

/// Completes the handshake and answers the CONNECT request: refused (404 for an
/// unknown path or encoding, 403 for a bad URL token or origin, 429 for
/// admission) or accepted.
async fn establish(incoming: IncomingSession, hub: &Hub) -> Option<(Connection, Admitted, Encoding)> {
    let remote = incoming.remote_address();
    if hub.early_check(remote.ip(), Transport::WebTransport).is_err() {
        // No TLS work for a blocked address or a switched-off transport.
        incoming.refuse();
        return None;
    }
    let request = match incoming.await {
        Ok(request) => request,
        Err(e) => {
            tracing::debug!(error = %e, "WebTransport handshake failed");
            return None;
        }
    };
    let Some(connect) = ConnectRequest::parse(request.path()) else {
        request.not_found().await;
        return None;
    };
    let connecting = Connecting {
        remote,
        transport: Transport::WebTransport,
        origin: request.origin(),
        authority: Some(request.authority()),
        token: connect.token.as_deref(),
    };
    let admitted = match hub.preflight(&connecting).await {
        Ok(admitted) => admitted,
        // wtransport can answer only 403, 404 or 429.
        Err(refusal) if matches!(refusal.code.http_status(), 401 | 403) => {
            request.forbidden().await;
            return None;
        }
        Err(_) => {
            request.too_many_requests().await;
            return None;
        }
    };
    match request.accept().await {
        Ok(conn) => Some((conn, admitted, connect.encoding)),
        Err(e) => {
            tracing::debug!(error = %e, "WebTransport session not established");
            None
        }
    }
}

/// What the CONNECT request's path says.
struct ConnectRequest {
    encoding: Encoding,
    token: Option<String>,
}

impl ConnectRequest {
    fn parse(path: &str) -> Option<Self> {
        let url = url::Url::parse("https://server").ok()?.join(path).ok()?;
        if !matches!(url.path(), "/" | "/signal") {
            return None;
        }
        let mut connect = ConnectRequest {
            encoding: Encoding::Json,
            token: None,
        };
        for (key, value) in url.query_pairs() {
            match &*key {
                "encoding" => connect.encoding = Encoding::from_query(&value)?,
                "token" => connect.token = Some(value.into_owned()),
                _ => {}
            }
        }
        Some(connect)
    }
}

/// The channel of a client-opened bidirectional stream: its index among the
/// session's streams (the CONNECT request is the session's own stream; the
/// first stream after it, the control channel, is 0). Derived from the QUIC
/// stream id, so it does not depend on the order the streams were accepted in.
fn channel_of(conn: &Connection, stream: StreamId) -> Option<ChannelId> {
    let connect = conn.session_id().session_stream().into_u64();
    // Client-initiated bidirectional stream ids go up in steps of 4.
    let index = stream.into_u64().checked_sub(connect)? / 4;
    ChannelId::try_from(index.checked_sub(1)?).ok()
}

/// How a WebTransport session ended.
enum End {
    /// The session ended (said goodbye).
    Goodbye(Goodbye),
    /// The client closed the connection or its control stream.
    Closed,
    /// The connection broke (timed out, or a protocol error).
    Lost,
}

/// Runs one session: accepts its streams, and closes it when it ends.
async fn drive(conn: Connection, session: Arc<Session>, encoding: Encoding) {
    let mut readers = JoinSet::new();
    let mut writers = JoinSet::new();
    let mut control_writer = None;
    let end = loop {
        tokio::select! {
            // The session's end comes first (see the control stream's end below).
            biased;
            goodbye = session.closed() => break End::Goodbye(goodbye),
            stream = conn.accept_bi() => {
                let (send, recv) = match stream {
                    Ok(stream) => stream,
                    Err(ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_)) => break End::Closed,
                    Err(e) => {
                        tracing::debug!(error = %e, "WebTransport connection lost");
                        break End::Lost;
                    }
                };
                let Some(channel) = channel_of(&conn, send.id()) else { continue };
                let queue = session.add_channel(channel);
                if channel == CONTROL_CHANNEL {
                    control_writer = Some(tokio::spawn(write_control(send, queue, session.clone()).in_current_span()));
                } else {
                    writers.spawn(write_room(send, queue, session.outbox().clone()).in_current_span());
                }
                readers.spawn(read_channel(recv, channel, session.clone(), encoding).in_current_span());
            }
            Some(done) = readers.join_next() => {
                let Ok((channel, finished)) = done else { continue };
                let closed = conn.closed().now_or_never();
                let alive = closed.is_none();
                if channel == CONTROL_CHANNEL {
                    // The control stream ended: the client is leaving, or the
                    // session ended it (an unreadable frame) and has a goodbye,
                    // or the connection broke.
                    let closed_by_client = matches!(
                        closed,
                        Some(ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_))
                    );
                    match session.outbox().goodbye() {
                        // `closed` returns the goodbye at once, and ends the session with it.
                        Some(_) => break End::Goodbye(session.closed().await),
                        None if finished || alive || closed_by_client => break End::Closed,
                        None => break End::Lost,
                    }
                }
                // A room's stream that the client finished or reset on a live
                // connection: the room is left. On a lost connection the session
                // may be resumed, rooms included.
                if finished || alive {
                    session.on_channel_closed(channel);
                }
            }
            // Rooms that were left: their writers are done.
            Some(_) = writers.join_next() => {}
        }
    };
    match end {
        End::Goodbye(goodbye) => {
            if let Some(writer) = control_writer {
                // The control writer sends what is queued and the goodbye, then finishes.
                let _ = tokio::time::timeout(FLUSH_TIMEOUT * 2, writer).await;
            }
            stop(readers, writers).await;
            // The session is over: its connection slot is free before the client is waited for.
            drop(session);
            // A browser drops what it has received but not yet handed to the
            // page when the session closes, so closing right after the goodbye
            // was acknowledged can still lose it: the client, which closes once
            // it has read the goodbye, is given a moment to do so first (as the
            // WSS transport waits for the client's close frame).
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, conn.closed()).await;
            conn.close(
                VarInt::from_u32(u32::from(goodbye.code.number())),
                goodbye.code.as_str().as_bytes(),
            );
        }
        End::Closed | End::Lost => {
            if let Some(writer) = control_writer {
                writer.abort();
            }
            conn.close(VarInt::from_u32(0), b"");
            stop(readers, writers).await;
            if let End::Lost = end {
                // The session layer may hold the session for a resume.
                session.connection_lost();
            }
        }
    }
    tracing::debug!("WebTransport connection closed");
}

/// Stops a session's stream tasks; their references to the session are gone
/// when this returns.
async fn stop<R: 'static, W: 'static>(mut readers: JoinSet<R>, mut writers: JoinSet<W>) {
    readers.abort_all();
    writers.abort_all();
    while readers.join_next().await.is_some() {}
    while writers.join_next().await.is_some() {}
}

/// Reads a channel's frames into the session; returns the channel when its
/// stream ends, and whether it ended in order (finished by the client, or
/// done because the room was left) rather than broken.
async fn read_channel(
    mut recv: RecvStream,
    channel: ChannelId,
    session: Arc<Session>,
    encoding: Encoding,
) -> (ChannelId, bool) {
    let mut buf = Vec::new();
    let max = session.max_frame();
    let finished = loop {
        match read_frame(&mut recv, &mut buf, max).await {
            Ok(true) => {
                session.on_stream_frame(channel, encoding, &buf);
                // An idle stream should not keep the buffer of its largest frame (an offer).
                if buf.capacity() > KEPT_BUFFER {
                    buf = Vec::new();
                }
                // A left room's (or refused join's) stream is done: stop reading it,
                // which also tells the client (STOP_SENDING) and frees the stream.
                if session.outbox().is_finished(channel) {
                    break true;
                }
            }
            Err(FrameError::TooLarge { len, .. }) => session.on_oversized_frame(len),
            Err(FrameError::Unskippable { len }) => {
                session.on_unframeable(channel, len);
                break true;
            }
            Ok(false) => break true,
            Err(_) => break false,
        }
    };
    (channel, finished)
}

async fn write_room(mut send: SendStream, mut queue: mpsc::Receiver<Outgoing>, outbox: Arc<Outbox>) {
    let mut buf = Vec::new();
    while let Some(out) = queue.recv().await {
        if write_batch(&mut send, &mut queue, &outbox, out, &mut buf)
            .await
            .is_err()
        {
            return;
        }
    }
    // The room was left: what was queued is sent; end the stream.
    let _ = send.finish().await;
}

async fn write_control(mut send: SendStream, mut queue: mpsc::Receiver<Outgoing>, session: Arc<Session>) {
    let outbox = session.outbox().clone();
    let mut buf = Vec::new();
    // The end is checked between whole frames only: a frame cut in the middle
    // would break the client's framing. A write stuck on a client that stopped
    // reading is cut short by the driver, which closes the connection.
    let goodbye = loop {
        tokio::select! {
            biased;
            goodbye = outbox.closed() => break goodbye,
            out = queue.recv() => {
                let Some(out) = out else { return };
                if write_batch(&mut send, &mut queue, &outbox, out, &mut buf).await.is_err() {
                    return;
                }
            }
        }
    };
    let _ = tokio::time::timeout(
        FLUSH_TIMEOUT,
        farewell(&mut send, &mut queue, &outbox, goodbye, &mut buf),
    )
    .await;
}

async fn farewell(
    send: &mut SendStream,
    queue: &mut mpsc::Receiver<Outgoing>,
    outbox: &Outbox,
    goodbye: Goodbye,
    buf: &mut Vec<u8>,
) {
    // What is still queued and the goodbye, in one write.
    buf.clear();
    while let Ok(out) = queue.try_recv() {
        proto::frame::append_frame(outbox.encoding(), &*out.msg, buf);
        outbox.written(&out);
    }
    proto::frame::append_frame(outbox.encoding(), &goodbye.to_message(), buf);
    if send.write_all(buf).await.is_ok() {
        // Completes once the client has acknowledged everything.
        let _ = send.finish().await;
    }
}

/// At most this many queued messages, or about this many bytes, go out in one
/// write.
const MAX_BATCH: usize = 64;
const BATCH_BYTES: usize = 16 * 1024;
/// The read or write buffer a stream keeps between frames, at most: enough for
/// candidates and small signals; an offer's buffer is not kept (idle sessions
/// must be cheap).
const KEPT_BUFFER: usize = 1024;

/// Writes `first` and the messages already queued behind it (up to
/// [`MAX_BATCH`]) with one write: one wake-up of the QUIC connection instead
/// of one a message.
async fn write_batch(
    send: &mut SendStream,
    queue: &mut mpsc::Receiver<Outgoing>,
    outbox: &Outbox,
    first: Outgoing,
    buf: &mut Vec<u8>,
) -> Result<(), ()> {
    buf.clear();
    let mut next = Some(first);
    let mut batched = 0;
    while let Some(out) = next {
        proto::frame::append_frame(outbox.encoding(), &*out.msg, buf);
        outbox.written(&out);
        batched += 1;
        next = if batched < MAX_BATCH && buf.len() < BATCH_BYTES {
            queue.try_recv().ok()
        } else {
            None
        };
    }
    let written = send.write_all(buf).await.map_err(|_| ());
    if buf.capacity() > KEPT_BUFFER {
        *buf = Vec::new();
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_path_gives_encoding_and_token() {
        let c = ConnectRequest::parse("/?encoding=bincode&token=abc").unwrap();
        assert_eq!(c.encoding, Encoding::Bincode);
        assert_eq!(c.token.as_deref(), Some("abc"));
        let c = ConnectRequest::parse("/signal").unwrap();
        assert_eq!(c.encoding, Encoding::Json);
        assert!(ConnectRequest::parse("/other").is_none());
        assert!(ConnectRequest::parse("/?encoding=xml").is_none());
    }
}
