//! Why no NATS connection was made: settings that cannot work, files that cannot be
//! read or used, and connection attempts that failed, each with its cause.

use std::io;
use std::path::PathBuf;

use async_nats::ConnectErrorKind;

use super::diagnose::Cause;
use super::tls_files::TlsFileProblem;

/// Why no connection was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The settings contradict each other or are incomplete; nothing was tried.
    #[error("invalid NATS settings: {0}")]
    InvalidSettings(String),

    /// A server URL cannot be parsed (any password in it is masked).
    #[error("invalid NATS server URL {url:?}")]
    InvalidUrl {
        /// The URL as given, password masked.
        url: String,
        /// What the parser said.
        #[source]
        source: io::Error,
    },

    /// The credentials file cannot be read or parsed.
    #[error("cannot read NATS credentials file {}", path.display())]
    ReadCredentials {
        /// The file named by `--nats-credentials-file`.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// The nkey seed file cannot be read.
    #[error("cannot read NATS nkey seed file {}", path.display())]
    ReadNkeySeed {
        /// The file named by `--nats-nkey-seed-file`.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// The nkey seed file holds something that looks like a user seed but is not one.
    #[error("NATS nkey seed file {} does not hold a valid user nkey seed", path.display())]
    InvalidNkeySeed {
        /// The file named by `--nats-nkey-seed-file`.
        path: PathBuf,
        /// What the nkey decoder said (it never quotes the seed).
        #[source]
        source: nkeys::error::Error,
    },

    /// A TLS certificate or key file cannot be read.
    #[error("cannot read {flag} file {}", path.display())]
    ReadTlsFile {
        /// The flag that named the file, such as `--nats-tls-ca`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },

    /// A TLS certificate or key file can be read but the TLS library would refuse it.
    #[error("{flag} file {}: {problem}", path.display())]
    UnusableTlsFile {
        /// The flag that named the file, such as `--nats-tls-cert`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        problem: TlsFileProblem,
    },

    /// No server accepted the connection: unreachable, refused the credentials, or
    /// failed the TLS handshake. The message says which, and what to check.
    #[error("cannot connect to NATS at {urls}: {cause}")]
    Connect {
        /// The URLs tried, comma-separated, passwords masked.
        urls: String,
        /// Why the last attempt failed, read from `source`.
        cause: Cause,
        /// The last failure, from the client library.
        #[source]
        source: async_nats::ConnectError,
    },
}

impl ConnectError {
    /// The client library's classification, for connection failures.
    pub fn connect_kind(&self) -> Option<ConnectErrorKind> {
        match self {
            ConnectError::Connect { source, .. } => Some(source.kind()),
            _ => None,
        }
    }

    /// Why the connection failed, for connection failures.
    pub fn cause(&self) -> Option<&Cause> {
        match self {
            ConnectError::Connect { cause, .. } => Some(cause),
            _ => None,
        }
    }
}
