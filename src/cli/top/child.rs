//! A job's output from `top`: the `logs JOB_ID -f` command of this same
//! program, with the global options `top` was given, run in the foreground
//! while the view is away. Ctrl-C reaches it (the terminal sends SIGINT to the
//! whole foreground group; `top` itself listens for SIGINT, so it survives).

use clap::ArgMatches;
use clap::parser::ValueSource;
use std::ffi::OsString;

/// The arguments for `logs JOB_ID -f` with the global options given on the
/// command line (before or after the command's name), as `--flag=value`.
pub fn logs_args(global_flags: &[OsString], job_id: &str) -> Vec<OsString> {
    let mut args = global_flags.to_vec();
    args.extend(["logs", job_id, "-f"].map(OsString::from));
    args
}

/// The global options that came from the command line, written out again so
/// that a child of the same program sees them (the environment it inherits).
pub fn global_flags(command: &clap::Command, matches: &ArgMatches) -> Vec<OsString> {
    let levels = [Some(matches), matches.subcommand().map(|(_, sub)| sub)];
    let mut flags = Vec::new();
    for arg in command.get_arguments().filter(|arg| arg.is_global_set()) {
        let (id, Some(long)) = (arg.get_id().as_str(), arg.get_long()) else {
            continue;
        };
        let Some(level) = levels.iter().flatten().find(|level| {
            level.try_contains_id(id).unwrap_or(false)
                && level.value_source(id) == Some(ValueSource::CommandLine)
        }) else {
            continue;
        };
        if !arg.get_action().takes_values() {
            flags.push(OsString::from(format!("--{long}")));
            continue;
        }
        for value in level.get_raw(id).into_iter().flatten() {
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(value);
            flags.push(flag);
        }
    }
    flags
}

/// How the child is shown on the screen before it runs: its arguments, each
/// quoted when it needs to be, secrets and all (they were on `top`'s own
/// command line), bounded.
pub fn describe(args: &[OsString]) -> String {
    let words: Vec<String> = args
        .iter()
        .map(|arg| {
            let arg = arg.to_string_lossy();
            if arg.contains(|c: char| c.is_whitespace() || c == '\'') || arg.is_empty() {
                crate::protocol::bounded::quoted(&arg)
            } else {
                crate::protocol::bounded::one_line_to(&arg, 256)
            }
        })
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::CommandFactory;

    fn flags(argv: &[&str]) -> Vec<String> {
        let command = Cli::command();
        let matches = command.clone().try_get_matches_from(argv).unwrap();
        global_flags(&command, &matches)
            .into_iter()
            .map(|flag| flag.into_string().unwrap())
            .collect()
    }

    #[test]
    fn global_options_given_before_or_after_the_command_are_passed_on() {
        let given = flags(&[
            "fl",
            "--nats-url",
            "nats://a:1,nats://b:2",
            "top",
            "--subject-prefix",
            "p.q",
        ]);
        assert!(
            given.contains(&"--nats-url=nats://a:1,nats://b:2".to_owned()),
            "{given:?}"
        );
        assert!(
            given.contains(&"--subject-prefix=p.q".to_owned()),
            "{given:?}"
        );
        assert_eq!(given.len(), 2, "only what was given: {given:?}");
        let args = logs_args(&given.iter().map(OsString::from).collect::<Vec<_>>(), "j.1");
        assert_eq!(&args[2..], ["logs", "j.1", "-f"].map(OsString::from));
    }

    #[test]
    fn options_from_the_environment_are_left_to_it() {
        assert!(flags(&["fl", "top"]).is_empty());
    }

    #[test]
    fn the_description_quotes_what_needs_it() {
        let args = ["logs", "a b", "-f"].map(OsString::from);
        assert_eq!(describe(&args), "logs \"a b\" -f");
    }
}
