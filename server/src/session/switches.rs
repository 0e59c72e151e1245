//! The operator's switches: the whole service, and each transport, on or off.
//!
//! They start from the configuration and can be flipped at run time
//! (`POST /admin/switches`). A switched-off transport refuses new sessions with
//! `service_disabled` (HTTP 503 on WSS; on WebTransport, whose CONNECT can only
//! be refused with 403/404/429, the QUIC connection is refused so clients fall
//! back to WSS at once); sessions already open are not disturbed.

use std::sync::atomic::{AtomicBool, Ordering};

use proto::ErrorCode;
use serde::{Deserialize, Serialize};

use super::admission::Refusal;
use crate::config::Config;

/// The two ways in, as the session layer counts and switches them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    WebTransport,
    WebSocket,
}

impl Transport {
    pub const ALL: [Transport; 2] = [Transport::WebTransport, Transport::WebSocket];

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::WebTransport => "webtransport",
            Transport::WebSocket => "websocket",
        }
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// The switches' state, as the admin API reads and writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchState {
    pub service: bool,
    pub webtransport: bool,
    pub websocket: bool,
}

/// A change to some of the switches.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchChange {
    pub service: Option<bool>,
    pub webtransport: Option<bool>,
    pub websocket: Option<bool>,
}

pub struct Switches {
    service: AtomicBool,
    webtransport: AtomicBool,
    websocket: AtomicBool,
}

impl Switches {
    pub fn from_config(config: &Config) -> Self {
        Self {
            service: AtomicBool::new(config.service_enabled),
            webtransport: AtomicBool::new(config.webtransport_enabled),
            websocket: AtomicBool::new(config.websocket_enabled),
        }
    }

    pub fn state(&self) -> SwitchState {
        SwitchState {
            service: self.service.load(Ordering::Relaxed),
            webtransport: self.webtransport.load(Ordering::Relaxed),
            websocket: self.websocket.load(Ordering::Relaxed),
        }
    }

    /// Applies `change`; returns the new state.
    pub fn apply(&self, change: SwitchChange) -> SwitchState {
        for (switch, value) in [
            (&self.service, change.service),
            (&self.webtransport, change.webtransport),
            (&self.websocket, change.websocket),
        ] {
            if let Some(value) = value {
                switch.store(value, Ordering::Relaxed);
            }
        }
        let state = self.state();
        tracing::warn!(
            target: "security",
            event = "switches_changed",
            service = state.service,
            webtransport = state.webtransport,
            websocket = state.websocket,
            "switches changed"
        );
        state
    }

    /// Whether the service as a whole is on (the HTTP API checks this).
    pub fn check_service(&self) -> Result<(), Refusal> {
        if self.service.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(Refusal::new(
                ErrorCode::ServiceDisabled,
                "the service is switched off by its operator",
            ))
        }
    }

    /// Whether `transport` (and the service) take new sessions.
    pub fn check(&self, transport: Transport) -> Result<(), Refusal> {
        self.check_service()?;
        let on = match transport {
            Transport::WebTransport => &self.webtransport,
            Transport::WebSocket => &self.websocket,
        };
        if on.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err(Refusal::new(
                ErrorCode::ServiceDisabled,
                format!("the {} transport is switched off by its operator", transport.as_str()),
            ))
        }
    }
}
