//! Certificates for both listeners (QUIC and TLS over TCP), from PEM files or
//! self-signed for development, and the hashes browsers pin.
//!
//! Both listeners resolve their certificate through one [`CertStore`] at each
//! handshake, so a rotation takes effect on both at once without restarting
//! anything.

mod rotation;
mod selfsigned;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use rotation::Rotation;
pub use rotation::Validity;
use selfsigned::SelfSigned;

use crate::config::Config;

/// One certificate with its key, ready to serve.
pub struct Generation {
    key: Arc<CertifiedKey>,
    hash: [u8; 32],
    not_after: OffsetDateTime,
    /// The PEM texts (certificate, key) of a development certificate, to write to disk.
    pem: Option<(String, String)>,
}

impl Validity for Generation {
    fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
}

impl Generation {
    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        not_after: OffsetDateTime,
    ) -> anyhow::Result<Self> {
        let leaf = chain.first().context("the certificate file holds no certificate")?;
        use sha2::Digest as _;
        let hash: [u8; 32] = sha2::Sha256::digest(leaf.as_ref()).into();
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key).context("unsupported private key")?;
        Ok(Self {
            key: Arc::new(CertifiedKey::new(chain, signing_key)),
            hash,
            not_after,
            pem: None,
        })
    }

    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }
}

enum Source {
    /// Operator-provided files: served as they are, never rotated.
    Files,
    /// Development certificates, issued and rotated in this directory.
    SelfSigned(SelfSigned),
}

/// The certificates the server serves and publishes.
pub struct CertStore {
    source: Source,
    rotation: RwLock<Rotation<Generation>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertStore")
    }
}

impl CertStore {
    /// Loads the configured certificate, or loads / issues a development one.
    pub fn load(config: &Config) -> anyhow::Result<Arc<Self>> {
        let store = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .with_context(|| format!("reading {}", cert.display()))?
                    .collect::<Result<Vec<_>, _>>()
                    .with_context(|| format!("parsing {}", cert.display()))?;
                let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
                let generation = Generation::new(
                    chain,
                    key,
                    OffsetDateTime::UNIX_EPOCH + time::Duration::weeks(52 * 1000),
                )?;
                Self {
                    source: Source::Files,
                    rotation: RwLock::new(Rotation::new(generation)),
                }
            }
            _ => {
                let issuer = SelfSigned::new(config.cert_dir.clone());
                let now = OffsetDateTime::now_utc();
                let mut rotation = Rotation::new(issuer.load_or_issue(now)?);
                if let Some(next) = issuer.load_successor()? {
                    rotation.successor = Some(next);
                }
                rotation.tick(now, || issuer.issue_successor(now))?;
                issuer.persist(&rotation)?;
                Self {
                    source: Source::SelfSigned(issuer),
                    rotation: RwLock::new(rotation),
                }
            }
        };
        Ok(Arc::new(store))
    }

    /// Whether the certificates are development ones.
    pub fn is_self_signed(&self) -> bool {
        matches!(self.source, Source::SelfSigned(_))
    }

    /// SHA-256 hashes of every published certificate, the served one first.
    pub fn hashes(&self) -> Vec<[u8; 32]> {
        self.rotation
            .read()
            .expect("cert lock")
            .published()
            .map(Generation::hash)
            .collect()
    }

    /// Issues or switches development certificates when due.
    pub fn rotate(&self, now: OffsetDateTime) -> anyhow::Result<()> {
        let Source::SelfSigned(issuer) = &self.source else {
            return Ok(());
        };
        let mut rotation = self.rotation.write().expect("cert lock");
        if rotation.tick(now, || issuer.issue_successor(now))? {
            issuer.persist(&rotation)?;
            tracing::info!(
                serving = %hex(&rotation.current.hash),
                published = rotation.published().count(),
                "development certificate rotated"
            );
        }
        Ok(())
    }

    /// TLS for the HTTPS / WSS listener: TLS 1.3 and TLS 1.2 with rustls's
    /// modern (ECDHE + AEAD only) suites.
    pub fn tcp_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// TLS for the QUIC listener: TLS 1.3 only, ALPN h3.
    pub fn quic_config(self: &Arc<Self>) -> anyhow::Result<rustls::ServerConfig> {
        let mut config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])?
                .with_no_client_auth()
                .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h3".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.rotation.read().expect("cert lock").current.key.clone())
    }
}

/// Lowercase hex, as the hashes are published.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a file readable by its owner only, atomically (write then rename).
pub fn write_private_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tmp: PathBuf = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
