//! The client's TLS configuration for either transport, and the verifier
//! that trusts a certificate by its SHA-256 hash (as a browser's
//! `serverCertificateHashes` does).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

use super::{ClientError, TransportKind, Trust};

/// A rustls client configuration that trusts what `trust` says, with the ALPN
/// the transport needs (`h3` for WebTransport, `http/1.1` for the WebSocket).
pub(super) fn client_config(trust: &Trust, kind: TransportKind) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Connect(format!("TLS setup: {e}")))?;
    let mut config = match trust {
        Trust::CertificateHashes(hashes) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(HashVerifier::new(hashes.clone(), provider)))
            .with_no_client_auth(),
        Trust::Roots(roots) => builder.with_root_certificates(roots.clone()).with_no_client_auth(),
    };
    config.alpn_protocols = match kind {
        TransportKind::WebTransport => vec![crate::h3::ALPN.to_vec()],
        TransportKind::WebSocket => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}

/// Trusts a server certificate whose SHA-256 (of its DER) is one of the
/// given hashes, whatever its issuer or name; the handshake's signatures are
/// still checked against it.
#[derive(Debug)]
pub struct HashVerifier {
    hashes: Vec<[u8; 32]>,
    provider: Arc<CryptoProvider>,
}

impl HashVerifier {
    pub fn new(hashes: Vec<[u8; 32]>, provider: Arc<CryptoProvider>) -> Self {
        Self { hashes, provider }
    }
}

impl ServerCertVerifier for HashVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let hash: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if self.hashes.contains(&hash) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
