//! One accepted WebTransport session: its streams, and how it ends.
//!
//! Each stream has its own reader and writer task, so a stalled room never
//! holds up another. The session ends when the session layer says goodbye,
//! when the client closes it (its CONNECT stream ends, or the connection
//! closes) or when the connection breaks; the connection is then closed with
//! the goodbye's code (its number as the QUIC application error code, its name
//! as the reason).

use std::sync::Arc;

use futures_util::FutureExt;
use proto::frame::{FrameError, read_frame};
use proto::h3::{self, PeerStreams};
use proto::{CONTROL_CHANNEL, ChannelId, Encoding};
use quinn::{Connection, ConnectionError, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::super::FLUSH_TIMEOUT;
use crate::session::{Goodbye, Outbox, Outgoing, Session};

/// The HTTP/3 streams a session lives on; they stay open for its whole life.
pub(super) struct H3Session {
    /// Our control stream (its SETTINGS were sent).
    pub _control: SendStream,
    /// The client's control and QPACK streams.
    pub peer: PeerStreams,
    /// The CONNECT request's stream: the session lasts as long as it does.
    pub connect_send: SendStream,
    pub connect_recv: RecvStream,
    /// The CONNECT stream's id, which every stream of the session names.
    pub session_id: u64,
}

/// The channel of a client-opened bidirectional stream: its index among the
/// session's streams (the first stream after the CONNECT, the control
/// channel, is 0). Derived from the QUIC stream id, so it does not depend on
/// the order the streams were accepted in.
fn channel_of(session_id: u64, stream: &SendStream) -> Option<ChannelId> {
    let id = VarInt::from(stream.id()).into_inner();
    // Client-initiated bidirectional stream ids go up in steps of 4.
    let index = id.checked_sub(session_id)? / 4;
    ChannelId::try_from(index.checked_sub(1)?).ok()
}

/// How a WebTransport session ended.
enum End {
    /// The session ended (said goodbye).
    Goodbye(Goodbye),
    /// The client closed the session, the connection or its control stream.
    Closed,
    /// The connection broke (timed out, or a protocol error).
    Lost,
}

/// Reads the CONNECT stream to its end: the client's close capsule, if any,
/// and the end of the stream (finished or reset), which closes the session.
async fn until_client_closes(mut recv: RecvStream) {
    while let Ok(Some(_)) = recv.read_chunk(1024, true).await {}
}

/// Runs one session: accepts its streams, and closes it when it ends.
pub(super) async fn drive(conn: Connection, mut h3: H3Session, session: Arc<Session>, encoding: Encoding) {
    let mut readers = JoinSet::new();
    let mut writers = JoinSet::new();
    let mut control_writer = None;
    let session_id = h3.session_id;
    let client_closed = until_client_closes(h3.connect_recv).fuse();
    tokio::pin!(client_closed);
    let end = loop {
        tokio::select! {
            // The session's end comes first (see the control stream's end below).
            biased;
            goodbye = session.closed() => break End::Goodbye(goodbye),
            () = &mut client_closed => break End::Closed,
            stream = conn.accept_bi() => {
                let (send, recv) = match stream {
                    Ok(stream) => stream,
                    Err(ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_)) => break End::Closed,
                    Err(e) => {
                        tracing::debug!(error = %e, "WebTransport connection lost");
                        break End::Lost;
                    }
                };
                let Some(channel) = channel_of(session_id, &send) else { continue };
                let queue = session.add_channel(channel);
                if channel == CONTROL_CHANNEL {
                    control_writer = Some(tokio::spawn(write_control(send, queue, session.clone()).in_current_span()));
                } else {
                    writers.spawn(write_room(send, queue, session.outbox().clone()).in_current_span());
                }
                readers.spawn(read_channel(recv, session_id, channel, session.clone(), encoding).in_current_span());
            }
            // More of the client's HTTP/3 streams (QPACK), kept open; at most
            // as many as the transport settings allow.
            Ok(stream) = conn.accept_uni() => h3.peer.keep(stream),
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
                // The control writer sends what is queued and the goodbye, and
                // finishes once the client has acknowledged them.
                let _ = tokio::time::timeout(FLUSH_TIMEOUT * 2, writer).await;
            }
            stop(readers, writers).await;
            // The session is over: its connection slot is free before the client is waited for.
            drop(session);
            // A browser drops what it has received but not yet handed to the
            // page when the session closes, so the client, which closes once it
            // has read the goodbye, closes first if it does so in time (as the
            // WSS transport waits for the client's close frame).
            let client_done = async {
                tokio::select! {
                    _ = conn.closed() => {}
                    () = &mut client_closed => {}
                }
            };
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, client_done).await;
            h3::close_session(
                &conn,
                &mut h3.connect_send,
                u32::from(goodbye.code.number()),
                goodbye.code.as_str(),
            );
        }
        End::Closed | End::Lost => {
            if let Some(writer) = control_writer {
                writer.abort();
            }
            h3::close_session(&conn, &mut h3.connect_send, 0, "");
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

/// Reads a channel's WebTransport stream header, then its frames into the
/// session; returns the channel when its stream ends, and whether it ended in
/// order (finished by the client, or done because the room was left) rather
/// than broken.
async fn read_channel(
    mut recv: RecvStream,
    session_id: u64,
    channel: ChannelId,
    session: Arc<Session>,
    encoding: Encoding,
) -> (ChannelId, bool) {
    if let Err(e) = h3::read_stream_header(&mut recv, session_id).await {
        tracing::debug!(error = %e, channel, "not a WebTransport stream of this session");
        let _ = recv.stop(VarInt::from_u32(h3::code::STREAM_CREATION_ERROR));
        return (channel, false);
    }
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
    let _ = send.finish();
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
    if send.write_all(buf).await.is_ok() && send.finish().is_ok() {
        // Completes once the client has acknowledged everything.
        let _ = send.stopped().await;
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
