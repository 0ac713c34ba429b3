//! Site bundles: the files of a static site in one content-addressed blob (`fog publish DIR`).
//!
//! Layout of a bundle, all integers big-endian:
//!
//! ```text
//! MAGIC (8 bytes) | manifest length (u64) | manifest (JSON, a [`BundleManifest`])
//! | the bytes of each distinct file content, in the order the manifest first names it
//! ```
//!
//! The manifest lists every file with its size and sha256; identical files are stored once. A
//! bundle is named by the sha256 of all its bytes, like a component. This module only describes
//! and checks the format: the CLI packs bundles, the host unpacks them.

use serde::{Deserialize, Serialize};

/// The first bytes of every bundle.
pub const MAGIC: &[u8; 8] = b"FOGSITE1";
/// Largest bundle the control plane accepts (and the CLI packs), in bytes.
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// Largest manifest, in bytes.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;
/// Most files one bundle may hold.
pub const MAX_FILES: usize = 100_000;
/// Longest path of a file in a bundle, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// What a bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    /// Every file, sorted by path.
    pub files: Vec<BundleFile>,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    /// Relative path with `/` separators, e.g. `docs/index.html`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the contents, hex.
    pub sha256: String,
}

/// Why a bundle's manifest is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// It does not start with [`MAGIC`].
    #[error("not a Fog site bundle (bad magic)")]
    Magic,
    /// Too small to hold a header.
    #[error("bundle truncated")]
    Truncated,
    /// The manifest is larger than [`MAX_MANIFEST_BYTES`].
    #[error("bundle manifest of {0} bytes is over the limit of {MAX_MANIFEST_BYTES}")]
    ManifestTooLarge(u64),
    /// The manifest is not valid JSON of the expected shape.
    #[error("bundle manifest is malformed: {0}")]
    Malformed(String),
    /// No files at all.
    #[error("the bundle has no files")]
    Empty,
    /// More than [`MAX_FILES`].
    #[error("the bundle has {0} files, more than the limit of {MAX_FILES}")]
    TooManyFiles(usize),
    /// A path that could escape the site's directory or is not plain.
    #[error("bad path {path:?} in bundle: {reason}")]
    BadPath {
        /// The path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The same path twice.
    #[error("path {0:?} appears twice in the bundle")]
    Duplicate(String),
    /// A hash that is not 64 lowercase hex digits.
    #[error("bad sha256 {0:?} in bundle")]
    BadHash(String),
    /// One content hash listed with two sizes.
    #[error("content {0} listed with two sizes")]
    SizeMismatch(String),
    /// The sizes add up to more than the bundle may hold.
    #[error("the bundle holds {0} bytes, over the limit of {MAX_BUNDLE_BYTES}")]
    TooLarge(u64),
}

/// Check one path: relative, `/`-separated, no empty, `.` or `..` parts, no backslash or NUL.
pub fn check_path(path: &str) -> Result<(), BundleError> {
    let bad = |reason| {
        Err(BundleError::BadPath {
            path: path.chars().take(200).collect(),
            reason,
        })
    };
    if path.is_empty() || path.len() > MAX_PATH_BYTES {
        return bad("empty or too long");
    }
    if path.contains(['\\', '\0']) {
        return bad("contains a backslash or NUL");
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return bad("must be relative, with no empty, '.' or '..' parts");
    }
    Ok(())
}

impl BundleManifest {
    /// Check the manifest; returns the distinct contents (sha256, size) in storage order and the
    /// total size of the bundle's body.
    pub fn check(&self) -> Result<Vec<(String, u64)>, BundleError> {
        if self.files.is_empty() {
            return Err(BundleError::Empty);
        }
        if self.files.len() > MAX_FILES {
            return Err(BundleError::TooManyFiles(self.files.len()));
        }
        let mut paths = std::collections::HashSet::new();
        let mut sizes = std::collections::HashMap::new();
        let mut order = Vec::new();
        let mut total = 0u64;
        for file in &self.files {
            check_path(&file.path)?;
            if !paths.insert(file.path.as_str()) {
                return Err(BundleError::Duplicate(file.path.clone()));
            }
            let hex_ok = file.sha256.len() == 64
                && file
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                return Err(BundleError::BadHash(file.sha256.chars().take(80).collect()));
            }
            match sizes.insert(file.sha256.as_str(), file.size) {
                Some(size) if size != file.size => {
                    return Err(BundleError::SizeMismatch(file.sha256.clone()));
                }
                Some(_) => {}
                None => {
                    total = total.saturating_add(file.size);
                    if total > MAX_BUNDLE_BYTES {
                        return Err(BundleError::TooLarge(total));
                    }
                    order.push((file.sha256.clone(), file.size));
                }
            }
        }
        Ok(order)
    }
}

/// Bytes of the header before the manifest.
pub const HEADER_BYTES: usize = 16;

/// Read the header: the manifest's length.
pub fn manifest_len(header: &[u8]) -> Result<u64, BundleError> {
    if header.len() < HEADER_BYTES {
        return Err(BundleError::Truncated);
    }
    if &header[..8] != MAGIC {
        return Err(BundleError::Magic);
    }
    let len = u64::from_be_bytes(header[8..16].try_into().expect("8 bytes"));
    if len > MAX_MANIFEST_BYTES {
        return Err(BundleError::ManifestTooLarge(len));
    }
    Ok(len)
}

/// Parse and check the manifest at the start of `bundle`, and check the bundle's length against
/// it. Returns the manifest and the offset where contents start.
pub fn parse(bundle: &[u8]) -> Result<(BundleManifest, usize), BundleError> {
    let len = manifest_len(bundle)? as usize;
    let end = HEADER_BYTES + len;
    let json = bundle
        .get(HEADER_BYTES..end)
        .ok_or(BundleError::Truncated)?;
    let manifest: BundleManifest =
        serde_json::from_slice(json).map_err(|e| BundleError::Malformed(e.to_string()))?;
    let contents = manifest.check()?;
    let body: u64 = contents.iter().map(|(_, size)| size).sum();
    if (bundle.len() - end) as u64 != body {
        return Err(BundleError::Truncated);
    }
    Ok((manifest, end))
}

/// The header and manifest of a bundle holding `manifest`.
pub fn header(manifest: &BundleManifest) -> Vec<u8> {
    let json = serde_json::to_vec(manifest).expect("manifests always serialise");
    let mut out = Vec::with_capacity(HEADER_BYTES + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, content: &[u8]) -> BundleFile {
        BundleFile {
            path: path.into(),
            size: content.len() as u64,
            sha256: crate::auth::sha256_hex(content),
        }
    }

    #[test]
    fn a_bundle_round_trips_and_stores_identical_files_once() {
        let manifest = BundleManifest {
            files: vec![file("a.txt", b"same"), file("b/c.txt", b"same")],
        };
        let mut bundle = header(&manifest);
        bundle.extend_from_slice(b"same");
        let (parsed, offset) = parse(&bundle).unwrap();
        assert_eq!(parsed, manifest);
        assert_eq!(&bundle[offset..], b"same");
        bundle.push(0);
        assert_eq!(parse(&bundle).unwrap_err(), BundleError::Truncated);
    }

    #[test]
    fn paths_that_could_escape_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a//b",
            "./a",
            "a\\b",
            "a/",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in ["index.html", "docs/a b.html", ".well-known/x"] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn an_empty_manifest_is_refused() {
        assert_eq!(
            BundleManifest { files: vec![] }.check().unwrap_err(),
            BundleError::Empty
        );
    }
}
