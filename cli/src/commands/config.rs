//! `fog config APP set K=V | set-secret K=@FILE | unset K | list`: change an app's variables
//! and secrets without publishing a new version.

use fog_proto::config::{self, ConfigChange, ConfigListing, Secret};

use crate::client::{Api, ControlArgs, print_json};

/// Change the variables and secrets an app reads through wasi:config, without a new version:
/// running replicas see the change on their next requests. Secrets are stored encrypted and
/// never printed.
#[derive(Debug, clap::Args)]
pub struct Config {
    /// The app.
    app: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Set a variable: K=V.
    Set {
        #[arg(value_name = "K=V", value_parser = parse_var)]
        var: (String, String),
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Set a secret from a file: K=@FILE (the file's whole content, UTF-8).
    SetSecret {
        #[arg(value_name = "K=@FILE", value_parser = parse_secret)]
        secret: (String, Secret),
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Remove a variable or secret.
    Unset {
        #[arg(value_name = "K", value_parser = parse_key)]
        name: String,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Show the variables with their values and the secrets by name.
    List {
        #[command(flatten)]
        control: ControlArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `K=V` with a valid name and a value within the limit.
pub(crate) fn parse_var(given: &str) -> Result<(String, String), String> {
    let (key, value) = given
        .split_once('=')
        .ok_or_else(|| format!("{given:?} is not K=V"))?;
    config::validate_key(key)?;
    config::validate_value(key, value)?;
    Ok((key.to_string(), value.to_string()))
}

/// `K=@FILE`: the secret is the file's content. Secrets never come from the command line
/// itself, where shell history and process listings would keep them.
pub(crate) fn parse_secret(given: &str) -> Result<(String, Secret), String> {
    let Some((key, path)) = given.split_once("=@") else {
        return Err(
            "give a secret as K=@FILE: secrets are read from a file, never from the command line"
                .into(),
        );
    };
    config::validate_key(key)?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let value = String::from_utf8(bytes)
        .map_err(|_| format!("the secret {key:?} in {path} is not UTF-8 text"))?;
    config::validate_value(key, &value)?;
    Ok((key.to_string(), Secret::new(value)))
}

fn parse_key(given: &str) -> Result<String, String> {
    config::validate_key(given)?;
    Ok(given.to_string())
}

impl Config {
    pub fn execute(self) -> anyhow::Result<()> {
        let path = format!("/v1/apps/{}/config", self.app);
        let (change, control, json) = match self.action {
            Action::Set {
                var: (key, value),
                control,
            } => (Some(ConfigChange::Set { key, value }), control, false),
            Action::SetSecret {
                secret: (key, value),
                control,
            } => (Some(ConfigChange::SetSecret { key, value }), control, false),
            Action::Unset { name, control } => {
                (Some(ConfigChange::Unset { key: name }), control, false)
            }
            Action::List { control, json } => (None, control, json),
        };
        crate::client::runtime()?.block_on(async {
            let api = Api::new(&control)?;
            let listing: ConfigListing = match &change {
                Some(change) => {
                    let body = serde_json::to_vec(change)?;
                    api.signed(reqwest::Method::POST, &path, body, "").await?
                }
                None => {
                    api.signed(reqwest::Method::GET, &path, Vec::new(), "")
                        .await?
                }
            };
            if json {
                return print_json(&listing);
            }
            match &change {
                Some(change) => println!(
                    "{}: {} changed; running replicas see it on their next requests",
                    self.app,
                    change.key()
                ),
                None => {
                    for (key, value) in &listing.vars {
                        println!("{key}={value}");
                    }
                    for key in &listing.secrets {
                        println!("{key}=(secret)");
                    }
                }
            }
            Ok(())
        })
    }
}
