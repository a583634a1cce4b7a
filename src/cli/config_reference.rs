//! `flare-launcher config-reference [DIR]`: rewrites the configuration
//! reference (`docs/configuration.md`, its generated part) and the example
//! config file (`deploy/config.example.toml`) from the options' declarations.

use super::CliError;
use crate::config::reference;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ConfigReferenceArgs {
    /// The repository to write into
    #[arg(default_value = ".")]
    dir: PathBuf,
}

pub fn run(args: ConfigReferenceArgs) -> Result<i32, CliError> {
    reference::write_all(&args.dir)?;
    println!(
        "{} and {} written under {}",
        reference::REFERENCE_PATH,
        reference::EXAMPLE_PATH,
        args.dir.display()
    );
    Ok(0)
}
