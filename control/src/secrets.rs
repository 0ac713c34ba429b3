//! App secrets at rest: sealed with XChaCha20-Poly1305 under a key kept in a file beside the
//! registry (never in it), opened only to build the assignments of hosts that run the app.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Bytes of the random nonce in front of every sealed secret.
const NONCE_BYTES: usize = 24;

/// Why a secret could not be sealed or opened. Messages never carry a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file could not be read or created.
    #[error("secrets key {}: {reason}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A sealed value did not open: another key sealed it, or it was tampered with.
    #[error("secret {key:?} of app {app:?} does not open with this control plane's secrets key")]
    Open {
        /// The app.
        app: String,
        /// The secret's name.
        key: String,
    },
}

/// The key that seals app secrets, loaded (or created, 0600) on first use.
pub(crate) struct SecretsKey {
    /// Where the key lives; `None`: a key made for this process only (tests, embedded use).
    path: Option<PathBuf>,
    cipher: OnceLock<XChaCha20Poly1305>,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretsKey {
    pub(crate) fn new(path: Option<PathBuf>) -> SecretsKey {
        SecretsKey {
            path,
            cipher: OnceLock::new(),
        }
    }

    fn cipher(&self) -> Result<&XChaCha20Poly1305, SecretsError> {
        if let Some(cipher) = self.cipher.get() {
            return Ok(cipher);
        }
        let key = match &self.path {
            Some(path) => load_or_create(path)?,
            None => random_key(),
        };
        Ok(self
            .cipher
            .get_or_init(|| XChaCha20Poly1305::new((&key).into())))
    }

    /// Seal `value`, bound to its app and name (a sealed value copied to another app or key
    /// does not open).
    pub(crate) fn seal(&self, app: &str, key: &str, value: &str) -> Result<Vec<u8>, SecretsError> {
        let cipher = self.cipher()?;
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random source");
        let aad = associated(app, key);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("sealing a small value cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Open what [`SecretsKey::seal`] sealed for `app` and `key`.
    pub(crate) fn open(&self, app: &str, key: &str, sealed: &[u8]) -> Result<String, SecretsError> {
        let failed = || SecretsError::Open {
            app: app.to_string(),
            key: key.to_string(),
        };
        let cipher = self.cipher()?;
        if sealed.len() < NONCE_BYTES {
            return Err(failed());
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        let aad = associated(app, key);
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| failed())?;
        String::from_utf8(plain).map_err(|_| failed())
    }
}

fn associated(app: &str, key: &str) -> Vec<u8> {
    format!("fog-secret-v1\0{app}\0{key}").into_bytes()
}

fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the OS random source");
    key
}

/// Read the key (64 hex digits) from `path`, or create it there readable by its owner only.
fn load_or_create(path: &Path) -> Result<[u8; 32], SecretsError> {
    let failed = |reason: String| SecretsError::Key {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|_| failed("not 64 hex digits".into()))?;
            bytes
                .try_into()
                .map_err(|_| failed("not 64 hex digits".into()))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            let key = random_key();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
            }
            // create_new: two control planes starting at once never overwrite each other's key.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| failed(e.to_string()))?;
            file.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| failed(e.to_string()))?;
            tracing::info!(path = %path.display(), "created the secrets key");
            Ok(key)
        }
        Err(err) => Err(failed(err.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_for_their_app_and_name_under_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let key = SecretsKey::new(Some(path.clone()));
        let sealed = key.seal("app", "TOKEN", "hunter2").unwrap();
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(key.open("app", "TOKEN", &sealed).unwrap(), "hunter2");
        assert!(key.open("other", "TOKEN", &sealed).is_err());
        assert!(key.open("app", "OTHER", &sealed).is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another control plane given the same file opens it; one with its own key does not.
        let same = SecretsKey::new(Some(path));
        assert_eq!(same.open("app", "TOKEN", &sealed).unwrap(), "hunter2");
        let other = SecretsKey::new(Some(dir.path().join("other.key")));
        assert!(other.open("app", "TOKEN", &sealed).is_err());
    }
}
