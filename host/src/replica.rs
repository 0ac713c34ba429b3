//! App state replication: a change log beside every app's key-value namespace, snapshots, and
//! the primary / follower roles.
//!
//! Every write gets the next sequence number and goes into the log (`log/<app>`: big-endian
//! seq → bincode list of changes, each with the key's resulting value) in the same sled
//! transaction as the data, so the two never disagree. Writes of one app are serialised by a
//! lock; reads are not.
//!
//! - A **snapshot** is the whole namespace at a sequence number, streamed as frames (`u32` BE
//!   length + bincode): a header (format, app, seq), one frame per key, then an end marker
//!   (`u32::MAX`), the record count and the SHA-256 of everything before. Writer and reader
//!   hold one record at a time. Keys written while the snapshot is read may appear with newer
//!   values; replaying the log from the snapshot's seq fixes them up (every log change carries
//!   a key's final value, so replay is idempotent).
//! - A **follower** restores a snapshot from its primary, then tails the log with long-polls
//!   (`after = the last seq it holds`, which also acknowledges it). It serves reads; a guest
//!   that tries to write is stopped and the request is answered with `x-fog-error: follower`,
//!   which routers retry on the primary.
//! - A **primary** answers a request that wrote only once every follower that has caught up
//!   holds the write (semi-synchronous replication; a follower that stops acknowledging for
//!   [`SYNC_TIMEOUT`] is dropped from the synchronous set until it catches up again). So an
//!   acknowledged write survives the loss of the primary whenever a caught-up follower exists.
//! - A **fenced** primary (being moved away) refuses new requests with `x-fog-error: moved`.
//! - A primary **cut off from the control planes** fences itself ([`ControlLease`]): the control
//!   plane counts a device dead after `missed_heartbeats` intervals of silence and promotes a
//!   follower elsewhere, so once no control plane has answered a heartbeat for that long (timed
//!   from when the last answered heartbeat was *sent*, which is no later than the control plane
//!   heard it) the primary takes no write and acknowledges none (`x-fog-error: follower`, which
//!   routers retry on the primary their routes name), until a control plane answers again and
//!   so confirms what the device still runs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::{Notify, watch};

use crate::kv::Namespace;
pub use fog_proto::snapshot::{Record, SnapshotReader, SnapshotWriter};

/// How long a write waits for synchronous followers before it is acknowledged without them.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// Log entries kept behind the head; a follower further behind takes a new snapshot.
pub const LOG_KEPT: u64 = 100_000;

/// One change to one key, with the key's resulting value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// The key now holds `value`.
    Set {
        /// Stored key (bucket NUL key).
        key: Vec<u8>,
        /// Its value.
        value: Vec<u8>,
    },
    /// The key is gone.
    Delete {
        /// Stored key.
        key: Vec<u8>,
    },
}

/// One log entry: a sequence number and the changes of one write.
pub type Entry = (u64, Vec<Change>);

/// What this replica does with writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Writes allowed.
    Primary = 0,
    /// Writes refused; state comes from the primary's log.
    Follower = 1,
    /// Being moved away: requests refused.
    Fenced = 2,
}

/// Until when the control planes vouch for this host's primaries: one per host, shared by every
/// namespace. A host without a control plane is never fenced by it.
#[derive(Debug, Default)]
pub struct ControlLease {
    /// `None` while no control plane governs the host; else until when writes are confirmed
    /// (`None` inside: not yet, or never again until a control plane answers).
    until: Mutex<Option<Option<Instant>>>,
    /// Whether the lapse was logged (once per lapse).
    lapsed: AtomicBool,
}

impl ControlLease {
    /// A control plane governs this host from now on: nothing is confirmed until it answers.
    pub fn govern(&self) {
        *self.until.lock().expect("lease lock") = Some(None);
    }

    /// A control plane answered: writes are confirmed until `until` (when a heartbeat sent now
    /// would make the device dead if no other were answered).
    pub fn confirm(&self, until: Instant) {
        *self.until.lock().expect("lease lock") = Some(Some(until));
        if self.lapsed.swap(false, Ordering::Relaxed) {
            tracing::info!("a control plane answered again: primaries take writes again");
        }
    }

    /// Whether this host's primaries may take and acknowledge writes now.
    pub fn valid(&self) -> bool {
        let valid = match *self.until.lock().expect("lease lock") {
            None => true,
            Some(until) => until.is_some_and(|until| Instant::now() < until),
        };
        if !valid && !self.lapsed.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "no control plane answered for as long as they take to count this device dead: \
                 its primaries refuse writes until one answers (a follower may be promoted)"
            );
        }
        valid
    }
}

/// A write this replica may not make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this replica does not take writes ({0:?})")]
pub struct WriteRefused(pub Mode);

/// Why a write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Not the primary.
    #[error(transparent)]
    Refused(#[from] WriteRefused),
    /// The store failed, or the change itself is invalid.
    #[error("{0}")]
    Store(String),
}

#[derive(Debug)]
struct FollowerState {
    acked: u64,
    /// Caught up at some point and acknowledging: writes wait for it.
    sync: bool,
    seen: Instant,
}

/// The replication state of one app's namespace (shared by every version of the app loaded).
#[derive(Debug)]
pub struct Replication {
    write: Mutex<()>,
    head: watch::Sender<u64>,
    mode: AtomicU8,
    followers: Mutex<HashMap<[u8; 32], FollowerState>>,
    acked: Notify,
    /// Wakes log long-polls when the mode changes (a fence ends a follower's wait at once).
    mode_changed: Notify,
    /// Keys of peers allowed to pull state (the primary's followers, from the assignment).
    allowed: Mutex<Vec<[u8; 32]>>,
    /// A follower's latest word of its primary's head (from its last log pull), for the lag.
    primary_head: AtomicU64,
}

impl Replication {
    pub(crate) fn new(head: u64) -> Replication {
        Replication {
            write: Mutex::new(()),
            head: watch::channel(head).0,
            mode: AtomicU8::new(Mode::Primary as u8),
            followers: Mutex::new(HashMap::new()),
            acked: Notify::new(),
            mode_changed: Notify::new(),
            allowed: Mutex::new(Vec::new()),
            primary_head: AtomicU64::new(head),
        }
    }
}

fn seq_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).expect("always encodes")
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(value, _)| value)
        .map_err(|e| e.to_string())
}

fn store_error<E: std::fmt::Debug>(err: TransactionError<E>) -> WriteError {
    WriteError::Store(format!("{err:?}"))
}

impl Namespace {
    /// The replica's mode.
    pub fn mode(&self) -> Mode {
        match self.repl.mode.load(Ordering::Acquire) {
            0 => Mode::Primary,
            1 => Mode::Follower,
            _ => Mode::Fenced,
        }
    }

    /// Whether a control plane (if one governs this host) vouched for its primaries lately: a
    /// write made while it did is acknowledged only if it still does.
    pub fn confirmed(&self) -> bool {
        self.lease.valid()
    }

    /// Change the replica's mode.
    pub fn set_mode(&self, mode: Mode) {
        let _write = self.repl.write.lock().expect("write lock");
        self.repl.mode.store(mode as u8, Ordering::Release);
        self.repl.mode_changed.notify_waiters();
    }

    /// The last sequence number the state holds.
    pub fn head(&self) -> u64 {
        *self.repl.head.borrow()
    }

    /// A follower heard that its primary's head is `seq`.
    pub fn set_primary_head(&self, seq: u64) {
        self.repl.primary_head.store(seq, Ordering::Release);
    }

    /// A follower's replication lag: log entries its primary held at its last pull that this
    /// replica does not hold yet (`None` unless it is a follower).
    pub fn lag(&self) -> Option<u64> {
        (self.mode() == Mode::Follower).then(|| {
            self.repl
                .primary_head
                .load(Ordering::Acquire)
                .saturating_sub(self.head())
        })
    }

    /// Peers (Noise static keys) allowed to pull this app's state.
    pub fn set_allowed(&self, keys: Vec<[u8; 32]>) {
        self.repl
            .followers
            .lock()
            .expect("followers lock")
            .retain(|key, _| keys.contains(key));
        *self.repl.allowed.lock().expect("allowed lock") = keys;
        self.repl.acked.notify_waiters();
    }

    /// Whether `peer` may pull this app's state.
    pub fn allows(&self, peer: &[u8; 32]) -> bool {
        self.repl
            .allowed
            .lock()
            .expect("allowed lock")
            .contains(peer)
    }

    /// Make one write: `compute` reads what it needs from the tree (writes are serialised, so
    /// nothing changes under it) and returns the changes; they are applied and logged in one
    /// transaction. Returns `compute`'s value and the write's sequence number.
    pub(crate) fn write<T>(
        &self,
        compute: impl FnOnce(&sled::Tree) -> Result<(Vec<Change>, T), String>,
    ) -> Result<(T, u64), WriteError> {
        let _write = self.repl.write.lock().expect("write lock");
        let mode = self.mode();
        if mode != Mode::Primary {
            return Err(WriteRefused(mode).into());
        }
        // A primary no control plane vouches for may already have been replaced: it acts as a
        // follower (nothing is written, so routers retry the request on the primary).
        if !self.lease.valid() {
            return Err(WriteRefused(Mode::Follower).into());
        }
        let tree = self.tree().map_err(|e| WriteError::Store(e.to_string()))?;
        let (changes, value) = compute(tree).map_err(WriteError::Store)?;
        let seq = self.head() + 1;
        self.commit(seq, &changes)?;
        Ok((value, seq))
    }

    /// Apply and log `changes` as entry `seq` (the caller holds the write lock).
    fn commit(&self, seq: u64, changes: &[Change]) -> Result<(), WriteError> {
        let logged = encode(&changes);
        let store = |e: sled::Error| WriteError::Store(e.to_string());
        let (tree, log) = (self.tree().map_err(store)?, self.log().map_err(store)?);
        (tree, log)
            .transaction(|(tree, log)| {
                for change in changes {
                    match change {
                        Change::Set { key, value } => {
                            tree.insert(key.as_slice(), value.as_slice())?;
                        }
                        Change::Delete { key } => {
                            tree.remove(key.as_slice())?;
                        }
                    }
                }
                log.insert(&seq_key(seq), logged.as_slice())?;
                Ok::<(), ConflictableTransactionError<()>>(())
            })
            .map_err(store_error)?;
        self.repl.head.send_replace(seq);
        if seq.is_multiple_of(1024) && seq > LOG_KEPT {
            // Trim the log behind the window (best effort; a follower that needs older
            // entries takes a snapshot).
            let floor = seq_key(seq - LOG_KEPT);
            for key in log.range(..floor).keys().flatten() {
                let _ = log.remove(key);
            }
        }
        Ok(())
    }

    /// A follower applies entries from its primary, in order (older ones are skipped).
    pub fn apply_entries(&self, entries: &[Entry]) -> Result<u64, WriteError> {
        let _write = self.repl.write.lock().expect("write lock");
        for (seq, changes) in entries {
            let head = self.head();
            if *seq <= head {
                continue;
            }
            if *seq != head + 1 {
                return Err(WriteError::Store(format!(
                    "log gap: holding {head}, got {seq}"
                )));
            }
            self.commit(*seq, changes)?;
        }
        Ok(self.head())
    }

    /// Log entries after `after`, up to about `max_bytes`; `None` if the log no longer reaches
    /// back that far (take a snapshot).
    pub fn entries_after(&self, after: u64, max_bytes: usize) -> Option<Vec<Entry>> {
        let head = self.head();
        if after >= head {
            return Some(Vec::new());
        }
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let log = self.log().ok()?;
        for (expected, item) in (after + 1..).zip(log.range(seq_key(after + 1)..)) {
            let (key, value) = item.ok()?;
            let seq = u64::from_be_bytes(key.as_ref().try_into().ok()?);
            if seq != expected {
                return None;
            }
            let changes: Vec<Change> = decode(&value).ok()?;
            bytes += value.len();
            out.push((seq, changes));
            if bytes >= max_bytes {
                break;
            }
        }
        // The first entry wanted must exist (it may have been trimmed).
        (!out.is_empty()).then_some(out)
    }

    /// Wait until the log passes `after`, the mode changes, or `wait` passes. A fenced primary
    /// holds followers only briefly: they should learn soon that its writes have stopped.
    pub async fn wait_past(&self, after: u64, wait: Duration) {
        let wait = if self.mode() == Mode::Fenced {
            wait.min(Duration::from_millis(50))
        } else {
            wait
        };
        let mut head = self.repl.head.subscribe();
        let changed = self.repl.mode_changed.notified();
        tokio::select! {
            _ = head.wait_for(|h| *h > after) => {}
            () = changed => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// Record that follower `peer` holds everything up to `acked`.
    pub fn acknowledge(&self, peer: [u8; 32], acked: u64) {
        let head = self.head();
        let mut followers = self.repl.followers.lock().expect("followers lock");
        let state = followers.entry(peer).or_insert(FollowerState {
            acked,
            sync: false,
            seen: Instant::now(),
        });
        state.acked = state.acked.max(acked);
        state.seen = Instant::now();
        if state.acked >= head {
            state.sync = true;
        }
        drop(followers);
        self.repl.acked.notify_waiters();
    }

    /// Followers that count for acknowledgements now.
    pub fn sync_followers(&self) -> usize {
        self.repl
            .followers
            .lock()
            .expect("followers lock")
            .values()
            .filter(|f| f.sync)
            .count()
    }

    /// Wait until every synchronous follower holds `seq` (followers that do not answer within
    /// [`SYNC_TIMEOUT`] leave the synchronous set).
    pub async fn wait_replicated(&self, seq: u64) {
        let deadline = tokio::time::Instant::now() + SYNC_TIMEOUT;
        loop {
            let notified = self.repl.acked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let behind = {
                let followers = self.repl.followers.lock().expect("followers lock");
                followers
                    .values()
                    .filter(|f| f.sync && f.acked < seq)
                    .count()
            };
            if behind == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut followers = self.repl.followers.lock().expect("followers lock");
                for state in followers.values_mut() {
                    if state.sync && state.acked < seq {
                        tracing::warn!(
                            "a follower did not acknowledge write {seq} within {SYNC_TIMEOUT:?}: \
                             continuing without it until it catches up"
                        );
                        state.sync = false;
                    }
                }
                return;
            }
        }
    }

    /// Stream a snapshot into `out` (chunks of about 64 KiB); returns its sequence number.
    pub async fn snapshot_to(
        &self,
        app: &str,
        out: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<u64, String> {
        let seq = self.head();
        let mut writer = SnapshotWriter::new(app, seq);
        for item in self.tree().map_err(|e| e.to_string())?.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            writer.record(&key, &value);
            if writer.buffered() >= 64 << 10 {
                out.send(writer.take())
                    .await
                    .map_err(|_| "the reader went away")?;
            }
        }
        out.send(writer.finish())
            .await
            .map_err(|_| "the reader went away")?;
        Ok(seq)
    }

    /// Replace the state with a snapshot read from `chunks`; returns its sequence number. On a
    /// bad snapshot the namespace is left empty at seq 0 (the follower starts over).
    pub async fn restore_from<S, E>(&self, mut chunks: S) -> Result<u64, String>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        use futures_util::StreamExt;
        // Only a follower or a primary not yet serving restores, so no write races this; the
        // write lock is taken per step, never across an await.
        self.clear()?;
        let tree = self.tree().map_err(|e| e.to_string())?;
        let mut reader = SnapshotReader::default();
        let mut batch = sled::Batch::default();
        let mut batched = 0usize;
        let outcome: Result<u64, String> = async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|e| format!("snapshot transfer: {e}"))?;
                for record in reader.push(&chunk).map_err(|e| e.to_string())? {
                    batched += record.0.len() + record.1.len();
                    batch.insert(record.0, record.1);
                    if batched >= 4 << 20 {
                        tree.apply_batch(std::mem::take(&mut batch))
                            .map_err(|e| e.to_string())?;
                        batched = 0;
                    }
                }
            }
            let seq = reader.finished().map_err(|e| e.to_string())?;
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(|e| e.to_string())?;
            Ok(seq)
        }
        .await;
        match outcome {
            Ok(seq) => {
                // The log restarts at the snapshot's seq: an empty entry marks the head.
                self.log()
                    .and_then(|log| log.insert(seq_key(seq), encode(&Vec::<Change>::new())))
                    .map_err(|e| e.to_string())?;
                self.repl.head.send_replace(seq);
                Ok(seq)
            }
            Err(err) => {
                self.clear()?;
                Err(err)
            }
        }
    }

    fn clear(&self) -> Result<(), String> {
        let _write = self.repl.write.lock().expect("write lock");
        self.tree()
            .and_then(|tree| tree.clear())
            .map_err(|e| e.to_string())?;
        self.log()
            .and_then(|log| log.clear())
            .map_err(|e| e.to_string())?;
        self.repl.head.send_replace(0);
        Ok(())
    }

    /// A snapshot in memory (tests and small apps).
    pub fn snapshot_bytes(&self, app: &str) -> Result<(u64, Vec<u8>), String> {
        let seq = self.head();
        let mut writer = SnapshotWriter::new(app, seq);
        for item in self.tree().map_err(|e| e.to_string())?.iter() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            writer.record(&key, &value);
        }
        Ok((seq, writer.finish().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespace() -> Namespace {
        let db = sled::Config::new().temporary(true).open().unwrap();
        Namespace::open(&db, "a").unwrap()
    }

    fn set(ns: &Namespace, key: &str, value: &str) -> u64 {
        let change = Change::Set {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        };
        ns.write(|_| Ok((vec![change], ()))).unwrap().1
    }

    #[test]
    fn a_primary_takes_writes_only_while_its_control_plane_lease_holds() {
        let ns = namespace();
        // No control plane governs the host: writes are never fenced by one.
        assert_eq!(set(&ns, "a", "1"), 1);
        ns.lease.govern();
        let refused = |ns: &Namespace| {
            matches!(
                ns.write(|_| Ok((vec![], ()))),
                Err(WriteError::Refused(WriteRefused(Mode::Follower)))
            )
        };
        assert!(refused(&ns), "nothing confirmed yet");
        ns.lease.confirm(Instant::now() + Duration::from_secs(60));
        assert!(ns.confirmed());
        assert_eq!(set(&ns, "a", "2"), 2);
        ns.lease.confirm(Instant::now());
        assert!(!ns.confirmed());
        assert!(refused(&ns), "the lease lapsed");
        assert_eq!(ns.head(), 2, "a refused write is not logged");
        ns.lease.confirm(Instant::now() + Duration::from_secs(60));
        assert_eq!(set(&ns, "a", "3"), 3);
    }

    #[test]
    fn writes_are_logged_in_order_and_followers_refuse_them() {
        let ns = namespace();
        assert_eq!(set(&ns, "a", "1"), 1);
        assert_eq!(set(&ns, "b", "2"), 2);
        let entries = ns.entries_after(0, 1 << 20).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(ns.entries_after(2, 1 << 20).unwrap(), vec![]);
        ns.set_mode(Mode::Follower);
        let refused = ns.write(|_| Ok((vec![], ()))).unwrap_err();
        assert!(matches!(
            refused,
            WriteError::Refused(WriteRefused(Mode::Follower))
        ));

        // A follower applies the entries, skipping what it has, refusing gaps.
        let follower = namespace();
        follower.set_mode(Mode::Follower);
        assert_eq!(follower.apply_entries(&entries).unwrap(), 2);
        assert_eq!(follower.apply_entries(&entries).unwrap(), 2);
        assert_eq!(follower.get("", "").unwrap(), None);
        assert_eq!(
            follower.tree().unwrap().get("b").unwrap().unwrap().as_ref(),
            b"2"
        );
        let gap = vec![(9, vec![])];
        assert!(follower.apply_entries(&gap).is_err());
    }

    #[tokio::test]
    async fn snapshots_round_trip_in_any_chunking_and_catch_corruption() {
        let ns = namespace();
        for i in 0..500 {
            set(&ns, &format!("key{i}"), &"v".repeat(i));
        }
        let (seq, bytes) = ns.snapshot_bytes("a").unwrap();
        assert_eq!(seq, 500);
        for chunk in [1usize, 7, 4096, bytes.len()] {
            let copy = namespace();
            let chunks: Vec<Result<Bytes, String>> = bytes
                .chunks(chunk)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let restored = copy
                .restore_from(futures_util::stream::iter(chunks))
                .await
                .unwrap();
            assert_eq!(restored, 500);
            assert_eq!(copy.head(), 500);
            assert_eq!(copy.tree().unwrap().len(), 500);
            assert_eq!(
                copy.tree().unwrap().get("key42").unwrap().unwrap().as_ref(),
                "v".repeat(42).as_bytes()
            );
            // The log continues from the snapshot.
            assert_eq!(set(&copy, "after", "x"), 501);
        }
        // A flipped byte, a truncation: refused, and the namespace is left empty.
        let mut bad = bytes.clone();
        let middle = bad.len() / 2;
        bad[middle] ^= 1;
        let truncated = bytes[..bytes.len() - 10].to_vec();
        for broken in [bad, truncated] {
            let copy = namespace();
            set(&copy, "stale", "1");
            let chunks = vec![Ok::<_, String>(Bytes::from(broken))];
            assert!(
                copy.restore_from(futures_util::stream::iter(chunks))
                    .await
                    .is_err()
            );
            assert_eq!(copy.tree().unwrap().len(), 0);
            assert_eq!(copy.head(), 0);
        }
    }

    #[tokio::test]
    async fn writes_wait_for_synchronous_followers_only() {
        let ns = namespace();
        let peer = [1u8; 32];
        // No follower: returns at once.
        let seq = set(&ns, "a", "1");
        ns.wait_replicated(seq).await;
        // A follower that caught up (acked the head) is synchronous.
        ns.acknowledge(peer, seq);
        assert_eq!(ns.sync_followers(), 1);
        let seq = set(&ns, "a", "2");
        let started = Instant::now();
        let waiting = {
            let ns = ns.clone();
            tokio::spawn(async move {
                ns.wait_replicated(seq).await;
                started.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !waiting.is_finished(),
            "acknowledged before the follower had it"
        );
        ns.acknowledge(peer, seq);
        let waited = waiting.await.unwrap();
        assert!(waited >= Duration::from_millis(100) && waited < SYNC_TIMEOUT);
        // A follower that stops answering is dropped after the timeout.
        let seq = set(&ns, "a", "3");
        let started = Instant::now();
        ns.wait_replicated(seq).await;
        assert!(started.elapsed() >= SYNC_TIMEOUT);
        assert_eq!(ns.sync_followers(), 0);
    }
}
