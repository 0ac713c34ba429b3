//! `fog fetch`: visit an app by its Betanet address, as a visitor would.

use std::io::Write;

use anyhow::bail;
use fog_htx::mix::MixMode;

/// Fetch `betanet://<hex>/path` or `bn1:<name>/path` (resolve the name — the descriptor is
/// checked against the name, so the control plane need not be trusted — and open an HTX
/// connection to a front with an access ticket, directly or through mix relays), or
/// `http://<56 characters>.onion/path` over Tor with arti; print the body.
#[derive(Debug, clap::Args)]
pub struct Fetch {
    /// The address, e.g. bn1:…/api/count or betanet://<64 hex>/.
    url: String,
    /// Where names are resolved (and relays listed).
    /// (Comma-separated URLs fail over to the next.)
    #[arg(
        long,
        env = "FOG_CONTROL",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL[,URL...]"
    )]
    control: fog_net::control_urls::ControlUrls,
    /// Relays on the way: performance (0), balanced (2), strict (3, with delays) or strict:N.
    #[arg(long, default_value = "performance")]
    mix: MixMode,
    /// Print the status line and headers before the body.
    #[arg(long, short = 'i')]
    include: bool,
    /// Visit through this Betanet front (host:port, one the app's descriptor lists) instead of
    /// the first that answers.
    #[arg(long, value_name = "ADDR")]
    front: Option<String>,
    /// For .onion addresses: the Tor network's arti configuration (e.g. `fog testnet`'s
    /// arti.toml); default the public Tor network.
    #[arg(long, value_name = "FILE")]
    tor_network: Option<std::path::PathBuf>,
    /// For .onion addresses: give up when the service has not answered within SECS (descriptor,
    /// introduction and rendezvous). An introduction the service accepted but never answered
    /// (it died meanwhile) otherwise holds the visit until arti's own rendezvous timeout.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    timeout: u64,
}

impl Fetch {
    /// Fetch an onion address with a fresh arti client.
    fn onion(&self) -> anyhow::Result<()> {
        let rest = self.url.strip_prefix("http://").expect("checked");
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (onion, port) = match host.rsplit_once(':') {
            Some((onion, port)) => (
                onion,
                port.parse::<u16>()
                    .map_err(|_| anyhow::anyhow!("bad port in {host}"))?,
            ),
            None => (host, 80),
        };
        let label = onion.trim_end_matches(".onion");
        if label.len() != 56
            || !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        {
            bail!("{onion} is not a v3 onion address (56 base32 characters before .onion)");
        }
        let scratch = tempfile::tempdir()?;
        let cache = match &self.tor_network {
            Some(_) => scratch.path().join("cache"),
            None => fog_host::agent::default_data_dir().join("arti-cache"),
        };
        fog_router::onion::private_dir(&cache)?;
        let config = fog_router::onion::client_config(
            self.tor_network.as_deref(),
            &cache,
            &scratch.path().join("state"),
        )
        .map_err(anyhow::Error::msg)?;
        let response = crate::client::runtime()?.block_on(async {
            let client = arti_client::TorClient::create_bootstrapped(config)
                .await
                .map_err(|e| anyhow::anyhow!("cannot join the Tor network: {e}"))?;
            let stream = tokio::time::timeout(
                std::time::Duration::from_secs(self.timeout),
                client.connect((onion, port)),
            )
            .await
            .map_err(|_| anyhow::anyhow!("{onion} did not answer within {} s", self.timeout))?
            .map_err(|e| anyhow::anyhow!("cannot reach {onion}: {e}"))?;
            let (mut sender, driver) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(driver);
            let request = http::Request::get(path)
                .header(http::header::HOST, onion)
                .body(http_body_util::Empty::<bytes::Bytes>::new())?;
            let response = sender.send_request(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
            Ok::<_, anyhow::Error>(http::Response::from_parts(parts, body))
        })?;
        self.print(&response, &format!("(over Tor: {onion})"))
    }

    fn print(&self, response: &http::Response<bytes::Bytes>, how: &str) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.include {
            writeln!(out, "HTTP/1.1 {} {how}", response.status())?;
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

    pub fn execute(self) -> anyhow::Result<()> {
        if let Some(rest) = self.url.strip_prefix("http://")
            && rest
                .split(['/', ':'])
                .next()
                .is_some_and(|h| h.ends_with(".onion"))
        {
            return self.onion();
        }
        if self.url.starts_with("http://") || self.url.starts_with("https://") {
            bail!(
                "{} is a web address: fog fetch takes Betanet addresses (betanet://… or bn1:…) \
                 and onion addresses (http://….onion/)",
                self.url
            );
        }
        let fetched = crate::client::runtime()?.block_on(fog_router::visitor::fetch(
            &self.control,
            &self.url,
            self.mix,
            self.front.as_deref(),
        ));
        let fetched = fetched.map_err(anyhow::Error::msg)?;
        let how = format!(
            "(app {}, front {}{}, {} relay hop(s))",
            fetched.app,
            fetched.front,
            if fetched.tls { " over TLS" } else { "" },
            fetched.hops
        );
        self.print(&fetched.response, &how)
    }
}
