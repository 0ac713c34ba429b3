//! The lab's errors: each says exactly why the lab could not be built or used, so a test that
//! needs the lab fails with that reason instead of skipping.

use std::io;
use std::net::SocketAddr;

/// Why the lab could not do something.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// Network namespaces, veths, nftables and qdiscs need root (CAP_NET_ADMIN and
    /// CAP_SYS_ADMIN); the lab does not try without it.
    #[error(
        "the network lab needs root to create network namespaces (running as uid {euid}); \
         run the lab tests as root, as CI does"
    )]
    NotRoot {
        /// The effective user id the process runs as.
        euid: u32,
    },
    /// A command the lab drives is not installed.
    #[error(
        "the network lab needs the `{tool}` command (Debian package {package}); \
         scripts/setup.sh installs it"
    )]
    MissingTool {
        /// The command, e.g. `nft`.
        tool: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },
    /// `ip netns add` refused to create a namespace.
    #[error("cannot create network namespace {name}: {reason}")]
    Namespace {
        /// The namespace's name.
        name: String,
        /// What `ip` said.
        reason: String,
    },
    /// A command that sets up the lab failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The kernel lacks the netem queueing discipline and the lab uses kernel links (veth), so
    /// delay and loss cannot be set on them.
    #[error(
        "cannot set delay/loss on {node}'s link: this kernel has no netem qdisc \
         (CONFIG_NET_SCH_NETEM) and the lab was built with kernel (veth) links; \
         build it with Links::DelayLine or Links::Auto"
    )]
    NoNetem {
        /// The node whose link was to be impaired.
        node: String,
    },
    /// A lab whose links are delay lines of this process cannot outlive it.
    #[error(
        "lab {lab} has delay-line links, which end with this process; build it with Links::Kernel to keep it"
    )]
    CannotKeep {
        /// The lab's name.
        lab: String,
    },
    /// The internet namespace has no link of its own to impair.
    #[error("{node} has no uplink to set delay or loss on")]
    NoUplink {
        /// The node named.
        node: String,
    },
    /// A node name that the lab does not have.
    #[error("the lab has no node named {0:?}")]
    UnknownNode(String),
    /// A node name the builder cannot use.
    #[error("bad node name {name:?}: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// The address plan has room for this many nodes of a kind.
    #[error("too many {kind} nodes: the address plan has room for {max}")]
    TooMany {
        /// "public" or "NATed".
        kind: &'static str,
        /// The limit.
        max: usize,
    },
    /// A TCP connect from inside a namespace failed (refused, unreachable, timed out).
    #[error("TCP connect from {from} to {to} failed: {source}")]
    Connect {
        /// The node the connect was made from.
        from: String,
        /// The address dialled.
        to: SocketAddr,
        /// What the kernel said.
        source: io::Error,
    },
    /// A system call or file operation of the lab failed.
    #[error("{what}: {source}")]
    Io {
        /// What the lab was doing.
        what: String,
        /// The error.
        source: io::Error,
    },
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}
