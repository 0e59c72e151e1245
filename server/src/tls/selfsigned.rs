//! Development certificates: issued with rcgen (ECDSA P-256, 13 days), kept in
//! the certificate directory so a restart keeps serving the same one.
//!
//! Files: `cert.pem` / `key.pem` (served now), `next-cert.pem` / `next-key.pem`
//! (the successor, once issued). The validity period is recovered from a
//! `*.meta` file beside each certificate.

use std::path::PathBuf;

use anyhow::Context as _;
use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

use super::rotation::{Rotation, VALIDITY};
use super::{Generation, write_private_file};

pub struct SelfSigned {
    dir: PathBuf,
}

/// The PEM texts of one issued certificate.
struct Issued {
    cert_pem: String,
    key_pem: String,
    not_after: OffsetDateTime,
}

impl SelfSigned {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The certificate on disk if it is still usable, else a new one.
    pub fn load_or_issue(&self, now: OffsetDateTime) -> anyhow::Result<Generation> {
        match self.load("") {
            Ok(Some(generation)) => Ok(generation),
            Ok(None) => self.issue_successor(now),
            Err(e) => {
                tracing::warn!(error = %e, "development certificate unreadable; issuing a new one");
                self.issue_successor(now)
            }
        }
    }

    pub fn load_successor(&self) -> anyhow::Result<Option<Generation>> {
        self.load("next-").or(Ok(None))
    }

    fn load(&self, prefix: &str) -> anyhow::Result<Option<Generation>> {
        let cert = self.dir.join(format!("{prefix}cert.pem"));
        let key = self.dir.join(format!("{prefix}key.pem"));
        let meta = self.dir.join(format!("{prefix}cert.meta"));
        if !cert.exists() || !key.exists() || !meta.exists() {
            return Ok(None);
        }
        let not_after: i64 = std::fs::read_to_string(&meta)?
            .trim()
            .parse()
            .context("bad .meta file")?;
        let not_after = OffsetDateTime::from_unix_timestamp(not_after)?;
        let cert_pem = std::fs::read_to_string(&cert)?;
        let key_pem = std::fs::read_to_string(&key)?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
        let mut generation = Generation::new(chain, key, not_after)?;
        generation.pem = Some((cert_pem, key_pem));
        Ok(Some(generation))
    }

    /// Issues a certificate valid from `now` for [`VALIDITY`].
    pub fn issue_successor(&self, now: OffsetDateTime) -> anyhow::Result<Generation> {
        let issued = issue(now)?;
        let mut generation = Generation::new(
            vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())?],
            PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())?,
            issued.not_after,
        )?;
        generation.pem = Some((issued.cert_pem, issued.key_pem));
        Ok(generation)
    }

    /// Writes the served certificate and the successor (if any) to disk.
    pub fn persist(&self, rotation: &Rotation<Generation>) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        self.write("", &rotation.current)?;
        match &rotation.successor {
            Some(next) => self.write("next-", next)?,
            None => {
                for name in ["key.pem", "cert.pem", "cert.meta"] {
                    let _ = std::fs::remove_file(self.dir.join(format!("next-{name}")));
                }
            }
        }
        Ok(())
    }

    fn write(&self, prefix: &str, generation: &Generation) -> anyhow::Result<()> {
        let Some((cert_pem, key_pem)) = &generation.pem else {
            return Ok(());
        };
        write_private_file(&self.dir.join(format!("{prefix}key.pem")), key_pem.as_bytes())?;
        write_private_file(&self.dir.join(format!("{prefix}cert.pem")), cert_pem.as_bytes())?;
        write_private_file(
            &self.dir.join(format!("{prefix}cert.meta")),
            generation.not_after.unix_timestamp().to_string().as_bytes(),
        )?;
        Ok(())
    }
}

fn issue(now: OffsetDateTime) -> anyhow::Result<Issued> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "signaling server development certificate");
    // Start a little in the past for clock skew; the whole period stays under 14 days.
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = params.not_before + VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: params.not_after,
    })
}
