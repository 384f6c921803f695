//! Secret files (a token, a peer key) are made readable by their owner only, from the
//! first byte: created with mode 0600, never widened by the umask or an existing file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot create {path}: {source} (a secret file is never overwritten: remove it first to replace it)")]
    Create { path: String, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: std::io::Error },
}

/// Creates `path` (it must not exist) with mode 0600 and writes `secret` into it, synced.
pub fn write_new(path: &Path, secret: &str) -> Result<(), SecretFileError> {
    let shown = || path.display().to_string();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| SecretFileError::Create { path: shown(), source })?;
    file.write_all(format!("{secret}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| SecretFileError::Write { path: shown(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_secret_file_is_its_owners_alone_and_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("roster-secret-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token");
        let _ = std::fs::remove_file(&path);
        write_new(&path, "s3cret").expect("written");
        let mode = std::fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).expect("read").trim(), "s3cret");
        assert!(matches!(write_new(&path, "other"), Err(SecretFileError::Create { .. })));
        assert_eq!(std::fs::read_to_string(&path).expect("read").trim(), "s3cret");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
