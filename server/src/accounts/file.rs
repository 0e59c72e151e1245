//! Files the account service owns: read whole, written atomically, changed
//! by one writer at a time.
//!
//! A write goes to a temporary file in the same directory, is flushed to disk,
//! renamed over the old file and the directory flushed too: a crash at any
//! point leaves either the old file or the new one, never half of either.
//! Writers that read, change and write a file (two `server users` commands, or
//! one and the server) take an exclusive lock on a sidecar `<file>.lock` first,
//! so neither loses the other's change. Readers need no lock: they see one
//! whole version or the other.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Permission bits of every file the service writes: the owner's only.
const PRIVATE: u32 = 0o600;

/// An exclusive lock on a file's sidecar `.lock`, held until dropped.
#[derive(Debug)]
pub struct WriteLock {
    _file: File,
}

impl WriteLock {
    /// Waits for the lock on `path`'s sidecar (creating the directory and the
    /// sidecar if missing). A leftover temporary file found under the lock can
    /// only be a crashed writer's, and is removed.
    pub fn acquire(path: &Path) -> io::Result<WriteLock> {
        let dir = parent(path);
        std::fs::create_dir_all(&dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(PRIVATE)
            .open(sidecar(path, ".lock"))?;
        file.lock()?;
        remove_leftovers(path, &dir);
        Ok(WriteLock { _file: file })
    }
}

/// Replaces `path` with `bytes` atomically (mode 0600). Callers that read the
/// file first hold its [`WriteLock`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(&dir)?;
    let tmp = sidecar(
        path,
        &format!(".tmp-{}-{:08x}", std::process::id(), rand::random::<u32>()),
    );
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(PRIVATE)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    File::open(&dir)?.sync_all()
}

/// Reads `path` whole; `None` if it does not exist.
pub fn read_if_exists(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// What tells one version of a file from the next: every atomic write makes a
/// new inode, and the modification time and length are there for editors that
/// write in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

/// The version of `path` now; `None` if it does not exist.
pub fn version(path: &Path) -> io::Result<Option<Version>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(Version {
            inode: meta.ino(),
            modified: meta.modified().ok(),
            len: meta.len(),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `dir/.name<suffix>`: hidden next to the file, so a glob for `*.json` never
/// picks it up.
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    parent(path).join(format!(".{name}{suffix}"))
}

fn remove_leftovers(path: &Path, dir: &Path) {
    let prefix = sidecar(path, ".tmp-");
    let Some(prefix) = prefix.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(prefix)) {
            tracing::warn!(file = %entry.path().display(), "removing a temporary file a crashed writer left");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "signal-accounts-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_keeps_it_private() {
        let dir = temp_dir("write");
        let path = dir.join("f.json");
        write_atomically(&path, b"one").unwrap();
        let first = version(&path).unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_ne!(version(&path).unwrap(), first, "a new version is visible");
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["f.json"], "no temporary file is left behind");
    }

    #[test]
    fn a_crashed_writers_temporary_file_is_ignored_then_cleaned_up_under_the_lock() {
        let dir = temp_dir("crash");
        let path = dir.join("f.json");
        write_atomically(&path, b"good").unwrap();
        // A writer died after writing half its temporary file, before the rename.
        let leftover = sidecar(&path, ".tmp-99999-deadbeef");
        std::fs::write(&leftover, b"{\"half").unwrap();
        assert_eq!(read_if_exists(&path).unwrap().unwrap(), b"good");
        let _lock = WriteLock::acquire(&path).unwrap();
        assert!(!leftover.exists());
        assert_eq!(read_if_exists(&path).unwrap().unwrap(), b"good");
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = temp_dir("lock");
        let path = dir.join("f.json");
        let held = WriteLock::acquire(&path).unwrap();
        let other = File::options().write(true).open(sidecar(&path, ".lock")).unwrap();
        assert!(other.try_lock().is_err(), "a second writer waits");
        drop(held);
        other.try_lock().unwrap();
    }
}
