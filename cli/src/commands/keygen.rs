//! `fog keygen`: make the developer's ed25519 key (mode 0600) that signs publish, scale and rm.

use std::path::PathBuf;

use anyhow::{Context, bail};
use fog_proto::auth::Identity;

use crate::client::default_key_path;

/// Make your developer key (ed25519), used to sign publish, scale and rm.
#[derive(Debug, clap::Args)]
pub struct Keygen {
    /// Where to write the key (default: ~/.config/fog/key).
    #[arg(long, env = "FOG_KEY", value_name = "FILE")]
    key: Option<PathBuf>,
    /// Replace an existing key (apps it owns can then no longer be changed).
    #[arg(long)]
    force: bool,
}

impl Keygen {
    pub fn execute(self) -> anyhow::Result<()> {
        let path = self.key.unwrap_or_else(default_key_path);
        let identity = make_key(&path, self.force)?;
        println!("key written to {}", path.display());
        println!("public key: {}", identity.public_hex());
        Ok(())
    }
}

/// Write a new key to `path` (0600), refusing to replace one unless `force`.
pub fn make_key(path: &std::path::Path, force: bool) -> anyhow::Result<Identity> {
    if path.exists() {
        if !force {
            bail!(
                "{} already exists (use --force to replace it)",
                path.display()
            );
        }
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let identity = Identity::generate();
    fog_host::agent::write_private(path, &identity.to_text())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(identity)
}
