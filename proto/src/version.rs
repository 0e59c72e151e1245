//! Protocol versions and how a client and the server agree on one.
//!
//! The client's `hello` carries the newest version it speaks. The server answers
//! with the version both will use (the smaller of the two) in `welcome`, or with
//! `unsupported_version` when the client's version is older than the oldest the
//! server still speaks.

/// The newest protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The oldest protocol version this crate still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The version to use with a peer that speaks up to `offered`, or `None` when
/// the peer is too old.
pub fn negotiate(offered: u16) -> Option<u16> {
    (offered >= MIN_PROTOCOL_VERSION).then(|| offered.min(PROTOCOL_VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_client_is_answered_with_our_version() {
        assert_eq!(negotiate(PROTOCOL_VERSION + 5), Some(PROTOCOL_VERSION));
    }

    #[test]
    fn a_client_older_than_the_minimum_is_refused() {
        assert_eq!(negotiate(MIN_PROTOCOL_VERSION - 1), None);
    }
}
