//! The JSON Schemas of every protocol message, generated from the types in
//! [`crate::protocol`]. `schemas/` holds them checked in; a test fails when they
//! drift, and `flare-launcher schemas DIR` writes them anew.

use crate::protocol::{
    ErrorReply, InvalidRequest, JobEvent, JobRecord, LaunchRequest, TerminateReply,
    TerminateRequest,
};
use schemars::schema_for;
use std::path::Path;

/// Each message's schema file name and its schema, pretty-printed JSON with a
/// trailing newline.
pub fn all() -> Vec<(&'static str, String)> {
    let render = |schema: schemars::Schema| {
        let mut text = serde_json::to_string_pretty(&schema).expect("schemas serialize");
        text.push('\n');
        text
    };
    vec![
        ("launch_request.json", render(schema_for!(LaunchRequest))),
        ("job_event.json", render(schema_for!(JobEvent))),
        (
            "terminate_request.json",
            render(schema_for!(TerminateRequest)),
        ),
        ("terminate_reply.json", render(schema_for!(TerminateReply))),
        ("job_record.json", render(schema_for!(JobRecord))),
        ("invalid_request.json", render(schema_for!(InvalidRequest))),
        ("error_reply.json", render(schema_for!(ErrorReply))),
    ]
}

/// Writes every schema into `dir`.
///
/// # Errors
/// The I/O error of the first file that could not be written.
pub fn write_all(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in all() {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}
