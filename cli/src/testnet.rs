//! A private Tor network on one IPv4 address, for onion-service tests and demos: Debian's `tor`
//! as 3 directory authorities, N relays (all Exit, Guard, HSDir) and one client with a SOCKS
//! port, plus the matching arti configuration. On loopback (the default) nothing leaves the
//! machine; on another address (e.g. a node of the network lab) every node listens there, so
//! processes elsewhere on that network can use it.
//!
//! Layout under the directory: `authN/`, `relayN/`, `client/` (each a tor data directory with its
//! `torrc` and `notice.log`), `arti.toml` (the network part of an arti configuration) and
//! `testnet.json` (ports and fingerprints).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Authorities in the network.
pub const AUTHORITIES: usize = 3;

/// One tor node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// Nickname.
    pub nickname: String,
    /// Data directory.
    pub dir: PathBuf,
    /// OR port (0 for the client).
    pub or_port: u16,
    /// Directory port (authorities only).
    pub dir_port: u16,
    /// RSA identity fingerprint, hex without spaces.
    pub rsa: String,
    /// Ed25519 identity, unpadded base64.
    pub ed25519: String,
    /// v3 authority identity (authorities only).
    pub v3ident: String,
}

/// A created network.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Layout {
    /// The directory holding it all.
    pub dir: PathBuf,
    /// The address every node listens on.
    pub addr: Ipv4Addr,
    /// Authorities.
    pub authorities: Vec<Node>,
    /// Relays.
    pub relays: Vec<Node>,
    /// The client's SOCKS address.
    pub socks: SocketAddr,
    /// The arti configuration for this network.
    pub arti_config: PathBuf,
}

/// A port free on `addr` now (tor binds it a moment later).
fn free_port(addr: Ipv4Addr) -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind((addr, 0))
        .with_context(|| format!("binding {addr} (is it an address of this machine?)"))?
        .local_addr()?
        .port())
}

fn run(command: &mut Command, what: &str) -> anyhow::Result<String> {
    let output = command.stdin(Stdio::null()).output().with_context(|| {
        format!("running {what} (is Debian's tor installed? apt-get install tor)")
    })?;
    if !output.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The last word of the `--list-fingerprint` line naming `nickname`.
fn fingerprint(dir: &Path, nickname: &str, or_port: u16, kind: &str) -> anyhow::Result<String> {
    let out = run(
        Command::new("tor")
            .args([
                "--ignore-missing-torrc",
                "-f",
                "/dev/null",
                "--datadirectory",
            ])
            .arg(dir)
            .args(["--nickname", nickname, "--orport", &or_port.to_string()])
            .args(["--list-fingerprint", kind]),
        "tor --list-fingerprint",
    )?;
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with(&format!("{nickname} ")))
        .with_context(|| format!("no fingerprint line for {nickname} in {out:?}"))?;
    Ok(line[nickname.len() + 1..].replace(' ', ""))
}

fn common_torrc(node: &Node, authorities: &[Node], addr: Ipv4Addr) -> String {
    let mut torrc = format!(
        "DataDirectory {dir}\nNickname {nick}\nLog notice file {dir}/notice.log\nRunAsDaemon 0\n\
         TestingTorNetwork 1\nAssumeReachable 1\nPathsNeededToBuildCircuits 0.67\n\
         TestingDirAuthVoteExit *\nTestingDirAuthVoteHSDir *\nTestingDirAuthVoteGuard *\n\
         V3AuthNIntervalsValid 2\nTestingMinExitFlagThreshold 0\nSandbox 0\nAddress {addr}\n\
         ShutdownWaitLength 0\nContactInfo fog-testnet\n",
        dir = node.dir.display(),
        nick = node.nickname
    );
    for a in authorities {
        torrc.push_str(&format!(
            "DirAuthority {} orport={} no-v2 v3ident={} {addr}:{} {}\n",
            a.nickname, a.or_port, a.v3ident, a.dir_port, a.rsa
        ));
    }
    torrc
}

/// Make keys, torrcs and the arti configuration for a network with `relays` relays in `dir`,
/// every node listening on `addr` (127.0.0.1 for a network only this machine can use).
pub fn create(dir: &Path, relays: usize, addr: Ipv4Addr) -> anyhow::Result<Layout> {
    if relays < 5 {
        bail!("a usable private network needs at least 5 relays");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let mut authorities = Vec::new();
    for n in 1..=AUTHORITIES {
        let node_dir = dir.join(format!("auth{n}"));
        let keys = node_dir.join("keys");
        std::fs::create_dir_all(&keys)?;
        let (or_port, dir_port) = (free_port(addr)?, free_port(addr)?);
        let mut gencert = Command::new("tor-gencert")
            .current_dir(&keys)
            .args([
                "--create-identity-key",
                "--passphrase-fd",
                "0",
                "-m",
                "12",
                "-a",
            ])
            .arg(format!("{addr}:{dir_port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("running tor-gencert (is Debian's tor installed? apt-get install tor)")?;
        {
            use std::io::Write;
            let mut stdin = gencert.stdin.take().expect("piped");
            stdin.write_all(b"\n")?;
        }
        let status = gencert.wait()?;
        if !status.success() {
            bail!("tor-gencert failed for auth{n}");
        }
        let certificate = std::fs::read_to_string(keys.join("authority_certificate"))?;
        let v3ident = certificate
            .lines()
            .find_map(|l| l.strip_prefix("fingerprint "))
            .context("no fingerprint in the authority certificate")?
            .trim()
            .to_string();
        let nickname = format!("auth{n}");
        let rsa = fingerprint(&node_dir, &nickname, or_port, "rsa")?;
        let ed25519 = fingerprint(&node_dir, &nickname, or_port, "ed25519")?;
        authorities.push(Node {
            nickname,
            dir: node_dir,
            or_port,
            dir_port,
            rsa,
            ed25519,
            v3ident,
        });
    }
    let mut relay_nodes = Vec::new();
    for n in 1..=relays {
        let node_dir = dir.join(format!("relay{n}"));
        std::fs::create_dir_all(&node_dir)?;
        let or_port = free_port(addr)?;
        let nickname = format!("relay{n}");
        let rsa = fingerprint(&node_dir, &nickname, or_port, "rsa")?;
        let ed25519 = fingerprint(&node_dir, &nickname, or_port, "ed25519")?;
        relay_nodes.push(Node {
            nickname,
            dir: node_dir,
            or_port,
            dir_port: 0,
            rsa,
            ed25519,
            v3ident: String::new(),
        });
    }
    for a in &authorities {
        let mut torrc = common_torrc(a, &authorities, addr);
        torrc.push_str(&format!(
            "SocksPort 0\nORPort {addr}:{}\nDirPort {addr}:{}\nAuthoritativeDirectory 1\nV3AuthoritativeDirectory 1\n\
             V3AuthVotingInterval 20\nTestingV3AuthInitialVotingInterval 20\nV3AuthVoteDelay 4\n\
             TestingV3AuthInitialVoteDelay 4\nV3AuthDistDelay 4\nTestingV3AuthInitialDistDelay 4\n\
             AuthDirVoteStableGuaranteeMinUptime 0\nAuthDirVoteStableGuaranteeMTBF 0\n\
             ExitPolicy reject *:*\n",
            a.or_port, a.dir_port
        ));
        std::fs::write(a.dir.join("torrc"), torrc)?;
    }
    // Exits reach the network's own address only: loopback as a whole, or the one address.
    let exit_to = if addr.is_loopback() {
        "127.0.0.0/8".to_string()
    } else {
        format!("{addr}/32")
    };
    for r in &relay_nodes {
        let mut torrc = common_torrc(r, &authorities, addr);
        torrc.push_str(&format!(
            "SocksPort 0\nORPort {addr}:{}\nExitRelay 1\nExitPolicyRejectPrivate 0\nExitPolicy accept {exit_to}:*\n\
             ServerDNSResolvConfFile /dev/null\nServerDNSDetectHijacking 0\n",
            r.or_port
        ));
        std::fs::write(r.dir.join("torrc"), torrc)?;
    }
    let client = Node {
        nickname: "client".into(),
        dir: dir.join("client"),
        or_port: 0,
        dir_port: 0,
        rsa: String::new(),
        ed25519: String::new(),
        v3ident: String::new(),
    };
    std::fs::create_dir_all(&client.dir)?;
    let socks = SocketAddr::from((addr, free_port(addr)?));
    let mut torrc = common_torrc(&client, &authorities, addr);
    // A C tor client starts with a 60 s circuit build timeout and learns a shorter one only
    // after 100 circuits, which a visitor on this network rarely builds. That timeout also
    // bounds how long a rendezvous whose introduction was acknowledged waits for the service (3
    // x the timeout + 1 s): with 60 s, a visit that reached an onion service as it died holds
    // every later visit to that address for 181 s. 10 s is still generous for circuits between
    // processes of one machine; tor goes on learning from there.
    torrc.push_str(&format!("SocksPort {socks}\nCircuitBuildTimeout 10\n"));
    std::fs::write(client.dir.join("torrc"), torrc)?;

    // arti: the same authorities, every relay as a fallback cache, and the settings a
    // one-address network needs (every relay shares the address, so no subnet families; the
    // address may be a local one).
    let mut arti = String::from("[tor_network]\nfallback_caches = [\n");
    for node in authorities.iter().chain(&relay_nodes) {
        arti.push_str(&format!(
            "  {{ rsa_identity = \"{}\", ed_identity = \"{}\", orports = [\"{addr}:{}\"] }},\n",
            node.rsa, node.ed25519, node.or_port
        ));
    }
    arti.push_str("]\n[tor_network.authorities]\nv3idents = [\n");
    for a in &authorities {
        arti.push_str(&format!("  \"{}\",\n", a.v3ident));
    }
    arti.push_str(
        "]\n\n[path_rules]\nipv4_subnet_family_prefix = 33\nipv6_subnet_family_prefix = 129\n\n\
         [address_filter]\nallow_local_addrs = true\n\n[override_net_params]\nhsdir_interval = 8\n",
    );
    let arti_config = dir.join("arti.toml");
    std::fs::write(&arti_config, arti)?;
    let layout = Layout {
        dir: dir.clone(),
        addr,
        authorities,
        relays: relay_nodes,
        socks,
        arti_config,
    };
    std::fs::write(
        dir.join("testnet.json"),
        serde_json::to_vec_pretty(&layout)?,
    )?;
    Ok(layout)
}

/// A running network; stopped (every tor process) when dropped.
#[derive(Debug)]
pub struct Testnet {
    /// What runs.
    pub layout: Layout,
    children: Vec<Child>,
}

impl Layout {
    fn node_dirs(&self) -> Vec<PathBuf> {
        self.authorities
            .iter()
            .chain(&self.relays)
            .map(|n| n.dir.clone())
            .chain([self.dir.join("client")])
            .collect()
    }

    /// Start every node; with `extra_client`, more torrc lines for the client (e.g. a C tor
    /// onion service).
    pub fn start(&self, extra_client: &str) -> anyhow::Result<Testnet> {
        if !extra_client.is_empty() {
            let path = self.dir.join("client").join("torrc");
            let mut torrc = std::fs::read_to_string(&path)?;
            torrc.push_str(extra_client);
            std::fs::write(&path, torrc)?;
        }
        let mut testnet = Testnet {
            layout: self.clone(),
            children: Vec::new(),
        };
        for dir in self.node_dirs() {
            let _ = std::fs::remove_file(dir.join("notice.log"));
            let mut command = Command::new("tor");
            command
                .arg("-f")
                .arg(dir.join("torrc"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Every tor goes when the thread that started it goes (so start the network from
            // a thread that lives as long as it should), however that ends.
            // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of the child being created; it
            // allocates nothing and is async-signal-safe.
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = command
                .spawn()
                .context("starting tor (is Debian's tor installed? apt-get install tor)")?;
            testnet.children.push(child);
        }
        Ok(testnet)
    }
}

impl Testnet {
    /// Wait until the C tor client has bootstrapped on the network (a consensus exists and
    /// circuits can be built), reporting progress through `progress`.
    pub fn wait_ready(&mut self, timeout: Duration, progress: &dyn Fn(&str)) -> anyhow::Result<()> {
        let log = self.layout.dir.join("client").join("notice.log");
        let started = Instant::now();
        let mut last = String::new();
        loop {
            for child in &mut self.children {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "a tor process exited early ({status}); see notice.log files in {}",
                        self.layout.dir.display()
                    );
                }
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().rev().find(|l| l.contains("Bootstrapped")) {
                if line.contains("Bootstrapped 100%") {
                    return Ok(());
                }
                let step = line
                    .split("Bootstrapped ")
                    .nth(1)
                    .unwrap_or(line)
                    .to_string();
                if step != last {
                    progress(&step);
                    last = step;
                }
            }
            if started.elapsed() > timeout {
                bail!(
                    "the private Tor network was not ready after {timeout:?} (last: {last:?}); see {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stop every tor process.
    pub fn stop(&mut self) {
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(5);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Testnet {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file the network is made of names the chosen address, and 127.0.0.1 nowhere:
    /// 127.0.0.2 is another address of the machine (all of 127/8 is), so no root is needed.
    /// (A lab address, with its one-address exit policy, is the lab onion test's.)
    #[test]
    fn every_node_and_the_arti_configuration_follow_the_address() {
        assert!(
            Command::new("tor").arg("--version").output().is_ok(),
            "this test needs Debian's tor: run scripts/setup.sh (apt-get install tor)"
        );
        let dir = tempfile::tempdir().unwrap();
        let addr = Ipv4Addr::new(127, 0, 0, 2);
        let layout = create(dir.path(), 5, addr).unwrap();
        assert_eq!(layout.addr, addr);
        assert_eq!(layout.socks.ip(), addr);
        let mut files = vec![layout.arti_config.clone()];
        files.extend(layout.node_dirs().iter().map(|d| d.join("torrc")));
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(!text.contains("127.0.0.1"), "{}:\n{text}", file.display());
            assert!(text.contains("127.0.0.2:"), "{}:\n{text}", file.display());
        }
        let auth = std::fs::read_to_string(layout.authorities[0].dir.join("torrc")).unwrap();
        assert!(auth.contains("Address 127.0.0.2\n"), "{auth}");
        let authorities = auth
            .lines()
            .filter(|l| l.starts_with("DirAuthority ") && l.contains(" 127.0.0.2:"))
            .count();
        assert_eq!(authorities, AUTHORITIES, "{auth}");
        let relay = std::fs::read_to_string(layout.relays[0].dir.join("torrc")).unwrap();
        // Another loopback address: exits reach loopback as a whole, as with the default.
        assert!(
            relay.contains("ExitPolicy accept 127.0.0.0/8:*\n"),
            "{relay}"
        );
    }
}
