//! An app's config as `wasi:config/store` gives it: variables and secrets by name, the values
//! kept in a type that never prints them, and the requests `fog config` makes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most variables and secrets one app may have, together.
pub const MAX_CONFIG_ENTRIES: usize = 64;
/// Longest variable or secret value, bytes.
pub const MAX_CONFIG_VALUE: usize = 16 << 10;
/// Longest variable or secret name, bytes.
pub const MAX_CONFIG_KEY: usize = 128;

/// A config value that must not be printed: `Debug` shows `Secret(..)`, and there is no
/// `Display`; [`Secret::expose`] is the one way to the text.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself: only for handing it to the guest or sealing it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a guest reads through `wasi:config/store`: variables and secrets merged, by name.
pub type ConfigValues = BTreeMap<String, Secret>;

/// Check a variable's or secret's name: 1–128 characters of `A-Z a-z 0-9 _ . -`.
pub fn validate_key(key: &str) -> Result<(), String> {
    let ok = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if key.is_empty() || key.len() > MAX_CONFIG_KEY || !ok {
        return Err(format!(
            "config name {key:?} must be 1-{MAX_CONFIG_KEY} characters of A-Z, a-z, 0-9, '_', '.' and '-'"
        ));
    }
    Ok(())
}

/// Check a value's size; the message names the key, never the value.
pub fn validate_value(key: &str, value: &str) -> Result<(), String> {
    if value.len() > MAX_CONFIG_VALUE {
        return Err(format!(
            "the value of {key:?} is {} bytes, more than the limit of {MAX_CONFIG_VALUE}",
            value.len()
        ));
    }
    Ok(())
}

/// Check variables and secrets given together (at publish): names, sizes, count, and no name
/// that is both.
pub fn validate(
    vars: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, Secret>,
) -> Result<(), String> {
    for (key, value) in vars {
        validate_key(key)?;
        validate_value(key, value)?;
    }
    for (key, value) in secrets {
        validate_key(key)?;
        validate_value(key, value.expose())?;
        if vars.contains_key(key) {
            return Err(format!("{key:?} is given both as a variable and a secret"));
        }
    }
    if vars.len() + secrets.len() > MAX_CONFIG_ENTRIES {
        return Err(format!(
            "at most {MAX_CONFIG_ENTRIES} variables and secrets, got {}",
            vars.len() + secrets.len()
        ));
    }
    Ok(())
}

/// One change to an app's config (`POST /v1/apps/{name}/config`, signed by the owner). It
/// reaches running replicas without a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ConfigChange {
    /// Set a variable (replacing a secret of that name).
    Set {
        /// Its name.
        key: String,
        /// Its value.
        value: String,
    },
    /// Set a secret (replacing a variable of that name).
    SetSecret {
        /// Its name.
        key: String,
        /// Its value.
        value: Secret,
    },
    /// Remove a variable or secret (404 if there is none of that name).
    Unset {
        /// Its name.
        key: String,
    },
}

impl ConfigChange {
    /// The name the change is about.
    pub fn key(&self) -> &str {
        match self {
            ConfigChange::Set { key, .. }
            | ConfigChange::SetSecret { key, .. }
            | ConfigChange::Unset { key } => key,
        }
    }

    /// Check the name and the value's size.
    pub fn validate(&self) -> Result<(), String> {
        validate_key(self.key())?;
        match self {
            ConfigChange::Set { key, value } => validate_value(key, value),
            ConfigChange::SetSecret { key, value } => validate_value(key, value.expose()),
            ConfigChange::Unset { .. } => Ok(()),
        }
    }
}

/// An app's config as its owner sees it (`GET /v1/apps/{name}/config`, signed): the values of
/// its variables, only the names of its secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigListing {
    /// Variables, by name.
    pub vars: BTreeMap<String, String>,
    /// Names of secrets.
    pub secrets: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let change = ConfigChange::SetSecret {
            key: "TOKEN".into(),
            value: Secret::new("hunter2"),
        };
        assert!(!format!("{change:?}").contains("hunter2"));
        let json = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<ConfigChange>(&json).unwrap(), change);
    }

    #[test]
    fn names_and_sizes_are_checked() {
        assert!(validate_key("API_TOKEN.v2-x").is_ok());
        for bad in ["", "a b", "é", "a=b", &"k".repeat(129)] {
            assert!(validate_key(bad).is_err(), "{bad:?}");
        }
        let big = "x".repeat(MAX_CONFIG_VALUE + 1);
        let err = validate_value("K", &big).unwrap_err();
        assert!(!err.contains(&big[..32]));
        let vars = BTreeMap::from([("K".to_string(), "v".to_string())]);
        let secrets = BTreeMap::from([("K".to_string(), Secret::new("s"))]);
        assert!(validate(&vars, &secrets).unwrap_err().contains("both"));
    }
}
