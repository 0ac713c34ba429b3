//! The control plane's registry: apps, devices, placements and component blobs, behind a small
//! store trait so a distributed store can replace sled later. Every record is written with a
//! leading format version and read back only if the version is known.

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use fog_proto::Limits;
use fog_proto::api::Tier;

/// The tables of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// App records by name.
    Apps,
    /// Device records by id.
    Devices,
    /// Placements by app name.
    Placements,
    /// Component bytes by sha256.
    Blobs,
    /// Verified ledger periods by `device/start_ms`.
    Ledger,
    /// The control plane's own secrets (the master key app keys are derived from).
    Secrets,
    /// The latest state snapshot of each app (tier B), by app name.
    Snapshots,
    /// Autoscaling settings, by app name.
    Scaling,
    /// The site bundle (sha256 in `Blobs`) a static site serves, by app name.
    Sites,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Apps => "apps",
            Table::Devices => "devices",
            Table::Placements => "placements",
            Table::Blobs => "blobs",
            Table::Ledger => "ledger",
            Table::Secrets => "secrets",
            Table::Snapshots => "snapshots",
            Table::Scaling => "scaling",
            Table::Sites => "sites",
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("store backend: {0}")]
    Backend(String),
    /// A record could not be decoded.
    #[error("record {key:?} in {table}: {reason}")]
    Decode {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// A key-value store with tables.
pub trait Store: Send + Sync {
    /// The value under `key`.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Write `value` under `key`.
    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Remove `key`.
    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError>;
    /// Every (key, value), in key order.
    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Make every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
}

/// The embedded default: sled.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    /// Open (or create) the store in `path`.
    pub fn open(path: &std::path::Path) -> Result<SledStore, StoreError> {
        let db = sled::open(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Ok(SledStore { db })
    }

    /// A store that lives in memory and temporary files.
    pub fn temporary() -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(SledStore { db })
    }

    fn tree(&self, table: Table) -> Result<sled::Tree, StoreError> {
        self.db
            .open_tree(table.name())
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

impl Store for SledStore {
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(table)?
            .get(key)
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .map(|v| v.to_vec()))
    }

    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tree(table)?
            .insert(key, value)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(())
    }

    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        self.tree(table)?
            .remove(key)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(())
    }

    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.tree(table)?
            .iter()
            .map(|entry| {
                let (k, v) = entry.map_err(|e| StoreError::Backend(e.to_string()))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| StoreError::Backend(e.to_string()))
    }
}

/// Format version of every record below.
pub const FORMAT: u8 = 1;

/// Encode a record with its format version.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![FORMAT];
    out.extend(
        bincode::serde::encode_to_vec(record, bincode::config::standard())
            .expect("records always encode"),
    );
    out
}

/// Decode a record written by [`encode`].
pub fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    let error = |reason: String| StoreError::Decode {
        table: table.name(),
        key: key.to_string(),
        reason,
    };
    match bytes.first() {
        Some(&FORMAT) => {
            bincode::serde::decode_from_slice(&bytes[1..], bincode::config::standard())
                .map(|(record, _)| record)
                .map_err(|e| error(e.to_string()))
        }
        Some(other) => Err(error(format!("unknown format version {other}"))),
        None => Err(error("empty record".into())),
    }
}

/// A published app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    /// Name.
    pub name: String,
    /// Owner's public key (hex).
    pub owner: String,
    /// Publishes so far.
    pub version: u32,
    /// Component sha256.
    pub sha256: String,
    /// Component size, bytes.
    pub size: u64,
    /// Tier.
    pub tier: Tier,
    /// Replicas wanted.
    pub replicas: u32,
    /// Limits.
    pub limits: Limits,
    /// Unix ms of the last publish.
    pub updated_ms: u64,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Id (from its key).
    pub id: String,
    /// Public key (hex).
    pub public_key: String,
    /// Data-plane address.
    pub addr: String,
    /// Region.
    pub region: String,
    /// CPU cores offered.
    pub cpu: f64,
    /// Memory offered, MiB.
    pub mem_mb: f64,
    /// Disk offered, MiB.
    pub disk_mb: f64,
    /// Asking price per CPU-hour.
    pub price_cpu_hour: f64,
    /// Unix ms of registration.
    pub registered_ms: u64,
}

/// Where an app's replicas should run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacementRecord {
    /// Device ids.
    pub devices: Vec<String>,
    /// Why it is not fully placed, if so.
    pub problem: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_unknown_versions_are_refused() {
        let store = SledStore::temporary().unwrap();
        let record = PlacementRecord {
            devices: vec!["a".into()],
            problem: None,
        };
        store.put(Table::Placements, "x", &encode(&record)).unwrap();
        let bytes = store.get(Table::Placements, "x").unwrap().unwrap();
        assert_eq!(bytes[0], FORMAT);
        assert_eq!(
            decode::<PlacementRecord>(Table::Placements, "x", &bytes).unwrap(),
            record
        );
        let mut future = bytes.clone();
        future[0] = 99;
        let err = decode::<PlacementRecord>(Table::Placements, "x", &future).unwrap_err();
        assert!(err.to_string().contains("unknown format version 99"));
        assert_eq!(store.list(Table::Placements).unwrap().len(), 1);
        store.delete(Table::Placements, "x").unwrap();
        assert!(store.get(Table::Placements, "x").unwrap().is_none());
    }
}
