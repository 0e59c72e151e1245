//! The server's configuration: one typed struct, loaded once.
//!
//! Values come from, in increasing precedence: the embedded defaults, a TOML
//! file (`--config`), environment variables (`SIGNAL_*`) and command-line flags.
//! Every option is declared once, in the table below, which generates the typed
//! [`Config`] and the flags of [`Settings`] so the two can never drift apart.

use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A secret string: shown as `<redacted>` in `Debug` output so it never reaches a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// The JWT algorithms the server verifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum JwtAlgorithm {
    #[serde(rename = "HS256")]
    #[value(name = "HS256")]
    Hs256,
    #[serde(rename = "RS256")]
    #[value(name = "RS256")]
    Rs256,
    #[serde(rename = "ES256")]
    #[value(name = "ES256")]
    Es256,
    #[serde(rename = "EdDSA")]
    #[value(name = "EdDSA")]
    EdDsa,
}

/// A list of strings (origins, URLs): written comma-separated in flags and the
/// environment, as a list in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct List(pub Vec<String>);

impl std::str::FromStr for List {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(List(
            s.split(',')
                .map(str::trim)
                .filter(|o| !o.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

/// ICE servers handed to clients as they are (TURN servers with a static
/// username and password, STUN servers): a JSON list of `RTCIceServer` objects
/// in flags and the environment, a list of tables in the file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IceServerList(pub Vec<proto::IceServer>);

impl std::str::FromStr for IceServerList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_str(s).map(IceServerList).map_err(|e| {
            format!(r#"expected a JSON list like [{{"urls":["turn:turn.example.com:3478"],"username":"u","credential":"p"}}]: {e}"#)
        })
    }
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

macro_rules! options {
    (
        required { $( $(#[doc = $doc:literal])* $field:ident : $ty:ty = $default:expr, $env:literal; )* }
        optional { $( $(#[doc = $odoc:literal])* $ofield:ident : $oty:ty, $oenv:literal; )* }
    ) => {
        /// The whole configuration, with every default filled in.
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
            $( $(#[doc = $odoc])* pub $ofield: Option<$oty>, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $field: $default, )* $( $ofield: None, )* }
            }
        }

        /// The options as flags and environment variables; unset ones fall back
        /// to the file, then to the defaults.
        #[derive(Clone, Debug, Default, Serialize, clap::Args)]
        pub struct Settings {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env, global = true)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
            $(
                $(#[doc = $odoc])*
                #[arg(long, env = $oenv, global = true)]
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $ofield: Option<$oty>,
            )*
        }
    };
}

options! {
    required {
        /// Address both listeners bind to ("::" is dual-stack IPv6 and IPv4).
        bind: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED), "SIGNAL_BIND";
        /// UDP port of the WebTransport (HTTP/3) listener; 0 picks a free one.
        webtransport_port: u16 = 4433, "SIGNAL_WEBTRANSPORT_PORT";
        /// TCP port of the HTTPS listener (API, WSS at /ws, demo page); 0 picks a free one.
        https_port: u16 = 8443, "SIGNAL_HTTPS_PORT";
        /// Bind both ports with SO_REUSEPORT, so that several server processes on one machine
        /// share them (the kernel spreads connections over them); run them in cluster mode.
        reuse_port: bool = false, "SIGNAL_REUSE_PORT";
        /// Where development certificates (and the development JWT secret) are kept.
        cert_dir: PathBuf = PathBuf::from("certs"), "SIGNAL_CERT_DIR";
        /// Clock skew tolerated on exp and nbf, in seconds.
        jwt_leeway_secs: u64 = 30, "SIGNAL_JWT_LEEWAY_SECS";
        /// A connection must finish its TLS / QUIC handshake and its HTTP request
        /// (the WebSocket upgrade or WebTransport CONNECT) within this many milliseconds.
        handshake_timeout_ms: u64 = 10_000, "SIGNAL_HANDSHAKE_TIMEOUT_MS";
        /// A session must say hello (with a token) within this many milliseconds.
        auth_timeout_ms: u64 = 10_000, "SIGNAL_AUTH_TIMEOUT_MS";
        /// A session that sends nothing for this many milliseconds is closed.
        idle_timeout_ms: u64 = 60_000, "SIGNAL_IDLE_TIMEOUT_MS";
        /// Largest message a client may send, in bytes.
        max_frame_bytes: u32 = 65_536, "SIGNAL_MAX_FRAME_BYTES";
        /// Sustained messages per second per session.
        messages_per_sec: u32 = 50, "SIGNAL_MESSAGES_PER_SEC";
        /// Messages a session may send at once (the bucket's size; it refills at messages_per_sec).
        message_burst: u32 = 200, "SIGNAL_MESSAGE_BURST";
        /// Sustained bytes per second per session.
        bytes_per_sec: u32 = 262_144, "SIGNAL_BYTES_PER_SEC";
        /// Bytes a session may send at once (the bucket's size; at least max_frame_bytes).
        byte_burst: u32 = 1_048_576, "SIGNAL_BYTE_BURST";
        /// Concurrent sessions the whole server holds (admitted connections).
        max_connections: u32 = 100_000, "SIGNAL_MAX_CONNECTIONS";
        /// Concurrent sessions per client IP (IPv6: per /64).
        max_connections_per_ip: u32 = 64, "SIGNAL_MAX_CONNECTIONS_PER_IP";
        /// New connections per second per client IP, sustained.
        connections_per_ip_per_sec: u32 = 10, "SIGNAL_CONNECTIONS_PER_IP_PER_SEC";
        /// New connections per client IP in a burst.
        connection_burst_per_ip: u32 = 40, "SIGNAL_CONNECTION_BURST_PER_IP";
        /// Members a room may hold.
        max_room_members: u32 = 64, "SIGNAL_MAX_ROOM_MEMBERS";
        /// Rooms one session may be in at once.
        max_rooms_per_session: u32 = 16, "SIGNAL_MAX_ROOMS_PER_SESSION";
        /// Messages that may wait for a slow reader, per channel (per session on WSS), before it is cut off.
        outbound_queue_messages: u32 = 256, "SIGNAL_OUTBOUND_QUEUE_MESSAGES";
        /// Bytes that may wait for a slow reader, per session, before it is cut off.
        outbound_queue_bytes: u32 = 1_048_576, "SIGNAL_OUTBOUND_QUEUE_BYTES";
        /// On shutdown, how long sessions get to close before the server exits (ms).
        shutdown_grace_ms: u64 = 5_000, "SIGNAL_SHUTDOWN_GRACE_MS";
        /// Log format on stderr (text or json); the level comes from RUST_LOG.
        log_format: LogFormat = LogFormat::Text, "SIGNAL_LOG_FORMAT";
        /// Origins (scheme://host[:port]) whose pages may connect and call the API,
        /// comma-separated; `*` allows any. Clients that send no Origin (native
        /// ones) and https pages on the server's own host (any port) are always allowed.
        allowed_origins: List = List::default(), "SIGNAL_ALLOWED_ORIGINS";
        /// Failed authentications (bad tokens, failed logins) from one IP within
        /// auth_failure_window_secs that get it blocked.
        auth_failures_before_block: u32 = 5, "SIGNAL_AUTH_FAILURES_BEFORE_BLOCK";
        /// The window in which failed authentications are counted, in seconds.
        auth_failure_window_secs: u64 = 300, "SIGNAL_AUTH_FAILURE_WINDOW_SECS";
        /// How long a blocked IP stays blocked, in seconds.
        block_secs: u64 = 300, "SIGNAL_BLOCK_SECS";
        /// Violation points (see SECURITY.md) at which a session is closed with
        /// policy_violation; points drain at one per second.
        abuse_score_limit: u32 = 100, "SIGNAL_ABUSE_SCORE_LIMIT";
        /// Sessions closed for policy_violation from one IP within
        /// auth_failure_window_secs that get it blocked.
        abuse_closes_before_block: u32 = 3, "SIGNAL_ABUSE_CLOSES_BEFORE_BLOCK";
        /// Whether the whole service accepts sessions and API calls (false: 503 service_disabled).
        service_enabled: bool = true, "SIGNAL_SERVICE_ENABLED";
        /// Whether the WebTransport transport accepts sessions.
        webtransport_enabled: bool = true, "SIGNAL_WEBTRANSPORT_ENABLED";
        /// Whether the WSS transport accepts sessions.
        websocket_enabled: bool = true, "SIGNAL_WEBSOCKET_ENABLED";
        /// Development mode: hello without a token opens an anonymous session and
        /// any origin is allowed. Never on the open internet.
        dev_mode: bool = false, "SIGNAL_DEV_MODE";
        /// A session is sent token_expiring this many seconds before its token expires.
        token_refresh_notice_secs: u64 = 60, "SIGNAL_TOKEN_REFRESH_NOTICE_SECS";
        /// The account service's user file (argon2id hashes), managed with `server users`.
        users_file: PathBuf = PathBuf::from("data/users.json"), "SIGNAL_USERS_FILE";
        /// Lifetime of the access tokens /auth/login and /auth/refresh issue, in seconds.
        access_token_ttl_secs: u64 = 900, "SIGNAL_ACCESS_TOKEN_TTL_SECS";
        /// Lifetime of a refresh token (and of its family), in seconds.
        refresh_token_ttl_secs: u64 = 2_592_000, "SIGNAL_REFRESH_TOKEN_TTL_SECS";
        /// Cluster mode: how often a node renews its room memberships in Redis (ms).
        /// A membership lapses after twice this; a dead node's peers leave their
        /// rooms for everyone within four times this.
        cluster_refresh_ms: u64 = 5_000, "SIGNAL_CLUSTER_REFRESH_MS";
        /// How long a session whose connection was lost is held for a resume, in
        /// seconds (its peers see no change meanwhile); 0 turns resume off.
        resume_grace_secs: u64 = 30, "SIGNAL_RESUME_GRACE_SECS";
        /// Bytes of room events a session keeps for a resume (not yet acknowledged,
        /// or sent while its connection was lost); a held session over this ends.
        resume_buffer_bytes: u32 = 262_144, "SIGNAL_RESUME_BUFFER_BYTES";
        /// STUN servers (stun: or stuns: URLs, comma-separated) every session is told to use.
        stun_urls: List = List::default(), "SIGNAL_STUN_URLS";
        /// TURN servers (turn: or turns: URLs, with ?transport=tcp variants) that
        /// share turn_secret: every session gets credentials minted for it by the
        /// TURN REST API scheme (coturn's use-auth-secret / static-auth-secret).
        turn_urls: List = List::default(), "SIGNAL_TURN_URLS";
        /// How long minted TURN credentials are valid, in seconds.
        turn_credential_ttl_secs: u64 = 86_400, "SIGNAL_TURN_CREDENTIAL_TTL_SECS";
        /// ICE servers passed to clients as they are, e.g. a TURN server with a
        /// static username and credential: a JSON list of RTCIceServer objects
        /// (a list of tables in the file).
        ice_servers: IceServerList = IceServerList::default(), "SIGNAL_ICE_SERVERS";
    }
    optional {
        /// PEM certificate chain for both listeners (with tls_key); self-signed when unset.
        tls_cert: PathBuf, "SIGNAL_TLS_CERT";
        /// PEM private key matching tls_cert.
        tls_key: PathBuf, "SIGNAL_TLS_KEY";
        /// HS256 shared secret for JWTs.
        jwt_secret: Secret, "SIGNAL_JWT_SECRET";
        /// File holding the HS256 shared secret.
        jwt_secret_file: PathBuf, "SIGNAL_JWT_SECRET_FILE";
        /// PEM public key for RS256, ES256 or EdDSA tokens (with jwt_algorithm).
        jwt_public_key: PathBuf, "SIGNAL_JWT_PUBLIC_KEY";
        /// Algorithm of jwt_public_key: RS256, ES256 or EdDSA.
        jwt_algorithm: JwtAlgorithm, "SIGNAL_JWT_ALGORITHM";
        /// Required `iss` claim.
        jwt_issuer: String, "SIGNAL_JWT_ISSUER";
        /// Required `aud` claim.
        jwt_audience: String, "SIGNAL_JWT_AUDIENCE";
        /// Redis URL (redis://[user:password@]host:port[/db]) that turns cluster mode on.
        redis: Secret, "SIGNAL_REDIS";
        /// The secret shared with the TURN servers of turn_urls (coturn's static-auth-secret).
        turn_secret: Secret, "SIGNAL_TURN_SECRET";
        /// File holding turn_secret (its first line).
        turn_secret_file: PathBuf, "SIGNAL_TURN_SECRET_FILE";
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid configuration: {0}")]
    Merge(toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Loads the configuration: `file` (if any) under `settings` (flags and environment).
    pub fn load(file: Option<&Path>, settings: &Settings) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                toml::from_str::<toml::Table>(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?
            }
            None => toml::Table::new(),
        };
        let overrides = toml::Table::try_from(settings).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        table.extend(overrides);
        let config: Config = table.try_into().map_err(ConfigError::Merge)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |msg: &str| Err(ConfigError::Invalid(msg.to_owned()));
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return fail("tls_cert and tls_key go together");
        }
        let secrets = [
            self.jwt_secret.is_some(),
            self.jwt_secret_file.is_some(),
            self.jwt_public_key.is_some(),
        ];
        if secrets.iter().filter(|s| **s).count() > 1 {
            return fail("set only one of jwt_secret, jwt_secret_file and jwt_public_key");
        }
        match (self.jwt_public_key.is_some(), self.jwt_algorithm) {
            (true, None | Some(JwtAlgorithm::Hs256)) => {
                return fail("jwt_public_key needs jwt_algorithm RS256, ES256 or EdDSA");
            }
            (false, Some(alg)) if alg != JwtAlgorithm::Hs256 => {
                return fail("jwt_algorithm RS256, ES256 and EdDSA need jwt_public_key");
            }
            _ => {}
        }
        if self.max_frame_bytes == 0 || self.max_frame_bytes as usize > proto::codec::HARD_MAX_FRAME {
            return fail("max_frame_bytes must be between 1 and 1048576");
        }
        if self.byte_burst < self.max_frame_bytes {
            return fail("byte_burst must be at least max_frame_bytes, or the largest frame could never be sent");
        }
        let positive = [
            ("messages_per_sec", self.messages_per_sec),
            ("message_burst", self.message_burst),
            ("bytes_per_sec", self.bytes_per_sec),
            ("max_connections", self.max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("connections_per_ip_per_sec", self.connections_per_ip_per_sec),
            ("connection_burst_per_ip", self.connection_burst_per_ip),
            ("max_room_members", self.max_room_members),
            ("max_rooms_per_session", self.max_rooms_per_session),
            ("outbound_queue_messages", self.outbound_queue_messages),
            ("outbound_queue_bytes", self.outbound_queue_bytes),
            ("resume_buffer_bytes", self.resume_buffer_bytes),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
        }
        const DAY_MS: u64 = 24 * 3600 * 1000;
        let timeouts = [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("auth_timeout_ms", self.auth_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("shutdown_grace_ms", self.shutdown_grace_ms.max(1)),
            ("cluster_refresh_ms", self.cluster_refresh_ms),
        ];
        if let Some((name, _)) = timeouts.iter().find(|(_, ms)| *ms == 0 || *ms > DAY_MS) {
            return Err(ConfigError::Invalid(format!(
                "{name} must be between 1 and {DAY_MS} (a day)"
            )));
        }
        if self.jwt_leeway_secs > 3600 {
            return fail("jwt_leeway_secs must be at most 3600");
        }
        if self.resume_grace_secs > 3600 {
            return fail("resume_grace_secs must be at most 3600 (0 turns resume off)");
        }
        self.validate_ice()?;
        if let Some(bad) = self.allowed_origins.0.iter().find(|o| *o != "*" && !valid_origin(o)) {
            return Err(ConfigError::Invalid(format!(
                "allowed_origins: {bad:?} is not an origin like https://app.example.com or *"
            )));
        }
        let at_least_one = [
            ("auth_failures_before_block", self.auth_failures_before_block as u64),
            ("auth_failure_window_secs", self.auth_failure_window_secs),
            ("block_secs", self.block_secs),
            ("abuse_score_limit", self.abuse_score_limit as u64),
            ("abuse_closes_before_block", self.abuse_closes_before_block as u64),
            ("access_token_ttl_secs", self.access_token_ttl_secs),
            ("refresh_token_ttl_secs", self.refresh_token_ttl_secs),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::Invalid(format!("{name} must be at least 1")));
        }
        Ok(())
    }

    /// The ICE server options: well-formed URLs of the right scheme, a TURN
    /// secret exactly when there are TURN URLs to mint credentials for, and
    /// credentials on every static TURN entry (browsers refuse one without).
    fn validate_ice(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        let schemes_ok = |url: &str, schemes: &[&str]| {
            url.split_once(':').is_some_and(|(scheme, rest)| {
                schemes.contains(&scheme) && !rest.is_empty() && !rest.contains(char::is_whitespace)
            })
        };
        if let Some(bad) = self.stun_urls.0.iter().find(|u| !schemes_ok(u, &["stun", "stuns"])) {
            return invalid(format!(
                "stun_urls: {bad:?} is not a stun: or stuns: URL like stun:stun.example.com:3478"
            ));
        }
        if let Some(bad) = self.turn_urls.0.iter().find(|u| !schemes_ok(u, &["turn", "turns"])) {
            return invalid(format!(
                "turn_urls: {bad:?} is not a turn: or turns: URL like turn:turn.example.com:3478?transport=udp"
            ));
        }
        let secret = self.turn_secret.is_some() || self.turn_secret_file.is_some();
        if self.turn_secret.is_some() && self.turn_secret_file.is_some() {
            return invalid("set only one of turn_secret and turn_secret_file".into());
        }
        if !self.turn_urls.0.is_empty() && !secret {
            return invalid("turn_urls need turn_secret or turn_secret_file to mint credentials with".into());
        }
        if self.turn_urls.0.is_empty() && secret {
            return invalid("turn_secret is set but turn_urls is empty".into());
        }
        if !(60..=7 * 24 * 3600).contains(&self.turn_credential_ttl_secs) {
            return invalid("turn_credential_ttl_secs must be between 60 and 604800 (a week)".into());
        }
        for server in &self.ice_servers.0 {
            if server.urls.is_empty() {
                return invalid("ice_servers: every entry needs at least one URL in urls".into());
            }
            if let Some(bad) = server
                .urls
                .iter()
                .find(|u| !schemes_ok(u, &["stun", "stuns", "turn", "turns"]))
            {
                return invalid(format!(
                    "ice_servers: {bad:?} is not a stun:, stuns:, turn: or turns: URL"
                ));
            }
            let turn = server.urls.iter().any(|u| u.starts_with("turn"));
            if turn && (server.username.is_none() || server.credential.is_none()) {
                return invalid(format!(
                    "ice_servers: {:?} is a TURN server and needs a username and a credential",
                    server.urls[0]
                ));
            }
        }
        Ok(())
    }

    /// Whether a browser page of `origin` may connect. `authority` is where the
    /// request was sent (`Host` / `:authority`): an `https` page on that same
    /// host, on any port, is one of the server's own (its demo page on the HTTPS
    /// port opens WebTransport on the UDP port).
    pub fn origin_allowed(&self, origin: &str, authority: Option<&str>) -> bool {
        let origin = origin.trim_end_matches('/');
        self.dev_mode
            || self.allowed_origins.0.iter().any(|o| o == "*")
            || self
                .allowed_origins
                .0
                .iter()
                .any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
            || authority.is_some_and(|authority| {
                let page = url::Url::parse(origin).ok();
                let server = url::Url::parse(&format!("https://{authority}")).ok();
                match (page, server) {
                    (Some(page), Some(server)) => {
                        page.scheme() == "https" && page.host().is_some() && page.host() == server.host()
                    }
                    _ => false,
                }
            })
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `scheme://host[:port]` with nothing after it.
fn valid_origin(origin: &str) -> bool {
    url::Url::parse(origin).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host().is_some()
            && u.path() == "/"
            && u.query().is_none()
            && !origin.trim_end_matches('/').ends_with(':')
            && origin.trim_end_matches('/').matches('/').count() == 2
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_against_the_list_and_the_servers_own() {
        let config = Config {
            allowed_origins: "https://app.example.com, http://localhost:3000".parse().unwrap(),
            ..Config::default()
        };
        config.validate().unwrap();
        assert!(config.origin_allowed("https://app.example.com", None));
        assert!(config.origin_allowed("HTTPS://APP.example.com", None));
        assert!(config.origin_allowed("http://localhost:3000", None));
        assert!(!config.origin_allowed("http://localhost:3001", None));
        assert!(!config.origin_allowed("https://evil.example", Some("signal.example:8443")));
        assert!(config.origin_allowed("https://signal.example:8443", Some("signal.example:8443")));
        // The demo page on the HTTPS port opening WebTransport on the UDP port.
        assert!(config.origin_allowed("https://signal.example:8443", Some("signal.example:4433")));
        assert!(!config.origin_allowed("http://signal.example:8443", Some("signal.example:4433")));
        assert!(!config.origin_allowed("https://signal.example.evil:8443", Some("signal.example:4433")));
        let bad = Config {
            allowed_origins: "https://app.example.com/path".parse().unwrap(),
            ..Config::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = std::env::temp_dir().join(format!("signal-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.toml");
        std::fs::write(&file, "https_port = 9000\nmax_room_members = 8\n").unwrap();
        let settings = Settings {
            max_room_members: Some(4),
            ..Default::default()
        };
        let config = Config::load(Some(&file), &settings).unwrap();
        assert_eq!(config.https_port, 9000);
        assert_eq!(config.max_room_members, 4);
        assert_eq!(config.webtransport_port, 4433);
    }

    #[test]
    fn a_misspelt_option_in_the_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("signal-config-typo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("server.toml");
        std::fs::write(&file, "max_room_member = 8\n").unwrap();
        let err = Config::load(Some(&file), &Settings::default()).unwrap_err();
        assert!(err.to_string().contains("max_room_member"), "{err}");
    }

    #[test]
    fn a_public_key_needs_its_algorithm() {
        let config = Config {
            jwt_public_key: Some("k.pem".into()),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn the_readme_documents_every_option() {
        let readme = include_str!("../../README.md");
        let config = Config {
            tls_cert: Some("c".into()),
            tls_key: Some("k".into()),
            ..Config::default()
        };
        let table = toml::Table::try_from(&config).unwrap();
        let unset = [
            "jwt_secret",
            "jwt_secret_file",
            "jwt_public_key",
            "jwt_algorithm",
            "jwt_issuer",
            "jwt_audience",
            "redis",
            "turn_secret",
            "turn_secret_file",
        ];
        for key in table.keys().map(String::as_str).chain(unset) {
            let flag = key.replace('_', "-");
            assert!(
                readme.contains(&format!("| `{key}` | `--{flag}` |")),
                "README.md does not document {key}"
            );
        }
    }

    /// A valid configuration with a secret in every option that holds one,
    /// each containing `hunter2`.
    pub(crate) fn with_every_secret() -> Config {
        Config {
            jwt_secret: Some(Secret("jwt-hunter2".into())),
            redis: Some(Secret("redis://:redis-hunter2@127.0.0.1/".into())),
            turn_secret: Some(Secret("turn-hunter2".into())),
            turn_urls: "turn:127.0.0.1:3478".parse().unwrap(),
            ice_servers: r#"[{"urls":["turn:t.example"],"username":"u","credential":"static-hunter2"}]"#
                .parse()
                .unwrap(),
            ..Config::default()
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let config = with_every_secret();
        config.validate().unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn ice_options_are_checked() {
        let base = || Config {
            stun_urls: "stun:stun.example.com:3478".parse().unwrap(),
            turn_urls: "turn:turn.example.com:3478?transport=udp, turns:turn.example.com:5349?transport=tcp"
                .parse()
                .unwrap(),
            turn_secret: Some(Secret("s".into())),
            ..Config::default()
        };
        base().validate().unwrap();
        let refused = [
            Config {
                turn_secret: None,
                ..base()
            },
            Config {
                turn_urls: List::default(),
                ..base()
            },
            Config {
                stun_urls: "turn:stun.example.com".parse().unwrap(),
                ..base()
            },
            Config {
                turn_urls: "https://turn.example.com".parse().unwrap(),
                ..base()
            },
            Config {
                turn_credential_ttl_secs: 5,
                ..base()
            },
            Config {
                turn_secret_file: Some("secret".into()),
                ..base()
            },
            Config {
                ice_servers: r#"[{"urls":["turn:static.example.com"]}]"#.parse().unwrap(),
                ..base()
            },
            Config {
                ice_servers: r#"[{"urls":[]}]"#.parse().unwrap(),
                ..base()
            },
        ];
        for config in refused {
            assert!(config.validate().is_err(), "{config:?}");
        }
        assert!("not json".parse::<IceServerList>().is_err());
    }
}
