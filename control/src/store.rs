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
    /// Which router publishes each app's onion service, until when, and who did before
    /// ([`crate::onion::LeaseRecord`]), by app name.
    OnionLeases,
    /// When each router with an onion front last asked for its leases (unix ms), by router
    /// key: the live routers leases are balanced across.
    OnionRouters,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 21] = [
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
        Table::OnionLeases,
        Table::OnionRouters,
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
            Table::OnionLeases => "onion-leases",
            Table::OnionRouters => "onion-routers",
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
    /// Write each (key, value) of `records`, as [`Store::put`] would, in as few requests as the
    /// backend allows (etcd: transactions of up to 128 writes); not atomic as a whole. For a
    /// loop over thousands of records (a new fleet's trust evidence), where a round trip each
    /// would outlast the leader's lease.
    fn put_many(&self, table: Table, records: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        for (key, value) in records {
            self.put(table, key, value)?;
        }
        Ok(())
    }
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
    /// A feed of every change to `tables` from now on (see [`Feed`]), if this store can see
    /// every change (it hears of every writer's); `None` otherwise, and a reader must read
    /// the tables whenever it needs them.
    fn follow(&self, tables: &[Table]) -> Option<std::sync::Arc<Feed>> {
        let _ = tables;
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
    /// Whether other control planes may use this store too (etcd): only then does one need the
    /// devices another heard ([`Store::announce`]'s `heard`). sled, locked by one process, is
    /// never shared.
    fn shared(&self) -> bool {
        false
    }
    /// Say that control plane `id` is up, with `record` (what it tells the others: its URL,
    /// its registrations, the leader's fences), for [`PLANE_TTL_S`] seconds, and that it heard
    /// the devices in `heard` (device id, its last heartbeat as the control plane encodes it)
    /// since its last call; called about twice a second. On a shared store (etcd) all of it
    /// lives under one lease renewed by each call, so a control plane that stops disappears
    /// from [`Store::planes`], and the devices it last heard from [`Store::heard`], within the
    /// TTL. Each device is its own record, written only when heard: what a call writes is
    /// bounded by the fleet's heartbeat rate, never by its size. `Ok(false)` if what earlier
    /// calls said may be gone (the lease lapsed): the next call should name every device.
    fn announce(
        &self,
        id: &str,
        record: &[u8],
        heard: &[(String, Vec<u8>)],
    ) -> Result<bool, StoreError>;
    /// Every control plane announced and not expired, as (id, record).
    fn planes(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Devices other control planes heard, as (device id, the record announced): those
    /// announced since the last call, or, on the first call and whenever some may have been
    /// missed, every one still announced. A store only one control plane can use (sled) has
    /// none.
    fn heard(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(Vec::new())
    }
}

/// One change to a record as a store saw it take effect: the new value, or `None` when the
/// record was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The table.
    pub table: Table,
    /// The record's key.
    pub key: String,
    /// What the record holds now.
    pub value: Option<Vec<u8>>,
}

/// What [`Feed::drain`] hands over.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// The changes since the last drain, oldest first.
    Changes(Vec<Change>),
    /// Changes may have been missed (the feed is new, an etcd watch restarted or is down, too
    /// many piled up, a write's outcome is unknown): whatever was built from the feed must be
    /// read again from the tables. Every change before this drain shows in what is read
    /// now; those after come with the next drain.
    Lost,
}

/// Most changes a feed holds between drains: past it they are dropped and the reader
/// rebuilds, which then costs less than replaying them.
const FEED_BOUND: usize = 100_000;

/// Longest [`Feed::drain`] waits for the store's own writes to come back through an etcd
/// watch before it says changes were lost (the reader then reads the tables instead).
const FEED_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// The changes to some tables, by every writer the store hears of (this process's writes;
/// on etcd also every other control plane's, through a watch), for one reader that keeps a
/// view of those tables up to date key by key instead of reading them whole (see
/// [`Store::follow`]).
#[derive(Debug)]
pub struct Feed {
    tables: Vec<Table>,
    state: std::sync::Mutex<FeedState>,
    /// Signalled when the store sees further revisions (etcd).
    seen: std::sync::Condvar,
}

#[derive(Debug)]
struct FeedState {
    changes: Vec<Change>,
    lost: bool,
    /// False while the store cannot see every change (an etcd watch that is down): every
    /// drain then says `lost`.
    live: bool,
    /// The highest revision of this store's own writes to the followed tables (etcd), and the
    /// highest the watch has delivered: a drain waits until the second reaches the first, so
    /// a reader always sees its own process's writes.
    wanted: i64,
    delivered: i64,
}

impl Feed {
    fn new(tables: &[Table], live: bool) -> Feed {
        Feed {
            tables: tables.to_vec(),
            state: std::sync::Mutex::new(FeedState {
                changes: Vec::new(),
                // Nothing was built from it yet.
                lost: true,
                live,
                wanted: 0,
                delivered: 0,
            }),
            seen: std::sync::Condvar::new(),
        }
    }

    /// Whether this feed carries changes to `table`.
    pub fn follows(&self, table: Table) -> bool {
        self.tables.contains(&table)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().expect("feed lock")
    }

    /// Whether a drain now would hand over anything (changes, or word of lost ones), or wait
    /// for the store's own writes.
    pub fn pending(&self) -> bool {
        let state = self.state();
        !state.changes.is_empty() || state.lost || !state.live || state.wanted > state.delivered
    }

    /// The changes since the last drain, after the store's own writes so far have arrived.
    pub fn drain(&self) -> Drained {
        let mut state = self.state();
        if state.wanted > state.delivered {
            let deadline = std::time::Instant::now() + FEED_CATCH_UP;
            state = wait_blocking(|| {
                let mut state = state;
                while state.wanted > state.delivered {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        tracing::warn!(
                            wanted = state.wanted,
                            delivered = state.delivered,
                            "the store's watch has not delivered its own writes; rebuilding"
                        );
                        state.lost = true;
                        state.changes.clear();
                        state.delivered = state.wanted;
                        break;
                    }
                    state = self.seen.wait_timeout(state, left).expect("feed lock").0;
                }
                state
            });
        }
        let changes = std::mem::take(&mut state.changes);
        if std::mem::replace(&mut state.lost, false) || !state.live {
            Drained::Lost
        } else {
            Drained::Changes(changes)
        }
    }

    /// Say changes were lost: the next drain says [`Drained::Lost`].
    pub fn lose(&self) {
        let mut state = self.state();
        state.changes.clear();
        state.lost = true;
    }

    fn push(&self, change: Change) {
        let mut state = self.state();
        if state.changes.len() >= FEED_BOUND {
            state.changes.clear();
            state.lost = true;
            return;
        }
        state.changes.push(change);
    }
}

/// Wait in `work` without stalling a multi-thread tokio runtime the caller may be on (its
/// other tasks move to other workers meanwhile).
pub(crate) fn wait_blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// The feeds a store writes its changes to (see [`Store::follow`]).
#[derive(Debug, Default)]
pub(crate) struct Feeds {
    feeds: std::sync::Mutex<Vec<std::sync::Weak<Feed>>>,
    /// False while the store cannot see every change (an etcd watch that is down).
    down: std::sync::atomic::AtomicBool,
}

impl Feeds {
    /// A new feed of `tables`, which says `lost` on its first drain.
    pub(crate) fn add(&self, tables: &[Table]) -> std::sync::Arc<Feed> {
        let live = !self.down.load(std::sync::atomic::Ordering::SeqCst);
        let feed = std::sync::Arc::new(Feed::new(tables, live));
        let mut feeds = self.feeds.lock().expect("feeds lock");
        feeds.retain(|f| f.strong_count() > 0);
        feeds.push(std::sync::Arc::downgrade(&feed));
        feed
    }

    fn each(&self, mut f: impl FnMut(&Feed)) {
        for feed in self.feeds.lock().expect("feeds lock").iter() {
            if let Some(feed) = feed.upgrade() {
                f(&feed);
            }
        }
    }

    /// Whether some feed carries changes to `table`.
    pub(crate) fn follow(&self, table: Table) -> bool {
        let mut any = false;
        self.each(|feed| any |= feed.follows(table));
        any
    }

    /// `key` in `table` now holds `value` (`None`: removed).
    pub(crate) fn changed(&self, table: Table, key: &str, value: Option<&[u8]>) {
        self.each(|feed| {
            if feed.follows(table) {
                feed.push(Change {
                    table,
                    key: key.to_string(),
                    value: value.map(<[u8]>::to_vec),
                });
            }
        });
    }

    /// Changes may have been missed: every reader rebuilds.
    pub(crate) fn lost(&self) {
        self.each(Feed::lose);
    }

    /// Whether the store sees every change from now on (`false`: changes may go unseen until
    /// it says `true` again, and every drain meanwhile says `lost`).
    pub(crate) fn set_live(&self, live: bool) {
        self.down.store(!live, std::sync::atomic::Ordering::SeqCst);
        self.each(|feed| {
            let mut state = feed.state();
            state.live = live;
            state.changes.clear();
            state.lost = true;
        });
        // A drain waiting for its own writes stops waiting on a watch that went away.
        if !live {
            self.each(|feed| {
                let mut state = feed.state();
                state.delivered = state.wanted;
                feed.seen.notify_all();
            });
        }
    }

    /// This store wrote to `table` at `revision` (etcd): a drain waits until the watch has
    /// delivered it.
    pub(crate) fn wrote_at(&self, table: Table, revision: i64) {
        self.each(|feed| {
            let mut state = feed.state();
            // While the watch is down every drain rebuilds anyway: nothing to wait for.
            if feed.follows(table) && state.live {
                state.wanted = state.wanted.max(revision);
            }
        });
    }

    /// The watch has delivered every change up to `revision`.
    pub(crate) fn delivered(&self, revision: i64) {
        self.each(|feed| {
            let mut state = feed.state();
            if revision > state.delivered {
                state.delivered = revision;
                feed.seen.notify_all();
            }
        });
    }
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
    /// Readers following some tables' changes (see [`Store::follow`]).
    feeds: std::sync::Arc<Feeds>,
    /// Held from a write to a followed table until its change is in the feeds: two writers of
    /// one key hand their changes over in the order their writes took effect.
    ordered: std::sync::Arc<std::sync::Mutex<()>>,
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
            feeds: Default::default(),
            ordered: Default::default(),
        }
    }

    /// Make `write` to `key` in `table`, after which the record holds `now` (`None`:
    /// removed), and hand the change to the feeds following `table`.
    fn write(
        &self,
        table: Table,
        key: &str,
        now: Option<&[u8]>,
        write: impl FnOnce(&sled::Tree) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tree = self.tree(table)?;
        let ordered = self
            .feeds
            .follow(table)
            .then(|| self.ordered.lock().expect("ordered lock"));
        write(&tree)?;
        self.wrote(table);
        if ordered.is_some() {
            self.feeds.changed(table, key, now);
        }
        Ok(())
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
        self.write(table, key, Some(value), |tree| {
            tree.compare_and_swap(key, old, Some(value))
                .map_err(|e| StoreError::Backend(e.to_string()))?
                .map_err(|_| StoreError::Conflict {
                    table: table.name(),
                    key: key.to_string(),
                })
        })
    }

    fn put(&self, table: Table, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.write(table, key, Some(value), |tree| {
            tree.insert(key, value)
                .map(|_| ())
                .map_err(|e| StoreError::Backend(e.to_string()))
        })
    }

    fn delete(&self, table: Table, key: &str) -> Result<(), StoreError> {
        self.write(table, key, None, |tree| {
            tree.remove(key)
                .map(|_| ())
                .map_err(|e| StoreError::Backend(e.to_string()))
        })
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

    fn follow(&self, tables: &[Table]) -> Option<std::sync::Arc<Feed>> {
        // This process is the only writer (sled locks its directory): it sees every change.
        Some(self.feeds.add(tables))
    }

    fn announce(
        &self,
        id: &str,
        record: &[u8],
        _heard: &[(String, Vec<u8>)],
    ) -> Result<bool, StoreError> {
        // The only control plane on this store: nobody else needs the devices it heard.
        *self.announced.lock().expect("announced lock") = Some((id.to_string(), record.to_vec()));
        Ok(true)
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
