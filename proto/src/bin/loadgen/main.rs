//! A load generator for the signaling server, built on `proto::client` only.
//!
//! It opens many sessions (WebTransport, WSS or both), groups them in rooms,
//! has every pair of a room exchange an offer, an answer and candidates the way
//! browsers do, then keeps each session sending `custom` signals at a steady
//! rate, and reports connect times, relay latencies, throughput, errors by code
//! and the server's memory. `run.rs` opens the sessions and rooms, `traffic.rs` is one
//! session's traffic pattern, `link.rs` what it goes through (our server, or
//! the PeerJS server through `peerjs.rs`, for a side-by-side), `report.rs` prints.

mod link;
mod peerjs;
mod report;
mod run;
mod traffic;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use proto::Encoding;

/// Load generator for the signaling server.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// The server's WebTransport URL.
    #[arg(long, default_value = "https://127.0.0.1:4433/")]
    pub url_webtransport: String,
    /// The server's WSS URL.
    #[arg(long, default_value = "wss://127.0.0.1:8443/ws")]
    pub url_wss: String,
    /// The PeerJS server's WebSocket URL (`--transport peerjs`), without its query.
    #[arg(long, default_value = "wss://127.0.0.1:9000/peerjs")]
    pub url_peerjs: String,
    /// Which transport the sessions use (`mix` alternates, so rooms hold both;
    /// `peerjs` runs the same scenario against the PeerJS server instead).
    #[arg(long, value_enum, default_value_t = TransportArg::Webtransport)]
    pub transport: TransportArg,
    /// SHA-256 of the server's certificate, in hex, as the server prints it on
    /// start and serves at `/cert-hashes` (repeatable).
    #[arg(long = "cert-hash", required = true, value_parser = parse_hash)]
    pub cert_hashes: Vec<[u8; 32]>,
    /// The server's HS256 JWT secret: each session gets a token for `load-<n>`.
    /// (Required except with `--transport peerjs`.)
    #[arg(long, env = "SIGNAL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// How many sessions to open.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Sessions opened per second.
    #[arg(long, default_value_t = 100.0)]
    pub connect_rate: f64,
    /// Sessions per room.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(2..))]
    pub room_size: u32,
    /// Seconds of steady traffic after the last session was due to connect.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds after the last session was due to connect before latencies are
    /// recorded: messages sent earlier (during the connects and the opening
    /// exchanges) are counted and checked, not measured. 0: everything is measured.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// `custom` signals per second each session sends in the steady phase.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Size of each `custom` signal's payload, in bytes.
    #[arg(long, default_value_t = 256)]
    pub message_bytes: usize,
    #[arg(long, value_enum, default_value_t = EncodingArg::Bincode)]
    pub encoding: EncodingArg,
    /// Source addresses to spread the sockets over, round robin: one address,
    /// a range (`127.0.0.1-127.0.0.200`) or a comma-separated list.
    #[arg(long, value_parser = parse_ips)]
    pub source_ips: Option<IpList>,
    /// WebTransport sessions share this many client endpoints (UDP sockets),
    /// round robin, each bound to the next source address; 0: a socket per session.
    #[arg(long, default_value_t = 0)]
    pub wt_endpoints: usize,
    /// The server's process id: its resident memory is sampled every second.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds each connect (handshake, hello, welcome) may take.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportArg {
    Webtransport,
    Wss,
    Mix,
    Peerjs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingArg {
    Json,
    Bincode,
}

impl From<EncodingArg> for Encoding {
    fn from(e: EncodingArg) -> Self {
        match e {
            EncodingArg::Json => Encoding::Json,
            EncodingArg::Bincode => Encoding::Bincode,
        }
    }
}

/// Source addresses, a newtype so that clap takes the whole list as one value.
#[derive(Clone, Debug)]
pub struct IpList(pub Vec<IpAddr>);

fn parse_hash(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return Err("a certificate hash is 64 hex digits".into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

fn parse_ips(s: &str) -> Result<IpList, String> {
    let mut ips = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                let from: Ipv4Addr = from.trim().parse().map_err(|e| format!("{from}: {e}"))?;
                let to: Ipv4Addr = to.trim().parse().map_err(|e| format!("{to}: {e}"))?;
                let (from, to) = (u32::from(from), u32::from(to));
                if to < from || to - from > 65_535 {
                    return Err(format!("bad address range {part}"));
                }
                ips.extend((from..=to).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))));
            }
            None => ips.push(part.parse().map_err(|e| format!("{part}: {e}"))?),
        }
    }
    if ips.is_empty() {
        return Err("no source address".into());
    }
    Ok(IpList(ips))
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.sessions == 0 || args.connect_rate <= 0.0 || args.rate <= 0.0 {
        eprintln!("loadgen: --sessions, --connect-rate and --rate must be positive");
        return std::process::ExitCode::from(2);
    }
    if args.jwt_secret.is_none() && args.transport != TransportArg::Peerjs {
        eprintln!("loadgen: --jwt-secret (or SIGNAL_JWT_SECRET) is required");
        return std::process::ExitCode::from(2);
    }
    let outcome = match run::run(&args).await {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let report = report::Report::new(&args, &outcome);
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    std::process::ExitCode::SUCCESS
}
