//! The network lab: a small internet on one Linux machine, made of network namespaces, in which
//! Fog's tests run real processes — public hosts on an "internet", devices behind NATs.
//!
//! ```no_run
//! use std::process::Command;
//! use std::time::Duration;
//! use fog_lab::Lab;
//!
//! # fn main() -> Result<(), fog_lab::LabError> {
//! let lab = Lab::builder()
//!     .public("control")
//!     .public("router1")
//!     .nated("dev1")
//!     .build()?; // an error that says why when not root or tools are missing
//! let control = lab.addr("control")?; // 198.18.0.10
//! let mut cmd = Command::new("fog");
//! cmd.args(["host", "--control", &format!("http://{control}:7070")]);
//! let host = lab.spawn("dev1", cmd)?; // runs inside dev1's namespace, behind its NAT
//! lab.set_netem("dev1", Duration::from_millis(80), 0.0)?; // +80 ms round trip on dev1's link
//! println!("{}", host.log());
//! # Ok(()) }
//! // Dropping `lab` kills its processes and deletes its namespaces, also when a test panics.
//! ```
//!
//! # Topology and address plan
//!
//! Everything is IPv4 in the benchmarking range 198.18.0.0/15; no namespace has a link to the
//! machine's own network (the root namespace is never touched).
//!
//! - **internet** — a namespace holding bridge `br0`, 198.18.0.1/24. It does not forward.
//! - **public nodes** (control plane, routers, public hosts), in the order added:
//!   198.18.0.10, .11, … on `eth0`, a port of the bridge. Default route via 198.18.0.1.
//! - **NATed device** number *k* (1, 2, … in the order added) gets two namespaces:
//!   - `<device>-nat`: `wan` 198.18.0.(100+k) on the bridge, `lan` 198.19.k.1/24; forwards,
//!     masquerades what leaves through `wan`, and accepts from `wan` only packets of
//!     connections opened from inside (conntrack established/related); nothing is forwarded
//!     in, nothing listens on `wan`.
//!   - `<device>`: `eth0` 198.19.k.2/24, default route via its NAT.
//!
//! Every namespace on the bridge (internet, public nodes, NATs) also has a route to every
//! device LAN via that device's NAT, as a neighbour on an ISP's network would: so only the NAT's
//! filter keeps connections out, and the tests prove that it does.
//!
//! Node names are `[a-z][a-z0-9]*`, at most 12 characters; besides the names given to the
//! builder, `"internet"` and `"<device>-nat"` name the other namespaces.
//!
//! # Links, delay and loss
//!
//! [`Lab::set_netem`] adds delay (to the round trip: half each way) and random loss (each
//! direction) to a node's uplink: a public node's link to the bridge, a device's link to its
//! NAT, or (`"<device>-nat"`) a NAT's link to the bridge. With [`Links::Kernel`] the links are
//! veth pairs impaired with `tc netem`; with [`Links::DelayLine`] they are pairs of TAP devices
//! joined by this process, which delays and drops frames itself (for kernels without netem; the
//! links then live only as long as the `Lab`). [`Links::Auto`] (the default) picks Kernel when
//! the kernel has netem.
//!
//! # Reaching into the lab
//!
//! - [`Lab::spawn`] runs a real process inside a node (`ip netns exec`), its output in
//!   [`LabProcess::log`]; [`LabProcess::kill`] is `kill -9`, [`LabProcess::stop`] SIGTERM.
//! - [`Lab::command`] gives an `ip netns exec` command to run yourself; [`Lab::run`] runs one to
//!   completion and returns its stdout (`lab.run("dev1-nat", "nft", &["list", "ruleset"])`).
//! - [`Lab::tcp_listen`], [`Lab::tcp_connect`] (with the handshake's duration) and
//!   [`Lab::wait_for_tcp`] (until a process in the lab listens) make sockets of this process
//!   inside a node; [`Lab::in_ns`] runs any closure there (e.g. to make a socket for tokio).
//! - [`Lab::addr`], [`Lab::public_addr`] and [`Lab::ns`] say where a node is.
//!
//! # Names, parallel tests and cleanup
//!
//! A lab's namespaces are `fl<pid>x<n>-<node>`, so labs of parallel tests and processes never
//! collide. `Drop` kills the lab's processes (and anything else inside its namespaces) and
//! deletes the namespaces, also while a test panics; building a lab also removes what labs of
//! processes that no longer exist left behind ([`sweep_stale`]).
//! `scripts/lab.sh` builds a lab named `foglab-<node>` that outlives its command
//! ([`LabBuilder::name`], [`Lab::keep`], [`remove_named`]).

mod cmd;
mod delayline;
mod error;
mod netns;
mod process;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use delayline::DelayLine;
pub use error::LabError;
pub use process::LabProcess;

/// The internet bridge's own address (the internet namespace).
pub const INTERNET_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Public node number `i` (from 0) gets 198.18.0.(10+i).
const FIRST_PUBLIC: u8 = 10;
const MAX_PUBLIC: usize = 90;
/// NAT number `k` (from 1) gets 198.18.0.(100+k) on the internet and LAN 198.19.k.0/24.
const NAT_BASE: u8 = 100;
const MAX_NATED: usize = 150;
/// The longest node name: interface names (15 bytes) are `p-<node>` on the bridge.
const MAX_NAME: usize = 12;
/// Prefix of the per-process lab names, `fl<pid>x<n>`.
const AUTO_PREFIX: &str = "fl";

/// How the lab's links are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Links {
    /// Kernel links (veth) when the kernel has netem, else delay lines.
    #[default]
    Auto,
    /// veth pairs; delay and loss with `tc netem` (fails if the kernel lacks netem).
    Kernel,
    /// TAP pairs joined by this process, which delays and drops frames itself.
    DelayLine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Public,
    Nated,
}

/// Describes a lab to build: [`Lab::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct LabBuilder {
    nodes: Vec<(String, Kind)>,
    links: Links,
    name: Option<String>,
}

impl LabBuilder {
    /// Adds a public node: a namespace on the internet bridge with a public address.
    pub fn public(mut self, name: &str) -> Self {
        self.nodes.push((name.to_owned(), Kind::Public));
        self
    }

    /// Adds a device behind its own NAT: namespaces `name` and `name-nat`.
    pub fn nated(mut self, name: &str) -> Self {
        self.nodes.push((name.to_owned(), Kind::Nated));
        self
    }

    /// Chooses how links are made (default [`Links::Auto`]).
    pub fn links(mut self, links: Links) -> Self {
        self.links = links;
        self
    }

    /// Names the lab's namespaces `<name>-<node>` instead of the per-process `fl<pid>x<n>`, for a
    /// lab meant to outlive its process ([`Lab::keep`], [`remove_named`]). Stale-lab sweeps
    /// never touch named labs.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_owned());
        self
    }

    /// Builds the lab. On any failure, what was already made is removed again and the error says
    /// why (not root, a missing tool, a kernel feature missing, a command that failed).
    pub fn build(self) -> Result<Lab, LabError> {
        preflight()?;
        let prefix = match &self.name {
            Some(name) => {
                check_name(name)?;
                if auto_lab_pid(&format!("{name}-")).is_some() {
                    let reason = "fl<pid>x<n> names are for per-process labs, which sweeps remove";
                    return Err(LabError::BadName {
                        name: name.clone(),
                        reason,
                    });
                }
                name.clone()
            }
            None => {
                // Leftovers of killed test processes (swept at every build: a process killed
                // a moment ago may still be exiting at the first). Failing to sweep them must
                // not stop this lab.
                let _ = sweep_stale();
                static COUNTER: AtomicUsize = AtomicUsize::new(0);
                let n = COUNTER.fetch_add(1, Ordering::Relaxed);
                format!("{AUTO_PREFIX}{}x{n}", std::process::id())
            }
        };
        let plan = Plan::new(&self.nodes)?;
        let log_dir = std::env::temp_dir().join(format!("fog-lab-{prefix}"));
        let mut lab = Lab {
            prefix,
            nodes: HashMap::new(),
            namespaces: Vec::new(),
            links: Links::Kernel,
            processes: Mutex::new(Vec::new()),
            spawned: AtomicUsize::new(0),
            log_dir,
            kept: false,
        };
        // From here on, dropping `lab` (also on `?`) removes what was made.
        lab.make(&plan, self.links)?;
        Ok(lab)
    }
}

/// Checks what every lab needs — root, and the `ip`, `nft` and `tc` commands — and says which
/// is missing. [`LabBuilder::build`] checks this first, so its error names the real cause.
pub fn preflight() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(LabError::NotRoot { euid });
    }
    cmd::check_tools()
}

fn check_name(name: &str) -> Result<(), LabError> {
    let bad = |reason| {
        Err(LabError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME {
        return bad("a name has 1 to 12 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase())
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return bad("a name is a lowercase letter followed by lowercase letters and digits");
    }
    if name == "internet" {
        return bad("\"internet\" is the internet namespace");
    }
    Ok(())
}

/// Addresses of every node, decided before anything is made.
#[derive(Debug)]
struct Plan {
    public: Vec<(String, Ipv4Addr)>,
    /// (device, NAT wan address, LAN number k)
    nated: Vec<(String, Ipv4Addr, u8)>,
}

impl Plan {
    fn new(nodes: &[(String, Kind)]) -> Result<Self, LabError> {
        let mut seen = std::collections::HashSet::new();
        let (mut public, mut nated) = (Vec::new(), Vec::new());
        for (name, kind) in nodes {
            check_name(name)?;
            if !seen.insert(name.as_str()) {
                return Err(LabError::BadName {
                    name: name.clone(),
                    reason: "used twice",
                });
            }
            match kind {
                Kind::Public => {
                    if public.len() == MAX_PUBLIC {
                        return Err(LabError::TooMany {
                            kind: "public",
                            max: MAX_PUBLIC,
                        });
                    }
                    let addr = Ipv4Addr::new(198, 18, 0, FIRST_PUBLIC + public.len() as u8);
                    public.push((name.clone(), addr));
                }
                Kind::Nated => {
                    if nated.len() == MAX_NATED {
                        return Err(LabError::TooMany {
                            kind: "NATed",
                            max: MAX_NATED,
                        });
                    }
                    let k = nated.len() as u8 + 1;
                    nated.push((name.clone(), Ipv4Addr::new(198, 18, 0, NAT_BASE + k), k));
                }
            }
        }
        Ok(Plan { public, nated })
    }

    /// `ip route` arguments for every device LAN via its NAT, except `skip`'s own.
    fn lan_routes(&self, skip: Option<&str>) -> Vec<(String, String)> {
        self.nated
            .iter()
            .filter(|(name, _, _)| Some(name.as_str()) != skip)
            .map(|(_, wan, k)| (format!("198.19.{k}.0/24"), wan.to_string()))
            .collect()
    }
}

/// The two ends of a node's uplink, for netem.
#[derive(Debug)]
struct Uplink {
    ns: String,
    iface: &'static str,
    peer_ns: String,
    peer_iface: String,
    line: Option<DelayLine>,
}

#[derive(Debug)]
struct Node {
    ns: String,
    addr: Ipv4Addr,
    /// For a device, its NAT's internet address; for others, `addr`.
    public_addr: Ipv4Addr,
    uplink: Option<Uplink>,
}

/// A built lab: namespaces, links and the processes running in them. See the crate docs.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    nodes: HashMap<String, Node>,
    /// In creation order; deleted in reverse.
    namespaces: Vec<String>,
    /// What `Links::Auto` resolved to.
    links: Links,
    processes: Mutex<Vec<LabProcess>>,
    spawned: AtomicUsize,
    log_dir: PathBuf,
    kept: bool,
}

/// A TCP connection made from inside a namespace, and how long the handshake took.
#[derive(Debug)]
pub struct Connected {
    /// The connected socket.
    pub stream: TcpStream,
    /// From the start of `connect` to its completion: one round trip plus local work.
    pub elapsed: Duration,
}

impl Lab {
    /// Starts describing a lab.
    pub fn builder() -> LabBuilder {
        LabBuilder::default()
    }

    /// The network namespace name of `node` (for `ip netns exec`, `ip -n`).
    pub fn ns(&self, node: &str) -> Result<&str, LabError> {
        Ok(&self.node(node)?.ns)
    }

    /// `node`'s own address: a public node's, a device's LAN address (198.19.k.2), a NAT's
    /// internet address, or the internet bridge's.
    pub fn addr(&self, node: &str) -> Result<Ipv4Addr, LabError> {
        Ok(self.node(node)?.addr)
    }

    /// The address `node` is seen from on the internet: a device's NAT's address, otherwise
    /// the same as [`Lab::addr`].
    pub fn public_addr(&self, node: &str) -> Result<Ipv4Addr, LabError> {
        Ok(self.node(node)?.public_addr)
    }

    /// Every node name: public nodes, devices, their NATs and `"internet"`.
    pub fn nodes(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.nodes.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// How the links were made ([`Links::Kernel`] or [`Links::DelayLine`]).
    pub fn links(&self) -> Links {
        self.links
    }

    /// A command that runs `program` inside `node`'s namespace (`ip netns exec`); add arguments,
    /// then run it yourself or pass it to [`Lab::spawn`].
    pub fn command(&self, node: &str, program: impl AsRef<OsStr>) -> Result<Command, LabError> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(node)?]).arg(program);
        Ok(cmd)
    }

    /// Starts `cmd` (program, arguments, environment and working directory are kept) inside
    /// `node`'s namespace, with stdin closed and stdout and stderr going to
    /// [`LabProcess::log`]. The lab kills it when it ends.
    pub fn spawn(&self, node: &str, cmd: Command) -> Result<LabProcess, LabError> {
        let ns = self.ns(node)?.to_owned();
        let mut inner = Command::new("ip");
        inner
            .args(["netns", "exec", &ns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => inner.env(key, value),
                None => inner.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            inner.current_dir(dir);
        }
        std::fs::create_dir_all(&self.log_dir)
            .map_err(|e| LabError::io(format!("cannot create {}", self.log_dir.display()), e))?;
        let seq = self.spawned.fetch_add(1, Ordering::Relaxed);
        let program = Path::new(cmd.get_program())
            .file_name()
            .map_or_else(|| "process".into(), |n| n.to_string_lossy().into_owned());
        let log = self.log_dir.join(format!("{node}-{seq}-{program}.log"));
        let out = File::create(&log)
            .map_err(|e| LabError::io(format!("cannot create {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| LabError::io("cannot duplicate a log file", e))?;
        inner.stdin(Stdio::null()).stdout(out).stderr(err);
        let child: Child = inner
            .spawn()
            .map_err(|e| LabError::io(format!("cannot start {program} in {node}"), e))?;
        let process = LabProcess {
            node: node.to_owned(),
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            log,
        };
        self.processes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(process.clone());
        Ok(process)
    }

    /// Runs `program args…` inside `node`'s namespace to completion and returns its stdout;
    /// an error with its stderr if it fails.
    pub fn run(&self, node: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["netns", "exec", self.ns(node)?, program];
        full.extend_from_slice(args);
        cmd::run("ip", &full)
    }

    /// Runs `f` in this process on a thread inside `node`'s namespace: sockets it makes belong
    /// to that namespace for good (hand them to any thread, or to tokio with `from_std` after
    /// `set_nonblocking(true)`).
    pub fn in_ns<T: Send>(&self, node: &str, f: impl FnOnce() -> T + Send) -> Result<T, LabError> {
        netns::in_namespace(self.ns(node)?, f)
    }

    /// A TCP listener on `0.0.0.0:port` inside `node`'s namespace (port 0: any free port).
    pub fn tcp_listen(&self, node: &str, port: u16) -> Result<TcpListener, LabError> {
        let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        self.in_ns(node, || TcpListener::bind(addr))?
            .map_err(|e| LabError::io(format!("cannot listen on {addr} in {node}"), e))
    }

    /// Connects to `to` from inside `node`'s namespace, giving up after `timeout`. A refused,
    /// unreachable or timed-out connect is [`LabError::Connect`].
    pub fn tcp_connect(
        &self,
        node: &str,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<Connected, LabError> {
        let attempt = self.in_ns(node, || {
            let start = Instant::now();
            TcpStream::connect_timeout(&to, timeout).map(|stream| (stream, start.elapsed()))
        })?;
        match attempt {
            Ok((stream, elapsed)) => Ok(Connected { stream, elapsed }),
            Err(source) => Err(LabError::Connect {
                from: node.to_owned(),
                to,
                source,
            }),
        }
    }

    /// Connects to `to` from `node` until a connect succeeds or `timeout` passes (for waiting
    /// until a process in the lab listens); the last failure if none did.
    pub fn wait_for_tcp(
        &self,
        node: &str,
        to: SocketAddr,
        timeout: Duration,
    ) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.tcp_connect(
                node,
                to,
                left.clamp(Duration::from_millis(1), Duration::from_secs(1)),
            ) {
                Ok(_) => return Ok(()),
                Err(e @ LabError::Connect { .. }) if Instant::now() >= deadline => return Err(e),
                Err(LabError::Connect { .. }) => std::thread::sleep(Duration::from_millis(20)),
                Err(other) => return Err(other),
            }
        }
    }

    /// Adds `delay` to the round trip of `node`'s uplink (half in each direction) and drops each
    /// packet in either direction with probability `loss_pct`/100. Replaces earlier settings;
    /// zero and zero removes the impairment. As on a real link, a long total loss makes ARP
    /// fail, and connects just after it ends may fail with "no route to host" for a moment
    /// ([`Lab::wait_for_tcp`] waits that out).
    pub fn set_netem(&self, node: &str, delay: Duration, loss_pct: f64) -> Result<(), LabError> {
        let found = self.node(node)?;
        let Some(uplink) = &found.uplink else {
            return Err(LabError::UnknownNode(format!(
                "{node} (the internet has no uplink)"
            )));
        };
        let one_way = delay / 2;
        if let Some(line) = &uplink.line {
            line.set(one_way, loss_pct / 100.0);
            return Ok(());
        }
        let ends = [
            (&uplink.ns, uplink.iface),
            (&uplink.peer_ns, uplink.peer_iface.as_str()),
        ];
        for (ns, iface) in ends {
            if delay.is_zero() && loss_pct <= 0.0 {
                // Back to the default qdisc; "no qdisc" errors mean there was none to remove.
                let _ = cmd::run("tc", &["-n", ns, "qdisc", "del", "dev", iface, "root"]);
                continue;
            }
            let delay_us = format!("{}us", one_way.as_micros());
            let loss = format!("{loss_pct}%");
            let args = [
                "-n", ns, "qdisc", "replace", "dev", iface, "root", "netem", "delay", &delay_us,
                "loss", &loss,
            ];
            cmd::run("tc", &args).map_err(|e| match e {
                LabError::Command { ref stderr, .. }
                    if stderr.contains("qdisc kind is unknown") =>
                {
                    LabError::NoNetem {
                        node: node.to_owned(),
                    }
                }
                other => other,
            })?;
        }
        Ok(())
    }

    /// Leaves the lab's namespaces in place after this `Lab` is dropped (for `scripts/lab.sh
    /// up`); only for a named lab with kernel links, whose links do not need this process.
    pub fn keep(mut self) -> Result<(), LabError> {
        if self.links == Links::DelayLine {
            return Err(LabError::CannotKeep {
                lab: self.prefix.clone(),
            });
        }
        self.kept = true;
        Ok(())
    }

    fn node(&self, node: &str) -> Result<&Node, LabError> {
        self.nodes
            .get(node)
            .ok_or_else(|| LabError::UnknownNode(node.to_owned()))
    }

    fn add_namespace(&mut self, node: &str) -> Result<String, LabError> {
        let ns = format!("{}-{node}", self.prefix);
        // Two processes creating the first namespaces of a boot at once can race on setting
        // up /run/netns; a second try then succeeds.
        let mut result = cmd::run("ip", &["netns", "add", &ns]);
        if result.is_err() && !cmd::list_namespaces()?.contains(&ns) {
            result = cmd::run("ip", &["netns", "add", &ns]);
        }
        if let Err(e) = result {
            let reason = match e {
                LabError::Command { stderr, .. } => stderr,
                other => other.to_string(),
            };
            return Err(LabError::Namespace { name: ns, reason });
        }
        self.namespaces.push(ns.clone());
        cmd::run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        // IPv4 only: the plan has no IPv6, and link-local IPv6 would be a way around it.
        netns::write_sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1")?;
        netns::write_sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", "1")?;
        Ok(ns)
    }

    /// Makes a link between `a_ns`/`a_if` and `b_ns`/`b_if`, both down.
    fn add_link(
        &self,
        a_ns: &str,
        a_if: &str,
        b_ns: &str,
        b_if: &str,
    ) -> Result<Option<DelayLine>, LabError> {
        match self.links {
            Links::DelayLine => {
                let a = delayline::open_tap(a_ns, a_if)?;
                let b = delayline::open_tap(b_ns, b_if)?;
                Ok(Some(DelayLine::start(a, b, &format!("{a_ns}/{a_if}"))?))
            }
            _ => {
                let args = [
                    "-n", a_ns, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
                    b_ns,
                ];
                cmd::run("ip", &args)?;
                Ok(None)
            }
        }
    }

    fn make(&mut self, plan: &Plan, links: Links) -> Result<(), LabError> {
        let inet = self.add_namespace("internet")?;
        netns::write_sysctl(&inet, "net.ipv4.ip_forward", "0")?;
        self.links = match links {
            Links::Auto if kernel_has_netem(&inet)? => Links::Kernel,
            Links::Auto => Links::DelayLine,
            other => other,
        };
        ip(&inet, &["link", "add", "br0", "type", "bridge"])?;
        ip(
            &inet,
            &["addr", "add", &format!("{INTERNET_ADDR}/24"), "dev", "br0"],
        )?;
        ip(&inet, &["link", "set", "br0", "up"])?;
        for (lan, via) in plan.lan_routes(None) {
            ip(&inet, &["route", "add", &lan, "via", &via])?;
        }
        self.nodes.insert(
            "internet".into(),
            Node {
                ns: inet.clone(),
                addr: INTERNET_ADDR,
                public_addr: INTERNET_ADDR,
                uplink: None,
            },
        );

        for (name, addr) in &plan.public {
            let ns = self.add_namespace(name)?;
            netns::write_sysctl(&ns, "net.ipv4.ip_forward", "0")?;
            let port = format!("p-{name}");
            let uplink = self.attach_to_internet(&inet, &ns, "eth0", &port, *addr)?;
            for (lan, via) in plan.lan_routes(None) {
                ip(&ns, &["route", "add", &lan, "via", &via])?;
            }
            let node = Node {
                ns,
                addr: *addr,
                public_addr: *addr,
                uplink: Some(uplink),
            };
            self.nodes.insert(name.clone(), node);
        }

        for (name, wan, k) in &plan.nated {
            let nat = self.add_namespace(&format!("{name}-nat"))?;
            netns::write_sysctl(&nat, "net.ipv4.ip_forward", "1")?;
            let wan_uplink =
                self.attach_to_internet(&inet, &nat, "wan", &format!("n-{name}"), *wan)?;
            for (lan, via) in plan.lan_routes(Some(name)) {
                ip(&nat, &["route", "add", &lan, "via", &via])?;
            }
            let dev = self.add_namespace(name)?;
            netns::write_sysctl(&dev, "net.ipv4.ip_forward", "0")?;
            let line = self.add_link(&dev, "eth0", &nat, "lan")?;
            let (gateway, addr) = (Ipv4Addr::new(198, 19, *k, 1), Ipv4Addr::new(198, 19, *k, 2));
            ip(
                &nat,
                &["addr", "add", &format!("{gateway}/24"), "dev", "lan"],
            )?;
            ip(&nat, &["link", "set", "lan", "up"])?;
            ip(&dev, &["addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&dev, &["link", "set", "eth0", "up"])?;
            ip(
                &dev,
                &["route", "add", "default", "via", &gateway.to_string()],
            )?;
            cmd::run_stdin("ip", &["netns", "exec", &nat, "nft", "-f", "-"], NAT_RULES)?;
            let nat_node = Node {
                ns: nat.clone(),
                addr: *wan,
                public_addr: *wan,
                uplink: Some(wan_uplink),
            };
            self.nodes.insert(format!("{name}-nat"), nat_node);
            let uplink = Uplink {
                ns: dev.clone(),
                iface: "eth0",
                peer_ns: nat,
                peer_iface: "lan".into(),
                line,
            };
            self.nodes.insert(
                name.clone(),
                Node {
                    ns: dev,
                    addr,
                    public_addr: *wan,
                    uplink: Some(uplink),
                },
            );
        }
        Ok(())
    }

    /// Links `ns`/`iface` to the internet bridge (port `port`) with address `addr`.
    fn attach_to_internet(
        &self,
        inet: &str,
        ns: &str,
        iface: &'static str,
        port: &str,
        addr: Ipv4Addr,
    ) -> Result<Uplink, LabError> {
        let line = self.add_link(ns, iface, inet, port)?;
        ip(inet, &["link", "set", port, "master", "br0"])?;
        ip(inet, &["link", "set", port, "up"])?;
        ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", iface])?;
        ip(ns, &["link", "set", iface, "up"])?;
        ip(
            ns,
            &["route", "add", "default", "via", &INTERNET_ADDR.to_string()],
        )?;
        Ok(Uplink {
            ns: ns.to_owned(),
            iface,
            peer_ns: inet.to_owned(),
            peer_iface: port.to_owned(),
            line,
        })
    }
}

/// A home router's NAT: masquerade what leaves through `wan`, forward nothing that starts
/// outside, accept nothing on `wan` but replies. No port forwarding.
const NAT_RULES: &str = "\
table inet fognat {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname \"lan\" oifname \"wan\" accept
    }
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        iifname { \"lo\", \"lan\" } accept
    }
}
table ip fognat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"wan\" masquerade
    }
}
";

fn ip(ns: &str, args: &[&str]) -> Result<String, LabError> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    cmd::run("ip", &full)
}

/// Whether the kernel has the netem qdisc: tried once per process on `ns`'s loopback.
fn kernel_has_netem(ns: &str) -> Result<bool, LabError> {
    static HAS: OnceLock<bool> = OnceLock::new();
    if let Some(has) = HAS.get() {
        return Ok(*has);
    }
    let has = match cmd::run(
        "tc",
        &[
            "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms",
        ],
    ) {
        Ok(_) => {
            cmd::run("tc", &["-n", ns, "qdisc", "del", "dev", "lo", "root"])?;
            true
        }
        Err(LabError::Command { stderr, .. }) if stderr.contains("qdisc kind is unknown") => false,
        Err(other) => return Err(other),
    };
    Ok(*HAS.get_or_init(|| has))
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        let processes =
            std::mem::take(&mut *self.processes.lock().unwrap_or_else(|p| p.into_inner()));
        for process in &processes {
            let _ = process.kill();
        }
        // Whatever else runs in the namespaces (children of the processes above).
        for ns in &self.namespaces {
            cmd::kill_namespace_processes(ns);
        }
        // Stops the delay lines' threads and closes their TAP devices.
        self.nodes.clear();
        for ns in self.namespaces.iter().rev() {
            let _ = cmd::delete_namespace(ns);
        }
        if std::thread::panicking() && !processes.is_empty() {
            // A failing test's output is the place to read what its processes said; the
            // test harness shows stderr of failed tests.
            eprintln!(
                "fog-lab: logs of the lab's processes kept in {}",
                self.log_dir.display()
            );
            for process in &processes {
                let log = process.log();
                // The last lines are the ones that say why it failed.
                let start = log.len().saturating_sub(4000);
                let start = (start..log.len())
                    .find(|i| log.is_char_boundary(*i))
                    .unwrap_or(0);
                let tail = &log[start..];
                eprintln!(
                    "--- {} in {} (pid {}):\n{tail}",
                    process.log.display(),
                    process.node,
                    process.pid
                );
            }
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// Removes the namespaces (and kills the processes in them) of per-process labs whose process
/// no longer exists, e.g. a test run killed by a timeout. Returns the namespaces removed.
pub fn sweep_stale() -> Result<Vec<String>, LabError> {
    let mut removed = Vec::new();
    for ns in cmd::list_namespaces()? {
        let Some(pid) = auto_lab_pid(&ns) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        // Parallel sweeps race for the same leftovers; whoever deletes one, it is gone.
        if cmd::delete_namespace(&ns).is_err() {
            continue;
        }
        let prefix = ns.split('-').next().unwrap_or_default();
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("fog-lab-{prefix}")));
        removed.push(ns);
    }
    Ok(removed)
}

/// Whether process `pid` runs: a killed test process may linger as a zombie until something
/// reaps it, and a zombie holds no lab.
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) S …": the state follows the last ')', as comm may contain anything.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X") | None)
}

/// The pid in a per-process lab's namespace name `fl<pid>x<n>-<node>`.
fn auto_lab_pid(ns: &str) -> Option<u32> {
    let (prefix, _node) = ns.split_once('-')?;
    let (pid, n) = prefix.strip_prefix(AUTO_PREFIX)?.split_once('x')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes every namespace of the lab named `name` (see [`LabBuilder::name`]) and the
/// processes in them; returns the namespaces removed.
pub fn remove_named(name: &str) -> Result<Vec<String>, LabError> {
    check_name(name)?;
    let prefix = format!("{name}-");
    let mut removed = Vec::new();
    for ns in cmd::list_namespaces()?
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
    {
        cmd::delete_namespace(&ns)?;
        removed.push(ns);
    }
    Ok(removed)
}

/// The namespaces of the lab named `name` and the IPv4 addresses in each (for `lab status`).
pub fn describe_named(name: &str) -> Result<Vec<(String, Vec<String>)>, LabError> {
    check_name(name)?;
    let prefix = format!("{name}-");
    let mut found = Vec::new();
    for ns in cmd::list_namespaces()?
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
    {
        let out = cmd::run("ip", &["-n", &ns, "-4", "-o", "addr", "show"])?;
        // Lines look like "2: eth0    inet 198.18.0.10/24 brd ... scope global eth0".
        let addrs = out
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let iface = words.nth(1)?;
                let addr = words.nth(1)?;
                (iface != "lo").then(|| format!("{iface} {addr}"))
            })
            .collect();
        found.push((ns, addrs));
    }
    found.sort();
    Ok(found)
}

/// All network namespace names on the machine (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>, LabError> {
    cmd::list_namespaces()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_process_names_carry_the_pid() {
        assert_eq!(auto_lab_pid("fl1234x7-dev1-nat"), Some(1234));
        assert_eq!(auto_lab_pid("foglab-dev1"), None);
        assert_eq!(auto_lab_pid("flx1-dev1"), None);
        assert_eq!(auto_lab_pid("other"), None);
    }

    #[test]
    fn the_plan_uses_the_benchmarking_range_only() {
        let nodes: Vec<(String, Kind)> = (0..MAX_PUBLIC)
            .map(|i| (format!("p{i}"), Kind::Public))
            .chain((0..MAX_NATED).map(|i| (format!("d{i}"), Kind::Nated)))
            .collect();
        let plan = Plan::new(&nodes).unwrap();
        let bench: ipnet_like::Net = ipnet_like::Net(Ipv4Addr::new(198, 18, 0, 0), 15);
        for (_, addr) in &plan.public {
            assert!(bench.contains(*addr), "{addr}");
        }
        for (_, wan, k) in &plan.nated {
            assert!(bench.contains(*wan), "{wan}");
            assert!(bench.contains(Ipv4Addr::new(198, 19, *k, 2)));
            assert_ne!(*wan, INTERNET_ADDR);
        }
        let mut all: Vec<Ipv4Addr> = plan.public.iter().map(|p| p.1).collect();
        all.extend(plan.nated.iter().map(|n| n.1));
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count, "every node has its own address");
    }

    #[test]
    fn names_that_would_not_fit_an_interface_are_refused() {
        assert!(matches!(
            Plan::new(&[("averyverylongname".into(), Kind::Public)]),
            Err(LabError::BadName { .. })
        ));
        assert!(matches!(
            Plan::new(&[("internet".into(), Kind::Public)]),
            Err(LabError::BadName { .. })
        ));
        assert!(matches!(
            Plan::new(&[("Dev-1".into(), Kind::Nated)]),
            Err(LabError::BadName { .. })
        ));
        let twice = [
            ("a".to_owned(), Kind::Public),
            ("a".to_owned(), Kind::Nated),
        ];
        assert!(matches!(Plan::new(&twice), Err(LabError::BadName { .. })));
    }

    /// A /n IPv4 network, just enough for the plan's test.
    mod ipnet_like {
        use std::net::Ipv4Addr;
        pub struct Net(pub Ipv4Addr, pub u32);
        impl Net {
            pub fn contains(&self, addr: Ipv4Addr) -> bool {
                let mask = u32::MAX << (32 - self.1);
                u32::from(addr) & mask == u32::from(self.0) & mask
            }
        }
    }
}
