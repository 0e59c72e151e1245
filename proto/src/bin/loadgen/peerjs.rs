//! The PeerJS server's protocol (npm package `peer`, 1.0.2), enough to run the
//! relay scenario against it: one WebSocket per peer at
//! `<url>?key=peerjs&id=<id>&token=<token>`, answered with `{"type":"OPEN"}`;
//! `{"type":"OFFER"|"ANSWER"|"CANDIDATE","dst":<id>,"payload":...}` is
//! forwarded to `dst` with `src` added; `{"type":"HEARTBEAT"}` keeps the peer
//! alive. PeerJS has no rooms and no custom messages: the load generator
//! forms the rooms itself, and the steady `custom` signals travel as
//! `CANDIDATE`s (the payload is our `Signal` in JSON, so it says what it is).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proto::Signal;
use serde::Deserialize;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::Message;

use crate::link::{Addr, Event};
use crate::run::Plan;

/// How often a peer says it is alive (the PeerJS browser client's interval).
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Messages that may wait to be written, or to be read.
const QUEUE: usize = 1024;

/// A connected PeerJS peer.
pub(crate) struct PeerJs {
    out: mpsc::Sender<String>,
    inbox: mpsc::Receiver<Event>,
}

/// A message from the PeerJS server.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    src: Option<String>,
    payload: Option<serde_json::Value>,
}

/// TLS for the PeerJS server: trusts the certificates with the given hashes (the
/// bench gives PeerJS our server's certificate), ALPN `http/1.1`.
pub(crate) fn tls_config(hashes: &[[u8; 32]]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = proto::client::HashVerifier::new(hashes.to_vec(), provider.clone());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

impl PeerJs {
    /// Opens the WebSocket as peer `id` and waits for `OPEN`.
    pub(crate) async fn connect(plan: &Plan, id: &str, source_ip: Option<IpAddr>) -> Result<Self, &'static str> {
        tokio::time::timeout(plan.connect_timeout, Self::connect_inner(plan, id, source_ip))
            .await
            .map_err(|_| "timeout")?
    }

    async fn connect_inner(plan: &Plan, id: &str, source_ip: Option<IpAddr>) -> Result<Self, &'static str> {
        let tls = plan.peerjs_tls.clone().ok_or("no_tls_config")?;
        let mut url = url::Url::parse(&plan.url_peerjs).map_err(|_| "bad_url")?;
        // The token only proves, on a reconnect, that the id is ours.
        url.query_pairs_mut()
            .append_pair("key", "peerjs")
            .append_pair("id", id)
            .append_pair("token", &format!("t{}", plan.run_id));
        let host = url.host_str().ok_or("bad_url")?.trim_matches(['[', ']']).to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|_| "connect_failed")?
            .next()
            .ok_or("connect_failed")?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|_| "connect_failed")?;
        if let Some(ip) = source_ip {
            socket.bind(SocketAddr::new(ip, 0)).map_err(|_| "connect_failed")?;
        }
        let tcp = socket.connect(addr).await.map_err(|_| "connect_failed")?;
        let _ = tcp.set_nodelay(true);
        let (ws, _) =
            tokio_tungstenite::client_async_tls_with_config(url.as_str(), tcp, None, Some(Connector::Rustls(tls)))
                .await
                .map_err(|_| "connect_failed")?;
        let (mut sink, mut stream) = ws.split();

        // The first message says whether the server took the peer.
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Incoming>(&text) {
                    Ok(m) if m.kind == "OPEN" => break,
                    Ok(m) if m.kind == "ID-TAKEN" => return Err("peerjs_id_taken"),
                    _ => return Err("peerjs_refused"),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return Err("closed"),
            }
        }

        let (out_tx, mut out_rx) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            let mut heartbeat = tokio::time::interval(HEARTBEAT);
            heartbeat.tick().await;
            loop {
                let text = tokio::select! {
                    text = out_rx.recv() => match text {
                        Some(text) => text,
                        None => break,
                    },
                    _ = heartbeat.tick() => r#"{"type":"HEARTBEAT"}"#.to_owned(),
                };
                if sink.send(Message::text(text)).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(Message::Close(None)).await;
            let _ = sink.close().await;
        });
        let (in_tx, in_rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            while let Some(Ok(frame)) = stream.next().await {
                let event = match frame {
                    Message::Text(text) => event(&text),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if in_tx.send(event).await.is_err() {
                    return;
                }
            }
            let _ = in_tx.send(Event::Closed).await;
        });
        Ok(Self {
            out: out_tx,
            inbox: in_rx,
        })
    }

    pub(crate) async fn recv(&mut self) -> Event {
        self.inbox.recv().await.unwrap_or(Event::Closed)
    }

    pub(crate) async fn signal(&self, to: &str, signal: &Signal) -> Result<(), &'static str> {
        let kind = match signal {
            Signal::Offer { .. } => "OFFER",
            Signal::Answer { .. } => "ANSWER",
            Signal::Candidate { .. } | Signal::Custom { .. } => "CANDIDATE",
        };
        let text = serde_json::json!({ "type": kind, "dst": to, "payload": signal }).to_string();
        self.out.send(text).await.map_err(|_| "closed")
    }
}

/// What a text frame from the PeerJS server means to the load generator.
fn event(text: &str) -> Event {
    let Ok(msg) = serde_json::from_str::<Incoming>(text) else {
        return Event::Error("peerjs_bad_message".into());
    };
    match msg.kind.as_str() {
        "OFFER" | "ANSWER" | "CANDIDATE" => {
            let (Some(src), Some(payload)) = (msg.src, msg.payload) else {
                return Event::Error("peerjs_bad_message".into());
            };
            match serde_json::from_value::<Signal>(payload) {
                Ok(signal) => Event::Signal {
                    from: Addr::PeerJs(src.into()),
                    signal,
                },
                Err(_) => Event::Error("peerjs_bad_payload".into()),
            }
        }
        "LEAVE" | "EXPIRE" => Event::Error(format!("peerjs_{}", msg.kind.to_lowercase())),
        "ERROR" => Event::Error("peerjs_error".into()),
        _ => Event::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_candidate_is_a_signal_from_its_source() {
        let text = r#"{"type":"CANDIDATE","dst":"b","src":"a","payload":{"kind":"custom","data":"1:x"}}"#;
        match event(text) {
            Event::Signal { from, signal } => {
                assert_eq!(from, Addr::PeerJs("a".into()));
                assert_eq!(signal, Signal::Custom { data: "1:x".into() });
            }
            _ => panic!("not a signal"),
        }
    }

    #[test]
    fn garbage_and_expiry_are_errors_not_panics() {
        assert!(matches!(event("{"), Event::Error(_)));
        assert!(matches!(event(r#"{"type":"OFFER"}"#), Event::Error(_)));
        assert!(matches!(event(r#"{"type":"EXPIRE","src":"a"}"#), Event::Error(e) if e == "peerjs_expire"));
        assert!(matches!(event(r#"{"type":"HEARTBEAT"}"#), Event::Other));
    }
}
