//! Processes the lab runs inside its namespaces: a handle to stop, kill or wait for one and to
//! read what it printed. The lab kills whatever is left when it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::LabError;

/// A process running in one of the lab's namespaces (started by [`crate::Lab::spawn`]).
///
/// Dropping the handle does not stop the process; the lab kills it when the lab is dropped.
/// Its stdout and stderr go to one log file, [`LabProcess::log`].
#[derive(Debug, Clone)]
pub struct LabProcess {
    pub(crate) node: String,
    pub(crate) pid: u32,
    pub(crate) child: Arc<Mutex<Child>>,
    pub(crate) log: PathBuf,
}

impl LabProcess {
    /// The node (namespace) it runs in.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Its process id (the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it has printed so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Its exit status if it has exited.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>, LabError> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        child
            .try_wait()
            .map_err(|e| LabError::io(format!("cannot wait for pid {}", self.pid), e))
    }

    /// Waits until it exits or `timeout` passes; `None` if it is still running.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>, LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGKILL (`kill -9`) and reaps it.
    pub fn kill(&self) -> Result<ExitStatus, LabError> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        // An already exited child makes kill fail; wait still returns its status.
        let _ = child.kill();
        child
            .wait()
            .map_err(|e| LabError::io(format!("cannot wait for pid {}", self.pid), e))
    }

    /// Sends SIGTERM and waits up to `grace` for it to exit, then kills it.
    pub fn stop(&self, grace: Duration) -> Result<ExitStatus, LabError> {
        if self.try_wait()?.is_none() {
            // SAFETY: kill(2) has no memory effects. The child was not reaped a moment ago, so
            // the pid is still ours unless another clone of this handle reaps it in between.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
            }
        }
        match self.wait_timeout(grace)? {
            Some(status) => Ok(status),
            None => self.kill(),
        }
    }
}
