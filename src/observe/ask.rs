//! The client side of a worker's endpoint: one `GET` over plain HTTP/1.1, for
//! `flare-launcher probe` (the health check of a container whose image has
//! nothing else to ask with) and for tests. The answer is bounded, and so is the
//! time it may take.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most of an answer read: the metrics of a busy worker fit many times.
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;

/// Why the endpoint gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// No connection, or it broke.
    #[error("cannot ask {address}: {source}")]
    Io {
        /// The endpoint.
        address: SocketAddr,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// No whole answer in time.
    #[error("no answer from {address} within {limit:?}")]
    TimedOut {
        /// The endpoint.
        address: SocketAddr,
        /// How long it had.
        limit: Duration,
    },
    /// An answer that is not HTTP.
    #[error("{address} answered without an HTTP status line")]
    NotHttp {
        /// The endpoint.
        address: SocketAddr,
    },
}

/// The status code and body of `GET path` at `address`, within `limit`.
///
/// # Errors
/// An [`AskError`] when there is no such answer.
pub async fn get(
    address: SocketAddr,
    path: &str,
    limit: Duration,
) -> Result<(u16, String), AskError> {
    let io = |source| AskError::Io { address, source };
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.map_err(io)?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER_BYTES)
            .read_to_end(&mut answer)
            .await
            .map_err(io)?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    let answer = tokio::time::timeout(limit, exchange)
        .await
        .map_err(|_| AskError::TimedOut { address, limit })??;
    let status = answer
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or(AskError::NotHttp { address })?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
