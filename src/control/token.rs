//! The control API's token: the configured one, the first line of the token file, or one the
//! node generates on first start.
//!
//! There is always a token: loopback is no boundary on a shared seedbox (any local user can
//! connect) nor against a web page in the operator's browser. A generated token is 32 random
//! bytes in hex, written with mode 0600 to `api-token` in the state directory, where
//! `ringseed ctl` run by the same user reads it.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::config::{ConfigError, Control, State, read_token_file};

/// The token the node requires. An explicit `token_file` must exist; the default one is
/// generated when missing. A token file every user may read is refused.
pub fn server_token(control: &Control, state: &State) -> Result<String, ConfigError> {
    if !control.token.is_empty() {
        return Ok(control.token.clone());
    }
    let path = control.token_path(state);
    let explicit = !control.token_file.is_empty();
    match std::fs::metadata(&path) {
        Ok(m) => {
            if m.mode() & 0o004 != 0 {
                return Err(ConfigError::OutOfRange {
                    key: "control.token_file",
                    value: format!("{} (mode {:o})", path.display(), m.mode() & 0o777),
                    allowed: "a file other users cannot read (chmod o-r)",
                });
            }
            read_token_file(&path)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => generate(&path),
        Err(source) => Err(ConfigError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Writes a new random token to `path` (mode 0600, created exclusively, synced with its
/// directory) and returns it.
fn generate(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    };
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(format!("{token}\n").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io)?;
    }
    tracing::info!("generated the control API token in {}", path.display());
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn state(dir: &Path) -> State {
        State {
            dir: dir.display().to_string(),
            ..State::default()
        }
    }

    #[test]
    fn generated_once_private_and_read_back_by_the_client() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let c = Control::default();
        assert_eq!(c.client_token(&st).unwrap(), None, "no file yet");
        let t = server_token(&c, &st).unwrap();
        assert_eq!(t.len(), 64);
        let path = dir.path().join(crate::config::TOKEN_FILE_NAME);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            server_token(&c, &st).unwrap(),
            t,
            "the same token on restart"
        );
        assert_eq!(c.client_token(&st).unwrap(), Some(t.clone()));
        // Made world-readable by mistake: refused, naming the file.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = server_token(&c, &st).unwrap_err().to_string();
        assert!(e.contains("api-token") && e.contains("644"), "{e}");
    }

    #[test]
    fn an_explicit_file_must_exist_and_a_configured_token_wins() {
        let dir = tempfile::tempdir().unwrap();
        let st = state(dir.path());
        let c = Control {
            token_file: dir.path().join("missing").display().to_string(),
            ..Control::default()
        };
        assert!(
            server_token(&c, &st)
                .unwrap_err()
                .to_string()
                .contains("missing")
        );
        assert!(!dir.path().join("missing").exists());
        let c = Control {
            token: "given".into(),
            ..c
        };
        assert_eq!(server_token(&c, &st).unwrap(), "given");
        assert_eq!(c.client_token(&st).unwrap(), Some("given".into()));
    }
}
