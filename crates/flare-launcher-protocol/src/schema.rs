//! The JSON Schemas of every protocol message, generated from the types of
//! this crate. `schemas/` holds them checked in; a test fails when they
//! drift, and `flare-launcher schemas DIR` writes them anew.
//!
//! Requests are described as workers read them (a missing optional field takes
//! its default); what workers send is described as they write it, so every field
//! they always write, `null` or not, is required.

use crate::{
    ErrorReply, InvalidRequest, JobEvent, JobRecord, LaunchRequest, OutputChunk, OutputRequest,
    ResourceStatus, TerminateReply, TerminateRequest, WorkerLease,
};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use std::path::Path;

/// The schema of a message workers read.
fn read<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// The schema of a message workers write.
fn written<T: JsonSchema>() -> Schema {
    SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator()
        .into_root_schema_for::<T>()
}

/// Each message's schema file name and its schema, pretty-printed JSON with a
/// trailing newline.
pub fn all() -> Vec<(&'static str, String)> {
    let render = |schema: Schema| {
        let mut text = serde_json::to_string_pretty(&schema).expect("schemas serialize");
        text.push('\n');
        text
    };
    vec![
        ("launch_request.json", render(read::<LaunchRequest>())),
        ("job_event.json", render(written::<JobEvent>())),
        ("terminate_request.json", render(read::<TerminateRequest>())),
        ("terminate_reply.json", render(written::<TerminateReply>())),
        ("job_record.json", render(written::<JobRecord>())),
        ("invalid_request.json", render(written::<InvalidRequest>())),
        ("error_reply.json", render(written::<ErrorReply>())),
        ("resource_status.json", render(written::<ResourceStatus>())),
        ("worker_lease.json", render(written::<WorkerLease>())),
        ("output_request.json", render(read::<OutputRequest>())),
        ("output_chunk.json", render(written::<OutputChunk>())),
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
