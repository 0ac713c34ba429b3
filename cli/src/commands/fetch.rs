//! `fog fetch`: visit an app by its Betanet address, as a visitor would.

use std::io::Write;

use anyhow::bail;
use fog_htx::mix::MixMode;

/// Fetch `betanet://<hex>/path` or `bn1:<name>/path`: resolve the name (the descriptor is
/// checked against the name, so the control plane need not be trusted), open an HTX connection
/// to a front with an access ticket, directly or through mix relays, and print the body.
#[derive(Debug, clap::Args)]
pub struct Fetch {
    /// The address, e.g. bn1:…/api/count or betanet://<64 hex>/.
    url: String,
    /// Where names are resolved (and relays listed).
    #[arg(long, env = "FOG_CONTROL", default_value = "http://127.0.0.1:7070")]
    control: String,
    /// Relays on the way: performance (0), balanced (2), strict (3, with delays) or strict:N.
    #[arg(long, default_value = "performance")]
    mix: MixMode,
    /// Print the status line and headers before the body.
    #[arg(long, short = 'i')]
    include: bool,
}

impl Fetch {
    pub fn execute(self) -> anyhow::Result<()> {
        if self.url.starts_with("http://") || self.url.starts_with("https://") {
            bail!(
                "{} is a web address: fog fetch takes Betanet addresses (betanet://… or bn1:…)",
                self.url
            );
        }
        let fetched = crate::client::runtime()?.block_on(fog_router::visitor::fetch(
            &self.control,
            &self.url,
            self.mix,
        ));
        let fetched = fetched.map_err(anyhow::Error::msg)?;
        let response = fetched.response;
        let mut out = std::io::stdout().lock();
        if self.include {
            writeln!(
                out,
                "HTTP/1.1 {} (app {}, front {}{}, {} relay hop(s))",
                response.status(),
                fetched.app,
                fetched.front,
                if fetched.tls { " over TLS" } else { "" },
                fetched.hops
            )?;
            for (name, value) in response.headers() {
                writeln!(out, "{name}: {}", value.to_str().unwrap_or("<binary>"))?;
            }
            writeln!(out)?;
        }
        out.write_all(response.body())?;
        out.flush()?;
        if !response.status().is_success() {
            bail!("{} answered {}", self.url, response.status());
        }
        Ok(())
    }
}
