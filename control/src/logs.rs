//! Request logs for `fog logs`: the lines hosts report with their heartbeats, each device's
//! lines taken once (by the host's sequence number), numbered per app, the last
//! [`LOG_LINES_KEPT`] of each app kept in memory and in the control plane's own disk (table
//! `logs`, a bulk table: never in etcd), so a restart keeps them; `?after=ID` long-polls for
//! lines past the last one a follower printed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use fog_proto::api::LogLine;
use tokio::sync::watch;

use crate::store::{Store, StoreError, Table, decode, encode};

/// Lines of `fog logs` kept per app.
pub(crate) const LOG_LINES_KEPT: usize = 1000;

/// Longest a `?after=` long-poll is held: short enough that a control plane shutting down
/// (which lets open requests finish) is not held up for long.
pub(crate) const LOGS_HOLD: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct AppLog {
    lines: VecDeque<LogLine>,
    /// The id of the newest line ever numbered for the app.
    last_id: u64,
}

#[derive(Debug, Default)]
struct Loaded {
    apps: HashMap<String, AppLog>,
    /// Each device's highest sequence number taken: lines sent again (a heartbeat whose reply
    /// was lost, a host restarted before it heard the reply) are dropped.
    seen: HashMap<String, u64>,
}

/// Every app's recent request lines.
#[derive(Debug)]
pub(crate) struct Logs {
    /// Read from the store on first use.
    loaded: Mutex<Option<Loaded>>,
    /// Bumped whenever lines are added: wakes `?after=` long-polls.
    added: watch::Sender<u64>,
}

impl Default for Logs {
    fn default() -> Logs {
        Logs {
            loaded: Mutex::new(None),
            added: watch::channel(0).0,
        }
    }
}

/// A line's key in table `logs`: the app (names carry no `/`) and its id, ordered.
fn key(app: &str, id: u64) -> String {
    format!("{app}/{id:016x}")
}

impl Logs {
    /// Run `f` on the loaded logs, reading them from `store` the first time.
    fn with<T>(
        &self,
        store: &dyn Store,
        f: impl FnOnce(&mut Loaded) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut guard = self.loaded.lock().expect("logs lock");
        if guard.is_none() {
            let mut loaded = Loaded::default();
            for (key, bytes) in store.list(Table::Logs)? {
                let line: LogLine = decode(Table::Logs, &key, &bytes)?;
                let seen = loaded.seen.entry(line.device.clone()).or_default();
                *seen = (*seen).max(line.seq);
                let app = loaded.apps.entry(line.app.clone()).or_default();
                app.last_id = app.last_id.max(line.id);
                app.lines.push_back(line);
            }
            for app in loaded.apps.values_mut() {
                app.lines.make_contiguous().sort_by_key(|l| l.id);
            }
            *guard = Some(loaded);
        }
        f(guard.as_mut().expect("loaded above"))
    }

    /// Take the lines `device` reported: number them, keep them, drop the oldest beyond the
    /// bound, and wake followers.
    pub(crate) fn add(
        &self,
        store: &dyn Store,
        device: &str,
        lines: Vec<LogLine>,
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let added = self.with(store, |loaded| {
            let seen = loaded.seen.entry(device.to_string()).or_default();
            let mut added = false;
            for mut line in lines {
                if line.seq <= *seen {
                    continue;
                }
                *seen = line.seq;
                line.device = device.to_string();
                let app = loaded.apps.entry(line.app.clone()).or_default();
                app.last_id += 1;
                line.id = app.last_id;
                store.put(Table::Logs, &key(&line.app, line.id), &encode(&line))?;
                app.lines.push_back(line);
                while app.lines.len() > LOG_LINES_KEPT {
                    if let Some(old) = app.lines.pop_front() {
                        store.delete(Table::Logs, &key(&old.app, old.id))?;
                    }
                }
                added = true;
            }
            Ok(added)
        })?;
        if added {
            self.added.send_modify(|n| *n += 1);
        }
        Ok(())
    }

    /// The app's kept lines past `after` (all of them without it).
    fn past(
        &self,
        store: &dyn Store,
        app: &str,
        after: Option<u64>,
    ) -> Result<Vec<LogLine>, StoreError> {
        self.with(store, |loaded| {
            Ok(loaded
                .apps
                .get(app)
                .map(|log| {
                    log.lines
                        .iter()
                        .filter(|l| after.is_none_or(|after| l.id > after))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    /// The app's lines past `after`; with `after`, wait up to `hold` for one to arrive (then
    /// none: the caller asks again).
    pub(crate) async fn read(
        &self,
        store: &dyn Store,
        app: &str,
        after: Option<u64>,
        hold: Duration,
    ) -> Result<Vec<LogLine>, StoreError> {
        let mut added = self.added.subscribe();
        let deadline = tokio::time::Instant::now() + hold;
        loop {
            added.borrow_and_update();
            let lines = self.past(store, app, after)?;
            if after.is_none() || !lines.is_empty() {
                return Ok(lines);
            }
            match tokio::time::timeout_at(deadline, added.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Ok(Vec::new()),
            }
        }
    }

    /// Forget a removed app's lines.
    pub(crate) fn forget(&self, store: &dyn Store, app: &str) -> Result<(), StoreError> {
        self.with(store, |loaded| {
            if let Some(log) = loaded.apps.remove(app) {
                for line in log.lines {
                    store.delete(Table::Logs, &key(app, line.id))?;
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    fn line(app: &str, seq: u64) -> LogLine {
        LogLine {
            app: app.into(),
            device: String::new(),
            seq,
            id: 0,
            ts_ms: 1,
            request_id: format!("r{seq}"),
            method: "GET".into(),
            path: "/".into(),
            status: 200,
            fuel: 1,
            micros: 1,
            error: None,
        }
    }

    #[tokio::test]
    async fn lines_are_taken_once_bounded_and_kept_across_a_restart() {
        let store = SledStore::temporary().unwrap();
        let logs = Logs::default();
        let batch: Vec<LogLine> = (1..=LOG_LINES_KEPT as u64 + 5)
            .map(|s| line("hello", s))
            .collect();
        logs.add(&store, "d1", batch.clone()).unwrap();
        // Sent again (a lost reply): nothing new.
        logs.add(&store, "d1", batch[batch.len() - 3..].to_vec())
            .unwrap();
        let kept = logs.read(&store, "hello", None, LOGS_HOLD).await.unwrap();
        assert_eq!(kept.len(), LOG_LINES_KEPT);
        assert_eq!(kept.last().unwrap().id, LOG_LINES_KEPT as u64 + 5);
        assert_eq!(kept[0].id, 6, "the oldest lines went first");
        assert_eq!(store.list(Table::Logs).unwrap().len(), LOG_LINES_KEPT);

        // A restarted control plane reads them back, numbering and de-duplication included.
        let restarted = Logs::default();
        let again = restarted
            .read(&store, "hello", None, LOGS_HOLD)
            .await
            .unwrap();
        assert_eq!(again, kept);
        restarted
            .add(&store, "d1", vec![line("hello", 3), line("hello", 1006)])
            .unwrap();
        let past = restarted
            .read(&store, "hello", Some(1005), LOGS_HOLD)
            .await
            .unwrap();
        assert_eq!(past.len(), 1);
        assert_eq!((past[0].seq, past[0].id), (1006, 1006));
    }

    #[tokio::test]
    async fn a_long_poll_returns_when_a_line_arrives() {
        let store = std::sync::Arc::new(SledStore::temporary().unwrap());
        let logs = std::sync::Arc::new(Logs::default());
        logs.add(store.as_ref(), "d1", vec![line("hello", 1)])
            .unwrap();
        let waiting = {
            let (logs, store) = (logs.clone(), store.clone());
            tokio::spawn(async move {
                logs.read(store.as_ref(), "hello", Some(1), Duration::from_secs(60))
                    .await
            })
        };
        tokio::task::yield_now().await;
        logs.add(store.as_ref(), "d1", vec![line("hello", 2)])
            .unwrap();
        let lines = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the long-poll returned once a line arrived")
            .unwrap()
            .unwrap();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].request_id, "r2");
    }
}
