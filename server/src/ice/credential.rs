//! TURN REST API credentials, the scheme coturn implements as `use-auth-secret`
//! with `static-auth-secret`: the username is `expiry:user-id` (expiry in Unix
//! seconds), the password base64(HMAC-SHA1(secret, username)). The TURN server
//! recomputes the password from the username and refuses it once `expiry` is
//! past, so nothing long-lived reaches a browser.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A username and password for a TURN server sharing the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredential {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for TurnCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The credential of `user` valid until `expires_at` (Unix seconds).
pub fn mint(secret: &[u8], user: &str, expires_at: u64) -> TurnCredential {
    let username = format!("{expires_at}:{user}");
    TurnCredential {
        password: password(secret, &username),
        username,
    }
}

/// base64(HMAC-SHA1(secret, username)).
pub fn password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha1_matches_rfc_2202() {
        // RFC 2202, test case 2: HMAC-SHA1("Jefe", "what do ya want for nothing?")
        // = effcdf6ae5eb2fa2d27416d5f184df9c259a7c79, here in base64.
        assert_eq!(
            password(b"Jefe", "what do ya want for nothing?"),
            "7/zfauXrL6LSdBbV8YTfnCWafHk="
        );
    }

    #[test]
    fn credentials_match_openssl() {
        // `echo -n "1700000000:alice" | openssl dgst -sha1 -hmac north-rtc-secret -binary | base64`
        let credential = mint(b"north-rtc-secret", "alice", 1_700_000_000);
        assert_eq!(credential.username, "1700000000:alice");
        assert_eq!(credential.password, "iWHWXwwkSjAqCuLp2YdtI1L99i4=");
        // A user id with colons stays after the expiry, which coturn reads first.
        let credential = mint(b"north-rtc-secret", "user:with:colons", 1_234_567_890);
        assert_eq!(credential.username, "1234567890:user:with:colons");
        assert_eq!(credential.password, "InJ3gvs+nw8doYOdBqNl/p7I/y4=");
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let credential = mint(b"s", "alice", 1);
        assert!(!format!("{credential:?}").contains(&credential.password));
    }
}
