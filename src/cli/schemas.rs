//! `flare-launcher schemas DIR`: writes the protocol's JSON Schemas.

use super::CliError;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct SchemasArgs {
    /// Directory to write into
    #[arg(default_value = "schemas")]
    dir: PathBuf,
}

pub fn run(args: SchemasArgs) -> Result<i32, CliError> {
    crate::schema::write_all(&args.dir).map_err(|e| {
        CliError::Other(format!(
            "cannot write schemas into {}: {e}",
            args.dir.display()
        ))
    })?;
    println!("schemas written to {}", args.dir.display());
    Ok(0)
}
