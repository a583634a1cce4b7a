//! The configuration reference, written from the options' declarations: the
//! tables of `docs/configuration.md` (between its markers; the prose around
//! them is kept) and the example config file `deploy/config.example.toml`.
//! `flare-launcher config-reference` rewrites both; a test fails when either
//! differs from what the declarations give.

use super::options::OptionDoc;
use super::{DockerArgs, K8sArgs, ResourceArgs, SharedArgs, WorkerTableArgs};
use crate::nats::connect::NatsArgs;
use std::path::{Path, PathBuf};

/// The configuration reference, relative to the repository.
pub const REFERENCE_PATH: &str = "docs/configuration.md";
/// The example config file, relative to the repository.
pub const EXAMPLE_PATH: &str = "deploy/config.example.toml";
/// The command that rewrites both.
pub const REGENERATE: &str = "cargo run -- config-reference";
/// The line before the generated part of the reference.
pub const BEGIN: &str =
    "<!-- BEGIN options: generated from the declarations by `flare-launcher config-reference` -->";
/// The line after it.
pub const END: &str = "<!-- END options -->";

/// A table of the config file and its options.
#[derive(Debug, Clone)]
pub struct Table {
    /// Its name.
    pub name: &'static str,
    /// What it is for.
    pub about: &'static str,
    /// Its options, in the order declared.
    pub options: Vec<OptionDoc>,
}

/// Every table, in the order of the file.
pub fn tables() -> Vec<Table> {
    vec![
        Table {
            name: NatsArgs::TABLE,
            about: "The NATS connection. Use at most one of user and password, token, nkey seed file or credentials file. A file holding a password or token must be readable by the worker's user only (never by jobs).",
            options: NatsArgs::options(),
        },
        Table {
            name: SharedArgs::TABLE,
            about: "The worker. Its first three options are every command's (their flags come before or after the command's name).",
            options: [SharedArgs::options(), WorkerTableArgs::options()].concat(),
        },
        Table {
            name: DockerArgs::TABLE,
            about: "The Docker backend (used when `backends` lists docker, or `backend` is docker).",
            options: DockerArgs::options(),
        },
        Table {
            name: K8sArgs::TABLE,
            about: "The Kubernetes backend (used when `backends` lists k8s, or `backend` is k8s).",
            options: K8sArgs::options(),
        },
        Table {
            name: ResourceArgs::TABLE,
            about: "The resource policy: best-effort counts nothing; gpu hands out the worker's GPUs.",
            options: ResourceArgs::options(),
        },
    ]
}

/// `text` for a cell of a Markdown table.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

/// The generated part of the reference: a table of options per table of the
/// file, markers included.
pub fn markdown() -> String {
    let mut out = format!("{BEGIN}\n");
    for table in tables() {
        out.push_str(&format!("\n### `[{}]`\n\n{}\n\n", table.name, table.about));
        out.push_str("| flag | environment | key | default | what |\n|---|---|---|---|---|\n");
        for option in &table.options {
            let default = match (&option.default_toml, &option.default) {
                (Some(_), Some(default)) => format!("`{}`", cell(default)),
                (None, Some(default)) => cell(default),
                (_, None) => String::new(),
            };
            out.push_str(&format!(
                "| `--{}` | `{}` | `{}` | {default} | {} |\n",
                option.flag,
                option.env,
                option.key,
                cell(&option.help)
            ));
        }
    }
    out.push_str(&format!("\n{END}\n"));
    out
}

/// The example config file: every option, those with a default value set to
/// it, the others commented out with an example.
pub fn example_file() -> String {
    let mut out = String::from(
        "# Example flare-launcher config file. Use it with `--config FILE` or FLARE_CONFIG=FILE.\n\
         # Every key is optional; command-line flags and FLARE_* environment variables\n\
         # override the file. Keys set here are set to their defaults.\n\
         # Generated from the options' declarations (`flare-launcher config-reference`);\n\
         # docs/configuration.md says more.\n",
    );
    for table in tables() {
        out.push_str(&format!("\n[{}]\n", table.name));
        for line in wrap(table.about, 78) {
            out.push_str(&format!("# {line}\n"));
        }
        for option in &table.options {
            out.push('\n');
            let about = format!("{} (--{}, {})", option.help, option.flag, option.env);
            for line in wrap(&about, 78) {
                out.push_str(&format!("# {line}\n"));
            }
            match (&option.default_toml, &option.example) {
                (Some(value), _) => out.push_str(&format!("{} = {value}\n", option.key)),
                (None, Some(example)) => out.push_str(&format!("# {} = {example}\n", option.key)),
                (None, None) => out.push_str(&format!("# {} =\n", option.key)),
            }
        }
    }
    out
}

/// `text` in lines of at most `width` characters (a longer word stays whole).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.len() + 1 + word.len() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// Why the reference cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The reference lacks the markers of its generated part.
    #[error("{path} has no line {BEGIN:?} followed by a line {END:?}")]
    NoMarkers {
        /// The file.
        path: PathBuf,
    },
}

/// `document` with its generated part replaced by `generated`; `None` without
/// the markers.
pub fn splice(document: &str, generated: &str) -> Option<String> {
    let start = document.find(BEGIN)?;
    let end = start + document[start..].find(END)? + END.len();
    let end = if document[end..].starts_with('\n') {
        end + 1
    } else {
        end
    };
    Some(format!(
        "{}{generated}{}",
        &document[..start],
        &document[end..]
    ))
}

/// Rewrites the reference and the example file under `root` (the repository).
///
/// # Errors
/// A [`ReferenceError`] naming the file.
pub fn write_all(root: &Path) -> Result<(), ReferenceError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReferenceError::Io { path, source }
    };
    let reference = root.join(REFERENCE_PATH);
    let document = std::fs::read_to_string(&reference).map_err(io(&reference))?;
    let spliced = splice(&document, &markdown()).ok_or_else(|| ReferenceError::NoMarkers {
        path: reference.clone(),
    })?;
    std::fs::write(&reference, spliced).map_err(io(&reference))?;
    let example = root.join(EXAMPLE_PATH);
    std::fs::write(&example, example_file()).map_err(io(&example))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_part_replaces_the_old_one_and_keeps_the_prose() {
        let document = format!("before\n{BEGIN}\nold\n{END}\nafter\n");
        assert_eq!(
            splice(&document, &format!("{BEGIN}\nnew\n{END}\n")).unwrap(),
            format!("before\n{BEGIN}\nnew\n{END}\nafter\n")
        );
        assert_eq!(splice("no markers", "x"), None);
    }

    #[test]
    fn every_option_has_a_default_value_or_an_example() {
        for table in tables() {
            for option in &table.options {
                assert!(
                    option.default_toml.is_some() || option.example.is_some(),
                    "[{}] {} needs an example",
                    table.name,
                    option.key
                );
            }
        }
    }

    #[test]
    fn lines_are_wrapped_at_words() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("toolongword x", 3), ["toolongword", "x"]);
    }
}
