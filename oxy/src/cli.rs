//! The command line every Oxy application gets, named after the application.

use clap::{CommandFactory, FromArgMatches, Parser};
use std::path::PathBuf;

/// Options common to every Oxy binary.
#[derive(Debug, Parser)]
pub struct Cli {
    /// Settings file (YAML) to run with.
    #[arg(
        short,
        long,
        value_name = "FILE",
        required_unless_present = "generate_config"
    )]
    pub config: Option<PathBuf>,

    /// Print the full default settings, with every option documented, and exit.
    #[arg(long, conflicts_with_all = ["config", "check_config"])]
    pub generate_config: bool,

    /// Validate the settings file and exit: 0 if it is good, 2 with every problem otherwise.
    #[arg(long, requires = "config")]
    pub check_config: bool,

    /// Ask the process serving this settings file to restart gracefully, through its
    /// `server.control_socket`; exit 0 once the successor serves, 1 with the reason if it
    /// failed (the old process then goes on serving).
    #[arg(long, requires = "config", conflicts_with = "check_config")]
    pub restart: bool,
}

impl Cli {
    /// Parses the process arguments; `--help` and `--version` show the application's
    /// name, version and description. Usage errors exit with code 2.
    pub fn parse_for(name: &'static str, version: &'static str, about: &'static str) -> Self {
        let matches = Self::command()
            .name(name)
            .bin_name(name)
            .version(version)
            .about(about)
            .get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}
