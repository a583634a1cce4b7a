//! Secrets given as flags: every local user can read a process's arguments (`ps`,
//! `/proc/PID/cmdline`), so the long-running commands (worker, dev) warn, once at
//! start, about each secret that came from the command line and say where to put
//! it instead.

use clap::ArgMatches;
use clap::parser::ValueSource;

/// A setting that is a secret, with the places it can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretFlag {
    /// The argument's id in the parsed matches.
    id: &'static str,
    /// The flag.
    pub flag: &'static str,
    /// The environment variable.
    pub env: &'static str,
    /// The key in the config file's `[nats]` table.
    pub key: &'static str,
}

/// Every secret that has a flag (files such as `--nats-credentials-file` are not
/// secrets themselves).
const SECRET_FLAGS: [SecretFlag; 2] = [
    SecretFlag {
        id: "password",
        flag: "--nats-password",
        env: "FLARE_NATS_PASSWORD",
        key: "password",
    },
    SecretFlag {
        id: "token",
        flag: "--nats-token",
        env: "FLARE_NATS_TOKEN",
        key: "token",
    },
];

/// The secrets whose value came from the command line (before or after the
/// command's name), not from the environment.
pub fn given_as_flags(matches: &ArgMatches) -> Vec<SecretFlag> {
    let levels = [Some(matches), matches.subcommand().map(|(_, sub)| sub)];
    SECRET_FLAGS
        .into_iter()
        .filter(|secret| {
            levels.iter().flatten().any(|level| {
                level.try_contains_id(secret.id).unwrap_or(false)
                    && level.value_source(secret.id) == Some(ValueSource::CommandLine)
            })
        })
        .collect()
}

/// Logs one warning per secret given as a flag.
pub fn warn(secrets: &[SecretFlag]) {
    for secret in secrets {
        tracing::warn!(
            flag = secret.flag,
            "{} was given on the command line, where every local user can read it (ps, \
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
}
