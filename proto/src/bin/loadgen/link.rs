//! What one session's traffic goes through: our server (a `proto::client`
//! session and its room) or the PeerJS server (one WebSocket, `peerjs.rs`), so
//! that a single traffic pattern measures either and the numbers compare.

use std::sync::Arc;
use std::time::Duration;

use proto::client::{Client, ClientError, ConnectOptions, Room};
use proto::{ClientMessage, EventCount, PeerId, ServerMessage, Signal};
use tokio::time::Instant;

use crate::TransportArg;
use crate::peerjs::PeerJs;
use crate::run::{Plan, error_label};

/// A peer as the server addresses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Addr {
    /// Ours: the peer id from `welcome`.
    Ours(PeerId),
    /// PeerJS: the id the client chose when it connected.
    PeerJs(Arc<str>),
}

/// What a session hears from the server.
pub(crate) enum Event {
    Signal {
        from: Addr,
        signal: Signal,
    },
    /// An error from the server (its code), or a message that made no sense.
    Error(String),
    /// The server ended the session (its code).
    Goodbye(String),
    /// Anything else: members joining, acknowledgements, ...
    Other,
    Closed,
}

/// One session, connected and in its room.
pub(crate) enum Link {
    // Boxed: a session and its room are large, and tens of thousands are held.
    Ours {
        client: Box<Client>,
        room: Room,
        acks: Acks,
    },
    PeerJs(PeerJs),
}

/// The room's events received and acknowledged with `received`, as a browser
/// client does (every 16 events, and when a burst is over), so that the server
/// does not keep them for a resume and an idle session costs what it would.
pub(crate) struct Acks {
    events: EventCount,
    acked: EventCount,
    at: Instant,
}

/// Unacknowledged events that are acknowledged at once.
const ACK_EVERY: EventCount = 16;
/// How long an unacknowledged event may wait otherwise.
const ACK_AFTER: Duration = Duration::from_secs(1);

impl Link {
    /// Connects session `i` and, on our server, joins its room. Returns the
    /// link, its address and how long connecting took (without the join); or
    /// the error's label for the report and its message.
    pub(crate) async fn open(
        i: usize,
        plan: &Plan,
    ) -> Result<(Link, Addr, std::time::Duration), (&'static str, String)> {
        let started = tokio::time::Instant::now();
        let source_ip = (!plan.source_ips.is_empty()).then(|| plan.source_ips[i % plan.source_ips.len()]);
        let webtransport = match plan.transport {
            TransportArg::Peerjs => {
                let id: Arc<str> = format!("load-{}-{i}", plan.run_id).into();
                let peerjs = PeerJs::connect(plan, &id, source_ip)
                    .await
                    .map_err(|label| (label, label.to_owned()))?;
                return Ok((Link::PeerJs(peerjs), Addr::PeerJs(id), started.elapsed()));
            }
            TransportArg::Webtransport => true,
            TransportArg::Wss => false,
            TransportArg::Mix => i.is_multiple_of(2),
        };
        let url = if webtransport {
            &plan.url_webtransport
        } else {
            &plan.url_wss
        };
        let claims = serde_json::json!({
            "sub": format!("load-{i}"),
            "exp": jsonwebtoken::get_current_timestamp() + 3600,
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(plan.secret.as_bytes()),
        )
        .map_err(|e| ("token_signing", e.to_string()))?;
        let mut opts = ConnectOptions::new(url.clone(), plan.trust.clone())
            .token(token)
            .encoding(plan.encoding)
            .timeout(plan.connect_timeout);
        if let Some(ip) = source_ip {
            opts = opts.bind_ip(ip);
        }
        if webtransport && !plan.endpoints.is_empty() {
            opts = opts.endpoint(plan.endpoints[i % plan.endpoints.len()].clone());
        }
        let joined = async {
            let client = Client::connect(opts).await?;
            let connected = started.elapsed();
            let room = client
                .join(&format!("load-{}-{}", plan.run_id, i / plan.room_size))
                .await?;
            Ok::<_, ClientError>((client, room, connected))
        };
        let (client, room, connected) = joined.await.map_err(|e| (error_label(&e), e.to_string()))?;
        let addr = Addr::Ours(client.peer_id());
        Ok((
            Link::Ours {
                client: Box::new(client),
                room,
                acks: Acks {
                    events: 0,
                    acked: 0,
                    at: Instant::now(),
                },
            },
            addr,
            connected,
        ))
    }

    /// The next thing the server says to this session (cancel safe).
    pub(crate) async fn recv(&mut self) -> Event {
        match self {
            Link::Ours { client, room, acks } => {
                let msg = tokio::select! {
                    msg = room.recv() => msg,
                    msg = client.control().recv() => match msg {
                        // The control channel's errors count; its goodbye ends the room's channel too.
                        Some(ServerMessage::Goodbye { code, .. }) => return Event::Error(code.as_str().into()),
                        other => other,
                    },
                };
                if msg.as_ref().is_some_and(ServerMessage::is_room_event) {
                    acks.events += 1;
                }
                match msg {
                    Some(ServerMessage::Signal { from, signal }) => Event::Signal {
                        from: Addr::Ours(from),
                        signal,
                    },
                    Some(ServerMessage::Error { code, .. }) => Event::Error(code.as_str().into()),
                    Some(ServerMessage::Goodbye { code, .. }) => Event::Goodbye(code.as_str().into()),
                    Some(_) => Event::Other,
                    None => Event::Closed,
                }
            }
            Link::PeerJs(peerjs) => peerjs.recv().await,
        }
    }

    /// Acknowledges the room's events received so far if 16 wait, if one has
    /// waited a second, or if `now` (a burst is over); PeerJS has nothing like it.
    pub(crate) async fn acknowledge(&mut self, now: bool) -> Result<(), &'static str> {
        let Link::Ours { room, acks, .. } = self else {
            return Ok(());
        };
        let waiting = acks.events - acks.acked;
        if waiting == 0 || !(now || waiting >= ACK_EVERY || acks.at.elapsed() >= ACK_AFTER) {
            return Ok(());
        }
        room.send(&ClientMessage::Received { upto: acks.events })
            .await
            .map_err(|e| error_label(&e))?;
        acks.acked = acks.events;
        acks.at = Instant::now();
        Ok(())
    }

    /// Whether this session makes the offer to `peer`, as a browser would: on
    /// our server the newcomer offers to the members its `joined` listed (the
    /// others learn of it from `peer_joined`, which in cluster mode reaches
    /// another node a moment later, so an offer the other way could find its
    /// node not knowing the peer yet); PeerJS has no rooms, so the session that
    /// came first in the room's order (`first`) offers.
    pub(crate) fn offers_to(&self, peer: &Addr, first: bool) -> bool {
        match (self, peer) {
            (Link::Ours { room, .. }, Addr::Ours(peer)) => room.members().iter().any(|m| m.peer_id == *peer),
            _ => first,
        }
    }

    /// Sends `signal` to `to`; the error is a label for the report.
    pub(crate) async fn signal(&self, to: &Addr, signal: Signal) -> Result<(), &'static str> {
        match (self, to) {
            (Link::Ours { room, .. }, Addr::Ours(peer)) => {
                room.signal(*peer, signal).await.map_err(|e| error_label(&e))
            }
            (Link::PeerJs(peerjs), Addr::PeerJs(id)) => peerjs.signal(id, &signal).await,
            _ => Err("mixed_servers"),
        }
    }
}
