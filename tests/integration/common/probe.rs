//! A worker's HTTP endpoint for tests: a `GET` through the library's own
//! client, and the value of one sample of its metrics.

use std::net::SocketAddr;
use std::time::Duration;

/// The status code and body of `GET path` at `address`.
pub async fn get(address: SocketAddr, path: &str) -> (u16, String) {
    flare_launcher::observe::ask::get(address, path, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// The value of the sample `series` (name and labels, as the text shows them).
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.parse().ok()
    })
}
