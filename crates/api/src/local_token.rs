//! Secure by default and still zero-config: when no token is configured, `ferry serve` makes an
//! admin token on its first start and keeps it in the data directory, readable by its owner
//! only (as Jupyter does), so that a newcomer can call the API at once.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use ferry_config::{ApiToken, Role};
use sha2::{Digest as _, Sha256};

/// The name the event log records for the token kept in the data directory.
pub const LOCAL_ADMIN: &str = "local-admin";
/// The file in the data directory that holds it.
pub const TOKEN_FILE: &str = "api-token";

/// The admin token kept in `data_dir`, as a configured token, and the file it is in; the
/// token is made (32 random bytes, in hex) when the file does not exist yet. True when it was
/// made now.
pub fn local_admin_token(data_dir: &Path) -> std::io::Result<(ApiToken, PathBuf, bool)> {
    let path = data_dir.join(TOKEN_FILE);
    let (token, made) = match std::fs::read_to_string(&path) {
        Ok(text) => (text.trim().to_string(), false),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => (make(&path)?, true),
        Err(error) => return Err(error),
    };
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is empty: delete it and a new token is made",
                path.display()
            ),
        ));
    }
    let hash: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let configured = ApiToken {
        hash: format!("sha256:{hash}"),
        role: Role::Admin,
        trees: Vec::new(),
        tags: Vec::new(),
    };
    Ok((configured, path, made))
}

/// Writes a new random token to `path`, readable by its owner only, and returns it. The token
/// is written whole to a file beside it, then renamed into place: a crash never leaves `path`
/// empty or half written.
fn make(path: &Path) -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| std::io::Error::other(error.to_string()))?;
    let token: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let partial = dir.join(format!("{TOKEN_FILE}.{}.partial", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (first, path, made) = local_admin_token(&dir.path().join("data")).expect("made");
        assert!(made);
        assert_eq!(first.role, Role::Admin);
        assert!(first.sha256_hex().is_some(), "{}", first.hash);
        let (again, _, made_again) = local_admin_token(&dir.path().join("data")).expect("kept");
        assert!(!made_again);
        assert_eq!(again.hash, first.hash);
        let token = std::fs::read_to_string(&path).expect("file");
        assert_eq!(token.trim().len(), 64);
        assert!(!first.hash.contains(token.trim()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
