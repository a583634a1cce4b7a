//! The one place a NATS connection is made: every authentication and TLS option, the
//! checks that catch contradictory settings before any network traffic, and the
//! reconnect policy and connection-event logging that every command and the worker share.
//!
//! Its parts: `tls_files` checks the TLS files before connecting, `diagnose` reads why
//! an attempt failed into a [`Cause`], `error` holds [`ConnectError`].

mod diagnose;
mod error;
mod tls_files;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::protocol::bounded::one_line;
use crate::report::error_chain;
use async_nats::{ConnectOptions, Event, ServerAddr};

pub use diagnose::Cause;
pub use error::ConnectError;
pub use tls_files::TlsFileProblem;

/// Server used when no URL is configured.
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";
/// Seconds allowed for one connection attempt (TCP, TLS and the NATS handshake).
pub const DEFAULT_CONNECT_TIMEOUT_S: u64 = 5;

/// First non-zero reconnect delay; it doubles with every failed attempt.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);

crate::config::options::options! {
    /// NATS connection settings. Every field is optional so that the layers can be merged:
    /// command-line flag > environment variable > `[nats]` table of the TOML config file > default.
    ///
    /// `Debug` hides the password and the token.
    #[derive(Clone, Default, PartialEq)]
    #[command(next_help_heading = "NATS connection")]
    pub struct NatsArgs in "nats" {
        /// NATS server URLs, comma-separated
        url: String {
            flag: "nats-url",
            env: "FLARE_NATS_URL",
            default: value(DEFAULT_URL.to_owned()),
            clap: (global = true),
        },
        /// User name for user/password authentication (needs --nats-password)
        user: String {
            flag: "nats-user",
            env: "FLARE_NATS_USER",
            default: none,
            example: "\"flare\"",
            clap: (global = true),
        },
        /// Password for user/password authentication (needs --nats-user)
        password: String {
            flag: "nats-password",
            env: "FLARE_NATS_PASSWORD",
            default: none,
            example: "\"change-me\"",
            clap: (global = true, hide_env_values = true),
        },
        /// Token for token authentication
        token: String {
            flag: "nats-token",
            env: "FLARE_NATS_TOKEN",
            default: none,
            example: "\"s3cret\"",
            clap: (global = true, hide_env_values = true),
        },
        /// File holding a user nkey seed (starts with SU) for nkey authentication
        nkey_seed_file: PathBuf {
            flag: "nats-nkey-seed-file",
            env: "FLARE_NATS_NKEY_SEED_FILE",
            default: none,
            example: "\"/etc/flare-launcher/worker.nk\"",
            clap: (global = true),
        },
        /// NATS credentials file (user JWT and nkey seed), for decentralized authentication
        credentials_file: PathBuf {
            flag: "nats-credentials-file",
            env: "FLARE_NATS_CREDENTIALS_FILE",
            default: none,
            example: "\"/etc/flare-launcher/worker.creds\"",
            clap: (global = true),
        },
        /// PEM file with the CA certificate(s) that signed the server's certificate
        tls_ca: PathBuf {
            flag: "nats-tls-ca",
            env: "FLARE_NATS_TLS_CA",
            default: text("the CAs this host trusts"),
            example: "\"/etc/flare-launcher/ca.pem\"",
            clap: (global = true),
        },
        /// PEM client certificate for mutual TLS (needs --nats-tls-key)
        tls_cert: PathBuf {
            flag: "nats-tls-cert",
            env: "FLARE_NATS_TLS_CERT",
            default: none,
            example: "\"/etc/flare-launcher/worker.pem\"",
            clap: (global = true),
        },
        /// PEM private key of the client certificate (needs --nats-tls-cert)
        tls_key: PathBuf {
            flag: "nats-tls-key",
            env: "FLARE_NATS_TLS_KEY",
            default: none,
            example: "\"/etc/flare-launcher/worker-key.pem\"",
            clap: (global = true),
        },
        /// Refuse to talk to the server without TLS (implied by any TLS file or a tls:// URL)
        tls_required: bool {
            flag: "nats-tls-required",
            env: "FLARE_NATS_TLS_REQUIRED",
            default: text("false"),
            example: "true",
            kind: switch,
            clap: (global = true),
        },
        /// Seconds allowed for one connection attempt
        connect_timeout_s: u64 {
            flag: "nats-connect-timeout-s",
            env: "FLARE_NATS_CONNECT_TIMEOUT_S",
            default: value(DEFAULT_CONNECT_TIMEOUT_S),
            clap: (global = true),
        },
        /// Subject prefix of this client's reply inboxes, so that NATS permissions can keep each party to its own replies (deploy/nats-roles.conf)
        inbox_prefix: String {
            flag: "nats-inbox-prefix",
            env: "FLARE_NATS_INBOX_PREFIX",
            default: text("_INBOX"),
            example: "\"_INBOX_worker\"",
            clap: (global = true),
        },
    }
}

impl fmt::Debug for NatsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        f.debug_struct("NatsArgs")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("credentials_file", &self.credentials_file)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .field("connect_timeout_s", &self.connect_timeout_s)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

impl NatsArgs {
    /// The files the worker's own credentials are read from, each with the
    /// flag that names it.
    pub fn secret_files(&self) -> Vec<(PathBuf, &'static str)> {
        [
            (&self.credentials_file, "nats-credentials-file"),
            (&self.nkey_seed_file, "nats-nkey-seed-file"),
            (&self.tls_key, "nats-tls-key"),
        ]
        .into_iter()
        .filter_map(|(path, flag)| Some((path.clone()?, flag)))
        .collect()
    }

    /// The server URLs to use (default applied), split on commas, trimmed.
    ///
    /// Empty pieces (`"a,,b"`, a trailing comma) are dropped.
    pub fn urls(&self) -> Vec<String> {
        self.url()
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The connection timeout, default applied.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_s())
    }

    /// The authentication methods that are set ([`connect`] refuses more than one).
    pub fn auth_methods(&self) -> Vec<AuthMethod> {
        [
            (self.user.is_some(), AuthMethod::UserPassword),
            (self.token.is_some(), AuthMethod::Token),
            (self.nkey_seed_file.is_some(), AuthMethod::NkeySeed),
            (self.credentials_file.is_some(), AuthMethod::Credentials),
        ]
        .into_iter()
        .filter_map(|(set, method)| set.then_some(method))
        .collect()
    }
}

/// A way to authenticate to the server (TLS client certificates aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `--nats-user` and `--nats-password`.
    UserPassword,
    /// `--nats-token`.
    Token,
    /// `--nats-nkey-seed-file`.
    NkeySeed,
    /// `--nats-credentials-file` (user JWT and nkey seed).
    Credentials,
}

impl AuthMethod {
    /// The flags that set it.
    pub fn flags(self) -> &'static str {
        match self {
            AuthMethod::UserPassword => "--nats-user/--nats-password",
            AuthMethod::Token => "--nats-token",
            AuthMethod::NkeySeed => "--nats-nkey-seed-file",
            AuthMethod::Credentials => "--nats-credentials-file",
        }
    }
}

/// Connects with every option applied. `client_name` is sent to the server (shows in
/// monitoring).
///
/// Once connected, the client reconnects forever after a lost connection, waiting
/// between attempts with capped exponential backoff plus jitter (immediately, then
/// 100 ms doubling up to 5 s), and logs every connection event with `tracing`.
///
/// The TLS files and the nkey seed are loaded and checked first, so that a file the
/// client library would refuse is named with the reason (an X.509 v1 client
/// certificate, a key that does not belong to it).
///
/// With `wait_for_server` false (CLI commands), each URL is tried once and, if none
/// accepts, [`ConnectError::Connect`] names the URLs and the [`Cause`] of the last
/// failure, and carries that failure.
///
/// With `wait_for_server` true, a server that is unreachable at start-up (refused,
/// timed out, DNS; see [`Cause::is_transient`]) is retried with the same backoff, each
/// failure logged at warn with its cause, and the function returns only once a server
/// has answered, so the caller can use the client at once (create streams and
/// buckets). Failures that retrying cannot fix (credentials refused, any certificate
/// or TLS handshake failure) are still returned at once. To bound the wait,
/// wrap the call in `tokio::time::timeout` or a `select!` on a shutdown signal: dropping
/// the future stops the retries. (async-nats' `retry_on_initial_connect` is not used: it
/// returns a client before any server has answered and retries in the background.)
///
/// # Errors
///
/// [`ConnectError::InvalidSettings`], the read errors and
/// [`ConnectError::UnusableTlsFile`] before any network traffic;
/// [`ConnectError::Connect`] as described above.
pub async fn connect(
    args: &NatsArgs,
    client_name: &str,
    wait_for_server: bool,
) -> Result<async_nats::Client, ConnectError> {
    let servers = server_addrs(args)?;
    let options = options(args, &servers, client_name).await?;
    let urls = shown_urls(&args.urls());
    tracing::info!(%urls, client_name, wait_for_server, "connecting to NATS");

    let mut round: usize = 0;
    let client = loop {
        let source = match options.clone().connect(servers.clone()).await {
            Ok(client) => break client,
            Err(source) => source,
        };
        let cause = Cause::of(&source, args);
        let retry = wait_for_server && cause.is_transient();
        let error = ConnectError::Connect {
            urls: urls.clone(),
            cause,
            source,
        };
        if !retry {
            return Err(error);
        }
        round += 1;
        let delay = reconnect_delay(round + 1);
        tracing::warn!(
            error = %error_chain(&error),
            attempt = round,
            retry_in_ms = delay.as_millis() as u64,
            "NATS server not reachable yet, retrying"
        );
        tokio::time::sleep(delay).await;
    };

    let info = client.server_info();
    tracing::info!(
        server_name = %info.server_name,
        server_version = %info.version,
        server_host = %info.host,
        server_port = info.port,
        "connected to NATS"
    );
    Ok(client)
}

/// Checks the settings and parses the URLs.
fn server_addrs(args: &NatsArgs) -> Result<Vec<ServerAddr>, ConnectError> {
    validate(args)?;
    let urls = args.urls();
    if urls.is_empty() {
        return Err(ConnectError::InvalidSettings(
            "--nats-url (FLARE_NATS_URL) holds no server URL".to_owned(),
        ));
    }
    urls.iter()
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|source| ConnectError::InvalidUrl {
                    url: redact_url(url),
                    source,
                })
        })
        .collect()
}

/// Rejects combinations that cannot work, with messages that name the flags.
fn validate(args: &NatsArgs) -> Result<(), ConnectError> {
    let invalid = |message: &str| Err(ConnectError::InvalidSettings(message.to_owned()));
    match (&args.user, &args.password) {
        (Some(_), None) => {
            return invalid("--nats-user needs --nats-password (FLARE_NATS_PASSWORD)");
        }
        (None, Some(_)) => return invalid("--nats-password needs --nats-user (FLARE_NATS_USER)"),
        _ => {}
    }
    let methods = args.auth_methods();
    if methods.len() > 1 {
        let flags: Vec<&str> = methods.into_iter().map(AuthMethod::flags).collect();
        return Err(ConnectError::InvalidSettings(format!(
            "choose one NATS authentication method, not {}",
            flags.join(" and ")
        )));
    }
    if args.tls_cert.is_some() != args.tls_key.is_some() {
        return invalid("--nats-tls-cert and --nats-tls-key go together");
    }
    if args.connect_timeout_s == Some(0) {
        return invalid("--nats-connect-timeout-s must be at least 1");
    }
    if args.token.as_deref().is_some_and(str::is_empty) {
        return invalid("--nats-token is empty");
    }
    if args.user.as_deref().is_some_and(str::is_empty) {
        return invalid("--nats-user is empty");
    }
    if let Some(prefix) = &args.inbox_prefix
        && !is_subject(prefix)
    {
        return Err(ConnectError::InvalidSettings(format!(
            "--nats-inbox-prefix {prefix:?} is not a subject without wildcards"
        )));
    }
    Ok(())
}

/// Whether `text` is a subject a client may publish to: dot-separated tokens, none
/// empty, without wildcards or white space.
fn is_subject(text: &str) -> bool {
    text.split('.').all(|token| {
        !token.is_empty()
            && token
                .chars()
                .all(|c| !c.is_whitespace() && c != '*' && c != '>')
    })
}

/// Builds the client options: authentication, TLS, timeouts, reconnect policy, events.
async fn options(
    args: &NatsArgs,
    servers: &[ServerAddr],
    client_name: &str,
) -> Result<ConnectOptions, ConnectError> {
    let mut options = ConnectOptions::new()
        .name(client_name)
        .connection_timeout(args.connect_timeout())
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(event_logger());

    if let (Some(user), Some(password)) = (&args.user, &args.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &args.token {
        options = options.token(token.clone());
    }
    if let Some(prefix) = &args.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(path) = &args.nkey_seed_file {
        options = options.nkey(read_nkey_seed(path).await?);
    }
    if let Some(path) = &args.credentials_file {
        options = options.credentials_file(path).await.map_err(|source| {
            ConnectError::ReadCredentials {
                path: path.clone(),
                source,
            }
        })?;
    }

    if let Some(ca) = &args.tls_ca {
        tls_files::check_ca(ca).await?;
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        tls_files::check_client_identity(cert, key).await?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let tls_files = args.tls_ca.is_some() || args.tls_cert.is_some();
    let tls_urls = servers.iter().any(|server| server.tls_required());
    if args.tls_required == Some(true) || tls_files || tls_urls {
        options = options.require_tls(true);
    }
    Ok(options)
}

/// Reads a user nkey seed, surrounding whitespace removed.
async fn read_nkey_seed(path: &Path) -> Result<String, ConnectError> {
    let text =
        tokio::fs::read_to_string(path)
            .await
            .map_err(|source| ConnectError::ReadNkeySeed {
                path: path.to_owned(),
                source,
            })?;
    let seed = text.trim();
    if !seed.starts_with("SU") {
        // The seed itself is never echoed: it is the private key.
        return Err(ConnectError::InvalidSettings(format!(
            "{} does not hold a user nkey seed (one starts with SU)",
            path.display()
        )));
    }
    // The client library would only fail later, "failed signing nonce", without the reason.
    nkeys::KeyPair::from_seed(seed).map_err(|source| ConnectError::InvalidNkeySeed {
        path: path.to_owned(),
        source,
    })?;
    Ok(seed.to_owned())
}

/// Delay before reconnect attempt `attempt` (counted from 1 since the last success):
/// none for the first, then 100 ms doubling up to 5 s, each shortened by a random
/// 0-25 % so that workers that lost the same server do not come back in lockstep.
fn reconnect_delay(attempt: usize) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    let doublings = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(16);
    let base = BACKOFF_MIN.saturating_mul(1 << doublings).min(BACKOFF_MAX);
    base.mul_f64(1.0 - rand::random_range(0.0..0.25))
}

/// Logs every connection event; the first `Connected` is the initial connection, which
/// [`connect`] logs itself with the server's details.
fn event_logger() -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let connected_before = Arc::new(AtomicBool::new(false));
    move |event| {
        match event {
            Event::Connected => {
                if connected_before.swap(true, Ordering::Relaxed) {
                    tracing::info!("reconnected to NATS");
                }
            }
            Event::Disconnected => tracing::warn!("disconnected from NATS, reconnecting"),
            Event::LameDuckMode => {
                tracing::warn!("NATS server entered lame-duck mode and will shut down soon")
            }
            Event::SlowConsumer(sid) => {
                tracing::warn!(subscription = sid, "NATS slow consumer, messages dropped")
            }
            // The server's text is bounded like every text from outside.
            Event::ServerError(error) => {
                tracing::warn!(error = %error_chain(&error), "NATS server error")
            }
            Event::ClientError(error) => {
                tracing::warn!(error = %one_line(&error.to_string()), "NATS client error")
            }
            Event::Draining => tracing::info!("NATS connection draining"),
            Event::Closed => tracing::info!("NATS connection closed"),
        }
        std::future::ready(())
    }
}

/// The URLs for logs and errors, comma-separated, passwords masked.
fn shown_urls(urls: &[String]) -> String {
    urls.iter()
        .map(|url| redact_url(url))
        .collect::<Vec<_>>()
        .join(",")
}

/// Masks the user-info part of a URL (`nats://user:secret@host` becomes
/// `nats://***@host`), so URLs can be logged.
pub(crate) fn redact_url(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_user_info() {
        assert_eq!(redact_url("nats://a:b@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("tok@h"), "***@h");
        assert_eq!(redact_url("nats://h:4222/x@y"), "nats://h:4222/x@y");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
    }

    #[test]
    fn backoff_grows_to_the_cap() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        let second = reconnect_delay(2);
        assert!(second > Duration::from_millis(74) && second <= BACKOFF_MIN);
        let late = reconnect_delay(100);
        assert!(late >= BACKOFF_MAX.mul_f64(0.75) && late <= BACKOFF_MAX);
    }

    #[test]
    fn inbox_prefixes_are_subjects_without_wildcards() {
        assert!(is_subject("_INBOX_worker") && is_subject("_I.engine-1"));
        for bad in ["", "_I.", ".x", "a..b", "_I.*", "_I.>", "a b"] {
            assert!(!is_subject(bad), "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let args = NatsArgs {
            url: Some("nats://u:pw1@h".into()),
            password: Some("pw2".into()),
            token: Some("tk".into()),
            ..NatsArgs::default()
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("pw1") && !shown.contains("pw2") && !shown.contains("tk\""));
    }
}
