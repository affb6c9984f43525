//! Secrets (API tokens, the Sigfox callback secret), compared in constant time; and the
//! files that hold secrets (the cellular keys, the API tokens), read again when they
//! change and refused while others may read them.
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Mutex;

/// Compares two secrets in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u8 | ((a.len() ^ b.len()) >> 8) as u8;
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff);
    }
    diff == 0
}

/// Why a secrets file was not read.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// It cannot be read.
    #[error("{key} {path}: {error}")]
    Unreadable {
        /// Its configuration key.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Others may read it.
    #[error(
        "{key} {path}: mode {mode:04o} lets every user read the {what}; chmod 600 (or 640 for a group) it"
    )]
    WorldReadable {
        /// Its configuration key.
        key: &'static str,
        /// What it holds, for the message ("keys").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// A file of secrets that is read again when its modification time, size or inode
/// changes, and never while others may read it.
pub struct SecretFile {
    key: &'static str,
    what: &'static str,
    path: PathBuf,
    /// The version last taken.
    stamp: Mutex<Option<(i64, i64, u64, u64)>>,
}

impl SecretFile {
    /// The file at `path`, named `key` in the configuration, holding `what` ("keys").
    pub fn new(key: &'static str, what: &'static str, path: PathBuf) -> Self {
        SecretFile {
            key,
            what,
            path,
            stamp: Mutex::new(None),
        }
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// `parse`d contents when the file changed since the version last taken; `None` when
    /// it did not. A version is taken only when `parse` accepts it, so a broken file is
    /// read (and refused) again until it is mended.
    pub fn read_if_changed<T, E: From<SecretFileError>>(
        &self,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Result<Option<T>, E> {
        let unreadable = |error| SecretFileError::Unreadable {
            key: self.key,
            path: self.path.clone(),
            error,
        };
        let meta = std::fs::metadata(&self.path).map_err(unreadable)?;
        let stamp = (meta.mtime(), meta.mtime_nsec(), meta.size(), meta.ino());
        if *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) == Some(stamp) {
            return Ok(None);
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o004 != 0 {
            return Err(SecretFileError::WorldReadable {
                key: self.key,
                what: self.what,
                path: self.path.clone(),
                mode,
            }
            .into());
        }
        let text = std::fs::read_to_string(&self.path).map_err(unreadable)?;
        let parsed = parse(&text)?;
        *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = Some(stamp);
        Ok(Some(parsed))
    }
}

/// Calls `reload` every 2 s (on `jobs`, until `stop`), logging what it did: `Ok(Some(n))`
/// new contents in force (`n` entries), `Ok(None)` no change, `Err` those in force stay.
pub fn watch<E: std::fmt::Display>(
    what: &'static str,
    jobs: &tokio_util::task::TaskTracker,
    stop: &tokio_util::sync::CancellationToken,
    reload: impl Fn() -> Result<Option<usize>, E> + Send + Sync + 'static,
) {
    jobs.spawn(stop.clone().run_until_cancelled_owned(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
        loop {
            tick.tick().await;
            match reload() {
                Ok(Some(n)) => tracing::info!(entries = n, "{what} read again"),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "{what} not read again; those in force stay"),
            }
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn equal_only_when_equal() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
