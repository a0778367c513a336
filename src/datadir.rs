//! The data directory: owner-only, because it holds the session secret and the database.
//!
//! With the web chat secret, anyone can forge a visitor's session token and read their
//! conversation; with the database, everything. So the directory is 0700 and the files
//! Switchboard keeps in it are 0600, whatever the umask it was started with: [`prepare`]
//! narrows the process umask so that whatever is created afterwards, by Switchboard or by a
//! library (SQLite's files, the knowledge index's segments), is owner-only. Channels write
//! their own files (secrets) with `switchboard_connector::files`, which also warns about an
//! existing secret that others could read.

use std::path::Path;

use anyhow::Context;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

use switchboard_connector::files::readable_by_others;

/// Create the directory (0700) or tighten an existing one to 0700, and make everything the
/// process creates from now on owner-only (umask 077 added to the one it had).
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    owner_only_from_now_on();
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

/// Group and others lose every permission on files and directories this process creates.
#[cfg(unix)]
fn owner_only_from_now_on() {
    use rustix::fs::Mode;
    let group_and_others = Mode::RWXG | Mode::RWXO;
    let before = rustix::process::umask(group_and_others);
    rustix::process::umask(before | group_and_others);
}

/// Make what the data directory holds owner-only, subdirectories included: files 0600,
/// directories 0700 (for a data directory written by an earlier version, or under a wider
/// umask).
pub fn restrict_files(dir: &Path) {
    #[cfg(unix)]
    {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let mode = if kind.is_dir() {
                restrict_files(&path);
                0o700
            } else if kind.is_file() {
                0o600
            } else {
                continue;
            };
            if readable_by_others(&path)
                && let Err(error) =
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
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
        let index = dir.join("knowledge/segments");
        std::fs::create_dir_all(&index).unwrap();
        std::fs::set_permissions(&index, std::fs::Permissions::from_mode(0o755)).unwrap();
        let segment = index.join("segment.json");
        std::fs::write(&segment, b"{}").unwrap();
        std::fs::set_permissions(&segment, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_files(&dir);
        assert!(!readable_by_others(&database));
        assert!(!readable_by_others(&segment));
        let mode = std::fs::metadata(&index).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn what_the_process_creates_after_prepare_is_owner_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        prepare(&dir).unwrap();
        // As a library would: plain create calls, asking for 0666 and 0777.
        let nested = dir.join("knowledge/segments");
        std::fs::create_dir_all(&nested).unwrap();
        let file = nested.join("page_0.dat");
        std::fs::write(&file, b"x").unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&nested), 0o700);
        assert_eq!(mode(&file), 0o600);
    }
}
