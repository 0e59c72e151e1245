//! The user file: who may log in, with their argon2id hashes and roles.
//!
//! ```json
//! {"version": 1, "users": [{"name": "alice", "password_hash": "$argon2id$...",
//!   "roles": ["admin"], "created_at": 1767225600}]}
//! ```
//!
//! `server users ...` changes it ([`UserStore`]), the running server reads it
//! again whenever it changes ([`LiveUsers`]). It is written atomically under a
//! lock (see [`super::file`]); a file that cannot be read as the above is an
//! error naming it, never an empty user list.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::file::{self, Version, WriteLock};
use super::password;
use crate::tls::hex;

/// The version of the file's format this server reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The longest user name (and role name), in characters.
pub const MAX_NAME: usize = 64;

/// One account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// An argon2id PHC string.
    pub password_hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

impl User {
    /// A fingerprint of the account's credential: it changes when the password
    /// does, and when the name is removed and added again (a new salt), so
    /// refresh tokens issued before either stop working.
    pub fn credential(&self) -> String {
        hex(&Sha256::digest(self.password_hash.as_bytes())[..16])
    }
}

/// Every account, as one version of the file holds them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users(Vec<User>);

impl Users {
    pub fn get(&self, name: &str) -> Option<&User> {
        self.0.iter().find(|u| u.name == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserFile {
    version: u32,
    users: Vec<User>,
}

/// What went wrong with the user file or a change to it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is corrupt ({reason}); it was left as it is: fix it or restore a backup", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("writing {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("invalid {what} {name:?}: 1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ @ -")]
    InvalidName { what: &'static str, name: String },
    #[error("a user named {0:?} already exists")]
    UserExists(String),
    #[error("no user named {0:?}")]
    NoSuchUser(String),
}

/// Whether `name` may name a user (or a role).
pub fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    if (1..=MAX_NAME).contains(&name.len()) && name.chars().all(allowed) {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what,
            name: name.chars().take(MAX_NAME + 1).collect(),
        })
    }
}

/// The user file on disk.
#[derive(Clone, Debug)]
pub struct UserStore {
    path: PathBuf,
}

impl UserStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every account; none if the file does not exist yet.
    pub fn load(&self) -> Result<Users, StoreError> {
        let bytes = file::read_if_exists(&self.path).map_err(|source| StoreError::Read {
            path: self.path.clone(),
            source,
        })?;
        match bytes {
            None => Ok(Users::default()),
            Some(bytes) => self.parse(&bytes),
        }
    }

    /// Adds `user`, whose name must be new.
    pub fn add(&self, user: User) -> Result<(), StoreError> {
        check_name("user name", &user.name)?;
        for role in &user.roles {
            check_name("role", role)?;
        }
        self.update(|users| {
            if users.iter().any(|u| u.name == user.name) {
                return Err(StoreError::UserExists(user.name.clone()));
            }
            users.push(user);
            Ok(())
        })
    }

    /// Removes the account `name`.
    pub fn remove(&self, name: &str) -> Result<User, StoreError> {
        self.update(|users| {
            let at = users
                .iter()
                .position(|u| u.name == name)
                .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
            Ok(users.remove(at))
        })
    }

    /// Gives the account `name` a new password hash.
    pub fn set_password(&self, name: &str, password_hash: String) -> Result<(), StoreError> {
        self.update(|users| {
            let user = users
                .iter_mut()
                .find(|u| u.name == name)
                .ok_or_else(|| StoreError::NoSuchUser(name.to_owned()))?;
            user.password_hash = password_hash;
            Ok(())
        })
    }

    /// Reads, changes and writes the file under its lock.
    fn update<T>(&self, change: impl FnOnce(&mut Vec<User>) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let write_error = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let _lock = WriteLock::acquire(&self.path).map_err(write_error)?;
        let mut users = self.load()?.0;
        let out = change(&mut users)?;
        let file = UserFile {
            version: FORMAT_VERSION,
            users,
        };
        let mut json = serde_json::to_vec_pretty(&file).expect("users serialize");
        json.push(b'\n');
        file::write_atomically(&self.path, &json).map_err(write_error)?;
        Ok(out)
    }

    fn parse(&self, bytes: &[u8]) -> Result<Users, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        };
        let file: UserFile = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "version {} (this server reads version {FORMAT_VERSION})",
                file.version
            )));
        }
        for (i, user) in file.users.iter().enumerate() {
            check_name("user name", &user.name).map_err(|e| corrupt(format!("user {i}: {e}")))?;
            if !password::is_argon2id(&user.password_hash) {
                return Err(corrupt(format!(
                    "user {:?}: password_hash is not an argon2id hash",
                    user.name
                )));
            }
            if file.users[..i].iter().any(|u| u.name == user.name) {
                return Err(corrupt(format!("user {:?} appears twice", user.name)));
            }
        }
        Ok(Users(file.users))
    }
}

/// The accounts as the running server sees them: the file, read again when
/// it changes, so `server users add` takes effect without a restart.
pub struct LiveUsers {
    store: UserStore,
    seen: Mutex<(Option<Version>, Arc<Users>)>,
}

impl LiveUsers {
    /// Reads the file once; an unreadable file is an error here (at start-up),
    /// where later it only keeps the last good version in use.
    pub fn open(store: UserStore) -> Result<Self, StoreError> {
        let version = file::version(store.path()).map_err(|source| StoreError::Read {
            path: store.path().to_owned(),
            source,
        })?;
        let users = store.load()?;
        Ok(Self {
            store,
            seen: Mutex::new((version, Arc::new(users))),
        })
    }

    /// The accounts now. Costs a `stat` of the file, and a read when it changed.
    pub fn current(&self) -> Arc<Users> {
        let mut seen = self.seen.lock().expect("users lock");
        let version = match file::version(self.store.path()) {
            Ok(version) => version,
            Err(e) => {
                tracing::error!(file = %self.store.path().display(), error = %e, "cannot read the user file; using the last version read");
                return seen.1.clone();
            }
        };
        if version != seen.0 {
            // Remember the version even when it is bad, so its error is logged once.
            seen.0 = version;
            match self.store.load() {
                Ok(users) => {
                    tracing::info!(file = %self.store.path().display(), users = users.len(), "user file changed; reloaded");
                    seen.1 = Arc::new(users);
                }
                Err(e) => tracing::error!(error = %e, "keeping the accounts last read"),
            }
        }
        seen.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::file::tests::temp_dir;

    fn user(name: &str) -> User {
        User {
            name: name.into(),
            password_hash: password::hash("a fine password").unwrap(),
            roles: vec!["admin".into()],
            created_at: 1_767_225_600,
        }
    }

    #[test]
    fn users_written_are_the_users_read_back() {
        let store = UserStore::new(temp_dir("store").join("data").join("users.json"));
        assert!(store.load().unwrap().is_empty(), "no file yet: no users");
        let (alice, bob) = (user("alice"), user("bob@example.org"));
        store.add(alice.clone()).unwrap();
        store.add(bob.clone()).unwrap();
        let users = store.load().unwrap();
        assert_eq!(users.iter().collect::<Vec<_>>(), [&alice, &bob]);
        assert!(matches!(store.add(user("alice")), Err(StoreError::UserExists(_))));
        store.remove("alice").unwrap();
        assert!(matches!(store.remove("alice"), Err(StoreError::NoSuchUser(_))));
        assert_eq!(store.load().unwrap().iter().collect::<Vec<_>>(), [&bob]);
        let text = std::fs::read_to_string(store.path()).unwrap();
        assert!(text.contains("\"version\": 1"), "{text}");
    }

    #[test]
    fn concurrent_writers_never_lose_each_others_change() {
        let store = UserStore::new(temp_dir("concurrent").join("users.json"));
        let hash = password::hash("a fine password").unwrap();
        std::thread::scope(|scope| {
            for i in 0..8 {
                let (store, hash) = (store.clone(), hash.clone());
                scope.spawn(move || {
                    store
                        .add(User {
                            name: format!("user{i}"),
                            password_hash: hash,
                            roles: Vec::new(),
                            created_at: 0,
                        })
                        .unwrap()
                });
            }
        });
        assert_eq!(store.load().unwrap().len(), 8);
    }

    #[test]
    fn names_are_short_and_plain() {
        for good in [
            "a",
            "alice",
            "bob.smith",
            "carol_1",
            "dave@example.org",
            "e-f",
            &"x".repeat(64),
        ] {
            check_name("user name", good).unwrap();
        }
        for bad in ["", "al ice", "alice/..", "ünïcode", "a:b", &"x".repeat(65)] {
            assert!(check_name("user name", bad).is_err(), "{bad:?}");
        }
        let store = UserStore::new(temp_dir("names").join("users.json"));
        let mut bad_role = user("alice");
        bad_role.roles = vec!["ad min".into()];
        assert!(matches!(
            store.add(bad_role),
            Err(StoreError::InvalidName { what: "role", .. })
        ));
    }

    #[test]
    fn a_write_interrupted_before_its_rename_leaves_the_old_file_intact() {
        let dir = temp_dir("interrupted");
        let store = UserStore::new(dir.join("users.json"));
        store.add(user("alice")).unwrap();
        // A writer crashed halfway through its temporary file.
        std::fs::write(
            dir.join(".users.json.tmp-4242-0badc0de"),
            b"{\"version\": 1, \"users\": [{\"na",
        )
        .unwrap();
        assert!(store.load().unwrap().get("alice").is_some());
        // The next writer cleans up and carries on from the intact file.
        store.add(user("bob")).unwrap();
        assert_eq!(store.load().unwrap().len(), 2);
        assert!(!dir.join(".users.json.tmp-4242-0badc0de").exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it_and_is_never_reset() {
        let dir = temp_dir("corrupt");
        let path = dir.join("users.json");
        let store = UserStore::new(&path);
        for (content, says) in [
            ("{\"version\": 1, \"users\": [", "EOF"),
            ("{\"version\": 2, \"users\": []}", "version 2"),
            (
                "{\"version\": 1, \"users\": [{\"name\": \"a\", \"password_hash\": \"x\", \"created_at\": 0}]}",
                "not an argon2id hash",
            ),
        ] {
            std::fs::write(&path, content).unwrap();
            let err = store.load().unwrap_err().to_string();
            assert!(err.contains(&path.display().to_string()) && err.contains(says), "{err}");
            assert!(store.add(user("bob")).is_err(), "a change does not start from nothing");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), content, "left as it was");
        }
    }

    #[test]
    fn the_server_sees_a_change_to_the_file_without_a_restart() {
        let store = UserStore::new(temp_dir("live").join("users.json"));
        let live = LiveUsers::open(store.clone()).unwrap();
        assert!(live.current().is_empty());
        store.add(user("alice")).unwrap();
        assert!(live.current().get("alice").is_some());
        // A bad edit keeps the last good version in use.
        std::fs::write(store.path(), "not json").unwrap();
        assert!(live.current().get("alice").is_some());
        std::fs::remove_file(store.path()).unwrap();
        assert!(live.current().is_empty(), "no file: no users");
    }

    #[test]
    fn a_new_password_changes_the_credential() {
        let store = UserStore::new(temp_dir("passwd").join("users.json"));
        store.add(user("alice")).unwrap();
        let before = store.load().unwrap().get("alice").unwrap().credential();
        store
            .set_password("alice", password::hash("another password").unwrap())
            .unwrap();
        assert_ne!(store.load().unwrap().get("alice").unwrap().credential(), before);
        assert!(matches!(
            store.set_password("nobody", String::new()),
            Err(StoreError::NoSuchUser(_))
        ));
    }
}
