//! The client's TLS configuration for either transport.

use std::sync::Arc;

use super::{ClientError, TransportKind, Trust};

/// A rustls client configuration that trusts what `trust` says, with the ALPN
/// the transport needs (`h3` for WebTransport, `http/1.1` for the WebSocket).
pub(super) fn client_config(trust: &Trust, kind: TransportKind) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Connect(format!("TLS setup: {e}")))?;
    let mut config = match trust {
        Trust::CertificateHashes(hashes) => {
            let digests = hashes.iter().map(|h| wtransport::tls::Sha256Digest::new(*h));
            let verifier = wtransport::tls::client::ServerHashVerification::new(digests);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth()
        }
        Trust::Roots(roots) => builder.with_root_certificates(roots.clone()).with_no_client_auth(),
    };
    config.alpn_protocols = match kind {
        TransportKind::WebTransport => vec![b"h3".to_vec()],
        TransportKind::WebSocket => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}
