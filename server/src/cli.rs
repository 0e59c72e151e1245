//! The command line: `server` (run), `server token` (mint a development
//! token), `server users ...` (manage accounts, see [`users`]), `server config`
//! (print the effective configuration).

mod users;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, Settings};
use crate::session::auth::{TokenClaims, hs256_secret, mint_hs256, now_secs};

/// WebRTC signaling server: WebTransport (HTTP/3) first, secure WebSocket fallback.
///
/// Every option below can also be set in a TOML file (--config) under the same
/// name with underscores, or in the environment variable shown. Precedence:
/// flag, then environment, then file, then the default.
#[derive(Parser, Debug)]
#[command(name = "server", version)]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "SIGNAL_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server (what `server` alone does).
    Serve,
    /// Mint a token signed with the configured HS256 secret (or the development
    /// secret), to try the server without other tooling.
    Token {
        /// The user id (`sub` claim).
        #[arg(long, default_value = "dev-user")]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
        /// Restrict the token to this room (repeatable; a trailing * matches a prefix).
        #[arg(long = "room")]
        rooms: Vec<String>,
        /// Give the token this role (repeatable; `admin` opens /admin).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Manage the accounts that may log in at /auth/login (the users_file).
    Users {
        #[command(subcommand)]
        command: users::UsersCommand,
    },
    /// Print the effective configuration as TOML (secrets redacted).
    Config,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.settings) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(config),
        Command::Token {
            sub,
            ttl_secs,
            rooms,
            roles,
        } => token(&config, sub, ttl_secs, rooms, roles),
        Command::Users { command } => users::run(&config, command),
        Command::Config => print_config(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    crate::telemetry::init(config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(crate::app::run(config))
}

fn token(config: &Config, sub: String, ttl_secs: u64, rooms: Vec<String>, roles: Vec<String>) -> anyhow::Result<()> {
    if config.jwt_public_key.is_some() {
        anyhow::bail!("the server verifies tokens with a public key; mint them with the matching private key instead");
    }
    let secret = hs256_secret(config)?;
    let now = now_secs();
    let claims = TokenClaims {
        sub,
        exp: now + ttl_secs,
        nbf: None,
        iat: Some(now),
        iss: config.jwt_issuer.clone(),
        aud: config.jwt_audience.clone(),
        rooms: (!rooms.is_empty()).then_some(rooms),
        roles,
    };
    println!("{}", mint_hs256(&secret, &claims));
    Ok(())
}

fn print_config(config: &Config) -> anyhow::Result<()> {
    print!("{}", toml::to_string(&redacted(config))?);
    Ok(())
}

/// The configuration with every secret replaced by `<redacted>`.
fn redacted(config: &Config) -> Config {
    let mut shown = config.clone();
    let hidden = || crate::config::Secret("<redacted>".into());
    // The Redis URL may carry a password.
    for secret in [&mut shown.jwt_secret, &mut shown.redis, &mut shown.turn_secret] {
        if secret.is_some() {
            *secret = Some(hidden());
        }
    }
    for server in &mut shown.ice_servers.0 {
        if server.credential.is_some() {
            server.credential = Some(hidden().0);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_printed_configuration_shows_no_secret() {
        let config = crate::config::tests::with_every_secret();
        let printed = toml::to_string(&super::redacted(&config)).unwrap();
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("turn:t.example"), "{printed}");
    }
}
