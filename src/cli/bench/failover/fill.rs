//! A long history, written quickly: ended job records, each a copy of a real
//! ended record (the bench's own jobs', once they ended) under a new job id
//! (everywhere the record names it, its container's name too) and owned, round
//! robin, by the given workers. Each is written as a worker writes a job that
//! ended: a create through the project's store, with the retention as its TTL.
//! No owner index entry is written: a job that ended has none.

use crate::cli::CliError;
use crate::protocol::JobRecord;
use crate::report::error_chain;
use crate::store::{Claim, JobStore};
use futures::{StreamExt, TryStreamExt};

/// Records written at once.
const IN_FLIGHT: usize = 256;

/// Writes the ended records `numbers`, copies of `templates` under the job
/// ids `PREFIX-N`, owned in turn by each of `owners`.
///
/// # Errors
/// A [`CliError`] when a record cannot be written, or one exists already.
pub async fn ended_records(
    store: &JobStore,
    templates: &[JobRecord],
    owners: &[&str],
    numbers: std::ops::Range<usize>,
    prefix: &str,
) -> Result<(), CliError> {
    if templates.is_empty() || owners.is_empty() {
        return Err(CliError::Other(
            "no ended record or no owner to copy the history from".into(),
        ));
    }
    futures::stream::iter(numbers)
        .map(|n| {
            let record = copy(
                &templates[n % templates.len()],
                &format!("{prefix}-{n}"),
                owners[n % owners.len()],
            );
            async move {
                let record = record?;
                match store.claim(&record).await {
                    Ok(Claim::Created { .. }) => Ok(()),
                    Ok(Claim::Exists { .. }) => Err(CliError::Other(format!(
                        "a record of job {} exists already",
                        record.job_id
                    ))),
                    Err(e) => Err(CliError::Other(format!(
                        "cannot write an ended record: {}",
                        error_chain(&e)
                    ))),
                }
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .try_collect()
        .await
}

/// `template` as the record of `job_id`, owned by `owner`.
fn copy(template: &JobRecord, job_id: &str, owner: &str) -> Result<JobRecord, CliError> {
    let text = serde_json::to_string(template)
        .map_err(|e| CliError::Other(format!("cannot copy a record: {e}")))?
        .replace(&template.job_id, job_id);
    let mut record: JobRecord = serde_json::from_str(&text)
        .map_err(|e| CliError::Other(format!("cannot copy a record: {e}")))?;
    record.worker = owner.to_owned();
    Ok(record)
}
