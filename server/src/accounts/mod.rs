//! The account service: user names and passwords in, tokens out.
//!
//! A login checks a password against the user file and returns a short-lived
//! access token (an HS256 JWT the server itself accepts, `sub` = the user name,
//! `roles` from the account) and a refresh token that buys the next pair. It is
//! optional: tokens minted by an issuer of your own work without it.
//!
//! - [`store`]: the user file, managed with `server users ...`;
//! - [`password`]: argon2id, and the password policy;
//! - [`refresh`]: refresh-token families, rotation and reuse detection;
//! - [`file`]: atomic writes and the writers' lock.
//!
//! Checking a password costs ~20 MiB and tens of milliseconds, so a login
//! needs one of [`HASHING_SLOTS`] slots ([`Accounts::hashing_slot`]) and runs
//! off the async runtime; one that cannot get a slot within [`HASHING_WAIT`]
//! is refused with `server_full`.

pub mod file;
pub mod password;
pub mod refresh;
pub mod store;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use proto::ErrorCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::refresh::{Families, FamilyFile, RefreshError, RefreshToken};
use self::store::{LiveUsers, User, UserStore};
use crate::config::Config;
use crate::session::addr::MaskedIp;
use crate::session::auth::{TokenClaims, hs256_secret, mint_hs256, now_secs};

/// Passwords checked at once.
pub const HASHING_SLOTS: usize = 2;
/// How long a login waits for a hashing slot before it is refused.
pub const HASHING_WAIT: Duration = Duration::from_secs(5);

/// What a login or a refresh hands out.
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    /// Seconds the access token is valid for.
    pub expires_in: u64,
    pub refresh_token: RefreshToken,
    /// Seconds the refresh token (its family) is valid for.
    pub refresh_expires_in: u64,
    pub user: String,
    pub roles: Vec<String>,
}

/// Why a login or a refresh failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Disabled(String),
    #[error("unknown user name or wrong password")]
    InvalidCredentials,
    #[error("this refresh token was already used: every token of its login is revoked; log in again")]
    RefreshTokenReused,
    #[error("the refresh token is unknown, expired or revoked; log in again")]
    InvalidRefreshToken,
    #[error("too many logins are being checked right now; try again in a moment")]
    Busy,
    #[error("the account service failed: {0}")]
    Internal(String),
}

impl AccountError {
    pub fn code(&self) -> ErrorCode {
        match self {
            AccountError::Disabled(_) => ErrorCode::AccountsDisabled,
            AccountError::InvalidCredentials => ErrorCode::InvalidCredentials,
            AccountError::RefreshTokenReused => ErrorCode::RefreshTokenReused,
            AccountError::InvalidRefreshToken => ErrorCode::InvalidRefreshToken,
            AccountError::Busy => ErrorCode::ServerFull,
            AccountError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Whether the failure counts towards the address's block.
    pub fn is_auth_failure(&self) -> bool {
        matches!(
            self,
            AccountError::InvalidCredentials | AccountError::RefreshTokenReused | AccountError::InvalidRefreshToken
        )
    }
}

/// What access tokens are signed with and say about their issuer.
struct Signer {
    secret: Vec<u8>,
    issuer: Option<String>,
    audience: Option<String>,
    ttl_secs: u64,
}

impl Signer {
    fn mint(&self, user: &User, now: u64) -> String {
        let claims = TokenClaims {
            sub: user.name.clone(),
            exp: now + self.ttl_secs,
            nbf: None,
            iat: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            rooms: None,
            roles: user.roles.clone(),
        };
        mint_hs256(&self.secret, &claims)
    }
}

/// The right to check one password: [`Accounts::login`] takes one.
#[derive(Debug)]
pub struct HashingSlot {
    /// Held, not read: dropping it frees the slot.
    _permit: OwnedSemaphorePermit,
}

/// The account service.
pub struct Accounts {
    users: LiveUsers,
    families: Mutex<Families>,
    family_file: FamilyFile,
    /// `Err(why)` when the server cannot sign tokens.
    signer: Result<Signer, String>,
    refresh_ttl_secs: u64,
    hashing: Arc<Semaphore>,
    hashing_wait: Duration,
}

impl Accounts {
    /// Opens the user file and the saved refresh tokens; either being
    /// unreadable is an error.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let signer = match &config.jwt_public_key {
            Some(_) => Err(
                "the server verifies tokens with a public key (jwt_public_key), so it cannot sign \
                 any: the account service needs an HS256 secret (jwt_secret or jwt_secret_file)"
                    .to_owned(),
            ),
            None => Ok(Signer {
                secret: hs256_secret(config).context("reading the HS256 secret accounts sign with")?,
                issuer: config.jwt_issuer.clone(),
                audience: config.jwt_audience.clone(),
                ttl_secs: config.access_token_ttl_secs,
            }),
        };
        let users = LiveUsers::open(UserStore::new(&config.users_file))?;
        let family_file = FamilyFile::next_to(&config.users_file);
        let mut families = family_file
            .load()
            .context("reading the saved refresh tokens (removing the file logs every account out)")?;
        families.prune(now_secs(), &users.current());
        Ok(Self {
            users,
            families: Mutex::new(families),
            family_file,
            signer,
            refresh_ttl_secs: config.refresh_token_ttl_secs,
            hashing: Arc::new(Semaphore::new(HASHING_SLOTS)),
            hashing_wait: HASHING_WAIT,
        })
    }

    /// How many accounts there are now.
    pub fn user_count(&self) -> usize {
        self.users.current().len()
    }

    /// `Err(accounts_disabled)` when the server cannot sign tokens.
    pub fn check_enabled(&self) -> Result<(), AccountError> {
        self.signer
            .as_ref()
            .map(|_| ())
            .map_err(|why| AccountError::Disabled(why.clone()))
    }

    /// Waits (a bounded time) for the right to check a password. Whoever
    /// waited should look again at whether the client may still try (its
    /// address may have been blocked meanwhile).
    pub async fn hashing_slot(&self) -> Result<HashingSlot, AccountError> {
        tokio::time::timeout(self.hashing_wait, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| AccountError::Busy)?
            .map(|permit| HashingSlot { _permit: permit })
            .map_err(|_| AccountError::Internal("hashing slots closed".into()))
    }

    /// Checks `name` and `password` and starts a login. An unknown name costs
    /// what a wrong password does.
    pub async fn login(
        self: &Arc<Self>,
        slot: HashingSlot,
        name: String,
        password: String,
        ip: IpAddr,
    ) -> Result<Issued, AccountError> {
        self.check_enabled()?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            // The slot goes with the work: a client that hangs up does not free it early.
            let _slot = slot;
            this.login_now(&name, &password, ip)
        })
        .await
        .map_err(|e| AccountError::Internal(e.to_string()))?
    }

    /// Trades a refresh token for a new access token and the next refresh token.
    pub async fn refresh(self: &Arc<Self>, token: String, ip: IpAddr) -> Result<Issued, AccountError> {
        self.check_enabled()?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.refresh_now(&token, ip))
            .await
            .map_err(|e| AccountError::Internal(e.to_string()))?
    }

    fn login_now(&self, name: &str, password: &str, ip: IpAddr) -> Result<Issued, AccountError> {
        let users = self.users.current();
        let user = match users.get(name) {
            Some(user) if password::verify(password, &user.password_hash) => user,
            found => {
                if found.is_none() {
                    password::verify_unknown(password);
                }
                // Only an existing name is logged: a password typed into the
                // name field must not end up in the log.
                let user = found.map(|u| u.name.as_str());
                tracing::info!(target: "security", event = "login_failed", user, ip = %MaskedIp::of(ip), "login failed");
                return Err(AccountError::InvalidCredentials);
            }
        };
        let now = now_secs();
        let mut families = self.families.lock().expect("families lock");
        families.prune(now, &users);
        let (refresh_token, refresh_expires) = families.start(user, now, self.refresh_ttl_secs);
        self.save(&families);
        drop(families);
        tracing::info!(target: "security", event = "login", user = %user.name, ip = %MaskedIp::of(ip), "logged in");
        self.issue(user, now, refresh_token, refresh_expires)
    }

    fn refresh_now(&self, token: &str, ip: IpAddr) -> Result<Issued, AccountError> {
        let users = self.users.current();
        let now = now_secs();
        let mut families = self.families.lock().expect("families lock");
        let rotated = families.rotate(token, now, &users);
        if !matches!(rotated, Err(RefreshError::Unknown)) {
            families.prune(now, &users);
            self.save(&families);
        }
        drop(families);
        match rotated {
            Ok(rotated) => self.issue(&rotated.user, now, rotated.token, rotated.expires_at),
            Err(RefreshError::Reused { user, family }) => {
                tracing::warn!(
                    target: "security",
                    event = "refresh_token_reused",
                    user,
                    family,
                    ip = %MaskedIp::of(ip),
                    "a used refresh token came back: its family is revoked"
                );
                Err(AccountError::RefreshTokenReused)
            }
            Err(e) => {
                tracing::info!(target: "security", event = "refresh_failed", ip = %MaskedIp::of(ip), reason = %e, "refresh failed");
                Err(AccountError::InvalidRefreshToken)
            }
        }
    }

    fn issue(
        &self,
        user: &User,
        now: u64,
        refresh: RefreshToken,
        refresh_expires: u64,
    ) -> Result<Issued, AccountError> {
        let signer = self
            .signer
            .as_ref()
            .map_err(|why| AccountError::Disabled(why.clone()))?;
        Ok(Issued {
            access_token: signer.mint(user, now),
            expires_in: signer.ttl_secs,
            refresh_token: refresh,
            refresh_expires_in: refresh_expires.saturating_sub(now),
            user: user.name.clone(),
            roles: user.roles.clone(),
        })
    }

    /// Saves the families. A failure is logged, not returned: the service goes
    /// on from memory, and only a restart would forget the change.
    fn save(&self, families: &Families) {
        if let Err(e) = self.family_file.save(families) {
            tracing::error!(error = %e, "saving the refresh tokens failed; they live on in memory until a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::file::tests::temp_dir;
    use crate::session::auth::Authenticator;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 7));

    fn config(dir: &std::path::Path) -> Config {
        Config {
            users_file: dir.join("users.json"),
            jwt_secret: Some(crate::config::Secret("accounts-test".into())),
            jwt_issuer: Some("https://signal.example".into()),
            cert_dir: dir.join("certs"),
            ..Config::default()
        }
    }

    fn with_alice(dir: &std::path::Path) -> Arc<Accounts> {
        UserStore::new(dir.join("users.json"))
            .add(User {
                name: "alice".into(),
                password_hash: password::hash("correct horse").unwrap(),
                roles: vec!["admin".into()],
                created_at: now_secs(),
            })
            .unwrap();
        Arc::new(Accounts::from_config(&config(dir)).unwrap())
    }

    /// A login as the HTTP route makes it: a hashing slot, then the check.
    async fn login(accounts: &Arc<Accounts>, name: &str, password: &str) -> Result<Issued, AccountError> {
        let slot = accounts.hashing_slot().await?;
        accounts.login(slot, name.into(), password.into(), IP).await
    }

    async fn refresh(accounts: &Arc<Accounts>, token: &RefreshToken) -> Result<Issued, AccountError> {
        accounts.refresh(token.expose().to_owned(), IP).await
    }

    #[tokio::test]
    async fn a_login_gives_an_access_token_the_server_accepts_and_a_refresh_token() {
        let dir = temp_dir("service-login");
        let accounts = with_alice(&dir);
        let issued = login(&accounts, "alice", "correct horse").await.unwrap();
        let claims = Authenticator::from_config(&config(&dir))
            .unwrap()
            .verify(&issued.access_token)
            .unwrap();
        assert_eq!(&*claims.user_id, "alice");
        assert!(claims.has_role("admin"));
        assert_eq!(issued.expires_in, 900);
        assert_eq!(issued.refresh_expires_in, 2_592_000);
        let next = refresh(&accounts, &issued.refresh_token).await.unwrap();
        assert_eq!(next.user, "alice");
        assert_eq!(
            refresh(&accounts, &issued.refresh_token).await.unwrap_err(),
            AccountError::RefreshTokenReused
        );
        assert_eq!(
            refresh(&accounts, &next.refresh_token).await.unwrap_err(),
            AccountError::InvalidRefreshToken
        );
    }

    #[tokio::test]
    async fn a_wrong_password_and_an_unknown_name_fail_alike() {
        let dir = temp_dir("service-wrong");
        let accounts = with_alice(&dir);
        for (name, password) in [("alice", "wrong horse"), ("mallory", "correct horse"), ("", "")] {
            let err = login(&accounts, name, password).await.unwrap_err();
            assert_eq!(err, AccountError::InvalidCredentials);
            assert!(err.is_auth_failure());
        }
    }

    #[tokio::test]
    async fn a_password_change_ends_the_logins_made_with_the_old_one() {
        let dir = temp_dir("service-passwd");
        let accounts = with_alice(&dir);
        let issued = login(&accounts, "alice", "correct horse").await.unwrap();
        UserStore::new(dir.join("users.json"))
            .set_password("alice", password::hash("battery staple").unwrap())
            .unwrap();
        assert_eq!(
            refresh(&accounts, &issued.refresh_token).await.unwrap_err(),
            AccountError::InvalidRefreshToken
        );
        login(&accounts, "alice", "battery staple").await.unwrap();
    }

    #[tokio::test]
    async fn logins_survive_a_restart() {
        let dir = temp_dir("service-restart");
        let issued = login(&with_alice(&dir), "alice", "correct horse").await.unwrap();
        let restarted = Arc::new(Accounts::from_config(&config(&dir)).unwrap());
        refresh(&restarted, &issued.refresh_token).await.unwrap();
    }

    #[tokio::test]
    async fn logins_wait_for_a_hashing_slot_but_not_for_ever() {
        let dir = temp_dir("service-busy");
        let mut accounts = Accounts::from_config(&config(&dir)).unwrap();
        accounts.hashing_wait = Duration::from_millis(50);
        let accounts = Arc::new(accounts);
        let held: Vec<HashingSlot> =
            futures_util::future::try_join_all((0..HASHING_SLOTS).map(|_| accounts.hashing_slot()))
                .await
                .unwrap();
        let err = accounts.hashing_slot().await.unwrap_err();
        assert_eq!(err, AccountError::Busy);
        assert_eq!(err.code(), ErrorCode::ServerFull);
        assert!(!err.is_auth_failure());
        drop(held);
        accounts.hashing_slot().await.expect("a slot is free again");
    }

    #[tokio::test]
    async fn a_server_that_verifies_with_a_public_key_cannot_issue_tokens() {
        let dir = temp_dir("service-public-key");
        let config = Config {
            jwt_public_key: Some(dir.join("public.pem")),
            jwt_algorithm: Some(crate::config::JwtAlgorithm::Es256),
            ..config(&dir)
        };
        let accounts = Arc::new(Accounts::from_config(&config).unwrap());
        let err = login(&accounts, "alice", "x").await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::AccountsDisabled);
        assert!(err.to_string().contains("jwt_secret"), "{err}");
        assert!(!err.is_auth_failure());
    }
}
