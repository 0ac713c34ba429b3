//! Packing a directory into a site bundle (`fog publish DIR`): every file with its size and
//! sha256 in a manifest, identical files stored once. Everything is checked before a byte is
//! uploaded: the path is a directory, it holds files, the total fits the limit.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use fog_proto::bundle::{self, BundleFile, BundleManifest, MAX_BUNDLE_BYTES, MAX_FILES};
use sha2::{Digest, Sha256};

/// Directory names never published (version control).
const SKIPPED: &[&str] = &[".git", ".hg", ".svn"];

/// A directory packed as a bundle.
#[derive(Debug)]
pub struct Packed {
    /// The bundle's bytes.
    pub bytes: Vec<u8>,
    /// How many files it holds.
    pub files: usize,
}

/// Pack `dir`; a clear error (naming the file at fault) if it is not a directory, holds no
/// files or more than [`MAX_BUNDLE_BYTES`].
pub fn pack(dir: &Path) -> anyhow::Result<Packed> {
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let mut found = Vec::new();
    walk(dir, dir, 0, &mut found)?;
    if found.is_empty() {
        bail!(
            "{} holds no files: nothing to publish (a site needs at least an index.html)",
            dir.display()
        );
    }
    if found.len() > MAX_FILES {
        bail!(
            "{} holds {} files, more than the limit of {MAX_FILES}",
            dir.display(),
            found.len()
        );
    }
    let mut total = 0u64;
    for (rel, _, size) in &found {
        if *size > MAX_BUNDLE_BYTES {
            bail!(
                "{rel} is {} MiB, over the site size limit of {} MiB",
                size >> 20,
                MAX_BUNDLE_BYTES >> 20
            );
        }
        total += size;
    }
    if total > MAX_BUNDLE_BYTES {
        bail!(
            "{} holds {} MiB, over the site size limit of {} MiB",
            dir.display(),
            total >> 20,
            MAX_BUNDLE_BYTES >> 20
        );
    }
    found.sort();
    let mut files = Vec::with_capacity(found.len());
    for (rel, path, _) in &found {
        let (sha256, size) = hash_file(path)?;
        files.push(BundleFile {
            path: rel.clone(),
            size,
            sha256,
        });
    }
    let manifest = BundleManifest { files };
    manifest.check().map_err(anyhow::Error::msg)?;
    let mut bytes = bundle::header(&manifest);
    bytes.reserve(total as usize);
    let mut stored = HashSet::new();
    for (file, (_, path, _)) in manifest.files.iter().zip(&found) {
        if stored.insert(file.sha256.clone()) {
            let before = bytes.len();
            std::fs::File::open(path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .with_context(|| format!("cannot read {}", path.display()))?;
            if (bytes.len() - before) as u64 != file.size {
                bail!("{} changed while it was being packed", path.display());
            }
        }
    }
    Ok(Packed {
        bytes,
        files: manifest.files.len(),
    })
}

/// Every regular file under `dir` as (path relative to `root` with `/`, path, size).
fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<(String, PathBuf, u64)>,
) -> anyhow::Result<()> {
    if depth > 64 {
        bail!("{} is nested too deeply (a symlink loop?)", dir.display());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if SKIPPED.contains(&name) {
            continue;
        }
        let meta =
            std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let rel = path
            .strip_prefix(root)
            .expect("walked below the root")
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 path", path.display()))?
            .replace(std::path::MAIN_SEPARATOR, "/");
        if meta.is_dir() {
            walk(root, &path, depth + 1, out)?;
        } else if meta.is_file() {
            bundle::check_path(&rel).map_err(anyhow::Error::msg)?;
            out.push((rel, path, meta.len()));
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_packs_into_a_bundle_the_host_can_read() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(temp.path().join("docs")).unwrap();
        std::fs::write(temp.path().join("index.html"), "same").unwrap();
        std::fs::write(temp.path().join("docs/index.html"), "same").unwrap();
        std::fs::create_dir_all(temp.path().join(".git")).unwrap();
        std::fs::write(temp.path().join(".git/HEAD"), "x").unwrap();
        let packed = pack(temp.path()).unwrap();
        let (manifest, offset) = bundle::parse(&packed.bytes).unwrap();
        let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["docs/index.html", "index.html"]);
        assert_eq!(&packed.bytes[offset..], b"same");
    }
}
