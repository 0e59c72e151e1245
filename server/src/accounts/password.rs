//! Passwords: what the service accepts, and argon2id to hash and check them.
//!
//! Hashes are PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`, the
//! argon2 crate's defaults, which are OWASP's recommendation), so their
//! parameters travel with them and can be raised later without breaking old
//! hashes. A login for a name that does not exist is checked against a fixed
//! dummy hash of the same cost, so the time an answer takes does not tell which
//! names exist.

use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, PasswordHasher as _, PasswordVerifier as _};

/// The shortest password accepted, in characters.
pub const MIN_CHARS: usize = 8;
/// The longest password accepted, in bytes (argon2 takes more, but nobody needs it).
pub const MAX_BYTES: usize = 1024;

/// A hash of a password nobody knows, made with the default parameters: what a
/// login for an unknown name is checked against. A test keeps its parameters
/// equal to those of new hashes.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$9T1iV5O0aSff7Prx5cc1jA$0Uc/2XQNJUe0NXy8IDB/i89bAyFfgIxq/va20YSQDR8";

/// Why a password is refused, or could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password is too short: at least {MIN_CHARS} characters, please")]
    TooShort,
    #[error("the password is too long: at most {MAX_BYTES} bytes")]
    TooLong,
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}

/// Whether `password` may be set as someone's password.
pub fn check(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_BYTES {
        Err(PasswordError::TooLong)
    } else if password.chars().count() < MIN_CHARS {
        Err(PasswordError::TooShort)
    } else {
        Ok(())
    }
}

/// Hashes `password` (after [`check`]) with argon2id and a random salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check(password)?;
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

/// Whether `password` matches the PHC string `hash`. Takes as long as hashing
/// (tens of milliseconds): call it off the async runtime.
pub fn verify(password: &str, hash: &str) -> bool {
    password.len() <= MAX_BYTES && Argon2::default().verify_password(password.as_bytes(), hash).is_ok()
}

/// Spends the time a [`verify`] takes, for a name that does not exist; false.
pub fn verify_unknown(password: &str) -> bool {
    let _ = verify(password, DUMMY_HASH);
    false
}

/// Whether `hash` is an argon2id PHC string this service can check.
pub fn is_argon2id(hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| h.algorithm.as_str() == Algorithm::Argon2id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_no_other() {
        let hash = hash("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
        assert!(is_argon2id(&hash));
        assert!(verify("correct horse", &hash));
        assert!(!verify("correct horsE", &hash));
        assert!(!verify("", &hash));
        assert_ne!(super::hash("correct horse").unwrap(), hash, "salted");
    }

    #[test]
    fn short_and_huge_passwords_are_refused_with_a_clear_message() {
        assert_eq!(hash("seven77"), Err(PasswordError::TooShort));
        assert!(PasswordError::TooShort.to_string().contains("at least 8"));
        assert_eq!(check(&"x".repeat(MAX_BYTES + 1)), Err(PasswordError::TooLong));
        check("éééééééé").unwrap();
        check(&"x".repeat(MAX_BYTES)).unwrap();
        assert!(!verify(&"x".repeat(MAX_BYTES + 1), &hash("12345678").unwrap()));
    }

    #[test]
    fn an_unknown_name_costs_the_same_as_a_wrong_password() {
        assert!(is_argon2id(DUMMY_HASH));
        let real = hash("whatever-it-is").unwrap();
        let params = |h: &str| h.split('$').nth(3).map(str::to_owned);
        assert_eq!(
            params(DUMMY_HASH),
            params(&real),
            "the dummy hash costs what a real one does"
        );
        assert!(!verify_unknown("whatever-it-is"));
        assert!(!is_argon2id("$2b$12$notargon"));
        assert!(!is_argon2id("plain text"));
    }
}
