//! What an app may use: per-request limits, a concurrency cap and the permissions in its manifest.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Per-request resource limits of one app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory one request's instance may grow to, in bytes.
    pub memory_bytes: u64,
    /// Fuel (roughly one unit per WebAssembly instruction) one request may burn.
    pub fuel: u64,
    /// Wall-clock deadline of one request, from arrival to the last byte of its response.
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Requests of this app running at once; more are refused with 503.
    pub max_concurrency: u32,
    /// Largest request body accepted, in bytes (413 beyond).
    pub max_request_body: u64,
    /// Largest response body a guest may produce, in bytes (500 beyond).
    pub max_response_body: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            fuel: 2_000_000_000,
            timeout: Duration::from_secs(10),
            max_concurrency: 64,
            max_request_body: 8 << 20,
            max_response_body: 16 << 20,
        }
    }
}

impl Limits {
    /// The most memory the host lets any app ask for, in bytes.
    pub const MAX_MEMORY_BYTES: u64 = 4 << 30;

    /// Check the limits are usable; the message names the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_bytes < 1 << 20 || self.memory_bytes > Self::MAX_MEMORY_BYTES {
            return Err(format!(
                "memory must be between 1 MiB and {} MiB, got {} bytes",
                Self::MAX_MEMORY_BYTES >> 20,
                self.memory_bytes
            ));
        }
        if self.fuel == 0 {
            return Err("fuel must be greater than zero".into());
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            return Err("timeout must be between 1 ms and 1 hour".into());
        }
        if self.max_concurrency == 0 {
            return Err("max_concurrency must be at least 1".into());
        }
        Ok(())
    }
}

/// What an app may reach outside its sandbox. Everything is denied unless granted here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Permissions {
    /// Outgoing HTTP requests through `wasi:http/outgoing-handler`, to any destination (local
    /// manifests only: the control plane never grants it).
    pub outbound_http: bool,
    /// The origins outgoing HTTP requests may go to when `outbound_http` is off
    /// (`fog publish --allow-outbound`); every other destination is refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow_outbound: Vec<crate::Origin>,
    /// TCP and UDP sockets and name lookups through `wasi:sockets`.
    pub sockets: bool,
    /// A host directory the app may read, seen by the guest as `/`.
    pub read_dir: Option<std::path::PathBuf>,
}

/// How a host runs one app: its name, limits and permissions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The app's name: 1–63 characters of `a-z`, `0-9` and `-`, not starting or ending with `-`.
    pub name: String,
    /// Per-request limits.
    #[serde(default)]
    pub limits: Limits,
    /// What the app may reach outside its sandbox.
    #[serde(default)]
    pub permissions: Permissions,
    /// What `wasi:config/store` gives the app: its variables and (opened) secrets.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: crate::config::ConfigValues,
    /// Every request's key-value writes are on the host's disk before its response leaves
    /// (`fog run --durable`, `fog publish --durable`): what makes a write survive a crash of
    /// a host that has no follower to hold it. Off: writes reach the disk within the store's
    /// flush interval. Left out when off, so hosts that predate it read the manifest.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
}

impl Manifest {
    /// A manifest with default limits and no permissions.
    pub fn new(name: impl Into<String>) -> Self {
        Manifest {
            name: name.into(),
            limits: Limits::default(),
            permissions: Permissions::default(),
            config: Default::default(),
            durable: false,
        }
    }

    /// Check the name and limits; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        validate_app_name(&self.name)?;
        self.limits.validate()
    }
}

/// Check an app name: it becomes a DNS label (`<name>.localhost`) and a sled tree name.
pub fn validate_app_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if name.is_empty()
        || name.len() > 63
        || !ok_chars
        || name.starts_with('-')
        || name.ends_with('-')
    {
        return Err(format!(
            "app name {name:?} must be 1-63 characters of a-z, 0-9 and '-', not starting or ending with '-'"
        ));
    }
    Ok(())
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dns_label_rules() {
        for good in ["a", "hello", "my-app-2", &"x".repeat(63)] {
            assert!(validate_app_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Hello", "a_b", "a.b", &"x".repeat(64), "é"] {
            assert!(validate_app_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_checked() {
        assert!(Limits::default().validate().is_ok());
        let tiny = Limits {
            memory_bytes: 1000,
            ..Limits::default()
        };
        assert!(tiny.validate().unwrap_err().contains("memory"));
        let no_fuel = Limits {
            fuel: 0,
            ..Limits::default()
        };
        assert!(no_fuel.validate().unwrap_err().contains("fuel"));
    }
}
