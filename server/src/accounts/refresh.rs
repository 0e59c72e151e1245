//! Refresh tokens: single-use, rotating, grouped in families.
//!
//! A login starts a family and hands out its first refresh token: 256 random
//! bits, of which only the SHA-256 is kept. The family's current token buys a
//! new access token and the family's next refresh token; the one presented is
//! now used. A used token coming back means two parties hold the family's
//! tokens, one of them a thief, so the whole family is revoked. A family lives
//! `refresh_token_ttl_secs` from its login, and ends when its user is removed
//! or changes password (the user's credential no longer matches the family's).
//! Each user keeps at most [`MAX_FAMILIES_PER_USER`], the oldest dropped first.
//!
//! [`Families`] is plain state driven by the caller's clock; [`FamilyFile`]
//! keeps it in `refresh-tokens.json` next to the user file, so a restart logs
//! nobody out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::file::{self, WriteLock};
use super::store::{StoreError, User, Users};
use crate::tls::hex;

/// Logins (families) one user may have going at once.
pub const MAX_FAMILIES_PER_USER: usize = 20;
/// Used tokens remembered per family, to recognise one coming back. An older
/// one is merely unknown: it opens nothing either way.
const USED_KEPT: usize = 8;
const FORMAT_VERSION: u32 = 1;

/// A refresh token as handed to a client (64 hex digits). `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

impl RefreshToken {
    fn generate() -> Self {
        RefreshToken(hex(&rand::random::<[u8; 32]>()))
    }

    /// The token itself, for the response that hands it out.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Family {
    id: String,
    user: String,
    /// The user's [`User::credential`] at the login.
    credential: String,
    created_at: u64,
    expires_at: u64,
    /// SHA-256 (hex) of the token that may be used next.
    current: String,
    /// SHA-256 (hex) of the last tokens used, oldest first.
    used: Vec<String>,
}

/// A refresh that worked: the family's next token, and the account now.
#[derive(Debug)]
pub struct Rotated {
    pub token: RefreshToken,
    /// When the family (and so this token) expires, in Unix seconds.
    pub expires_at: u64,
    pub user: User,
}

/// Why a refresh token bought nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefreshError {
    #[error("the refresh token is unknown or revoked")]
    Unknown,
    #[error("the refresh token has expired")]
    Expired,
    #[error("the refresh token was already used; its family is revoked")]
    Reused { user: String, family: String },
    #[error("the account was removed or its password changed since the login")]
    AccountChanged { user: String },
}

/// Every live family, found by the hash of any token they remember.
#[derive(Debug, Default)]
pub struct Families {
    by_id: HashMap<String, Family>,
    by_token: HashMap<String, String>,
}

impl Families {
    /// Starts a family for `user` (a login); returns its first token and when
    /// it expires. The user's oldest family goes if it had too many.
    pub fn start(&mut self, user: &User, now: u64, ttl_secs: u64) -> (RefreshToken, u64) {
        let mut theirs: Vec<(u64, String)> = self
            .by_id
            .values()
            .filter(|f| f.user == user.name)
            .map(|f| (f.created_at, f.id.clone()))
            .collect();
        theirs.sort();
        let excess = (theirs.len() + 1).saturating_sub(MAX_FAMILIES_PER_USER);
        for (_, id) in theirs.into_iter().take(excess) {
            self.remove(&id);
        }
        let token = RefreshToken::generate();
        let expires_at = now.saturating_add(ttl_secs);
        self.insert(Family {
            id: hex(&rand::random::<[u8; 8]>()),
            user: user.name.clone(),
            credential: user.credential(),
            created_at: now,
            expires_at,
            current: digest(token.expose()),
            used: Vec::new(),
        });
        (token, expires_at)
    }

    /// Trades the family's current `token` for its next one. A used token
    /// revokes its family; an expired family, or one whose account changed, ends.
    pub fn rotate(&mut self, token: &str, now: u64, users: &Users) -> Result<Rotated, RefreshError> {
        let hash = digest(token);
        let id = self.by_token.get(&hash).ok_or(RefreshError::Unknown)?.clone();
        let family = self.by_id.get(&id).ok_or(RefreshError::Unknown)?;
        if family.expires_at <= now {
            self.remove(&id);
            return Err(RefreshError::Expired);
        }
        if family.current != hash {
            let user = family.user.clone();
            self.remove(&id);
            return Err(RefreshError::Reused { user, family: id });
        }
        let user = match users.get(&family.user) {
            Some(user) if user.credential() == family.credential => user.clone(),
            _ => {
                let user = family.user.clone();
                self.remove(&id);
                return Err(RefreshError::AccountChanged { user });
            }
        };
        let next = RefreshToken::generate();
        let next_hash = digest(next.expose());
        let family = self.by_id.get_mut(&id).ok_or(RefreshError::Unknown)?;
        let used = std::mem::replace(&mut family.current, next_hash.clone());
        family.used.push(used);
        let forgotten = family.used.len().saturating_sub(USED_KEPT);
        let forgotten: Vec<String> = family.used.drain(..forgotten).collect();
        let expires_at = family.expires_at;
        for hash in forgotten {
            self.by_token.remove(&hash);
        }
        self.by_token.insert(next_hash, id);
        Ok(Rotated {
            token: next,
            expires_at,
            user,
        })
    }

    /// Ends the families that expired, and those whose account was removed or
    /// changed password; returns how many ended.
    pub fn prune(&mut self, now: u64, users: &Users) -> usize {
        let dead: Vec<String> = self
            .by_id
            .values()
            .filter(|f| f.expires_at <= now || users.get(&f.user).is_none_or(|u| u.credential() != f.credential))
            .map(|f| f.id.clone())
            .collect();
        for id in &dead {
            self.remove(id);
        }
        dead.len()
    }

    /// Live families (logins) of `user`.
    pub fn of_user(&self, user: &str) -> usize {
        self.by_id.values().filter(|f| f.user == user).count()
    }

    fn insert(&mut self, family: Family) {
        for hash in family.used.iter().chain([&family.current]) {
            self.by_token.insert(hash.clone(), family.id.clone());
        }
        self.by_id.insert(family.id.clone(), family);
    }

    fn remove(&mut self, id: &str) {
        if let Some(family) = self.by_id.remove(id) {
            for hash in family.used.iter().chain([&family.current]) {
                self.by_token.remove(hash);
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FamiliesFile {
    version: u32,
    families: Vec<Family>,
}

/// `refresh-tokens.json`, next to the user file: the families, written
/// atomically after every change.
#[derive(Clone, Debug)]
pub struct FamilyFile {
    path: PathBuf,
}

impl FamilyFile {
    pub fn next_to(users_file: &Path) -> Self {
        Self {
            path: users_file.with_file_name("refresh-tokens.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The families saved; none if the file does not exist yet.
    pub fn load(&self) -> Result<Families, StoreError> {
        let bytes = file::read_if_exists(&self.path).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?;
        let mut families = Families::default();
        let Some(bytes) = bytes else { return Ok(families) };
        let corrupt = |reason: String| StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let saved: FamiliesFile = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if saved.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "version {} (this server reads version 1)",
                saved.version
            )));
        }
        for family in saved.families {
            families.insert(family);
        }
        Ok(families)
    }

    pub fn save(&self, families: &Families) -> Result<(), StoreError> {
        let write_error = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let mut list: Vec<&Family> = families.by_id.values().collect();
        list.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        let json = serde_json::to_vec(&serde_json::json!({ "version": FORMAT_VERSION, "families": list }))
            .expect("families serialize");
        let _lock = WriteLock::acquire(&self.path).map_err(write_error)?;
        file::write_atomically(&self.path, &json).map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::file::tests::temp_dir;
    use crate::accounts::store::UserStore;

    const DAY: u64 = 86_400;
    const T0: u64 = 1_767_225_600;

    /// Users as a store holds them (cheap fake hashes: nothing here verifies a password).
    fn users(names: &[&str]) -> Users {
        let store = UserStore::new(temp_dir("refresh-users").join("users.json"));
        for name in names {
            store.add(user(name, "1")).unwrap();
        }
        store.load().unwrap()
    }

    fn user(name: &str, salt: &str) -> User {
        User {
            name: name.into(),
            password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ{salt}$aGFzaGhhc2hoYXNoaGFzaA"),
            roles: Vec::new(),
            created_at: T0,
        }
    }

    #[test]
    fn each_refresh_trades_the_current_token_for_the_next() {
        let users = users(&["alice"]);
        let mut families = Families::default();
        let (first, expires_at) = families.start(users.get("alice").unwrap(), T0, 30 * DAY);
        assert_eq!(expires_at, T0 + 30 * DAY);
        assert_eq!(first.expose().len(), 64);
        let second = families.rotate(first.expose(), T0 + 60, &users).unwrap();
        assert_eq!(second.user.name, "alice");
        assert_eq!(second.expires_at, expires_at, "the family's lifetime does not slide");
        let third = families.rotate(second.token.expose(), T0 + 120, &users).unwrap();
        assert_ne!(third.token, second.token);
        assert_eq!(families.of_user("alice"), 1);
    }

    #[test]
    fn a_used_token_coming_back_revokes_the_whole_family() {
        let users = users(&["alice"]);
        let mut families = Families::default();
        let (stolen, _) = families.start(users.get("alice").unwrap(), T0, DAY);
        let (other_login, _) = families.start(users.get("alice").unwrap(), T0, DAY);
        let legit = families.rotate(stolen.expose(), T0 + 1, &users).unwrap();
        let err = families.rotate(stolen.expose(), T0 + 2, &users).unwrap_err();
        assert!(
            matches!(err, RefreshError::Reused { ref user, .. } if user == "alice"),
            "{err:?}"
        );
        assert_eq!(
            families.rotate(legit.token.expose(), T0 + 3, &users).unwrap_err(),
            RefreshError::Unknown,
            "the family's newest token is revoked too"
        );
        assert_eq!(
            families.rotate(stolen.expose(), T0 + 4, &users).unwrap_err(),
            RefreshError::Unknown
        );
        families
            .rotate(other_login.expose(), T0 + 5, &users)
            .expect("other logins live on");
    }

    #[test]
    fn unknown_and_expired_tokens_buy_nothing() {
        let users = users(&["alice"]);
        let mut families = Families::default();
        assert_eq!(families.rotate("00", T0, &users).unwrap_err(), RefreshError::Unknown);
        let (token, expires_at) = families.start(users.get("alice").unwrap(), T0, 60);
        assert_eq!(
            families.rotate(token.expose(), expires_at, &users).unwrap_err(),
            RefreshError::Expired
        );
        assert_eq!(families.of_user("alice"), 0);
    }

    #[test]
    fn a_new_password_or_a_removed_user_ends_the_users_families() {
        let mut families = Families::default();
        let before = users(&["alice", "bob"]);
        let (alice_token, _) = families.start(before.get("alice").unwrap(), T0, DAY);
        let (bob_token, _) = families.start(before.get("bob").unwrap(), T0, DAY);
        // alice changed her password (a new hash); bob was removed.
        let store = UserStore::new(temp_dir("refresh-changed").join("users.json"));
        store.add(user("alice", "2")).unwrap();
        let after = store.load().unwrap();
        assert_eq!(
            families.rotate(alice_token.expose(), T0 + 1, &after).unwrap_err(),
            RefreshError::AccountChanged { user: "alice".into() }
        );
        assert_eq!(families.prune(T0 + 1, &after), 1, "bob's family goes at the next prune");
        assert_eq!(
            families.rotate(bob_token.expose(), T0 + 1, &before).unwrap_err(),
            RefreshError::Unknown
        );
    }

    #[test]
    fn a_user_keeps_at_most_twenty_logins_the_oldest_going_first() {
        let users = users(&["alice"]);
        let alice = users.get("alice").unwrap();
        let mut families = Families::default();
        let (oldest, _) = families.start(alice, T0, DAY);
        for i in 1..MAX_FAMILIES_PER_USER as u64 {
            families.start(alice, T0 + i, DAY);
        }
        assert_eq!(families.of_user("alice"), MAX_FAMILIES_PER_USER);
        families.start(alice, T0 + 100, DAY);
        assert_eq!(families.of_user("alice"), MAX_FAMILIES_PER_USER);
        assert_eq!(
            families.rotate(oldest.expose(), T0 + 101, &users).unwrap_err(),
            RefreshError::Unknown
        );
    }

    #[test]
    fn families_survive_a_restart_and_only_hashes_are_stored() {
        let users = users(&["alice"]);
        let file = FamilyFile::next_to(&temp_dir("refresh-file").join("users.json"));
        assert_eq!(file.load().unwrap().of_user("alice"), 0);
        let mut families = Families::default();
        let (first, _) = families.start(users.get("alice").unwrap(), T0, DAY);
        let used = families.rotate(first.expose(), T0 + 1, &users).unwrap();
        file.save(&families).unwrap();
        let text = std::fs::read_to_string(file.path()).unwrap();
        assert!(!text.contains(first.expose()) && !text.contains(used.token.expose()));
        let mut restarted = file.load().unwrap();
        assert!(matches!(
            restarted.rotate(first.expose(), T0 + 2, &users),
            Err(RefreshError::Reused { .. })
        ));
        let mut restarted = file.load().unwrap();
        restarted.rotate(used.token.expose(), T0 + 2, &users).unwrap();
        std::fs::write(file.path(), "{").unwrap();
        assert!(file.load().unwrap_err().to_string().contains("refresh-tokens.json"));
    }

    #[test]
    fn a_family_forgets_old_used_tokens_but_never_lets_them_in() {
        let users = users(&["alice"]);
        let mut families = Families::default();
        let (first, _) = families.start(users.get("alice").unwrap(), T0, DAY);
        let mut token = first.clone();
        for i in 0..=USED_KEPT as u64 {
            token = families.rotate(token.expose(), T0 + i, &users).unwrap().token;
        }
        assert_eq!(families.by_token.len(), USED_KEPT + 1, "memory per family is bounded");
        assert_eq!(
            families.rotate(first.expose(), T0 + 99, &users).unwrap_err(),
            RefreshError::Unknown
        );
        families.rotate(token.expose(), T0 + 100, &users).unwrap();
    }
}
