//! How the CLI prints job events: one line per event, for people or as JSON.

use crate::protocol::JobEvent;

/// Prints one event on stdout.
pub fn print_event(event: &JobEvent, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(event).expect("events serialize")
        );
        return;
    }
    let mut line = format!(
        "{} {} #{} {}",
        event.ts, event.job_id, event.seq, event.state
    );
    if let Some(code) = event.return_code {
        line.push_str(&format!(" return_code={code}"));
    }
    if let Some(code) = event.exit_code {
        line.push_str(&format!(" exit_code={code}"));
    }
    if let Some(reason) = &event.reason {
        line.push_str(&format!(" reason={reason}"));
    }
    if let Some(message) = &event.message {
        line.push_str(&format!(" ({message})"));
    }
    line.push_str(&format!(" [{} on {}]", event.backend, event.worker));
    println!("{line}");
}
