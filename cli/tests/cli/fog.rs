//! Helpers: start `fog` processes and read the address they print.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub const FOG: &str = env!("CARGO_BIN_EXE_fog");

/// The admission token every test fog runs with: `fog control` makes it the fog's, and hosts
/// and relays register with it (admitted), as an operator's own machines would. Tests of
/// admission itself override it.
pub const ADMISSION_TOKEN: &str = "test-admission-token-0123456789";

/// A `fog` process, killed when dropped.
#[derive(Debug)]
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    /// The first line it printed (a host names its device id there).
    pub line: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// `kill -9`.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("waiting for fog");
        assert!(status.success(), "fog exited with {status} on SIGTERM");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Start `fog ARGS` and wait for its first line, which names its address as `http://ADDR`.
pub fn spawn(args: &[&str]) -> Running {
    spawn_with_env(args, &[])
}

/// [`spawn`] with extra environment variables.
pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut child = Command::new(FOG)
        .args(args)
        // FOG_TEST_LOG: a filter of one's own when investigating a failure.
        .env(
            "FOG_LOG",
            std::env::var("FOG_TEST_LOG").unwrap_or_else(|_| "warn,tor_netdir=error".into()),
        )
        .env("FOG_ADMISSION_TOKEN", ADMISSION_TOKEN)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting fog");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("reading fog's first line");
    // Keep draining stdout so the process never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
            sink.clear();
        }
    });
    // The first word that is an address, with or without a scheme (http://ADDR, ADDR).
    let addr = line
        .split_whitespace()
        .filter_map(|word| {
            let word = word.rsplit("://").next()?;
            word.split(['/', ',']).next()?.parse().ok()
        })
        .next()
        .unwrap_or_else(|| panic!("unexpected first line from fog {args:?}: {line:?}"));
    Running { child, addr, line }
}

/// Run `fog ARGS` to completion; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(FOG).args(args).output().expect("running fog");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
