//! Running code of this process inside a lab namespace: a scoped thread joins the namespace
//! (setns affects only the calling thread), so sockets it makes live there for good, whichever
//! thread uses them later.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::thread;

use crate::LabError;

/// Where `ip netns` keeps its named namespaces.
pub(crate) fn namespace_path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// Runs `f` on a thread that has joined network namespace `ns`, and returns what it returns.
/// A panic in `f` is passed on to the caller.
pub(crate) fn in_namespace<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
    let path = namespace_path(ns);
    let file = File::open(&path).map_err(|e| LabError::io(format!("cannot open {path}"), e))?;
    let joined = thread::scope(|scope| {
        let worker = thread::Builder::new()
            .name(format!("lab {ns}"))
            .spawn_scoped(scope, move || {
                // SAFETY: setns(2) on a valid namespace fd only changes this thread's network
                // namespace; the thread ends when `f` returns, so nothing else runs in it.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .map_err(|e| LabError::io("cannot start a thread", e))?;
        match worker.join() {
            Ok(result) => Ok(result),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    joined.map_err(|e| LabError::io(format!("cannot join network namespace {ns}"), e))
}

/// Writes `value` to a `/proc/sys/net/...` setting of namespace `ns` (these files belong to the
/// network namespace of the thread that opens them).
pub(crate) fn write_sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    in_namespace(ns, || std::fs::write(&path, value))?
        .map_err(|e| LabError::io(format!("cannot set {key}={value} in {ns}"), e))
}
