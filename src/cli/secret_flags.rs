//! Secrets given as flags: every local user can read a process's arguments (`ps`,
//! `/proc/PID/cmdline`), so the long-running commands (worker, dev) warn, once at
//! start, about each secret that came from the command line (a password, a token,
//! a server URL with credentials in it) and say where to put it instead.

use crate::nats::connect::redact_url;
use clap::ArgMatches;
use clap::parser::ValueSource;

/// A setting that is a secret, with the places it can come from.
#[derive(Debug, Clone, Copy)]
pub struct SecretFlag {
    /// The argument's id in the parsed matches.
    id: &'static str,
    /// The flag.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The key in the config file's `[nats]` table.
    pub key: &'static str,
    /// Whether a value holds a secret.
    holds_secret: fn(&str) -> bool,
}

/// Any value of a password or token is a secret.
fn always(_: &str) -> bool {
    true
}

/// Server URLs hold a secret when one of them has user information (`user:password@`,
/// `token@`).
fn urls_with_credentials(urls: &str) -> bool {
    urls.split(',')
        .any(|url| redact_url(url.trim()) != url.trim())
}

/// Every flag that can hold a secret (files such as `--nats-credentials-file` are
/// not secrets themselves).
const SECRET_FLAGS: [SecretFlag; 3] = [
    SecretFlag {
        id: "nats-password",
        flag: "--nats-password",
        env: "FLARE_NATS_PASSWORD",
        key: "password",
        holds_secret: always,
    },
    SecretFlag {
        id: "nats-token",
        flag: "--nats-token",
        env: "FLARE_NATS_TOKEN",
        key: "token",
        holds_secret: always,
    },
    SecretFlag {
        id: "nats-url",
        flag: "--nats-url",
        env: "FLARE_NATS_URL",
        key: "url",
        holds_secret: urls_with_credentials,
    },
];

/// The flags whose secret value came from the command line (before or after the
/// command's name), not from the environment.
pub fn given_as_flags(matches: &ArgMatches) -> Vec<SecretFlag> {
    let levels = [Some(matches), matches.subcommand().map(|(_, sub)| sub)];
    SECRET_FLAGS
        .into_iter()
        .filter(|secret| {
            levels.iter().flatten().any(|level| {
                level.try_contains_id(secret.id).unwrap_or(false)
                    && level.value_source(secret.id) == Some(ValueSource::CommandLine)
                    && level
                        .get_one::<String>(secret.id)
                        .is_some_and(|value| (secret.holds_secret)(value))
            })
        })
        .collect()
}

/// Logs one warning per secret given as a flag.
pub fn warn(secrets: &[SecretFlag]) {
    for secret in secrets {
        tracing::warn!(
            flag = secret.flag,
            "{} on the command line holds a secret, which every local user can read there (ps, \
             /proc/PID/cmdline); set {} in the environment, or `{}` in the [nats] table of \
             the config file (--config), instead",
            secret.flag,
            secret.env,
            secret.key
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn secrets_of(args: &[&str]) -> Vec<&'static str> {
        let matches = Cli::command().try_get_matches_from(args).unwrap();
        given_as_flags(&matches)
            .into_iter()
            .map(|secret| secret.flag)
            .collect()
    }

    #[test]
    fn secrets_on_the_command_line_are_found_before_and_after_the_command() {
        assert_eq!(
            secrets_of(&["fl", "worker", "--nats-token", "t"]),
            ["--nats-token"]
        );
        assert_eq!(
            secrets_of(&[
                "fl",
                "--nats-user",
                "u",
                "--nats-password=p",
                "dev",
                "--nats-token",
                "t"
            ]),
            ["--nats-password", "--nats-token"]
        );
        assert!(secrets_of(&["fl", "worker", "--nats-user", "u"]).is_empty());
    }

    #[test]
    fn server_urls_are_secrets_only_with_credentials_in_them() {
        assert!(secrets_of(&["fl", "--nats-url", "nats://h:4222,tls://h2", "worker"]).is_empty());
        assert_eq!(
            secrets_of(&[
                "fl",
                "dev",
                "--nats-url",
                "nats://h:4222, nats://u:p@h2:4222"
            ]),
            ["--nats-url"]
        );
    }
}
