//! The QUIC endpoint WebTransport is served on, and the QUIC transport
//! settings sized for signaling: a session is a control stream and one stream
//! per room, carrying frames of at most `max_frame_bytes`, so nothing needs
//! quinn's defaults, which are sized for bulk transfers (100 + 100 streams
//! allocated up front, megabyte windows, a batch of packets per send).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use quinn::{EndpointConfig, ServerConfig, TransportConfig, VarInt};

use crate::config::Config;
use crate::tls::CertStore;

/// How long a connection may be silent before QUIC closes it.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the server makes sure a silent connection is still there: well
/// below [`IDLE_TIMEOUT`], so that a client that sends no keep-alives of its
/// own (and the NAT bindings on the way) stays alive.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// Binds the UDP socket and starts the QUIC endpoint.
pub fn bind(config: &Config, certs: &Arc<CertStore>) -> anyhow::Result<quinn::Endpoint> {
    let addr = SocketAddr::new(config.bind, config.webtransport_port);
    let socket = crate::listen::udp(addr, config.reuse_port)
        .with_context(|| format!("binding UDP {}:{}", config.bind, config.webtransport_port))?;
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(certs.quic_config()?).context("TLS settings for QUIC")?;
    let mut server = ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport(config)));
    // A client that changes networks keeps its session (QUIC path migration).
    server.migration(true);
    let endpoint = quinn::Endpoint::new(
        EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .context("starting the QUIC endpoint")?;
    Ok(endpoint)
}

/// QUIC transport settings for one signaling session; every value is in
/// docs/webtransport.md with its reason.
pub fn transport(config: &Config) -> TransportConfig {
    let mut transport = TransportConfig::default();
    // The CONNECT stream, the control stream and one stream per room, plus a
    // few for rooms whose streams are still closing.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(config.max_rooms_per_session.saturating_add(4)));
    // HTTP/3 needs three (control, QPACK encoder and decoder); one more for a
    // stream of a type we stop. WebTransport unidirectional streams are not used.
    transport.max_concurrent_uni_streams(VarInt::from_u32(4));
    // Two of the largest frames in flight per stream (and room for a CONNECT
    // request's headers); a few streams' worth per connection.
    let stream_window = config.max_frame_bytes.saturating_mul(2).max(64 * 1024);
    transport.stream_receive_window(VarInt::from_u32(stream_window));
    transport.receive_window(VarInt::from_u32(stream_window.saturating_mul(4)));
    // What the server has unacknowledged on the wire for one client; the
    // session layer's outbound queue bounds the rest.
    transport.send_window(u64::from(stream_window.saturating_mul(4)));
    // Datagrams are never used, but Chromium wants HTTP/3 datagrams announced:
    // a small buffer bounds what a client can park in it.
    transport.datagram_receive_buffer_size(Some(2048));
    transport.datagram_send_buffer_size(2048);
    // Segmentation offload batches bulk sends; signaling sends a few small
    // packets at a time, and with it each connection keeps a transmit buffer
    // of ten packets (15 KiB) instead of one.
    transport.enable_segmentation_offload(false);
    // Path MTU discovery probes with packets above the initial 1200 bytes,
    // and each connection's transmit buffer then doubles to 2.4 KiB for good;
    // signaling's packets are small, and an offer of a few KB takes one more
    // packet at 1200 bytes.
    transport.mtu_discovery_config(None);
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(VarInt::from_u32(
        IDLE_TIMEOUT.as_millis() as u32,
    ))));
    transport
}
