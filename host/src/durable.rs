//! Group commit for durable apps (`--durable`): a request's key-value writes are made stable on
//! disk before its response leaves the host, and one flush serves every request that had
//! finished writing when it started.
//!
//! A flush is sled's, then `fdatasync` of sled's log file. sled's flush writes out the
//! database's in-memory log buffers and waits for the kernel to write them (`sync_file_range`
//! on Linux), which is what survives `kill -9`; without it sled writes its buffers every 500 ms,
//! so a host killed in between loses writes it has already acknowledged, and the state of a
//! tier-B app has no follower to hold them instead. `sync_file_range` neither commits the
//! file's size nor flushes the disk's write cache, so the `fdatasync` that follows is what
//! makes the writes survive a power cut too. (Not for values sled keeps in files of their own,
//! those past its blob threshold: sled writes them without a sync, so they survive `kill -9`
//! but a power cut only once the kernel has written them back.)

use std::sync::atomic::{AtomicU64, Ordering};

/// Why the writes of a durable request could not be made stable.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store failed to write its log.
    #[error("flushing app state to disk: {0}")]
    Flush(sled::Error),
    /// The log file could not be synced.
    #[error("syncing the app state's log file: {0}")]
    Sync(std::io::Error),
    /// The blocking task running the flush ended without an answer (it panicked).
    #[error("the task flushing app state stopped: {0}")]
    Task(String),
}

/// Flushes one sled database on behalf of many requests, at most one flush at a time.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    db: sled::Db,
    /// sled's log file, opened for `fdatasync` (none for a temporary database).
    log_file: Option<std::sync::Arc<std::fs::File>>,
    /// Requests that have asked to be made stable so far; each takes the next number.
    asked: AtomicU64,
    /// Every request whose number is at most this is stable.
    synced: AtomicU64,
    /// Flushes run (for the ratio of requests to flushes, the group size).
    flushes: AtomicU64,
    /// Held by the flush in flight; the requests that wait queue on it in order.
    flushing: tokio::sync::Mutex<()>,
}

impl GroupCommit {
    /// Flush `db`, whose log file (sled's `db` file in its directory) is `log_file`.
    pub(crate) fn new(db: sled::Db, log_file: Option<std::fs::File>) -> GroupCommit {
        GroupCommit {
            db,
            log_file: log_file.map(std::sync::Arc::new),
            asked: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Return once every write made before this call is on disk. The caller's writes must be
    /// committed to the database before it calls (its number is taken first, and a flush
    /// covers exactly the numbers taken before it starts).
    pub(crate) async fn sync(&self) -> Result<(), SyncError> {
        let ticket = self.asked.fetch_add(1, Ordering::AcqRel) + 1;
        if self.synced.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let _flushing = self.flushing.lock().await;
        // The flush that held the lock may have started after this request took its number.
        if self.synced.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        // Every number up to `covers` was taken after its writes were committed, so this
        // flush makes them all stable: the requests queued behind it return at once.
        let covers = self.asked.load(Ordering::Acquire);
        let (db, log_file) = (self.db.clone(), self.log_file.clone());
        tokio::task::spawn_blocking(move || {
            db.flush().map_err(SyncError::Flush)?;
            match log_file {
                Some(file) => file.sync_data().map_err(SyncError::Sync),
                None => Ok(()),
            }
        })
        .await
        .map_err(|err| SyncError::Task(err.to_string()))??;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.synced.fetch_max(covers, Ordering::AcqRel);
        Ok(())
    }

    /// Flushes run so far.
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Requests that ask while a flush is in flight are all served by the next one: one flush
    /// for the lot, and none of them returns before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_behind_a_flush_share_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let log_file = std::fs::File::open(dir.path().join("db")).unwrap();
        let group = std::sync::Arc::new(GroupCommit::new(db.clone(), Some(log_file)));
        let tree = db.open_tree("t").unwrap();
        // Stand in for a flush in flight: hold the lock a flush holds.
        let in_flight = group.flushing.lock().await;
        let tasks: Vec<_> = (0u32..32)
            .map(|i| {
                let (group, tree) = (group.clone(), tree.clone());
                tokio::spawn(async move {
                    tree.insert(i.to_be_bytes(), &[1]).unwrap();
                    group.sync().await.unwrap();
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        while group.asked.load(Ordering::Acquire) < 32 {
            assert!(Instant::now() < deadline, "the requests never asked");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(tasks.iter().all(|task| !task.is_finished()));
        drop(in_flight);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(group.flushes(), 1);
        assert_eq!(group.synced.load(Ordering::Acquire), 32);
        // Alone, a request gets a flush of its own.
        group.sync().await.unwrap();
        assert_eq!(group.flushes(), 2);
    }
}
