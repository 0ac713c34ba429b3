//! Running the system tools the lab is made with (`ip`, `nft`, `tc`, `sysctl`) and turning
//! their failures into `LabError`s that say what failed and why.

use std::io::{ErrorKind, Write};
use std::process::{Command, Output, Stdio};

use crate::LabError;

/// The Debian package each tool comes from, for the "not installed" message.
fn package_of(tool: &str) -> &'static str {
    match tool {
        "nft" => "nftables",
        "ip" | "tc" => "iproute2",
        "sysctl" => "procps",
        _ => "unknown",
    }
}

fn run_with(tool: &'static str, args: &[&str], stdin: Option<&str>) -> Result<Output, LabError> {
    let mut cmd = Command::new(tool);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            LabError::MissingTool {
                tool,
                package: package_of(tool),
            }
        } else {
            LabError::io(format!("cannot run {tool}"), e)
        }
    })?;
    if let Some(input) = stdin {
        // The pipe is dropped after writing so the tool sees end of input.
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input.as_bytes())
            .map_err(|e| LabError::io(format!("cannot write to {tool}"), e))?;
    }
    child
        .wait_with_output()
        .map_err(|e| LabError::io(format!("cannot wait for {tool}"), e))
}

fn check(tool: &str, args: &[&str], out: Output) -> Result<String, LabError> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            command: format!("{tool} {}", args.join(" ")),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Runs `tool args…`; its stdout, or an error with its stderr.
pub(crate) fn run(tool: &'static str, args: &[&str]) -> Result<String, LabError> {
    let out = run_with(tool, args, None)?;
    check(tool, args, out)
}

/// Runs `tool args…` with `input` on stdin (an nft script).
pub(crate) fn run_stdin(
    tool: &'static str,
    args: &[&str],
    input: &str,
) -> Result<String, LabError> {
    let out = run_with(tool, args, Some(input))?;
    check(tool, args, out)
}

/// Checks that the tools exist, so a missing package is reported by name rather than by the
/// first command that happens to fail.
pub(crate) fn check_tools() -> Result<(), LabError> {
    for (tool, arg) in [("ip", "-V"), ("nft", "--version"), ("tc", "-V")] {
        run(tool, &[arg])?;
    }
    Ok(())
}

/// The names of all network namespaces `ip netns` knows.
pub(crate) fn list_namespaces() -> Result<Vec<String>, LabError> {
    let out = run("ip", &["netns", "list"])?;
    // Lines look like "name (id: 3)" or just "name".
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Kills every process inside namespace `ns` (children of a `fog` process too, which the lab
/// never saw), so deleting the namespace really frees it.
pub(crate) fn kill_namespace_processes(ns: &str) {
    let Ok(pids) = run("ip", &["netns", "pids", ns]) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        // SAFETY: kill(2) has no memory effects; a pid that already exited just fails.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Deletes namespace `ns` after killing what runs in it.
pub(crate) fn delete_namespace(ns: &str) -> Result<(), LabError> {
    kill_namespace_processes(ns);
    run("ip", &["netns", "delete", ns]).map(drop)
}
