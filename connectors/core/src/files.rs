//! Files a channel keeps in the app's data directory (a generated secret, a downloaded
//! session): owner-only, whatever the process umask, because whoever reads a signing secret
//! can forge the sessions it signs.

use std::io::Write;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

/// Write `contents` to `path` with mode 0600, atomically: the bytes go to a temporary file
/// beside it, which is then renamed, so a crash never leaves half a secret behind.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&partial)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

/// Whether users other than the owner may read or write `path` (always false off Unix).
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

/// An existing secret file that others could read: warn (it may have been copied already, so
/// it should be rotated) and make it owner-only.
pub fn check_private(path: &Path) {
    if !readable_by_others(path) {
        return;
    }
    tracing::warn!(
        path = %path.display(),
        "a secret file was readable by other users: it is now 0600, but rotate it (delete the file, or set the secret in config) if anyone may have copied it"
    );
    #[cfg(unix)]
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), error = %error, "could not restrict a secret file");
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_written_and_kept_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("webchat-web.secret");
        write_private(&secret, b"s3cret").unwrap();
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read(&secret).unwrap(), b"s3cret");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by_others(&secret));
        check_private(&secret);
        assert!(!readable_by_others(&secret));
    }
}
