//! The control plane's registry: apps, devices, placements and component blobs, behind a small
//! store trait with two backends: sled, embedded (the default, what `fog up` uses), and etcd
//! ([`etcd::EtcdStore`]) for several control planes sharing one registry. Every record is written
//! with a leading format version and read back only if the version is known; read-modify-write
//! goes through [`Store::get_versioned`] and [`Store::put_if`], so two control planes on one etcd
//! never lose each other's updates.

pub mod etcd;

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
    /// What each app's developer bids ([`AppTerms`]), by app name.
    Terms,
    /// The behaviour each device earned its trust with ([`crate::trust::Evidence`]), by
    /// device id.
    Trust,
    /// Moves asked for with `fog move` and not started yet: the target device id, by app
    /// name. In the store, so a move asked of any control plane reaches the leader.
    Moves,
    /// Request lines for `fog logs`, by `app/id` (the last 1,000 of each app).
    Logs,
    /// What each app may reach and is given beyond its code ([`AppSettings`]), by app name.
    Settings,
    /// Handovers in flight ([`crate::replicas::HandoverRecord`]), by app name: written by the
    /// leader before each step takes effect, so the next leader resumes them.
    Handovers,
    /// Apps parked at zero replicas, or spot apps parked to make room for higher bids: the
    /// devices that last ran them and hold their state (`Vec<String>`), by app name.
    Parked,
    /// New primaries that must restore the snapshot first: the device id, by app name.
    Restores,
    /// Each app's recent events ([`crate::soft::EventsRecord`]), by app name.
    Events,
    /// Device and relay keys admitted to the fog ([`crate::admission::AdmissionRecord`]), by
    /// public key (hex): only these are given work or listed. In the store, so every control
    /// plane sharing it agrees.
    Admitted,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 19] = [
        Table::Apps,
        Table::Devices,
        Table::Placements,
        Table::Blobs,
        Table::Ledger,
        Table::Secrets,
        Table::Snapshots,
        Table::Scaling,
        Table::Sites,
        Table::Terms,
        Table::Trust,
        Table::Moves,
        Table::Logs,
        Table::Settings,
        Table::Handovers,
        Table::Parked,
        Table::Restores,
        Table::Events,
        Table::Admitted,
    ];

    /// The table's position in [`Table::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Tables whose values can be large (components up to 64 MiB, tier-B snapshots up to
    /// 256 MiB) or many (request logs, a write per request): a distributed store keeps them on
    /// the control plane's own disk, since etcd refuses requests over 1.5 MiB and is no place
    /// for a write per request.
    pub fn is_bulk(self) -> bool {
        matches!(self, Table::Blobs | Table::Snapshots | Table::Logs)
    }

    /// The table's name (also its key prefix in etcd and its sled tree).
    pub fn name(self) -> &'static str {
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
            Table::Terms => "terms",
            Table::Trust => "trust",
            Table::Moves => "moves",
            Table::Logs => "logs",
            Table::Settings => "settings",
            Table::Handovers => "handovers",
            Table::Parked => "parked",
            Table::Restores => "restores",
            Table::Events => "events",
            Table::Admitted => "admitted",
        }
    }
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed.
    #[error("store backend: {0}")]
    Backend(String),
    /// The distributed store could not be reached.
    #[error("etcd at {} is unreachable: {reason}", endpoints.join(", "))]
    Unreachable {
        /// The endpoints tried.
        endpoints: Vec<String>,
        /// What failed.
        reason: String,
    },
    /// A conditional write found the record changed since it was read (see
    /// [`Store::put_if`]): read it again and retry.
    #[error("record {key:?} in {table} changed since it was read")]
    Conflict {
        /// The table.
        table: &'static str,
        /// The key.
        key: String,
    },
    /// The store's location is malformed (e.g. a bad `etcd://` URL).
    #[error("bad store location {given:?}: {reason}")]
    BadLocation {
        /// What was given.
        given: String,
        /// What is wrong.
        reason: String,
    },
    /// A write made as the leader (see [`as_leader`]) found that this control plane is no
    /// longer the leader: another was elected meanwhile, and the write was not made.
    #[error("this control plane is no longer the leader; the write was not made")]
    Deposed,
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

/// Which version of a record a read saw; [`Store::put_if`] writes only while the record is still
/// at it. Opaque: etcd compares the key's modification revision, sled the bytes themselves (so a
/// record changed and changed back compares equal, which is harmless: the write was computed
/// from the same content).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision(RevisionKind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum RevisionKind {
    /// No record.
    Absent,
    /// etcd's `mod_revision` of the key.
    Etcd(i64),
    /// The record's bytes (sled's compare-and-swap compares values).
    Bytes(Vec<u8>),
}

impl Revision {
    /// The revision of a key that holds no record: `put_if` with it creates the record only if
    /// nobody else has.
    pub fn absent() -> Revision {
        Revision(RevisionKind::Absent)
    }
}

/// A record as read, with the revision to compare against when writing it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The record, if any.
    pub value: Option<Vec<u8>>,
    /// What [`Store::put_if`] compares against.
    pub revision: Revision,
}

/// Who runs the fog's reconcile loop (placement, autoscaling, handovers) among the control
/// planes sharing a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This control plane: it reconciles, and its writes while doing so are fenced (see
    /// [`as_leader`]).
    Leader,
    /// Another control plane (named if known): this one serves the API only.
    Follower {
        /// The leader's id, as it registered in the election.
        leader: Option<String>,
    },
}

thread_local! {
    static AS_LEADER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `work` with every store write on this thread fenced by this control plane's
/// leadership: a store shared by several control planes (etcd) makes each write only while
/// this control plane is still the leader it was elected as, and fails it with
/// [`StoreError::Deposed`] otherwise, so a deposed leader that has not noticed yet can change
/// nothing. (A thread-local, because the reconcile runs synchronously on one blocking thread
/// while API handlers on other threads write unfenced.)
pub fn as_leader<T>(work: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            AS_LEADER.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(AS_LEADER.with(|c| c.replace(true)));
    work()
}

/// True inside [`as_leader`].
pub(crate) fn writing_as_leader() -> bool {
    AS_LEADER.with(|c| c.get())
}

/// A key-value store with tables.
pub trait Store: Send + Sync {
    /// The value under `key`.
    fn get(&self, table: Table, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The value under `key` and its revision, for a later [`Store::put_if`].
    fn get_versioned(&self, table: Table, key: &str) -> Result<Versioned, StoreError>;
    /// Write `value` under `key` only if the record is still at `expected` (as read by
    /// [`Store::get_versioned`]); [`StoreError::Conflict`] if it changed meanwhile.
    fn put_if(
        &self,
        table: Table,
        key: &str,
        value: &[u8],
        expected: &Revision,
    ) -> Result<(), StoreError>;
    /// Write `value` under `key`.
    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Remove `key`.
    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError>;
    /// Every (key, value), in key order.
    fn list(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Make every write so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// A number that changes whenever `table` changes, if this store sees every write to it
    /// (it is the table's only writer): read it before reading the table, and a view computed
    /// from what was read stays valid while the number is the same. `None` when others may
    /// write the table behind this process's back (etcd shared by several control planes).
    fn generation(&self, table: Table) -> Option<u64> {
        let _ = table;
        None
    }
    /// Take part in the election of the control plane that reconciles, as `id`: become the
    /// leader if there is none, stay the leader (renewing its lease), or learn who leads.
    /// Called before every reconcile. A store only one control plane can use (sled) always
    /// answers [`Leadership::Leader`].
    fn lead(&self, id: &str) -> Result<Leadership, StoreError> {
        let _ = id;
        Ok(Leadership::Leader)
    }
    /// Say that control plane `id` is up, with `record` (what it tells the others: its URL,
    /// the devices heartbeating to it), for [`PLANE_TTL_S`] seconds; called about twice a
    /// second. On a shared store (etcd) the record lives under a lease, so a control plane that
    /// stops disappears from [`Store::planes`] within the TTL.
    fn announce(&self, id: &str, record: &[u8]) -> Result<(), StoreError>;
    /// Every control plane announced and not expired, as (id, record).
    fn planes(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
}

/// Seconds a control plane's announcement lives (see [`Store::announce`]).
pub const PLANE_TTL_S: i64 = 3;

/// A control plane's id and what it announced (see [`Store::announce`]).
type Announcement = (String, Vec<u8>);

/// The embedded default: sled.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    /// Writes so far, per table (see [`Store::generation`]): sled locks its directory, so this
    /// process is the only writer and sees every change.
    generations: std::sync::Arc<[std::sync::atomic::AtomicU64; Table::ALL.len()]>,
    /// The one control plane on this store (sled locks its directory): this process's own
    /// announcement, in memory.
    announced: std::sync::Arc<std::sync::Mutex<Option<Announcement>>>,
}

impl SledStore {
    /// Open (or create) the store in `path`.
    pub fn open(path: &std::path::Path) -> Result<SledStore, StoreError> {
        let db = sled::open(path)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        Ok(SledStore::over(db))
    }

    /// A store that lives in memory and temporary files.
    pub fn temporary() -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        Ok(SledStore::over(db))
    }

    fn over(db: sled::Db) -> SledStore {
        SledStore {
            db,
            generations: std::sync::Arc::new(Default::default()),
            announced: Default::default(),
        }
    }

    /// Count a write to `table`, after it is made (a reader that read the old generation
    /// before the write recomputes on its next read).
    fn wrote(&self, table: Table) {
        self.generations[table.index()].fetch_add(1, std::sync::atomic::Ordering::SeqCst);
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

    fn get_versioned(&self, table: Table, key: &str) -> Result<Versioned, StoreError> {
        let value = self.get(table, key)?;
        let revision = match &value {
            Some(bytes) => Revision(RevisionKind::Bytes(bytes.clone())),
            None => Revision::absent(),
        };
        Ok(Versioned { value, revision })
    }

    fn put_if(
        &self,
        table: Table,
        key: &str,
        value: &[u8],
        expected: &Revision,
    ) -> Result<(), StoreError> {
        let old = match &expected.0 {
            RevisionKind::Absent => None,
            RevisionKind::Bytes(bytes) => Some(bytes.as_slice()),
            // A revision read from another backend never matches a sled record.
            RevisionKind::Etcd(_) => {
                return Err(StoreError::Conflict {
                    table: table.name(),
                    key: key.to_string(),
                });
            }
        };
        self.tree(table)?
            .compare_and_swap(key, old, Some(value))
            .map_err(|e| StoreError::Backend(e.to_string()))?
            .map_err(|_| StoreError::Conflict {
                table: table.name(),
                key: key.to_string(),
            })?;
        self.wrote(table);
        Ok(())
    }

    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tree(table)?
            .insert(key, value)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.wrote(table);
        Ok(())
    }

    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        self.tree(table)?
            .remove(key)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.wrote(table);
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

    fn generation(&self, table: Table) -> Option<u64> {
        Some(self.generations[table.index()].load(std::sync::atomic::Ordering::SeqCst))
    }

    fn announce(&self, id: &str, record: &[u8]) -> Result<(), StoreError> {
        *self.announced.lock().expect("announced lock") = Some((id.to_string(), record.to_vec()));
        Ok(())
    }

    fn planes(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .announced
            .lock()
            .expect("announced lock")
            .iter()
            .cloned()
            .collect())
    }
}

/// Where the registry lives, as given to `fog control --store`: `sled` (the default, embedded) or
/// `etcd://HOST:PORT[,HOST:PORT...][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// sled in the control plane's data directory.
    Sled,
    /// An etcd cluster, with bulk tables in the data directory.
    Etcd(etcd::EtcdConfig),
}

impl std::str::FromStr for StoreLocation {
    type Err = StoreError;

    fn from_str(given: &str) -> Result<StoreLocation, StoreError> {
        if given == "sled" {
            Ok(StoreLocation::Sled)
        } else if given.starts_with("etcd://") {
            etcd::EtcdConfig::from_url(given).map(StoreLocation::Etcd)
        } else {
            Err(StoreError::BadLocation {
                given: given.to_string(),
                reason: "expected sled or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]".into(),
            })
        }
    }
}

impl StoreLocation {
    /// Open the store: sled in `data/registry`; for etcd, components and snapshots in
    /// `data/bulk` (sled) and everything else on the cluster, which must answer now.
    pub fn open(&self, data: &std::path::Path) -> Result<std::sync::Arc<dyn Store>, StoreError> {
        Ok(match self {
            StoreLocation::Sled => std::sync::Arc::new(SledStore::open(&data.join("registry"))?),
            StoreLocation::Etcd(config) => std::sync::Arc::new(etcd::EtcdStore::connect(
                config.clone(),
                SledStore::open(&data.join("bulk"))?,
            )?),
        })
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

/// What an app's developer bids (`fog publish --max-price --bid`); kept beside the app record
/// so records written before bids existed still decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppTerms {
    /// Highest price per CPU-hour the developer pays.
    pub max_price: Option<f64>,
    /// How the developer buys capacity.
    pub bid: fog_proto::api::Bid,
}

/// What an app may reach and is given beyond its code; kept beside the app record (by app
/// name), so records written before it existed still decode, and changing it needs no new
/// version of the app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppSettings {
    /// The origins its outbound HTTP requests may go to (`fog publish --allow-outbound`).
    pub allow_outbound: Vec<fog_proto::Origin>,
    /// Config variables, by name.
    pub vars: std::collections::BTreeMap<String, String>,
    /// Secrets by name, sealed (`crate::secrets`): never stored in the clear.
    pub secrets: std::collections::BTreeMap<String, Vec<u8>>,
    /// Each request's state writes are on the host's disk before it is answered
    /// (`fog publish --durable`).
    pub durable: bool,
}

/// A registered device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Id (from its key).
    pub id: String,
    /// Public key (hex).
    pub public_key: String,
    /// Plain-HTTP data-plane address; empty for a device that accepts no connection (it
    /// dials out to routers).
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

    #[test]
    fn every_table_has_its_own_generation_slot() {
        for (position, table) in Table::ALL.iter().enumerate() {
            assert_eq!(table.index(), position, "{}", table.name());
        }
    }

    #[test]
    fn sled_generations_change_with_every_write_to_their_table_only() {
        let store = SledStore::temporary().unwrap();
        let apps = || store.generation(Table::Apps).unwrap();
        let placements = || store.generation(Table::Placements).unwrap();
        let (a0, p0) = (apps(), placements());
        store.put(Table::Apps, "x", b"1").unwrap();
        assert!(apps() > a0);
        assert_eq!(placements(), p0, "another table's write leaves it alone");
        let a1 = apps();
        let read = store.get_versioned(Table::Apps, "x").unwrap();
        store
            .put_if(Table::Apps, "x", b"2", &read.revision)
            .unwrap();
        assert!(apps() > a1, "a conditional write counts");
        let a2 = apps();
        assert!(
            store
                .put_if(Table::Apps, "x", b"3", &read.revision)
                .is_err()
        );
        assert_eq!(apps(), a2, "a refused conditional write changes nothing");
        store.delete(Table::Apps, "x").unwrap();
        assert!(apps() > a2, "a delete counts");
    }
}
