//! Authentication: verifying the JWT that opens every session.
//!
//! HS256 with a shared secret, or RS256 / ES256 / EdDSA with a public key from a
//! PEM file. `exp` and `sub` are required, `nbf` is honoured, `iss` and `aud`
//! are checked when configured. The `sub` claim is the user id; the optional
//! `rooms` claim (a list of room names, where a trailing `*` matches any suffix)
//! restricts which rooms the token may join. Tokens are never logged.
//!
//! With no key configured the server uses a development secret that it creates
//! in the certificate directory, so `server token` can mint tokens it accepts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use proto::{ErrorCode, RoomId};
use serde::{Deserialize, Serialize};

use crate::config::{Config, JwtAlgorithm};

/// The longest user id (`sub`) accepted, in bytes.
pub const MAX_USER_ID: usize = 128;

/// What a valid token says about its bearer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub user_id: Arc<str>,
    /// Seconds since the Unix epoch.
    pub expires_at: u64,
    pub rooms: RoomGrant,
    /// The `roles` claim (`admin` opens the admin API).
    pub roles: Vec<String>,
}

impl Claims {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// The claims of a session opened without a token in development mode: a
    /// random `anon-` user, any room, a day's validity, no roles.
    pub fn anonymous() -> Self {
        Self {
            user_id: format!("anon-{:08x}", rand::random::<u32>()).into(),
            expires_at: now_secs() + 24 * 3600,
            rooms: RoomGrant::Any,
            roles: Vec::new(),
        }
    }
}

/// The rooms a token may join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomGrant {
    Any,
    /// Exact names, or prefixes written with a trailing `*`.
    Only(Vec<String>),
}

impl RoomGrant {
    pub fn allows(&self, room: &RoomId) -> bool {
        match self {
            RoomGrant::Any => true,
            RoomGrant::Only(patterns) => patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => room.as_str().starts_with(prefix),
                None => room.as_str() == p,
            }),
        }
    }
}

/// The claims as they appear in a token.
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl TokenClaims {
    /// Claims for `sub` expiring at `exp` (Unix seconds), nothing else.
    pub fn new(sub: impl Into<String>, exp: u64) -> Self {
        Self {
            sub: sub.into(),
            exp,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            rooms: None,
            roles: Vec::new(),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
}

impl AuthError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            AuthError::Invalid(_) => ErrorCode::AuthFailed,
        }
    }
}

/// Verifies tokens with the configured key.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
}

impl Authenticator {
    /// Builds the verifier the configuration asks for; with no key configured,
    /// the development secret from `cert_dir` (created if missing).
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let (key, algorithm) = match (&config.jwt_public_key, config.jwt_algorithm) {
            (Some(path), Some(alg)) => {
                let pem = std::fs::read(path).with_context(|| format!("reading JWT public key {}", path.display()))?;
                let (key, algorithm) = match alg {
                    JwtAlgorithm::Rs256 => (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256),
                    JwtAlgorithm::Es256 => (DecodingKey::from_ec_pem(&pem), Algorithm::ES256),
                    JwtAlgorithm::EdDsa => (DecodingKey::from_ed_pem(&pem), Algorithm::EdDSA),
                    JwtAlgorithm::Hs256 => anyhow::bail!("HS256 takes a secret, not a public key"),
                };
                (
                    key.with_context(|| format!("parsing JWT public key {}", path.display()))?,
                    algorithm,
                )
            }
            _ => (DecodingKey::from_secret(&hs256_secret(config)?), Algorithm::HS256),
        };
        let mut validation = Validation::new(algorithm);
        let mut required = vec!["exp", "sub"];
        validation.leeway = config.jwt_leeway_secs;
        validation.validate_nbf = true;
        match &config.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &config.jwt_issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self { key, validation })
    }

    /// Checks a token and returns what it says.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let data =
            jsonwebtoken::decode::<TokenClaims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)".into()),
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("unexpected algorithm".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::MissingRequiredClaim(c) => AuthError::Invalid(format!("missing claim {c}")),
                _ => AuthError::Invalid("malformed token".into()),
            })?;
        let claims = data.claims;
        if claims.sub.is_empty() || claims.sub.len() > MAX_USER_ID {
            return Err(AuthError::Invalid(format!("sub must be 1 to {MAX_USER_ID} bytes")));
        }
        Ok(Claims {
            user_id: claims.sub.into(),
            expires_at: claims.exp,
            rooms: claims.rooms.map_or(RoomGrant::Any, RoomGrant::Only),
            roles: claims.roles,
        })
    }
}

/// The HS256 secret: configured, from a file, or the development secret.
pub fn hs256_secret(config: &Config) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.0.as_bytes().to_vec());
    }
    if let Some(path) = &config.jwt_secret_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return Ok(text.trim_end().as_bytes().to_vec());
    }
    dev_secret(&config.cert_dir)
}

/// Where the development secret lives.
pub fn dev_secret_path(cert_dir: &Path) -> PathBuf {
    cert_dir.join("dev-jwt-secret")
}

/// Reads the development secret, creating it (random, owner-only) if missing.
pub fn dev_secret(cert_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dev_secret_path(cert_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim_end().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    std::fs::create_dir_all(cert_dir).with_context(|| format!("creating {}", cert_dir.display()))?;
    let secret: String = (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
    crate::tls::write_private_file(&path, secret.as_bytes())?;
    Ok(secret.into_bytes())
}

/// Mints an HS256 token, for development and tests.
pub fn mint_hs256(secret: &[u8], claims: &TokenClaims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing does not fail")
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, exp: u64) -> TokenClaims {
        TokenClaims::new(sub, exp)
    }

    fn hs256(secret: &str) -> (Authenticator, Vec<u8>) {
        let config = Config {
            jwt_secret: Some(crate::config::Secret(secret.into())),
            jwt_leeway_secs: 0,
            ..Config::default()
        };
        (Authenticator::from_config(&config).unwrap(), secret.as_bytes().to_vec())
    }

    #[test]
    fn a_valid_token_gives_its_subject_and_rooms() {
        let (auth, secret) = hs256("s3cret");
        let mut c = claims("alice", now_secs() + 60);
        c.rooms = Some(vec!["lobby".into(), "team-*".into()]);
        let got = auth.verify(&mint_hs256(&secret, &c)).unwrap();
        assert_eq!(&*got.user_id, "alice");
        assert!(got.rooms.allows(&RoomId::parse("lobby").unwrap()));
        assert!(got.rooms.allows(&RoomId::parse("team-red").unwrap()));
        assert!(!got.rooms.allows(&RoomId::parse("lobby2").unwrap()));
    }

    #[test]
    fn expired_wrongly_signed_and_future_tokens_are_refused() {
        let (auth, secret) = hs256("s3cret");
        let expired = mint_hs256(&secret, &claims("alice", now_secs() - 10));
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        let forged = mint_hs256(b"other", &claims("alice", now_secs() + 60));
        assert_eq!(auth.verify(&forged).unwrap_err().code(), ErrorCode::AuthFailed);
        let mut early = claims("alice", now_secs() + 600);
        early.nbf = Some(now_secs() + 300);
        assert_eq!(
            auth.verify(&mint_hs256(&secret, &early)).unwrap_err().code(),
            ErrorCode::AuthFailed
        );
        assert_eq!(auth.verify("not.a.jwt").unwrap_err().code(), ErrorCode::AuthFailed);
        let nobody = mint_hs256(&secret, &claims("", now_secs() + 60));
        assert_eq!(auth.verify(&nobody).unwrap_err().code(), ErrorCode::AuthFailed);
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let config = Config {
            jwt_secret: Some(crate::config::Secret("k".into())),
            jwt_issuer: Some("https://id.example".into()),
            jwt_audience: Some("signal".into()),
            ..Config::default()
        };
        let auth = Authenticator::from_config(&config).unwrap();
        let mut c = claims("bob", now_secs() + 60);
        assert!(auth.verify(&mint_hs256(b"k", &c)).is_err(), "no iss/aud");
        c.iss = Some("https://id.example".into());
        c.aud = Some("signal".into());
        auth.verify(&mint_hs256(b"k", &c)).unwrap();
        c.aud = Some("other".into());
        assert!(auth.verify(&mint_hs256(b"k", &c)).is_err());
    }

    fn asymmetric(alg: JwtAlgorithm, key_alg: &'static rcgen::SignatureAlgorithm) {
        let key = rcgen::KeyPair::generate_for(key_alg).unwrap();
        let dir = std::env::temp_dir().join(format!("signal-auth-{}-{:?}", std::process::id(), alg));
        std::fs::create_dir_all(&dir).unwrap();
        let public = dir.join("public.pem");
        std::fs::write(&public, key.public_key_pem()).unwrap();
        let config = Config {
            jwt_public_key: Some(public),
            jwt_algorithm: Some(alg),
            ..Config::default()
        };
        let auth = Authenticator::from_config(&config).unwrap();
        let (encoding_key, algorithm) = match alg {
            JwtAlgorithm::Es256 => (
                EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
                Algorithm::ES256,
            ),
            JwtAlgorithm::EdDsa => (
                EncodingKey::from_ed_pem(key.serialize_pem().as_bytes()).unwrap(),
                Algorithm::EdDSA,
            ),
            _ => unreachable!(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(algorithm),
            &claims("carol", now_secs() + 60),
            &encoding_key,
        )
        .unwrap();
        assert_eq!(&*auth.verify(&token).unwrap().user_id, "carol");
        // An HS256 token must not pass as the asymmetric algorithm.
        let hs = mint_hs256(key.public_key_pem().as_bytes(), &claims("mallory", now_secs() + 60));
        assert_eq!(auth.verify(&hs).unwrap_err().code(), ErrorCode::AuthFailed);
    }

    #[test]
    fn es256_public_keys_verify_tokens() {
        asymmetric(JwtAlgorithm::Es256, &rcgen::PKCS_ECDSA_P256_SHA256);
    }

    #[test]
    fn eddsa_public_keys_verify_tokens() {
        asymmetric(JwtAlgorithm::EdDsa, &rcgen::PKCS_ED25519);
    }

    #[test]
    fn rs256_public_keys_verify_tokens() {
        // rcgen cannot make RSA keys; openssl (a test dependency, see scripts/test) can.
        let dir = std::env::temp_dir().join(format!("signal-auth-rsa-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (private, public) = (dir.join("rsa.pem"), dir.join("rsa.pub.pem"));
        let run = |args: &[&std::ffi::OsStr]| {
            let status = std::process::Command::new("openssl")
                .args(args)
                .status()
                .expect("openssl is installed");
            assert!(status.success());
        };
        run(&[
            "genpkey".as_ref(),
            "-algorithm".as_ref(),
            "RSA".as_ref(),
            "-out".as_ref(),
            private.as_os_str(),
        ]);
        run(&[
            "pkey".as_ref(),
            "-in".as_ref(),
            private.as_os_str(),
            "-pubout".as_ref(),
            "-out".as_ref(),
            public.as_os_str(),
        ]);
        let config = Config {
            jwt_public_key: Some(public),
            jwt_algorithm: Some(JwtAlgorithm::Rs256),
            ..Config::default()
        };
        let auth = Authenticator::from_config(&config).unwrap();
        let key = EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims("dave", now_secs() + 60), &key).unwrap();
        assert_eq!(&*auth.verify(&token).unwrap().user_id, "dave");
    }

    #[test]
    fn the_development_secret_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("signal-devsecret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = dev_secret(&dir).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(dev_secret(&dir).unwrap(), first);
    }
}
