//! `fog admit`: the operator admits devices and relays to the fog, or prints the admission
//! token that admits them when they register.

use std::path::PathBuf;

use anyhow::Context;
use fog_net::control_urls::ControlUrls;
use fog_proto::api::{AdmitRequest, Admitted};
use fog_proto::auth::Identity;

use crate::client::Api;
use crate::services::ADMISSION_TOKEN_FILE;

/// Admit a device or relay by its key or device id (listed by `fog devices --pending`), or
/// print the admission token with `fog admit token`. Proof of being the operator is the
/// admission token: given with --admission-token, or read from the control plane's --data.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Admit {
    #[command(subcommand)]
    action: Option<AdmitAction>,
    /// The device id or public key (hex) to admit.
    #[arg(value_name = "DEVICE_OR_KEY")]
    key: Option<String>,
    /// The control planes' base URLs, comma-separated.
    #[arg(
        long,
        env = "FOG_CONTROL",
        default_value = "http://127.0.0.1:7070",
        value_name = "URL[,URL...]"
    )]
    control: ControlUrls,
    /// The fog's admission token (default: read from the control plane's --data).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "FOG_ADMISSION_TOKEN",
        hide_env_values = true
    )]
    admission_token: Option<String>,
    /// The control plane's data directory, where it keeps the admission token.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Withdraw the admission instead: the device's replicas are placed elsewhere, the relay
    /// leaves every path.
    #[arg(long)]
    revoke: bool,
}

#[derive(Debug, clap::Subcommand)]
enum AdmitAction {
    /// Print the admission token (give it to the devices and relays you run:
    /// `fog host --admission-token TOKEN`).
    Token {
        /// The control plane's data directory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
}

/// The token `fog control` wrote in `data` (default: its default data directory).
fn token_in(data: Option<PathBuf>) -> anyhow::Result<String> {
    let data = data.unwrap_or_else(|| fog_host::agent::default_data_dir().join("control"));
    let path = data.join(ADMISSION_TOKEN_FILE);
    let token = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no admission token at {} (has `fog control --data {}` run? Or pass \
             --admission-token)",
            path.display(),
            data.display()
        )
    })?;
    Ok(token.trim().to_string())
}

impl Admit {
    pub fn execute(self) -> anyhow::Result<()> {
        if let Some(AdmitAction::Token { data }) = self.action {
            println!("{}", token_in(data.or(self.data))?);
            return Ok(());
        }
        let Some(key) = self.key else {
            anyhow::bail!("name the device id or key to admit (see `fog devices --pending`)");
        };
        let token = match self.admission_token.filter(|t| !t.is_empty()) {
            Some(token) => token,
            None => token_in(self.data)?,
        };
        crate::client::runtime()?.block_on(async {
            // The token is the operator's proof; the signature (any key) only makes the
            // request impossible to replay.
            let api = Api::with_identity(&self.control, Identity::generate())?;
            let admitted: Admitted = api
                .post_json(
                    "/v1/admissions",
                    &AdmitRequest {
                        key,
                        admission_token: token,
                        revoke: self.revoke,
                    },
                )
                .await?;
            println!(
                "fog: {} {} (device id {})",
                if admitted.admitted {
                    "admitted"
                } else {
                    "revoked"
                },
                admitted.key,
                admitted.device_id
            );
            Ok(())
        })
    }
}
