//! `fog testnet`: a private Tor network on this machine (Debian's tor), for onion services
//! without the public network.

use std::path::PathBuf;
use std::time::Duration;

use crate::testnet;

/// Start a private Tor network (3 authorities, relays, a client with a SOCKS port) on one
/// address, loopback by default, and write the arti configuration for it; runs until Ctrl-C,
/// then stops every tor process.
#[derive(Debug, clap::Args)]
pub struct Testnet {
    /// Directory for the network's keys, configuration and logs (made fresh).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Relays (at least 5; onion services' vanguards want 6 or more).
    #[arg(long, default_value_t = 6)]
    relays: usize,
    /// The IPv4 address every tor node listens on (OR, directory and SOCKS ports). Another
    /// address than loopback lets other machines (or network namespaces) join the network.
    #[arg(long, value_name = "IP", default_value_t = std::net::Ipv4Addr::LOCALHOST)]
    addr: std::net::Ipv4Addr,
    /// Also run a C tor onion service on the client, port 80 forwarded to ADDR (for
    /// comparisons); its address is printed.
    #[arg(long, value_name = "ADDR")]
    c_onion_service: Option<std::net::SocketAddr>,
}

impl Testnet {
    pub fn execute(self) -> anyhow::Result<()> {
        let dir = self
            .dir
            .unwrap_or_else(|| fog_host::agent::default_data_dir().join("testnet"));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = testnet::create(&dir, self.relays, self.addr)?;
        let extra = match self.c_onion_service {
            Some(target) => format!(
                "HiddenServiceDir {}\nHiddenServicePort 80 {target}\n",
                layout.dir.join("client").join("hs").display()
            ),
            None => String::new(),
        };
        let mut net = layout.start(&extra)?;
        let spinner = crate::progress::Spinner::start("private Tor network: starting".into());
        net.wait_ready(Duration::from_secs(180), &|step| {
            spinner.say(format!("private Tor network: {step}"))
        })?;
        spinner.finish();
        println!(
            "fog: tor testnet ready: socks5 {} ; arti config {} ; {} authorities, {} relays",
            layout.socks,
            layout.arti_config.display(),
            layout.authorities.len(),
            layout.relays.len()
        );
        if self.c_onion_service.is_some() {
            let hostname =
                std::fs::read_to_string(layout.dir.join("client").join("hs").join("hostname"))?;
            println!("fog: C tor onion service http://{}/", hostname.trim());
        }
        crate::client::runtime()?.block_on(crate::commands::run::shutdown_signal());
        net.stop();
        println!("fog: tor testnet stopped");
        Ok(())
    }
}
