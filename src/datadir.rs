//! The data directory: owner-only, because it holds the session secret and the database.
//!
//! With the web chat secret, anyone can forge a visitor's session token and read their
//! conversation; with the database, everything. So the directory is 0700 and the files
//! Switchboard keeps in it are 0600, whatever the process umask. Channels write their own
//! files (secrets) with `switchboard_connector::files`, which also warns about an existing
//! secret that others could read.

use std::path::Path;

use anyhow::Context;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use switchboard_connector::files::readable_by_others;

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
        let database = dir.join("switchboard.db");
        std::fs::write(&database, b"").unwrap();
        std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_files(&dir);
        assert!(!readable_by_others(&database));
    }
}
