//! `flare-launcher launch -- ARGV...`: publishes a launch request built from
//! flags, follows its events, and exits with the job's return code. A secret
//! variable (`--secret-env NAME`) is named on the command line and its value
//! taken from this command's environment, never from its arguments, which every
//! local user can read.

use super::output::print_event;
use super::{CliError, client};
use crate::config::Settings;
use crate::protocol::{BackendKind, LaunchRequest, Mount, Resources, Timeouts};
use futures::StreamExt;
use std::collections::BTreeMap;

#[derive(Debug, clap::Args)]
pub struct LaunchArgs {
    /// Job id [default: a fresh random one]
    #[arg(long)]
    job_id: Option<String>,
    /// FL site the job belongs to
    #[arg(long)]
    site: Option<String>,
    /// Backend to run on [default: the worker's]
    #[arg(long)]
    backend: Option<BackendKind>,
    /// Container image (docker, k8s)
    #[arg(long)]
    image: Option<String>,
    /// Environment variable, NAME=VALUE (repeatable)
    #[arg(long = "env", value_parser = key_value)]
    env: Vec<(String, String)>,
    /// Secret environment variable of the job (`secret_env`), by NAME: its value is this command's variable NAME (repeatable)
    #[arg(long = "secret-env", value_name = "NAME")]
    secret_env: Vec<String>,
    /// Working directory of the job
    #[arg(long)]
    workdir: Option<String>,
    /// GPUs the job needs
    #[arg(long)]
    gpus: Option<u32>,
    /// Memory the job needs on each of its GPUs, MiB
    #[arg(long)]
    gpu_memory_mb: Option<u64>,
    /// CPU cores the job needs
    #[arg(long)]
    cpus: Option<f64>,
    /// Memory the job needs, MiB
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Mount, SOURCE=TARGET or SOURCE=TARGET:ro, SOURCE being pvc:NAME, host:/PATH, secret:NAME or emptydir: (repeatable)
    #[arg(long = "mount", value_parser = mount)]
    mounts: Vec<Mount>,
    /// Seconds from acceptance to running before the job ends in error [default: 120]
    #[arg(long)]
    start_timeout: Option<u64>,
    /// Seconds the job may run before it is terminated
    #[arg(long)]
    run_timeout: Option<u64>,
    /// Label, NAME=VALUE (repeatable)
    #[arg(long = "label", value_parser = key_value)]
    labels: Vec<(String, String)>,
    /// Publish only; do not follow the events
    #[arg(long)]
    no_follow: bool,
    /// Print events as JSON lines
    #[arg(long)]
    json: bool,
    /// The job's argv
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// A flag's value not of the form the flag takes.
#[derive(Debug, thiserror::Error)]
#[error("expected {form}, got {given:?}")]
struct NotOfForm {
    /// The form (`NAME=VALUE`).
    form: &'static str,
    /// The value given.
    given: String,
}

impl NotOfForm {
    fn new(form: &'static str, given: &str) -> NotOfForm {
        NotOfForm {
            form,
            given: given.to_owned(),
        }
    }
}

fn key_value(text: &str) -> Result<(String, String), NotOfForm> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| NotOfForm::new("NAME=VALUE", text))
}

fn mount(text: &str) -> Result<Mount, NotOfForm> {
    let (source, target) = text
        .rsplit_once('=')
        .ok_or_else(|| NotOfForm::new("SOURCE=TARGET[:ro]", text))?;
    let (target, read_only) = match target.strip_suffix(":ro") {
        Some(target) => (target, true),
        None => (target, false),
    };
    Ok(Mount {
        source: source.to_owned(),
        target: target.to_owned(),
        read_only,
    })
}

/// A `--secret-env NAME` whose variable this command does not have.
#[derive(Debug, thiserror::Error)]
#[error(
    "--secret-env {name}: this command has no environment variable {name} (set it; its value is the secret)"
)]
pub struct MissingSecret {
    name: String,
}

/// The values of the secret variables `names`, from this command's environment.
fn secrets_from_environment(names: Vec<String>) -> Result<Vec<(String, String)>, MissingSecret> {
    names
        .into_iter()
        .map(|name| match std::env::var(&name) {
            Ok(value) => Ok((name, value)),
            Err(_) => Err(MissingSecret { name }),
        })
        .collect()
}

impl LaunchArgs {
    fn request(self) -> Result<LaunchRequest, MissingSecret> {
        let secret_env = secrets_from_environment(self.secret_env)?;
        let job_id = self.job_id.unwrap_or_else(random_job_id);
        let mut request = LaunchRequest::new(job_id, self.command);
        request.site = self.site;
        request.backend = self.backend;
        request.image = self.image;
        request.env = self.env.into_iter().collect::<BTreeMap<_, _>>();
        request.secret_env.extend(secret_env);
        request.workdir = self.workdir;
        if self.gpus.is_some()
            || self.gpu_memory_mb.is_some()
            || self.cpus.is_some()
            || self.memory_mb.is_some()
        {
            request.resources = Some(Resources {
                gpus: self.gpus,
                gpu_memory_mb: self.gpu_memory_mb,
                cpus: self.cpus,
                memory_mb: self.memory_mb,
            });
        }
        request.mounts = self.mounts;
        if self.start_timeout.is_some() || self.run_timeout.is_some() {
            request.timeouts = Some(Timeouts {
                start_s: self.start_timeout,
                run_s: self.run_timeout,
            });
        }
        request.labels = self.labels.into_iter().collect();
        Ok(request)
    }
}

fn random_job_id() -> String {
    format!("job-{}", crate::protocol::random_suffix(12))
}

pub async fn run(settings: &Settings, args: LaunchArgs) -> Result<i32, CliError> {
    let (follow, json) = (!args.no_follow, args.json);
    let request = args.request()?;
    request.validate()?;
    let client = client(settings).await?;
    client.ensure_streams().await?;
    // Subscribe first (replaying this job's subject), so no event can be missed.
    let events = match follow {
        true => Some(Box::pin(client.events(Some(&request.job_id), true).await?)),
        false => None,
    };
    client.launch(&request).await?;
    eprintln!("launch request for job {} published", request.job_id);
    let Some(mut events) = events else {
        return Ok(0);
    };
    while let Some(event) = events.next().await {
        let event = event?;
        print_event(&event, json);
        if let Some(code) = event.return_code {
            return Ok(code);
        }
    }
    Err(CliError::Other(
        "the event stream ended before the job did".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_of_another_form_are_named_with_the_form() {
        assert_eq!(key_value("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert_eq!(
            key_value("A").unwrap_err().to_string(),
            "expected NAME=VALUE, got \"A\""
        );
        let read_only = mount("pvc:data=/data:ro").unwrap();
        assert_eq!(
            (read_only.source.as_str(), read_only.target.as_str()),
            ("pvc:data", "/data")
        );
        assert!(read_only.read_only);
        assert_eq!(
            mount("/data").unwrap_err().to_string(),
            "expected SOURCE=TARGET[:ro], got \"/data\""
        );
    }
}
