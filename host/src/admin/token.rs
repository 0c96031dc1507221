//! The admin token: from the host config (`admin_token`, `ALORIG_ADMIN_TOKEN`),
//! else `<data_dir>/admin.token`, created at first start with a random value,
//! mode 0600, so only the host's user (and root) can deploy. Never logged.

use anyhow::{Context as _, Result};
use std::{
    io::{Read as _, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// The configured token, or the token file's, creating it when absent.
pub fn ensure(configured: Option<&str>, data_dir: &Path) -> Result<String> {
    if let Some(token) = configured.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok(token.to_string());
    }
    let path = token_path(data_dir);
    if let Some(token) = read(&path)? {
        return Ok(token);
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
    let token = random_token()?;
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match created {
        Ok(mut file) => {
            file.write_all(format!("{token}\n").as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("cannot write {}", path.display()))?;
            tracing::info!(path = %path.display(), "created the admin token");
            Ok(token)
        }
        // Another host process on the same data dir created it first.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            read(&path)?.with_context(|| format!("{} is empty", path.display()))
        }
        Err(err) => Err(err).with_context(|| format!("cannot create {}", path.display())),
    }
}

/// The token in `path`, if the file exists and is not empty.
pub fn read(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_string())),
        Ok(_) => Ok(None),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => {
            Err(err).with_context(|| format!("cannot read the admin token {}", path.display()))
        }
    }
}

/// 32 random bytes from the kernel, hex-encoded.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the admin token")?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn the_token_file_is_created_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let token = ensure(None, dir.path()).unwrap();
        assert_eq!(token.len(), 64);
        let mode = std::fs::metadata(token_path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            ensure(None, dir.path()).unwrap(),
            token,
            "kept across starts"
        );
        assert_eq!(
            ensure(Some("configured"), dir.path()).unwrap(),
            "configured"
        );
    }
}
