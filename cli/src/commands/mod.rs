//! The `fog` subcommands, one file each, and the top-level parser.

mod admit;
mod balance;
mod config;
mod control;
mod devices;
mod fetch;
mod host;
pub mod keygen;
mod logs;
mod move_app;
mod new;
mod ps;
mod publish;
mod relay;
mod rm;
mod router;
pub mod run;
mod scale;
mod sim;
mod testnet;
mod up;

use clap::{Parser, Subcommand};

/// Fog: host websites and apps as WebAssembly components on idle devices.
#[derive(Debug, Parser)]
#[command(
    name = "fog",
    version,
    about,
    after_help = "Exit codes: 0 success, 1 failure, 2 bad command line, 3 the app is not a usable component.\n\
                  Logs: set FOG_LOG (e.g. FOG_LOG=debug) to choose what is logged to stderr."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Up(up::Up),
    New(new::New),
    Run(run::Run),
    Keygen(keygen::Keygen),
    Publish(publish::Publish),
    Ps(ps::Ps),
    Devices(devices::Devices),
    Admit(admit::Admit),
    Balance(balance::Balance),
    Scale(scale::Scale),
    Move(move_app::Move),
    Rm(rm::Rm),
    Logs(logs::Logs),
    Config(config::Config),
    Control(control::ControlCmd),
    Host(host::HostCmd),
    Router(router::RouterCmd),
    Relay(relay::RelayCmd),
    Fetch(fetch::Fetch),
    Testnet(testnet::Testnet),
    Sim(sim::Sim),
}

impl Cli {
    /// Run the chosen subcommand.
    pub fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Up(cmd) => cmd.execute(),
            Command::New(cmd) => cmd.execute(),
            Command::Run(cmd) => cmd.execute(),
            Command::Keygen(cmd) => cmd.execute(),
            Command::Publish(cmd) => cmd.execute(),
            Command::Ps(cmd) => cmd.execute(),
            Command::Devices(cmd) => cmd.execute(),
            Command::Admit(cmd) => cmd.execute(),
            Command::Balance(cmd) => cmd.execute(),
            Command::Scale(cmd) => cmd.execute(),
            Command::Move(cmd) => cmd.execute(),
            Command::Rm(cmd) => cmd.execute(),
            Command::Logs(cmd) => cmd.execute(),
            Command::Config(cmd) => cmd.execute(),
            Command::Control(cmd) => cmd.execute(),
            Command::Host(cmd) => cmd.execute(),
            Command::Router(cmd) => cmd.execute(),
            Command::Relay(cmd) => cmd.execute(),
            Command::Fetch(cmd) => cmd.execute(),
            Command::Testnet(cmd) => cmd.execute(),
            Command::Sim(cmd) => cmd.execute(),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
