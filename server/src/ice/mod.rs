//! The ICE servers every session is handed: STUN servers, TURN servers with
//! credentials minted for the session ([`credential`]), and entries configured
//! with a static username and credential, passed through as they are.
//!
//! The TURN secret is read once at start (from the configuration, the
//! environment or a file); it is never logged and never sent to a client.

pub mod credential;

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use proto::IceServer;

use crate::config::{Config, Secret};

/// The configured ICE servers, ready to hand out.
#[derive(Clone, Debug, Default)]
pub struct Ice {
    /// Entries sent as they are: STUN servers and static TURN entries.
    fixed: Vec<IceServer>,
    /// TURN servers sharing a secret, with the credentials' lifetime.
    turn: Option<Turn>,
}

#[derive(Clone, Debug)]
struct Turn {
    urls: Vec<String>,
    secret: Secret,
    ttl_secs: u64,
}

/// A session's ICE servers and when their TURN credentials expire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IceGrant {
    pub servers: Vec<IceServer>,
    /// Unix seconds; `None` when no credential in `servers` expires.
    pub expires_at: Option<u64>,
}

impl Ice {
    /// Reads the ICE options (and the TURN secret's file) of a validated configuration.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let mut fixed = Vec::new();
        if !config.stun_urls.0.is_empty() {
            fixed.push(IceServer {
                urls: config.stun_urls.0.clone(),
                username: None,
                credential: None,
            });
        }
        fixed.extend(config.ice_servers.0.iter().cloned());
        let secret = match (&config.turn_secret, &config.turn_secret_file) {
            (Some(secret), _) => Some(secret.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading turn_secret_file {}", path.display()))?;
                let secret = text.lines().next().unwrap_or("").trim().to_owned();
                anyhow::ensure!(!secret.is_empty(), "turn_secret_file {} is empty", path.display());
                Some(Secret(secret))
            }
            (None, None) => None,
        };
        let turn = secret.filter(|_| !config.turn_urls.0.is_empty()).map(|secret| Turn {
            urls: config.turn_urls.0.clone(),
            secret,
            ttl_secs: config.turn_credential_ttl_secs,
        });
        Ok(Self { fixed, turn })
    }

    /// Whether any ICE server is configured.
    pub fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.turn.is_none()
    }

    /// The ICE servers for `user`, TURN credentials minted now.
    pub fn grant(&self, user: &str) -> IceGrant {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.grant_at(user, now)
    }

    fn grant_at(&self, user: &str, now: u64) -> IceGrant {
        let mut servers = self.fixed.clone();
        let expires_at = self.turn.as_ref().map(|turn| {
            let expires_at = now.saturating_add(turn.ttl_secs);
            let credential = credential::mint(turn.secret.0.as_bytes(), user, expires_at);
            servers.push(IceServer {
                urls: turn.urls.clone(),
                username: Some(credential.username),
                credential: Some(credential.password),
            });
            expires_at
        });
        IceGrant { servers, expires_at }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            stun_urls: "stun:stun.example.com:3478".parse().unwrap(),
            turn_urls: "turn:turn.example.com:3478, turns:turn.example.com:5349?transport=tcp"
                .parse()
                .unwrap(),
            turn_secret: Some(Secret("north-rtc-secret".into())),
            turn_credential_ttl_secs: 600,
            ice_servers: r#"[{"urls":["turn:static.example.com"],"username":"u","credential":"p"}]"#
                .parse()
                .unwrap(),
            ..Config::default()
        }
    }

    #[test]
    fn a_grant_lists_stun_static_and_minted_turn_servers() {
        let ice = Ice::from_config(&config()).unwrap();
        let grant = ice.grant_at("alice", 1_699_999_400);
        assert_eq!(grant.expires_at, Some(1_700_000_000));
        let urls: Vec<_> = grant.servers.iter().map(|s| s.urls[0].as_str()).collect();
        assert_eq!(
            urls,
            [
                "stun:stun.example.com:3478",
                "turn:static.example.com",
                "turn:turn.example.com:3478"
            ]
        );
        assert_eq!(grant.servers[0].username, None);
        assert_eq!(grant.servers[1].credential.as_deref(), Some("p"));
        let minted = &grant.servers[2];
        assert_eq!(minted.urls.len(), 2);
        assert_eq!(minted.username.as_deref(), Some("1700000000:alice"));
        assert_eq!(minted.credential.as_deref(), Some("iWHWXwwkSjAqCuLp2YdtI1L99i4="));
    }

    #[test]
    fn without_a_secret_nothing_expires() {
        let ice = Ice::from_config(&Config {
            stun_urls: "stun:stun.example.com".parse().unwrap(),
            ..Config::default()
        })
        .unwrap();
        let grant = ice.grant("bob");
        assert_eq!(grant.expires_at, None);
        assert_eq!(grant.servers.len(), 1);
        assert!(Ice::from_config(&Config::default()).unwrap().is_empty());
    }

    #[test]
    fn the_secret_can_come_from_a_file() {
        let path = std::env::temp_dir().join(format!("turn-secret-{}", std::process::id()));
        std::fs::write(&path, "north-rtc-secret\n").unwrap();
        let ice = Ice::from_config(&Config {
            turn_secret: None,
            turn_secret_file: Some(path.clone()),
            ..config()
        })
        .unwrap();
        let grant = ice.grant_at("alice", 1_699_999_400);
        assert_eq!(
            grant.servers[2].credential.as_deref(),
            Some("iWHWXwwkSjAqCuLp2YdtI1L99i4=")
        );
        std::fs::write(&path, "\n").unwrap();
        let empty = Ice::from_config(&Config {
            turn_secret: None,
            turn_secret_file: Some(path.clone()),
            ..config()
        });
        assert!(empty.is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn the_secret_is_not_in_debug_output() {
        let ice = Ice::from_config(&config()).unwrap();
        assert!(!format!("{ice:?}").contains("north-rtc-secret"));
    }
}
