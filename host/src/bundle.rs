//! Static-site bundles on a device: fetched from the control plane by sha256 (checked while it
//! streams to disk), then unpacked once per hash into the data directory as the read-only tree
//! Fog's fileserver guest serves: `site/<path>` holds `<sha256> <size>`, `objects/<sha256>` the
//! bytes (each file checked against its hash).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use fog_net::control_urls::{ControlUrls, Failover};
use fog_proto::bundle::{self, BundleError, HEADER_BYTES, MAX_BUNDLE_BYTES};
use sha2::{Digest, Sha256};

/// Why a bundle could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum BundleFetchError {
    /// The control plane could not be reached or refused.
    #[error("fetching bundle {sha256}: {reason}")]
    Fetch {
        /// The bundle.
        sha256: String,
        /// What went wrong.
        reason: String,
    },
    /// The bytes received are not the bundle asked for.
    #[error("bundle hash mismatch: expected {expected}, got {actual}")]
    Hash {
        /// The hash asked for.
        expected: String,
        /// The hash of what arrived.
        actual: String,
    },
    /// More bytes than any bundle may hold.
    #[error("bundle {0} is larger than {MAX_BUNDLE_BYTES} bytes")]
    TooLarge(String),
    /// The bundle's format is wrong.
    #[error("bundle {sha256}: {source}")]
    Format {
        /// The bundle.
        sha256: String,
        /// What is wrong.
        source: BundleError,
    },
    /// A file in the bundle is not what its manifest says.
    #[error("bundle {sha256}: content {content} does not match its hash")]
    Content {
        /// The bundle.
        sha256: String,
        /// The content's listed hash.
        content: String,
    },
    /// Reading or writing the local copy failed.
    #[error("bundle directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl Failover for BundleFetchError {
    /// Another control plane may serve what this one could not send (unreachable, timed out,
    /// refused); bytes that arrived wrong or a local disk failure are final.
    fn fail_over(&self) -> bool {
        matches!(self, BundleFetchError::Fetch { .. })
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleFetchError + '_ {
    move |source| BundleFetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory holding bundle `sha256` unpacked under `root`, fetching and unpacking it first
/// if this device has not yet.
pub async fn ensure(
    client: &reqwest::Client,
    control: &ControlUrls,
    root: &Path,
    sha256: &str,
) -> Result<PathBuf, BundleFetchError> {
    let bad_name = sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit());
    if bad_name {
        return Err(BundleFetchError::Hash {
            expected: "64 hex digits".into(),
            actual: sha256.chars().take(80).collect(),
        });
    }
    let dir = root.join(sha256);
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(root).map_err(io(root))?;
    let download = root.join(format!(".{sha256}.{}.download", std::process::id()));
    let result = async {
        control
            .try_each(|base| fetch(client, base, sha256, &download))
            .await?;
        let (download, dir, sha) = (download.clone(), dir.clone(), sha256.to_string());
        tokio::task::spawn_blocking(move || unpack(&download, &dir, &sha))
            .await
            .map_err(|e| BundleFetchError::Fetch {
                sha256: sha256.to_string(),
                reason: e.to_string(),
            })?
    }
    .await;
    let _ = std::fs::remove_file(&download);
    result.map(|()| dir)
}

/// What identifies the code and files an assignment runs: the component's sha256, and the
/// bundle's for a static site (a new bundle with the same fileserver is a new version).
pub fn version(assignment: &fog_proto::api::Assignment) -> String {
    match &assignment.bundle {
        Some(bundle) => format!("{}+{bundle}", assignment.sha256),
        None => assignment.sha256.clone(),
    }
}

/// The manifest to run an assignment with. The host alone decides which of its directories a
/// guest may read: the app's own unpacked bundle for a static site, none otherwise (whatever
/// the control plane sent).
pub async fn manifest(
    client: &reqwest::Client,
    control: &ControlUrls,
    runtime: &crate::Runtime,
    assignment: &fog_proto::api::Assignment,
) -> Result<fog_proto::Manifest, BundleFetchError> {
    let mut manifest = assignment.manifest.clone();
    manifest.permissions.read_dir = match &assignment.bundle {
        Some(sha256) => Some(ensure(client, control, &runtime.sites_dir(), sha256).await?),
        None => None,
    };
    Ok(manifest)
}

/// Stream the bundle into `path`, checking its size and hash on the way.
async fn fetch(
    client: &reqwest::Client,
    control: String,
    sha256: &str,
    path: &Path,
) -> Result<(), BundleFetchError> {
    let failed = |reason: String| BundleFetchError::Fetch {
        sha256: sha256.to_string(),
        reason,
    };
    let url = format!("{control}/v1/blobs/{sha256}");
    let mut response = client
        .get(&url)
        .timeout(std::time::Duration::from_secs(600))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| failed(e.to_string()))?;
    let mut file = std::fs::File::create(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
        total += chunk.len() as u64;
        if total > MAX_BUNDLE_BYTES + bundle::MAX_MANIFEST_BYTES + HEADER_BYTES as u64 {
            return Err(BundleFetchError::TooLarge(sha256.to_string()));
        }
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io(path))?;
    }
    file.sync_all().map_err(io(path))?;
    let actual = hex::encode(hasher.finalize());
    if actual != sha256 {
        return Err(BundleFetchError::Hash {
            expected: sha256.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Unpack the checked bundle file `from` into `dir` (through a temporary directory renamed at
/// the end, so a half-unpacked bundle is never served).
fn unpack(from: &Path, dir: &Path, sha256: &str) -> Result<(), BundleFetchError> {
    let format = |source| BundleFetchError::Format {
        sha256: sha256.to_string(),
        source,
    };
    let mut input = std::io::BufReader::new(std::fs::File::open(from).map_err(io(from))?);
    let mut header = [0u8; HEADER_BYTES];
    input
        .read_exact(&mut header)
        .map_err(|_| format(BundleError::Truncated))?;
    let len = bundle::manifest_len(&header).map_err(format)?;
    let mut json = vec![0u8; len as usize];
    input
        .read_exact(&mut json)
        .map_err(|_| format(BundleError::Truncated))?;
    let manifest: bundle::BundleManifest =
        serde_json::from_slice(&json).map_err(|e| format(BundleError::Malformed(e.to_string())))?;
    let contents = manifest.check().map_err(format)?;

    let temp = dir.with_extension(format!("unpacking.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temp);
    let objects = temp.join("objects");
    std::fs::create_dir_all(&objects).map_err(io(&objects))?;
    let result = (|| {
        for (content, size) in &contents {
            let path = objects.join(content);
            let mut out = std::fs::File::create(&path).map_err(io(&path))?;
            let mut hashing = HashingWriter {
                inner: &mut out,
                hasher: Sha256::new(),
            };
            let copied =
                std::io::copy(&mut (&mut input).take(*size), &mut hashing).map_err(io(&path))?;
            if copied != *size {
                return Err(format(BundleError::Truncated));
            }
            if hex::encode(hashing.hasher.finalize()) != *content {
                return Err(BundleFetchError::Content {
                    sha256: sha256.to_string(),
                    content: content.clone(),
                });
            }
        }
        for file in &manifest.files {
            let path = temp.join("site").join(&file.path);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&path, format!("{} {}\n", file.sha256, file.size)).map_err(io(&path))?;
        }
        match std::fs::rename(&temp, dir) {
            Ok(()) => Ok(()),
            // Another task unpacked the same bundle first: the same bytes, keep theirs.
            Err(_) if dir.is_dir() => Ok(()),
            Err(source) => Err(BundleFetchError::Io {
                path: dir.to_path_buf(),
                source,
            }),
        }
    })();
    let _ = std::fs::remove_dir_all(&temp);
    result
}

struct HashingWriter<'a, W> {
    inner: &'a mut W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fog_proto::bundle::{BundleFile, BundleManifest};

    fn bundle_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let manifest = BundleManifest {
            files: files
                .iter()
                .map(|(path, content)| BundleFile {
                    path: path.to_string(),
                    size: content.len() as u64,
                    sha256: fog_proto::auth::sha256_hex(content),
                })
                .collect(),
        };
        let mut out = bundle::header(&manifest);
        let mut seen = std::collections::HashSet::new();
        for (_, content) in files {
            if seen.insert(fog_proto::auth::sha256_hex(content)) {
                out.extend_from_slice(content);
            }
        }
        out
    }

    #[test]
    fn unpacking_writes_pointers_and_objects() {
        let temp = tempfile::tempdir().unwrap();
        let bytes = bundle_of(&[("index.html", b"<h1>hi</h1>"), ("a/b.txt", b"b")]);
        let file = temp.path().join("bundle");
        std::fs::write(&file, &bytes).unwrap();
        let dir = temp.path().join("out");
        unpack(&file, &dir, "x").unwrap();
        let sha = fog_proto::auth::sha256_hex(b"b");
        assert_eq!(
            std::fs::read_to_string(dir.join("site/a/b.txt")).unwrap(),
            format!("{sha} 1\n")
        );
        assert_eq!(std::fs::read(dir.join("objects").join(&sha)).unwrap(), b"b");
    }

    #[test]
    fn a_content_that_does_not_match_its_hash_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let mut bytes = bundle_of(&[("index.html", b"<h1>hi</h1>")]);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let file = temp.path().join("bundle");
        std::fs::write(&file, &bytes).unwrap();
        let err = unpack(&file, &temp.path().join("out"), "x").unwrap_err();
        assert!(matches!(err, BundleFetchError::Content { .. }), "{err}");
        assert!(!temp.path().join("out").exists());
    }
}
