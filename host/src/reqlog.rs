//! The host's request log: one JSON line per request served, in files under the host's data
//! directory rotated by size (a bounded number of them), and the lines the control plane has not
//! acknowledged yet, which a restart finds again on disk and ships.
//!
//! A line carries what `fog logs` shows (app, time, request id, method, path without its query,
//! status, fuel, duration, failure kind): never a visitor's address, which a host never sees.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fog_proto::api::{LogLine, MAX_LOG_LINES};

/// The file being written; older ones are `requests.1.jsonl` (newest) to
/// `requests.<max_files - 1>.jsonl` (oldest).
const CURRENT: &str = "requests.jsonl";
/// The highest sequence number the control plane acknowledged (decimal text).
const ACKED: &str = "acked";

/// Default size at which the current file is rotated.
pub const DEFAULT_FILE_BYTES: u64 = 8 << 20;
/// Default number of files kept (the current one included): at most 32 MiB of logs.
pub const DEFAULT_FILES: usize = 4;

/// Why the request log cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("request log in {path}: {source}")]
pub struct LogError {
    /// The file or directory.
    pub path: PathBuf,
    /// What failed.
    #[source]
    pub source: std::io::Error,
}

/// Where and how much to keep on disk.
#[derive(Debug)]
struct Disk {
    dir: PathBuf,
    max_file_bytes: u64,
    max_files: usize,
    file: Option<File>,
    len: u64,
}

#[derive(Debug, Default)]
struct Inner {
    next_seq: u64,
    acked: u64,
    /// Lines not acknowledged yet, oldest first, at most [`MAX_LOG_LINES`] (older ones stay on
    /// disk only).
    pending: VecDeque<LogLine>,
    disk: Option<Disk>,
}

/// The request log of one host (all its apps).
#[derive(Debug)]
pub struct RequestLog {
    inner: Mutex<Inner>,
}

impl Default for RequestLog {
    fn default() -> RequestLog {
        RequestLog::in_memory()
    }
}

impl RequestLog {
    /// A log kept in memory only (hosts without a data directory, `fog run`).
    pub fn in_memory() -> RequestLog {
        RequestLog {
            inner: Mutex::new(Inner {
                next_seq: 1,
                ..Inner::default()
            }),
        }
    }

    /// The log in `dir`, rotating its file past `max_file_bytes` and keeping `max_files` files
    /// (at least one); lines written before a restart and never acknowledged are pending again.
    pub fn open(dir: &Path, max_file_bytes: u64, max_files: usize) -> Result<RequestLog, LogError> {
        let error = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LogError { path, source }
        };
        std::fs::create_dir_all(dir).map_err(error(dir))?;
        let acked_path = dir.join(ACKED);
        let acked = match std::fs::read_to_string(&acked_path) {
            Ok(text) => text.trim().parse().unwrap_or(0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(error(&acked_path)(e)),
        };
        let max_files = max_files.max(1);
        // Newest file first; a file that holds an acknowledged line ends the search, since every
        // older line was acknowledged too.
        let mut found: Vec<LogLine> = Vec::new();
        let mut last_seq = acked;
        for index in 0..max_files {
            let path = file_path(dir, index);
            let file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(error(&path)(e)),
            };
            let mut reached_acked = false;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(error(&path))?;
                // A line torn by a crash mid-write is skipped, not fatal.
                let Ok(line) = serde_json::from_str::<LogLine>(&line) else {
                    continue;
                };
                last_seq = last_seq.max(line.seq);
                if line.seq > acked {
                    found.push(line);
                } else {
                    reached_acked = true;
                }
            }
            if reached_acked {
                break;
            }
        }
        found.sort_by_key(|l| l.seq);
        let skip = found.len().saturating_sub(MAX_LOG_LINES);
        let pending: VecDeque<LogLine> = found.into_iter().skip(skip).collect();
        let current = dir.join(CURRENT);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .map_err(error(&current))?;
        let len = file.metadata().map_err(error(&current))?.len();
        Ok(RequestLog {
            inner: Mutex::new(Inner {
                next_seq: last_seq + 1,
                acked,
                pending,
                disk: Some(Disk {
                    dir: dir.to_path_buf(),
                    max_file_bytes,
                    max_files,
                    file: Some(file),
                    len,
                }),
            }),
        })
    }

    /// Log one request: it gets the next sequence number, goes to disk (if the log has a
    /// directory) and waits for the control plane.
    pub fn record(&self, mut line: LogLine) {
        let mut inner = self.inner.lock().expect("request log lock");
        line.seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(disk) = &mut inner.disk {
            let mut text = serde_json::to_vec(&line).expect("log lines always serialise");
            text.push(b'\n');
            if let Err(err) = disk.write(&text) {
                // The request was served; losing its line on disk must not fail it.
                tracing::warn!(
                    "cannot write the request log in {}: {err}",
                    disk.dir.display()
                );
            }
        }
        if inner.pending.len() == MAX_LOG_LINES {
            inner.pending.pop_front();
        }
        inner.pending.push_back(line);
    }

    /// The oldest `max` lines not acknowledged yet.
    pub fn pending(&self, max: usize) -> Vec<LogLine> {
        let inner = self.inner.lock().expect("request log lock");
        inner.pending.iter().take(max).cloned().collect()
    }

    /// The control plane holds every line up to `seq`: forget them here (they stay on disk
    /// until rotated away), and remember it across restarts.
    pub fn acknowledge(&self, seq: u64) {
        let mut inner = self.inner.lock().expect("request log lock");
        if seq <= inner.acked {
            return;
        }
        inner.acked = seq;
        while inner.pending.front().is_some_and(|l| l.seq <= seq) {
            inner.pending.pop_front();
        }
        if let Some(disk) = &inner.disk {
            let path = disk.dir.join(ACKED);
            let temporary = disk.dir.join(format!("{ACKED}.new"));
            let written = std::fs::write(&temporary, seq.to_string())
                .and_then(|()| std::fs::rename(&temporary, &path));
            if let Err(err) = written {
                // At worst the lines are sent again after a restart, and the control plane
                // takes each sequence number of a device once.
                tracing::warn!("cannot write {}: {err}", path.display());
            }
        }
    }
}

/// `requests.jsonl` (index 0), else `requests.<index>.jsonl`.
fn file_path(dir: &Path, index: usize) -> PathBuf {
    if index == 0 {
        dir.join(CURRENT)
    } else {
        dir.join(format!("requests.{index}.jsonl"))
    }
}

impl Disk {
    /// Append `text` (whole lines) to the current file, rotating first if it would grow past
    /// its limit. One `write` per line, so a crash tears at most the last line.
    fn write(&mut self, text: &[u8]) -> std::io::Result<()> {
        if self.len > 0 && self.len + text.len() as u64 > self.max_file_bytes {
            self.rotate()?;
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(CURRENT))?,
            ),
        };
        file.write_all(text)?;
        self.len += text.len() as u64;
        Ok(())
    }

    /// Shift every file one place older, dropping the oldest, and start an empty current file.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let oldest = file_path(&self.dir, self.max_files - 1);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for index in (0..self.max_files - 1).rev() {
            match std::fs::rename(file_path(&self.dir, index), file_path(&self.dir, index + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(app: &str, n: u64) -> LogLine {
        LogLine {
            app: app.into(),
            device: String::new(),
            seq: 0,
            id: 0,
            ts_ms: 1_700_000_000_000 + n,
            request_id: format!("r{n}"),
            method: "GET".into(),
            path: format!("/page/{n}"),
            status: 200,
            fuel: 1000,
            micros: 50,
            error: None,
        }
    }

    fn disk_bytes(dir: &Path) -> (u64, usize) {
        let mut total = 0;
        let mut files = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().ends_with(".jsonl") {
                total += entry.metadata().unwrap().len();
                files += 1;
            }
        }
        (total, files)
    }

    #[test]
    fn rotation_keeps_the_disk_bounded_and_the_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = RequestLog::open(dir.path(), 1024, 3).unwrap();
        for n in 0..500 {
            log.record(line("hello", n));
        }
        let (bytes, files) = disk_bytes(dir.path());
        assert_eq!(files, 3, "current plus two rotated files");
        assert!(
            bytes <= 3 * 1024,
            "{bytes} bytes on disk for a 3 x 1 KiB bound"
        );
        // The newest line is in the current file, and the oldest kept is recent.
        let current = std::fs::read_to_string(dir.path().join(CURRENT)).unwrap();
        assert!(current.contains("\"request_id\":\"r499\""), "{current}");
        let oldest = std::fs::read_to_string(dir.path().join("requests.2.jsonl")).unwrap();
        let first: LogLine = serde_json::from_str(oldest.lines().next().unwrap()).unwrap();
        assert!(first.seq > 400, "line {} survived rotation", first.seq);
    }

    #[test]
    fn unacknowledged_lines_are_pending_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = RequestLog::open(dir.path(), DEFAULT_FILE_BYTES, DEFAULT_FILES).unwrap();
            for n in 0..5 {
                log.record(line("hello", n));
            }
            let sent = log.pending(3);
            assert_eq!(sent.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2, 3]);
            log.acknowledge(3);
            assert_eq!(log.pending(10).len(), 2);
        }
        let log = RequestLog::open(dir.path(), DEFAULT_FILE_BYTES, DEFAULT_FILES).unwrap();
        let pending = log.pending(10);
        assert_eq!(pending.iter().map(|l| l.seq).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(pending[0].request_id, "r3");
        // Numbering continues where it stopped.
        log.record(line("hello", 5));
        assert_eq!(log.pending(10).last().unwrap().seq, 6);
    }
}
