//! The `fog` subcommands, one file each, and the top-level parser.

mod run;

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
    Run(run::Run),
}

impl Cli {
    /// Run the chosen subcommand.
    pub fn execute(self) -> anyhow::Result<()> {
        match self.command {
            Command::Run(cmd) => cmd.execute(),
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
