//! `flare-launcher workers [--json] [--all-pools]`: the live workers of the pool
//! (or of every pool), read from their leases: id, host, pool, backends, jobs
//! running of their capacity, version and start time.

use super::{CliError, client};
use crate::config::Settings;
use crate::protocol::WorkerLease;

#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    /// Print the leases as JSON, one array
    #[arg(long)]
    json: bool,
    /// List the workers of every pool, not only this one's
    #[arg(long)]
    all_pools: bool,
}

pub async fn run(settings: &Settings, args: WorkersArgs) -> Result<i32, CliError> {
    let client = client(settings).await?;
    let workers: Vec<WorkerLease> = client
        .workers()
        .await?
        .into_iter()
        .filter(|lease| args.all_pools || lease.pool == settings.pool)
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&workers).expect("leases serialize")
        );
    } else {
        print!("{}", table(&workers));
    }
    Ok(0)
}

/// The workers as a table with a header, columns aligned.
fn table(workers: &[WorkerLease]) -> String {
    let header = [
        "WORKER", "HOST", "POOL", "BACKENDS", "JOBS", "VERSION", "STARTED",
    ]
    .map(String::from);
    let rows: Vec<[String; 7]> = workers
        .iter()
        .map(|lease| {
            let backends: Vec<&str> = lease.backends.iter().map(|kind| kind.as_str()).collect();
            [
                lease.worker.clone(),
                lease.host.clone(),
                lease.pool.clone(),
                backends.join(","),
                format!("{}/{}", lease.running, lease.capacity),
                lease.version.clone(),
                lease.started.clone(),
            ]
        })
        .collect();
    let mut widths = header.clone().map(|cell| cell.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BackendKind;

    #[test]
    fn the_table_aligns_its_columns_under_a_header() {
        let lease = |worker: &str, running| WorkerLease {
            worker: worker.into(),
            host: "h".into(),
            pool: "default".into(),
            backends: vec![BackendKind::Process, BackendKind::Docker],
            capacity: 64,
            running,
            version: "1.0.0".into(),
            started: "2026-12-07T00:00:00Z".into(),
            lease_s: 10,
            instance: "i".into(),
        };
        let text = table(&[lease("w1", 3), lease("a-longer-id", 12)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("WORKER       HOST"), "{text}");
        assert!(lines[1].starts_with("w1           h"), "{text}");
        assert!(lines[2].contains("process,docker  12/64"), "{text}");
    }
}
