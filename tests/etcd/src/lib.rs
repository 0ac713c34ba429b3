//! Real etcd members on loopback for Fog's tests and benchmarks: Debian's `etcd` binary (package
//! `etcd-server`), each member with its own client and peer ports and a temporary data
//! directory, waited on until every member reports healthy, killed when the cluster is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long members get to elect a leader and report healthy.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Why a cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// The `etcd` binary is not installed.
    #[error(
        "the etcd binary ({binary}) cannot be run: {source}; install Debian's etcd-server \
         (scripts/setup.sh does)"
    )]
    Missing {
        /// What was run.
        binary: String,
        /// The error.
        source: std::io::Error,
    },
    /// A member exited or never became healthy.
    #[error("etcd member {member} did not start: {reason}; its log ends with:\n{log}")]
    Unhealthy {
        /// The member's name.
        member: String,
        /// What went wrong.
        reason: String,
        /// The end of the member's log.
        log: String,
    },
    /// Local files or ports could not be had.
    #[error("preparing etcd members: {0}")]
    Io(#[source] std::io::Error),
}

/// One member.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    log: PathBuf,
    child: Option<Child>,
}

/// A cluster of etcd members on 127.0.0.1, killed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    /// Data directories and logs; removed after the members are killed.
    dir: tempfile::TempDir,
}

/// `n` distinct free ports on loopback (all held open at once, so no two are the same).
fn free_ports(n: usize) -> Result<Vec<u16>, EtcdError> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(EtcdError::Io)?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(EtcdError::Io))
        .collect()
}

/// The etcd binary: `FOG_ETCD` if set, else `etcd` on the `PATH`.
fn binary() -> String {
    std::env::var("FOG_ETCD").unwrap_or_else(|_| "etcd".into())
}

/// `GET /health` on a member's client port: true once it has a leader and answers.
fn healthy(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer.starts_with("HTTP/1.0 200") && answer.contains("\"health\":\"true\""))
    };
    attempt().unwrap_or(false)
}

fn log_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl EtcdCluster {
    /// Start `n` members and wait until every one is healthy. Ports are picked free just before
    /// the start; if another process takes one meanwhile, the start is tried again.
    pub fn start(n: usize) -> Result<EtcdCluster, EtcdError> {
        Self::start_with(n, &[])
    }

    /// [`EtcdCluster::start`] with `flags` added to every member's command line (such as
    /// `--max-request-bytes`).
    pub fn start_with(n: usize, flags: &[&str]) -> Result<EtcdCluster, EtcdError> {
        let mut last = None;
        for _ in 0..3 {
            match Self::try_start(n, flags) {
                Ok(cluster) => return Ok(cluster),
                Err(err @ EtcdError::Missing { .. }) => return Err(err),
                Err(err) => last = Some(err),
            }
        }
        Err(last.expect("three attempts"))
    }

    fn try_start(n: usize, flags: &[&str]) -> Result<EtcdCluster, EtcdError> {
        let dir = tempfile::Builder::new()
            .prefix("fog-etcd-")
            .tempdir()
            .map_err(EtcdError::Io)?;
        let ports = free_ports(2 * n)?;
        let token = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "fog".into());
        let peer = |i: usize| format!("http://127.0.0.1:{}", ports[2 * i + 1]);
        let initial: Vec<String> = (0..n).map(|i| format!("m{i}={}", peer(i))).collect();
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            dir,
        };
        for i in 0..n {
            let name = format!("m{i}");
            let client = format!("http://127.0.0.1:{}", ports[2 * i]);
            let log = cluster.dir.path().join(format!("{name}.log"));
            let log_file = std::fs::File::create(&log).map_err(EtcdError::Io)?;
            let mut command = Command::new(binary());
            // A member's environment must not configure it (ETCD_* variables would).
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ETCD_") {
                    command.env_remove(key);
                }
            }
            let child = command
                .args(["--name", &name])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(&name))
                .args(["--listen-client-urls", &client])
                .args(["--advertise-client-urls", &client])
                .args(["--listen-peer-urls", &peer(i)])
                .args(["--initial-advertise-peer-urls", &peer(i)])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(["--logger", "zap", "--log-outputs", "stderr"])
                .args(["--log-level", "warn"])
                .args(flags)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(|source| EtcdError::Missing {
                    binary: binary(),
                    source,
                })?;
            cluster.members.push(Member {
                name,
                client_port: ports[2 * i],
                log,
                child: Some(child),
            });
        }
        let deadline = Instant::now() + START_DEADLINE;
        for member in &mut cluster.members {
            loop {
                if let Some(status) = member
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    return Err(EtcdError::Unhealthy {
                        member: member.name.clone(),
                        reason: format!("it exited with {status}"),
                        log: log_tail(&member.log),
                    });
                }
                if healthy(member.client_port) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(EtcdError::Unhealthy {
                        member: member.name.clone(),
                        reason: format!("not healthy within {START_DEADLINE:?}"),
                        log: log_tail(&member.log),
                    });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(cluster)
    }

    /// Client endpoints, `127.0.0.1:PORT`, one per member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// `etcd://127.0.0.1:P1,127.0.0.1:P2,...`, as `fog control --store` takes it.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoints().join(","))
    }

    /// `kill -9` member `index` (the others keep their quorum if they are a majority).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.members[index].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for index in 0..self.members.len() {
            self.kill(index);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_members_start_healthy_and_stop_on_drop() {
        let cluster = EtcdCluster::start(3).expect("etcd members");
        let ports: Vec<u16> = cluster.members.iter().map(|m| m.client_port).collect();
        assert_eq!(cluster.endpoints().len(), 3);
        assert!(cluster.url().starts_with("etcd://127.0.0.1:"));
        assert!(ports.iter().all(|p| healthy(*p)));
        let data = cluster.dir.path().to_path_buf();
        drop(cluster);
        assert!(
            ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_err())
        );
        assert!(!data.exists());
    }
}
