//! The data directory: owner-only, because it holds the session secret and the database.
//!
//! With the secret, anyone can forge a visitor's session token and read their conversation;
//! with the database, everything. So the directory is 0700 and the files Switchboard creates in
//! it are 0600, whatever the process umask; an existing secret that others can read gets a
//! warning (and is tightened), since it may already have been copied.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Create the directory (0700) or tighten an existing one to 0700.
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder
        .create(dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    #[cfg(unix)]
    {
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::info!(dir = %dir.display(), mode = format!("{mode:o}"), "data dir made owner-only (0700)");
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting data dir {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Write a secret file (0600) atomically: a crash never leaves half a secret behind.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(&partial)
        .with_context(|| format!("writing {}", partial.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&partial, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Whether a file can be read by others than its owner (always false off Unix).
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        std::fs::metadata(path)
            .map(|metadata| metadata.permissions().mode() & 0o077 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Warn about an existing secret that others can read, then make it owner-only.
pub fn check_secret(path: &Path) {
    if !readable_by_others(path) {
        return;
    }
    tracing::warn!(
        path = %path.display(),
        "the web chat secret was readable by other users: it is now 0600, but rotate it (delete the file or set webchat.session_secret) if anyone may have copied it"
    );
    #[cfg(unix)]
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %error, "could not restrict the web chat secret");
    }
}

/// Make the SQLite files in the data directory owner-only (SQLite creates them with the
/// umask's mode; the WAL and shared-memory files appear beside the database).
pub fn restrict_files(dir: &Path) {
    #[cfg(unix)]
    {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
            if is_file
                && readable_by_others(&path)
                && let Err(error) =
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            {
                tracing::warn!(path = %path.display(), error = %error, "could not restrict a data file");
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn directory_and_files_are_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let secret = dir.join("webchat.secret");
        write_private(&secret, b"s3cret").unwrap();
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&secret));
        check_secret(&secret);
        assert!(!readable_by_others(&secret));
        let database = dir.join("switchboard.db");
        std::fs::write(&database, b"").unwrap();
        std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_files(&dir);
        assert!(!readable_by_others(&database));
    }
}
