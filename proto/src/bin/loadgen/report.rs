//! The report: percentiles out of the histograms, as a table or one JSON object.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::Args;
use crate::run::{Outcome, Rss};

/// Percentiles of a histogram of microseconds, in milliseconds.
struct Percentiles {
    count: u64,
    /// (label, quantile, value in ms); the last is the maximum.
    values: Vec<(&'static str, f64)>,
}

impl Percentiles {
    fn of(h: &Histogram<u64>, quantiles: &[(&'static str, f64)]) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut values: Vec<_> = quantiles
            .iter()
            .map(|&(label, q)| (label, if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(q)) }))
            .collect();
        values.push(("max", ms(h.max())));
        Self { count: h.len(), values }
    }

    fn json(&self) -> Value {
        let mut obj = serde_json::Map::new();
        obj.insert("count".into(), json!(self.count));
        for (label, v) in &self.values {
            obj.insert((*label).into(), json!(round3(*v)));
        }
        Value::Object(obj)
    }

    fn row(&self) -> String {
        let mut s = String::new();
        for (label, v) in &self.values {
            let _ = write!(s, "{label} {v:.2}  ");
        }
        s.trim_end().to_owned()
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

pub struct Report {
    transport: String,
    encoding: String,
    room_size: u32,
    rate: f64,
    duration: f64,
    elapsed_secs: f64,
    requested: usize,
    connected: usize,
    connect: Percentiles,
    latency: Percentiles,
    sent: u64,
    received: u64,
    bytes_sent: u64,
    bytes_received: u64,
    steady_received: u64,
    steady_bytes: u64,
    steady_secs: f64,
    steady_sent: u64,
    steady_send_secs: f64,
    errors: BTreeMap<String, u64>,
    rss: Option<Rss>,
}

impl Report {
    pub fn new(args: &Args, o: &Outcome) -> Self {
        Report {
            transport: format!("{:?}", args.transport).to_lowercase(),
            // PeerJS speaks JSON whatever --encoding says.
            encoding: match args.transport {
                crate::TransportArg::Peerjs => "json".to_owned(),
                _ => format!("{:?}", args.encoding).to_lowercase(),
            },
            room_size: args.room_size,
            rate: args.rate,
            duration: args.duration,
            elapsed_secs: o.elapsed.as_secs_f64(),
            requested: o.requested,
            connected: o.connected,
            connect: Percentiles::of(&o.connect_us, &[("p50", 0.5), ("p90", 0.9), ("p99", 0.99)]),
            latency: Percentiles::of(
                &o.latency_us,
                &[("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99_9", 0.999)],
            ),
            sent: o.sent,
            received: o.received,
            bytes_sent: o.bytes_sent,
            bytes_received: o.bytes_received,
            steady_received: o.steady_received,
            steady_bytes: o.steady_bytes,
            steady_secs: o.steady_secs,
            steady_sent: o.steady_sent,
            steady_send_secs: o.steady_send_secs,
            errors: o.errors.clone(),
            rss: o.rss_kib,
        }
    }

    fn per_sec(&self, n: u64) -> f64 {
        if self.steady_secs > 0.0 {
            n as f64 / self.steady_secs
        } else {
            0.0
        }
    }

    fn rss_per_session_kib(&self, rss: &Rss) -> f64 {
        rss.peak.saturating_sub(rss.start) as f64 / self.connected.max(1) as f64
    }

    pub fn to_json(&self) -> Value {
        json!({
            "transport": self.transport,
            "encoding": self.encoding,
            "room_size": self.room_size,
            "rate": self.rate,
            "duration_secs": self.duration,
            "elapsed_secs": round3(self.elapsed_secs),
            "sessions": {
                "requested": self.requested,
                "connected": self.connected,
                "failed": self.requested - self.connected,
            },
            "connect_ms": self.connect.json(),
            "latency_ms": self.latency.json(),
            "steady": {
                "secs": round3(self.steady_secs),
                "messages": self.steady_received,
                "bytes": self.steady_bytes,
                "messages_per_sec": round3(self.per_sec(self.steady_received)),
                "bytes_per_sec": round3(self.per_sec(self.steady_bytes)),
                "sent": self.steady_sent,
                "sent_per_sec": round3(if self.steady_send_secs > 0.0 {
                    self.steady_sent as f64 / self.steady_send_secs
                } else {
                    0.0
                }),
            },
            "totals": {
                "sent": self.sent,
                "received": self.received,
                "lost": self.sent.saturating_sub(self.received),
                "bytes_sent": self.bytes_sent,
                "bytes_received": self.bytes_received,
            },
            "errors": self.errors,
            "errors_total": self.errors.values().sum::<u64>(),
            "server_rss_kib": self.rss.map(|r| json!({
                "start": r.start,
                "peak": r.peak,
                "end": r.end,
                "per_session": round3(self.rss_per_session_kib(&r)),
            })),
        })
    }

    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(s, "{label:<18} {value}");
        };
        line(
            "run",
            format!(
                "{} / {}, rooms of {}, {} msg/s per session, {:.0} s steady ({:.1} s in all)",
                self.transport, self.encoding, self.room_size, self.rate, self.duration, self.elapsed_secs
            ),
        );
        line(
            "sessions",
            format!("{} connected of {}", self.connected, self.requested),
        );
        line("connect ms", self.connect.row());
        line(
            "latency ms",
            format!("{}  (n={})", self.latency.row(), self.latency.count),
        );
        line(
            "steady delivered",
            format!(
                "{:.0} msg/s  {:.1} KiB/s  over {:.1} s",
                self.per_sec(self.steady_received),
                self.per_sec(self.steady_bytes) / 1024.0,
                self.steady_secs
            ),
        );
        line(
            "totals",
            format!(
                "sent {} ({:.1} KiB)  received {} ({:.1} KiB)  lost {}",
                self.sent,
                self.bytes_sent as f64 / 1024.0,
                self.received,
                self.bytes_received as f64 / 1024.0,
                self.sent.saturating_sub(self.received)
            ),
        );
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            self.errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        line("errors", errors);
        if let Some(r) = &self.rss {
            line(
                "server RSS KiB",
                format!(
                    "start {}  peak {}  end {}  ({:.1} KiB per session)",
                    r.start,
                    r.peak,
                    r.end,
                    self.rss_per_session_kib(r)
                ),
            );
        }
        s
    }
}
